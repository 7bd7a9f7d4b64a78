"""The pipeline benchmark's input: a channel mix with retries and late deliveries."""

from __future__ import annotations

from collections import Counter

from orderpulse import names
from orderpulse.bench import channel_mix
from orderpulse.streams.steps import Source, normalize_message


def test_the_mix_spans_the_channels_with_duplicates_and_late_records() -> None:
    mix = channel_mix(1500, seed=7)
    assert len(mix.records) == 1500
    topics = Counter(base for base, _key, _value in mix.records)
    assert len(topics) >= 9 and names.raw_topic(names.CHANNEL_SHOPIFY) in topics
    repeats = len(mix.records) - len(set(mix.records))
    assert 0.05 * 1500 < repeats < 0.15 * 1500
    # Out of order: some records arrive after records captured later than them.
    again = channel_mix(1500, seed=7, duplicate=0.0, late=0.0)
    assert len(set(again.records)) == 1500
    assert mix.records[:50] != [r for r in again.records if r in set(mix.records)][:50]


def test_units_are_what_the_worker_turns_the_records_into() -> None:
    mix = channel_mix(300, seed=9)
    units = 0
    for _base, key, value in mix.records:
        result = normalize_message(Source("t", 0, 0, key, value), now_ms=0, pii_key=b"k")
        units += len(result.events) if result.dead_letter is None else 1
    assert mix.units == units >= 300
