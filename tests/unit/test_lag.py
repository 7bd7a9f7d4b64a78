"""The lag exporter's pure parts: which groups read which topics, the lag arithmetic,
and what a scrape has to read again (cache)."""

from __future__ import annotations

import threading
from unittest.mock import create_autospec, patch

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.clickhouse import ClickHouse
from orderpulse.connectors import clickhouse_sink
from orderpulse.lag import (
    consumed_topics,
    ends_to_read,
    first_unconsumed,
    lag_messages,
    lag_seconds,
    stamps_to_read,
)
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import declared_topics

SETTINGS = Settings(ORDERPULSE_TOPIC_SUFFIX=".t1")


def test_groups_are_the_streams_app_and_the_sink_suffixed() -> None:
    assert set(consumed_topics(SETTINGS)) == {"orderpulse-streams.t1",
                                              "orderpulse.clickhouse_sink.t1"}


def test_streams_group_reads_every_raw_topic_and_its_internal_inputs() -> None:
    topics = set(consumed_topics(SETTINGS)["orderpulse-streams.t1"])
    assert {f"orders.raw.{channel}.t1" for channel in names.CHANNELS} <= topics
    assert {"orders.ticks.t1", "inventory.replies.t1", "inventory.commands.t1"} <= topics
    assert len(topics) == len(names.CHANNELS) + 3


def test_sink_group_reads_exactly_what_the_sink_subscribes_to() -> None:
    # The sink's own consumer, spec-checked and never connected: run() with stop already
    # set subscribes, flushes nothing and closes.
    settings = SETTINGS.model_copy(update={"kafka_bootstrap_servers": "127.0.0.1:1"})
    with patch.object(clickhouse_sink, "Consumer", autospec=True) as consumer:
        sink = clickhouse_sink.ClickHouseSink(settings, create_autospec(ClickHouse, instance=True),
                                              Metrics.create(CollectorRegistry()))
        stop = threading.Event()
        stop.set()
        sink.run(stop)
    [(subscribed,), _kwargs] = consumer.return_value.subscribe.call_args
    assert set(subscribed) == set(consumed_topics(settings)["orderpulse.clickhouse_sink.t1"])


def test_no_topic_has_two_groups_so_one_read_position_per_partition_suffices() -> None:
    streams, sink = consumed_topics(SETTINGS).values()
    assert not set(streams) & set(sink)


def test_every_observed_topic_is_declared_so_labels_are_bounded() -> None:
    declared = {spec.name for spec in declared_topics(SETTINGS)}
    for topics in consumed_topics(SETTINGS).values():
        assert set(topics) <= declared


def test_lag_is_end_minus_commit() -> None:
    assert lag_messages(committed=7, low=0, end=10) == 3
    assert lag_messages(committed=10, low=0, end=10) == 0


def test_without_commit_the_whole_partition_is_lag() -> None:
    assert lag_messages(committed=None, low=0, end=0) == 0  # empty: nothing to read
    assert lag_messages(committed=None, low=0, end=25) == 25
    assert lag_messages(committed=None, low=5, end=25) == 20  # retention removed 0..4


def test_commit_behind_retention_counts_only_records_still_kept() -> None:
    assert first_unconsumed(committed=2, low=5) == 5
    assert lag_messages(committed=2, low=5, end=9) == 4


def test_commit_newer_than_the_end_read_is_no_lag() -> None:
    assert lag_messages(committed=12, low=0, end=10) == 0


@given(st.one_of(st.none(), st.integers(0, 10**9)), st.integers(0, 10**9),
       st.integers(0, 10**9))
def test_lag_is_never_negative_nor_more_than_the_partition(committed: int | None, low: int,
                                                            span: int) -> None:
    end = low + span
    assert 0 <= lag_messages(committed, low, end) <= end - low


def test_seconds_are_zero_without_lag_even_with_an_old_record() -> None:
    assert lag_seconds(0, 1_000, now_s=100.0) == 0.0
    assert lag_seconds(0, None, now_s=100.0) == 0.0


def test_seconds_are_the_age_of_the_first_unconsumed_record() -> None:
    assert lag_seconds(3, 90_500, now_s=100.0) == 9.5


def test_seconds_unknown_until_the_record_is_read() -> None:
    assert lag_seconds(3, None, now_s=100.0) is None


def test_seconds_never_negative_when_the_producer_clock_is_ahead() -> None:
    assert lag_seconds(1, 105_000, now_s=100.0) == 0.0


def test_ends_are_read_for_new_non_empty_ends_only() -> None:
    reported = {("a", 0): 0, ("a", 1): 6, ("a", 2): 9, ("a", 3): 4}
    low = {("a", 0): 0, ("a", 1): 0, ("a", 2): 0, ("a", 3): 4}
    known = {("a", 1): (6, 10), ("a", 2): (7, 8)}
    # 0 and 3 are empty; 1's reported end was read already; 2 got a new batch.
    assert ends_to_read(reported, low, known) == {("a", 2): 8}


def test_a_position_that_did_not_move_is_not_fetched_again() -> None:
    starts = {("a", 0): 4, ("a", 1): 9}
    known = {("a", 0, 4): 1_000, ("a", 1, 3): 900}  # partition 1 moved on from 3 to 9
    assert stamps_to_read(starts, known) == {("a", 1): 9}


def test_metrics_register_on_a_fresh_registry() -> None:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    metrics.consumer_lag_messages.labels("g", "t", "0").set(3)
    metrics.consumer_lag_seconds.labels("g", "t", "0").set(1.5)
    metrics.lag_scrape_errors.inc()
    assert registry.get_sample_value("orderpulse_consumer_lag_messages",
                                     {"group": "g", "topic": "t", "partition": "0"}) == 3
    assert registry.get_sample_value("orderpulse_consumer_lag_seconds",
                                     {"group": "g", "topic": "t", "partition": "0"}) == 1.5
    assert registry.get_sample_value("orderpulse_lag_scrape_errors_total") == 1
