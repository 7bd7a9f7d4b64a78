"""The run report, read back from ClickHouse: what landed, by channel and status,
what was dead-lettered, with reasons, where the stock stands, and the order-health
figures of the ``health_*`` views (docs/health-metrics.md). Printed as text or
JSON; ``render_html`` / ``render_png`` make the snapshots ``report --html/--png`` save.
"""

from __future__ import annotations

import base64
import html
import io
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from orderpulse import names
from orderpulse.clickhouse import ClickHouse, apply_ddl, connect
from orderpulse.settings import Settings

# Report key -> (view, sort columns; () = a one-row view, reported as one dict).
HEALTH_VIEWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "backlog": (names.VIEW_HEALTH_BACKLOG, ()),
    "stuck_rate": (names.VIEW_HEALTH_STUCK_RATE, ("channel", "state")),
    "state_delay": (names.VIEW_HEALTH_STATE_DELAY, ("channel",)),
    "duplicate_rate": (names.VIEW_HEALTH_DUPLICATE_RATE, ("channel",)),
    "dead_letter_rate": (names.VIEW_HEALTH_DEAD_LETTER_RATE, ("channel", "reason")),
    "oversell_prevented": (names.VIEW_HEALTH_OVERSELL_PREVENTED, ()),
    "phantom_reservations": (names.VIEW_HEALTH_PHANTOM_RESERVATIONS, ()),
    "refund_time": (names.VIEW_HEALTH_REFUND_TIME, ("channel",)),
    "fulfilment_lead_time": (names.VIEW_HEALTH_FULFILMENT_LEAD_TIME, ("channel",)),
    "consistency": (names.VIEW_HEALTH_CONSISTENCY, ("channel",)),
}
# 64-bit integers as JSON numbers whatever the server's default.
_JSON_NUMBERS = " SETTINGS output_format_json_quote_64bit_integers = 0"


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
    health = health_figures(client)
    return {
        **inventory_figures(client, health),
        "events": int(totals["events"]),
        "orders": int(totals["orders"]),
        "future_events": int(totals["future_events"]),
        "landed_between": [totals["first_landed"], totals["last_landed"]],
        "events_by_channel_status": by_channel_status,
        "orders_by_current_status": latest,
        "dead_letters": sum(int(r["records"]) for r in dead_rows),
        "dead_letters_by_reason": dead_rows,
        "event_to_landed_latency": latency,
        "health": health,
    }


def inventory_figures(client: ClickHouse, health: dict[str, Any]) -> dict[str, Any]:
    """Stock levels, the ledger by kind, and the checks a reader can redo by hand
    (the oversell and phantom-reservation figures are the health views')."""
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
    return {
        "stock_by_warehouse": stock,
        "stock_ledger": kinds,
        "oversell_prevented": health["oversell_prevented"]["oversell_prevented"],
        "oversold_records": count.get("OVERSOLD", 0),
        "out_of_stock_orders": count.get("OUT_OF_STOCK", 0) + count.get("BACKORDERED", 0),
        "reservations_expired": count.get("EXPIRED", 0),
        # Stock held by unpaid orders, per unit still sellable.
        "phantom_reservation_rate": health["phantom_reservations"]["phantom_reservation_rate"],
        "negative_available_rows": sum(int(r["negative"]) for r in stock),
    }


def health_figures(client: ClickHouse) -> dict[str, Any]:
    """Every health view as read (floats rounded to 4 places), and the overall
    figures across channels (``overall``: each a ratio of the views' sums)."""
    figures: dict[str, Any] = {}
    for key, (view, order) in HEALTH_VIEWS.items():
        sql = f"SELECT * FROM {client.database}.{view}"
        if order:
            sql += f" ORDER BY {', '.join(order)}"
        rows = [{k: _round(v) for k, v in r.items()}
                for r in client.query_rows(sql + _JSON_NUMBERS)]
        figures[key] = rows if order else rows[0]
    figures["overall"] = _overall(figures)
    return figures


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _ratio(rows: list[dict[str, Any]], part: str, *whole: str) -> float | None:
    """sum(part) / sum(whole columns) over rows; None when the whole is 0."""
    total = sum(r[w] for r in rows for w in whole)
    return round(sum(r[part] for r in rows) / total, 4) if total else None


def _overall(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "backlog_days": h["backlog"]["backlog_days"],
        "stuck_rate": _ratio(h["stuck_rate"], "stuck_orders", "open_in_state"),
        "duplicate_rate": _ratio(h["duplicate_rate"], "duplicate_events", "accepted_events",
                                 "duplicate_events"),
        "consistency_index": _ratio(h["consistency"], "consistent_orders", "orders"),
        "oversell_prevented": h["oversell_prevented"]["oversell_prevented"],
        "phantom_reservation_rate": h["phantom_reservations"]["phantom_reservation_rate"],
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


# (title, health key, columns): the health tables, in the order they are shown.
HEALTH_TABLES: list[tuple[str, str, list[str]]] = [
    ("Stuck orders by state and channel (stuck in the state / open orders of the channel)",
     "stuck_rate", ["channel", "state", "stuck_orders", "open_in_state", "open_orders",
                    "stuck_rate"]),
    ("State delay, channel event time to processed (seconds)", "state_delay",
     ["channel", "events", "p50_s", "p95_s"]),
    ("Duplicate rate by channel (duplicates / (accepted events + duplicates))",
     "duplicate_rate", ["channel", "accepted_events", "duplicate_events", "duplicate_rate"]),
    ("Dead-letter rate by channel and reason (dead letters / the channel's records)",
     "dead_letter_rate", ["channel", "reason", "dead_letters", "channel_records",
                          "dead_letter_rate"]),
    ("Refund processing time, requested to refunded (seconds)", "refund_time",
     ["channel", "refunded_orders", "p50_s", "p95_s"]),
    ("Fulfilment lead time, paid to shipped (seconds; within_target: share within target_s)",
     "fulfilment_lead_time", ["channel", "shipped_orders", "p50_s", "p95_s", "target_s",
                              "within_target"]),
    ("Consistency index (channel's latest status = pipeline state)", "consistency",
     ["channel", "orders", "consistent_orders", "consistency_index"]),
]


def _summary_line(report: dict[str, Any]) -> str:
    return (f"orderpulse report: {report['events']} normalized events for {report['orders']} "
            f"orders; {report['dead_letters']} dead letters (all runs in this data directory, "
            f"landed {report['landed_between'][0]} .. {report['landed_between'][1]} UTC)")


def _health_line(health: dict[str, Any]) -> str:
    b, o = health["backlog"], health["overall"]
    return (f"Order health: backlog {b['backlog_orders']} paid orders not shipped / capacity "
            f"{b['capacity_orders_per_day']} orders a day (last {b['capacity_window_days']} "
            f"days) = {b['backlog_days']} days; stuck rate {o['stuck_rate']}; duplicate rate "
            f"{o['duplicate_rate']}; consistency index {o['consistency_index']}; oversell "
            f"attempts prevented {o['oversell_prevented']}; phantom-reservation rate "
            f"{o['phantom_reservation_rate']}")


def _stock_line(report: dict[str, Any]) -> str:
    return (f"Stock (inventory_levels): oversell attempts prevented "
            f"{report['oversell_prevented']}, oversold records {report['oversold_records']}, "
            f"out-of-stock orders {report['out_of_stock_orders']}, reservations expired "
            f"{report['reservations_expired']}, phantom-reservation rate "
            f"{report['phantom_reservation_rate']}, rows below zero "
            f"{report['negative_available_rows']}")


def _sections(report: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]], list[str]]]:
    """(title, rows, columns) of every table, in the order text and HTML show them."""
    health = report["health"]
    return [
        ("Orders by current status", report["orders_by_current_status"],
         ["channel", "status", "orders"]),
        ("Events by channel and status", report["events_by_channel_status"],
         ["channel", "status", "events", "orders"]),
        ("Dead letters by reason", report["dead_letters_by_reason"],
         ["step", "reason", "records", "example"]),
        ("Stock by warehouse (inventory_levels FINAL)", report["stock_by_warehouse"],
         ["warehouse", "skus", "on_hand", "reserved", "safety", "available"]),
        ("Stock ledger (inventory_events) by kind", report["stock_ledger"],
         ["kind", "entries", "units"]),
        ("Latency, channel event time to ClickHouse row (seconds)",
         report["event_to_landed_latency"], ["channel", "p50_s", "p99_s"]),
        *((title, health[key], columns) for title, key, columns in HEALTH_TABLES),
    ]


def render_text(report: dict[str, Any]) -> str:
    """The report as a terminal table."""
    lines = [_summary_line(report), _health_line(report["health"]), _stock_line(report)]
    for title, rows, columns in _sections(report):
        lines += ["", f"{title}:", *_table(rows, columns)]
    return "\n".join(lines)


def render_png(report: dict[str, Any]) -> bytes:
    """The health figures as charts, one panel per view with rows by channel."""
    from matplotlib.figure import Figure  # imported here: only snapshots need it

    health = report["health"]
    fig = Figure(figsize=(14, 10), layout="constrained")
    fig.suptitle(_health_line(health), wrap=True, fontsize=9)
    panels = fig.subplots(3, 2).flat
    hours = 1 / 3600
    _bars(next(panels), "Stuck rate by channel", _by_channel(health["stuck_rate"], "stuck_rate"))
    _bars(next(panels), "Duplicate rate by channel",
          _by_channel(health["duplicate_rate"], "duplicate_rate"))
    _bars(next(panels), "Dead-letter rate by channel (all reasons)",
          _by_channel(health["dead_letter_rate"], "dead_letter_rate"))
    _bars(next(panels), "Consistency index by channel",
          _by_channel(health["consistency"], "consistency_index"))
    _bars(next(panels), "Fulfilment lead time p50 / p95 (hours; line: target)",
          _by_channel(health["fulfilment_lead_time"], "p50_s", hours),
          _by_channel(health["fulfilment_lead_time"], "p95_s", hours),
          target=48.0)
    _bars(next(panels), "Refund time p50 / p95 (hours)",
          _by_channel(health["refund_time"], "p50_s", hours),
          _by_channel(health["refund_time"], "p95_s", hours))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _by_channel(rows: list[dict[str, Any]], column: str, scale: float = 1.0) -> dict[str, float]:
    """column summed per channel (the stuck and dead-letter rates add up over their rows)."""
    out: dict[str, float] = {}
    for r in rows:
        out[r["channel"]] = out.get(r["channel"], 0.0) + (r[column] or 0.0) * scale
    return out


def _bars(ax: Any, title: str, first: dict[str, float], second: dict[str, float] | None = None,
          target: float | None = None) -> None:
    ax.set_title(title, fontsize=10)
    channels = sorted(first)
    if not channels:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    width = 0.4 if second is not None else 0.8
    xs = range(len(channels))
    ax.bar([x - (width / 2 if second is not None else 0) for x in xs],
           [first[c] for c in channels], width, label="p50")
    if second is not None:
        ax.bar([x + width / 2 for x in xs], [second.get(c, 0.0) for c in channels], width,
               label="p95")
        ax.legend(fontsize=8)
    if target is not None:
        ax.axhline(target, linestyle="--", color="grey")
    ax.set_xticks(list(xs), channels, rotation=30, fontsize=8)


def render_html(report: dict[str, Any]) -> str:
    """A self-contained page: the summary, the charts (inline PNG) and every table."""
    chart = base64.b64encode(render_png(report)).decode()
    parts = [f"<h1>orderpulse report</h1><p>{html.escape(_summary_line(report))}</p>",
             f"<p>{html.escape(_health_line(report['health']))}</p>",
             f"<p>{html.escape(_stock_line(report))}</p>",
             f'<img alt="order health charts" src="data:image/png;base64,{chart}">']
    for title, rows, columns in _sections(report):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in columns)
                       + "</tr>" for r in rows)
        body = body or f'<tr><td colspan="{len(columns)}">(none)</td></tr>'
        parts.append(f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%}")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>orderpulse report'
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def run_report(settings: Settings, *, as_json: bool, html_path: Path | None = None,
               png_path: Path | None = None, out: TextIO = sys.stdout) -> int:
    """``orderpulse report``: print the report; save the HTML / PNG snapshots asked for."""
    client = connect(settings)
    try:
        apply_ddl(client)  # also (re)creates the views over an older data directory
        data = build_report(client)
    finally:
        client.close()
    print(json.dumps(data, indent=2) if as_json else render_text(data), file=out)
    if html_path is not None:
        html_path.write_text(render_html(data), encoding="utf-8")
    if png_path is not None:
        png_path.write_bytes(render_png(data))
    return 0
