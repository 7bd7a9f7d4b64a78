"""Fixtures that start the real parts: the embedded Tansu broker (once per
session), per-test topics/groups/databases (uuid-suffixed), and the pipeline's
step processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from orderpulse.broker import EmbeddedBroker
from orderpulse.runner import Pipeline, start_pipeline
from orderpulse.settings import Settings
from orderpulse.topics import declare_topics

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(broker: EmbeddedBroker, tmp_path: Path) -> SettingsFactory:
    def make(**overrides: object) -> Settings:
        run_id = uuid.uuid4().hex[:10]
        settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap,
            ORDERPULSE_KAFKA_SINGLE_RECORD_BATCHES=True,  # the embedded broker
            ORDERPULSE_TOPIC_SUFFIX=f".{run_id}",
            ORDERPULSE_DATA_DIR=tmp_path / run_id,
            CLICKHOUSE_DATABASE=f"op_{run_id}",
            ORDERPULSE_SINK_BATCH_SECONDS=0.3,
            ORDERPULSE_CHANNELS={"shopify": {"webhook_secret": "test-secret"}},
            ORDERPULSE_LOG_LEVEL="INFO",
        ).model_copy(update=overrides)
        declare_topics(settings)
        return settings

    return make


def group_offsets(settings: Settings, group: str, topics: list[str]) -> list[TopicPartition]:
    """A group's committed offsets, read with the admin API: a probe must not join
    (or leave) the group it inspects, or it would make the group rebalance."""
    admin = AdminClient(settings.kafka_client_config())
    parts = [TopicPartition(t, p) for t in topics for p in range(settings.default_partitions)]
    request = [ConsumerGroupTopicPartitions(group, parts)]
    result = admin.list_consumer_group_offsets(request)[group].result(timeout=10)
    return list(result.topic_partitions)


def read_topics(settings: Settings, topics: list[str]) -> list[tuple[str, bytes | None, bytes]]:
    """Every record of ``topics`` as (topic, key, value), read by assignment from the
    beginning to each partition's end (no group join: nothing to wait for)."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    meta = consumer.list_topics(timeout=15).topics
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in meta[t].partitions]
    consumer.assign(parts)
    pending, found = {(tp.topic, tp.partition) for tp in parts}, []
    deadline = time.monotonic() + 60
    try:
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is not None and msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard((msg.topic(), msg.partition()))
                elif msg.error() is None:
                    found.append((msg.topic(), msg.key(), msg.value()))
                else:
                    raise AssertionError(msg.error())
    finally:
        consumer.close()
    assert not pending, f"partitions not read to their end: {sorted(pending)}"
    return found


PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def pipeline_factory() -> Iterator[PipelineFactory]:
    started: list[Pipeline] = []

    def make(settings: Settings, steps: tuple[str, ...] = ("streams", "sink", "webhook"),
             ) -> Pipeline:
        pipeline = start_pipeline(settings, steps=steps)
        started.append(pipeline)
        return pipeline

    yield make
    for pipeline in started:
        pipeline.stop()
