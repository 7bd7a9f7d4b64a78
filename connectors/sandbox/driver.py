"""The sandbox: every channel played locally, driven by one lifecycle simulator.

Each simulated order is sold on one channel (weighted like a merchant's mix)
and, once shipped, tracked by its carrier's channel. Pushing channels'
deliveries are POSTed to the receiver, retried like the channel (5xx and
timeouts), with faults injected: retried duplicates, late (out-of-order)
deliveries, broken bodies signed validly, forged signatures. Pulling channels'
APIs are served from the sandbox store (``api_app``). Store sales (POS) are
written as CSV files for ``orderpulse import``.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.sandbox import POLL_SIMS, WEBHOOK_SIMS, pos
from orderpulse.connectors.sandbox.base import Delivery, PollChannelSim, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder, Simulator

# A merchant's mix of sales channels (share of orders).
SALES_MIX: dict[str, float] = {
    names.CHANNEL_TAOBAO: 0.22, names.CHANNEL_JD: 0.12, names.CHANNEL_PINDUODUO: 0.14,
    names.CHANNEL_DOUYIN: 0.14, names.CHANNEL_YOUZAN: 0.08, names.CHANNEL_SHOPIFY: 0.12,
    names.CHANNEL_WOOCOMMERCE: 0.06, names.CHANNEL_OWNSITE: 0.06, names.CHANNEL_POS: 0.06,
}
CARRIER_EVENTS = frozenset({"shipped", "in_transit", "delivered"})


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.02  # a delivery re-sent as a retry (same delivery id and body)
    late: float = 0.02  # a delivery held back a while: later events overtake it
    broken_body: float = 0.004  # a validly signed body that is not what the channel documents
    forged: float = 0.003  # a signature that does not verify


NO_FAULTS = Faults(0, 0, 0, 0)


@dataclass
class Stats:
    sent: dict[str, int] = field(default_factory=dict)
    acknowledged: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    failed: int = 0
    polled_updates: dict[str, int] = field(default_factory=dict)
    pos_rows: int = 0

    def bump(self, table: dict[str, int], channel: str, n: int = 1) -> None:
        table[channel] = table.get(channel, 0) + n


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Sandbox:
    def __init__(self, channels: Mapping[str, Mapping[str, str]], *, seed: int = 1,
                 faults: Faults = Faults(), pos_dir: Path | None = None) -> None:
        self.rng = random.Random(seed ^ 0x5EED)
        self.faults = faults
        self.sim = Simulator(seed=seed, clock=_utcnow)
        self.webhooks: dict[str, WebhookChannelSim] = {
            n: cls(channels[n]) for n, cls in WEBHOOK_SIMS.items() if n in channels}
        self.polls: dict[str, PollChannelSim] = {
            n: cls(channels[n]) for n, cls in POLL_SIMS.items() if n in channels}
        self.pos = pos.PosLedger(pos_dir) if pos_dir and names.CHANNEL_POS in channels else None
        mix = {ch: w for ch, w in SALES_MIX.items()
               if ch in self.webhooks or ch in self.polls or (ch == names.CHANNEL_POS and self.pos)}
        self.mix_channels, self.mix_weights = list(mix), list(mix.values())
        self.channel_of: dict[int, str] = {}
        self.stats = Stats()

    # --- routing ------------------------------------------------------------------
    def _sales_channel(self, order: SimOrder) -> str:
        if order.number not in self.channel_of:
            self.channel_of[order.number] = self.rng.choices(self.mix_channels,
                                                             self.mix_weights)[0]
        return self.channel_of[order.number]

    def _carrier_channel(self, order: SimOrder) -> str:
        return names.CHANNEL_USPS if order.carrier == "USPS" else names.CHANNEL_KUAIDI100

    def emit(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        """Apply one lifecycle event to the channels that see it; deliveries to push."""
        targets = [self._sales_channel(order)]
        if event in CARRIER_EVENTS:
            targets.append(self._carrier_channel(order))
        out: list[Delivery] = []
        for channel in targets:
            if channel in self.webhooks:
                out += self.webhooks[channel].deliveries(order, event, now)
            elif channel in self.polls:
                self.polls[channel].record(order, event, now)
                self.stats.bump(self.stats.polled_updates, channel)
            elif channel == names.CHANNEL_POS and self.pos is not None:
                self.stats.pos_rows += self.pos.record(order, event)
        return out

    def with_faults(self, deliveries: list[Delivery]) -> list[tuple[float, Delivery]]:
        """(delay in seconds, delivery) after fault injection."""
        out: list[tuple[float, Delivery]] = []
        f = self.faults
        for d in deliveries:
            sim = self.webhooks[d.channel]
            roll = self.rng.random()
            if roll < f.forged:
                out.append((0.0, sim.forge(d)))
                continue
            if roll < f.forged + f.broken_body:
                broken = sim.resign(d, d.body[: max(len(d.body) // 2, 1)])
                out.append((0.0, broken or d))
                continue
            delay = self.rng.uniform(1.0, 5.0) if self.rng.random() < f.late else 0.0
            out.append((delay, d))
            if self.rng.random() < f.duplicate:
                out.append((delay + self.rng.uniform(0.05, 1.0), d))
        return out

    # --- the channels' APIs ----------------------------------------------------------
    def api_app(self) -> web.Application:
        app = web.Application()
        for sim in self.polls.values():
            app.router.add_routes(sim.routes())
        return app

    # --- driving -------------------------------------------------------------------
    async def handshakes(self, session: aiohttp.ClientSession, base_url: str) -> None:
        for sim in self.webhooks.values():
            ping = sim.handshake()
            if ping is not None:
                await self._post(session, base_url, ping, attempts=3)

    async def _post(self, session: aiohttp.ClientSession, base_url: str, d: Delivery,
                    attempts: int = 8) -> int:
        self.stats.bump(self.stats.sent, d.channel)
        status, delay = 0, 0.2
        for _ in range(attempts):
            try:
                async with session.request(d.method, f"{base_url}/webhooks/{d.channel}",
                                           data=d.body, headers=d.headers) as resp:
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if 200 <= status < 300:
                self.stats.bump(self.stats.acknowledged, d.channel)
                return status
            if 400 <= status < 500:
                self.stats.bump(self.stats.rejected, d.channel)
                return status
            self.stats.retried += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.stats.failed += 1
        return status

    async def drive(self, base_url: str, *, rate: float, duration_s: float | None,
                    max_events: int | None = None, stop: asyncio.Event | None = None) -> Stats:
        """Run lifecycle events at ``rate``/s until the duration, count or ``stop``."""
        loop = asyncio.get_running_loop()
        inflight: set[asyncio.Task[int]] = set()
        limit = asyncio.Semaphore(200)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await self.handshakes(session, base_url)

            async def send(delay: float, d: Delivery) -> int:
                await asyncio.sleep(delay)
                async with limit:
                    return await self._post(session, base_url, d)

            started, n = loop.time(), 0
            while (max_events is None or n < max_events) and not (stop and stop.is_set()):
                if duration_s is not None and loop.time() - started >= duration_s:
                    break
                due = started + n / rate
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                order, event = self.sim.step()
                for delay, d in self.with_faults(self.emit(order, event, _utcnow())):
                    task = asyncio.create_task(send(delay, d))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                n += 1
            if inflight:
                await asyncio.gather(*inflight)
        if self.pos is not None:
            self.pos.close()
        return self.stats


async def serve_and_drive(channels: Mapping[str, Mapping[str, str]], *, api_port: int,
                          webhook_url: str, rate: float, duration_s: float | None, seed: int,
                          pos_dir: Path | None, stats_path: Path, stop: asyncio.Event) -> None:
    """The sandbox process: serve the pull channels' APIs on loopback, drive the
    traffic, write the stats, and keep serving until ``stop`` (pollers catch up)."""
    sandbox = Sandbox(channels, seed=seed, pos_dir=pos_dir)
    runner = web.AppRunner(sandbox.api_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", api_port).start()
    try:
        stats = await sandbox.drive(webhook_url, rate=rate, duration_s=duration_s, stop=stop)
        payload = {**stats.__dict__, "pos_file": str(sandbox.pos.path) if sandbox.pos else None}
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(stats_path)
        await stop.wait()
    finally:
        await runner.cleanup()
