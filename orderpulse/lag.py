"""The lag exporter step: how far behind each of the pipeline's consumer groups is.

    every ORDERPULSE_LAG_INTERVAL_S, for each group and each partition it consumes:
        committed offset    AdminClient.list_consumer_group_offsets
        end offset          AdminClient.list_offsets, then the last batch read to its end
        first unconsumed    the record at the committed offset, read by an assigned reader
    -> orderpulse_consumer_lag_messages{group,topic,partition}  end - committed
       orderpulse_consumer_lag_seconds{group,topic,partition}   now - that record's timestamp

The observed groups are never joined: on Tansu a consumer using a group's id makes
that group rebalance. The reader has its own group id, uses ``assign()`` only and
never commits. Groups and topics come from the declared names, so labels are bounded.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from orderpulse import names
from orderpulse.errors import BrokerError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)


TP = tuple[str, int]  # (topic, partition)
Stamps = dict[tuple[str, int, int], int]  # (topic, partition, offset) -> record timestamp, ms

# A blocked admin call delays SIGTERM by up to this much (signals are handled between
# calls): well under the 20 s a step is given to stop.
_ADMIN_TIMEOUT_S = 5.0
# Reading last batches and first unconsumed records: one round trip each on a healthy
# broker; past this the scrape reports what it has and counts an error.
_READ_TIMEOUT_S = 5.0


# --- what is observed (pure) ------------------------------------------------------

def streams_group(settings: Settings) -> str:
    """The Faust worker's consumer group: its app id (``streams/app.py``), suffixed."""
    return f"orderpulse-streams{settings.topic_suffix}"


def consumed_topics(settings: Settings) -> dict[str, tuple[str, ...]]:
    """Each consumer group of the pipeline and the topics it subscribes to: the Faust
    agents' sources (``streams/app.py``) and the sink's routes (``clickhouse_sink.py``;
    a unit test compares them with what the sink subscribes to)."""
    streams = (*(names.raw_topic(channel) for channel in names.CHANNELS), names.TOPIC_TICKS,
               names.TOPIC_INV_REPLIES, names.TOPIC_INV_COMMANDS)
    sink = (names.TOPIC_NORMALIZED, names.TOPIC_DLQ, names.TOPIC_INV_LEVELS, names.TOPIC_STATE,
            names.TOPIC_ALERTS, names.TOPIC_DUPLICATES, names.TOPIC_QUARANTINE,
            names.TOPIC_INV_EVENTS)
    return {
        streams_group(settings): tuple(topic_name(settings, base) for base in streams),
        settings.group(names.STEP_SINK): tuple(topic_name(settings, base) for base in sink),
    }


# --- lag arithmetic (pure) -----------------------------------------------------------

def first_unconsumed(committed: int | None, low: int) -> int:
    """Offset of the next record the group reads. Without a commit, or with one that
    fell out of retention, that is the earliest record kept: both groups reset to
    earliest."""
    return low if committed is None else max(committed, low)


def lag_messages(committed: int | None, low: int, end: int) -> int:
    """Records between the group's position and the end: the whole partition without a
    commit (0 if it is empty). Never negative: the end may be read before a newer commit."""
    return max(end - first_unconsumed(committed, low), 0)


def lag_seconds(messages: int, timestamp_ms: int | None, now_s: float) -> float | None:
    """Age of the first unconsumed record; 0 without lag; None while its timestamp is
    unknown. Never negative (a producer's clock may run ahead of ours)."""
    if messages == 0:
        return 0.0
    if timestamp_ms is None:
        return None
    return max(now_s - timestamp_ms / 1000, 0.0)


def ends_to_read(reported: Mapping[TP, int], low: Mapping[TP, int],
                 known: Mapping[TP, tuple[int, int]]) -> dict[TP, int]:
    """Where to read each partition's last batch from, for the non-empty partitions
    whose reported end is not the one ``known`` (reported -> read end) was read for."""
    return {tp: end - 1 for tp, end in reported.items()
            if end > low[tp] and known.get(tp, (-1, -1))[0] != end}


def stamps_to_read(starts: Mapping[TP, int], known: Mapping[tuple[str, int, int], int],
                   ) -> dict[TP, int]:
    """The first unconsumed records whose timestamp is not cached: a record at an offset
    never changes, so an unchanged position is never fetched again."""
    return {tp: offset for tp, offset in starts.items() if (*tp, offset) not in known}


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    messages: int
    seconds: float | None


# --- the step ---------------------------------------------------------------------

class LagExporter:
    """Reads the groups' positions and the partitions' ends; sets the lag gauges."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.groups = consumed_topics(settings)
        self.metrics = metrics
        self.clock = clock
        base = settings.kafka_client_config()
        self.admin = AdminClient(base)
        self.reader = Consumer({
            **base,
            # Its own id, assign() only, nothing committed: it joins no group.
            "group.id": f"orderpulse.lag-reader{settings.topic_suffix}.{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # Tansu answers a fetch near its max wait even when data is there (see the sink).
            "fetch.wait.max.ms": 50,
            # One record per partition is wanted: do not prefetch a lagging backlog.
            "max.partition.fetch.bytes": 64 * 1024,
        })
        self._ends: dict[TP, tuple[int, int]] = {}
        self._stamps: Stamps = {}
        self._stop = threading.Event()

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Scrape every ``interval_s`` until ``stop`` is set, then close the reader."""
        self._stop = stop
        self.metrics.up.labels(names.STEP_LAG).set(1)
        log.info("lag exporter step=%s watching %s every %.1fs", names.STEP_LAG,
                 ", ".join(self.groups), interval_s)
        try:
            while not stop.is_set():
                started = time.monotonic()
                self.scrape_once()
                stop.wait(max(interval_s - (time.monotonic() - started), 0.0))
        finally:
            self.metrics.up.labels(names.STEP_LAG).set(0)
            self.reader.close()

    def scrape_once(self) -> None:
        """One scrape into the gauges; a broker failure is counted and logged, not raised."""
        try:
            lags = self.scrape()
        except BrokerError as exc:
            self.metrics.lag_scrape_errors.inc()
            log.warning("lag scrape failed step=%s: %s", names.STEP_LAG, exc)
            return
        for lag in lags:
            labels = (lag.group, lag.topic, str(lag.partition))
            self.metrics.consumer_lag_messages.labels(*labels).set(lag.messages)
            if lag.seconds is not None:
                self.metrics.consumer_lag_seconds.labels(*labels).set(lag.seconds)

    def scrape(self) -> list[PartitionLag]:
        """Every observed (group, partition): its lag in records and in seconds."""
        parts = self._partitions()
        # Commits first, ends second: a commit made in between only overstates the lag.
        committed = {group: self._committed(group, tps) for group, tps in parts.items()}
        every = sorted({tp for tps in parts.values() for tp in tps})
        low = self._list_offsets(every, OffsetSpec.earliest())
        end = self._read_ends(self._list_offsets(every, OffsetSpec.latest()), low)
        # Keyed by partition alone: no topic has two consuming groups (a unit test holds it).
        starts = {tp: first_unconsumed(committed[group].get(tp), low[tp])
                  for group, tps in parts.items() for tp in tps}
        stamps = self._read_stamps({tp: s for tp, s in starts.items() if end[tp] > s})
        now = self.clock()
        lags = []
        for group, tps in parts.items():
            for tp in tps:
                messages = lag_messages(committed[group].get(tp), low[tp], end[tp])
                seconds = lag_seconds(messages, stamps.get((*tp, starts[tp])), now)
                lags.append(PartitionLag(group, tp[0], tp[1], messages, seconds))
        return lags

    # --- admin reads ------------------------------------------------------------
    def _partitions(self) -> dict[str, list[TP]]:
        """Each group's partitions, from the topics that exist now."""
        try:
            topics = self.admin.list_topics(timeout=_ADMIN_TIMEOUT_S).topics
        except KafkaException as exc:
            raise BrokerError(f"cannot list topics: {exc}") from exc
        return {group: [(t, p) for t in wanted if t in topics and topics[t].error is None
                        for p in sorted(topics[t].partitions)]
                for group, wanted in self.groups.items()}

    def _committed(self, group: str, tps: list[TP]) -> dict[TP, int | None]:
        if not tps:
            return {}
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(t, p) for t, p in tps])]
        answer = _result(self.admin.list_consumer_group_offsets(request)[group],
                         f"committed offsets of {group}")
        offsets: dict[TP, int | None] = {}
        for tp in answer.topic_partitions:
            if tp.error is not None:
                raise BrokerError(f"committed offset of {group} {tp.topic}/{tp.partition}: "
                                  f"{tp.error}")
            offsets[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
        return offsets

    def _list_offsets(self, tps: list[TP], spec: OffsetSpec) -> dict[TP, int]:
        if not tps:
            return {}
        futures = self.admin.list_offsets({TopicPartition(t, p): spec for t, p in tps},
                                          request_timeout=_ADMIN_TIMEOUT_S)
        return {(tp.topic, tp.partition): _result(f, f"offsets of {tp.topic}").offset
                for tp, f in futures.items()}

    # --- record reads -----------------------------------------------------------
    def _read_ends(self, reported: dict[TP, int], low: dict[TP, int]) -> dict[TP, int]:
        """Each partition's end offset. Tansu 0.6 reports the end as the last batch's base
        offset + 1 (measured: 5 records in one batch, end 1), so the last batch is read to
        the partition's end; on Kafka that reads the one last record."""
        todo = ends_to_read(reported, low, self._ends)
        _first, eof = self._read(todo, to_end=True)
        for tp in todo.keys() & eof.keys():
            self._ends[tp] = (reported[tp], max(reported[tp], eof[tp]))
        return {tp: self._ends[tp][1] if self._ends.get(tp, (-1, -1))[0] == end else end
                for tp, end in reported.items()}

    def _read_stamps(self, starts: dict[TP, int]) -> Stamps:
        """Timestamps of the records at ``starts``: cached ones, then the missing ones read.
        The cache keeps only current positions, so it stays one entry per partition."""
        wanted = {(*tp, offset) for tp, offset in starts.items()}
        known = {key: ts for key, ts in self._stamps.items() if key in wanted}
        todo = stamps_to_read(starts, known)
        first, _eof = self._read(todo, to_end=False)
        for tp, ts in first.items():
            if ts is not None:
                known[(*tp, todo[tp])] = ts
        self._stamps = known
        return known

    def _read(self, starts: dict[TP, int], *, to_end: bool,
              ) -> tuple[dict[TP, int | None], dict[TP, int]]:
        """Read from ``starts`` until each partition's first record (or to its end if
        ``to_end``). Returns the first records' timestamps and the ends reached."""
        if not starts:
            return {}, {}
        first: dict[TP, int | None] = {}
        eof: dict[TP, int] = {}
        pending = set(starts)
        deadline = time.monotonic() + _READ_TIMEOUT_S
        try:
            self.reader.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            try:
                while pending and time.monotonic() < deadline and not self._stop.is_set():
                    for msg in self.reader.consume(num_messages=500, timeout=0.1):
                        self._take(msg, first, eof, pending, to_end)
            finally:
                self.reader.unassign()
        except KafkaException as exc:
            raise BrokerError(f"cannot read {len(starts)} partitions: {exc}") from exc
        if pending and not self._stop.is_set():
            self.metrics.lag_scrape_errors.inc()
            log.warning("lag read incomplete step=%s: %d of %d partitions unanswered in %.0fs",
                        names.STEP_LAG, len(pending), len(starts), _READ_TIMEOUT_S)
        return first, eof

    @staticmethod
    def _take(msg: Any, first: dict[TP, int | None], eof: dict[TP, int], pending: set[TP],
              to_end: bool) -> None:
        tp = (msg.topic(), msg.partition())
        err = msg.error()
        if err is None:
            kind, ts = msg.timestamp()
            first.setdefault(tp, None if kind == TIMESTAMP_NOT_AVAILABLE else ts)
            if not to_end:
                pending.discard(tp)
        elif err.code() == KafkaError._PARTITION_EOF:
            eof[tp] = msg.offset()
            pending.discard(tp)
        elif err.fatal():
            raise KafkaException(err)
        else:
            log.warning("lag reader error step=%s: %s", names.STEP_LAG, err)


def _result(future: Future[Any], what: str) -> Any:
    try:
        return future.result(timeout=_ADMIN_TIMEOUT_S)
    except (KafkaException, TimeoutError) as exc:
        raise BrokerError(f"cannot read {what}: {exc}") from exc


def run_lag(settings: Settings, metrics: Metrics, stop: threading.Event) -> None:
    """Export the pipeline's consumer lag until ``stop`` is set."""
    LagExporter(settings, metrics).run(stop, settings.lag_interval_s)
