"""Table changelog writes acknowledged before the offsets that caused them are committed.

Faust flushes its producer before a commit, but that flush can return with changelog
records not yet acknowledged (faust-streaming 0.15.3): ``ProducerBuffer.flush`` gives
up after 0.1 s without a send (``flush_atmost``), and a record already taken from the
buffer may still be waiting to enter aiokafka's accumulator, which holds one batch per
partition, so aiokafka's flush does not cover it. The embedded broker's one-record
changelog batches make both likely under load ("producer buffer full" in the worker's
log). An offset committed then could outlive, after kill -9, the table change of the
event it covers: recovery would restore the order without it and never re-read it.

So every changelog send's future is kept until it is acknowledged, and the consumer
waits for the ones sent so far before it commits (``streams/consumer.py``). A failed
write raises there: nothing is committed, the worker stops, and the events are read
again (at least once).
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from orderpulse.errors import BrokerError


class ChangelogWrites:
    """Changelog records sent and not yet acknowledged, and the first failure."""

    def __init__(self) -> None:
        self.pending: set[asyncio.Future[Any]] = set()
        self.failure: BaseException | None = None

    def track(self, fut: asyncio.Future[Any]) -> None:
        self.pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self.pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None and self.failure is None:
            self.failure = fut.exception()

    async def acknowledged(self, timeout_s: float) -> None:
        """Wait for every write sent until now (not those sent meanwhile); raise if
        one failed or is still unacknowledged after ``timeout_s``."""
        sent = set(self.pending)
        if sent:
            _done, late = await asyncio.wait(sent, timeout=timeout_s)
            if late:
                raise BrokerError(f"{len(late)} table changelog writes unacknowledged "
                                  f"after {timeout_s}s; not committing")
        if self.failure is not None:
            raise BrokerError(f"table changelog write failed: {self.failure!r}")


def table_class(writes: ChangelogWrites) -> type[faust.Table]:
    """Faust's ``Table`` whose every changelog send is tracked by ``writes``."""

    class Table(faust.Table):
        def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
            fut = super().send_changelog(*args, **kwargs)
            writes.track(fut)
            return fut

    return Table
