"""Connector benchmarks (``orderpulse bench --suite connectors``), each next to the
raw producer rate measured in the same run on the same broker:

    p  confluent-kafka producer, RawEvent-sized records, acks=all: the baseline
    w  one webhook receiver process: signed Shopify deliveries per second answered
       2xx, every one backed by a Kafka acknowledgement (client: a separate process)
    q  one poller: orders per second fetched from the Taobao sandbox API (signed
       requests, 100 per page) and acknowledged into the raw topic
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from datetime import UTC, datetime, timedelta
from typing import TextIO

import aiohttp
from aiohttp import web
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port
from orderpulse.connectors.channels.taobao import TaobaoPoll
from orderpulse.connectors.cursors import CursorStore
from orderpulse.connectors.poller import Poller
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Sandbox
from orderpulse.connectors.sandbox.lifecycle import apply, new_order
from orderpulse.connectors.sandbox.taobao import TaobaoPollSim
from orderpulse.metrics import Metrics
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import settings_env
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

SECRET = "bench-secret"  # noqa: S105 - the benchmark's own throwaway webhook secret


def producer_rate(settings: Settings, count: int) -> float:
    value = codec("RawEvent").encode({
        "channel": "shopify", "shop_id": "s", "delivery_mode": "WEBHOOK",
        "source_topic": "orders/create", "source_event_id": "x", "request_id": "r",
        "received_at": 0, "headers": {}, "content_type": "application/json",
        "body": b"x" * 2000})
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True,
                         "linger.ms": 5})
    topic = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=str(i).encode(), value=value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    return count / (time.perf_counter() - started)


def _deliveries(count: int) -> list[tuple[bytes, dict[str, str]]]:
    sandbox = Sandbox({names.CHANNEL_SHOPIFY: {"webhook_secret": SECRET}}, seed=9,
                      faults=NO_FAULTS)
    out: list[tuple[bytes, dict[str, str]]] = []
    while len(out) < count:
        order, event = sandbox.sim.step()
        out += [(d.body, d.headers) for d in sandbox.emit(order, event, datetime.now(UTC))]
    return out[:count]


def _client(url: str, deliveries: list[tuple[bytes, dict[str, str]]], concurrency: int,
            result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    async def main() -> None:
        codes: dict[int, int] = {}
        queue = iter(deliveries)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

            async def worker() -> None:
                for body, headers in queue:
                    async with s.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        codes[resp.status] = codes.get(resp.status, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.put((time.perf_counter() - started, codes))

    asyncio.run(main())


def webhook_rate(settings: Settings, count: int, log_dir: object) -> tuple[float, dict[int, int]]:
    settings = settings.model_copy(update={
        "channels": {names.CHANNEL_SHOPIFY: {"webhook_secret": SECRET}},
        "webhook_port": free_port(), "log_level": "WARNING"})
    child = spawn("bench-webhook", ["webhook"], settings_env(settings), free_port(),
                  log_dir)  # type: ignore[arg-type]
    try:
        wait_for_metrics(child)
        url = f"http://127.0.0.1:{settings.webhook_port}/webhooks/shopify"
        deliveries = _deliveries(count)
        ctx = multiprocessing.get_context("spawn")
        result: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
        warm = ctx.Process(target=_client, args=(url, deliveries[:200], 16, result))
        warm.start()
        result.get(timeout=120)
        warm.join()
        client = ctx.Process(target=_client, args=(url, deliveries, 64, result))
        client.start()
        elapsed, codes = result.get(timeout=600)
        client.join()
        return codes.get(200, 0) / elapsed, codes
    finally:
        child.stop()


async def _poll_rate(settings: Settings, orders: int) -> float:
    config = {"app_key": "k", "app_secret": "s", "session": "t", "shop_id": "bench",
              "rate_per_s": "1000", "burst": "1000"}
    sim = TaobaoPollSim(config)
    rng, start = random.Random(3), datetime.now(UTC) - timedelta(minutes=40)  # noqa: S311
    for n in range(1, orders + 1):
        order = new_order(n, start + timedelta(seconds=n * 1700 / orders), rng)
        apply(order, "paid", order.created, rng)
        sim.record(order, "paid", order.created)
    app = web.Application()
    app.router.add_routes(sim.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    source = TaobaoPoll({**config, "base_url": f"http://127.0.0.1:{port}/taobao/router/rest"})
    producer = AsyncProducer(settings.kafka_client_config())
    poller = Poller(source, settings, producer, CursorStore(settings, producer),
                    Metrics.create(CollectorRegistry()), checkpoint_ms=0)
    window = (int((start - timedelta(seconds=1)).timestamp() * 1000),
              int((start + timedelta(seconds=1750)).timestamp() * 1000))
    try:
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            published = await poller.poll_window(session, window)
            elapsed = time.perf_counter() - started
    finally:
        await asyncio.to_thread(producer.close)
        await runner.cleanup()
    # Every order the channel lists (cash-on-delivery ones are not "paid" events).
    assert published == len(sim.store.docs), (published, len(sim.store.docs))
    return published / elapsed


def measure(settings: Settings, out: TextIO, *, requests: int = 20000,
            orders: int = 20000) -> list[tuple[str, float, str]]:
    """Figures as (name, value, ratio text); ``settings`` points at a running broker."""
    p = producer_rate(settings, requests)
    out.write(f"p raw producer       {p:9.0f} records/s\n")
    out.flush()
    w, codes = webhook_rate(settings, requests, settings.data_dir / "logs")
    out.write(f"w webhook receiver   {w:9.0f} signed requests/s acknowledged ({codes})\n")
    out.flush()
    q = asyncio.run(_poll_rate(settings, orders))
    out.write(f"q Taobao poller      {q:9.0f} orders/s\n")
    out.flush()
    return [("p: confluent-kafka producer, 2 KB RawEvents, acks=all", p, "1.00 (baseline)"),
            ("w: webhook receiver, one process, signed Shopify deliveries acked into Kafka",
             w, f"{w / p:.3f} x p"),
            ("q: Taobao poller, signed API pages of 100 into Kafka", q, f"{q / p:.3f} x p")]

