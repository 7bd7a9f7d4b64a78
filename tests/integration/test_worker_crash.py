"""kill -9 of the streams worker mid-stream: after a restart every raw event is in
ClickHouse (as a row or a dead letter), none twice once deduplicated by event id."""

from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import Consumer, Producer

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.bench import raw_events
from orderpulse.broker import free_port
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import settings_env
from orderpulse.settings import Settings
from orderpulse.streams.lifecycle import apply
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name
from tests.integration.conftest import (
    PipelineFactory,
    SettingsFactory,
    group_offsets,
    read_topics,
)

pytestmark = pytest.mark.integration
N = 15000
WINDOW = 48 * 3600 * 1000


def caught_up(settings: Settings, group: str, topics: list[str]) -> bool:
    probe = Consumer({**settings.kafka_client_config(), "group.id": f"probe-{time.time()}"})
    try:
        for tp in group_offsets(settings, group, topics):
            _low, high = probe.get_watermark_offsets(tp, timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        probe.close()


def committed(settings: Settings) -> int:
    """Offsets the streams worker's group has committed on the raw topic."""
    raw = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
    offsets = group_offsets(settings, f"orderpulse-streams{settings.topic_suffix}", [raw])
    return sum(max(tp.offset, 0) for tp in offsets)


def test_killed_worker_restarts_without_loss(settings_factory: SettingsFactory,
                                             pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory()
    events = list(raw_events(N, seed=3))
    # The reference, computed offline by the same pure steps: normalize, then the
    # lifecycle fold per order.
    expected_event_ids, expected_dead = set(), 0
    reference: dict[str, dict] = {}
    for key, value in events:
        result = normalize_message(Source("r", 0, 0, key, value), now_ms=0)
        expected_dead += result.dead_letter is not None
        for event in result.events:
            expected_event_ids.add(event["event_id"])
            order = event["order_id"]
            reference[order] = apply(reference.get(order), event, window_ms=WINDOW).record

    pipeline = pipeline_factory(settings, steps=("streams", "sink"))
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    raw = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
    for key, value in events:
        producer.produce(raw, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0

    # Kill mid-stream, after the worker has committed offsets at least once, so
    # the restart resumes from a commit rather than replaying everything.
    streams = pipeline.children["streams"]
    deadline = time.monotonic() + 60
    while committed(settings) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 < pipeline.counts()["consumed"] < N, "kill did not land mid-stream"
    streams.process.send_signal(signal.SIGKILL)
    streams.process.wait(10)
    restarted = spawn("streams", ["streams"], settings_env(settings), free_port(),
                      settings.data_dir / "logs")
    pipeline.children["streams"] = restarted
    wait_for_metrics(restarted)

    # Done when both groups have committed everything there is to read: the raw
    # topic (streams) and what the streams worker wrote (sink).
    sink = pipeline.children["sink"]
    raw_group = f"orderpulse-streams{settings.topic_suffix}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if caught_up(settings, raw_group, [raw]) and caught_up(
                settings, settings.group(names.STEP_SINK),
                [topic_name(settings, names.TOPIC_NORMALIZED),
                 topic_name(settings, names.TOPIC_DLQ)]):
            break
        time.sleep(1)
    assert sink.stop() == 0

    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    try:
        ids = {r["event_id"] for r in client.query_rows(
            f"SELECT DISTINCT event_id FROM {settings.clickhouse_database}.order_events")}
        [dead_row] = client.query_rows(
            f"SELECT uniqExact(source_partition, source_offset) AS n "
            f"FROM {settings.clickhouse_database}.dead_letters")
    finally:
        client.close()
    assert ids == expected_event_ids
    assert int(dead_row["n"]) == expected_dead
    states = latest_states(settings)
    assert {o: s["status"] for o, s in states.items()} == \
        {o: r["status"] for o, r in reference.items()}
    assert {o: s["refund_status"] for o, s in states.items()} == \
        {o: r["refund_status"] for o, r in reference.items()}


def latest_states(settings: Settings) -> dict[str, dict]:
    """orders.state read to its end as a table: the latest value per order."""
    states: dict[str, dict] = {}
    for _topic, _key, value in read_topics(settings, [topic_name(settings, names.TOPIC_STATE)]):
        state = codec("OrderState").decode(value)
        states[state["order_id"]] = state
    return states
