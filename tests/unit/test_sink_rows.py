import re
from datetime import UTC, datetime
from typing import Any

import pytest

from orderpulse import names
from orderpulse.clickhouse import ddl_statements
from orderpulse.connectors.clickhouse_sink import (
    ONE_ROW_TOPICS,
    Batch,
    ch_time,
    dead_letter_row,
    inventory_event_row,
    order_alert_row,
    order_row,
    order_state_row,
    rejected_event_row,
    stock_level_rows,
)


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


def test_inventory_event_row_keeps_every_field_and_provenance() -> None:
    event = {"kind": "RESERVED", "event_id": "c1/RESERVED", "sku": "A", "warehouse": "sh",
             "reservation_id": "r1", "order_id": "shopify:1", "quantity": 2, "on_hand": 10,
             "reserved": 2, "safety": 1, "available": 7, "reason": "",
             "at": datetime(2026, 11, 11, 15, 0, tzinfo=UTC)}
    row = inventory_event_row(event, 2, 41)
    assert row == {**event, "at": "2026-11-11 15:00:00.000",
                   "kafka_partition": 2, "kafka_offset": 41}


def test_inventory_event_row_keeps_nulls_of_order_level_kinds() -> None:
    event = {"kind": "OUT_OF_STOCK", "event_id": "shopify:1#0/OUT_OF_STOCK", "sku": "A,B",
             "warehouse": None, "reservation_id": None, "order_id": "shopify:1", "quantity": 3,
             "on_hand": 0, "reserved": 0, "safety": 0, "available": 0,
             "reason": "insufficient_stock", "at": 1_794_409_200_123}
    row = inventory_event_row(event, 0, 0)
    assert row["warehouse"] is None and row["reservation_id"] is None
    assert row["at"] == "2026-11-11 15:00:00.123"


def _level(*warehouses: str) -> dict[str, object]:
    rows = [{"warehouse": w, "on_hand": 5 + i, "reserved": 1, "safety": 1, "available": 3 + i}
            for i, w in enumerate(warehouses)]
    return {"sku": "A", "available_to_sell": sum(r["available"] for r in rows),
            "warehouses": rows, "version": 7, "at": datetime(2026, 11, 11, 15, 0, tzinfo=UTC)}


def test_stock_level_rows_one_per_warehouse_with_the_skus_figures() -> None:
    rows = stock_level_rows(_level("bj", "sh"))
    assert [r["warehouse"] for r in rows] == ["bj", "sh"]
    assert rows[1] == {"sku": "A", "warehouse": "sh", "on_hand": 6, "reserved": 1, "safety": 1,
                       "available": 4, "available_to_sell": 7, "version": 7,
                       "at": "2026-11-11 15:00:00.000"}
    assert all(r["available_to_sell"] == 7 and r["version"] == 7 for r in rows)


def test_stock_level_rows_empty_for_a_sku_without_warehouses() -> None:
    assert stock_level_rows(_level()) == []


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


# --- the order-health topics ----------------------------------------------------------
T = datetime(2026, 11, 11, 15, 0, tzinfo=UTC)


def test_order_state_row_keeps_the_state_and_its_version() -> None:
    state = {"order_id": "shopify:1", "channel": "shopify", "status": "PAID",
             "refund_status": "NONE", "status_since": T, "last_event_time": T,
             "event_count": 3, "stuck": True, "updated_at": 1_794_409_200_123}
    assert order_state_row(state, 1, 8) == {
        **state, "status_since": "2026-11-11 15:00:00.000",
        "last_event_time": "2026-11-11 15:00:00.000", "updated_at": "2026-11-11 15:00:00.123",
        "kafka_partition": 1, "kafka_offset": 8}


def test_order_alert_row_keeps_both_times_and_the_limit() -> None:
    alert = {"kind": "RAISED", "order_id": "shopify:1", "channel": "shopify", "state": "PAID",
             "since": T, "limit_ms": 14_400_000, "stuck_for_ms": 14_500_000,
             "at": 1_794_423_700_000}
    row = order_alert_row(alert, 0, 2)
    assert row["since"] == "2026-11-11 15:00:00.000" and row["at"] == "2026-11-11 19:01:40.000"
    assert (row["kind"], row["state"], row["limit_ms"]) == ("RAISED", "PAID", 14_400_000)


def test_rejected_event_row_drops_the_embedded_event_bytes() -> None:
    rejected = {"reason": "impossible_transition", "order_id": "shopify:1",
                "channel": "shopify", "event_id": "e1", "event_type": "CREATED",
                "from_status": "DELIVERED", "to_status": "PENDING_PAYMENT", "event_time": T,
                "event": b"\xc3\x01...", "at": T}
    row = rejected_event_row(rejected, 2, 5)
    assert "event" not in row and row["event_id"] == "e1"
    assert row["from_status"] == "DELIVERED" and row["event_time"] == "2026-11-11 15:00:00.000"
    duplicate = rejected_event_row({**rejected, "reason": "duplicate", "from_status": None}, 0, 0)
    assert duplicate["from_status"] is None


def test_every_health_topic_is_routed_to_its_table() -> None:
    routed = {topic: (record, table) for topic, (record, table, _row) in ONE_ROW_TOPICS.items()}
    assert routed == {
        names.TOPIC_STATE: ("OrderState", names.TABLE_ORDER_STATES),
        names.TOPIC_ALERTS: ("OrderAlert", names.TABLE_ORDER_ALERTS),
        names.TOPIC_DUPLICATES: ("RejectedEvent", names.TABLE_DUPLICATES),
        names.TOPIC_QUARANTINE: ("RejectedEvent", names.TABLE_QUARANTINE),
        names.TOPIC_INV_EVENTS: ("InventoryEvent", names.TABLE_INVENTORY_EVENTS)}


def _columns(table: str) -> set[str]:
    """The table's columns as the versioned DDL declares them (CREATE, then ALTERs)."""
    found: set[str] = set()
    for statement in ddl_statements("db"):
        code = re.sub(r"--[^\n]*", "", statement)
        if re.search(rf"CREATE TABLE IF NOT EXISTS db\.{table}\s", code):
            body = code[code.index("(") + 1:code.index("\nENGINE")]
            found |= {line.split()[0] for line in body.splitlines() if line.strip()[:1].isalpha()}
        elif re.search(rf"ALTER TABLE db\.{table}\s", code):
            found |= set(re.findall(r"ADD COLUMN IF NOT EXISTS (\w+)", code))
    return found


@pytest.mark.parametrize(("table", "row"), [
    (names.TABLE_ORDER_STATES, lambda: order_state_row(
        {"order_id": "o", "channel": "c", "status": "PAID", "refund_status": "NONE",
         "status_since": 0, "last_event_time": 0, "event_count": 1, "stuck": False,
         "updated_at": 0}, 0, 0)),
    (names.TABLE_ORDER_ALERTS, lambda: order_alert_row(
        {"kind": "RAISED", "order_id": "o", "channel": "c", "state": "PAID", "since": 0,
         "limit_ms": 1, "stuck_for_ms": 2, "at": 0}, 0, 0)),
    (names.TABLE_DUPLICATES, lambda: rejected_event_row(
        {"reason": "duplicate", "order_id": "o", "channel": "c", "event_id": "e",
         "event_type": "PAID", "from_status": None, "to_status": "PAID", "event_time": 0,
         "event": b"", "at": 0}, 0, 0)),
    (names.TABLE_QUARANTINE, lambda: rejected_event_row(
        {"reason": "impossible_transition", "order_id": "o", "channel": "c", "event_id": "e",
         "event_type": "PAID", "from_status": "DELIVERED", "to_status": "PAID",
         "event_time": 0, "event": b"", "at": 0}, 0, 0)),
    (names.TABLE_ORDER_EVENTS, lambda: order_row(_event(), 0, 0)),
    (names.TABLE_INVENTORY_EVENTS, lambda: inventory_event_row(
        {"kind": "RESERVED", "event_id": "c1/RESERVED", "sku": "A", "warehouse": "sh",
         "reservation_id": "r1", "order_id": "o", "quantity": 2, "on_hand": 10, "reserved": 2,
         "safety": 1, "available": 7, "reason": "", "at": 0}, 0, 0)),
    (names.TABLE_DEAD_LETTERS, lambda: dead_letter_row(
        {"step": "normalize", "reason": "not_json", "error_class": "DecodeError",
         "message": "m", "channel": None, "source_topic": "t", "source_partition": 0,
         "source_offset": 5, "original_key": None, "original_value": b"x", "failed_at": 0})),
    (names.TABLE_INVENTORY_LEVELS, lambda: stock_level_rows(_level("sh"))[0]),
])
def test_rows_fill_exactly_the_tables_columns(table: str, row: Any) -> None:
    # JSONEachRow skips unknown keys by default on recent servers: a misspelt key
    # would silently land as the column's default. landed_at is set at insert.
    assert {*row(), "landed_at"} == _columns(table)
