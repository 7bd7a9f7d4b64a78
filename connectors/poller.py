"""The poller: each pull channel's orders, window by window, into its raw topic.

Per source, forever: take the next window ``[checkpoint - overlap, min(start +
max_window, now - settle))``, fetch it page by page within the channel's rate
limit (leaky bucket), publish every record and wait for Kafka's acks, then save
the window end as the new checkpoint. Throttling answers wait what the channel
asks; other errors back off exponentially; a channel that is down, slow or
throttling never holds up another channel (each runs in its own task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors.base import (
    AuthFailed,
    Page,
    PollError,
    PollSource,
    RawRecord,
    Throttled,
    Window,
    raw_event,
)
from orderpulse.connectors.channels import poll_sources
from orderpulse.connectors.cursors import CursorStore, cursor_key
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

_AUTH_PAUSE_S = 60.0
_exponential = wait_exponential(multiplier=0.5, max=30)


def next_window(source: PollSource, checkpoint_ms: int, now_ms: int,
                idle_s: float) -> tuple[int, int] | None:
    """The next window to poll as (start_ms, end_ms), or None while caught up."""
    horizon = now_ms - int(source.settle_s * 1000)
    if horizon - checkpoint_ms < idle_s * 1000:
        return None
    start = checkpoint_ms - int(source.overlap_s * 1000)
    return start, min(start + int(source.max_window_s * 1000), horizon)


def _to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, PollError) and not isinstance(exc, AuthFailed)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, Throttled):
        return exc.retry_after_s
    return _exponential(state)


class Poller:
    """Polls one source; ``checkpoint_ms`` is where it resumes."""

    def __init__(self, source: PollSource, settings: Settings, producer: AsyncProducer,
                 cursors: CursorStore, metrics: Metrics, checkpoint_ms: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.settings = settings
        self.producer = producer
        self.cursors = cursors
        self.metrics = metrics
        self.checkpoint_ms = checkpoint_ms
        self.clock = clock
        self.topic = topic_name(settings, names.raw_topic(source.channel))
        self.key = cursor_key(source.channel, source.shop_id)
        # Leaky bucket: `burst` requests at once, refilled at `rate_per_s`.
        self.limiter = AsyncLimiter(source.burst, source.burst / source.rate_per_s)
        self.codec = codec("RawEvent")
        # Records this process already published, by source event id -> the end of
        # the window that carried them. The overlap re-reads them every window;
        # publishing them again would multiply traffic by overlap / poll interval.
        # After a restart the set is empty, so the re-read is bounded by one overlap.
        self.recent: dict[str, int] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        channel = self.source.channel
        while not stop.is_set():
            self.metrics.poll_lag.labels(channel).set((self._now_ms() - self.checkpoint_ms) / 1000)
            bounds = next_window(self.source, self.checkpoint_ms, self._now_ms(),
                                 self.settings.poll_idle_s)
            if bounds is None:
                await _sleep(self.settings.poll_idle_s, stop)
                continue
            try:
                await self.poll_window(session, bounds)
            except AuthFailed as exc:
                self.metrics.poll_requests.labels(channel, "auth_failed").inc()
                log.error("poll step=%s channel=%s: credentials refused (%s); retrying in %ss",
                          names.STEP_POLL, channel, exc, _AUTH_PAUSE_S)
                await _sleep(_AUTH_PAUSE_S, stop)
            except PollError as exc:
                log.warning("poll step=%s channel=%s window failed, will retry: %s",
                            names.STEP_POLL, channel, exc)
                await _sleep(5.0, stop)

    async def poll_window(self, session: aiohttp.ClientSession, bounds: tuple[int, int]) -> int:
        """Fetch and publish one window; checkpoint its end. Returns records published."""
        window = Window(_to_dt(bounds[0]), _to_dt(bounds[1]))
        cursor: str | None = None
        published = 0
        while True:
            page = await self._fetch(session, window, cursor)
            published += await self._publish(self._fresh(page, bounds[1]))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        await self.cursors.save(self.key, bounds[1])
        self.checkpoint_ms = bounds[1]
        # Ids older than two overlaps can no longer come back in a window.
        self._forget_before(bounds[1] - 2 * int(self.source.overlap_s * 1000))
        log.info("poll step=%s channel=%s window=%s..%s records=%d", names.STEP_POLL,
                 self.source.channel, window.start.isoformat(), window.end.isoformat(), published)
        return published

    async def _fetch(self, session: aiohttp.ClientSession, window: Window,
                     cursor: str | None) -> Page:
        channel = self.source.channel
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=_wait, stop=stop_after_attempt(8), reraise=True)
        async for attempt in retrying:
            with attempt:
                async with self.limiter:
                    try:
                        page = await self.source.fetch(session, window, cursor)
                    except Throttled:
                        self.metrics.poll_requests.labels(channel, "throttled").inc()
                        raise
                    except AuthFailed:
                        raise
                    except (PollError, aiohttp.ClientError, TimeoutError) as exc:
                        self.metrics.poll_requests.labels(channel, "error").inc()
                        if isinstance(exc, PollError):
                            raise
                        raise PollError(f"{type(exc).__name__}: {exc}") from exc
                self.metrics.poll_requests.labels(channel, "ok").inc()
        return page

    def _fresh(self, page: Page, window_end_ms: int) -> list[RawRecord]:
        """Records not yet published by this process (ids without one always pass)."""
        fresh = [r for r in page.records
                 if r.source_event_id is None or r.source_event_id not in self.recent]
        for r in fresh:
            if r.source_event_id is not None:
                self.recent[r.source_event_id] = window_end_ms
        skipped = len(page.records) - len(fresh)
        if skipped:
            self.metrics.events.labels(names.STEP_POLL, self.source.channel,
                                       "reread_skipped").inc(skipped)
        return fresh

    def _forget_before(self, horizon_ms: int) -> None:
        self.recent = {k: v for k, v in self.recent.items() if v >= horizon_ms}

    async def _publish(self, records: list[RawRecord]) -> int:
        received_at = self._now_ms()
        request_id = f"poll-{received_at}"
        await asyncio.gather(*(self.producer.send(
            self.topic, key=r.key.encode(),
            value=self.codec.encode(raw_event(self.source.channel, "POLL", r,
                                              received_at=received_at, request_id=request_id)))
            for r in records))
        self.metrics.events.labels(names.STEP_POLL, self.source.channel, "out").inc(len(records))
        return len(records)


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _until_stopped(jobs: list, stop: asyncio.Event) -> None:  # type: ignore[type-arg]
    """Run ``jobs`` until ``stop``; then cancel them (a window cut short is simply
    re-read after the restart: its checkpoint was not saved). A job that fails
    unexpectedly stops the process loudly."""
    tasks = [asyncio.create_task(job) for job in jobs]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    for task in [*tasks, stopper]:
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    for task in done:
        if task is not stopper and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def poll_all(settings: Settings, metrics: Metrics, stop: asyncio.Event) -> None:
    """Run a poller per configured pull source until ``stop``."""
    sources = poll_sources(settings.channels)
    producer = AsyncProducer(settings.kafka_client_config())
    cursors = CursorStore(settings, producer)
    saved = await asyncio.to_thread(cursors.load)
    start_ms = int((time.time() - settings.poll_initial_lookback_s) * 1000)
    pollers = [Poller(s, settings, producer, cursors, metrics,
                      saved.get(cursor_key(s.channel, s.shop_id), start_ms)) for s in sources]
    metrics.up.labels(names.STEP_POLL).set(1)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await _until_stopped([p.run(session, stop) for p in pollers], stop)
    finally:
        metrics.up.labels(names.STEP_POLL).set(0)
        await asyncio.to_thread(producer.close)


def run_poller(settings: Settings, metrics: Metrics) -> None:
    """Entry of the ``poll`` process: SIGTERM stops between requests."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await poll_all(settings, metrics, stop)

    asyncio.run(main())
