"""Topic declarations: names, partition counts and configs, declared once.

``declare_topics`` creates whatever is missing (idempotent), on the embedded
broker and on a real cluster alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from orderpulse import names
from orderpulse.errors import BrokerError
from orderpulse.settings import Settings

_WEEK_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_name(settings: Settings, base: str) -> str:
    """The concrete name of a declared topic (isolated by the topic suffix)."""
    return f"{base}{settings.topic_suffix}"


def declared_topics(settings: Settings) -> list[TopicSpec]:
    """All topics the pipeline owns. Keys are order ids, so partitions order per order."""
    n = settings.default_partitions
    week = {"retention.ms": str(_WEEK_MS)}
    specs = [
        *(TopicSpec(names.raw_topic(channel), n, week) for channel in names.CHANNELS),
        TopicSpec(names.TOPIC_NORMALIZED, n, week),
        # Dead letters are the merchant's orders too: keep them four weeks.
        TopicSpec(names.TOPIC_DLQ, n, {"retention.ms": str(4 * _WEEK_MS)}),
        TopicSpec(names.TOPIC_STATE, n, {"cleanup.policy": "compact"}),
        TopicSpec(names.TOPIC_ALERTS, n, {"retention.ms": str(4 * _WEEK_MS)}),
        TopicSpec(names.TOPIC_QUARANTINE, n, {"retention.ms": str(4 * _WEEK_MS)}),
        TopicSpec(names.TOPIC_DUPLICATES, n, week),
        # Co-partitioned with the raw topics (same count): a tick on partition p is
        # handled where partition p's orders live.
        TopicSpec(names.TOPIC_TICKS, n, {"retention.ms": str(3600 * 1000)}),
        # Inventory: commands keyed by SKU (one partition serializes a SKU's
        # checks); replies are written to the order's partition explicitly.
        TopicSpec(names.TOPIC_INV_COMMANDS, n, week),
        TopicSpec(names.TOPIC_INV_REPLIES, n, week),
        TopicSpec(names.TOPIC_INV_EVENTS, n, {"retention.ms": str(4 * _WEEK_MS)}),
        TopicSpec(names.TOPIC_INV_LEVELS, n, {"cleanup.policy": "compact"}),
        # Checkpoints: only the latest value per key matters, forever.
        TopicSpec(names.TOPIC_CURSORS, 1, {"cleanup.policy": "compact"}),
    ]
    return [TopicSpec(topic_name(settings, s.name), s.partitions, s.config) for s in specs]


def declare_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create missing declared topics; returns the names created."""
    admin = AdminClient(settings.kafka_client_config())
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc
    missing = [s for s in declared_topics(settings) if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, 1, config=s.config) for s in missing],
        request_timeout=timeout_s,
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    return [s.name for s in missing]
