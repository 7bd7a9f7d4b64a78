"""Sink connector: the pipeline's topics into ClickHouse tables, routed by topic.

    orders.normalized -> order_events       (OrderEvent, one row per event)
    orders.state      -> order_states       (OrderState, the newest per order wins)
    orders.alerts     -> order_alerts       (OrderAlert, one row per alert)
    orders.duplicates -> duplicates         (RejectedEvent, one row per record)
    orders.quarantine -> quarantine         (RejectedEvent, one row per record)
    orders.dlq        -> dead_letters       (DeadLetter, one row per letter)
    inventory.events  -> inventory_events   (InventoryEvent, one row per event)
    inventory.levels  -> inventory_levels   (StockLevel, one row per warehouse)

A record that does not decode goes to ``orders.dlq`` (and so to dead_letters);
a foreign record on ``orders.dlq`` itself is wrapped and kept.

Durability order, per batch: insert into ClickHouse (deterministic dedup
token), flush the dead-letter producer, then commit the consumed offsets.
A crash anywhere before the commit re-reads the batch; the token and the
ReplacingMergeTree key make the re-insert a no-op. While ClickHouse fails the
sink retries the same batch with backoff and consumes nothing new.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import ClickHouse
from orderpulse.errors import ClickHouseError, InputError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.output import OutputProducer
from orderpulse.streams.steps import Source, dead_letter
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0


def ch_time(value: datetime | int) -> str:
    """A UTC timestamp as ClickHouse DateTime64(3) text."""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def order_row(event: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """An ``OrderEvent`` dict as an ``order_events`` row (``landed_at`` set at insert)."""
    lines = event["lines"]
    refund = event.get("refund") or {}
    buyer, receiver = event.get("buyer") or {}, event.get("receiver") or {}
    return {
        **{k: event[k] for k in (
            "event_id", "order_id", "channel", "shop_id", "channel_order_id", "event_type",
            "status", "refund_status", "raw_status", "source_tz", "currency", "total_minor",
            "paid_minor", "discount_minor", "shipping_minor", "tax_minor", "refunded_minor",
            "buyer_ref", "trace_id", "source_event_id")},
        "event_time": ch_time(event["event_time"]),
        "received_at": ch_time(event["received_at"]),
        "processed_at": ch_time(event["processed_at"]),
        "line_ids": [ln["line_id"] for ln in lines],
        "line_skus": [ln["sku"] for ln in lines],
        "line_quantities": [ln["quantity"] for ln in lines],
        "line_unit_prices_minor": [ln["unit_price_minor"] for ln in lines],
        "kafka_partition": partition,
        "kafka_offset": offset,
        "warehouse": event.get("warehouse"),
        "carrier": event.get("carrier"),
        "tracking_no": event.get("tracking_no"),
        "refund_kind": refund.get("kind"),
        "refund_state": refund.get("status"),
        "refund_amount_minor": refund.get("amount_minor"),
        "buyer_phone_hash": buyer.get("phone_hash"),
        "receiver_province": receiver.get("province"),
        "receiver_city": receiver.get("city"),
        # "SKU*qty,SKU*qty" per line: bundle contents, for the inventory views.
        "line_components": [",".join(f"{c['sku']}*{c['quantity']}"
                                     for c in ln.get("components", [])) for ln in lines],
        "flags": event.get("flags", []),
    }


def inventory_event_row(event: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """An ``InventoryEvent`` dict as an ``inventory_events`` row (``landed_at`` set at insert)."""
    return {
        **{k: event[k] for k in (
            "event_id", "kind", "sku", "warehouse", "reservation_id", "order_id", "quantity",
            "on_hand", "reserved", "safety", "available", "reason")},
        "at": ch_time(event["at"]),
        **_provenance(partition, offset),
    }


def _provenance(partition: int, offset: int) -> dict[str, int]:
    return {"kafka_partition": partition, "kafka_offset": offset}


def order_state_row(state: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """An ``OrderState`` dict as an ``order_states`` row (``landed_at`` set at insert)."""
    return {
        **{k: state[k] for k in ("order_id", "channel", "status", "refund_status",
                                 "event_count", "stuck")},
        **{k: ch_time(state[k]) for k in ("status_since", "last_event_time", "updated_at")},
        **_provenance(partition, offset),
    }


def order_alert_row(alert: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """An ``OrderAlert`` dict as an ``order_alerts`` row (``landed_at`` set at insert)."""
    return {
        **{k: alert[k] for k in ("kind", "order_id", "channel", "state", "limit_ms",
                                 "stuck_for_ms")},
        "since": ch_time(alert["since"]),
        "at": ch_time(alert["at"]),
        **_provenance(partition, offset),
    }


def rejected_event_row(rejected: dict[str, Any], partition: int, offset: int) -> dict[str, Any]:
    """A ``RejectedEvent`` dict as a ``duplicates`` or ``quarantine`` row.

    The embedded event bytes are left out: the event is in order_events under
    the same ``event_id`` (and on the topic for its retention).
    """
    return {
        **{k: rejected[k] for k in ("reason", "order_id", "channel", "event_id", "event_type",
                                    "from_status", "to_status")},
        "event_time": ch_time(rejected["event_time"]),
        "at": ch_time(rejected["at"]),
        **_provenance(partition, offset),
    }


def stock_level_rows(level: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``StockLevel`` dict as ``inventory_levels`` rows, one per warehouse (none if none)."""
    shared = {"sku": level["sku"], "available_to_sell": level["available_to_sell"],
              "version": level["version"], "at": ch_time(level["at"])}
    return [{**shared, **wh} for wh in level["warehouses"]]


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def dead_letter_row(letter: dict[str, Any]) -> dict[str, Any]:
    """A ``DeadLetter`` dict as a ``dead_letters`` row (``landed_at`` set at insert)."""
    return {
        **{k: letter[k] for k in ("step", "reason", "error_class", "message", "channel",
                                  "source_topic", "source_partition", "source_offset")},
        "original_key_b64": _b64(letter["original_key"]),
        "original_value_b64": _b64(letter["original_value"]),
        "failed_at": ch_time(letter["failed_at"]),
    }


@dataclass
class Batch:
    """Rows buffered per table, and the offsets they came from."""

    started: float = 0.0
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    latencies: list[tuple[str, int]] = field(default_factory=list)  # (channel, event_time ms)
    offsets: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    dead_letters_out: int = 0

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def track(self, msg: Message) -> None:
        tp = (msg.topic(), msg.partition())
        first, _ = self.offsets.get(tp, (msg.offset(), msg.offset()))
        self.offsets[tp] = (first, msg.offset())

    def token(self, table: str) -> str:
        """Deterministic per (table, offset ranges): a retried insert dedups on the server."""
        spans = ",".join(f"{t}:{p}:{a}-{b}" for (t, p), (a, b) in sorted(self.offsets.items()))
        return hashlib.sha256(f"{table}|{spans}".encode()).hexdigest()


RowFunction = Callable[[dict[str, Any], int, int], dict[str, Any]]

# Topics whose record is one row of one table: topic -> (Avro record, table, row).
ONE_ROW_TOPICS: dict[str, tuple[str, str, RowFunction]] = {
    names.TOPIC_STATE: ("OrderState", names.TABLE_ORDER_STATES, order_state_row),
    names.TOPIC_ALERTS: ("OrderAlert", names.TABLE_ORDER_ALERTS, order_alert_row),
    names.TOPIC_DUPLICATES: ("RejectedEvent", names.TABLE_DUPLICATES, rejected_event_row),
    names.TOPIC_QUARANTINE: ("RejectedEvent", names.TABLE_QUARANTINE, rejected_event_row),
    names.TOPIC_INV_EVENTS: ("InventoryEvent", names.TABLE_INVENTORY_EVENTS, inventory_event_row),
}


def _epoch_ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


class ClickHouseSink:
    """Consume the order, health, dead-letter and inventory topics; write them in batches."""

    def __init__(self, settings: Settings, client: ClickHouse, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.clock = clock
        self.dlq_topic = topic_name(settings, names.TOPIC_DLQ)
        # Topic -> handler: the one place that says which record each topic holds
        # (with ONE_ROW_TOPICS for the topics whose record is one row).
        self._routes: dict[str, Callable[[Message], None]] = {
            topic_name(settings, names.TOPIC_NORMALIZED): self._accept_order,
            self.dlq_topic: self._accept_dead_letter,
            topic_name(settings, names.TOPIC_INV_LEVELS): self._accept_stock_level,
            **{topic_name(settings, topic): partial(self._accept_row, *route)
               for topic, route in ONE_ROW_TOPICS.items()},
        }
        self.batch = Batch()
        self._stop = threading.Event()
        base = settings.kafka_client_config()
        self.consumer = Consumer({
            **base,
            "group.id": settings.group(names.STEP_SINK),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(int(settings.session_timeout_s * 100), 100),
            # Tansu answers a fetch only near its max wait even when data is there
            # (measured: p50 = wait/4); Kafka answers at fetch.min.bytes. 100 ms
            # bounds the added latency on both at 10 idle fetches/s.
            "fetch.wait.max.ms": 100,
        })
        # Dead letters: acknowledged (or the failure raised) before each commit.
        self.producer = OutputProducer({**base, "linger.ms": 20})

    # --- loop -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; then flush what is buffered and close."""
        self._stop = stop
        self.consumer.subscribe(list(self._routes), on_revoke=self._on_revoke)
        self.metrics.up.labels(names.STEP_SINK).set(1)
        try:
            while not stop.is_set():
                room = max(self.settings.sink_batch_rows - len(self.batch), 1)
                for msg in self.consumer.consume(num_messages=min(room, 1000), timeout=0.2):
                    self._accept(msg)
                if self._due():
                    self.flush()
            self.flush()
        finally:
            self.metrics.up.labels(names.STEP_SINK).set(0)
            self.consumer.close()

    def _due(self) -> bool:
        if not self.batch.offsets:
            return False
        age = self.clock() - self.batch.started
        return len(self.batch) >= self.settings.sink_batch_rows or \
            age >= self.settings.sink_batch_seconds

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Land what we hold before the partitions move, so the new owner starts
        # after it instead of re-inserting it.
        self.flush()

    # --- per message ------------------------------------------------------------
    def _accept(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error step=%s: %s", names.STEP_SINK, err)
            return
        if not self.batch.offsets:
            self.batch.started = self.clock()
        self.batch.track(msg)
        self._routes[msg.topic()](msg)

    def _decode(self, msg: Message, record: str) -> dict[str, Any] | None:
        """The decoded record, or None after sending the message to the dead-letter topic."""
        try:
            return codec(record).decode(msg.value() or b"")
        except InputError as exc:
            self._reject(msg, exc)
            return None

    def _add(self, table: str, rows: list[dict[str, Any]]) -> None:
        self.batch.rows.setdefault(table, []).extend(rows)

    def _accept_order(self, msg: Message) -> None:
        if (event := self._decode(msg, "OrderEvent")) is None:
            return
        self._add(names.TABLE_ORDER_EVENTS, [order_row(event, msg.partition(), msg.offset())])
        self.batch.latencies.append((event["channel"], _epoch_ms(event["event_time"])))

    def _accept_row(self, record: str, table: str, row: RowFunction, msg: Message) -> None:
        if (decoded := self._decode(msg, record)) is not None:
            self._add(table, [row(decoded, msg.partition(), msg.offset())])

    def _accept_stock_level(self, msg: Message) -> None:
        if (level := self._decode(msg, "StockLevel")) is not None:
            self._add(names.TABLE_INVENTORY_LEVELS, stock_level_rows(level))

    def _accept_dead_letter(self, msg: Message) -> None:
        value = msg.value() or b""
        try:
            letter = codec("DeadLetter").decode(value)
        except InputError as exc:
            # A foreign record on the dead-letter topic: keep it, wrapped, rather
            # than send it back to the topic it came from.
            src = Source(msg.topic(), msg.partition(), msg.offset(), msg.key(), value)
            letter = codec("DeadLetter").decode(dead_letter(
                names.STEP_SINK, src, exc, reason=exc.reason, channel=None,
                failed_at=int(self.clock() * 1000)))
            # Counted like every letter the sink makes: garbage arriving on orders.dlq
            # (a misrouted producer) shows in the dead-letter rate and its alert.
            self.metrics.dead_letters.labels(names.STEP_SINK, exc.reason).inc()
        self._add(names.TABLE_DEAD_LETTERS, [dead_letter_row(letter)])

    def _reject(self, msg: Message, exc: InputError) -> None:
        src = Source(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value() or b"")
        letter = dead_letter(names.STEP_SINK, src, exc, reason=exc.reason, channel=None,
                             failed_at=int(self.clock() * 1000))
        self.producer.send(self.dlq_topic, msg.key(), letter)
        self.batch.dead_letters_out += 1
        self.metrics.dead_letters.labels(names.STEP_SINK, exc.reason).inc()

    # --- flush --------------------------------------------------------------------
    def flush(self) -> None:
        """Insert every table's rows, flush dead letters, then commit offsets."""
        if not self.batch.offsets:
            return
        # landed_at is the insert time: the end of the end-to-end latency.
        landed = ch_time(int(self.clock() * 1000))
        for table, rows in self.batch.rows.items():
            for row in rows:
                row["landed_at"] = landed
            if rows:
                self._insert_with_retry(table, rows)
        # Raises if a letter was refused or not acknowledged: nothing is committed and
        # the batch is read again.
        self.producer.flush()
        self._commit()
        self._observe()
        self.batch = Batch()

    def _insert_with_retry(self, table: str, rows: list[dict[str, Any]]) -> None:
        token, backoff = self.batch.token(table), 0.5
        while True:
            started = time.perf_counter()
            try:
                self.client.insert_rows(table, rows, dedup_token=token)
            except ClickHouseError as exc:
                self.metrics.sink_failures.labels(table).inc()
                log.warning("insert failed step=%s table=%s rows=%d retry_in=%.1fs: %s",
                            names.STEP_SINK, table, len(rows), backoff, str(exc)[:300])
                if self._stop.is_set():
                    # Stopping: leave without committing; the batch is re-read later.
                    raise
                self._wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self.metrics.sink_batch_seconds.labels(table).observe(time.perf_counter() - started)
            self.metrics.sink_batch_rows.labels(table).observe(len(rows))
            return

    def _wait(self, seconds: float) -> None:
        # consume() on paused partitions keeps the group membership alive
        # (max.poll.interval.ms) without taking new records.
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for msg in self.consumer.consume(num_messages=1, timeout=0.1):
                    if msg.error() is None:
                        # Never expected; crashing re-reads it, skipping would lose it.
                        raise RuntimeError(f"record at offset {msg.offset()} consumed while paused")
        finally:
            self.consumer.resume(assignment)

    def _commit(self) -> None:
        offsets = [TopicPartition(t, p, last + 1)
                   for (t, p), (_first, last) in self.batch.offsets.items()]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partitions: the rows are in, and the
            # new owner's re-insert is deduplicated. Not fatal.
            log.warning("offset commit failed step=%s: %s", names.STEP_SINK, exc)

    def _observe(self) -> None:
        now_ms = int(self.clock() * 1000)
        events = self.metrics.events
        for channel, event_ms in self.batch.latencies:
            latency_s = max(now_ms - event_ms, 0) / 1000
            self.metrics.end_to_end_latency.labels(channel).observe(latency_s)
        by_channel: dict[str, int] = {}
        for channel, _ in self.batch.latencies:
            by_channel[channel] = by_channel.get(channel, 0) + 1
        for channel, count in by_channel.items():
            events.labels(names.STEP_SINK, channel, "out").inc(count)
        dead = len(self.batch.rows.get(names.TABLE_DEAD_LETTERS, []))
        if dead:
            events.labels(names.STEP_SINK, "all", "dead_letter_landed").inc(dead)


def run_sink(settings: Settings, client: ClickHouse, metrics: Metrics,
             stop: threading.Event) -> None:
    """Apply the DDL (unless production's migrate job owns it), then run until ``stop``."""
    from orderpulse.clickhouse import apply_ddl

    if settings.apply_ddl:
        apply_ddl(client)
    ClickHouseSink(settings, client, metrics).run(stop)
