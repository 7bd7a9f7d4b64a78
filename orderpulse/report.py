"""The run report, read back from ClickHouse: what landed, by channel and status,
what was dead-lettered, with reasons, and where the stock stands.
"""

from __future__ import annotations

from typing import Any

from orderpulse import names
from orderpulse.clickhouse import ClickHouse


def build_report(client: ClickHouse) -> dict[str, Any]:
    """Figures as plain data (``orderpulse report --json`` prints exactly this)."""
    db = client.database
    events = f"{db}.{names.TABLE_ORDER_EVENTS}"
    dead = f"{db}.{names.TABLE_DEAD_LETTERS}"
    # FINAL: at-least-once delivery may have landed a copy that a merge has not
    # collapsed yet; the report counts each event once.
    totals = client.query_rows(
        f"SELECT count() AS events, uniqExact(order_id) AS orders, "
        f"countIf(event_time > landed_at) AS future_events, "
        f"toString(min(landed_at)) AS first_landed, toString(max(landed_at)) AS last_landed "
        f"FROM {events} FINAL")[0]
    by_channel_status = client.query_rows(
        f"SELECT channel, status, count() AS events, uniqExact(order_id) AS orders "
        f"FROM {events} FINAL GROUP BY channel, status ORDER BY channel, status")
    latest = client.query_rows(
        f"SELECT channel, status, count() AS orders FROM ("
        f"SELECT channel, order_id, argMax(status, (event_time, processed_at)) AS status "
        f"FROM {events} FINAL GROUP BY channel, order_id) "
        f"GROUP BY channel, status ORDER BY channel, status")
    dead_rows = client.query_rows(
        f"SELECT step, reason, count() AS records, any(message) AS example "
        f"FROM {dead} FINAL GROUP BY step, reason ORDER BY records DESC, step, reason")
    delay = "dateDiff('millisecond', event_time, landed_at)"
    latency = client.query_rows(
        f"SELECT channel, "
        f"round(quantile(0.5)({delay}) / 1000, 3) AS p50_s, "
        f"round(quantile(0.99)({delay}) / 1000, 3) AS p99_s "
        f"FROM {events} FINAL GROUP BY channel ORDER BY channel")
    return {
        **inventory_figures(client),
        "events": int(totals["events"]),
        "orders": int(totals["orders"]),
        "future_events": int(totals["future_events"]),
        "landed_between": [totals["first_landed"], totals["last_landed"]],
        "events_by_channel_status": by_channel_status,
        "orders_by_current_status": latest,
        "dead_letters": sum(int(r["records"]) for r in dead_rows),
        "dead_letters_by_reason": dead_rows,
        "event_to_landed_latency": latency,
    }


def inventory_figures(client: ClickHouse) -> dict[str, Any]:
    """Stock levels, the ledger by kind, and the checks a reader can redo by hand."""
    db = client.database
    levels = f"{db}.{names.TABLE_INVENTORY_LEVELS}"
    ledger = f"{db}.{names.TABLE_INVENTORY_EVENTS}"
    stock = client.query_rows(
        f"SELECT warehouse, count() AS skus, sum(h) AS on_hand, sum(r) AS reserved, "
        f"sum(s) AS safety, sum(a) AS available, countIf(a < 0) AS negative FROM ("
        f"SELECT warehouse, on_hand AS h, reserved AS r, safety AS s, available AS a "
        f"FROM {levels} FINAL) GROUP BY warehouse ORDER BY warehouse")
    kinds = client.query_rows(
        f"SELECT kind, count() AS entries, sum(quantity) AS units FROM {ledger} FINAL "
        f"WHERE reason != 'not_in_preferred_warehouse' GROUP BY kind ORDER BY kind")
    count = {r["kind"]: int(r["entries"]) for r in kinds}
    reserved = sum(int(r["reserved"]) for r in stock)
    available = sum(int(r["available"]) for r in stock)
    return {
        "stock_by_warehouse": stock,
        "stock_ledger": kinds,
        "oversell_prevented": count.get("RESERVE_REJECTED", 0) + count.get("COMMIT_REJECTED", 0),
        "oversold_records": count.get("OVERSOLD", 0),
        "out_of_stock_orders": count.get("OUT_OF_STOCK", 0) + count.get("BACKORDERED", 0),
        "reservations_expired": count.get("EXPIRED", 0),
        # Stock held by unpaid orders, per unit still sellable.
        "phantom_reservation_rate": round(reserved / available, 4) if available > 0 else None,
        "negative_available_rows": sum(int(r["negative"]) for r in stock),
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    out = ["  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for r in rows:
        out.append("  " + "  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths,
                                                                         strict=True)))
    return out


def render_text(report: dict[str, Any]) -> str:
    """The report as a terminal table."""
    lines = [
        f"orderpulse report: {report['events']} normalized events for {report['orders']} "
        f"orders; {report['dead_letters']} dead letters (all runs in this data directory, "
        f"landed {report['landed_between'][0]} .. {report['landed_between'][1]} UTC)",
        "", "Orders by current status:",
        *_table(report["orders_by_current_status"], ["channel", "status", "orders"]),
        "", "Events by channel and status:",
        *_table(report["events_by_channel_status"], ["channel", "status", "events", "orders"]),
        "", "Dead letters by reason:",
        *_table(report["dead_letters_by_reason"], ["step", "reason", "records", "example"]),
        "", f"Stock (inventory_levels): oversell attempts prevented "
        f"{report['oversell_prevented']}, oversold records {report['oversold_records']}, "
        f"out-of-stock orders {report['out_of_stock_orders']}, reservations expired "
        f"{report['reservations_expired']}, phantom-reservation rate "
        f"{report['phantom_reservation_rate']}, rows below zero "
        f"{report['negative_available_rows']}",
        *_table(report["stock_by_warehouse"], ["warehouse", "skus", "on_hand", "reserved",
                                               "safety", "available"]),
        "", "Stock ledger (inventory_events) by kind:",
        *_table(report["stock_ledger"], ["kind", "entries", "units"]),
        "", "Latency, channel event time to ClickHouse row (seconds):",
        *_table(report["event_to_landed_latency"], ["channel", "p50_s", "p99_s"]),
    ]
    return "\n".join(lines)
