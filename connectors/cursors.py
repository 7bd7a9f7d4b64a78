"""Poller checkpoints on a compacted Kafka topic (``orders.cursors``).

Key ``<channel>/<shop>``, value JSON ``{"checkpoint_ms": ..., "saved_at_ms": ...}``.
The checkpoint is the end of the last window whose every record Kafka
acknowledged, so a restart neither skips a window nor re-reads more than one
window plus the overlap. Loading reads the topic from the beginning to its high
watermark; compaction keeps that short.
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from orderpulse import names
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.errors import BrokerError
from orderpulse.settings import Settings
from orderpulse.topics import topic_name


def cursor_key(channel: str, shop_id: str) -> str:
    return f"{channel}/{shop_id}"


class CursorStore:
    def __init__(self, settings: Settings, producer: AsyncProducer) -> None:
        self.settings = settings
        self.topic = topic_name(settings, names.TOPIC_CURSORS)
        self.producer = producer

    def load(self, timeout_s: float = 30.0) -> dict[str, int]:
        """Every key's latest checkpoint (epoch ms)."""
        consumer = Consumer({**self.settings.kafka_client_config(),
                             "group.id": self.settings.group("cursor-loader"),
                             "enable.auto.commit": False})
        try:
            meta = consumer.list_topics(self.topic, timeout=timeout_s).topics[self.topic]
            parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
                    for tp in parts}
            consumer.assign(parts)
            return self._read_until(consumer, ends, time.monotonic() + timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"cannot load cursors from {self.topic}: {exc}") from exc
        finally:
            consumer.close()

    @staticmethod
    def _read_until(consumer: Consumer, ends: dict[int, int], deadline: float) -> dict[str, int]:
        cursors: dict[str, int] = {}
        pending = {p for p, end in ends.items() if end > 0}
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is not None:
                    continue
                if msg.key() is not None and msg.value() is not None:
                    cursors[msg.key().decode()] = int(orjson.loads(msg.value())["checkpoint_ms"])
                if msg.offset() + 1 >= ends[msg.partition()]:
                    pending.discard(msg.partition())
        if pending:
            raise BrokerError(f"cursor topic not read to its end (partitions {sorted(pending)})")
        return cursors

    async def save(self, key: str, checkpoint_ms: int) -> None:
        """Store a checkpoint; returns once Kafka acknowledged it."""
        value = orjson.dumps({"checkpoint_ms": checkpoint_ms,
                              "saved_at_ms": time.time_ns() // 1_000_000})
        await self.producer.send(self.topic, key=key.encode(), value=value)
