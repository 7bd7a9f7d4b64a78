"""The order-health views on the real ClickHouse engine (chdb), over rows built by
hand; every expected figure is worked out in the comments from those rows.

Times are hours relative to the moment the rows are built (the backlog view
reads a window ending at now()). Quantiles are exact and linearly interpolated
(quantileExactInclusive): over n sorted values x[0..n-1], p sits at h = (n-1)p,
value x[floor h] + (h - floor h)(x[floor h + 1] - x[floor h]).

The rows also carry what at-least-once delivery leaves behind, inserted as
separate batches: a second copy of an event, a duplicate record, a dead letter
and a stock refusal (collapsed by FINAL), an older order state and an older
stock level landing after the newer one (the version wins).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orderpulse import names
from orderpulse.clickhouse import ClickHouse, EmbeddedClickHouse, apply_ddl
from orderpulse.connectors.clickhouse_sink import ch_time
from orderpulse.report import build_report, render_html, render_png, render_text

pytestmark = pytest.mark.integration

H = 3_600_000  # one hour in ms


# --- the rows ------------------------------------------------------------------------
def _ev(now: int, order: str, n: int, kind: str, status: str, hours: float, delay_s: float,
        refund: str = "NONE", flags: tuple[str, ...] = ()) -> dict[str, Any]:
    t = now + int(hours * H)
    return {"event_id": f"{order}#{n}", "order_id": order, "channel": order.split(":")[0],
            "event_type": kind, "status": status, "refund_status": refund,
            "event_time": ch_time(t), "processed_at": ch_time(t + int(delay_s * 1000)),
            "landed_at": ch_time(t + int(delay_s * 1000)), "flags": list(flags)}


def order_events(now: int) -> list[dict[str, Any]]:
    """(order, n, event type, status, hours, delay_s[, refund, flags])."""
    rows = [
        # shopify:1 paid -71 h, shipped -51 h (lead 20 h), refund asked -20 h, partly
        # refunded -18 h (2 h); its last event is flagged FUTURE_EVENT_TIME.
        ("shopify:1", 1, "CREATED", "PENDING_PAYMENT", -72, 1),
        ("shopify:1", 2, "PAID", "PAID", -71, 2),
        ("shopify:1", 3, "SHIPPED", "SHIPPED", -51, 3),
        ("shopify:1", 4, "DELIVERED", "DELIVERED", -24, 4),
        ("shopify:1", 5, "UPDATED", "DELIVERED", -20, 1, "REQUESTED"),
        ("shopify:1", 6, "REFUNDED", "DELIVERED", -18, 1, "PARTIAL"),
        ("shopify:1", 7, "UPDATED", "DELIVERED", -17, -100, "PARTIAL", ("FUTURE_EVENT_TIME",)),
        # shopify:2 paid -94 h, shipped -34 h (lead 60 h, over the 48 h target).
        ("shopify:2", 1, "CREATED", "PENDING_PAYMENT", -96, 1),
        ("shopify:2", 2, "PAID", "PAID", -94, 1),
        ("shopify:2", 3, "SHIPPED", "SHIPPED", -34, 2),
        # shopify:3 and shopify:4 are paid, not shipped: the backlog.
        ("shopify:3", 1, "CREATED", "PENDING_PAYMENT", -24, 5),
        ("shopify:3", 2, "PAID", "PAID", -23, 5),
        ("shopify:4", 1, "PAID", "PAID", -48, 10),
        # shopify:5 shipped -216 h (lead 23 h; before the 7-day window), refunded in 5 h.
        ("shopify:5", 1, "CREATED", "PENDING_PAYMENT", -240, 1),
        ("shopify:5", 2, "PAID", "PAID", -239, 1),
        ("shopify:5", 3, "SHIPPED", "SHIPPED", -216, 1),
        ("shopify:5", 4, "COMPLETED", "COMPLETED", -192, 1),
        ("shopify:5", 5, "UPDATED", "COMPLETED", -168, 1, "REQUESTED"),
        ("shopify:5", 6, "REFUNDED", "COMPLETED", -163, 1, "FULL"),
        ("shopify:6", 1, "CREATED", "PENDING_PAYMENT", -120, 2),
        ("shopify:6", 2, "CANCELLED", "CANCELLED", -119.5, 2),
        # shopify:7 closed unpaid by the pipeline itself.
        ("shopify:7", 1, "CREATED", "PENDING_PAYMENT", -144, 3),
        ("shopify:7", 2, "CANCELLED", "CANCELLED", -143.5, 0, "NONE", ("AUTO_CLOSED",)),
        # taobao:1 (polled snapshots) paid -48 h, shipped -38 h (10 h), refund asked
        # -34 h, refunded -24 h (10 h).
        ("taobao:1", 1, "STATE", "PAID", -48, 30),
        ("taobao:1", 2, "STATE", "SHIPPED", -38, 30),
        ("taobao:1", 3, "STATE", "SHIPPED", -34, 60, "REQUESTED"),
        ("taobao:1", 4, "STATE", "SHIPPED", -32, 60, "RETURN_PENDING"),
        ("taobao:1", 5, "STATE", "SHIPPED", -24, 60, "FULL"),
        # taobao:2: PAID never seen, APPROVED -72 h, shipped -22 h (50 h); then an
        # impossible PENDING_PAYMENT -12 h (quarantined; the state stays SHIPPED).
        ("taobao:2", 1, "STATE", "APPROVED", -72, 30),
        ("taobao:2", 2, "STATE", "SHIPPED", -22, 90),
        ("taobao:2", 3, "STATE", "PENDING_PAYMENT", -12, 120),
        # taobao:3 refunded with no request on record, never shipped.
        ("taobao:3", 1, "STATE", "PAID", -144, 30),
        ("taobao:3", 2, "STATE", "CANCELLED", -120, 30, "FULL"),
        # A store sale, born completed.
        ("pos:1", 1, "CREATED", "COMPLETED", -24, 600),
        # A shipment's carrier scans (not an order).
        ("usps:TRACK1", 1, "CARRIER_SCAN", "SHIPPED", -48, 5),
        ("usps:TRACK1", 2, "CARRIER_SCAN", "IN_TRANSIT", -24, 15),
    ]
    return [_ev(now, *row) for row in rows]  # type: ignore[arg-type]


def _state(now: int, order: str, status: str, stuck: bool, updated_h: float = -1,
           ) -> dict[str, Any]:
    t = ch_time(now + int(updated_h * H))
    return {"order_id": order, "channel": order.split(":")[0], "status": status,
            "refund_status": "NONE", "status_since": t, "last_event_time": t,
            "event_count": 1, "stuck": stuck, "updated_at": t, "landed_at": t}


def order_states(now: int) -> list[dict[str, Any]]:
    return [_state(now, o, s, stuck) for o, s, stuck in [
        ("shopify:1", "DELIVERED", False), ("shopify:2", "SHIPPED", True),
        ("shopify:3", "PAID", False), ("shopify:4", "PAID", True),
        ("shopify:5", "COMPLETED", False), ("shopify:6", "CANCELLED", False),
        ("shopify:7", "CANCELLED", False), ("taobao:1", "SHIPPED", False),
        ("taobao:2", "SHIPPED", True), ("taobao:3", "CANCELLED", False),
        ("pos:1", "COMPLETED", False), ("usps:TRACK1", "IN_TRANSIT", False)]]


def _rejected(now: int, order: str, n: int, offset: int) -> dict[str, Any]:
    t = ch_time(now - 10 * H)
    return {"reason": "duplicate", "order_id": order, "channel": order.split(":")[0],
            "event_id": f"{order}#{n}", "event_type": "PAID", "from_status": None,
            "to_status": "PAID", "event_time": t, "at": t, "kafka_partition": 0,
            "kafka_offset": offset, "landed_at": t}


def duplicates(now: int) -> list[dict[str, Any]]:
    return [_rejected(now, "shopify:1", 2, 10), _rejected(now, "shopify:1", 2, 11),
            _rejected(now, "taobao:1", 1, 20), _rejected(now, "taobao:1", 1, 21)]


def _letter(now: int, channel: str | None, reason: str, offset: int) -> dict[str, Any]:
    t = ch_time(now - 5 * H)
    return {"step": "normalize", "reason": reason, "error_class": "DecodeError",
            "message": "m", "channel": channel, "source_topic": f"orders.raw.{channel}",
            "source_partition": 0, "source_offset": offset, "original_key_b64": None,
            "original_value_b64": "eA==", "failed_at": t, "landed_at": t}


def dead_letters(now: int) -> list[dict[str, Any]]:
    return [_letter(now, "shopify", "not_json", 1), _letter(now, "shopify", "not_json", 2),
            _letter(now, "shopify", "bad_amount", 3), _letter(now, "taobao", "unmapped_status", 1),
            _letter(now, None, "not_avro", 1)]


def _stock(now: int, kind: str, n: int, reason: str = "") -> dict[str, Any]:
    t = ch_time(now - 2 * H)
    return {"event_id": f"c{n}/{kind}", "kind": kind, "sku": "A", "warehouse": "sh",
            "reservation_id": f"r{n}", "order_id": "shopify:3", "quantity": 1, "on_hand": 10,
            "reserved": 4, "safety": 0, "available": 6, "reason": reason, "at": t,
            "landed_at": t}


def inventory_events(now: int) -> list[dict[str, Any]]:
    return [_stock(now, "RESERVED", 1), _stock(now, "RESERVE_REJECTED", 2, "insufficient_stock"),
            _stock(now, "RESERVE_REJECTED", 3, "insufficient_stock"),
            _stock(now, "RESERVE_REJECTED", 4, "not_in_preferred_warehouse"),
            _stock(now, "COMMIT_REJECTED", 5, "insufficient_stock")]


def _level(now: int, sku: str, warehouse: str, reserved: int, available: int, version: int,
           ) -> dict[str, Any]:
    t = ch_time(now - 1 * H)
    return {"sku": sku, "warehouse": warehouse, "on_hand": reserved + available,
            "reserved": reserved, "safety": 0, "available": available,
            "available_to_sell": available, "version": version, "at": t, "landed_at": t}


def inventory_levels(now: int) -> list[dict[str, Any]]:
    return [_level(now, "A", "sh", 4, 6, 2), _level(now, "A", "bj", 1, 9, 1),
            _level(now, "B", "sh", 0, 5, 1)]


def load_health_rows(client: ClickHouse, now: int) -> None:
    """Every table the views read, then the leftovers of at-least-once delivery."""
    tables = {
        names.TABLE_ORDER_EVENTS: order_events(now), names.TABLE_ORDER_STATES: order_states(now),
        names.TABLE_DUPLICATES: duplicates(now), names.TABLE_DEAD_LETTERS: dead_letters(now),
        names.TABLE_INVENTORY_EVENTS: inventory_events(now),
        names.TABLE_INVENTORY_LEVELS: inventory_levels(now)}
    for table, rows in tables.items():
        client.insert_rows(table, rows, dedup_token=f"first-{table}")
    again = {
        names.TABLE_ORDER_EVENTS: [r for r in order_events(now) if r["event_id"] == "shopify:4#1"],
        names.TABLE_DUPLICATES: duplicates(now)[:1],
        names.TABLE_DEAD_LETTERS: dead_letters(now)[:1],
        names.TABLE_INVENTORY_EVENTS: inventory_events(now)[1:2],
        # Older versions, landing after the newer ones.
        names.TABLE_ORDER_STATES: [_state(now, "shopify:3", "PENDING_PAYMENT", False, -2)],
        names.TABLE_INVENTORY_LEVELS: [_level(now, "A", "sh", 0, 10, 1)]}
    for table, rows in again.items():
        client.insert_rows(table, rows, dedup_token=f"again-{table}")


# --- the expected figures ----------------------------------------------------------------
EXPECTED: dict[str, list[dict[str, Any]]] = {
    # Backlog: shopify:3 and shopify:4 are PAID. Shipped in the last 7 days after an
    # earlier state: shopify:1 (-51 h), shopify:2 (-34 h), taobao:1 (-38 h), taobao:2
    # (-22 h) = 4; not shopify:5 (-216 h), pos:1 (born COMPLETED), usps (scans).
    # Capacity 4 / 7 = 0.5714 a day; backlog 2 / (4 / 7) = 3.5 days.
    names.VIEW_HEALTH_BACKLOG: [{"backlog_orders": 2, "shipped_orders": 4,
                                 "capacity_window_days": 7,
                                 "capacity_orders_per_day": pytest.approx(4 / 7),
                                 "backlog_days": pytest.approx(3.5)}],
    # Open: shopify 1 DELIVERED, 2 SHIPPED*, 3 PAID, 4 PAID* (4 open); taobao 1, 2*
    # SHIPPED (2 open); usps IN_TRANSIT (1). * = stuck. Rate = stuck / open of channel.
    names.VIEW_HEALTH_STUCK_RATE: [
        {"state": "DELIVERED", "channel": "shopify", "stuck_orders": 0, "open_in_state": 1,
         "open_orders": 4, "stuck_rate": 0.0},
        {"state": "PAID", "channel": "shopify", "stuck_orders": 1, "open_in_state": 2,
         "open_orders": 4, "stuck_rate": 0.25},
        {"state": "SHIPPED", "channel": "shopify", "stuck_orders": 1, "open_in_state": 1,
         "open_orders": 4, "stuck_rate": 0.25},
        {"state": "SHIPPED", "channel": "taobao", "stuck_orders": 1, "open_in_state": 2,
         "open_orders": 2, "stuck_rate": 0.5},
        {"state": "IN_TRANSIT", "channel": "usps", "stuck_orders": 0, "open_in_state": 1,
         "open_orders": 1, "stuck_rate": 0.0}],
    # Delays (s), less AUTO_CLOSED and FUTURE_EVENT_TIME. shopify: 21 values, eleven 1s,
    # four 2s, two 3s, one 4, two 5s, one 10: p50 h=10 -> 1; p95 h=19 -> 5.
    # taobao: [30 x5, 60 x3, 90, 120]: p50 h=4.5 -> 30 + .5 x 30 = 45;
    # p95 h=8.55 -> 90 + .55 x 30 = 106.5. pos [600]. usps [5, 15]: 10; 5 + .95 x 10.
    names.VIEW_HEALTH_STATE_DELAY: [
        {"channel": "pos", "events": 1, "p50_s": 600.0, "p95_s": 600.0},
        {"channel": "shopify", "events": 21, "p50_s": 1.0, "p95_s": 5.0},
        {"channel": "taobao", "events": 10, "p50_s": 45.0, "p95_s": pytest.approx(106.5)},
        {"channel": "usps", "events": 2, "p50_s": 10.0, "p95_s": pytest.approx(14.5)}],
    # Accepted events (distinct ids, less AUTO_CLOSED): shopify 7+3+2+1+6+2+1 = 22,
    # taobao 5+3+2 = 10, pos 1, usps 2. Duplicates: shopify 2, taobao 2.
    names.VIEW_HEALTH_DUPLICATE_RATE: [
        {"channel": "pos", "accepted_events": 1, "duplicate_events": 0, "duplicate_rate": 0.0},
        {"channel": "shopify", "accepted_events": 22, "duplicate_events": 2,
         "duplicate_rate": pytest.approx(2 / 24)},
        {"channel": "taobao", "accepted_events": 10, "duplicate_events": 2,
         "duplicate_rate": pytest.approx(2 / 12)},
        {"channel": "usps", "accepted_events": 2, "duplicate_events": 0,
         "duplicate_rate": 0.0}],
    # Records with a verdict: shopify 22 + 2 + 3 = 27, taobao 10 + 2 + 1 = 13, unknown 1.
    names.VIEW_HEALTH_DEAD_LETTER_RATE: [
        {"channel": "shopify", "reason": "bad_amount", "dead_letters": 1,
         "channel_records": 27, "dead_letter_rate": pytest.approx(1 / 27)},
        {"channel": "shopify", "reason": "not_json", "dead_letters": 2,
         "channel_records": 27, "dead_letter_rate": pytest.approx(2 / 27)},
        {"channel": "taobao", "reason": "unmapped_status", "dead_letters": 1,
         "channel_records": 13, "dead_letter_rate": pytest.approx(1 / 13)},
        {"channel": "unknown", "reason": "not_avro", "dead_letters": 1,
         "channel_records": 1, "dead_letter_rate": 1.0}],
    # Two RESERVE_REJECTED (the third is a routing round), one COMMIT_REJECTED.
    names.VIEW_HEALTH_OVERSELL_PREVENTED: [
        {"reserve_rejected": 2, "commit_rejected": 1, "oversell_prevented": 3}],
    # A/sh version 2 (4 reserved, 6 available) beats the late version 1; + A/bj 1, 9
    # + B/sh 0, 5: 5 / 20.
    names.VIEW_HEALTH_PHANTOM_RESERVATIONS: [
        {"reserved_units": 5, "available_units": 20, "phantom_reservation_rate": 0.25}],
    # shopify:1 2 h = 7200 s, shopify:5 5 h = 18000 s: p50 h=.5 -> 12600,
    # p95 h=.95 -> 7200 + .95 x 10800 = 17460. taobao:1 10 h; taobao:3 has no request.
    names.VIEW_HEALTH_REFUND_TIME: [
        {"channel": "shopify", "refunded_orders": 2, "p50_s": pytest.approx(12600.0),
         "p95_s": pytest.approx(17460.0)},
        {"channel": "taobao", "refunded_orders": 1, "p50_s": 36000.0, "p95_s": 36000.0}],
    # shopify 20 h, 23 h, 60 h = [72000, 82800, 216000]: p50 82800, p95 h=1.9 ->
    # 82800 + .9 x 133200 = 202680; within 48 h: 2 of 3. taobao 10 h (taobao:1), 50 h
    # (taobao:2 from APPROVED) = [36000, 180000]: p50 108000, p95 36000 + .95 x 144000
    # = 172800; within: 1 of 2. pos:1 was never seen paid; usps are scans.
    names.VIEW_HEALTH_FULFILMENT_LEAD_TIME: [
        {"channel": "shopify", "shipped_orders": 3, "p50_s": pytest.approx(82800.0),
         "p95_s": pytest.approx(202680.0), "target_s": 172800,
         "within_target": pytest.approx(2 / 3)},
        {"channel": "taobao", "shipped_orders": 2, "p50_s": pytest.approx(108000.0),
         "p95_s": pytest.approx(172800.0), "target_s": 172800, "within_target": 0.5}],
    # Every order matches its state (shopify:7's latest event is the pipeline's own
    # close) except taobao:2, whose latest event (PENDING_PAYMENT) was quarantined.
    names.VIEW_HEALTH_CONSISTENCY: [
        {"channel": "pos", "orders": 1, "consistent_orders": 1, "consistency_index": 1.0},
        {"channel": "shopify", "orders": 7, "consistent_orders": 7, "consistency_index": 1.0},
        {"channel": "taobao", "orders": 3, "consistent_orders": 2,
         "consistency_index": pytest.approx(2 / 3)},
        {"channel": "usps", "orders": 1, "consistent_orders": 1, "consistency_index": 1.0}],
}


def read_view(client: ClickHouse, view: str) -> list[dict[str, Any]]:
    """A view's rows in a stable order (its own ORDER BY, or one row)."""
    return client.query_rows(f"SELECT * FROM {client.database}.{view} "
                             "SETTINGS output_format_json_quote_64bit_integers = 0")


# --- the tests ---------------------------------------------------------------------------
@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[EmbeddedClickHouse]:
    # Per test: chdb holds one data path per process, and the report command test
    # needs its own (closed) one for the subprocess.
    client = EmbeddedClickHouse(str(tmp_path / "chdb"), f"op_{uuid.uuid4().hex[:10]}")
    apply_ddl(client)
    apply_ddl(client)  # idempotent, views included
    load_health_rows(client, int(time.time()) * 1000)
    yield client
    client.close()


@pytest.mark.parametrize("view", list(EXPECTED))
def test_health_view_gives_the_hand_computed_figures(loaded: EmbeddedClickHouse,
                                                     view: str) -> None:
    assert read_view(loaded, view) == EXPECTED[view]


def test_report_carries_the_health_figures(loaded: EmbeddedClickHouse) -> None:
    report = build_report(loaded)
    health = report["health"]
    assert health["backlog"]["backlog_days"] == 3.5
    assert health["overall"] == {
        "backlog_days": 3.5,
        "stuck_rate": round(3 / 7, 4),  # 3 stuck of 7 open
        "duplicate_rate": round(4 / 39, 4),  # 4 of 35 accepted + 4
        "consistency_index": round(11 / 12, 4),
        "oversell_prevented": 3,
        "phantom_reservation_rate": 0.25}
    assert report["oversell_prevented"] == 3 and report["phantom_reservation_rate"] == 0.25
    assert health["fulfilment_lead_time"][0]["within_target"] == 0.6667
    text = render_text(report)
    assert "Order health: backlog 2 paid orders not shipped" in text
    assert "Dead letters by reason:" in text and "Consistency index" in text
    page = render_html(report)
    assert page.count("<table>") == 13 and "data:image/png;base64," in page
    assert render_png(report).startswith(b"\x89PNG\r\n\x1a\n")


def test_report_command_writes_json_html_and_png(tmp_path: Path) -> None:
    data_dir, database = tmp_path / "var", f"op_{uuid.uuid4().hex[:10]}"
    (data_dir / "chdb").mkdir(parents=True)
    client = EmbeddedClickHouse(str(data_dir / "chdb"), database)
    apply_ddl(client)
    load_health_rows(client, int(time.time()) * 1000)
    client.close()
    env = {k: v for k, v in os.environ.items() if k not in ("CLICKHOUSE_URL",)}
    env.update(ORDERPULSE_DATA_DIR=str(data_dir), CLICKHOUSE_DATABASE=database)
    page, image = tmp_path / "report.html", tmp_path / "health.png"
    done = subprocess.run([sys.executable, "-m", "orderpulse.cli", "report", "--json",
                           "--html", str(page), "--png", str(image)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    health = json.loads(done.stdout)["health"]
    assert health["consistency"][2] == {"channel": "taobao", "orders": 3,
                                        "consistent_orders": 2, "consistency_index": 0.6667}
    assert "<h2>Stuck orders by state and channel" in page.read_text(encoding="utf-8")
    assert image.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
