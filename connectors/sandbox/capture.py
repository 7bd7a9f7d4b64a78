"""Capture a realistic channel mix as raw records, without a broker: the sandbox's
pushes go through each connector's own ``records()``, and its pull APIs are
served on loopback and read through each connector's own ``fetch()``. The
benchmark and the normalizer tests use exactly what the pipeline would ingest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from orderpulse import names
from orderpulse.broker import free_port
from orderpulse.connectors.base import PollSource, RawRecord, Window
from orderpulse.connectors.channels import POLL_SOURCES, WEBHOOK_SOURCES
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Sandbox
from orderpulse.connectors.sandbox.lifecycle import Simulator

Captured = list[tuple[str, str, RawRecord]]  # (channel, delivery mode, record)


def _pushes(sandbox: Sandbox, channels: Mapping[str, Mapping[str, str]], steps: int,
            ) -> Captured:
    sources = {ch: WEBHOOK_SOURCES[ch](channels[ch]) for ch in sandbox.webhooks}
    out: Captured = []
    for _ in range(steps):
        order, event = sandbox.sim.step()
        for d in sandbox.emit(order, event, sandbox.sim.clock()):
            if sources[d.channel].handshake("POST", d.headers, d.body) is None:
                out += [(d.channel, "WEBHOOK", r) for r in sources[d.channel].records(
                    d.headers, d.body)]
    return out


def _split(window: Window, max_s: float) -> list[Window]:
    step, parts, start = timedelta(seconds=max_s - 1), [], window.start
    while start < window.end:
        parts.append(Window(start, min(start + step, window.end)))
        start = parts[-1].end
    return parts


async def _read(session: aiohttp.ClientSession, source: PollSource,
                window: Window) -> list[RawRecord]:
    records: list[RawRecord] = []
    cursor: str | None = None
    while True:
        page = await source.fetch(session, window, cursor)
        records += page.records
        if page.next_cursor is None:
            return records
        cursor = page.next_cursor


async def _pulls(sandbox: Sandbox, channels: Mapping[str, Mapping[str, str]],
                 window: Window) -> Captured:
    runner = web.AppRunner(sandbox.api_app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    out: Captured = []
    try:
        async with aiohttp.ClientSession() as session:
            for channel in sandbox.polls:
                config = {**channels[channel],
                          "base_url": channels[channel]["base_url"].replace("{port}", str(port))}
                source = POLL_SOURCES[channel](config)
                for part in _split(window, source.max_window_s):
                    out += [(channel, "POLL", r) for r in await _read(session, source, part)]
    finally:
        await runner.cleanup()
    return out


def capture(channels: Mapping[str, Mapping[str, str]], *, steps: int, seed: int = 1,
            start: datetime | None = None) -> Captured:
    """Raw records of ``steps`` lifecycle events across the configured channels.

    Pull channels' ``base_url`` may contain ``{port}``: the loopback API's port.
    Simulated time advances one second per event from ``start``.
    """
    # No quotas: this reads the channels' data, it does not test their limits.
    channels = {ch: {**cfg, "rate_per_s": "100000", "burst": "100000"}
                for ch, cfg in channels.items()}
    t0 = start or datetime.now(UTC) - timedelta(seconds=steps + 60)
    tick = iter(range(10**9))
    sandbox = Sandbox(channels, seed=seed, faults=NO_FAULTS)
    sandbox.sim = Simulator(seed=seed, clock=lambda: t0 + timedelta(seconds=next(tick)))
    pushed = _pushes(sandbox, channels, steps)
    window = Window(t0 - timedelta(seconds=1), t0 + timedelta(seconds=steps + 2))
    return pushed + asyncio.run(_pulls(sandbox, channels, window))


def sandbox_config() -> dict[str, dict[str, str]]:
    """Every channel configured as ``orderpulse run`` does, with ``{port}`` placeholders."""
    from orderpulse.runner import sandbox_channels

    channels = sandbox_channels(0)
    for config in channels.values():
        config["base_url"] = config["base_url"].replace(":0/", ":{port}/")
    return {ch: cfg for ch, cfg in channels.items() if ch != names.CHANNEL_POS}
