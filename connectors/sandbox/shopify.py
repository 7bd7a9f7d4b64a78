"""Shopify, played locally: ``orders/*`` webhooks signed like Shopify, and the REST
Admin API orders list (cursor pages in the Link header, leaky bucket 40 / 2 per s,
429 with Retry-After) for the poll fallback.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.shopify import API_VERSION, sign
from orderpulse.connectors.sandbox.base import Delivery, PollChannelSim, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder

CHANNEL = names.CHANNEL_SHOPIFY
SHOP = "orderpulse-demo.myshopify.com"
SHOP_TZ = timezone(timedelta(hours=-5))
ID_BASE = 7_100_000_000_000_000_000
LINE_ID_BASE = 7_200_000_000_000_000_000
# Lifecycle event -> the X-Shopify-Topic it fires (None: Shopify sends nothing).
TOPICS: dict[str, str | None] = {
    "created": "orders/create", "paid": "orders/paid", "shipped": "orders/fulfilled",
    "in_transit": None, "delivered": None, "completed": "orders/updated",
    "cancelled": "orders/cancelled", "refund_requested": None, "return_requested": None,
    "return_received": "orders/updated", "refunded": "orders/updated",
}


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime | None) -> str | None:
    return at.astimezone(SHOP_TZ).isoformat(timespec="seconds") if at else None


def _financial(order: SimOrder) -> str:
    if order.refund_state == "refunded":
        return "refunded" if order.refund_amount >= order.total else "partially_refunded"
    if order.cancelled_at and not order.is_paid:
        return "voided"
    return "paid" if order.is_paid else "pending"


def render(order: SimOrder) -> dict[str, Any]:
    """The order as Shopify's Order resource (webhook body and REST API alike)."""
    oid = order.id19(ID_BASE)
    refunds = []
    if order.refund_state == "refunded":
        refunds.append({"id": int(oid) + 1, "created_at": _ts(order.updated),
                        "restock": order.refund_kind == "return_and_refund",
                        "transactions": [{"kind": "refund", "status": "success",
                                          "amount": _money(order.refund_amount)}]})
    return {
        "id": int(oid), "admin_graphql_api_id": f"gid://shopify/Order/{oid}",
        "name": f"#{1000 + order.number}", "order_number": 1000 + order.number,
        "email": f"buyer{order.number}@example.com", "phone": f"+1415555{order.number % 10000:04d}",
        "created_at": _ts(order.created), "updated_at": _ts(order.updated),
        "processed_at": _ts(order.created), "cancelled_at": _ts(order.cancelled_at),
        "cancel_reason": "customer" if order.cancelled_at else None,
        "closed_at": _ts(order.completed_at), "currency": "USD", "presentment_currency": "USD",
        "financial_status": _financial(order),
        "fulfillment_status": "fulfilled" if order.shipped_at else None,
        "subtotal_price": _money(order.subtotal), "total_price": _money(order.total),
        "total_tax": "0.00", "total_discounts": _money(order.discount),
        "total_outstanding": "0.00" if order.is_paid else _money(order.total),
        "total_shipping_price_set": {
            "shop_money": {"amount": _money(order.shipping_fee), "currency_code": "USD"},
            "presentment_money": {"amount": _money(order.shipping_fee), "currency_code": "USD"}},
        "line_items": [{"id": LINE_ID_BASE + order.number * 10 + ln.line_no,
                        "variant_id": 40_000_000 + ln.line_no, "product_id": 30_000_000,
                        "sku": ln.sku, "title": ln.sku.title(), "quantity": ln.quantity,
                        "price": _money(ln.unit_price), "grams": 200}
                       for ln in order.lines],
        "fulfillments": ([{"tracking_company": order.carrier, "tracking_number": order.tracking_no,
                           "created_at": _ts(order.shipped_at), "status": "success"}]
                         if order.shipped_at else []),
        "customer": {"id": 6_000_000 + order.number, "email": f"buyer{order.number}@example.com",
                     "first_name": order.buyer_name[1:], "last_name": order.buyer_name[0],
                     "phone": f"+1415555{order.number % 10000:04d}"},
        "shipping_address": {"name": order.buyer_name, "address1": order.address,
                             "province": order.province, "country_code": "CN",
                             "phone": order.buyer_phone},
        "refunds": refunds,
    }


class ShopifyWebhookSim(WebhookChannelSim):
    channel = CHANNEL

    def _delivery(self, topic: str, body: bytes, now: datetime) -> Delivery:
        delivery_id = str(uuid.uuid4())
        secret = self.config.get("webhook_secret", "").encode()
        return Delivery(CHANNEL, body, {
            "Content-Type": "application/json", "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sign(secret, body), "X-Shopify-Shop-Domain": SHOP,
            "X-Shopify-Webhook-Id": delivery_id, "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Triggered-At": now.astimezone(UTC).isoformat(),
        }, delivery_id)

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        topic = TOPICS.get(event)
        return [] if topic is None else [self._delivery(topic, orjson.dumps(render(order)), now)]

    def resign(self, delivery: Delivery, body: bytes) -> Delivery | None:
        secret = self.config.get("webhook_secret", "").encode()
        headers = {**delivery.headers, "X-Shopify-Hmac-Sha256": sign(secret, body)}
        return Delivery(delivery.channel, body, headers, delivery.delivery_id)

    def forge(self, delivery: Delivery) -> Delivery:
        headers = {**delivery.headers, "X-Shopify-Hmac-Sha256": sign(b"not-the-secret",
                                                                       delivery.body)}
        return Delivery(delivery.channel, delivery.body, headers, delivery.delivery_id)


class ShopifyPollSim(PollChannelSim):
    """``GET /admin/api/<v>/orders.json`` with Shopify's paging and rate limit."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = 2.0
    burst: ClassVar[int] = 40

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        self.store.put(order.id19(ID_BASE), order.updated.replace(microsecond=0), render(order))

    def routes(self) -> list[web.RouteDef]:
        return [web.get(f"/shopify/admin/api/{API_VERSION}/orders.json", self.orders)]

    async def orders(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != self.config.get("access_token"):
            return web.json_response({"errors": "[API] Invalid API key or access token"},
                                     status=401)
        if not self.bucket.take():
            return web.json_response({"errors": "Exceeded 2 calls per second for api client."},
                                     status=429, headers={"Retry-After": "1.0"})
        q = request.query
        limit = min(int(q.get("limit", "50")), 250)
        if "page_info" in q:
            token = q["page_info"]
            state = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            start, end, offset = (datetime.fromisoformat(state["min"]),
                                  datetime.fromisoformat(state["max"]), state["offset"])
        else:
            start, end, offset = (datetime.fromisoformat(q["updated_at_min"]),
                                  datetime.fromisoformat(q["updated_at_max"]), 0)
        # Shopify's updated_at_max is inclusive: serve [min, max] (+1 s for whole seconds).
        docs = self.store.window(start, end + timedelta(seconds=1))
        page = docs[offset:offset + limit]
        headers = {"X-Shopify-Shop-Api-Call-Limit": f"{int(40 - self.bucket.tokens)}/40"}
        if offset + limit < len(docs):
            token = base64.urlsafe_b64encode(orjson.dumps({
                "min": start.isoformat(), "max": end.isoformat(), "offset": offset + limit,
            })).decode().rstrip("=")
            headers["Link"] = (f'<{request.url.with_query({"limit": limit, "page_info": token})}>;'
                               f' rel="next"')
        return web.json_response({"orders": page}, headers=headers,
                                 dumps=lambda o: orjson.dumps(o).decode())
