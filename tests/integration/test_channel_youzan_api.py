"""YouzanPoll against the Youzan sandbox over real HTTP on loopback: token, windows
in Beijing time, every page of a window, gateway errors (HTTP 200 + gw_err_resp)."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderpulse.connectors.base import AuthFailed, Throttled, Window
from orderpulse.connectors.channels.youzan import YouzanPoll
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.youzan import YouzanPollSim

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
# Order 11 is paid exactly at the start, order 26 created exactly at the end.
WINDOW = Window(T0 + timedelta(minutes=21), T0 + timedelta(minutes=50))
CONFIG = {"client_id": "c346b8b39599aaa677", "client_secret": "yz-secret", "kdt_id": "13027865"}


class SmallPages(YouzanPoll):
    page_size: ClassVar[int] = 7


def _filled_sim() -> YouzanPollSim:
    """40 orders, one every 2 minutes from T0; every other one paid a minute later."""
    sim = YouzanPollSim(CONFIG)
    rng = random.Random(11)
    for n in range(1, 41):
        at = T0 + timedelta(minutes=2 * (n - 1))
        order = lifecycle.new_order(n, at, rng)
        sim.record(order, "created", at)
        if n % 2:
            lifecycle.apply(order, "paid", at + timedelta(minutes=1), rng)
            sim.record(order, "paid", at + timedelta(minutes=1))
    return sim


def _at(sim: YouzanPollSim, moment: datetime) -> set[str]:
    return {k for k, (m, _d) in sim.store.docs.items() if m == moment}


def _in_window(sim: YouzanPollSim, window: Window) -> list[str]:
    return sorted(k for k, (m, _d) in sim.store.docs.items() if window.start <= m < window.end)


Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def _serve(sim: YouzanPollSim, scenario: Scenario) -> None:
    async def main() -> None:
        app = web.Application()
        app.add_routes(sim.routes())
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            await scenario(http, str(server.make_url("/youzan")))

    asyncio.run(main())


async def _all_pages(source: YouzanPoll, http: aiohttp.ClientSession,
                     window: Window) -> tuple[list[str], int]:
    keys, cursor, pages = [], None, 0
    while True:
        page = await source.fetch(http, window, cursor)
        keys.extend(r.key for r in page.records)
        pages += 1
        if page.next_cursor is None:
            return keys, pages
        cursor = page.next_cursor


def test_every_trade_updated_in_the_window_comes_back_once() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    expected = _in_window(sim, WINDOW)
    assert len(expected) > SmallPages.page_size * 2
    assert _at(sim, WINDOW.start) and _at(sim, WINDOW.start) <= set(expected)
    assert _at(sim, WINDOW.end) and not _at(sim, WINDOW.end) & set(expected)

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        source = SmallPages({**CONFIG, "base_url": base})
        keys, pages = await _all_pages(source, http, WINDOW)
        assert sorted(keys) == expected  # none twice, none missing, none outside
        assert pages == -(-len(expected) // SmallPages.page_size)
        page = await source.fetch(http, WINDOW, None)
        assert all(r.source_event_id.startswith(f"poll:{r.key}:2026-11-11 10:")
                   for r in page.records)
        assert all(r.shop_id == "13027865" for r in page.records)

    _serve(sim, scenario)


def test_wrong_credentials_are_auth_failures() -> None:
    sim = _filled_sim()

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        wrong_secret = YouzanPoll({**CONFIG, "client_secret": "nope", "base_url": base})
        with pytest.raises(AuthFailed):
            await wrong_secret.fetch(http, WINDOW, None)
        wrong_token = YouzanPoll({**CONFIG, "access_token": "forged", "base_url": base})
        with pytest.raises(AuthFailed):
            await wrong_token.fetch(http, WINDOW, None)

    _serve(sim, scenario)


def test_exhausted_call_rate_is_throttled() -> None:
    sim = _filled_sim()

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        source = YouzanPoll({**CONFIG, "base_url": base})
        await source.fetch(http, WINDOW, None)
        sim.bucket.tokens = 0.0
        with pytest.raises(Throttled):
            await source.fetch(http, WINDOW, None)

    _serve(sim, scenario)
