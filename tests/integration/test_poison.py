"""Poison records on the real broker, interleaved with good ones on one partition of
every topic a worker consumes: each poison record reaches the dead letters with its
reason and its original bytes, the good records after it are processed (the
partition keeps moving), no worker restarts or logs a crash, and the dead-letter
counter counts every one.

    orders.raw.shopify  --normalize-->  orders.dlq   (step normalize)
    inventory.replies   --normalize-->  orders.dlq   (step normalize)
    inventory.commands  --stock------>  orders.dlq   (step stock)
    orders.normalized   --sink------->  orders.dlq   (step clickhouse_sink)
    orders.dlq          --sink------->  dead_letters (a foreign record kept, wrapped)

Sizes: Tansu enforces no message size (measured: it takes and serves 20 MB), so a
producer with a larger ``message.max.bytes`` can publish a 5 MB record on any topic.
Our own producers keep librdkafka's default of 1,000,000 bytes. So "huge" is 5 MB, and
"large" is 900 kB (under every limit, and above aiokafka's 1 MiB fetch size it is not).

``test_null_and_huge_records_do_not_kill_the_stream_agents`` holds the stream agents to
the same rule for a null value, a 5 MB value and a command that decodes but cannot be
applied (each once killed an agent: docs/faults.md, "Poison records").
"""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.channels.shopify import sign
from orderpulse.runner import Pipeline
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory, group_offsets
from tests.unit.helpers import created_event, fixture_bytes, raw_bytes

pytestmark = pytest.mark.integration

HUGE = 5 * 1024 * 1024
LARGE = 900_000
#: What a dead letter keeps of its original at most (connectors/clickhouse_sink.py).
LETTER_BOUND = 960_000
GOOD_PER_TOPIC = 9  # one after each of the (at most 8) poison records
GARBAGE_KEY = b"\xff\x00\xfe\x80 not a key"
PAID = orjson.loads(fixture_bytes("shopify", "orders_paid.json"))
NOW_MS = int(time.time() * 1000)
SECRET = "test-secret"


@dataclass(frozen=True)
class Poison:
    name: str
    key: bytes | None
    value: bytes | None  # None: a null value (a tombstone)
    reason: str


# --- records ------------------------------------------------------------------------

def order_event(n: int) -> dict[str, Any]:
    return created_event(n, event_id=f"poison-good-{n}", at_ms=NOW_MS - 60_000 + n)


def reply(n: int) -> dict[str, Any]:
    # An answer for an order nobody holds, refused: handled, and changes nothing.
    return {"kind": "RESERVE", "order_id": f"shopify:poison-{n}",
            "reservation_id": f"shopify:poison-{n}#1#0", "sku": "CAP-RED", "quantity": 1,
            "ok": False, "warehouse": None, "reason": "insufficient_stock", "at": NOW_MS}


def adjust(n: int, warehouses: tuple[str, ...] = ("WH-SH",)) -> dict[str, Any]:
    return {"kind": "ADJUST", "command_id": f"poison-good-{n}", "sku": "CAP-RED",
            "quantity": 100 + n, "warehouses": list(warehouses), "adjust_mode": "SET",
            "reason": f"good-{n}", "at": NOW_MS}


def letter(n: int) -> dict[str, Any]:
    return {"step": "normalize", "reason": "not_json", "error_class": "DecodeError",
            "message": "good letter", "channel": "shopify", "source_topic": "elsewhere",
            "source_partition": 0, "source_offset": n, "original_key": b"k",
            "original_value": b"{", "failed_at": NOW_MS}


def shopify_body(n: int) -> bytes:
    return orjson.dumps({**PAID, "id": 7_300_000_000_000_000_000 + n})


def bad_utf8(encoded: bytes, text: bytes) -> bytes:
    """The Avro bytes with one string field's text made invalid UTF-8 (same length)."""
    assert text in encoded
    return encoded.replace(text, b"\xff" + text[1:], 1)


def common(good: bytes, other: bytes, utf8: bytes, *, huge: str | None,
           null: bool) -> list[Poison]:
    """The poison every consumed topic gets; ``huge``: the 5 MB value's reason, if sent."""
    out = [
        Poison("other_schema", b"k", other, "unknown_schema"),
        Poison("truncated", b"k", good[: len(good) // 2], "corrupt_avro"),
        Poison("invalid_utf8", b"k", utf8, "corrupt_avro"),
        Poison("empty", b"k", b"", "not_avro"),
        Poison("garbage_key", GARBAGE_KEY, b"\x07garbage\xff", "not_avro"),
        Poison("large", b"k", b"\x00" * LARGE, "not_avro"),
    ]
    if huge is not None:
        out.append(Poison("huge", b"k", b"\x00" * HUGE, huge))
    if null:
        out.append(Poison("null", b"k", None, "not_avro"))
    return out


@dataclass
class Target:
    """One consumed topic: its good records, its poison, and who dead-letters it."""

    base: str
    step: str
    group: Callable[[Settings], str]
    good: list[tuple[bytes | None, bytes]]
    poison: list[Poison]


def _streams(s: Settings) -> str:
    return f"orderpulse-streams{s.topic_suffix}"


def _sink(s: Settings) -> str:
    return s.group(names.STEP_SINK)


CMD, REP, EV, DL = (codec(r) for r in ("InventoryCommand", "InventoryReply", "OrderEvent",
                                       "DeadLetter"))


def raw_target(poison: list[Poison]) -> Target:
    good: list[tuple[bytes | None, bytes]] = [
        (str(i).encode(), raw_bytes(shopify_body(i))) for i in range(1, GOOD_PER_TOPIC)]
    # A good record under a garbage key: keys are not trusted, only values are read.
    good.append((GARBAGE_KEY, raw_bytes(shopify_body(GOOD_PER_TOPIC))))
    return Target(names.raw_topic("shopify"), names.STEP_NORMALIZE, _streams, good, poison)


def stream_targets() -> list[Target]:
    """The stream agents' topics with the poison every consumed topic gets."""
    good_raw = raw_bytes(shopify_body(0))
    raw = [
        Poison("other_schema", b"k", REP.encode(reply(0)), "unknown_schema"),
        Poison("truncated", b"k", good_raw[: len(good_raw) // 2], "corrupt_avro"),
        Poison("invalid_utf8_json", b"k",
               raw_bytes(shopify_body(0).replace(b"IPOD2008PINK", b"IPOD\xff\xfePINK")),
               "not_json"),
        Poison("empty", b"k", b"", "not_avro"),
        Poison("garbage_key", GARBAGE_KEY, b"\x07garbage\xff", "not_avro"),
        Poison("large", b"k", raw_bytes(b"x" * LARGE), "not_json"),
    ]
    return [
        raw_target(raw),
        Target(names.TOPIC_INV_REPLIES, names.STEP_NORMALIZE, _streams,
               [(b"o", REP.encode(reply(i))) for i in range(1, GOOD_PER_TOPIC + 1)],
               common(REP.encode(reply(0)), CMD.encode(adjust(0)),
                      bad_utf8(REP.encode(reply(0)), b"CAP-RED"), huge=None, null=False)),
        Target(names.TOPIC_INV_COMMANDS, names.STEP_STOCK, _streams,
               [(b"CAP-RED", CMD.encode(adjust(i))) for i in range(1, GOOD_PER_TOPIC + 1)],
               common(CMD.encode(adjust(0)), REP.encode(reply(0)),
                      bad_utf8(CMD.encode(adjust(0)), b"CAP-RED"), huge=None, null=False)),
    ]


def sink_targets() -> list[Target]:
    """The sink's topics, with every kind of poison (huge and null included)."""
    return [
        Target(names.TOPIC_NORMALIZED, names.STEP_SINK, _sink,
               [(f"shopify:{i}".encode(), EV.encode(order_event(i)))
                for i in range(1, GOOD_PER_TOPIC + 1)],
               common(EV.encode(order_event(0)), raw_bytes(shopify_body(0)),
                      bad_utf8(EV.encode(order_event(0)), b"poison-good-0"),
                      huge="not_avro", null=True)),
        Target(names.TOPIC_DLQ, names.STEP_SINK, _sink,
               [(b"k", DL.encode(letter(i))) for i in range(1, GOOD_PER_TOPIC + 1)],
               common(DL.encode(letter(0)), EV.encode(order_event(0)),
                      bad_utf8(DL.encode(letter(0)), b"good letter"), huge="not_avro",
                      null=True)),
    ]


def stream_defect_targets() -> list[Target]:
    """What once killed a stream agent: a null value, a 5 MB value, an impossible command."""
    cases = [Poison("null", b"k", None, "not_avro"), Poison("huge", b"k", b"\x00" * HUGE,
                                                            "not_avro")]
    raw = [Poison("null", b"k", None, "not_avro"),
           Poison("huge", b"k", raw_bytes(b"x" * HUGE), "not_json")]
    impossible = Poison("adjust_without_warehouse", b"CAP-RED",
                        CMD.encode(adjust(0, warehouses=())), "missing_field")
    return [
        raw_target(raw),
        Target(names.TOPIC_INV_REPLIES, names.STEP_NORMALIZE, _streams,
               [(b"o", REP.encode(reply(i))) for i in range(1, GOOD_PER_TOPIC + 1)], cases),
        Target(names.TOPIC_INV_COMMANDS, names.STEP_STOCK, _streams,
               [(b"CAP-RED", CMD.encode(adjust(i))) for i in range(1, GOOD_PER_TOPIC + 1)],
               [*cases, impossible]),
    ]


# --- publishing and reading ---------------------------------------------------------

@dataclass
class Placed:
    topic: str
    offset: int
    key: bytes | None
    value: bytes | None
    poison: Poison | None


def publish(settings: Settings, target: Target) -> list[Placed]:
    """good, poison, good, poison, ... good on partition 0, one at a time, in order."""
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True,
                         "message.max.bytes": 2 * HUGE, "linger.ms": 0})
    topic = topic_name(settings, target.base)
    order: list[tuple[bytes | None, bytes | None, Poison | None]] = []
    for i, (key, value) in enumerate(target.good):
        order.append((key, value, None))
        if i < len(target.poison):
            p = target.poison[i]
            order.append((p.key, p.value, p))
    assert len(target.poison) < len(target.good), "a good record after every poison"
    placed: list[Placed] = []
    for key, value, poison in order:
        offsets: list[int] = []
        producer.produce(topic, key=key, value=value, partition=0,
                         on_delivery=lambda err, msg, out=offsets: out.append(
                             -1 if err else msg.offset()))
        assert producer.flush(15) == 0 and offsets[0] >= 0
        placed.append(Placed(topic, offsets[0], key, value, poison))
    return placed


def read_letters(settings: Settings, own_poison: set[int],
                 idle_s: float = 3.0) -> dict[tuple[str, int], Any]:
    """Dead letters on orders.dlq (all partitions) by source (topic, offset); skips the
    poison this test put on partition 0 of orders.dlq (offsets ``own_poison``)."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "poison-reader",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    topic = topic_name(settings, names.TOPIC_DLQ)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in range(settings.default_partitions)])
    letters, idle = {}, time.monotonic()
    try:
        # Read to the end by idleness: Tansu's reported end offsets are not exact.
        while time.monotonic() - idle < idle_s:
            for msg in consumer.consume(100, 0.3):
                if msg.error() is not None:
                    continue
                idle = time.monotonic()
                if msg.topic() == topic and msg.partition() == 0 and (
                        msg.offset() in own_poison):
                    continue  # our own poison on orders.dlq: not a letter
                d = DL.decode(msg.value() or b"")
                letters[(d["source_topic"], d["source_offset"])] = d
    finally:
        consumer.close()
    return letters


def committed_past(settings: Settings, target: Target, last: int) -> bool:
    offsets = group_offsets(settings, target.group(settings),
                            [topic_name(settings, target.base)])
    return any(tp.partition == 0 and tp.offset >= last + 1 for tp in offsets)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str,
             pipeline: Pipeline) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} not reached in {timeout_s}s\n" + "\n".join(
        f"--- {c.name}\n{c.log_tail(40)}" for c in pipeline.children.values()))


def crash_lines(pipeline: Pipeline) -> list[str]:
    marks = ("traceback", "crashed", "restarting dead", "agent error")
    return [f"{c.name}: {line}" for c in pipeline.children.values()
            for line in c.log_path.read_text(errors="replace").splitlines()
            if any(m in line.lower() for m in marks)]


def letter_problems(d: Any, target: Target, p: Placed) -> list[str]:
    """The letter names the step and reason and holds the original key and value; one
    over the letter bound may be kept as its first bytes, with its length and SHA-256."""
    assert p.poison is not None
    where = f"{target.base} {p.poison.name}"
    if d is None:
        return [f"{where}: not dead-lettered"]
    problems = []
    if (d["step"], d["reason"]) != (target.step, p.poison.reason):
        problems.append(f"{where}: letter {d['step']}/{d['reason']} ({d['message'][:80]})")
    value = p.value or b""
    if (d["original_value"], d["original_key"]) == (value, p.key):
        return problems
    if len(value) <= LETTER_BOUND:
        problems.append(f"{where}: original bytes not kept")
    elif not (len(d["original_value"]) >= LETTER_BOUND - 1024
              and value.startswith(d["original_value"]) and str(len(value)) in d["message"]
              and hashlib.sha256(value).hexdigest() in d["message"]):
        problems.append(f"{where}: cut original without its length and SHA-256")
    return problems


def expected_counts(targets: list[Target]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for t in targets:
        for p in t.poison:
            counts[(t.step, p.reason)] = counts.get((t.step, p.reason), 0) + 1
    return counts


def good_replies_handled(pipeline: Pipeline) -> float:
    """Replies handled beyond those the stock agent sent (the good orders' own): ours."""
    s = pipeline.samples()
    return sum(sign * total(s, "orderpulse_stock_messages_total", stream="replies",
                            outcome=outcome) for sign, outcome in ((1, "handled"), (-1, "sent")))


def good_processed(pipeline: Pipeline, targets: list[Target]) -> dict[str, float]:
    """Good records processed per target, as the workers' counters say."""
    s, out = pipeline.samples(), {}
    for t in targets:
        if t.base == names.raw_topic("shopify"):
            out[t.base] = total(s, "orderpulse_events_total", step=names.STEP_NORMALIZE,
                                outcome="out")
        elif t.base == names.TOPIC_INV_REPLIES:
            out[t.base] = good_replies_handled(pipeline)
        elif t.base == names.TOPIC_INV_COMMANDS:
            out[t.base] = total(s, "orderpulse_stock_events_total", kind="ADJUSTED")
    return out


def run_poison(pipeline: Pipeline, targets: list[Target]) -> dict[str, list[Placed]]:
    """Publish every target's records, wait until every partition is committed past its
    last record and the run is drained; then every problem found, in one assertion:
    letters, counters, good records processed, restarts, crashes."""
    settings = pipeline.settings
    pids = {name: c.process.pid for name, c in pipeline.children.items()}
    placed = {t.base: publish(settings, t) for t in targets}
    for t in targets:
        last = placed[t.base][-1].offset
        wait_for(lambda t=t, last=last: committed_past(settings, t, last), 60,
                 f"{t.base} committed past offset {last}", pipeline)
    if "sink" in pipeline.children:
        wait_for(pipeline.drained, 60, "drained", pipeline)
    stream_bases = {t.base for t in targets if t.step != names.STEP_SINK}
    Pipeline.wait_until(lambda: all(n >= GOOD_PER_TOPIC for n in
                                    good_processed(pipeline, targets).values()), 10)

    problems: list[str] = []
    letters = read_letters(settings, {p.offset for p in placed.get(names.TOPIC_DLQ, [])
                                      if p.poison is not None})
    for t in targets:
        if t.base == names.TOPIC_DLQ:
            continue  # kept in ClickHouse, not sent back to orders.dlq
        for p in placed[t.base]:
            if p.poison is not None:
                problems += letter_problems(letters.get((p.topic, p.offset)), t, p)
    samples = pipeline.samples()
    for (step, reason), n in expected_counts(targets).items():
        counted = total(samples, "orderpulse_dead_letters_total", step=step, reason=reason)
        if counted != n:
            problems.append(f"dead letters {step}/{reason}: counted {counted:.0f}, sent {n}")
    for base, n in good_processed(pipeline, targets).items():
        if base in stream_bases and n != GOOD_PER_TOPIC:
            problems.append(f"{base}: {n:.0f} of {GOOD_PER_TOPIC} good records processed")
    for name, child in pipeline.children.items():
        if not child.alive() or child.process.pid != pids[name]:
            problems.append(f"{name} restarted or exited")
    problems += crash_lines(pipeline)
    assert not problems, "\n".join(problems)
    return placed


def post(pipeline: Pipeline, body: bytes) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback URL of our own receiver
        f"{pipeline.webhook_url}/webhooks/shopify", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
                 "X-Shopify-Hmac-Sha256": sign(SECRET.encode(), body),
                 "X-Shopify-Webhook-Id": "near-limit"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# --- tests ----------------------------------------------------------------------------

def test_poison_is_dead_lettered_and_every_partition_keeps_moving(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory()
    pipeline = pipeline_factory(settings, steps=("streams", "sink", "webhook"))
    settings = pipeline.settings
    targets = stream_targets() + sink_targets()

    # The front door first: a signed body under the receiver's limit (1 MiB) but over what
    # its producer can publish (1,000,000 bytes with the envelope) is refused for good,
    # never 503 (the channel would retry it for 48 h and then drop the subscription).
    near_limit = b'{"id": 1, "pad": "' + b"x" * (settings.webhook_max_body_bytes - 40) + b'"}'
    assert len(near_limit) < settings.webhook_max_body_bytes
    assert [post(pipeline, near_limit) for _ in range(2)] == [413, 413]

    placed = run_poison(pipeline, targets)
    raw_ids = {e["event_id"] for p in placed[names.raw_topic("shopify")] if p.poison is None
               for e in normalize_message(Source("", 0, 0, p.key, p.value or b""),
                                          now_ms=NOW_MS).events}
    assert len(raw_ids) == GOOD_PER_TOPIC
    for child in pipeline.children.values():
        assert child.stop() == 0, child.log_tail()

    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    db = settings.clickhouse_database
    try:
        events = client.query_rows(f"SELECT event_id FROM {db}.order_events FINAL")
        adjusted = client.query_rows(
            f"SELECT reason FROM {db}.inventory_events FINAL WHERE kind = 'ADJUSTED'")
        dead = client.query_rows(
            f"SELECT step, reason, message, source_topic, source_offset, original_key_b64, "
            f"original_value_b64 FROM {db}.dead_letters FINAL")
    finally:
        client.close()
    good_events = {f"poison-good-{i}" for i in range(1, GOOD_PER_TOPIC + 1)}
    assert {r["event_id"] for r in events} == raw_ids | good_events
    assert sorted(r["reason"] for r in adjusted) == sorted(
        f"SET:good-{i}" for i in range(1, GOOD_PER_TOPIC + 1))
    # Every letter landed; the poison on orders.dlq itself is kept there, wrapped.
    assert sum(r["source_topic"] != "elsewhere" for r in dead) == \
        sum(len(t.poison) for t in targets)
    by_pos = {(r["source_topic"], int(r["source_offset"])): r for r in dead}
    for p in placed[names.TOPIC_DLQ]:
        if p.poison is None:
            continue
        row = by_pos[(p.topic, p.offset)]
        kept = {**row, "original_value": base64.b64decode(row["original_value_b64"]),
                "original_key": base64.b64decode(row["original_key_b64"] or "") or None}
        dlq = next(t for t in targets if t.base == names.TOPIC_DLQ)
        assert letter_problems(kept, dlq, p) == []


def test_null_and_huge_records_do_not_kill_the_stream_agents(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    pipeline = pipeline_factory(settings_factory(), steps=("streams",))
    run_poison(pipeline, stream_defect_targets())
