from datetime import UTC, datetime

from orderpulse.connectors.clickhouse_sink import Batch, ch_time, dead_letter_row, order_row


def test_ch_time_formats_ms_in_utc() -> None:
    assert ch_time(1_794_409_200_123) == "2026-11-11 15:00:00.123"
    assert ch_time(datetime(2026, 11, 11, 15, 0, 0, 5000, tzinfo=UTC)) == "2026-11-11 15:00:00.005"


def _event() -> dict[str, object]:
    t = datetime(2026, 11, 11, 15, 0, tzinfo=UTC)
    return {
        "event_id": "e1", "order_id": "shopify:1", "channel": "shopify", "shop_id": "s",
        "channel_order_id": "1", "event_type": "PAID", "status": "PAID", "refund_status": "NONE",
        "raw_status": "financial=paid", "event_time": t, "source_tz": "-05:00", "received_at": t,
        "processed_at": t, "currency": "USD", "total_minor": 100, "paid_minor": 100,
        "discount_minor": 0, "shipping_minor": 0, "tax_minor": 0, "refunded_minor": 0,
        "lines": [{"line_id": "l1", "sku": "A", "quantity": 2, "unit_price_minor": 50}],
        "buyer_ref": None, "trace_id": "t", "source_event_id": None,
    }


def test_order_row_flattens_lines_and_keeps_provenance() -> None:
    row = order_row(_event(), 3, 99)
    assert row["line_skus"] == ["A"] and row["line_quantities"] == [2]
    assert row["line_unit_prices_minor"] == [50]
    assert (row["kafka_partition"], row["kafka_offset"]) == (3, 99)
    assert row["event_time"] == "2026-11-11 15:00:00.000"


def test_dead_letter_row_base64s_arbitrary_bytes() -> None:
    letter = {"step": "normalize", "reason": "not_json", "error_class": "DecodeError",
              "message": "m", "channel": None, "source_topic": "t", "source_partition": 0,
              "source_offset": 5, "original_key": None, "original_value": b"\xff\x00",
              "failed_at": 0}
    row = dead_letter_row(letter)
    assert row["original_value_b64"] == "/wA=" and row["original_key_b64"] is None


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


def test_batch_token_is_deterministic_per_offset_ranges() -> None:
    a, b = Batch(), Batch()
    for batch, order in ((a, [(0, 1), (0, 2), (1, 7)]), (b, [(1, 7), (0, 1), (0, 2)])):
        for partition, offset in order:
            batch.track(_Msg("orders.normalized", partition, offset))  # type: ignore[arg-type]
    assert a.token("order_events") == b.token("order_events")
    assert a.token("order_events") != a.token("dead_letters")
    a.track(_Msg("orders.normalized", 0, 3))  # type: ignore[arg-type]
    assert a.token("order_events") != b.token("order_events")
