"""The report's health part renders from plain data, empty data included (a
fresh database: no rows in the per-channel views, NULL ratios)."""

from __future__ import annotations

from typing import Any

from orderpulse.report import _overall, render_html, render_png, render_text


def _health(**rows: list[dict[str, Any]]) -> dict[str, Any]:
    health: dict[str, Any] = {
        "backlog": {"backlog_orders": 0, "shipped_orders": 0, "capacity_window_days": 7,
                    "capacity_orders_per_day": 0.0, "backlog_days": None},
        "oversell_prevented": {"reserve_rejected": 0, "commit_rejected": 0,
                               "oversell_prevented": 0},
        "phantom_reservations": {"reserved_units": 0, "available_units": 0,
                                 "phantom_reservation_rate": None},
        **{key: rows.get(key, []) for key in (
            "stuck_rate", "state_delay", "duplicate_rate", "dead_letter_rate", "refund_time",
            "fulfilment_lead_time", "consistency")},
    }
    health["overall"] = _overall(health)
    return health


def _report(health: dict[str, Any]) -> dict[str, Any]:
    return {"events": 0, "orders": 0, "future_events": 0, "landed_between": [None, None],
            "events_by_channel_status": [], "orders_by_current_status": [],
            "dead_letters": 0, "dead_letters_by_reason": [], "event_to_landed_latency": [],
            "stock_by_warehouse": [], "stock_ledger": [], "oversell_prevented": 0,
            "oversold_records": 0, "out_of_stock_orders": 0, "reservations_expired": 0,
            "phantom_reservation_rate": None, "negative_available_rows": 0, "health": health}


def test_overall_figures_are_ratios_of_sums_and_none_without_data() -> None:
    assert _overall(_health())["stuck_rate"] is None
    health = _health(
        stuck_rate=[{"stuck_orders": 1, "open_in_state": 2}, {"stuck_orders": 0,
                                                               "open_in_state": 2}],
        duplicate_rate=[{"accepted_events": 9, "duplicate_events": 1},
                        {"accepted_events": 0, "duplicate_events": 0}],
        consistency=[{"orders": 3, "consistent_orders": 2}, {"orders": 1,
                                                             "consistent_orders": 1}])
    assert health["overall"] == {"backlog_days": None, "stuck_rate": 0.25,
                                 "duplicate_rate": 0.1, "consistency_index": 0.75,
                                 "oversell_prevented": 0, "phantom_reservation_rate": None}


def test_an_empty_report_renders_as_text_html_and_png() -> None:
    report = _report(_health())
    text = render_text(report)
    assert "= None days" in text and text.count("(none)") == 13
    page = render_html(report)
    assert page.startswith("<!doctype html>") and page.count("(none)") == 13
    assert render_png(report).startswith(b"\x89PNG\r\n\x1a\n")


def test_html_escapes_what_came_from_the_data() -> None:
    health = _health(dead_letter_rate=[{"channel": "<script>", "reason": "a&b",
                                        "dead_letters": 1, "channel_records": 1,
                                        "dead_letter_rate": 1.0}])
    page = render_html(_report(health))
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page
