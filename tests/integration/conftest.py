"""Fixtures that start the real parts: the embedded Tansu broker (once per
session), per-test topics/groups/databases (uuid-suffixed), and the pipeline's
step processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
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
