"""The Faust application: the wiring of the stream steps, and nothing else.

    orders.raw.<channel> --normalize--> orders.normalized
                               \\------> orders.dlq  (bad input, with original bytes)

Agents decode the Kafka event, call a pure step from ``steps``, and send what
it returns through ``output.OutputProducer``. Delivery: at least once. The
output producer is flushed before Faust commits consumed offsets
(``output.FlushBeforeCommit``), so an output is durable before its input's
offset is committed; downstream idempotency comes from the deterministic
event_id.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import faust

from orderpulse import names
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.lifecycle import DEFAULT_LIMITS_S, FINAL, Limits, Peak
from orderpulse.streams.orders import StepOut, on_event, on_tick
from orderpulse.streams.output import FlushBeforeCommit, OutputProducer
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

_RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def faust_broker_urls(settings: Settings) -> list[str]:
    servers = settings.kafka_client_config()["bootstrap.servers"]
    return [f"kafka://{hostport.strip()}" for hostport in servers.split(",") if hostport.strip()]


def limits_from(settings: Settings) -> Limits:
    """Stuck limits: defaults, the configured overrides, the peak calendar."""
    peaks = tuple(Peak(int(datetime.fromisoformat(p["start"]).timestamp() * 1000),
                       int(datetime.fromisoformat(p["end"]).timestamp() * 1000),
                       float(p["factor"])) for p in settings.peak_calendar)
    return Limits({**DEFAULT_LIMITS_S, **settings.stuck_limits_s}, peaks)


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    """Build the Faust app with its topics, table and agents."""
    app = faust.App(
        f"orderpulse-streams{settings.topic_suffix}",
        broker=faust_broker_urls(settings),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.1),
        producer_acks=-1,
        topic_replication_factor=1,
        topic_partitions=settings.default_partitions,
        # The pipeline's topics are declared by orderpulse.topics; Faust declares only
        # its table changelog (it exists already when ours are there).
        topic_allow_declare=True,
    )
    # Every channel's raw topic: a channel without a normalizer yet is dead-lettered
    # (reason unknown_channel, original bytes kept), never left unread. The tick
    # topic is co-partitioned with them: a tick on partition p checks p's orders.
    raw_topics = [topic_name(settings, names.raw_topic(ch)) for ch in names.CHANNELS]
    ticks = topic_name(settings, names.TOPIC_TICKS)
    source = app.topic(*raw_topics, ticks, **_RAW)
    out_topics = {base: topic_name(settings, base) for base in (
        names.TOPIC_NORMALIZED, names.TOPIC_DLQ, names.TOPIC_STATE, names.TOPIC_ALERTS,
        names.TOPIC_QUARANTINE, names.TOPIC_DUPLICATES)}
    # Each order's record: dedup ids, history, state, alert. Written in the context
    # of the raw event's partition, so it lives (and recovers) with the order.
    orders = app.Table("order-state", default=None, partitions=settings.default_partitions)
    output = OutputProducer(settings.kafka_client_config())
    app.sensors.add(FlushBeforeCommit(output))
    worker = OrderWorker(settings, metrics, orders, output, out_topics)

    @app.agent(source, name=names.STEP_NORMALIZE)
    async def normalize(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            if msg.topic == ticks:
                worker.tick(msg.partition)
            else:
                worker.handle(Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value))

    @app.timer(interval=settings.stuck_tick_s, on_leader=True)
    async def tick_every_partition() -> None:
        for partition in range(settings.default_partitions):
            output.send(ticks, b"tick", b"", partition=partition)

    return app


class OrderWorker:
    """What the agent does per message; holds no state beyond the Faust table."""

    def __init__(self, settings: Settings, metrics: Metrics, orders: Any,
                 output: OutputProducer, topics: dict[str, str]) -> None:
        self.metrics = metrics
        self.orders = orders
        self.output = output
        self.topics = topics
        self.pii_key = settings.pii_key.get_secret_value().encode()
        self.window_ms = int(settings.dedup_window_s * 1000)
        self.limits = limits_from(settings)
        self.gauge_every_ms = int(settings.stuck_tick_s * 1000)
        self._gauged_at = 0

    def _send(self, outputs: list[tuple[str, bytes, bytes]]) -> None:
        for base, key, value in outputs:
            self.output.send(self.topics[base], key, value)

    def handle(self, src: Source) -> None:
        now = _now_ms()
        result = normalize_message(src, now_ms=now, pii_key=self.pii_key)
        events = self.metrics.events
        events.labels(names.STEP_NORMALIZE, result.channel, "in").inc()
        for event, (_key, value) in zip(result.events, result.outputs, strict=True):
            out = on_event(self.orders.get(event["order_id"]), event, value,
                           window_ms=self.window_ms, now_ms=now,
                           source=f"{src.topic}/{src.partition}/{src.offset}")
            if out.record is not None:
                self.orders[event["order_id"]] = {**out.record, "p": src.partition}
            self._send(out.outputs)
            self._count(result.channel, out)
        if result.dead_letter is not None:
            self.output.send(self.topics[names.TOPIC_DLQ], src.key, result.dead_letter)
            events.labels(names.STEP_NORMALIZE, result.channel, "dead_letter").inc()
            self.metrics.dead_letters.labels(names.STEP_NORMALIZE, result.reason).inc()
            if result.reason == "unmapped_status":
                self.metrics.unmapped_status.labels(result.channel).inc()

    def _count(self, channel: str, out: StepOut) -> None:
        if out.duplicate:
            self.metrics.duplicates.labels(channel).inc()
        emitted = sum(base == names.TOPIC_NORMALIZED for base, _k, _v in out.outputs)
        if emitted:
            self.metrics.events.labels(names.STEP_NORMALIZE, channel, "out").inc(emitted)
        if out.quarantined:
            self.metrics.quarantined.labels(channel).inc(out.quarantined)
        if out.alerts_resolved:
            self.metrics.alerts.labels("resolved").inc(out.alerts_resolved)
        if out.alerts_raised:
            self.metrics.alerts.labels("raised").inc(out.alerts_raised)

    def tick(self, partition: int) -> None:
        """Stuck checks for this partition's orders; drop finished orders past the window."""
        now = _now_ms()
        local = [(k, v) for k, v in self.orders.items() if v and v.get("p") == partition]
        for key, out in on_tick(local, now_ms=now, limits=self.limits,
                                window_ms=self.window_ms):
            if out.record is not None:
                self.orders[key] = {**out.record, "p": partition}
            self._send(out.outputs)
            self._count(out.record["channel"] if out.record else "unknown", out)
        for key, record in local:
            if record["status"] in FINAL and record["last_event_time"] < now - self.window_ms:
                del self.orders[key]
        # Gauges scan every local order: once per tick interval, not once per
        # partition tick (a round of ticks reaches every partition at once).
        if now - self._gauged_at >= self.gauge_every_ms:
            self._gauged_at = now
            self._gauges()

    def _gauges(self) -> None:
        stuck: dict[tuple[str, str], int] = {}
        open_: dict[str, int] = {}
        for _key, record in self.orders.items():
            if not record or record["status"] in FINAL:
                continue
            open_[record["channel"]] = open_.get(record["channel"], 0) + 1
            if record.get("alert"):
                k = (record["status"], record["channel"])
                stuck[k] = stuck.get(k, 0) + 1
        self.metrics.stuck_orders.clear()
        for (state, channel), n in stuck.items():
            self.metrics.stuck_orders.labels(state, channel).set(n)
        self.metrics.open_orders.clear()
        for channel, n in open_.items():
            self.metrics.open_orders.labels(channel).set(n)
        self.metrics.order_table_entries.set(len(self.orders))


def run_worker(settings: Settings, metrics: Metrics) -> None:
    """Run one Faust worker until SIGTERM/SIGINT (graceful: flush, commit, leave group)."""
    app = create_app(settings, metrics)
    metrics.up.labels(names.STEP_NORMALIZE).set(1)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                          redirect_stdouts=False)
    worker.execute_from_commandline()
