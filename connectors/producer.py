"""An asyncio face on confluent-kafka's producer: ``await send(...)`` returns once
the broker acknowledged the record (acks=all, idempotent), so a webhook can
answer 2xx only for what is durable.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer


class Backpressure(Exception):
    """The local produce queue is full: answer the caller with a retryable status."""


class AsyncProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Kafka's default partitioner (Java, aiokafka): a key lands on the partition
            # any producer that follows the topic contracts picks (librdkafka: crc32).
            "partitioner": "murmur2_random",
            # Bounded local buffer: past it, callers are told to retry later
            # instead of the process growing without limit.
            "queue.buffering.max.messages": 50_000,
            "queue.buffering.max.kbytes": 262_144,
            **config,
        })
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, *, key: bytes | None, value: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> None:
        """Produce and wait for the broker's acknowledgement."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_resolve, done, err)

        try:
            self._producer.produce(topic, key=key, value=value, headers=headers,
                                   on_delivery=on_delivery)
        except BufferError as exc:
            raise Backpressure("produce queue full") from exc
        await done

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush and stop; returns the number of records still unacknowledged."""
        remaining = int(self._producer.flush(timeout_s))
        self._closed.set()
        self._poller.join(2)
        return remaining


def _resolve(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaException(err))
