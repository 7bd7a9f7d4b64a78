"""A poller killed mid-window resumes from its checkpoint: no order is skipped, and
what it reads again is bounded by one window plus the overlap."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiohttp import web
from confluent_kafka import Consumer

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port
from orderpulse.connectors.channels.shopify import API_VERSION, ShopifyPoll
from orderpulse.connectors.cursors import CursorStore, cursor_key
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.connectors.sandbox.lifecycle import apply, new_order
from orderpulse.connectors.sandbox.shopify import ID_BASE, ShopifyPollSim
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import settings_env
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import SettingsFactory

pytestmark = pytest.mark.integration
ORDERS = 2400
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def shop_api() -> Iterator[tuple[int, ShopifyPollSim]]:
    """The Shopify sandbox API on loopback, holding orders modified over 3 days."""
    config = {"access_token": "tok"}
    sim = ShopifyPollSim(config)
    rng = random.Random(5)
    for n in range(1, ORDERS + 1):
        created = NOW - timedelta(days=3) + timedelta(seconds=n * (3 * 86400 - 300) // ORDERS)
        order = new_order(n, created, rng)
        apply(order, "paid", created + timedelta(minutes=1), rng)
        sim.record(order, "paid", created)
    port, loop, ready = free_port(), asyncio.new_event_loop(), threading.Event()

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_routes(sim.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def main() -> None:
        runner = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    yield port, sim
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def checkpoints(settings: Settings) -> dict[str, int]:
    producer = AsyncProducer(settings.kafka_client_config())
    try:
        return CursorStore(settings, producer).load()
    finally:
        producer.close()


def raw_order_ids(settings: Settings) -> list[str]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"check-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))])
    ids, idle_since = [], time.monotonic()
    try:
        while time.monotonic() - idle_since < 8:
            batch = consumer.consume(1000, 1.0)
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is None:
                    raw = codec("RawEvent").decode(msg.value())
                    ids.append(str(orjson.loads(raw["body"])["id"]))
    finally:
        consumer.close()
    return ids


def test_killed_poller_resumes_without_skipping(settings_factory: SettingsFactory,
                                                shop_api: tuple[int, ShopifyPollSim]) -> None:
    port, _sim = shop_api
    settings = settings_factory(
        channels={"shopify": {"access_token": "tok", "shop_domain": "demo.myshopify.com",
                              "poll": "true", "page_size": "50",
                              "base_url": f"http://127.0.0.1:{port}/shopify/admin/api/"
                                          f"{API_VERSION}"}},
        poll_initial_lookback_s=4 * 86400.0, poll_idle_s=1.0)
    key = cursor_key(names.CHANNEL_SHOPIFY, "demo.myshopify.com")
    logs = settings.data_dir / "logs"

    poller = spawn("poll", ["poll"], settings_env(settings), free_port(), logs)
    wait_for_metrics(poller)
    deadline = time.monotonic() + 60
    while key not in checkpoints(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    first = checkpoints(settings)[key]
    poller.process.send_signal(signal.SIGKILL)
    poller.process.wait(10)
    assert first < int((NOW.timestamp() - 60) * 1000), "killed after it had finished"

    poller = spawn("poll", ["poll"], settings_env(settings), free_port(), logs)
    try:
        wait_for_metrics(poller)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if checkpoints(settings)[key] >= int(NOW.timestamp() * 1000):
                break
            time.sleep(0.5)
    finally:
        assert poller.stop() == 0, poller.log_tail()

    ids = raw_order_ids(settings)
    expected = {str(ID_BASE + n) for n in range(1, ORDERS + 1)}
    assert set(ids) == expected, "an order was skipped"
    # Re-reads: the overlap of every window, plus the window cut by the kill.
    window = ShopifyPoll.max_window_s + ShopifyPoll.overlap_s
    per_second = ORDERS / (3 * 86400)
    windows = 5
    bound = per_second * (window + windows * ShopifyPoll.overlap_s) + 1
    assert len(ids) - len(expected) <= bound, (len(ids), len(expected), bound)
