"""The streams app as built from settings (no broker: nothing here connects)."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.types import TP

from orderpulse.settings import Settings


def test_the_consumer_fetches_with_the_configured_wait_not_faust_s_1500_ms(app: Any) -> None:
    thread = app.consumer._thread  # builds the aiokafka consumer when the worker starts

    async def build() -> int:
        consumer = thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == 77
    assert Settings().stream_fetch_max_wait_ms == 100


def test_a_fetch_that_spanned_a_seek_is_dropped_and_read_again(app: Any) -> None:
    # Faust's own fetch path, from _wait_next_records down, with the records and the
    # seeks of a rebalance that happens while the fetch is in flight.
    consumer = app.consumer
    raw = TP("orders.raw.shopify", 2)
    changelog = TP(next(iter(app.tables.changelog_topics)), 2)
    fetched = {raw: ["r1", "r2"], changelog: ["c1"]}
    consumer._committed_offset[raw] = 25
    seeks: list[tuple[Any, int]] = []

    async def fetch_during_rebalance(*, active_partitions: Any, timeout: float) -> Any:
        consumer.seek_epoch += 1  # the rebalance's seek, while this fetch was out
        return dict(fetched)

    async def seek(partition: Any, offset: int) -> None:
        seeks.append((partition, offset))

    consumer._getmany = fetch_during_rebalance
    consumer._seek = seek
    consumer._get_active_partitions = lambda: {raw, changelog}

    async def run() -> tuple[Any, Any]:
        consumer.flow_active = True
        stale = await consumer._wait_next_records(1.0)

        async def fetch_quietly(*, active_partitions: Any, timeout: float) -> Any:
            return dict(fetched)

        consumer._getmany = fetch_quietly
        return stale, await consumer._wait_next_records(1.0)

    (stale, _), (fresh, _) = asyncio.run(run())
    # The stream partition's records are dropped and read again from its commit; the
    # changelog's are recovery's own business.
    assert stale == {changelog: ["c1"]} and consumer.stale_fetches == 1
    assert seeks == [(raw, 25)]
    assert fresh == fetched  # a fetch with no seek during it is delivered whole
