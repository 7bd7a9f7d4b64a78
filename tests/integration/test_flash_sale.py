"""A flash sale on the real stack: four channels sell the last units of one SKU
at once through their signed webhooks. Nothing is oversold, every loser is
rejected and its other lines released, winners' payments become deductions,
and the stock survives a kill -9 of the worker without applying anything twice."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port
from orderpulse.connectors.sandbox import WEBHOOK_SIMS
from orderpulse.connectors.sandbox.lifecycle import SimLine, SimOrder, apply
from orderpulse.connectors.stock_import import adjust, publish
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import Pipeline, sandbox_channels, settings_env
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory, read_topics

pytestmark = pytest.mark.integration
# Channels whose pushes carry the order lines (Douyin pushes ids only).
CHANNELS = ("shopify", "woocommerce", "youzan", "ownsite")
FLASH, TEE = "TEE-BLK-M", "CAP-RED"  # catalogue SKUs every channel renders
UNITS = 12


def read_all(settings: Settings, base: str, schema: str) -> list[dict]:
    """Every record of one topic, decoded, read to each partition's end."""
    return [codec(schema).decode(value)
            for _topic, _key, value in read_topics(settings, [topic_name(settings, base)])]


def levels(settings: Settings) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for level in read_all(settings, names.TOPIC_INV_LEVELS, "StockLevel"):
        if level["version"] >= latest.get(level["sku"], {"version": -1})["version"]:
            latest[level["sku"]] = level
    return latest


def sim_order(number: int, two_lines: bool, now: datetime) -> SimOrder:
    lines = [SimLine(1, FLASH, 1, Decimal("59.00"))]
    if two_lines:
        lines.append(SimLine(2, TEE, 2, Decimal("39.90")))
    order = SimOrder(number=number, created=now, lines=lines, buyer_name="王伟",
                     buyer_phone="13812345678", province="上海市", address="上海市某区某路1号")
    order.history.append((now, "created"))
    return order


async def post_all(url: str, deliveries: list[Any]) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        async def one(d: Any) -> int:
            async with client.request(d.method, f"{url}/webhooks/{d.channel}", data=d.body,
                                      headers={**d.headers, "Content-Type": d.content_type}) as r:
                return r.status
        return list(await asyncio.gather(*(one(d) for d in deliveries)))


def decided(settings: Settings) -> dict[str, str]:
    verdicts = {}
    for ev in read_all(settings, names.TOPIC_INV_EVENTS, "InventoryEvent"):
        if ev["kind"] in ("ALLOCATED", "OUT_OF_STOCK", "BACKORDERED"):
            verdicts[ev["order_id"]] = ev["kind"]
    return verdicts


def wait_for(check: Any, timeout_s: float = 240) -> Any:
    # Bounded, but generous: a multi-line order takes up to four reserve rounds, each two
    # broker hops, and a loaded 2-core machine stretches every hop.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"condition not reached; last: {result!r:.2000}")


def restart_worker(pipeline: Pipeline) -> None:
    worker = pipeline.children["streams"]
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(10)
    restarted = spawn("streams", ["streams"], settings_env(pipeline.settings), free_port(),
                      pipeline.settings.data_dir / "logs")
    pipeline.children["streams"] = restarted
    wait_for_metrics(restarted)


def test_flash_sale_never_oversells_and_releases_every_loser(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory(channels=sandbox_channels(free_port()), stuck_tick_s=1.0,
                                inventory_resend_s=5.0)
    pipeline = pipeline_factory(settings, steps=("streams", "webhook"))
    settings = pipeline.settings
    now_ms = int(time.time() * 1000)
    asyncio.run(publish(settings, [
        adjust("count-1", "WH-SH", FLASH, "SET", UNITS, "cycle count", now_ms),
        adjust("count-2", "WH-SH", TEE, "SET", 500, "cycle count", now_ms)]))

    rng, now = random.Random(7), datetime.now(UTC)
    orders = {n: sim_order(n, two_lines=n % 2 == 0, now=now) for n in range(1, 61)}
    sims = {ch: WEBHOOK_SIMS[ch](settings.channels[ch]) for ch in CHANNELS}
    placed = {n: CHANNELS[n % len(CHANNELS)] for n in orders}
    created = [d for n, o in orders.items() for d in sims[placed[n]].deliveries(o, "created", now)]
    rng.shuffle(created)
    assert set(asyncio.run(post_all(pipeline.webhook_url, created))) == {200}

    verdicts = wait_for(lambda: (v := decided(settings)) and len(v) >= len(orders) and v)
    winners = [o for o, k in verdicts.items() if k == "ALLOCATED"]
    assert len(winners) == UNITS, verdicts
    assert sum(k == "OUT_OF_STOCK" for k in verdicts.values()) == len(orders) - UNITS
    time.sleep(2)
    stock = levels(settings)
    assert stock[FLASH]["available_to_sell"] == 0
    [sh] = stock[FLASH]["warehouses"]
    assert (sh["on_hand"], sh["reserved"]) == (UNITS, UNITS)

    # kill -9 mid-sale; then every buyer pays: winners' reservations become
    # deductions (once), losers' payments find nothing to commit.
    restart_worker(pipeline)
    later = now + timedelta(minutes=2)
    paid = []
    for n, o in orders.items():
        apply(o, "paid", later, rng)
        paid += sims[placed[n]].deliveries(o, "paid", later)
    assert set(asyncio.run(post_all(pipeline.webhook_url, paid))) == {200}
    stock = wait_for(lambda: (s := levels(settings)) and s[FLASH]["warehouses"][0]["reserved"]
                     == 0 and s[TEE]["warehouses"][0]["reserved"] == 0 and s)
    [sh], [tee] = stock[FLASH]["warehouses"], stock[TEE]["warehouses"]
    assert (sh["on_hand"], sh["reserved"], sh["available"]) == (0, 0, 0)

    ledger = read_all(settings, names.TOPIC_INV_EVENTS, "InventoryEvent")
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in ledger:
        by_kind.setdefault(e["kind"], []).append(e)
    commits = {e["reservation_id"]: e for e in by_kind.get("COMMITTED", [])}
    flash = [e for e in commits.values() if e["sku"] == FLASH]
    assert len(flash) == UNITS and {e["order_id"] for e in flash} == set(winners)
    # Every CAP-RED unit deducted belongs to a winner; losers' lines were released.
    tee_commits = [e for e in commits.values() if e["sku"] == TEE]
    assert {e["order_id"] for e in tee_commits} <= set(winners)
    assert tee["on_hand"] == 500 - sum(e["quantity"] for e in tee_commits)
    released = {e["order_id"] for e in by_kind.get("RELEASED", []) if e["sku"] == TEE}
    losers_with_tee = {e["order_id"] for e in by_kind.get("RESERVED", []) if e["sku"] == TEE} \
        - set(winners)
    assert losers_with_tee <= released
    assert not by_kind.get("OVERSOLD")
    samples = pipeline.samples()
    assert total(samples, "orderpulse_inventory_invariant_violations_total") == 0
    assert total(samples, "orderpulse_oversell_prevented_total", stage="reserve") >= 0

