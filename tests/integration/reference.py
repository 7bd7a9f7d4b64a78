"""What the fault tests hold the pipeline to, and how they read what it did.

- ``Traffic``: signed webhooks rendered by the sandbox's channel simulators, sent
  like a channel sends them (retried on connection errors and 5xx until the
  receiver acknowledges), each delivery's fate recorded.
- ``TopicReader``: topics read from the beginning to their end, by assignment
  (no group join). Tansu reports a partition's end as the last batch's first
  offset + 1, so an end is what was read, never what the broker says.
- ``Reference``: the raw records Kafka accepted, run offline through the same
  pure steps the agents call (normalize, lifecycle, allocation, stock), in one
  process and in order, without Kafka, crashes or rebalances. With stock for
  every order (no two orders compete for a unit) its final states and levels
  are what the distributed run must end with.
- ``judge``: what landed (Kafka read to its end, ClickHouse after the sink
  stopped) against the reference: (a) every event once, (b) final order states,
  (c) stock levels, each order's net stock and the ledger's own invariants
  (``ledger_problems``), (d) no stuck alert raised twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.driver import Faults, Sandbox
from orderpulse.connectors.stock_import import adjust
from orderpulse.settings import Settings
from orderpulse.streams import inventory
from orderpulse.streams.app import stock_rules
from orderpulse.streams.lifecycle import RANK
from orderpulse.streams.orders import StockRules, on_event, on_reply, with_stock
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name
from tests.integration.conftest import group_offsets

log = logging.getLogger(__name__)
WINDOW_MS = 48 * 3600 * 1000
#: Channels whose deliveries the sandbox renders as signed webhooks.
WEBHOOK_CHANNELS = ("shopify", "woocommerce", "douyin", "youzan", "ownsite", "kuaidi100")
#: Distribution centres of the demo catalogue, and its SKUs.
CENTRES = ("WH-SH", "WH-GZ", "WH-CD")
SKUS = ("TEE-BLK-M", "TEE-WHT-L", "HOODIE-GRY-M", "CAP-RED", "MUG-LOGO", "SOCKS-3PK")
#: Short limits so that orders sit past them during the run and alerts are raised
# (and replayed after kills); pending payment keeps its 30 minutes: an auto-close
# is an event the raw topics do not hold.
STUCK_LIMITS = {s: 3.0 for s in ("PAID", "APPROVED", "PACKING", "SHIPPED", "IN_TRANSIT",
                                 "DELIVERED")}
#: What the ClickHouse sink consumes.
SINK_TOPICS = [names.TOPIC_NORMALIZED, names.TOPIC_DLQ, names.TOPIC_STATE, names.TOPIC_ALERTS,
               names.TOPIC_DUPLICATES, names.TOPIC_QUARANTINE, names.TOPIC_INV_EVENTS,
               names.TOPIC_INV_LEVELS]


# --- traffic ------------------------------------------------------------------------

@dataclass
class Sent:
    """One delivery: its final answer and every attempt's (time, status; 0 = no answer)."""

    delivery: Delivery
    attempts: list[tuple[float, int]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return self.attempts[-1][1] if self.attempts else 0

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300


class Traffic:
    """Lifecycle events at ``rate``/s for ``duration_s``, in a thread of its own."""

    def __init__(self, channels: dict[str, dict[str, str]], url: str, *, rate: float,
                 duration_s: float, seed: int, faults: Faults, give_up_s: float = 60.0) -> None:
        self.sandbox = Sandbox(channels, seed=seed, faults=faults)
        self.url, self.rate, self.duration_s, self.give_up_s = url, rate, duration_s, give_up_s
        self.sent: list[Sent] = []
        self.events = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._drive())
        except BaseException as exc:  # noqa: BLE001 - handed to the test by join()
            self.error = exc

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> bool:
        """Wait until every delivery is answered for good (or given up)."""
        self._thread.join(timeout_s)
        if self.error is not None:
            raise AssertionError("the traffic thread failed") from self.error
        return not self._thread.is_alive()

    def answers(self, since: float) -> list[tuple[float, int]]:
        return sorted(a for s in list(self.sent) for a in list(s.attempts) if a[0] >= since)

    async def _post(self, client: aiohttp.ClientSession, sent: Sent) -> None:
        d, delay = sent.delivery, 0.1
        deadline = time.monotonic() + self.give_up_s
        while True:
            try:
                async with client.request(d.method, f"{self.url}/webhooks/{d.channel}",
                                          data=d.body, headers=d.headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            sent.attempts.append((time.monotonic(), status))
            # A channel retries what was not acknowledged: no answer or 5xx.
            if 200 <= status < 500 or time.monotonic() > deadline:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(100)
        tasks: list[asyncio.Task[None]] = []
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            async def send(delay: float, sent: Sent) -> None:
                await asyncio.sleep(delay)
                async with limit:
                    await self._post(client, sent)

            started = loop.time()
            while loop.time() - started < self.duration_s:
                due = started + self.events / self.rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                order, event = self.sandbox.sim.step()
                self.events += 1
                rendered = self.sandbox.emit(order, event, datetime.now(UTC))
                for delay, d in self.sandbox.with_faults(rendered):
                    self.sent.append(Sent(d))
                    tasks.append(asyncio.create_task(send(delay, self.sent[-1])))
            await asyncio.gather(*tasks)


# --- topics read to their end -------------------------------------------------------

@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


class TopicReader:
    """Every record of some topics; ``read`` fetches what was added since."""

    def __init__(self, settings: Settings, bases: Iterable[str]) -> None:
        self.settings = settings
        self.topics = {topic_name(settings, b): b for b in bases}
        self.records: dict[str, list[Record]] = {b: [] for b in self.topics.values()}
        self.ends: dict[tuple[str, int], int] = {}
        self._consumer = Consumer({
            **settings.kafka_client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "fetch.wait.max.ms": 100})
        self._consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in self.topics
                               for p in range(settings.default_partitions)])

    def read(self, idle_s: float = 1.5) -> int:
        """Consume until nothing new came for ``idle_s``; the number of new records."""
        new, idle = 0, time.monotonic()
        while time.monotonic() - idle < idle_s:
            for msg in self._consumer.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                rec = Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
                self.records[self.topics[rec.topic]].append(rec)
                self.ends[(rec.topic, rec.partition)] = rec.offset + 1
                new, idle = new + 1, time.monotonic()
        return new

    def decoded(self, base: str, schema: str) -> list[dict[str, Any]]:
        return [codec(schema).decode(r.value) for r in self.records[base]]

    def latest(self, base: str, schema: str, key: str) -> dict[str, dict[str, Any]]:
        """The newest value per ``key`` field (a key's records share a partition)."""
        return {v[key]: v for v in self.decoded(base, schema)}

    def close(self) -> None:
        self._consumer.close()


def behind(settings: Settings, group: str, reader: TopicReader,
           bases: Iterable[str]) -> dict[tuple[str, int], int]:
    """Partitions of ``bases`` that ``group`` has not committed up to what was read."""
    topics = [topic_name(settings, b) for b in bases]
    committed = {(tp.topic, tp.partition): tp.offset
                 for tp in group_offsets(settings, group, topics)}
    return {tp: end - committed.get(tp, -1) for tp, end in reader.ends.items()
            if tp[0] in topics and committed.get(tp, -1) < end}


def wait_settled(settings: Settings, reader: TopicReader, groups: dict[str, list[str]],
                 quiet_s: float, timeout_s: float) -> float:
    """Until every group has committed its topics to their end and no topic of
    ``reader`` grew for ``quiet_s``; returns the seconds it took."""
    started = last_growth = time.monotonic()
    pending: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        before = {b: len(r) for b, r in reader.records.items()}
        if reader.read(idle_s=1.0):
            last_growth = time.monotonic()
        pending = {"grew": {b: len(r) - before[b] for b, r in reader.records.items()
                            if len(r) > before[b]}}
        pending.update({g: lag for g, bases in groups.items()
                        if (lag := behind(settings, g, reader, bases))})
        log.debug("settling: %s", pending)
        if time.monotonic() - last_growth >= quiet_s and len(pending) == 1:
            return time.monotonic() - started
    raise AssertionError(f"not settled in {timeout_s}s: {pending}; "
                         f"{stalled(reader, pending)}")


def stalled(reader: TopicReader, pending: dict[str, Any]) -> list[str]:
    """For each raw partition a group has not committed to its end: whether the
    first records after the committed offset were processed (an event of theirs on
    orders.normalized or orders.duplicates, or their dead letter) or never were."""
    event = codec("OrderEvent")
    traces = {event.decode(r.value)["trace_id"] for r in reader.records[names.TOPIC_NORMALIZED]}
    traces |= {event.decode(codec("RejectedEvent").decode(r.value)["event"])["trace_id"]
               for r in reader.records[names.TOPIC_DUPLICATES]}
    dead = {(d["source_topic"], d["source_partition"], d["source_offset"])
            for d in reader.decoded(names.TOPIC_DLQ, "DeadLetter")}
    raw = {(r.topic, r.partition, r.offset): r for base, rs in reader.records.items()
           if base.startswith(names.RAW_TOPIC_PREFIX) for r in rs}

    def processed(at: tuple[str, int, int]) -> str:
        trace = codec("RawEvent").decode(raw[at].value)["request_id"]
        return "processed" if trace in traces or at in dead else "NOT processed"

    notes = []
    for group, lags in pending.items():
        for (topic, partition), lag in (lags.items() if group != "grew" else ()):
            first = reader.ends[(topic, partition)] - lag
            if (topic, partition, first) in raw:
                seen = [f"{o}: {processed((topic, partition, o))}"
                        for o in range(first, first + min(lag, 4))]
                notes.append(f"{group} {topic}/{partition} committed {first}; {seen}")
    return notes


# --- the offline reference ----------------------------------------------------------

@dataclass
class Expected:
    """What the raw records Kafka accepted must become."""

    event_ids: set[str] = field(default_factory=set)
    dead: set[tuple[str, int, int]] = field(default_factory=set)  # (topic, partition, offset)
    # (event, encoded, source) in raw order: the order each partition was read in.
    events: list[tuple[dict[str, Any], bytes, str]] = field(default_factory=list)


def expected_from_raw(raw: Iterable[Record]) -> Expected:
    """Each raw record through the pure normalize step the agent calls."""
    out = Expected()
    for rec in sorted(raw, key=lambda r: (r.topic, r.partition, r.offset)):
        result = normalize_message(Source(rec.topic, rec.partition, rec.offset, rec.key,
                                          rec.value), now_ms=0)
        if result.dead_letter is not None:
            out.dead.add((rec.topic, rec.partition, rec.offset))
        source = f"{rec.topic}/{rec.partition}/{rec.offset}"
        for event, (_key, value) in zip(result.events, result.outputs, strict=True):
            out.event_ids.add(event["event_id"])
            out.events.append((event, value, source))
    return out


def ample_stock(units: int, now_ms: int, label: str) -> list[dict[str, Any]]:
    """Opening counts with ``units`` of every SKU in every centre (as ADJUST commands)."""
    return [adjust(f"{label}/{wh}/{sku}", wh, sku, "SET", units, "fault test opening", now_ms)
            for wh in CENTRES for sku in SKUS]


class Reference:
    """The agents' pure steps, run in one process: each command is answered at once."""

    def __init__(self, rules: StockRules) -> None:
        self.rules = rules
        self.orders: dict[str, dict[str, Any]] = {}
        self.stock: dict[str, dict[str, Any]] = {}
        self.ledger: list[dict[str, Any]] = []
        self._commands: deque[dict[str, Any]] = deque()

    def run(self, opening: list[dict[str, Any]], expected: Expected) -> Reference:
        for cmd in opening:
            self._commands.append(cmd)
        self._settle(0)
        for event, value, source in expected.events:
            now = _ms(event["received_at"])
            out = on_event(self.orders.get(event["order_id"]), event, value, window_ms=WINDOW_MS,
                           now_ms=now, source=source)
            out = with_stock(out, event, self.rules, now_ms=now, partition=0)
            self._take(event["order_id"], out, now)
        return self

    def _take(self, order_id: str, out: Any, now: int) -> None:
        if out.record is not None:
            self.orders[order_id] = out.record
        for base, _key, value in out.outputs:
            if base == names.TOPIC_INV_COMMANDS:
                self._commands.append(inventory.as_command(
                    codec("InventoryCommand").decode(value)))
            elif base == names.TOPIC_INV_EVENTS:
                self.ledger.append(codec("InventoryEvent").decode(value))
        self._settle(now)

    def _settle(self, now: int) -> None:
        while self._commands:
            out = inventory.handle(self.stock.get, self._commands.popleft(), now)
            for key, value in out.writes:
                if value is None:
                    self.stock.pop(key, None)
                else:
                    self.stock[key] = value
            self.ledger.extend(out.events)
            for _partition, reply in out.replies:
                step = on_reply(self.orders.get(reply["order_id"]), reply, self.rules,
                                now_ms=now, partition=0)
                self._take(reply["order_id"], step, now)

    def states(self) -> dict[str, tuple[str, str]]:
        return {o: (r["status"], r["refund_status"]) for o, r in self.orders.items()}

    def levels(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {(sku, wh): tuple(row) for sku, level in self.stock.items()
                if inventory.is_level(sku) for wh, row in level["wh"].items()}


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def live_levels(levels: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int, int]]:
    """``inventory.levels`` records, the newest version per SKU, as the reference's shape."""
    newest: dict[str, dict[str, Any]] = {}
    for level in levels:
        if level["version"] >= newest.get(level["sku"], {"version": -1})["version"]:
            newest[level["sku"]] = level
    return {(sku, row["warehouse"]): (row["on_hand"], row["reserved"], row["safety"])
            for sku, level in newest.items() for row in level["warehouses"]}


# --- the live ledger on its own ---------------------------------------------------

ENDS = ("COMMITTED", "RELEASED", "EXPIRED")


def stock_by_order(ledger: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """Per order, SKU and warehouse: units taken (committed - restored) and still held.

    Not the ledger's exact events: an order cancelled while its reservation was in
    flight is released without an ALLOCATED (and paid-then-cancelled may end released
    rather than committed and restored); the net effect is what must match."""
    effect: dict[tuple[str, str, str], list[int]] = {}
    holds: dict[str, tuple[str, str, str, int]] = {}
    for e in {e["event_id"]: e for e in ledger}.values():
        at = (e["order_id"] or "", e["sku"], e["warehouse"] or "")
        if e["kind"] == "RESERVED":
            holds[e["reservation_id"]] = (*at, e["quantity"])
        elif e["kind"] in ENDS:
            holds.pop(e["reservation_id"], None)
        if e["kind"] in ("COMMITTED", "RESTORED"):
            sign = 1 if e["kind"] == "COMMITTED" else -1
            effect.setdefault(at, [0, 0])[0] += sign * e["quantity"]
    for order, sku, wh, qty in holds.values():
        effect.setdefault((order, sku, wh), [0, 0])[1] += qty
    return {at: (taken, held) for at, (taken, held) in effect.items() if taken or held}


def ledger_problems(ledger: list[dict[str, Any]],
                    levels: dict[tuple[str, str], tuple[int, int, int]]) -> list[str]:
    """Invariants of the stock ledger (``inventory.events``) against the final levels:
    repeats of an event id are the same change; reserved = open reservations;
    on hand = counts - committed + restored; available >= 0 unless OVERSOLD."""
    problems: list[str] = []
    effect: Callable[[dict[str, Any]], tuple[Any, ...]] = lambda e: (  # noqa: E731
        e["kind"], e["sku"], e["warehouse"], e["reservation_id"], e["quantity"])
    first: dict[str, dict[str, Any]] = {}
    for e in ledger:
        if e["event_id"] in first and effect(first[e["event_id"]]) != effect(e):
            problems.append(f"event id {e['event_id']} repeated with another effect")
        first.setdefault(e["event_id"], e)
    on_hand: dict[tuple[str, str], int] = {}
    holds: dict[str, tuple[tuple[str, str], int]] = {}  # open reservation -> (at, qty)
    oversold = set()
    for e in first.values():  # per SKU in ledger order: its events share a partition
        at, qty, kind = (e["sku"], e["warehouse"]), e["quantity"], e["kind"]
        if kind == "ADJUSTED":
            mode = e["reason"].split(":", 1)[0]
            if mode in ("SET", "DELTA"):
                on_hand[at] = qty + (on_hand.get(at, 0) if mode == "DELTA" else 0)
        elif kind == "RESERVED":
            holds[e["reservation_id"]] = (at, qty)
        elif kind in ENDS:
            holds.pop(e["reservation_id"], None)
        if kind == "COMMITTED":
            on_hand[at] = on_hand.get(at, 0) - qty
        elif kind == "RESTORED":
            on_hand[at] = on_hand.get(at, 0) + qty
        elif kind == "OVERSOLD":
            oversold.add(at)
    reserved: dict[tuple[str, str], int] = {}
    for at, qty in holds.values():
        reserved[at] = reserved.get(at, 0) + qty
    for at, (have, held, safety) in sorted(levels.items()):
        if held != reserved.get(at, 0):
            problems.append(f"{at}: reserved {held} != open reservations {reserved.get(at, 0)}")
        if have != on_hand.get(at, 0):
            problems.append(f"{at}: on hand {have} != counted - committed + restored "
                            f"{on_hand.get(at, 0)}")
        if have - held - safety < 0 and at not in oversold:
            problems.append(f"{at}: available {have - held - safety} without OVERSOLD")
    return problems


# --- the verdict ------------------------------------------------------------------

def landed(settings: Settings) -> dict[str, Any]:
    """What the sink landed, read once it stopped (a chdb path has one user at a time)."""
    db = settings.clickhouse_database
    client = EmbeddedClickHouse(str(settings.chdb_path), db)
    try:
        def rows(sql: str) -> list[dict[str, Any]]:
            return client.query_rows(sql.format(db=db))

        return {
            "events": rows("SELECT count() AS n, uniqExact(event_id) AS u "
                           "FROM {db}.order_events")[0],
            "events_final": int(rows("SELECT count() AS n FROM {db}.order_events FINAL")[0]["n"]),
            "ids": {r["event_id"] for r in rows("SELECT DISTINCT event_id FROM {db}.order_events")},
            "dead": {(r["source_topic"], int(r["source_partition"]), int(r["source_offset"]))
                     for r in rows("SELECT source_topic, source_partition, source_offset FROM "
                                   "{db}.dead_letters FINAL WHERE step = 'normalize'")},
            "states": {r["order_id"]: (r["status"], r["refund_status"]) for r in rows(
                "SELECT order_id, status, refund_status FROM {db}.order_states FINAL")},
            "raised": {(r["order_id"], r["state"]): int(r["n"]) for r in rows(
                "SELECT order_id, state, count() AS n FROM {db}.order_alerts FINAL "
                "WHERE kind = 'RAISED' GROUP BY order_id, state")},
            "levels": {(r["sku"], r["warehouse"]): (int(r["on_hand"]), int(r["reserved"]),
                                                    int(r["safety"])) for r in rows(
                "SELECT sku, warehouse, on_hand, reserved, safety FROM {db}.inventory_levels "
                "FINAL")},
        }
    finally:
        client.close()


@dataclass
class Verdict:
    """The figures of a run and, per check that failed, what differed."""

    figures: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def check(self, name: str, want: Any, got: Any) -> None:
        if want == got:
            return
        if isinstance(want, dict) and isinstance(got, dict):
            self.failures[name] = diff(want, got)
        elif isinstance(want, set) and isinstance(got, set):
            self.failures[name] = (f"missing {len(want - got)} {sorted(want - got)[:8]}, "
                                   f"extra {len(got - want)} {sorted(got - want)[:8]}")
        else:
            self.failures[name] = f"want {want!r:.300} got {got!r:.300}"


def diff(want: dict[Any, Any], got: dict[Any, Any], limit: int = 8) -> str:
    keys = sorted((k for k in set(want) | set(got) if want.get(k) != got.get(k)), key=str)
    return f"{len(keys)} differ: " + "; ".join(
        f"{k}: want {want.get(k)} got {got.get(k)}" for k in keys[:limit])


def normalized_repeats(records: list[Record]) -> tuple[int, list[str]]:
    """(records repeating an event id, ids whose copies differ beyond processed_at).

    A worker that re-reads after a crash or a rebalance emits the same raw
    record's event again (same trace id, same content): a replay, collapsed
    downstream. Anything else under one id is a second event."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        event = codec("OrderEvent").decode(rec.value)
        event.pop("processed_at")
        by_id.setdefault(event["event_id"], []).append(event)
    repeats = sum(len(v) - 1 for v in by_id.values())
    return repeats, sorted(i for i, v in by_id.items() if any(e != v[0] for e in v[1:]))


def judge(settings: Settings, reader: TopicReader, ch: dict[str, Any],
          opening: list[dict[str, Any]], raw_bases: Iterable[str]) -> Verdict:
    """Everything Kafka accepted on ``raw_bases`` against the reference: (a) events once,
    (b) final order states, (c) stock, (d) stuck alerts raised once."""
    raw = [r for base in raw_bases for r in reader.records[base]]
    expected = expected_from_raw(raw)
    ref = Reference(stock_rules(settings)).run(opening, expected)
    normalized = reader.records[names.TOPIC_NORMALIZED]
    repeats, not_replays = normalized_repeats(normalized)
    v = Verdict({"raw_records": len(raw), "event_ids": len(expected.event_ids),
                 "dead_letters": len(expected.dead), "orders": len(ref.orders),
                 "normalized_records": len(normalized), "normalized_replays": repeats,
                 "order_events_rows": int(ch["events"]["n"]),
                 "order_events_ids": int(ch["events"]["u"]),
                 "order_events_final": ch["events_final"]})
    # (a) on orders.normalized and in ClickHouse: every id, no other, one row after FINAL.
    on_topic = {codec("OrderEvent").decode(r.value)["event_id"] for r in normalized}
    v.figures["lost"] = len(expected.event_ids - ch["ids"])
    v.figures["doubled_after_final"] = ch["events_final"] - len(ch["ids"])
    v.check("a: ids on orders.normalized", expected.event_ids, on_topic)
    v.check("a: normalized repeats that are not replays", [], not_replays)
    v.check("a: ids in order_events", expected.event_ids, ch["ids"])
    v.check("a: order_events rows after FINAL", len(expected.event_ids), ch["events_final"])
    v.check("a: dead letters", expected.dead, ch["dead"])
    if lost := (expected.event_ids - on_topic) | (expected.event_ids - ch["ids"]):
        v.failures["a: where the lost events came from"] = "; ".join(sorted(
            f"{e['event_id']} {e['order_id']} {e['event_type']} from {source}"
            for e, _value, source in expected.events if e["event_id"] in lost))
    # (b) final states: Kafka's latest orders.state and ClickHouse's order_states.
    want = ref.states()
    topic_states = {o: (s["status"], s["refund_status"]) for o, s in
                    reader.latest(names.TOPIC_STATE, "OrderState", "order_id").items()}
    v.check("b: orders.state", want, topic_states)
    v.check("b: order_states FINAL", want, ch["states"])
    # (c) stock: levels, each order's net effect, the ledger's own invariants.
    levels = live_levels(reader.decoded(names.TOPIC_INV_LEVELS, "StockLevel"))
    ledger = reader.decoded(names.TOPIC_INV_EVENTS, "InventoryEvent")
    v.figures.update(ledger_records=len(ledger), ledger_ids=len({e["event_id"] for e in ledger}),
                     ledger_kinds=kinds(ledger), reference_kinds=kinds(ref.ledger))
    v.check("c: inventory.levels", ref.levels(), levels)
    v.check("c: inventory_levels FINAL", levels, ch["levels"])
    v.check("c: stock per order", stock_by_order(ref.ledger), stock_by_order(ledger))
    v.check("c: ledger invariants", [], ledger_problems(ledger, levels))
    # (d) stuck alerts: a replay repeats one (same order, state and since); a second
    # alert for the same order and state would carry another since.
    alerts = reader.decoded(names.TOPIC_ALERTS, "OrderAlert")
    raised = [a for a in alerts if a["kind"] == "RAISED" and a["state"] in RANK]
    distinct = {(a["order_id"], a["state"], a["since"]) for a in raised}
    per_state: dict[tuple[str, str], int] = {}
    for order, state, _since in distinct:
        per_state[(order, state)] = per_state.get((order, state), 0) + 1
    v.figures.update(stuck_alerts=len(distinct), stuck_alert_records=len(raised),
                     stock_alerts=sum(a["state"] not in RANK for a in alerts))
    v.check("d: stuck alerts per order and state", {k: 1 for k in per_state}, per_state)
    v.check("d: order_alerts FINAL", {k: 1 for k in per_state},
            {k: n for k, n in ch["raised"].items() if k[1] in RANK})
    v.check("d: stock alerts (ample stock)", 0, v.figures["stock_alerts"])
    return v


def kinds(ledger: list[dict[str, Any]]) -> dict[str, int]:
    """Distinct ledger events per kind."""
    counts: dict[str, int] = {}
    for e in {e["event_id"]: e for e in ledger}.values():
        counts[e["kind"]] = counts.get(e["kind"], 0) + 1
    return counts
