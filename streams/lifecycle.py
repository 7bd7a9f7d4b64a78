"""One truth per order: deduplication, the enforced lifecycle, stuck detection.

Pure functions over an order's record (a JSON-able dict kept in a Faust table
keyed by unified order id, partitioned with the order's events):

- ``apply`` takes one normalized event: a duplicate (same event id, or same
  order + type + the channel's own event time, within the window) is counted
  and recorded, never applied twice; otherwise the event joins the order's
  history and the state is re-derived from the history *sorted by event time*,
  so replaying the same events in any order gives the same final state. A
  transition the table does not allow is quarantined, not applied.
- ``check_stuck`` says whether an open order has sat in its state past the
  limit (scaled for declared peak periods), so a timer can alert without any
  new event for that order; an alert is remembered on the record, so it fires
  once, survives restarts and is resolved when the order moves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Lifecycle order: later states rank higher. CANCELLED is terminal and reachable
# from any state before completion.
RANK: dict[str, int] = {
    "PENDING_PAYMENT": 0, "PAID": 1, "APPROVED": 2, "PACKING": 3, "SHIPPED": 4,
    "IN_TRANSIT": 5, "DELIVERED": 6, "COMPLETED": 7, "CANCELLED": 8,
}
FINAL = frozenset({"COMPLETED", "CANCELLED"})

# Allowed transitions, as data: forward moves (skips included: paid straight to
# shipped), staying put (updates, polled states), and cancellation before
# completion (unpaid close, refund before shipping, full refund after it).
TRANSITIONS: dict[str, frozenset[str]] = {
    status: frozenset(
        {s for s, r in RANK.items() if r >= rank and s != "CANCELLED"}
        | ({"CANCELLED"} if status != "COMPLETED" else set())
        | ({status})
    )
    for status, rank in RANK.items() if status != "CANCELLED"
}
TRANSITIONS["CANCELLED"] = frozenset({"CANCELLED"})

#: How many events an order keeps (beyond: the oldest are dropped from history).
HISTORY_LIMIT = 64

#: Default stuck limits in seconds, per state (issue: defaults from practice).
DEFAULT_LIMITS_S: dict[str, float] = {
    "PENDING_PAYMENT": 30 * 60,  # then auto-close and release the reservation
    "PAID": 4 * 3600,  # paid but not shipped
    "APPROVED": 2 * 3600,
    "PACKING": 3600,
    "SHIPPED": 24 * 3600,  # shipped but no carrier scan
    "IN_TRANSIT": 7 * 86400,
    "DELIVERED": 10 * 86400,  # buyer confirmation; per channel rule below
}
#: Per channel overrides of the DELIVERED limit (channel auto-confirm rules).
CHANNEL_DELIVERED_S: dict[str, float] = {"taobao": 10 * 86400, "jd": 7 * 86400,
                                         "pinduoduo": 15 * 86400, "douyin": 15 * 86400}


@dataclass(frozen=True)
class Peak:
    """A declared promotion: limits are multiplied by ``factor`` between start and end."""

    start_ms: int
    end_ms: int
    factor: float


@dataclass(frozen=True)
class Limits:
    per_state_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LIMITS_S))
    peaks: tuple[Peak, ...] = ()

    def limit_ms(self, state: str, channel: str, now_ms: int) -> int | None:
        base = self.per_state_s.get(state)
        if state == "DELIVERED" and channel in CHANNEL_DELIVERED_S:
            base = CHANNEL_DELIVERED_S[channel]
        if base is None:
            return None
        factor = max((p.factor for p in self.peaks if p.start_ms <= now_ms < p.end_ms),
                     default=1.0)
        return int(base * factor * 1000)


@dataclass
class Outcome:
    """What applying one event produced."""

    record: dict[str, Any]
    duplicate: bool = False
    replay: bool = False  # the same source message again (after a crash): re-emit it
    accepted: bool = False  # a new event (emit it downstream)
    state_changed: bool = False  # status or refund status moved: publish orders.state
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    resolved_alert: dict[str, Any] | None = None


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.astimezone(UTC).timestamp() * 1000)
    return int(value)


def new_record(event: Mapping[str, Any]) -> dict[str, Any]:
    return {"order_id": event["order_id"], "channel": event["channel"],
            "status": None, "refund_status": "NONE", "status_since": None,
            "last_event_time": None, "history": [], "seen": {}, "alert": None}


def dedup_key(event: Mapping[str, Any]) -> str:
    """Order + event type + the channel's own event time (the event id hashes these)."""
    return str(event["event_id"])


# Refund progress, to order events that share a timestamp.
REFUND_RANK = {"NONE": 0, "REQUESTED": 1, "RETURN_PENDING": 2, "REJECTED": 3, "PARTIAL": 4,
               "FULL": 5}


def _sort_key(entry: Mapping[str, Any]) -> tuple[int, int, int, str]:
    # Equal event times (whole-second channel clocks) are ordered by progress, so
    # the fold never depends on arrival order.
    return (entry["t"], RANK.get(entry["status"], -1), REFUND_RANK.get(entry.get("refund"), 0),
            entry["id"])


def derive(history: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state, quarantined entries) from a history, folding it in event-time order."""
    status: str | None = None
    refund, since, quarantined = "NONE", None, []
    for entry in sorted(history, key=_sort_key):
        target = entry["status"]
        if status is not None and target not in TRANSITIONS.get(status, frozenset()):
            quarantined.append({**entry, "from": status})
            continue
        if target != status:
            since = entry["t"]
        status = target
        refund = entry.get("refund", refund) or refund
    return {"status": status, "refund_status": refund, "status_since": since}, quarantined


def apply(record: dict[str, Any] | None, event: Mapping[str, Any], *,
          window_ms: int, source: str = "") -> Outcome:
    """Apply one normalized event to its order's record.

    ``source`` names the message it came from (topic/partition/offset). The same id
    from another message is a duplicate delivery: dropped. The same id from the
    same message is a replay after a crash: the table may have kept the event
    while its outputs were lost, so the caller emits it again (downstream dedups).
    """
    rec = dict(record) if record else new_record(event)
    seen = dict(rec["seen"])
    t = _ms(event["event_time"])
    key = dedup_key(event)
    if key in seen:
        replay = bool(source) and seen[key][1] == source
        return Outcome(rec, duplicate=not replay, replay=replay)
    seen[key] = [t, source]
    newest = max([t, *(v[0] for v in seen.values())])
    # Expire by event time: anything older than the window cannot be a retry any
    # more (windows are longer than any channel's retry schedule).
    rec["seen"] = {k: v for k, v in seen.items() if v[0] >= newest - window_ms}
    entry = {"id": key, "t": t, "type": event["event_type"], "status": event["status"],
             "refund": event.get("refund_status", "NONE")}
    before = (rec["status"], rec["refund_status"])
    history = [*rec["history"], entry][-HISTORY_LIMIT:]
    state, quarantined = derive(history)
    rec.update(state, history=history,
               last_event_time=max(t, rec["last_event_time"] or t))
    outcome = Outcome(rec, accepted=True,
                      state_changed=(rec["status"], rec["refund_status"]) != before,
                      quarantined=[q for q in quarantined if q["id"] == key])
    if outcome.state_changed and rec.get("alert") and rec["alert"]["state"] != rec["status"]:
        outcome.resolved_alert, rec["alert"] = rec["alert"], None
    return outcome


@dataclass(frozen=True)
class StuckCheck:
    alert: dict[str, Any] | None = None  # a new alert to raise
    auto_close: bool = False  # unpaid past its limit: close it


def check_stuck(record: Mapping[str, Any], now_ms: int, limits: Limits) -> StuckCheck:
    """Whether this open order has just crossed its state's limit."""
    status, since = record.get("status"), record.get("status_since")
    if status is None or status in FINAL or since is None or record.get("alert"):
        return StuckCheck()
    limit = limits.limit_ms(status, record["channel"], now_ms)
    if limit is None or now_ms - since < limit:
        return StuckCheck()
    alert = {"order_id": record["order_id"], "channel": record["channel"], "state": status,
             "since": since, "limit_ms": limit, "raised_at": now_ms}
    return StuckCheck(alert=alert, auto_close=status == "PENDING_PAYMENT")


def is_stuck(record: Mapping[str, Any]) -> bool:
    return bool(record.get("alert")) and record.get("status") not in FINAL
