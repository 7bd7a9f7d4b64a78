"""``orderpulse lag`` against the real embedded broker: a backlog no one consumes is
counted record for record and ages; once the streams worker commits, the lag is 0.
The exporter never joins the group it observes, and stops promptly on SIGTERM."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, Message, Producer
from confluent_kafka.admin import AdminClient

from orderpulse import names
from orderpulse.bench import raw_events
from orderpulse.broker import free_port
from orderpulse.lag import consumed_topics, streams_group
from orderpulse.procs import Child, spawn, wait_for_metrics
from orderpulse.runner import settings_env
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
N = 60


def lag_of(child: Child, metric: str, group: str, topic: str) -> dict[int, float]:
    """One lag gauge per partition of ``topic`` for ``group``, as the exporter serves it."""
    return {int(dict(labels)["partition"]): value
            for (name, labels), value in child.samples().items()
            if name == metric and {("group", group), ("topic", topic)} <= labels}


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s: {what}"
        time.sleep(0.2)


def produce(settings: Settings, topic: str) -> Counter[int]:
    """N raw events in few batches (Tansu reports a batch's end wrongly: the exporter must
    not); returns how many landed in each partition."""
    per_partition: Counter[int] = Counter()

    def delivered(err: object, msg: Message) -> None:
        assert err is None, err
        per_partition[msg.partition()] += 1

    producer = Producer({**settings.kafka_client_config(), "linger.ms": 50})
    for key, value in raw_events(N, seed=5):
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
    assert producer.flush(30) == 0
    return per_partition


def committed_topics(settings: Settings, group: str) -> set[str]:
    """Topics ``group`` has committed offsets on, read without joining it."""
    admin = AdminClient(settings.kafka_client_config())
    answer = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    return {tp.topic for tp in answer[group].result(timeout=10).topic_partitions}


def test_backlog_is_lag_until_the_worker_commits(settings_factory: SettingsFactory,
                                                 pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory(lag_interval_s=0.5)
    group, raw = streams_group(settings), topic_name(settings, names.raw_topic("shopify"))
    pipeline = pipeline_factory(settings, steps=("lag",))
    lag = pipeline.children["lag"]

    # No consumer yet: every produced record is lag, per partition.
    per_partition = produce(settings, raw)
    expected = {p: float(per_partition.get(p, 0)) for p in range(settings.default_partitions)}
    wait_for(lambda: lag_of(lag, "orderpulse_consumer_lag_messages", group, raw) == expected,
             15, f"lag_messages == {expected}")

    # ... and it ages: the oldest unconsumed record gets older with every scrape.
    def oldest() -> float:
        return max(lag_of(lag, "orderpulse_consumer_lag_seconds", group, raw).values())
    first = oldest()
    wait_for(lambda: oldest() >= first + 1.0, 10, f"lag_seconds to grow from {first}")
    assert committed_topics(settings, group) == set(), "the exporter must not commit"

    # The worker consumes and commits: the lag drops to zero, in records and seconds.
    streams = spawn("streams", ["streams"], settings_env(settings), free_port(),
                    settings.data_dir / "logs")
    pipeline.children["streams"] = streams
    wait_for_metrics(streams)
    zero = {p: 0.0 for p in range(settings.default_partitions)}
    wait_for(lambda: lag_of(lag, "orderpulse_consumer_lag_messages", group, raw) == zero
             and lag_of(lag, "orderpulse_consumer_lag_seconds", group, raw) == zero,
             45, "lag to drop to 0 after the worker commits")

    # Every topic the worker commits is one the exporter watches.
    assert raw in committed_topics(settings, group)
    assert committed_topics(settings, group) <= set(consumed_topics(settings)[group])
    assert total(lag.samples(), "orderpulse_lag_scrape_errors_total") == 0

    started = time.monotonic()
    assert lag.stop() == 0
    assert time.monotonic() - started < 5, "SIGTERM must stop the exporter promptly"
