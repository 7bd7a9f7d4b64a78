"""Shopify ``orders/*`` webhook bodies (REST Admin API Order resource) to ``OrderEvent``.

Shopify facts this relies on (shopify.dev, Order resource and webhooks):
- ids are integers up to 19 digits: kept as strings, parsed without floats;
- money is a decimal string in the shop currency (``total_price: "199.00"``);
- times are ISO 8601 with the shop's offset (``2026-11-11T10:00:00-05:00``);
- ``financial_status``: pending, authorized, partially_paid, paid,
  partially_refunded, refunded, voided, expired; ``fulfillment_status``:
  null, partial, fulfilled, restocked; ``cancelled_at``/``closed_at`` set when
  cancelled/archived.
"""

from __future__ import annotations

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
    obj,
    require,
    text,
)
from orderpulse.streams.money import to_minor
from orderpulse.streams.pii import keyed_ref, party
from orderpulse.streams.timeparse import parse_iso_with_offset

CHANNEL = names.CHANNEL_SHOPIFY

# X-Shopify-Topic -> event type.
EVENT_TYPES: dict[str, str] = {
    "orders/create": "CREATED",
    "orders/updated": "UPDATED",
    "orders/paid": "PAID",
    "orders/cancelled": "CANCELLED",
    "orders/fulfilled": "FULFILLED",
    "orders/partially_fulfilled": "PARTIALLY_FULFILLED",
    # The poll fallback (connectors ShopifyPoll) sees states, not deliveries.
    "poll": "STATE",
}

# financial_status -> (lifecycle status, refund status), when neither
# cancellation nor fulfilment decides it. `authorized` counts as paid: the
# buyer's payment is secured and the merchant may fulfil.
FINANCIAL_STATUS: dict[str, tuple[str, str]] = {
    "pending": ("PENDING_PAYMENT", "NONE"),
    "authorized": ("PAID", "NONE"),
    "partially_paid": ("PENDING_PAYMENT", "NONE"),
    "paid": ("PAID", "NONE"),
    "partially_refunded": ("PAID", "PARTIAL"),
    "refunded": ("PAID", "FULL"),
    "voided": ("CANCELLED", "NONE"),
    "expired": ("CANCELLED", "NONE"),
}

_UNPAID = frozenset({"pending", "partially_paid", "voided", "expired"})

# fulfillment_status -> lifecycle status (None = decided by financial_status).
FULFILLMENT_STATUS: dict[str | None, str | None] = {
    None: None,
    "unfulfilled": None,
    "partial": "SHIPPED",
    "fulfilled": "SHIPPED",
    "restocked": "CANCELLED",
}


_loads = loads_object
_require = require
_obj = obj
_list = items


def _id_string(value: Any, field: str) -> str:
    text = id_string(value, field)
    if not text.isdigit():
        raise MappingError(f"{field}: expected a numeric id", reason="bad_id")
    return text


def map_status(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(status, refund_status, raw_status) of a Shopify order; raises on unknown values."""
    financial = doc.get("financial_status")
    fulfillment = doc.get("fulfillment_status")
    raw = f"financial={financial};fulfillment={fulfillment}"
    if not isinstance(financial, str) or financial not in FINANCIAL_STATUS:
        raise MappingError(f"unmapped financial_status {str(financial)[:40]!r}",
                           reason="unmapped_status")
    if not isinstance(fulfillment, (str, type(None))) or fulfillment not in FULFILLMENT_STATUS:
        raise MappingError(f"unmapped fulfillment_status {str(fulfillment)[:40]!r}",
                           reason="unmapped_status")
    status, refund = FINANCIAL_STATUS[financial]
    shipped = FULFILLMENT_STATUS[fulfillment]
    if doc.get("cancelled_at"):
        status = "CANCELLED"
    elif shipped is not None:
        status = "COMPLETED" if doc.get("closed_at") and shipped == "SHIPPED" else shipped
    return status, refund, raw


def _shipping(doc: dict[str, Any], currency: str) -> int:
    price_set = _obj(doc.get("total_shipping_price_set"), "total_shipping_price_set")
    money = _obj(price_set.get("shop_money"), "total_shipping_price_set.shop_money")
    if money.get("amount") is not None:
        return to_minor(money["amount"], currency, field="total_shipping_price_set")
    lines = _list(doc.get("shipping_lines"), "shipping_lines")
    return sum(to_minor(_obj(line, "shipping_lines[]").get("price"), currency,
                        field="shipping_lines.price") for line in lines)


def _refunded(doc: dict[str, Any], currency: str) -> int:
    total = 0
    for refund in _list(doc.get("refunds"), "refunds"):
        for tx in _list(_obj(refund, "refunds[]").get("transactions"), "refunds.transactions"):
            tx = _obj(tx, "refunds.transactions[]")
            if tx.get("kind") == "refund" and tx.get("status") == "success":
                total += to_minor(tx.get("amount"), currency, field="refunds.transactions.amount")
    return total


def _lines(doc: dict[str, Any], currency: str) -> list[dict[str, Any]]:
    lines = []
    for item in _list(doc.get("line_items"), "line_items"):
        item = _obj(item, "line_items[]")
        qty = item.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty < 0:
            raise MappingError("line_items.quantity: expected a non-negative integer",
                               reason="bad_line")
        sku = item.get("sku") or f"variant:{item.get('variant_id')}"
        lines.append(line(_id_string(_require(item, "id"), "line_items.id"), str(sku), qty,
                          to_minor(item.get("price"), currency, field="line_items.price")))
    return lines


def _paid(doc: dict[str, Any], total: int, currency: str) -> int:
    if doc.get("total_outstanding") is not None:
        outstanding = to_minor(doc["total_outstanding"], currency, field="total_outstanding")
        return max(total - outstanding, 0)
    return 0 if doc.get("financial_status") in _UNPAID else total


def _party(ctx: Context, person: dict[str, Any]) -> dict[str, Any] | None:
    if not person:
        return None
    # Every field through text(): a number or object where Shopify documents a string
    # is bad_shape (found by tests/unit/test_security_fuzz.py: a numeric first_name
    # raised TypeError, an internal_error). The message names the type, never the value.
    fields = {k: text(person.get(k), f"person.{k}") for k in (
        "first_name", "last_name", "name", "phone", "address1", "address2", "province", "city")}
    name = " ".join(p for p in (fields["first_name"], fields["last_name"]) if p)
    address = " ".join(p for p in (fields["address1"], fields["address2"]) if p)
    return party(ctx.pii_key, name=name or fields["name"], phone=fields["phone"],
                 address=address or None, province=fields["province"], city=fields["city"])


def _fulfillment(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    for item in items(doc.get("fulfillments"), "fulfillments"):
        item = obj(item, "fulfillments[]")
        if item.get("tracking_number"):
            return item.get("tracking_company"), str(item["tracking_number"])
    return None, None


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One Shopify order body (webhook or polled) -> one ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in EVENT_TYPES:
        raise MappingError(f"unsupported Shopify topic {topic[:60]!r}", reason="unknown_topic")
    doc = _loads(raw["body"])
    channel_order_id = _id_string(_require(doc, "id"), "id")
    currency = str(_require(doc, "currency"))
    status, refund, raw_status = map_status(doc)
    time_field = "updated_at" if doc.get("updated_at") else "created_at"
    event_time, source_tz = parse_iso_with_offset(_require(doc, time_field), field=time_field)
    total = to_minor(_require(doc, "total_price"), currency, field="total_price")
    customer = obj(doc.get("customer"), "customer")
    carrier, tracking = _fulfillment(doc)
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=channel_order_id,
        event_type=EVENT_TYPES[topic], status=status, raw_status=raw_status,
        event_time=event_time, source_tz=source_tz, currency=currency, total_minor=total,
        refund_status=refund,
        paid_minor=_paid(doc, total, currency),
        discount_minor=to_minor(doc.get("total_discounts"), currency, field="total_discounts"),
        shipping_minor=_shipping(doc, currency),
        tax_minor=to_minor(doc.get("total_tax"), currency, field="total_tax"),
        refunded_minor=_refunded(doc, currency),
        lines=_lines(doc, currency),
        buyer_ref=keyed_ref(ctx.pii_key, CHANNEL, str(customer["id"])) if customer.get("id")
        else None,
        buyer=_party(ctx, customer),
        receiver=_party(ctx, obj(doc.get("shipping_address"), "shipping_address")),
        carrier=carrier, tracking_no=tracking,
    )]
