import itertools
from datetime import UTC, datetime

from orderpulse.connectors.channels.shopify import ShopifyPoll
from orderpulse.connectors.poller import next_window

NOW = int(datetime(2026, 11, 11, 12, tzinfo=UTC).timestamp() * 1000)
H = 3600 * 1000


def test_window_starts_overlap_before_the_checkpoint_and_is_capped() -> None:
    source = ShopifyPoll({})
    start, end = next_window(source, NOW - 3 * 24 * H, NOW, idle_s=10)
    assert start == NOW - 3 * 24 * H - int(source.overlap_s * 1000)
    assert end - start == int(source.max_window_s * 1000)


def test_window_stops_short_of_now_by_the_settle_time() -> None:
    source = ShopifyPoll({})
    _start, end = next_window(source, NOW - H, NOW, idle_s=10)
    assert end == NOW - int(source.settle_s * 1000)


def test_caught_up_poller_waits() -> None:
    source = ShopifyPoll({})
    assert next_window(source, NOW - int(source.settle_s * 1000) - 5000, NOW, idle_s=10) is None


def test_successive_windows_cover_time_without_gaps() -> None:
    source = ShopifyPoll({})
    checkpoint, covered = NOW - 5 * 24 * H, []
    while (bounds := next_window(source, checkpoint, NOW, idle_s=10)) is not None:
        assert bounds[0] <= checkpoint  # never skips past the checkpoint
        covered.append(bounds)
        checkpoint = bounds[1]
    assert covered[0][0] <= NOW - 5 * 24 * H
    assert checkpoint >= NOW - int(source.settle_s * 1000) - 10_000
    # Re-read per window is bounded by the overlap.
    for (_s1, e1), (s2, _e2) in itertools.pairwise(covered):
        assert e1 - s2 == int(source.overlap_s * 1000)
