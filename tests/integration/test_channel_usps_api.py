"""The USPS poll source against the sandbox's Tracking API v3 over real HTTP on loopback:
OAuth2 token, one tracking number per page, events filtered by GMT time, the
carrier's midway code change, 401/429 answers."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from orderpulse.connectors.base import AuthFailed, Page, Throttled, Window
from orderpulse.connectors.channels.usps import UspsPoll
from orderpulse.connectors.sandbox.base import TokenBucket
from orderpulse.connectors.sandbox.lifecycle import apply, new_order
from orderpulse.connectors.sandbox.usps import UspsPollSim

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SWITCH = T0 + timedelta(days=3)
UNKNOWN = "9400000000000000000001"  # configured, never shipped: USPS answers 404
CONFIG = {"client_id": "usps-app", "client_secret": "usps-secret", "sandbox_listing": "true",
          "tracking_numbers": UNKNOWN, "code_switch_at": SWITCH.isoformat()}
WINDOW = Window(T0 + timedelta(days=2), T0 + timedelta(days=5))
EVERYTHING = Window(T0 - timedelta(days=30), T0 + timedelta(days=60))


def _filled_sim() -> UspsPollSim:
    """40 orders shipped 5 hours apart; each USPS parcel moves on over 2-3 days."""
    rng = random.Random(23)
    channel = UspsPollSim(CONFIG)
    channel.bucket = TokenBucket(1000.0, 1000)  # paging is tested here, not the quota
    for number in range(1, 41):
        at = T0 + timedelta(hours=5 * number)
        order = new_order(number, at, rng)
        for event, hours in (("paid", 0.1), ("shipped", 1), ("in_transit", 20), ("delivered", 60)):
            if event == "delivered" and number % 3 == 0:
                break
            apply(order, event, at + timedelta(hours=hours), rng)
            channel.record(order, event, order.updated)
    return channel


def _expected_ids(channel: UspsPollSim, window: Window) -> set[str]:
    """Event ids from the sandbox's documents, computed without the connector."""
    ids = set()
    for number, (_modified, doc) in channel.store.docs.items():
        for event in doc["trackingEvents"]:
            at = datetime.fromisoformat(event["GMTTimestamp"])
            if window.start <= at < window.end:
                ids.add(f"{number}:{event['eventCode']}:"
                        f"{at.strftime('%Y-%m-%dT%H:%M:%S')}.{at.microsecond // 1000:03d}Z")
    return ids


def _serve(channel: UspsPollSim,
           body: Callable[[str, aiohttp.ClientSession], Awaitable[object]]) -> object:
    async def main() -> object:
        app = web.Application()
        app.router.add_routes(channel.routes())
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
            return await body(str(server.make_url("/usps")), session)
    return asyncio.run(main())


async def _all_pages(source: UspsPoll, session: aiohttp.ClientSession,
                     window: Window) -> list[Page]:
    pages, cursor = [], None
    while True:
        page = await source.fetch(session, window, cursor)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def _walk(channel: UspsPollSim, *windows: Window) -> list[list[Page]]:
    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = UspsPoll({**CONFIG, "base_url": url})
        return [await _all_pages(source, session, window) for window in windows]
    result = _serve(channel, body)
    assert isinstance(result, list)
    return result


def test_every_event_of_the_window_comes_back_exactly_once() -> None:
    channel = _filled_sim()
    assert len(channel.store.docs) >= 5
    expected = _expected_ids(channel, WINDOW)
    [pages] = _walk(channel, WINDOW)
    records = [r for page in pages for r in page.records]
    ids = [r.source_event_id for r in records]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected and expected
    assert {r.key for r in records} <= set(channel.store.docs)
    # One tracking number per page: every shipped parcel plus the unknown one.
    assert len(pages) == len(channel.store.docs) + 1
    assert len(channel.tokens) == 1  # one token for the whole walk


def test_the_carriers_code_change_midway_reaches_the_records() -> None:
    channel = _filled_sim()
    [pages] = _walk(channel, EVERYTHING)
    by_era: dict[bool, set[str]] = {True: set(), False: set()}
    for page in pages:
        for record in page.records:
            gmt = (record.source_event_id or "").split(":", 2)[2]  # nu:code:GMT time
            at = datetime.fromisoformat(gmt)
            by_era[at >= SWITCH].add(record.source_topic)
    assert {"MA", "03", "10"} <= by_era[False] and not {"GX", "PC"} & by_era[False]
    assert {"GX", "03", "PC"} <= by_era[True] and not {"MA", "10"} & by_era[True]
    assert len({r.source_event_id for p in pages for r in p.records}) == \
        len(_expected_ids(channel, EVERYTHING))


def test_a_revoked_token_is_replaced_once() -> None:
    channel = _filled_sim()

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = UspsPoll({**CONFIG, "base_url": url})
        first = await source.fetch(session, EVERYTHING, None)
        channel.tokens.clear()  # USPS revoked it early
        return first, await source.fetch(session, EVERYTHING, first.next_cursor)

    first, second = _serve(channel, body)  # type: ignore[misc]
    assert second.records and second.next_cursor != first.next_cursor
    assert len(channel.tokens) == 1


def test_wrong_secret_is_auth_failed() -> None:
    channel = _filled_sim()

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = UspsPoll({**CONFIG, "base_url": url, "client_secret": "wrong"})
        with pytest.raises(AuthFailed):
            await source.fetch(session, WINDOW, None)
        return True

    assert _serve(channel, body)


def test_exhausted_quota_is_throttled_with_retry_after() -> None:
    channel = _filled_sim()
    channel.bucket = TokenBucket(UspsPollSim.rate_per_s, UspsPollSim.burst)

    async def body(url: str, session: aiohttp.ClientSession) -> object:
        source = UspsPoll({**CONFIG, "base_url": url})
        page = await source.fetch(session, WINDOW, None)  # token + listing + one parcel
        while channel.bucket.take():
            pass
        with pytest.raises(Throttled) as info:
            await source.fetch(session, WINDOW, page.next_cursor)
        return info.value.retry_after_s

    assert _serve(channel, body) == 60.0
