"""The merchant's own web shop: signed order events to ``OrderEvent``.

The shop implements the scheme documented in ``connectors/channels/ownsite.py``
(there is no third-party spec). Facts this relies on:

- ``source_topic`` is the body's ``event``: ``order.created``, ``order.paid``,
  ``order.shipped``, ``order.delivered``, ``order.completed``, ``order.cancelled``,
  ``order.refunded``; each maps to its event type (``EVENT_TYPES``);
- ``order.status``: pending, paid, shipped, delivered, completed, cancelled,
  refunded, partially_refunded. The two refund words say nothing about the
  lifecycle, so for them the lifecycle status comes from the order's own stamps
  (cancelled_at, completed_at, delivered_at, shipped_at, paid_at: the latest step
  set wins; a refund implies payment, so at least PAID);
- money: decimal strings in major units of ``order.currency`` (yuan, not fen):
  ``total``, ``subtotal``, ``shipping_fee``, ``discount``, line ``unit_price`` /
  ``amount``, ``refund.amount``; no tax field (tax_minor 0);
- times: ISO 8601 with the shop's offset (``2026-11-11T23:00:05+08:00``); the event
  time is ``occurred_at`` (the order's ``updated_at`` when it is missing) and
  ``source_tz`` the offset it carries; order stamps are ``null`` when not set;
- ids: ``order.id`` is a string that may exceed 2**53 (19 digits): kept as text;
  an integer id is taken exactly (never through a float); lines are keyed by
  ``line_no``;
- bundles: a line's ``components`` ``[{sku, quantity}]`` (quantity per one unit
  of the line) pass through as the line's components;
- refunds: ``order.refund`` ``{kind, state, amount, line_no}`` with kind
  ``refund_only`` / ``return_and_refund`` and state ``requested`` / ``returned`` /
  ``refunded`` (the values the shop emits); ``line_no`` 0 is the whole order. The
  refunded line carries the raw state as its ``refund_status``; its refund line
  quantity is the line's quantity when the whole line amount is refunded, else 0
  (the shop does not state a quantity). ``refunded_minor`` is the refund amount
  once the state is ``refunded`` (the order total for status ``refunded`` without
  a refund object);
- PII: ``order.buyer`` ``{name, phone, province, address}`` in clear, masked here;
  it is also the delivery address, so it is the receiver too. The shop has no
  buyer account id, so ``buyer_ref`` stays None (``phone_hash`` joins);
- ``order.shipment`` ``{carrier, tracking_no}`` links carrier scans to the order.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orderpulse import names
from orderpulse.errors import MappingError
from orderpulse.streams.channels.common import (
    Context,
    build,
    id_string,
    items,
    line,
    loads_object,
    lookup,
    obj,
    require,
)
from orderpulse.streams.money import exponent, to_minor
from orderpulse.streams.pii import party
from orderpulse.streams.timeparse import is_not_set, parse_iso_with_offset

CHANNEL = names.CHANNEL_OWNSITE

# source_topic (the body's ``event``) -> event type.
EVENT_TYPES: dict[str, str] = {
    "order.created": "CREATED",
    "order.paid": "PAID",
    "order.shipped": "SHIPPED",
    "order.delivered": "DELIVERED",
    "order.completed": "COMPLETED",
    "order.cancelled": "CANCELLED",
    "order.refunded": "REFUNDED",
}

# order.status -> (lifecycle status, refund status). None: the lifecycle status
# comes from the order's stamps (see ``STAMPS``).
ORDER_STATUS: dict[str, tuple[str | None, str]] = {
    "pending": ("PENDING_PAYMENT", "NONE"),
    "paid": ("PAID", "NONE"),
    "shipped": ("SHIPPED", "NONE"),
    "delivered": ("DELIVERED", "NONE"),
    "completed": ("COMPLETED", "NONE"),
    "cancelled": ("CANCELLED", "NONE"),
    "refunded": (None, "FULL"),
    "partially_refunded": (None, "PARTIAL"),
}

# Order stamps, latest lifecycle step first: the first one set decides.
STAMPS: tuple[tuple[str, str], ...] = (
    ("cancelled_at", "CANCELLED"), ("completed_at", "COMPLETED"),
    ("delivered_at", "DELIVERED"), ("shipped_at", "SHIPPED"), ("paid_at", "PAID"),
)

# Statuses in which the buyer has paid (cancelled: only when paid_at is set).
_PAID = frozenset({"paid", "shipped", "delivered", "completed", "refunded",
                   "partially_refunded"})

# refund.kind -> Refund.kind.
REFUND_KINDS: dict[str, str] = {
    "refund_only": "REFUND_ONLY",
    "return_and_refund": "RETURN_AND_REFUND",
}

# refund.state -> Refund.status.
REFUND_STATES: dict[str, str] = {
    "requested": "REQUESTED",
    "returned": "RETURN_RECEIVED",
    "refunded": "REFUNDED",
}

# (refund.kind, refund.state) -> refund overlay while order.status is not a refund
# word. None: money went back, FULL or PARTIAL by amount against the total.
REFUND_OVERLAY: dict[tuple[str, str], str | None] = {
    ("refund_only", "requested"): "REQUESTED",
    ("return_and_refund", "requested"): "RETURN_PENDING",
    # Goods are back, money not yet: still a return in progress.
    ("return_and_refund", "returned"): "RETURN_PENDING",
    ("refund_only", "refunded"): None,
    ("return_and_refund", "refunded"): None,
}

_LONG = 2**63
_INT = 2**31
# Readers turn timestamp-millis into datetimes: a time outside years 1-9999 UTC
# (a year-1 "not set" date with a positive offset) would make the event unreadable.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)


def _minor(amount: Any, currency: str, field: str) -> int:
    """to_minor, also refusing amounts an Avro long cannot hold."""
    try:
        value = to_minor(amount, currency, field=field)
    except ArithmeticError as exc:  # decimal signals (overflow, sNaN)
        raise MappingError(f"{field}: not a usable amount", reason="bad_amount") from exc
    if not -_LONG <= value < _LONG:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return value


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _INT:
        raise MappingError(f"{field}: expected a non-negative integer", reason="bad_line")
    return value


def _text(value: Any, field: str) -> str | None:
    """A clear-text scalar field (PII included) as str, None when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                           reason="bad_shape")
    return str(value)


def _currency(doc: dict[str, Any]) -> str:
    currency = require(doc, "currency")
    if not isinstance(currency, str):
        raise MappingError("currency: expected an ISO 4217 code", reason="bad_currency")
    exponent(currency)  # raises bad_currency on anything but three letters
    return currency


def map_status(order: dict[str, Any]) -> tuple[str, str, str]:
    """(status, refund_status, raw_status) of an order; raises on unknown values."""
    raw = order.get("status")
    status, refund = lookup(ORDER_STATUS, raw, field="order.status")
    if status is None:
        status = next((s for stamp, s in STAMPS if not is_not_set(order.get(stamp))), "PAID")
    return status, refund, str(raw)


def _lines(order: dict[str, Any], currency: str) -> list[dict[str, Any]]:
    lines = []
    for item in items(order.get("lines"), "order.lines"):
        item = obj(item, "order.lines[]")
        components = []
        for part in items(item.get("components"), "order.lines.components"):
            part = obj(part, "order.lines.components[]")
            components.append((id_string(require(part, "sku"), "components.sku"),
                               _count(part.get("quantity"), "components.quantity")))
        lines.append(line(
            id_string(require(item, "line_no"), "order.lines.line_no"),
            id_string(require(item, "sku"), "order.lines.sku"),
            _count(item.get("quantity"), "order.lines.quantity"),
            _minor(item.get("unit_price"), currency, "order.lines.unit_price"),
            components))
    return lines


def _refund(order: dict[str, Any], lines: list[dict[str, Any]], currency: str,
            total: int) -> tuple[dict[str, Any] | None, str | None]:
    """(Refund record, refund overlay) of ``order.refund``; marks the refunded line."""
    refund = obj(order.get("refund"), "order.refund")
    if not refund:
        return None, None
    kind, state = refund.get("kind"), refund.get("state")
    record_kind = lookup(REFUND_KINDS, kind, field="refund.kind")
    record_status = lookup(REFUND_STATES, state, field="refund.state")
    overlay = lookup(REFUND_OVERLAY, (kind, state), field="refund.kind/state")
    amount = _minor(require(refund, "amount"), currency, "refund.amount")
    if overlay is None:
        overlay = "FULL" if amount >= total else "PARTIAL"
    line_no = refund.get("line_no")
    refund_lines = []
    if line_no not in (None, 0, "0", ""):
        line_id = id_string(line_no, "refund.line_no")
        for item, source in zip(lines, items(order.get("lines"), "order.lines"), strict=True):
            if item["line_id"] == line_id:
                item["refund_status"] = str(state)
                whole = _minor(obj(source, "order.lines[]").get("amount"), currency,
                               "order.lines.amount") == amount
                refund_lines.append({"line_id": line_id, "amount_minor": amount,
                                     "quantity": item["quantity"] if whole else 0})
    return {"kind": record_kind, "status": record_status, "amount_minor": amount,
            "refund_id": None, "lines": refund_lines}, overlay


def _refunded(order: dict[str, Any], refund: dict[str, Any] | None, total: int) -> int:
    """Money returned: the refund's amount once refunded; the total for a status
    ``refunded`` without a refund object (the shop says all of it went back)."""
    if refund is not None:
        return refund["amount_minor"] if refund["status"] == "REFUNDED" else 0
    return total if order.get("status") == "refunded" else 0


def _person(ctx: Context, order: dict[str, Any]) -> dict[str, Any] | None:
    buyer = obj(order.get("buyer"), "order.buyer")
    if not buyer:
        return None
    return party(ctx.pii_key, name=_text(buyer.get("name"), "buyer.name"),
                 phone=_text(buyer.get("phone"), "buyer.phone"),
                 address=_text(buyer.get("address"), "buyer.address"),
                 province=_text(buyer.get("province"), "buyer.province"),
                 city=_text(buyer.get("city"), "buyer.city"))


def _event_time(doc: dict[str, Any], order: dict[str, Any]) -> tuple[int, str]:
    if not is_not_set(doc.get("occurred_at")):
        at = parse_iso_with_offset(doc["occurred_at"], field="occurred_at")
    else:
        at = parse_iso_with_offset(require(order, "updated_at"), field="order.updated_at")
    if not _MIN_MS <= at[0] <= _MAX_MS:
        raise MappingError("event time outside years 1-9999 UTC", reason="bad_timestamp")
    return at


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One own-site event body -> one ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in EVENT_TYPES:
        raise MappingError(f"unsupported ownsite event {topic[:60]!r}", reason="unknown_topic")
    doc = loads_object(raw["body"])
    order = obj(require(doc, "order"), "order")
    channel_order_id = id_string(require(order, "id"), "order.id")
    currency = _currency(order)
    status, refund_status, raw_status = map_status(order)
    event_time, source_tz = _event_time(doc, order)
    total = _minor(require(order, "total"), currency, "order.total")
    lines = _lines(order, currency)
    refund, overlay = _refund(order, lines, currency, total)
    if refund_status == "NONE" and overlay is not None:
        refund_status = overlay
    paid = order.get("status") in _PAID or not is_not_set(order.get("paid_at"))
    shipment = obj(order.get("shipment"), "order.shipment")
    person = _person(ctx, order)
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=channel_order_id,
        event_type=EVENT_TYPES[topic], status=status, raw_status=raw_status,
        event_time=event_time, source_tz=source_tz, currency=currency, total_minor=total,
        refund_status=refund_status,
        paid_minor=total if paid else 0,
        discount_minor=_minor(order.get("discount"), currency, "order.discount"),
        shipping_minor=_minor(order.get("shipping_fee"), currency, "order.shipping_fee"),
        refunded_minor=_refunded(order, refund, total),
        lines=lines, buyer=person, receiver=dict(person) if person else None,
        carrier=_text(shipment.get("carrier"), "shipment.carrier"),
        tracking_no=_text(shipment.get("tracking_no"), "shipment.tracking_no"),
        refund=refund,
    )]
