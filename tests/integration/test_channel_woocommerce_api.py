"""WooCommercePoll against the WooCommerce sandbox over real HTTP on loopback: GMT
bounds, every page of a window (keyset over modified), auth refusals, host throttling."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window
from orderpulse.connectors.channels.woocommerce import WooCommercePoll
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.woocommerce import WooCommercePollSim, modified_at, render

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)
# Order 11 is paid exactly at the start, order 26 created exactly at the end.
WINDOW = Window(T0 + timedelta(minutes=21), T0 + timedelta(minutes=50))
CONFIG = {"consumer_key": "ck_sandbox", "consumer_secret": "cs_sandbox",
          "site_url": "https://shop.example"}


class SmallPages(WooCommercePoll):
    page_size: ClassVar[int] = 7


def _filled_sim() -> WooCommercePollSim:
    """40 orders one every 2 minutes, every other one paid a minute later, and 10
    more created in the same second (a page's worth sharing one modified second)."""
    sim = WooCommercePollSim(CONFIG)
    rng = random.Random(11)
    for n in range(1, 41):
        at = T0 + timedelta(minutes=2 * (n - 1))
        order = lifecycle.new_order(n, at, rng)
        sim.record(order, "created", at)
        if n % 2:
            lifecycle.apply(order, "paid", at + timedelta(minutes=1), rng)
            sim.record(order, "paid", at + timedelta(minutes=1))
    burst_at = T0 + timedelta(minutes=33, seconds=30)
    for n in range(41, 51):
        sim.record(lifecycle.new_order(n, burst_at, rng), "created", burst_at)
    return sim


def _at(sim: WooCommercePollSim, moment: datetime) -> set[str]:
    return {k for k, (m, _d) in sim.store.docs.items() if m == moment}


def _in_window(sim: WooCommercePollSim, window: Window) -> list[str]:
    return sorted(k for k, (m, _d) in sim.store.docs.items() if window.start <= m < window.end)


Scenario = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def _serve(sim: WooCommercePollSim, scenario: Scenario) -> None:
    async def main() -> None:
        app = web.Application()
        app.add_routes(sim.routes())
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
            await scenario(http, str(server.make_url("/woocommerce")))

    asyncio.run(main())


async def _all_pages(source: WooCommercePoll, http: aiohttp.ClientSession, window: Window,
                     between_pages: Callable[[], None] = lambda: None) -> list[str]:
    keys, cursor = [], None
    while True:
        page = await source.fetch(http, window, cursor)
        keys.extend(r.key for r in page.records)
        if page.next_cursor is None:
            return keys
        between_pages()
        cursor = page.next_cursor


@pytest.mark.parametrize("query_string_auth", ["", "true"])
def test_every_order_modified_in_the_window_comes_back_once(query_string_auth: str) -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    expected = _in_window(sim, WINDOW)
    assert len(expected) > SmallPages.page_size * 3
    assert _at(sim, WINDOW.start) == {"4711"} and "4711" in expected
    assert _at(sim, WINDOW.end) == {"4726"} and "4726" not in expected

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        source = SmallPages({**CONFIG, "base_url": base, "query_string_auth": query_string_auth})
        keys = await _all_pages(source, http, WINDOW)
        assert sorted(keys) == expected  # none twice, none missing, none outside
        page = await source.fetch(http, WINDOW, None)
        assert page.records[0].source_event_id == f"poll:{page.records[0].key}:" \
                                                  f"2026-11-11T09:21:00"
        assert page.records[0].shop_id == "shop.example"

    _serve(sim, scenario)


def test_an_order_modified_during_the_scan_does_not_hide_others() -> None:
    sim = _filled_sim()
    sim.bucket = TokenBucket(1000.0, 1000)
    expected = _in_window(sim, WINDOW)
    first_key = min(expected, key=lambda k: sim.store.docs[k][0])
    moved = []

    def modify_first_order() -> None:
        # The shop saves an order already read: it leaves the window, offsets shift.
        if not moved:
            order = lifecycle.new_order(int(first_key) - 4700, T0, random.Random(1))
            order.history.append((T0 + timedelta(hours=3), "paid"))
            order.paid_at = T0 + timedelta(hours=3)
            sim.store.put(first_key, modified_at(order), render(order))
            moved.append(first_key)

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        source = SmallPages({**CONFIG, "base_url": base})
        keys = await _all_pages(source, http, WINDOW, modify_first_order)
        assert moved and sorted(keys) == expected

    _serve(sim, scenario)


def test_wrong_keys_are_auth_failures() -> None:
    sim = _filled_sim()

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        for wrong in ({"consumer_secret": "cs_wrong"}, {"consumer_key": "ck_wrong"},
                      {"consumer_secret": "cs_wrong", "query_string_auth": "true"}):
            with pytest.raises(AuthFailed):
                await WooCommercePoll({**CONFIG, **wrong, "base_url": base}).fetch(
                    http, WINDOW, None)

    _serve(sim, scenario)


def test_exhausted_rate_is_throttled() -> None:
    sim = _filled_sim()

    async def scenario(http: aiohttp.ClientSession, base: str) -> None:
        source = WooCommercePoll({**CONFIG, "base_url": base})
        await source.fetch(http, WINDOW, None)
        sim.bucket.tokens = 0.0
        with pytest.raises(Throttled) as info:
            await source.fetch(http, WINDOW, None)
        assert info.value.retry_after_s == 1.0

    _serve(sim, scenario)


def test_unreachable_site_is_a_retryable_poll_error() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            source = WooCommercePoll({**CONFIG, "base_url": "http://127.0.0.1:1"})
            with pytest.raises(PollError) as info:
                await source.fetch(http, WINDOW, None)
            assert not isinstance(info.value, (AuthFailed, Throttled))

    asyncio.run(main())
