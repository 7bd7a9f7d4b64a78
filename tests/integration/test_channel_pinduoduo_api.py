"""The Pinduoduo poll source against the sandbox's router over real HTTP on loopback."""

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderpulse.connectors.base import AuthFailed, Page, Throttled, Window
from orderpulse.connectors.channels.pinduoduo import PinduoduoPoll
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.connectors.sandbox.pinduoduo import PinduoduoPollSim, order_sn

pytestmark = pytest.mark.integration

CONFIG = {"client_id": "pdd-client", "client_secret": "pdd-secret",
          "access_token": "mall-token", "shop_id": "mall-9"}
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
WINDOW = Window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=40))


class SmallPages(PinduoduoPoll):
    page_size: ClassVar[int] = 4


def _filled_sim() -> tuple[PinduoduoPollSim, dict[str, datetime]]:
    """30 orders, one every 2 minutes from T0, some moved on a while later."""
    rng = random.Random(11)
    channel = PinduoduoPollSim(CONFIG)
    channel.bucket = TokenBucket(1000.0, 1000)  # paging is tested here, not the rate
    modified: dict[str, datetime] = {}
    for number in range(1, 31):
        at = T0 + timedelta(minutes=2 * number)
        order: SimOrder = new_order(number, at, rng)
        if number % 3 == 0:
            apply(order, "paid", at + timedelta(minutes=1), rng)
        if number % 5 == 0:
            apply(order, "shipped", at + timedelta(hours=2), rng)
        channel.record(order, order.status, order.updated)
        modified[order_sn(order)] = order.updated
    return channel, modified


def _serve(channel: PinduoduoPollSim,
           body: Callable[[str, aiohttp.ClientSession], Awaitable[object]]) -> object:
    async def main() -> object:
        app = web.Application()
        app.router.add_routes(channel.routes())
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            return await body(str(server.make_url("/pinduoduo/api/router")), session)
    return asyncio.run(main())


async def _all_pages(source: PinduoduoPoll, session: aiohttp.ClientSession,
                     window: Window) -> list[Page]:
    pages, cursor = [], None
    while True:
        page = await source.fetch(session, window, cursor)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_every_order_of_the_window_comes_back_exactly_once() -> None:
    channel, modified = _filled_sim()
    expected = {k for k, m in modified.items() if WINDOW.start <= m < WINDOW.end}

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        return await _all_pages(SmallPages({**CONFIG, "base_url": url}), session, WINDOW)

    pages = _serve(channel, body)
    assert isinstance(pages, list)
    keys = [r.key for page in pages for r in page.records]
    assert len(expected) > 2 * SmallPages.page_size  # several pages, read backwards
    assert sorted(keys) == sorted(expected)
    assert len(keys) == len(set(keys))
    assert pages[0].records == [] and len(pages) == 1 + math.ceil(len(expected) / 4)
    for page in pages:
        for record in page.records:
            doc = orjson.loads(record.body)
            assert record.source_event_id == f"poll:{record.key}:{doc['updated_at']}"
            assert record.shop_id == "mall-9"


def test_orders_updated_while_paging_do_not_hide_others() -> None:
    """An order leaving the window mid-way shifts later rows forward: paging backwards
    still sees every order that stayed."""
    channel, modified = _filled_sim()
    expected = sorted((m, k) for k, m in modified.items() if WINDOW.start <= m < WINDOW.end)
    moved = expected[1][1]  # on page 1, read last

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = SmallPages({**CONFIG, "base_url": url})
        pages = [await source.fetch(session, WINDOW, None)]
        pages.append(await source.fetch(session, WINDOW, pages[-1].next_cursor))
        _when, doc = channel.store.docs[moved]
        channel.store.put(moved, T0 + timedelta(hours=5), doc)  # updated again, later
        while pages[-1].next_cursor is not None:
            pages.append(await source.fetch(session, WINDOW, pages[-1].next_cursor))
        return pages

    pages = _serve(channel, body)
    assert isinstance(pages, list)
    keys = [r.key for page in pages for r in page.records]
    assert set(keys) == {k for _m, k in expected} - {moved}


def test_a_single_page_window_takes_one_request() -> None:
    channel, modified = _filled_sim()
    window = Window(T0 + timedelta(minutes=10), T0 + timedelta(minutes=14))
    expected = {k for k, m in modified.items() if window.start <= m < window.end}

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        return await _all_pages(SmallPages({**CONFIG, "base_url": url}), session, window)

    pages = _serve(channel, body)
    assert isinstance(pages, list) and len(pages) == 1
    assert {r.key for r in pages[0].records} == expected and expected


def test_a_wrong_secret_is_refused() -> None:
    channel, _ = _filled_sim()

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = PinduoduoPoll({**CONFIG, "client_secret": "wrong", "base_url": url})
        with pytest.raises(AuthFailed):
            await source.fetch(session, WINDOW, None)
        expired = PinduoduoPoll({**CONFIG, "access_token": "old", "base_url": url})
        with pytest.raises(AuthFailed):
            await expired.fetch(session, WINDOW, None)
        return None

    _serve(channel, body)


def test_an_exhausted_bucket_throttles() -> None:
    channel, _ = _filled_sim()
    channel.bucket = TokenBucket(0.001, 2)

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = PinduoduoPoll({**CONFIG, "base_url": url})
        for _ in range(2):
            await source.fetch(session, WINDOW, None)
        with pytest.raises(Throttled):
            await source.fetch(session, WINDOW, None)
        return None

    _serve(channel, body)
