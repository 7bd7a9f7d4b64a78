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
from orderpulse.catalog import Catalog
from orderpulse.streams import allocation
from orderpulse.streams.channels.common import Context, build
from orderpulse.streams.lifecycle import RANK, Limits, Outcome, apply, check_stuck

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
    stock_alert: str | None = None  # OUT_OF_STOCK, BACKORDERED, PAID_WITHOUT_STOCK


@dataclass(frozen=True)
class StockRules:
    """How orders take stock: the catalogue and the policies (from settings)."""

    catalog: Catalog
    policy: str = "nearest"
    out_of_stock: str = "reject"
    hold_ms: int = 45 * 60_000
    resend_ms: int = 30_000

    def ctx(self, now_ms: int, partition: int) -> allocation.Ctx:
        return allocation.Ctx(now_ms, partition, self.hold_ms, self.policy, self.out_of_stock)


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


def _stock_outputs(out: StepOut, record: dict[str, Any], alloc: allocation.AllocOut,
                   now_ms: int) -> StepOut:
    """Fold an allocation step into the order step's result."""
    if alloc.changed:
        out.record = {**record, "alloc": alloc.alloc}
    command = codec("InventoryCommand")
    for cmd in alloc.commands:
        out.outputs.append((names.TOPIC_INV_COMMANDS, cmd["sku"].encode(), command.encode(cmd)))
    key = record["order_id"].encode()
    for ev in alloc.events:
        out.outputs.append((names.TOPIC_INV_EVENTS, key, codec("InventoryEvent").encode(ev)))
    if alloc.alert:
        out.stock_alert = alloc.alert
        alert = {"order_id": record["order_id"], "channel": record["channel"],
                 "state": alloc.alert, "since": now_ms, "limit_ms": 0}
        out.outputs.append((names.TOPIC_ALERTS, key, _alert("RAISED", alert, now_ms)))
        out.alerts_raised += 1
    return out


def with_stock(out: StepOut, event: dict[str, Any], rules: StockRules, *, now_ms: int,
               partition: int) -> StepOut:
    """After an applied event: what the order's stock must do (reserve, commit, release...)."""
    if out.record is None:
        return out
    record = out.record
    alloc = allocation.settle(record.get("alloc"), record, event, RANK.get(record["status"], 0),
                              rules.catalog, rules.ctx(now_ms, partition))
    return _stock_outputs(out, record, alloc, now_ms)


def on_reply(record: dict[str, Any] | None, reply: dict[str, Any], rules: StockRules, *,
             now_ms: int, partition: int) -> StepOut:
    """A SKU partition answered one of this order's stock commands."""
    if record is None:
        # An answer for an order this partition does not know (never expected):
        # a reservation nobody holds is given back rather than left to expire.
        record = {"order_id": reply["order_id"], "channel": "unknown", "status": "CANCELLED"}
    alloc = allocation.on_reply(record.get("alloc"), record, reply,
                                RANK.get(record["status"], 0), rules.catalog,
                                rules.ctx(now_ms, partition))
    out = _stock_outputs(StepOut(None), record, alloc, now_ms)
    if out.record is not None and "history" not in out.record:
        out.record = None
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
            window_ms: int, rules: StockRules | None = None,
            partition: int = 0) -> list[tuple[str, StepOut]]:
    """Stuck checks for the orders of one partition: what changed, what to publish."""
    changed: list[tuple[str, StepOut]] = []
    for key, record in records:
        check = check_stuck(record, now_ms, limits)
        if rules is not None and record.get("alloc"):
            resent = allocation.resend(record["alloc"], record["order_id"],
                                       rules.ctx(now_ms, partition), rules.resend_ms)
            if resent.commands:
                changed.append((key, _stock_outputs(StepOut(None), record, resent, now_ms)))
                record = changed[-1][1].record or record
        if check.auto_close:
            event = _auto_close_event(record, now_ms)
            out = on_event(record, event, codec("OrderEvent").encode(event),
                           window_ms=window_ms, now_ms=now_ms)
            if rules is not None:
                out = with_stock(out, event, rules, now_ms=now_ms, partition=partition)
            changed.append((key, out))
        elif check.alert is not None:
            updated = {**record, "alert": check.alert}
            changed.append((key, StepOut(updated, [
                (names.TOPIC_ALERTS, key.encode(), _alert("RAISED", check.alert, now_ms)),
                (names.TOPIC_STATE, key.encode(), _state(updated, now_ms))],
                alerts_raised=1)))
    return changed
