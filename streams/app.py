"""The Faust application: the wiring of the stream steps, and nothing else.

    orders.raw.<channel> --normalize--> orders.normalized
        + inventory.replies    \\------> orders.dlq  (bad input, with original bytes)
                                \\-----> inventory.commands (key sku)
    inventory.commands --stock--> inventory.replies (the order's partition)
                           \\----> inventory.events, inventory.levels

Agents decode the Kafka event, call a pure step from ``steps``, and send what
it returns through ``output.OutputProducer``. Delivery: at least once. The
output producer is flushed before Faust commits consumed offsets
(``output.FlushBeforeCommit``), so an output is durable before its input's
offset is committed; so is every table changelog write (``changelog``). Downstream
idempotency comes from the deterministic event_id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.catalog import Catalog
from orderpulse.errors import BrokerError, InputError
from orderpulse.kafka_security import faust_credentials
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams import inventory
from orderpulse.streams.changelog import ChangelogWrites, table_class
from orderpulse.streams.consumer import use_consumer
from orderpulse.streams.lifecycle import DEFAULT_LIMITS_S, FINAL, Limits, Peak
from orderpulse.streams.orders import StepOut, StockRules, on_event, on_reply, on_tick, with_stock
from orderpulse.streams.output import FlushBeforeCommit, OutputProducer
from orderpulse.streams.steps import Source, dead_letter, normalize_message
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


def stock_rules(settings: Settings) -> StockRules:
    return StockRules(Catalog.load(settings.catalog_path), settings.routing_policy,
                      settings.out_of_stock_policy, int(settings.reservation_hold_s * 1000),
                      int(settings.inventory_resend_s * 1000))


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    """Build the Faust app with its topics, table and agents."""
    # Table changelog writes are acknowledged before a commit (streams/changelog.py).
    writes = ChangelogWrites()
    app = faust.App(
        f"orderpulse-streams{settings.topic_suffix}",
        Table=table_class(writes),
        broker=faust_broker_urls(settings),
        # KAFKA_CONFIG's security settings, as Faust/aiokafka credentials (None: plaintext).
        broker_credentials=faust_credentials(settings.kafka_config),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.1),
        producer_acks=-1,
        # Embedded broker: one record per changelog batch, so the end offset it reports is
        # right and table recovery reads every write (see kafka_single_record_batches).
        producer_max_batch_size=1 if settings.kafka_single_record_batches else 16384,
        topic_replication_factor=1,
        topic_partitions=settings.default_partitions,
        # The pipeline's topics are declared by orderpulse.topics; Faust declares only
        # its table changelog (it exists already when ours are there).
        topic_allow_declare=True,
    )
    # The fetch wait, records fetched across a seek read again, commits after the
    # changelog writes (streams/consumer.py).
    use_consumer(app, settings.stream_fetch_max_wait_ms, writes)
    # Every channel's raw topic: a channel without a normalizer yet is dead-lettered
    # (reason unknown_channel, original bytes kept), never left unread. The tick
    # topic is co-partitioned with them: a tick on partition p checks p's orders.
    raw_topics = [topic_name(settings, names.raw_topic(ch)) for ch in names.CHANNELS]
    ticks = topic_name(settings, names.TOPIC_TICKS)
    replies = topic_name(settings, names.TOPIC_INV_REPLIES)
    commands = topic_name(settings, names.TOPIC_INV_COMMANDS)
    source = app.topic(*raw_topics, ticks, replies, **_RAW)
    out_topics = {base: topic_name(settings, base) for base in (
        names.TOPIC_NORMALIZED, names.TOPIC_DLQ, names.TOPIC_STATE, names.TOPIC_ALERTS,
        names.TOPIC_QUARANTINE, names.TOPIC_DUPLICATES, names.TOPIC_INV_COMMANDS,
        names.TOPIC_INV_REPLIES, names.TOPIC_INV_EVENTS, names.TOPIC_INV_LEVELS)}
    # Each order's record: dedup ids, history, state, alert. Written in the context
    # of the raw event's partition, so it lives (and recovers) with the order.
    orders = app.Table("order-state", default=None, partitions=settings.default_partitions)
    output = OutputProducer(settings.kafka_client_config())
    app.sensors.add(FlushBeforeCommit(output))
    rules = stock_rules(settings)
    worker = OrderWorker(settings, metrics, orders, output, out_topics, rules)
    # Each SKU's stock: levels, open reservations, ended reservations, applied
    # adjustments; written in the SKU's partition of inventory.commands.
    stock = app.Table("stock", default=None, partitions=settings.default_partitions)
    stocker = StockWorker(settings, metrics, stock, output, out_topics)

    @app.agent(source, name=names.STEP_NORMALIZE)
    async def normalize(stream: Any) -> None:
        async for event in stream.events():
            src = _source(event.message)
            if src.topic == ticks:
                step = worker.tick_source
            elif src.topic == replies:
                step = worker.reply
            else:
                step = worker.handle
            guarded(worker, step, src)

    @app.agent(app.topic(commands, **_RAW), name=names.STEP_STOCK)
    async def stock_agent(stream: Any) -> None:
        async for event in stream.events():
            guarded(stocker, stocker.handle, _source(event.message))

    @app.timer(interval=settings.stuck_tick_s, on_leader=True)
    async def tick_every_partition() -> None:
        sweep = codec("InventoryCommand").encode(sweep_command(_now_ms()))
        for partition in range(settings.default_partitions):
            output.send(ticks, b"tick", b"", partition=partition)
            output.send(commands, b"sweep", sweep, partition=partition)

    return app


def _source(msg: Any) -> Source:
    # A null value (a tombstone) reads as empty bytes: bad input like any other.
    return Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value or b"")


class _Worker:
    """What both agents' workers share: where their bad input goes."""

    step: str
    metrics: Metrics
    output: OutputProducer
    topics: dict[str, str]

    def dead_letter(self, src: Source, exc: InputError, channel: str | None = None) -> None:
        letter = dead_letter(self.step, src, exc, reason=exc.reason, channel=channel,
                             failed_at=_now_ms())
        self.output.send(self.topics[names.TOPIC_DLQ], src.key, letter)
        self.metrics.dead_letters.labels(self.step, exc.reason).inc()


def guarded(worker: _Worker, handle: Callable[[Source], None], src: Source) -> None:
    """Run one message's step. An exception the step did not turn into data (a bug, or
    input no rule foresaw) dead-letters the message as ``internal_error`` instead of
    killing the agent: Faust would log it, skip the message without a trace and, for
    a crashed agent, stop the partition. A broker failure is not the message's fault:
    it propagates, the offset stays uncommitted and the message comes again."""
    try:
        handle(src)
    except BrokerError:
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        # The class and position only: an exception's text may quote buyer data.
        log.error("step failed, dead-lettered step=%s topic=%s partition=%d offset=%d "
                  "error=%s", worker.step, src.topic, src.partition, src.offset,
                  type(exc).__name__)
        worker.dead_letter(src, InputError(f"{type(exc).__name__} in step {worker.step}",
                                           reason="internal_error"))


class OrderWorker(_Worker):
    """What the agent does per message; holds no state beyond the Faust table."""

    step = names.STEP_NORMALIZE

    def __init__(self, settings: Settings, metrics: Metrics, orders: Any,
                 output: OutputProducer, topics: dict[str, str], rules: StockRules) -> None:
        self.rules = rules
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
            if base == names.TOPIC_INV_COMMANDS:
                self.metrics.stock_messages.labels("commands", "sent").inc()

    def handle(self, src: Source) -> None:
        now = _now_ms()
        result = normalize_message(src, now_ms=now, pii_key=self.pii_key)
        events = self.metrics.events
        events.labels(names.STEP_NORMALIZE, result.channel, "in").inc()
        for event, (_key, value) in zip(result.events, result.outputs, strict=True):
            record = self.orders.get(event["order_id"])
            if record is not None and record.get("p", src.partition) != src.partition:
                # A raw record holds one order's events: none of them is applied yet.
                self._misrouted(src, result.channel, record["p"])
                return
            out = on_event(record, event, value,
                           window_ms=self.window_ms, now_ms=now,
                           source=f"{src.topic}/{src.partition}/{src.offset}")
            out = with_stock(out, event, self.rules, now_ms=now, partition=src.partition)
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

    def _misrouted(self, src: Source, channel: str, home: int) -> None:
        """An event for an order whose record lives on another partition: its raw record
        was not keyed by the order id (the raw topics' contract). Applying it would write
        the order's table changelog from two partitions, which recovery replays in no
        defined order between them (docs/faults.md, defect 10)."""
        self.dead_letter(src, InputError(
            f"order's events arrive on partition {src.partition}, its record lives on "
            f"{home}: key raw records by the order id", reason="misrouted"), channel)
        self.metrics.events.labels(names.STEP_NORMALIZE, channel, "dead_letter").inc()

    def reply(self, src: Source) -> None:
        """A SKU partition's answer to one of this partition's orders."""
        try:
            answer = codec("InventoryReply").decode(src.value or b"")
        except InputError as exc:
            self.dead_letter(src, exc)
            return
        now = _now_ms()
        self.metrics.stock_messages.labels("replies", "handled").inc()
        out = on_reply(self.orders.get(answer["order_id"]), answer, self.rules, now_ms=now,
                       partition=src.partition)
        if out.record is not None:
            self.orders[answer["order_id"]] = {**out.record, "p": src.partition}
        self._send(out.outputs)
        self._count(out.record["channel"] if out.record else "unknown", out)

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
        if out.stock_alert:
            self.metrics.out_of_stock_orders.labels(channel, out.stock_alert).inc()

    def tick_source(self, src: Source) -> None:
        self.tick(src.partition)

    def tick(self, partition: int) -> None:
        """Stuck checks for this partition's orders; drop finished orders past the window."""
        now = _now_ms()
        local = [(k, v) for k, v in self.orders.items() if v and v.get("p") == partition]
        for key, out in on_tick(local, now_ms=now, limits=self.limits,
                                window_ms=self.window_ms, rules=self.rules,
                                partition=partition):
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


def sweep_command(now_ms: int) -> dict[str, Any]:
    return {"kind": "SWEEP", "command_id": f"sweep/{now_ms}", "sku": "", "quantity": 0,
            "at": now_ms}


class StockWorker(_Worker):
    """The stock agent's work per command; state lives in the ``stock`` table only."""

    step = names.STEP_STOCK

    def __init__(self, settings: Settings, metrics: Metrics, stock: Any,
                 output: OutputProducer, topics: dict[str, str]) -> None:
        self.metrics = metrics
        self.stock = stock
        self.output = output
        self.topics = topics
        self.retention_ms = int(settings.inventory_retention_s * 1000)
        self.prune_every_ms = 3600_000
        self._pruned_at: dict[int, int] = {}
        self._units: dict[int, tuple[int, dict[str, int]]] = {}
        self.stale_ms = int(settings.stuck_tick_s * 3000)

    def handle(self, src: Source) -> None:
        try:
            cmd = inventory.as_command(codec("InventoryCommand").decode(src.value or b""))
        except InputError as exc:
            self.dead_letter(src, exc)
            return
        now = _now_ms()
        if cmd["kind"] == "SWEEP":
            self.sweep(src.partition, now)
            return
        if cmd.get("order_id"):
            self.metrics.stock_messages.labels("commands", "handled").inc()
        self._apply(inventory.handle(self.stock.get, cmd, now), src.partition)

    def _apply(self, out: inventory.StockOut, partition: int) -> None:
        for key, value in out.writes:
            if value is None:
                self.stock.pop(key, None)
            else:
                self.stock[key] = {**value, "p": partition}
        event = codec("InventoryEvent")
        for ev in out.events:
            self.output.send(self.topics[names.TOPIC_INV_EVENTS], ev["sku"].encode(),
                             event.encode(ev))
            self.metrics.stock_events.labels(ev["kind"]).inc()
            if ev["kind"] in ("RESERVE_REJECTED", "COMMIT_REJECTED") and \
                    ev["reason"] != inventory.NOT_IN_PREFERRED:
                self.metrics.oversell_prevented.labels(ev["kind"].split("_")[0].lower()).inc()
        reply = codec("InventoryReply")
        for part, answer in out.replies:
            self.output.send(self.topics[names.TOPIC_INV_REPLIES], answer["order_id"].encode(),
                             reply.encode(answer), partition=part)
            self.metrics.stock_messages.labels("replies", "sent").inc()
        if out.level is not None:
            self.output.send(self.topics[names.TOPIC_INV_LEVELS], out.level["sku"].encode(),
                             codec("StockLevel").encode(out.level))

    def sweep(self, partition: int, now: int) -> None:
        """Expire overdue holds, audit every level of the partition, prune old records."""
        local = [(k, v) for k, v in self.stock.items() if v and v.get("p") == partition]
        # Open holds are keys of their own: this one scan finds them for every SKU.
        holds = inventory.holds_by_sku(local)
        units = {"on_hand": 0, "reserved": 0, "available": 0}
        for key, level in local:
            if not inventory.is_level(key):
                continue
            mine = holds.get(key, {})
            out = inventory.expire(self.stock.get, key, inventory.due(mine, now), now)
            self._apply(out, partition)
            level = self.stock.get(key) or level
            problems = inventory.audit(level, inventory.after(mine, out.writes).values())
            for problem in problems:
                log.error("inventory invariant violated step=%s: %s", names.STEP_STOCK, problem)
            if problems:
                self.metrics.inventory_violations.inc(len(problems))
            for row in level["wh"].values():
                units["on_hand"] += row[inventory.ON_HAND]
                units["reserved"] += row[inventory.RESERVED]
                units["available"] += max(inventory.available(row), 0)
        if now - self._pruned_at.get(partition, 0) >= self.prune_every_ms:
            self._pruned_at[partition] = now
            for key in inventory.prune(local, now, self.retention_ms):
                self.stock.pop(key, None)
        self._units[partition] = (now, units)
        self._gauges(now)

    def _gauges(self, now: int) -> None:
        # A partition that moved to another worker stops being swept here: drop it.
        self._units = {p: v for p, v in self._units.items() if now - v[0] <= self.stale_ms}
        self.metrics.stock_units.clear()
        for partition, (_at, units) in self._units.items():
            for kind, n in units.items():
                self.metrics.stock_units.labels(kind, str(partition)).set(n)


def run_worker(settings: Settings, metrics: Metrics) -> None:
    """Run one Faust worker until SIGTERM/SIGINT (graceful: flush, commit, leave group)."""
    app = create_app(settings, metrics)
    metrics.up.labels(names.STEP_NORMALIZE).set(1)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                          redirect_stdouts=False)
    # No terminal spinner: to spin on every log record, Faust sets the root logger to
    # DEBUG, so every debug call in Faust and aiokafka built a record (3% of the worker).
    worker.spinner = None
    worker.execute_from_commandline()
