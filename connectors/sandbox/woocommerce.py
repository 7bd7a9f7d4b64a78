"""WooCommerce, played locally: ``order.*`` webhooks signed like WooCommerce (PHP
``wp_json_encode`` bytes, colliding ``wp_hash`` delivery ids, the unsigned
``webhook_id=N`` ping), and ``GET /wp-json/wc/v3/orders`` with the controller's
exclusive ``modified_after``/``modified_before``, ``dates_are_gmt``, ``per_page``
1..100, ``X-WP-Total``/``X-WP-TotalPages``, Basic or query-string keys, and a
host's 429 + Retry-After when the client exceeds the sandbox rate.

Rendering: ids are WordPress post ids (small ints, not 19 digits), money decimal
strings except ``line_items[].price`` (a float: line total / quantity), ``date_*``
in the site's zone without offset and ``*_gmt`` in UTC without offset, buyer
fields in clear (WooCommerce does not mask them). Core WooCommerce has no
shipped/refund-request states: shipping marks the order ``completed`` with a
Shipment Tracking meta entry; refund and return requests change nothing until
the refund, so they fire no webhook and do not touch ``date_modified``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.woocommerce import GMT_FORMAT, ORDERS_PATH, sign
from orderpulse.connectors.sandbox.base import Delivery, PollChannelSim, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import CATALOGUE, SimOrder

CHANNEL = names.CHANNEL_WOOCOMMERCE
SITE = "https://shop.example/"
SITE_TZ = timezone(timedelta(hours=1))  # the shop's WordPress timezone setting
ID_BASE = 4700
USER_AGENT = "WooCommerce/9.3.3 Hookshot (WordPress/6.6.2)"
WP_SALT = b"sandbox-wp-salt"
SKUS = sorted(CATALOGUE)
# orderby values besides "modified" (the store's own order).
SORT_KEYS: dict[str, Any] = {"date": lambda d: (d["date_created_gmt"], d["id"]),
                             "id": lambda d: d["id"]}
# Lifecycle event -> the webhook topic it fires (None: WooCommerce sees no change).
TOPICS: dict[str, str | None] = {
    "created": "order.created", "paid": "order.updated", "shipped": "order.updated",
    "in_transit": None, "delivered": None, "completed": None, "cancelled": "order.updated",
    "refund_requested": None, "return_requested": None, "return_received": None,
    "refunded": "order.updated",
}


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _local(at: datetime | None) -> str | None:
    return at.astimezone(SITE_TZ).strftime(GMT_FORMAT) if at else None


def _gmt(at: datetime | None) -> str | None:
    return at.astimezone(UTC).strftime(GMT_FORMAT) if at else None


def order_id(order: SimOrder) -> int:
    return ID_BASE + order.number


def modified_at(order: SimOrder) -> datetime:
    """When WooCommerce last saved the order: its last event WooCommerce sees."""
    seen = [at for at, event in order.history if TOPICS.get(event)]
    return (max(seen) if seen else order.created).replace(microsecond=0)


def _status(order: SimOrder) -> str:
    refunded = order.refund_state == "refunded" and order.refund_amount >= order.total
    if order.cancelled_at or refunded:
        return "refunded" if order.is_paid else "cancelled"
    if order.shipped_at:
        return "completed"
    return "processing" if order.is_paid else "pending"


def _line_totals(order: SimOrder) -> list[Decimal]:
    """Line totals after the coupon, spread by line amount (the rest on the last line)."""
    totals, left = [], order.discount
    for i, line in enumerate(order.lines):
        cut = left if i == len(order.lines) - 1 else (
            order.discount * line.amount / order.subtotal).quantize(Decimal("0.01"))
        left -= cut
        totals.append(line.amount - cut)
    return totals


def _line_items(order: SimOrder) -> list[dict[str, Any]]:
    items = []
    for line, total in zip(order.lines, _line_totals(order), strict=True):
        product = 50 + (SKUS.index(line.sku) if line.sku in CATALOGUE else 99)
        items.append({
            "id": order_id(order) * 10 + line.line_no, "name": line.sku.title(),
            "product_id": product, "variation_id": 0, "quantity": line.quantity,
            "tax_class": "", "subtotal": _money(line.amount), "subtotal_tax": "0.00",
            "total": _money(total), "total_tax": "0.00", "taxes": [], "meta_data": [],
            "sku": line.sku, "price": float(total / line.quantity), "parent_name": None,
        })
    return items


def _person(order: SimOrder, email: bool) -> dict[str, str]:
    person = {"first_name": order.buyer_name[1:], "last_name": order.buyer_name[0],
              "company": "", "address_1": order.address, "address_2": "", "city": "",
              "state": order.province, "postcode": "", "country": "CN",
              "phone": order.buyer_phone}
    return {**person, "email": f"buyer{order.number}@example.com"} if email else person


def _meta(order: SimOrder) -> list[dict[str, Any]]:
    if not order.shipped_at:
        return []
    return [{"id": order_id(order) * 10, "key": "_wc_shipment_tracking_items", "value": [{
        "tracking_provider": order.carrier, "tracking_number": order.tracking_no,
        "date_shipped": str(int(order.shipped_at.timestamp())),
        "tracking_id": hashlib.md5(order.tracking_no.encode(),
                                   usedforsecurity=False).hexdigest()}]}]


def render(order: SimOrder) -> dict[str, Any]:
    """The order as ``GET /wc/v3/orders/<id>`` returns it (and the webhook body)."""
    oid, modified = order_id(order), modified_at(order)
    completed = order.shipped_at if _status(order) == "completed" else None
    return {
        "id": oid, "parent_id": 0, "number": str(oid), "order_key": f"wc_order_sbx{oid}",
        "created_via": "checkout", "version": "9.3.3", "status": _status(order),
        "currency": "EUR", "prices_include_tax": False,
        "date_created": _local(order.created), "date_created_gmt": _gmt(order.created),
        "date_modified": _local(modified), "date_modified_gmt": _gmt(modified),
        "discount_total": _money(order.discount), "discount_tax": "0.00",
        "shipping_total": _money(order.shipping_fee), "shipping_tax": "0.00",
        "cart_tax": "0.00", "total": _money(order.total), "total_tax": "0.00",
        "customer_id": 0, "customer_note": "",
        "billing": _person(order, email=True), "shipping": _person(order, email=False),
        "payment_method": "stripe" if order.is_paid else "",
        "payment_method_title": "Credit card" if order.is_paid else "",
        "transaction_id": f"pi_sbx{oid}" if order.is_paid else "",
        "date_paid": _local(order.paid_at), "date_paid_gmt": _gmt(order.paid_at),
        "date_completed": _local(completed), "date_completed_gmt": _gmt(completed),
        "meta_data": _meta(order), "line_items": _line_items(order), "tax_lines": [],
        "shipping_lines": [{"id": oid * 10 + 8, "method_title": "Flat rate",
                            "method_id": "flat_rate", "instance_id": "1",
                            "total": _money(order.shipping_fee), "total_tax": "0.00",
                            "taxes": []}],
        "fee_lines": [],
        "coupon_lines": ([{"id": oid * 10 + 9, "code": "sandbox10",
                           "discount": _money(order.discount), "discount_tax": "0.00"}]
                         if order.discount else []),
        "refunds": ([{"id": oid + 100_000, "reason": order.refund_kind,
                      "total": _money(-order.refund_amount)}]
                    if order.refund_state == "refunded" else []),
    }


def wp_json(doc: Any) -> bytes:
    """``wp_json_encode`` bytes: ASCII with ``\\uXXXX`` escapes and ``\\/`` slashes
    (PHP's defaults; orjson cannot produce these, so the stdlib encoder is used)."""
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).replace(
        "/", "\\/").encode()


def delivery_id(webhook_id: str, now: datetime) -> str:
    """``wp_hash(webhook_id . time())``: the same for every delivery within a second."""
    data = f"{webhook_id}{int(now.timestamp())}".encode()
    return hmac.new(WP_SALT, data, hashlib.md5).hexdigest()


class WooCommerceWebhookSim(WebhookChannelSim):
    channel = CHANNEL

    @property
    def webhook_id(self) -> str:
        return self.config.get("webhook_id", "12")

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        topic = TOPICS.get(event)
        if topic is None:
            return []
        body = wp_json(render(order))
        did = delivery_id(self.webhook_id, now)
        secret = self.config.get("webhook_secret", "").encode()
        return [Delivery(CHANNEL, body, {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-WC-Webhook-Source": SITE, "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": topic.split(".")[1],
            "X-WC-Webhook-Signature": sign(secret, body), "X-WC-Webhook-ID": self.webhook_id,
            "X-WC-Webhook-Delivery-ID": did}, did)]

    def handshake(self) -> Delivery:
        form = "application/x-www-form-urlencoded"
        return Delivery(CHANNEL, f"webhook_id={self.webhook_id}".encode(),
                        {"Content-Type": form, "User-Agent": USER_AGENT},
                        f"ping-{self.webhook_id}", content_type=form)

    def forge(self, delivery: Delivery) -> Delivery:
        headers = {**delivery.headers,
                   "X-WC-Webhook-Signature": sign(b"not-the-secret", delivery.body)}
        return Delivery(delivery.channel, delivery.body, headers, delivery.delivery_id)


def _rest_error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"code": code, "message": message, "data": {"status": status}},
                             status=status)


class WooCommercePollSim(PollChannelSim):
    """``GET /woocommerce/wp-json/wc/v3/orders`` as the WooCommerce REST API answers."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = 2.0
    burst: ClassVar[int] = 4

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        if TOPICS.get(event) or str(order_id(order)) not in self.store.docs:
            # The REST server adds _links (webhook payloads are built without them).
            api = f"{SITE}wp-json/wc/v3/orders"
            doc = {**render(order), "_links": {"self": [{"href": f"{api}/{order_id(order)}"}],
                                               "collection": [{"href": api}]}}
            self.store.put(str(order_id(order)), modified_at(order), doc)

    def routes(self) -> list[web.RouteDef]:
        return [web.get(f"/woocommerce{ORDERS_PATH}", self.orders)]

    def _refusal(self, request: web.Request) -> web.Response | None:
        key, secret = request.query.get("consumer_key"), request.query.get("consumer_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            key, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if not key:
            return _rest_error("woocommerce_rest_cannot_view",
                               "Sorry, you cannot list resources.", 401)
        if not hmac.compare_digest(key, self.config.get("consumer_key", "")):
            return _rest_error("woocommerce_rest_authentication_error",
                               "Consumer key is invalid.", 401)
        if not hmac.compare_digest(secret or "", self.config.get("consumer_secret", "")):
            return _rest_error("woocommerce_rest_authentication_error",
                               "Consumer secret is invalid.", 401)
        return None

    def _bound(self, value: str | None, gmt: bool) -> datetime | None:
        if value is None:
            return None
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC if gmt else SITE_TZ)

    async def orders(self, request: web.Request) -> web.Response:
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        if not self.bucket.take():
            return web.Response(status=429, text="<html><body>429 Too Many Requests</body>"
                                "</html>", content_type="text/html",
                                headers={"Retry-After": "1"})
        q = request.query
        per_page, page = int(q.get("per_page", "10")), int(q.get("page", "1"))
        if not 1 <= per_page <= 100 or page < 1:
            return _rest_error("rest_invalid_param", "Invalid parameter(s): per_page", 400)
        gmt = q.get("dates_are_gmt", "false") in ("true", "1")
        after = self._bound(q.get("modified_after"), gmt)
        before = self._bound(q.get("modified_before"), gmt)
        # Both bounds exclusive (WP_Date_Query); stored times are whole seconds.
        start = after + timedelta(seconds=1) if after else datetime.min.replace(tzinfo=UTC)
        docs = self.store.window(start, before or datetime.max.replace(tzinfo=UTC))
        orderby = q.get("orderby", "date")
        if orderby in SORT_KEYS:
            docs.sort(key=SORT_KEYS[orderby])
        if q.get("order", "desc") == "desc":
            docs.reverse()
        pages = math.ceil(len(docs) / per_page)
        headers = {"X-WP-Total": str(len(docs)), "X-WP-TotalPages": str(pages)}
        if page < pages:
            headers["Link"] = f'<{request.url.update_query(page=page + 1)}>; rel="next"'
        return web.json_response(docs[(page - 1) * per_page:page * per_page], headers=headers,
                                 dumps=lambda o: orjson.dumps(o).decode())
