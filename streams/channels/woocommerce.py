"""WooCommerce orders (REST API v3 Order resource) to ``OrderEvent``.

Inputs (connectors/channels/woocommerce.py): a webhook body (source_topic =
``X-WC-Webhook-Topic``: order.created, order.updated, order.deleted,
order.restored) or a polled order (source_topic ``order.updated``, delivery
mode POLL: event STATE). Both are ``GET /wc/v3/orders/<id>``;
``order.deleted`` sends only ``{"id": N}``.

Channel facts used (research notes /work/research/youzan_woo.md, WooCommerce
``class-wc-webhook.php`` and the orders controller):
- ``status``: pending (unpaid), processing (paid, to fulfil), on-hold (awaiting
  payment confirmation or review), completed (fulfilled), cancelled, refunded
  (fully; partial refunds keep the status and add ``refunds[]``), failed (payment
  failed; WooCommerce lets the buyer pay it again), checkout-draft (block checkout
  draft), trash. Plugin statuses (``shipped``...) are unmapped: dead letters.
- Money: decimal strings (``total``, ``shipping_total``, ``discount_total``,
  ``total_tax``, line ``subtotal``) in ``currency``; ``line_items[].price`` is a
  JSON **number** (line total after discounts, excluding tax, / quantity, often
  ``33.333333333333336``). The body is decoded with the stdlib
  ``json.loads(parse_float=Decimal)`` (NaN/Infinity refused) so no float exists.
  The unit price is the pre-discount ``subtotal / quantity``, rounded half-even
  to the minor unit when the quantity does not divide it; ``price`` (rounded the
  same way) only when ``subtotal`` is absent. discount/shipping/tax are the
  ex-tax ``discount_total``/``shipping_total`` and ``total_tax`` as sent.
- Refunds: ``refunds[] {id, reason, total}`` with **negative** totals:
  refunded_minor = their magnitude summed; refund_status PARTIAL (FULL when the
  status is refunded); the refund record sums them, refund_id the highest id,
  kind UNKNOWN (the order body does not say), no lines (refund line items are
  only in ``/orders/<id>/refunds``).
- Times: ``date_*`` are site-local without offset, and the site's zone is not
  in the body; ``*_gmt`` are UTC without offset. Event time =
  ``date_modified_gmt`` (else ``date_created_gmt``), source_tz ``UTC``;
  ``date_modified`` (local) stays in the raw event for audit only. paid_minor =
  ``total`` once ``date_paid_gmt`` is set (null = not set).
- Ids: ``id`` an int (WordPress post id, site-local), ``number`` a string that
  plugins may change (not used as the id). Line sku = ``sku``, else
  ``variation:<variation_id>`` (0 = none), else ``product:<product_id>``.
- PII: ``billing`` (the buyer: name, phone, email, address) and ``shipping``
  (the receiver) in clear: via ``party()``. buyer_ref = keyed ref of
  shop + ``customer_id`` (ids are per site), or of the e-mail for guests (0).
- Tracking: the Shipment Tracking extension's ``_wc_shipment_tracking_items``
  meta entry ``[{tracking_provider, tracking_number}]`` when present.
- ``order.deleted`` (id only): a status-only CANCELLED event flagged
  ``STATUS_ONLY`` and ``RECEIVED_TIME`` (currency ``XXX``, totals 0, event
  time = received_at: the body has no time).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from orderpulse import names
from orderpulse.errors import DecodeError, MappingError
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
from orderpulse.streams.pii import keyed_ref, party
from orderpulse.streams.timeparse import is_not_set

CHANNEL = names.CHANNEL_WOOCOMMERCE
FLAG_STATUS_ONLY = "STATUS_ONLY"  # the message had no money or lines: absent, not zero
FLAG_RECEIVED_TIME = "RECEIVED_TIME"  # event_time is when we received it
NO_CURRENCY = "XXX"  # ISO 4217 "no currency": a deletion carries none
TRACKING_META = "_wc_shipment_tracking_items"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# No order amount comes near this (10^13 EUR); the bound keeps sums inside Avro longs.
MAX_MINOR = 10**15

# X-WC-Webhook-Topic -> event type (a polled order is a STATE whatever its topic).
EVENT_TYPES: dict[str, str] = {
    "order.created": "CREATED",
    "order.updated": "UPDATED",
    "order.deleted": "CANCELLED",
    "order.restored": "UPDATED",
}

# status -> (lifecycle status, refund status).
STATUSES: dict[str, tuple[str, str]] = {
    "pending": ("PENDING_PAYMENT", "NONE"),
    "processing": ("PAID", "NONE"),
    "on-hold": ("PENDING_PAYMENT", "NONE"),  # payment not confirmed yet (BACS, cheque)
    "completed": ("COMPLETED", "NONE"),
    "cancelled": ("CANCELLED", "NONE"),
    # Fully refunded; COMPLETED instead when it had been completed (date_completed).
    "refunded": ("PAID", "FULL"),
    "failed": ("PENDING_PAYMENT", "NONE"),  # payable again (valid statuses for payment)
    "checkout-draft": ("PENDING_PAYMENT", "NONE"),
    "trash": ("CANCELLED", "NONE"),
}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_exact(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with every decimal number a ``Decimal`` (never float)."""
    # orjson validates first, as for Pinduoduo: the stdlib parser accepts lone surrogates
    # ("\ud800"), which then fail at UTF-8 encoding as an internal_error (found by
    # tests/unit/test_security_fuzz.py); orjson refuses them as not_json.
    loads_object(body, "a WooCommerce order object")
    try:
        doc = json.loads(body, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, too deep
        raise DecodeError(f"expected a JSON object, got {len(body)} bytes that are not "
                          f"JSON: {type(exc).__name__}", reason="not_json") from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"expected a JSON object, got {type(doc).__name__}",
                          reason="not_json")
    return doc


def _text(value: Any, field: str) -> str | None:
    """A free-text field: None when empty; numbers as text; anything else is bad shape."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                       reason="bad_shape")


def _numeric_id(value: Any, field: str) -> str:
    text = id_string(value, field)
    if not (text.isascii() and text.isdigit()):
        raise MappingError(f"{field}: expected a numeric id", reason="bad_id")
    return text


def _gmt(value: Any, field: str) -> int | None:
    """A ``*_gmt`` field (UTC, no offset) as UTC ms; None when not set."""
    if is_not_set(value):
        return None
    if not isinstance(value, str):
        raise MappingError(f"{field}: expected an ISO 8601 time, got {type(value).__name__}",
                           reason="bad_timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MappingError(f"{field}: expected ISO 8601, got {value[:40]!r}",
                           reason="bad_timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # *_gmt omits the Z
    return (parsed - _EPOCH) // _MS


def _event_time(doc: dict[str, Any]) -> int:
    for field in ("date_modified_gmt", "date_created_gmt"):
        found = _gmt(doc.get(field), field)
        if found is not None:
            return found
    raise MappingError("missing required field 'date_modified_gmt'", reason="missing_field")


def map_status(doc: dict[str, Any]) -> tuple[str, str]:
    """(lifecycle status, refund status) of an order; raises on unknown statuses."""
    word = require(doc, "status")
    status, refund = lookup(STATUSES, word, field="status")
    if word == "refunded" and _gmt(doc.get("date_completed_gmt"), "date_completed_gmt"):
        status = "COMPLETED"
    return status, refund


def _bounded(minor: int, field: str) -> int:
    if abs(minor) > MAX_MINOR:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return minor


def _minor(amount: Any, currency: str, field: str) -> int:
    """``to_minor`` of a decimal string, range-checked (exotic exponents are bad input)."""
    try:
        return _bounded(to_minor(amount, currency, field=field), field)
    except ArithmeticError as exc:  # decimal Overflow / InvalidOperation (sNaN)
        raise MappingError(f"{field}: not a usable decimal amount",
                           reason="bad_amount") from exc


def _rounded(amount: Any, currency: str, field: str) -> int:
    """A computed amount (``price``: total / quantity) rounded half-even to the minor
    unit: WooCommerce's own division, so more decimals than the currency is normal."""
    if amount is None or amount == "":
        return 0
    if isinstance(amount, bool) or not isinstance(amount, (int, str, Decimal)):
        raise MappingError(f"{field}: expected a number, got {type(amount).__name__}",
                           reason="bad_amount")
    try:
        value = Decimal(str(amount).strip())
        if not value.is_finite():
            raise MappingError(f"{field}: not a finite number", reason="bad_amount")
        scaled = value.scaleb(exponent(currency)).to_integral_value(ROUND_HALF_EVEN)
    except ArithmeticError as exc:
        raise MappingError(f"{field}: not a usable number", reason="bad_amount") from exc
    return _bounded(int(scaled), field)


def _unit_price(item: dict[str, Any], quantity: int, currency: str) -> int:
    """Pre-discount unit price: ``subtotal / quantity`` (``price`` when no subtotal)."""
    subtotal = item.get("subtotal")
    if subtotal is None or subtotal == "":
        return _rounded(item.get("price"), currency, "line_items.price")
    minor = _minor(subtotal, currency, "line_items.subtotal")
    if quantity == 0:
        return minor
    return int((Decimal(minor) / quantity).to_integral_value(ROUND_HALF_EVEN))


def _sku(item: dict[str, Any]) -> str:
    sku = _text(item.get("sku"), "line_items.sku")
    if sku:
        return sku
    variation = item.get("variation_id")
    if variation not in (None, 0, "0", ""):
        return f"variation:{_numeric_id(variation, 'line_items.variation_id')}"
    return f"product:{_numeric_id(item.get('product_id'), 'line_items.product_id')}"


def _lines(doc: dict[str, Any], currency: str) -> list[dict[str, Any]]:
    lines = []
    for item in items(doc.get("line_items"), "line_items"):
        item = obj(item, "line_items[]")
        qty = item.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or not 0 <= qty < 2**31:
            raise MappingError("line_items.quantity: expected a non-negative integer",
                               reason="bad_line")
        lines.append(line(_numeric_id(require(item, "id"), "line_items.id"), _sku(item), qty,
                          _unit_price(item, qty, currency)))
    return lines


def _refunds(doc: dict[str, Any], currency: str) -> tuple[int, dict[str, Any] | None]:
    """(refunded_minor, refund record) from ``refunds[]`` (negative totals)."""
    total, ids = 0, []
    for refund in items(doc.get("refunds"), "refunds"):
        refund = obj(refund, "refunds[]")
        total += abs(_minor(refund.get("total"), currency, "refunds.total"))
        ids.append(_numeric_id(require(refund, "id"), "refunds.id"))
    if not ids:
        return 0, None
    return total, {"kind": "UNKNOWN", "status": "REFUNDED", "amount_minor": total,
                   "refund_id": max(ids, key=lambda i: (len(i), i)), "lines": []}


def _party(ctx: Context, person: dict[str, Any]) -> dict[str, Any] | None:
    text = {k: _text(person.get(k), k) for k in ("first_name", "last_name", "address_1",
                                                  "address_2", "phone", "state", "city")}
    name = " ".join(p for p in (text["first_name"], text["last_name"]) if p)
    address = " ".join(p for p in (text["address_1"], text["address_2"]) if p)
    if not (name or address or text["phone"]):
        return None
    return party(ctx.pii_key, name=name or None, phone=text["phone"], address=address or None,
                 province=text["state"], city=text["city"])


def _buyer_ref(ctx: Context, raw: dict[str, Any], doc: dict[str, Any],
               billing: dict[str, Any]) -> str | None:
    customer = doc.get("customer_id")
    if customer not in (None, 0, "0", ""):
        return keyed_ref(ctx.pii_key, CHANNEL, str(raw.get("shop_id", "")), "customer",
                         _numeric_id(customer, "customer_id"))
    email = _text(billing.get("email"), "email")
    return keyed_ref(ctx.pii_key, CHANNEL, "email", email.strip().lower()) if email else None


def _tracking(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    for meta in items(doc.get("meta_data"), "meta_data"):
        meta = obj(meta, "meta_data[]")
        value = meta.get("value")
        if meta.get("key") != TRACKING_META or not isinstance(value, list):
            continue  # plugin data of any shape: only this entry is read
        for entry in value:
            if isinstance(entry, dict) and entry.get("tracking_number"):
                return (_text(entry.get("tracking_provider"), "tracking_provider"),
                        _text(entry["tracking_number"], "tracking_number"))
    return None, None


def _paid(doc: dict[str, Any], total: int) -> int:
    return total if _gmt(doc.get("date_paid_gmt"), "date_paid_gmt") is not None else 0


def _order_event(raw: dict[str, Any], ctx: Context, doc: dict[str, Any],
                 event_type: str) -> dict[str, Any]:
    channel_order_id = _numeric_id(require(doc, "id"), "id")
    currency = _text(require(doc, "currency"), "currency") or ""
    status, refund_status = map_status(doc)
    total = _minor(require(doc, "total"), currency, "total")
    refunded, refund = _refunds(doc, currency)
    if refund and refund_status == "NONE":
        refund_status = "PARTIAL"
    billing = obj(doc.get("billing"), "billing")
    carrier, tracking = _tracking(doc)
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=channel_order_id, event_type=event_type,
        status=status, raw_status=str(doc["status"]), event_time=_event_time(doc),
        source_tz="UTC", currency=currency, total_minor=total, refund_status=refund_status,
        paid_minor=_paid(doc, total),
        discount_minor=_minor(doc.get("discount_total"), currency, "discount_total"),
        shipping_minor=_minor(doc.get("shipping_total"), currency, "shipping_total"),
        tax_minor=_minor(doc.get("total_tax"), currency, "total_tax"),
        refunded_minor=refunded, refund=refund, lines=_lines(doc, currency),
        buyer_ref=_buyer_ref(ctx, raw, doc, billing), buyer=_party(ctx, billing),
        receiver=_party(ctx, obj(doc.get("shipping"), "shipping")),
        carrier=carrier, tracking_no=tracking)


def _received_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    return int(value)


def _deleted_event(raw: dict[str, Any], ctx: Context, doc: dict[str, Any]) -> dict[str, Any]:
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=_numeric_id(require(doc, "id"), "id"),
        event_type="CANCELLED", status="CANCELLED", raw_status="deleted",
        event_time=_received_ms(raw["received_at"]), source_tz="UTC",
        currency=NO_CURRENCY, total_minor=0, flags=[FLAG_STATUS_ONLY, FLAG_RECEIVED_TIME])


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One WooCommerce order body (webhook or polled) -> one ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in EVENT_TYPES:
        raise MappingError(f"unsupported WooCommerce topic {topic[:60]!r}",
                           reason="unknown_topic")
    doc = loads_exact(raw["body"])
    if topic == "order.deleted" and "status" not in doc:
        return [_deleted_event(raw, ctx, doc)]
    event_type = "STATE" if raw.get("delivery_mode") == "POLL" else EVENT_TYPES[topic]
    return [_order_event(raw, ctx, doc, event_type)]
