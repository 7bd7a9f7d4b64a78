"""JdPoll against the JD sandbox over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderpulse.connectors.base import AuthFailed, PollSource, RawRecord, Throttled, Window
from orderpulse.connectors.channels.jd import JdPoll
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.jd import JdPollSim
from orderpulse.connectors.sandbox.lifecycle import apply, new_order

pytestmark = pytest.mark.integration

CONFIG = {"app_key": "8F3A21C0", "app_secret": "jos-secret", "access_token": "c1d2e3",
          "shop_id": "10012345", "page_size": "4"}
T0 = datetime(2026, 11, 11, 1, 0, tzinfo=UTC)
PATHS = (("paid",), ("paid", "shipped"), ("cancelled",), ("paid", "shipped", "in_transit",
         "delivered", "completed"), ("paid", "cancelled"))


def _filled_sim() -> JdPollSim:
    """20 orders created 3 minutes apart, each moved along a path 7 minutes a step."""
    sim = JdPollSim(CONFIG)
    rng = random.Random(11)
    for number in range(1, 21):
        at = T0 + timedelta(minutes=3 * number)
        order = new_order(number, at, rng)
        sim.record(order, "created", at)
        for step, event in enumerate(PATHS[number % len(PATHS)], start=1):
            apply(order, event, at + timedelta(minutes=7 * step), rng)
            sim.record(order, event, order.updated)
    return sim


async def _drain(source: PollSource, window: Window,
                 between: Callable[[], None] | None = None) -> list[RawRecord]:
    """Every page of ``window``, as the poller reads it (``between`` runs after page 2)."""
    records: list[RawRecord] = []
    cursor: str | None = None
    async with aiohttp.ClientSession() as session:
        for calls in itertools.count(1):
            page = await source.fetch(session, window, cursor)
            records.extend(page.records)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            if calls == 2 and between is not None:
                between()
    return records


def _poll(sim: JdPollSim, window: Window, between: Callable[[], None] | None = None,
          **change: str) -> list[RawRecord]:
    """Serve ``sim`` on loopback and read ``window`` through it with JdPoll."""
    async def run() -> list[RawRecord]:
        app = web.Application()
        app.add_routes(sim.routes())
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("/jd/routerjson"))
            return await _drain(JdPoll({**CONFIG, **change, "base_url": url}), window,
                                between)
    return asyncio.run(run())


def test_every_order_of_the_window_comes_back_once_across_pages() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    window = Window(T0 + timedelta(minutes=20), T0 + timedelta(minutes=70))
    expected = {k for k, (m, _d) in sim.store.docs.items() if window.start <= m < window.end}
    assert 4 < len(expected) < len(sim.store.docs)  # several pages, some orders outside
    records = _poll(sim, window)
    keys = [r.key for r in records]
    assert sorted(keys) == sorted(expected)  # each exactly once, none outside
    for record in records:
        order = orjson.loads(record.body)
        assert order["orderId"] == record.key
        assert record.source_event_id == f"poll:{record.key}:{order['modified']}"
        assert record.shop_id == "10012345"
    states = {orjson.loads(r.body)["orderState"] for r in records}
    assert states >= {"WAIT_SELLER_STOCK_OUT", "TRADE_CANCELED"}


def test_an_order_leaving_the_window_mid_scan_makes_no_other_order_slip() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    window = Window(T0 + timedelta(minutes=20), T0 + timedelta(minutes=70))
    in_window = sorted((m, k) for k, (m, _d) in sim.store.docs.items()
                       if window.start <= m < window.end)
    oldest = in_window[0][1]  # on page 1 (oldest first): its leaving shifts every page

    def modify_oldest() -> None:
        _modified, order = sim.store.docs[oldest]
        sim.store.put(oldest, window.end + timedelta(minutes=5), order)

    keys = {r.key for r in _poll(sim, window, between=modify_oldest)}
    assert keys >= {k for _m, k in in_window} - {oldest}


def test_an_empty_window_is_one_call() -> None:
    sim = _filled_sim()
    window = Window(T0 - timedelta(hours=2), T0 - timedelta(hours=1))
    assert _poll(sim, window) == []


@pytest.mark.parametrize("change", [{"app_secret": "wrong"}, {"access_token": "expired"},
                                    {"app_key": "11111111"}])
def test_refused_credentials_raise_auth_failed(change: dict[str, str]) -> None:
    sim = _filled_sim()
    window = Window(T0, T0 + timedelta(minutes=30))
    with pytest.raises(AuthFailed):
        _poll(sim, window, **change)


def test_an_exhausted_bucket_raises_throttled() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(0.0, 0)
    window = Window(T0, T0 + timedelta(minutes=30))
    with pytest.raises(Throttled) as info:
        _poll(sim, window)
    assert info.value.retry_after_s == 1.0  # JOS's code 2 names no ban length
