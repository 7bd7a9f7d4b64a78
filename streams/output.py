"""Where agents send their outputs: confluent-kafka's producer (librdkafka, C),
flushed before every Faust offset commit.

Faust's own producer (aiokafka, pure Python) costs more per record than the
normalization itself. Durability order is kept by ``FlushBeforeCommit``: Faust
calls sensors' ``on_commit_initiated`` right before it reads the acked offsets
(no await in between), so every output of an event whose offset is about to be
committed has been acknowledged by Kafka first. A failed delivery raises there,
the commit does not happen, and the worker crashes to re-read (at least once).
"""

from __future__ import annotations

from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from orderpulse.errors import BrokerError


class OutputProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Kafka's default partitioner (Java, aiokafka): a key lands on the partition
            # any producer that follows the topic contracts picks (librdkafka: crc32).
            "partitioner": "murmur2_random",
            **config,
        })
        self._failure: KafkaError | None = None

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None and self._failure is None:
            self._failure = err

    def send(self, topic: str, key: bytes | None, value: bytes,
             partition: int | None = None) -> None:
        """Queue one record; waits (briefly blocking) while the local queue is full."""
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery,
                                       **extra)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued record is acknowledged; raise if any failed."""
        remaining = self._producer.flush(timeout_s)
        if self._failure is not None:
            raise BrokerError(f"output delivery failed: {self._failure}") from KafkaException(
                self._failure)
        if remaining:
            raise BrokerError(f"{remaining} outputs unacknowledged after {timeout_s}s")


class FlushBeforeCommit(faust.Sensor):
    """Faust sensor: flush the output producer before offsets are committed."""

    def __init__(self, output: OutputProducer) -> None:
        super().__init__()
        self.output = output

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.output.flush()
        return None
