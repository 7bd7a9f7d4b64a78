"""Inventory benchmarks (``orderpulse bench --suite inventory``): the stock agent
(``inventory.commands`` -> ``stock`` table -> ledger, levels, replies) next to the
Faust consume-only agent over the same number of command records, in the same run:

    ci  Faust agent that only consumes N InventoryCommand records: the baseline
    i1  hot SKU (a flash sale): N RESERVEs of one SKU, each from its own order,
        stock for N/2 (both the RESERVED and the RESERVE_REJECTED paths run)
    i2  wide catalogue: N RESERVEs over 1,000 SKUs, each SKU stocked for its share
    i3  mixed: N/2 RESERVEs over 1,000 SKUs, then a COMMIT (even orders) or a
        RELEASE (odd orders) of each

Every figure pre-fills its commands (seed ADJUSTs first) on fresh topics before the
streams worker starts, so the rate is the agent's. A command applied is one event
on ``inventory.events``; the rate runs from the first such event to the last (the
events' own ``at`` stamps), so start-up and group joins are not in it. Every
RESERVE asks for a reply, as the order agent's do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.bench import Figure, faust_agent, fill, settings_for
from orderpulse.broker import EmbeddedBroker
from orderpulse.connectors.stock_import import adjust
from orderpulse.errors import BrokerError
from orderpulse.runner import Pipeline, start_pipeline
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

STOCK_EVENTS = "orderpulse_stock_events_total"
REPLIES = "orderpulse_stock_messages_total"
WAREHOUSE = "WH-SH"
HOT_SKU = "FLASH-1"
CATALOGUE = 1000
# The cap keeps figures comparable between runs. It was a limit too: a hot SKU's
# level entry held its open reservations (333 KB at i1's 5,000) and near 15,000
# would have passed Faust's 1 MB producer request limit; open reservations are
# now keys of their own (``O:<reservation_id>``) and the entry stays under 1 KB.
MAX_COMMANDS = 10_000


@dataclass(frozen=True)
class Scenario:
    """Commands to pre-fill, in order, and the stock events they must produce."""

    name: str
    commands: list[dict[str, Any]]
    expect: dict[str, int]  # ledger events by kind: one per command


def reserve(order: int, sku: str, *, now_ms: int, hold_ms: int,
            partitions: int) -> dict[str, Any]:
    """One unit of ``sku`` for order ``bench:<order>``, answered on the order's partition."""
    order_id = f"bench:{order}"
    res_id = f"{order_id}#0#{sku}"  # <order_id>#<attempt>#<sku>, as the allocation names it
    return {"kind": "RESERVE", "command_id": f"{res_id}/RESERVE", "sku": sku,
            "reservation_id": res_id, "order_id": order_id, "quantity": 1,
            "warehouses": [WAREHOUSE], "adjust_mode": None, "expires_at": now_ms + hold_ms,
            "reply_partition": order % partitions, "reason": "final_round", "at": now_ms}


def follow_up(cmd: dict[str, Any], kind: str) -> dict[str, Any]:
    """The order's next command for a reservation: ``COMMIT`` (paid) or ``RELEASE``."""
    reason = {"COMMIT": "order_paid", "RELEASE": "order_cancelled"}[kind]
    return {**cmd, "kind": kind, "command_id": f"{cmd['reservation_id']}/{kind}",
            "expires_at": None, "reason": reason}


def _seeds(skus: list[str], units: int, now_ms: int) -> list[dict[str, Any]]:
    return [adjust(f"bench/{sku}", WAREHOUSE, sku, "SET", units, "bench stock", now_ms)
            for sku in skus]


def catalogue(size: int = CATALOGUE) -> list[str]:
    return [f"SKU-{k:04d}" for k in range(size)]


def hot_sku(n: int, *, now_ms: int, hold_ms: int, partitions: int) -> Scenario:
    """i1: ``n`` orders race for one SKU stocked for ``n // 2``."""
    stock = n // 2
    reserves = [reserve(i, HOT_SKU, now_ms=now_ms, hold_ms=hold_ms, partitions=partitions)
                for i in range(n)]
    return Scenario("i1", _seeds([HOT_SKU], stock, now_ms) + reserves,
                    {"ADJUSTED": 1, "RESERVED": stock, "RESERVE_REJECTED": n - stock})


def wide(n: int, *, now_ms: int, hold_ms: int, partitions: int) -> Scenario:
    """i2: ``n`` orders spread round-robin over the catalogue, every SKU stocked for its share."""
    skus = catalogue()
    reserves = [reserve(i, skus[i % len(skus)], now_ms=now_ms, hold_ms=hold_ms,
                        partitions=partitions) for i in range(n)]
    share = -(-n // len(skus))
    return Scenario("i2", _seeds(skus, share, now_ms) + reserves,
                    {"ADJUSTED": len(skus), "RESERVED": n})


def mixed(n: int, *, now_ms: int, hold_ms: int, partitions: int) -> Scenario:
    """i3: ``n // 2`` reservations over the catalogue, then each committed or released."""
    inner = wide(n // 2, now_ms=now_ms, hold_ms=hold_ms, partitions=partitions)
    reserves = [c for c in inner.commands if c["kind"] == "RESERVE"]
    # Every follow-up comes after every reservation: its SKU's partition has applied
    # the RESERVE before it reads the COMMIT or RELEASE.
    then = [follow_up(c, "COMMIT" if i % 2 == 0 else "RELEASE") for i, c in enumerate(reserves)]
    commits = -(-len(reserves) // 2)
    return Scenario("i3", inner.commands + then,
                    {**inner.expect, "COMMITTED": commits, "RELEASED": len(reserves) - commits})


def applied(pipeline: Pipeline, kinds: dict[str, int]) -> dict[str, float]:
    """The worker's ledger events of the kinds a scenario counts.

    Only these kinds: the order agent in the same worker does not know the bench's
    orders and gives back each reservation it hears of (RELEASE, stale_reservation);
    those land behind the pre-filled commands of their SKU's partition, so they
    cannot change an outcome counted here, but their RELEASED events must not count.
    """
    samples = pipeline.samples()
    return {kind: total(samples, STOCK_EVENTS, kind=kind) for kind in kinds}


def ledger_rate(stamps: list[int]) -> float:
    """Events per second between the first and the last ledger stamp (epoch ms)."""
    if len(stamps) < 2 or max(stamps) == min(stamps):
        return float("nan")
    return (len(stamps) - 1) * 1000 / (max(stamps) - min(stamps))


def _epoch_ms(value: datetime | int) -> int:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


def ledger_stamps(settings: Settings, kinds: dict[str, int], idle_s: float = 2.0) -> list[int]:
    """When the agent applied each counted command: the ``at`` of its ledger event."""
    # Assigned, not subscribed: no group join to wait for.
    consumer = Consumer({**settings.kafka_client_config(), "enable.auto.commit": False,
                         "group.id": f"bench-ledger{settings.topic_suffix}"})
    topic = topic_name(settings, names.TOPIC_INV_EVENTS)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                     for p in range(settings.default_partitions)])
    event, idle = codec("InventoryEvent"), time.monotonic()
    stamps: list[int] = []
    try:
        while time.monotonic() - idle < idle_s:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    raise BrokerError(f"reading {topic}: {msg.error()}")
                ev = event.decode(msg.value() or b"")
                if ev["kind"] in kinds:
                    stamps.append(_epoch_ms(ev["at"]))
                idle = time.monotonic()
    finally:
        consumer.close()
    return stamps


def stock_rate(settings: Settings, scenario: Scenario,
               timeout_s: float = 600) -> tuple[float, float]:
    """Commands applied per second by the streams worker over pre-filled commands, and
    how many of their replies the order agent had read by the last one.

    Timed by the ledger's own stamps, first to last: progress is polled only a few
    times a second, since every scrape of the worker's metrics takes its GIL (at
    the 50 polls/s of ``bench._poll_rate``, py-spy put about 10% of the worker there).
    """
    command = codec("InventoryCommand")
    fill(settings, topic_name(settings, names.TOPIC_INV_COMMANDS),
         [(c["sku"].encode(), command.encode(c)) for c in scenario.commands])
    count = sum(scenario.expect.values())
    pipeline = start_pipeline(settings, steps=("streams",))
    try:
        done = pipeline.wait_until(
            lambda: sum(applied(pipeline, scenario.expect).values()) >= count, timeout_s)
        got = applied(pipeline, scenario.expect)
        replies = total(pipeline.samples(), REPLIES, stream="replies", outcome="handled")
    finally:
        pipeline.stop()
    if not done or got != scenario.expect:
        raise RuntimeError(f"{scenario.name}: stock events {got}, the model says "
                           f"{scenario.expect}: the figure measured other work")
    stamps = ledger_stamps(settings, scenario.expect)
    if len(stamps) != count:
        raise RuntimeError(f"{scenario.name}: {len(stamps)} ledger events of "
                           f"{list(scenario.expect)} read back, {count} counted")
    return ledger_rate(stamps), replies


def consume_rate(settings: Settings, records: list[dict[str, Any]], log_dir: Path) -> float:
    """The Faust consume-only agent (c) over the same command records."""
    command = codec("InventoryCommand")
    fill(settings, topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY)),
         [(c["sku"].encode(), command.encode(c)) for c in records])
    return faust_agent(settings, "consume", len(records), log_dir)


def _line(out: TextIO, text: str) -> None:
    out.write(text + "\n")
    out.flush()


def measure(base: Settings, events: int, out: TextIO) -> list[Figure]:
    """The suite's figures; each figure on its own topics of one embedded broker."""
    n = min(events, MAX_COMMANDS)
    data_dir = base.data_dir / "bench"
    now_ms = time.time_ns() // 1_000_000
    shape = {"now_ms": now_ms, "hold_ms": int(base.reservation_hold_s * 1000),
             "partitions": base.default_partitions}
    scenarios = [hot_sku(n, **shape), wide(n, **shape), mixed(n, **shape)]
    rates: dict[str, float] = {}
    with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
        def fresh() -> Settings:
            return settings_for(base, broker.bootstrap, data_dir)

        reserves = [c for c in scenarios[1].commands if c["kind"] == "RESERVE"]
        rates["c"] = consume_rate(fresh(), reserves, data_dir / "logs")
        _line(out, f"ci Faust consume-only {rates['c']:9.0f} records/s ({len(reserves)} commands)")
        for s in scenarios:
            rates[s.name], replies = stock_rate(fresh(), s)
            _line(out, f"{s.name} stock agent       {rates[s.name]:9.0f} commands/s "
                  f"({len(s.commands)} commands: {s.expect}; {replies:.0f} replies read "
                  "by the order agent meanwhile)")
    c = rates["c"]
    return [
        Figure(f"ci: Faust agent, consume only, {n:,} InventoryCommand records", c,
               "records/s", "1.00 (baseline)"),
        Figure(f"i1: stock agent, hot SKU: {n:,} RESERVEs of one SKU stocked for {n // 2:,}, "
               "replies on", rates["i1"], "commands/s", f"{rates['i1'] / c:.3f} x ci"),
        Figure(f"i2: stock agent, wide: {n:,} RESERVEs over {CATALOGUE:,} SKUs, replies on",
               rates["i2"], "commands/s", f"{rates['i2'] / c:.3f} x ci"),
        Figure(f"i3: stock agent, mixed: {n // 2:,} RESERVEs over {CATALOGUE:,} SKUs, then a "
               "COMMIT or RELEASE of each", rates["i3"], "commands/s",
               f"{rates['i3'] / c:.3f} x ci"),
    ]
