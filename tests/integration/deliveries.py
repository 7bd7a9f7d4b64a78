"""Signed webhook deliveries for the fault tests (broker pause, overload).

- ``render``: lifecycle events as the channels' signed deliveries (the sandbox's
  simulators, no injected faults), rendered before they are sent.
- ``Client``: a channel's side of HTTP/1.1: keep-alive connections, one request at a
  time on each, a deadline per attempt (Shopify gives up after 5 s). Plain asyncio
  streams, pre-encoded requests: on a 2-core machine the load generator must cost
  far less than the receiver it loads, or it measures itself.
- ``expected_event_ids``: what the acknowledged deliveries must become, computed
  offline by the code the receiver and the normalizer run (``records()``, the
  RawEvent envelope, ``normalize_message``), without Kafka.
- ``landed``: ``order_events`` read back from ClickHouse (after the sink stopped:
  chdb's data path is held by one process at a time).
- ``RssSampler``: VmRSS of processes, sampled in a thread; the peak per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from multidict import CIMultiDict

from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.base import raw_event
from orderpulse.connectors.channels import webhook_sources
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Sandbox
from orderpulse.settings import Settings
from orderpulse.streams.steps import Source, normalize_message

#: Channels the sandbox plays as signed webhooks.
WEBHOOK_CHANNELS = ("shopify", "woocommerce", "douyin", "youzan", "ownsite", "kuaidi100")
#: A channel's patience for one attempt (Shopify: 5 s).
CHANNEL_TIMEOUT_S = 5.0


def render(channels: dict[str, dict[str, str]], events: int, seed: int) -> list[Delivery]:
    """The deliveries ``events`` lifecycle events cause on the webhook channels."""
    sandbox = Sandbox({ch: channels[ch] for ch in WEBHOOK_CHANNELS}, seed=seed,
                      faults=NO_FAULTS)
    out: list[Delivery] = []
    for _ in range(events):
        order, event = sandbox.sim.step()
        out += sandbox.emit(order, event, datetime.now(UTC))
    return out


@dataclass
class Attempt:
    started: float  # time.monotonic()
    answered: float
    status: int  # 0: no answer within the deadline (or the connection failed)
    retry_after: str | None = None
    #: The request was written to a connection (False: the deadline came while it
    #: waited for one, every connection busy with an earlier delivery).
    written: bool = True


@dataclass
class Sent:
    delivery: Delivery
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return bool(self.attempts) and 200 <= self.attempts[-1].status < 300


def _request(host: str, port: int, d: Delivery) -> bytes:
    head = [f"{d.method} /webhooks/{d.channel} HTTP/1.1", f"Host: {host}:{port}",
            f"Content-Length: {len(d.body)}"]
    head += [f"{k}: {v}" for k, v in d.headers.items() if k.lower() != "content-length"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + d.body


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """Up to ``connections`` keep-alive connections to the receiver at ``url``, as a
    channel's delivery pool: a delivery waits for a free one, its deadline running."""

    def __init__(self, url: str, connections: int) -> None:
        hostport = url.split("://", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self._slots = connections  # not yet connected
        self._idle: list[Conn] = []
        # FIFO of deliveries waiting for a connection; one that gave up stays in it
        # until reached (asyncio.Queue removes it at once: O(n) per timeout, which made
        # the client, not the receiver, the bottleneck under overload).
        self._waiting: deque[asyncio.Future[Conn | None]] = deque()
        # Every transport ever opened, closed at the end (one cancelled mid-connect too).
        self._opened: set[asyncio.BaseTransport] = set()

    async def warm(self, n: int) -> None:
        """Open ``n`` connections now, not during the load (the accept backlog is 128)."""
        for _ in range(min(n, self._slots)):
            self._slots -= 1
            self._idle.append(await self._connect())

    async def _connect(self) -> Conn:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        opened = self._opened

        class Tracked(asyncio.StreamReaderProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                opened.add(transport)
                super().connection_made(transport)

        protocol = Tracked(reader)
        transport, _ = await loop.create_connection(lambda: protocol, self.host, self.port)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def close(self) -> None:
        for transport in self._opened:
            transport.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run

    async def _take(self) -> Conn | None:
        """An idle connection, or None: a free slot to connect in; else wait for one."""
        if self._idle:
            return self._idle.pop()
        if self._slots:
            self._slots -= 1
            return None
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(waiter.result())  # handed over just as the deadline came
            raise

    def _give(self, conn: Conn | None) -> None:
        """Back to the pool (None: the connection was dropped, its slot is free)."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is None:
            self._slots += 1
        else:
            self._idle.append(conn)

    async def send(self, d: Delivery, deadline: float) -> Attempt:
        """One attempt; gives up at ``deadline`` (monotonic; waiting for a connection
        included) with status 0, dropping the connection as a channel that gave up does."""
        started = time.monotonic()
        loop_deadline = asyncio.get_running_loop().time() + (deadline - started)
        taken, conn, written = False, None, [False]
        try:
            async with asyncio.timeout_at(loop_deadline):
                conn = await self._take()
                taken = True
                if conn is None:
                    conn = await self._connect()
                keep, status, retry_after = await self._exchange(conn, d, written)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            if conn is not None:
                conn[1].close()
            if taken:
                self._give(None)
            return Attempt(started, time.monotonic(), 0, written=written[0])
        self._give(conn if keep else None)
        return Attempt(started, time.monotonic(), status, retry_after)

    async def _exchange(self, conn: Conn, d: Delivery,
                        written: list[bool]) -> tuple[bool, int, str | None]:
        reader, writer = conn
        writer.write(_request(self.host, self.port, d))
        written[0] = True
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head[1:] if line)}
        await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            writer.close()
            return False, status, headers.get("retry-after")
        return True, status, headers.get("retry-after")


async def deliver(client: Client, sent: Sent, give_up_at: float) -> None:
    """Send until acknowledged or refused for good (4xx), as a channel does: an attempt
    without an answer or with a 5xx is retried (after Retry-After when given)."""
    delay = 0.2
    while True:
        attempt = await client.send(sent.delivery, time.monotonic() + CHANNEL_TIMEOUT_S)
        sent.attempts.append(attempt)
        if 200 <= attempt.status < 500 or time.monotonic() > give_up_at:
            return
        wait = float(attempt.retry_after) if attempt.retry_after else delay
        await asyncio.sleep(wait)
        delay = min(delay * 2, 2.0)


def event_ids(settings: Settings, deliveries: Iterable[Delivery]) -> list[set[str]]:
    """The event ids each delivery becomes: the receiver's ``records()`` and envelope,
    then the agent's ``normalize_message``, offline (event ids do not depend on the
    receive time or the request id)."""
    sources = webhook_sources(settings.channels)
    envelope = codec("RawEvent")
    now_ms = int(time.time() * 1000)
    out: list[set[str]] = []
    for d in deliveries:
        ids: set[str] = set()
        for r in sources[d.channel].records(CIMultiDict(d.headers), d.body):
            value = envelope.encode(raw_event(d.channel, "WEBHOOK", r, received_at=now_ms,
                                              request_id="offline"))
            result = normalize_message(Source("offline", 0, 0, r.key.encode(), value),
                                       now_ms=now_ms)
            ids |= {e["event_id"] for e in result.events}
        out.append(ids)
    return out


def expected_event_ids(settings: Settings, deliveries: Iterable[Delivery]) -> set[str]:
    """Every event id these deliveries become (see ``event_ids``)."""
    return set().union(*event_ids(settings, deliveries))


def raw_records(settings: Settings, d: Delivery) -> int:
    """How many raw records one delivery publishes (a Douyin push can carry several)."""
    return len(webhook_sources(settings.channels)[d.channel].records(CIMultiDict(d.headers),
                                                                     d.body))


@dataclass(frozen=True)
class Landed:
    final: dict[str, int]  # event_id -> rows under FINAL (1 when deduplicated)
    rows: int  # rows without FINAL (a re-inserted batch shows here until merged)


def landed(settings: Settings) -> Landed:
    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    db = settings.clickhouse_database
    try:
        final = client.query_rows(
            f"SELECT event_id, count() AS n FROM {db}.order_events FINAL GROUP BY event_id")
        [rows] = client.query_rows(f"SELECT count() AS n FROM {db}.order_events")
    finally:
        client.close()
    return Landed({r["event_id"]: int(r["n"]) for r in final}, int(rows["n"]))


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores each process used between ``__enter__`` and ``__exit__``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cores: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self._t0
        self.cores = {name: (cpu_seconds(pid) - self._cpu0[name]) / elapsed
                      for name, pid in self.pids.items()}


class RssSampler:
    """VmRSS of named processes every ``interval_s``, in a thread, while running."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.25) -> None:
        self.pids, self.interval_s = pids, interval_s
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.first: dict[str, float] = {name: rss_mib(pid) for name, pid in pids.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                with contextlib.suppress(OSError):  # exited: the tests' PID checks say so
                    self.peak[name] = max(self.peak[name], rss_mib(pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
