"""The ClickHouse sink on the real broker and engine: offsets are committed only
after rows are durable, and a ClickHouse outage loses and doubles nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse, apply_ddl
from orderpulse.connectors.clickhouse_sink import ClickHouseSink
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import SettingsFactory, group_offsets
from tests.unit.helpers import created_event

pytestmark = pytest.mark.integration


def order_event(n: int) -> dict[str, object]:
    return created_event(n, event_id=f"e{n:05d}", at_ms=1_794_409_200_000 + n)


def produce(settings: Settings, first: int, count: int) -> None:
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    topic = topic_name(settings, names.TOPIC_NORMALIZED)
    for n in range(first, first + count):
        producer.produce(topic, key=f"shopify:{n}".encode(), value=codec("OrderEvent").encode(
            order_event(n)))
    assert producer.flush(15) == 0


def committed_total(settings: Settings) -> int:
    offsets = group_offsets(settings, settings.group(names.STEP_SINK),
                            [topic_name(settings, names.TOPIC_NORMALIZED)])
    return sum(max(tp.offset, 0) for tp in offsets)


@pytest.fixture
def running_sink(settings_factory: SettingsFactory) -> Iterator[tuple[Settings, ClickHouseSink,
                                                                      EmbeddedClickHouse]]:
    settings = settings_factory()
    settings.chdb_path.mkdir(parents=True)
    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    apply_ddl(client)
    sink = ClickHouseSink(settings, client, Metrics.create(CollectorRegistry()))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    yield settings, sink, client
    stop.set()
    thread.join(30)
    client.close()


def count_rows(client: EmbeddedClickHouse) -> tuple[int, int]:
    [row] = client.query_rows(f"SELECT count() AS n, uniqExact(event_id) AS u FROM "
                              f"{client.database}.order_events")
    return int(row["n"]), int(row["u"])


def wait_until(check, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def test_outage_pauses_commits_and_recovers_without_loss_or_duplicates(
        running_sink: tuple[Settings, ClickHouseSink, EmbeddedClickHouse]) -> None:
    settings, sink, client = running_sink
    produce(settings, 0, 300)
    wait_until(lambda: committed_total(settings) == 300)
    assert count_rows(client) == (300, 300)

    # ClickHouse loses the table (a real failure of the real engine).
    client.command(f"DETACH TABLE {client.database}.order_events")
    produce(settings, 300, 200)
    wait_until(lambda: sink.metrics.sink_failures.labels("order_events")._value.get() >= 2)
    assert committed_total(settings) == 300, "offsets moved while the insert was failing"

    client.command(f"ATTACH TABLE {client.database}.order_events")
    wait_until(lambda: committed_total(settings) == 500)
    assert count_rows(client) == (500, 500)
    [row] = client.query_rows(f"SELECT sum(total_minor) AS s FROM {client.database}.order_events")
    assert int(row["s"]) == sum(100 + n for n in range(500))


def test_undecodable_normalized_record_is_dead_lettered_not_dropped(
        running_sink: tuple[Settings, ClickHouseSink, EmbeddedClickHouse]) -> None:
    settings, _sink, client = running_sink
    producer = Producer(settings.kafka_client_config())
    producer.produce(topic_name(settings, names.TOPIC_NORMALIZED), key=b"k", value=b"garbage")
    assert producer.flush(10) == 0
    wait_until(lambda: bool(client.query_rows(
        f"SELECT 1 FROM {client.database}.dead_letters WHERE step = 'clickhouse_sink'")))
    [row] = client.query_rows(
        f"SELECT reason, base64Decode(original_value_b64) AS v, source_topic "
        f"FROM {client.database}.dead_letters")
    assert row == {"reason": "not_avro", "v": "garbage",
                   "source_topic": topic_name(settings, names.TOPIC_NORMALIZED)}
