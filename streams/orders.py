"""The order step: one normalized event (or one tick) against its order's record,
as the messages to send. Pure: the agent holds the table and sends.

Outputs are ``(topic base name, key, value)``; the agent maps base names to the
run's concrete topics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.streams.channels.common import Context, build
from orderpulse.streams.lifecycle import Limits, Outcome, apply, check_stuck

Output = tuple[str, bytes, bytes]
AUTO_CLOSE = "orderpulse:auto_close_unpaid"


@dataclass
class StepOut:
    record: dict[str, Any] | None
    outputs: list[Output] = field(default_factory=list)
    duplicate: bool = False
    quarantined: int = 0
    alerts_raised: int = 0
    alerts_resolved: int = 0


def _state(record: dict[str, Any], now_ms: int) -> bytes:
    return codec("OrderState").encode({
        "order_id": record["order_id"], "channel": record["channel"],
        "status": record["status"], "refund_status": record["refund_status"],
        "status_since": record["status_since"], "last_event_time": record["last_event_time"],
        "event_count": len(record["history"]), "stuck": bool(record.get("alert")),
        "updated_at": now_ms})


def _alert(kind: str, alert: dict[str, Any], now_ms: int) -> bytes:
    return codec("OrderAlert").encode({
        "kind": kind, "order_id": alert["order_id"], "channel": alert["channel"],
        "state": alert["state"], "since": alert["since"], "limit_ms": alert["limit_ms"],
        "stuck_for_ms": max(now_ms - alert["since"], 0), "at": now_ms})


def _rejected(reason: str, event: dict[str, Any], encoded: bytes, now_ms: int,
              from_status: str | None = None) -> bytes:
    t = event["event_time"]
    return codec("RejectedEvent").encode({
        "reason": reason, "order_id": event["order_id"], "channel": event["channel"],
        "event_id": event["event_id"], "event_type": event["event_type"],
        "from_status": from_status, "to_status": event["status"], "event_time": t,
        "event": encoded, "at": now_ms})


def on_event(record: dict[str, Any] | None, event: dict[str, Any], encoded: bytes, *,
             window_ms: int, now_ms: int, source: str = "") -> StepOut:
    """A normalized event: deduplicate, apply, and say what to publish."""
    key = event["order_id"].encode()
    outcome: Outcome = apply(record, event, window_ms=window_ms, source=source)
    if outcome.replay:
        return StepOut(None, [(names.TOPIC_NORMALIZED, key, encoded),
                              (names.TOPIC_STATE, key, _state(outcome.record, now_ms))])
    if outcome.duplicate:
        return StepOut(None, [(names.TOPIC_DUPLICATES, key,
                               _rejected("duplicate", event, encoded, now_ms))], duplicate=True)
    out = StepOut(outcome.record, [(names.TOPIC_NORMALIZED, key, encoded)])
    for q in outcome.quarantined:
        out.outputs.append((names.TOPIC_QUARANTINE, key, _rejected(
            "impossible_transition", event, encoded, now_ms, from_status=q["from"])))
    out.quarantined = len(outcome.quarantined)
    if outcome.resolved_alert is not None:
        out.outputs.append((names.TOPIC_ALERTS, key,
                            _alert("RESOLVED", outcome.resolved_alert, now_ms)))
        out.alerts_resolved = 1
    if outcome.state_changed:
        out.outputs.append((names.TOPIC_STATE, key, _state(outcome.record, now_ms)))
    return out


def _auto_close_event(record: dict[str, Any], now_ms: int) -> dict[str, Any]:
    channel, order_id = record["channel"], record["order_id"]
    raw = {"shop_id": "", "received_at": now_ms, "request_id": AUTO_CLOSE,
           "source_event_id": None}
    return build(raw, Context(now_ms), channel=channel,
                 channel_order_id=order_id.split(":", 1)[-1], order_id=order_id,
                 event_type="CANCELLED", status="CANCELLED", raw_status=AUTO_CLOSE,
                 event_time=now_ms, source_tz="UTC", currency="XXX", total_minor=0,
                 flags=["AUTO_CLOSED"])


def on_tick(records: Iterable[tuple[str, dict[str, Any]]], *, now_ms: int, limits: Limits,
            window_ms: int) -> list[tuple[str, StepOut]]:
    """Stuck checks for the orders of one partition: what changed, what to publish."""
    changed: list[tuple[str, StepOut]] = []
    for key, record in records:
        check = check_stuck(record, now_ms, limits)
        if check.auto_close:
            event = _auto_close_event(record, now_ms)
            changed.append((key, on_event(record, event, codec("OrderEvent").encode(event),
                                          window_ms=window_ms, now_ms=now_ms)))
        elif check.alert is not None:
            updated = {**record, "alert": check.alert}
            changed.append((key, StepOut(updated, [
                (names.TOPIC_ALERTS, key.encode(), _alert("RAISED", check.alert, now_ms)),
                (names.TOPIC_STATE, key.encode(), _state(updated, now_ms))],
                alerts_raised=1)))
    return changed
