"""TaobaoPoll against the Taobao sandbox over real HTTP on loopback."""

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
from orderpulse.connectors.channels.taobao import TaobaoPoll
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.lifecycle import apply, new_order
from orderpulse.connectors.sandbox.taobao import TaobaoPollSim

pytestmark = pytest.mark.integration

CONFIG = {"app_key": "23456789", "app_secret": "top-secret", "session": "6100abc",
          "shop_id": "tb-demo", "page_size": "4"}
T0 = datetime(2026, 11, 11, 1, 0, tzinfo=UTC)
PATHS = (("paid",), ("paid", "shipped"), ("cancelled",), ("paid", "shipped", "in_transit",
         "delivered", "completed"), ("paid", "cancelled"))


def _filled_sim() -> TaobaoPollSim:
    """20 orders created 3 minutes apart, each moved along a path 7 minutes a step."""
    sim = TaobaoPollSim(CONFIG)
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


def _poll(sim: TaobaoPollSim, window: Window, between: Callable[[], None] | None = None,
          **change: str) -> list[RawRecord]:
    """Serve ``sim`` on loopback and read ``window`` through it with TaobaoPoll."""
    async def run() -> list[RawRecord]:
        app = web.Application()
        app.add_routes(sim.routes())
        async with TestServer(app, host="127.0.0.1") as server:
            url = str(server.make_url("/taobao/router/rest"))
            return await _drain(TaobaoPoll({**CONFIG, **change, "base_url": url}), window,
                                between)
    return asyncio.run(run())


def test_every_trade_of_the_window_comes_back_once_across_pages() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    window = Window(T0 + timedelta(minutes=20), T0 + timedelta(minutes=70))
    expected = {k for k, (m, _d) in sim.store.docs.items() if window.start <= m < window.end}
    assert 4 < len(expected) < len(sim.store.docs)  # several pages, some trades outside
    records = _poll(sim, window)
    keys = [r.key for r in records]
    assert sorted(keys) == sorted(expected)  # each exactly once, none outside
    for record in records:
        trade = orjson.loads(record.body)
        assert trade["tid_str"] == record.key
        assert record.source_event_id == f"poll:{record.key}:{trade['modified']}"
        assert record.shop_id == "tb-demo"
    assert {orjson.loads(r.body)["type"] for r in records} >= {"fixed"}


def test_a_trade_leaving_the_window_mid_scan_makes_no_other_trade_slip() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    window = Window(T0 + timedelta(minutes=20), T0 + timedelta(minutes=70))
    in_window = sorted((m, k) for k, (m, _d) in sim.store.docs.items()
                       if window.start <= m < window.end)
    newest = in_window[-1][1]  # on page 1 (newest first): its leaving shifts every page

    def modify_newest() -> None:
        _modified, trade = sim.store.docs[newest]
        sim.store.put(newest, window.end + timedelta(minutes=5), trade)

    keys = {r.key for r in _poll(sim, window, between=modify_newest)}
    assert keys >= {k for _m, k in in_window} - {newest}


def test_an_empty_window_is_one_call() -> None:
    sim = _filled_sim()
    window = Window(T0 - timedelta(hours=2), T0 - timedelta(hours=1))
    assert _poll(sim, window) == []


@pytest.mark.parametrize("change", [{"app_secret": "wrong"}, {"session": "expired"},
                                    {"app_key": "11111111"}])
def test_refused_credentials_raise_auth_failed(change: dict[str, str]) -> None:
    sim = _filled_sim()
    window = Window(T0, T0 + timedelta(minutes=30))
    with pytest.raises(AuthFailed):
        _poll(sim, window, **change)


def test_an_exhausted_bucket_raises_throttled_with_the_ban() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(0.0, 0)
    window = Window(T0, T0 + timedelta(minutes=30))
    with pytest.raises(Throttled) as info:
        _poll(sim, window)
    assert info.value.retry_after_s == 2.0  # "ban will last for 1 more seconds", plus one
