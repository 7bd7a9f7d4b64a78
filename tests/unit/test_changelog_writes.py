"""Offsets are committed only after the table changelog writes before them are
acknowledged (streams/changelog.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from orderpulse.errors import BrokerError
from orderpulse.streams.changelog import ChangelogWrites


def test_waits_for_the_writes_sent_so_far_not_for_later_ones() -> None:
    async def run() -> tuple[bool, int]:
        writes = ChangelogWrites()
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        writes.track(first)
        waiting = asyncio.ensure_future(writes.acknowledged(5.0))
        await asyncio.sleep(0.05)
        blocked = not waiting.done()
        writes.track(loop.create_future())  # sent after the commit began: not waited for
        first.set_result("ack")
        await asyncio.wait_for(waiting, 1.0)
        return blocked, len(writes.pending)

    blocked, still_pending = asyncio.run(run())
    assert blocked and still_pending == 1  # returned with the later write still out


def test_a_failed_write_is_raised_even_after_it_left_the_pending_set() -> None:
    async def run() -> None:
        writes = ChangelogWrites()
        fut = asyncio.get_running_loop().create_future()
        writes.track(fut)
        fut.set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)  # the done callback runs
        assert not writes.pending
        await writes.acknowledged(1.0)

    with pytest.raises(BrokerError, match="broker gone"):
        asyncio.run(run())


def test_an_unacknowledged_write_stops_the_commit_after_the_timeout() -> None:
    async def run() -> None:
        writes = ChangelogWrites()
        writes.track(asyncio.get_running_loop().create_future())
        await writes.acknowledged(0.05)

    with pytest.raises(BrokerError, match="1 table changelog writes unacknowledged"):
        asyncio.run(run())


def test_the_app_s_tables_track_their_writes_and_a_failed_one_stops_the_commit(
        app: Any) -> None:
    consumer, orders = app.consumer, app.tables["order-state"]
    writes = consumer.changelog_writes
    committed: list[Any] = []

    async def commit(offsets: Any) -> bool:
        committed.append(offsets)
        return True

    consumer._commit = commit

    async def run() -> None:
        fut = orders.send_changelog(2, b"shopify:1", b"{}")
        assert writes.pending == {fut}
        fut.set_exception(ConnectionError("refused"))
        await asyncio.sleep(0)
        await consumer._commit_offsets({TP("orders.raw.shopify", 2): 10})

    with pytest.raises(BrokerError, match="refused"):
        app.loop.run_until_complete(run())
    assert committed == []
