"""The merchant's own web shop, played locally: order events signed with
``X-Orderpulse-Signature`` exactly as ``connectors/channels/ownsite.py`` documents.

Times are rendered in the shop's zone (Asia/Shanghai, ``+08:00``), money as
decimal strings in yuan, order ids as 19-digit strings. The shop emits only the
seven documented events; lifecycle steps it has no event for (in transit, refund
or return requested, return received) cause no delivery.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from orderpulse import names
from orderpulse.connectors.channels.ownsite import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)
from orderpulse.connectors.sandbox.base import Delivery, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder

CHANNEL = names.CHANNEL_OWNSITE
SHOP_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
ID_BASE = 8_100_000_000_000_000_000
# Lifecycle event -> the shop's event name (None: the shop sends nothing).
EVENT_NAMES: dict[str, str | None] = {
    "created": "order.created", "paid": "order.paid", "shipped": "order.shipped",
    "in_transit": None, "delivered": "order.delivered", "completed": "order.completed",
    "cancelled": "order.cancelled", "refund_requested": None, "return_requested": None,
    "return_received": None, "refunded": "order.refunded",
}


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime | None) -> str | None:
    return at.astimezone(SHOP_TZ).isoformat(timespec="seconds") if at else None


def status_of(order: SimOrder) -> str:
    """The shop's order status for the order's current state."""
    if order.refund_state == "refunded":
        return "refunded" if order.refund_amount >= order.total else "partially_refunded"
    if order.cancelled_at:
        return "cancelled"
    for at, status in ((order.completed_at, "completed"), (order.delivered_at, "delivered"),
                       (order.shipped_at, "shipped"), (order.paid_at, "paid")):
        if at:
            return status
    return "pending"


def render_order(order: SimOrder) -> dict[str, Any]:
    """The ``order`` object of an event body."""
    return {
        "id": order.id19(ID_BASE), "number": f"OP-{order.number:06d}",
        "status": status_of(order), "currency": "CNY",
        "total": _money(order.total), "subtotal": _money(order.subtotal),
        "shipping_fee": _money(order.shipping_fee), "discount": _money(order.discount),
        "created_at": _ts(order.created), "updated_at": _ts(order.updated),
        "paid_at": _ts(order.paid_at), "shipped_at": _ts(order.shipped_at),
        "delivered_at": _ts(order.delivered_at), "completed_at": _ts(order.completed_at),
        "cancelled_at": _ts(order.cancelled_at),
        "lines": [{"line_no": ln.line_no, "sku": ln.sku, "quantity": ln.quantity,
                   "unit_price": _money(ln.unit_price), "amount": _money(ln.amount),
                   "components": [{"sku": sku, "quantity": qty} for sku, qty in ln.components]}
                  for ln in order.lines],
        "buyer": {"name": order.buyer_name, "phone": order.buyer_phone,
                  "province": order.province, "address": order.address},
        "shipment": ({"carrier": order.carrier, "tracking_no": order.tracking_no}
                     if order.shipped_at else None),
        "refund": ({"kind": order.refund_kind, "state": order.refund_state,
                    "amount": _money(order.refund_amount), "line_no": order.refund_line_no}
                   if order.refund_kind else None),
    }


def render(order: SimOrder, event_name: str, now: datetime) -> dict[str, Any]:
    """A complete event body."""
    return {"event": event_name, "occurred_at": _ts(now), "order": render_order(order)}


class OwnsiteWebhookSim(WebhookChannelSim):
    channel = CHANNEL

    def _signed(self, body: bytes, event_id: str, timestamp: int,
                secret: bytes | None = None) -> Delivery:
        key = self.config.get("webhook_secret", "").encode() if secret is None else secret
        return Delivery(CHANNEL, body, {
            "Content-Type": "application/json", "User-Agent": "ownsite-webhooks/1.0",
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: signature_header(key, timestamp, body),
        }, event_id)

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        event_name = EVENT_NAMES.get(event)
        if event_name is None:
            return []
        body = orjson.dumps(render(order, event_name, now))
        return [self._signed(body, f"evt_{uuid.uuid4().hex}", int(now.timestamp()))]

    def forge(self, delivery: Delivery) -> Delivery:
        timestamp = int(delivery.headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t="))
        return self._signed(delivery.body, delivery.delivery_id, timestamp, b"not-the-secret")
