from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.streams.channels.common import event_id
from orderpulse.streams.lifecycle import (
    RANK,
    TRANSITIONS,
    Limits,
    Peak,
    apply,
    check_stuck,
    derive,
    is_stuck,
)

WINDOW = 48 * 3600 * 1000
T0 = 1_794_409_200_000
MIN = 60_000


def ev(status: str, t: int, etype: str = "STATE", refund: str = "NONE") -> dict[str, Any]:
    order = "taobao:1"
    return {"event_id": event_id(order, etype, t), "order_id": order, "channel": "taobao",
            "event_type": etype, "status": status, "refund_status": refund, "event_time": t}


def run(events: list[dict[str, Any]]):
    record, outcomes = None, []
    for e in events:
        out = apply(record, e, window_ms=WINDOW)
        record = out.record
        outcomes.append(out)
    return record, outcomes


def test_transitions_are_declared_for_every_status() -> None:
    assert set(TRANSITIONS) == set(RANK)
    assert "SHIPPED" in TRANSITIONS["PAID"]  # legitimate skip
    assert "CANCELLED" in TRANSITIONS["PENDING_PAYMENT"] and "CANCELLED" in TRANSITIONS["PAID"]
    assert "PENDING_PAYMENT" not in TRANSITIONS["DELIVERED"]
    assert TRANSITIONS["CANCELLED"] == {"CANCELLED"}


def test_retried_payment_callback_is_applied_once() -> None:
    paid = ev("PAID", T0 + MIN, "PAID")
    record, outs = run([ev("PENDING_PAYMENT", T0, "CREATED"), paid, dict(paid)])
    assert [o.duplicate for o in outs] == [False, False, True]
    assert [o.accepted for o in outs] == [True, True, False]
    assert record["status"] == "PAID" and len(record["history"]) == 2


def test_a_replayed_message_is_re_emitted_not_dropped() -> None:
    paid = ev("PAID", T0, "PAID")
    first = apply(None, paid, window_ms=WINDOW, source="raw/0/41")
    again = apply(first.record, paid, window_ms=WINDOW, source="raw/0/41")
    retry = apply(first.record, paid, window_ms=WINDOW, source="raw/0/57")
    assert (again.replay, again.duplicate) == (True, False)
    assert (retry.replay, retry.duplicate) == (False, True)
    assert again.record == first.record


def test_shipped_before_paid_ends_shipped() -> None:
    record, outs = run([ev("SHIPPED", T0 + 2 * MIN, "SHIPPED"), ev("PAID", T0 + MIN, "PAID")])
    assert record["status"] == "SHIPPED"
    assert not outs[1].quarantined  # an older event fills a gap, no backwards move
    assert [h["type"] for h in record["history"]] == ["SHIPPED", "PAID"]


def test_impossible_transition_is_quarantined_with_both_states() -> None:
    record, outs = run([ev("DELIVERED", T0, "DELIVERED"),
                        ev("PENDING_PAYMENT", T0 + MIN, "UPDATED")])
    assert record["status"] == "DELIVERED"
    [q] = outs[1].quarantined
    assert (q["from"], q["status"]) == ("DELIVERED", "PENDING_PAYMENT")


_FLOWS = [
    [("PENDING_PAYMENT", "CREATED"), ("PAID", "PAID"), ("SHIPPED", "SHIPPED"),
     ("DELIVERED", "DELIVERED"), ("COMPLETED", "COMPLETED")],
    [("PENDING_PAYMENT", "CREATED"), ("CANCELLED", "CANCELLED")],
    [("PENDING_PAYMENT", "CREATED"), ("PAID", "PAID"), ("CANCELLED", "CANCELLED")],
    [("PAID", "STATE"), ("SHIPPED", "STATE"), ("SHIPPED", "UPDATED"), ("COMPLETED", "STATE")],
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_FLOWS), st.data())
def test_any_interleaving_and_duplication_gives_the_same_final_state(flow, data) -> None:
    events = [ev(status, T0 + i * MIN, etype) for i, (status, etype) in enumerate(flow)]
    reference, _ = run(events)
    copies = data.draw(st.lists(st.sampled_from(events), max_size=len(events) * 2))
    shuffled = data.draw(st.permutations(events + copies))
    record, outs = run(shuffled)
    assert (record["status"], record["refund_status"]) == \
        (reference["status"], reference["refund_status"])
    assert sum(o.accepted for o in outs) == len(events)
    assert derive(record["history"])[0]["status"] == reference["status"]


def test_unpaid_order_auto_closes_after_its_limit() -> None:
    record, _ = run([ev("PENDING_PAYMENT", T0, "CREATED")])
    assert check_stuck(record, T0 + 29 * MIN, Limits()).alert is None
    check = check_stuck(record, T0 + 31 * MIN, Limits())
    assert check.auto_close and check.alert["state"] == "PENDING_PAYMENT"


def test_stuck_alert_fires_once_and_resolves_when_the_order_moves() -> None:
    record, _ = run([ev("PAID", T0, "PAID")])
    check = check_stuck(record, T0 + 5 * 3600 * 1000, Limits())
    assert check.alert and not check.auto_close
    record = {**record, "alert": check.alert}
    assert is_stuck(record)
    assert check_stuck(record, T0 + 6 * 3600 * 1000, Limits()).alert is None  # once
    out = apply(record, ev("SHIPPED", T0 + 6 * 3600 * 1000, "SHIPPED"), window_ms=WINDOW)
    assert out.resolved_alert == check.alert and out.record["alert"] is None


def test_peak_calendar_scales_limits() -> None:
    record, _ = run([ev("PAID", T0, "PAID")])
    peak = Limits(peaks=(Peak(T0, T0 + 86400_000, 1.5),))
    assert check_stuck(record, T0 + 5 * 3600 * 1000, peak).alert is None  # 5h < 6h
    assert check_stuck(record, T0 + 6 * 3600 * 1000 + 1, peak).alert is not None


def test_dedup_state_is_bounded_by_the_window() -> None:
    events = [ev("PAID", T0 + i * 3600_000, "STATE") for i in range(200)]
    record, _ = run(events)
    assert len(record["seen"]) <= 49
    assert len(record["history"]) <= 64
