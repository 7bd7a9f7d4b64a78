"""Youzan, played locally: trade pushes signed with ``Event-Sign`` (and the body
``sign``), and ``youzan.trades.sold.get`` + ``/auth/token`` with the gateway's
HTTP-200 error envelopes (``gw_err_resp``) for bad tokens and call-rate limits.

Rendering follows the research notes' captured shapes: ``tid`` "E<yyyyMMddHHmmss>
<9 digits>", 19-digit ``oid`` strings, yuan strings, Beijing-time strings with
``""`` for unset times, masked buyer phone and receiver fields, JSON-in-string
``sku_properties_name``/``address_extra``. The ``delivery_order`` and
``refund_order`` element shapes and express ids are [unverified] stand-ins.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote_plus

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.youzan import (
    BEIJING,
    TIME_FORMAT,
    TRADES_API,
    beijing,
    event_sign,
)
from orderpulse.connectors.sandbox.base import Delivery, PollChannelSim, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import CATALOGUE, SimOrder

CHANNEL = names.CHANNEL_YOUZAN
KDT_ID = 13027865
KDT_NAME = "有赞演示小店"
OID_BASE = 2_797_000_000_000_000_000
# Lifecycle event -> the push ``type`` (None: no trade push; refunds come as separate
# trade_refund_* messages whose shapes are not verified, so the sandbox sends none).
TYPES: dict[str, str | None] = {
    "created": "trade_TradeCreate", "paid": "trade_TradePaid",
    "shipped": "trade_TradeSellerShip", "in_transit": None, "delivered": None,
    "completed": "trade_TradeSuccess", "cancelled": "trade_TradeClose",
    "refund_requested": None, "return_requested": None, "return_received": None,
    "refunded": None,
}
# Pushes whose msg is a small {tid, update_time} object rather than the full trade.
SMALL_MSG = frozenset({"trade_TradeSuccess"})
EXPRESS_IDS = {"SF": 7, "YTO": 2, "ZTO": 3, "USPS": 0}  # [unverified] Youzan express ids
SKUS = sorted(CATALOGUE)


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime | None) -> str:
    return beijing(at) if at else ""


def tid(order: SimOrder) -> str:
    """The order's Youzan trade id."""
    return f"E{order.created.astimezone(BEIJING):%Y%m%d%H%M%S}{order.number:09d}"


def _mask_phone(phone: str) -> str:
    return f"{phone[:3]}****{phone[-4:]}"


def _status(order: SimOrder) -> str:
    if order.cancelled_at or (order.refund_state == "refunded"
                              and order.refund_amount >= order.total):
        return "TRADE_CLOSED"
    if order.completed_at:
        return "TRADE_SUCCESS"
    if order.shipped_at:
        return "WAIT_BUYER_CONFIRM_GOODS"
    return "WAIT_SELLER_SEND_GOODS" if order.is_paid else "WAIT_BUYER_PAY"


def _refund_state(order: SimOrder) -> int:
    if not order.refund_state:
        return 0
    full = order.refund_amount >= order.total
    if order.refund_state == "refunded":
        return 12 if full else 2
    return 11 if full else 1


def _line_payments(order: SimOrder) -> list[Decimal]:
    """Each line's share of the paid goods amount: the discount spread by amount."""
    shares, left = [], order.discount
    for i, line in enumerate(order.lines):
        cut = left if i == len(order.lines) - 1 else (
            order.discount * line.amount / order.subtotal).quantize(Decimal("0.01"))
        left -= cut
        shares.append(line.amount - cut)
    return shares


def _orders(order: SimOrder) -> list[dict[str, Any]]:
    rows = []
    for line, payment in zip(order.lines, _line_payments(order), strict=True):
        known = line.sku in CATALOGUE
        rows.append({
            "oid": str(OID_BASE + order.number * 10 + line.line_no),
            "item_id": 926_000_000 + (SKUS.index(line.sku) if known else 99),
            "sku_id": (37_196_000 + SKUS.index(line.sku)) if known else 0,
            "outer_item_id": line.sku.rsplit("-", 1)[0], "outer_sku_id": line.sku,
            "title": line.sku.title(), "num": line.quantity,
            "price": _money(line.unit_price), "discount_price": _money(line.unit_price),
            "total_fee": _money(line.amount), "payment": _money(payment),
            "sku_properties_name": (orjson.dumps([{"k": "规格", "k_id": 1, "v": line.sku,
                                                   "v_id": 2}]).decode() if known else "[]"),
            "is_present": False, "item_type": 0, "buyer_messages": "",
        })
    return rows


def _delivery_order(order: SimOrder) -> list[dict[str, Any]]:
    if not order.shipped_at:
        return []
    return [{"express_state": 1, "express_type": 0,
             "oids": [{"oid": str(OID_BASE + order.number * 10 + ln.line_no)}
                      for ln in order.lines],
             "dists": [{"express_info": {"express_id": EXPRESS_IDS.get(order.carrier, 0),
                                         "express_no": order.tracking_no}}]}]


def _refund_order(order: SimOrder) -> list[dict[str, Any]]:
    if not order.refund_state:
        return []
    oids = ([OID_BASE + order.number * 10 + order.refund_line_no] if order.refund_line_no
            else [OID_BASE + order.number * 10 + ln.line_no for ln in order.lines])
    return [{"refund_id": f"20{order.number:016d}", "refund_fee": _money(order.refund_amount),
             "refund_state": _refund_state(order), "oids": [str(o) for o in oids]}]


def render(order: SimOrder) -> dict[str, Any]:
    """The trade as one element of ``full_order_info_list`` (= a full push ``msg``)."""
    phone = _mask_phone(order.buyer_phone)
    status = _status(order)
    return {"full_order_info": {
        "order_info": {
            "tid": tid(order), "status": status, "type": 0,
            "created": _ts(order.created), "update_time": _ts(order.updated),
            "pay_time": _ts(order.paid_at),
            "expired_time": _ts(order.created + timedelta(hours=1)),
            "consign_time": _ts(order.shipped_at), "confirm_time": _ts(order.delivered_at),
            "success_time": _ts(order.completed_at), "refund_state": _refund_state(order),
            # [unverified] close_type values: 1 = buyer/timeout cancel, 2 = refunded.
            "close_type": 0 if status != "TRADE_CLOSED" else (2 if order.is_paid else 1),
            "express_type": 0, "pay_type": 10 if order.is_paid else 0, "team_type": 0,
            "is_retail_order": False,
            "order_tags": {"is_payed": order.is_paid, "is_secured_transactions": True},
        },
        "pay_info": {
            "payment": _money(order.total), "total_fee": _money(order.subtotal),
            "post_fee": _money(order.shipping_fee), "real_payment": _money(order.total),
            "outer_transactions": ([f"42000008802026{order.number:014d}"]
                                   if order.is_paid else []),
            "transaction": [f"26{order.number:018d}"] if order.is_paid else [],
        },
        "buyer_info": {"yz_open_id": f"wKozXUzB7090605{order.number:011d}",
                       "buyer_phone": phone, "fans_type": 1, "fans_nickname": ""},
        "address_info": {
            "receiver_name": order.buyer_name[0] + "*" * (len(order.buyer_name) - 1),
            "receiver_tel": phone, "delivery_province": order.province,
            "delivery_city": "某市", "delivery_district": "某区",
            "delivery_address": order.address.removeprefix(order.province),
            "delivery_postal_code": "", "address_extra": '{"areaCode":"000000"}',
            "self_fetch_info": "",
        },
        "remark_info": {"buyer_message": ""},
        "orders": _orders(order),
    }, "refund_order": _refund_order(order), "delivery_order": _delivery_order(order),
        "order_promotion": {"adjust_fee": "0.00", "item": [],
                            "order": ([{"discount_fee": _money(order.discount)}]
                                      if order.discount else [])}}


def push_status(order: SimOrder, push_type: str) -> str:
    """The envelope ``status``: TradePaid pushes say TRADE_PAID, the rest the trade's."""
    return "TRADE_PAID" if push_type == "trade_TradePaid" else _status(order)


def envelope(order: SimOrder, push_type: str, client_id: str, client_secret: str) -> bytes:
    """The push body Youzan POSTs for this trade event."""
    payload = ({"tid": tid(order), "update_time": _ts(order.updated)}
               if push_type in SMALL_MSG else render(order))
    msg = quote_plus(orjson.dumps(payload).decode())
    version = int(order.updated.timestamp())
    return orjson.dumps({
        "msg": msg, "kdt_name": KDT_NAME, "test": False,
        "sign": event_sign(client_id, client_secret, msg.encode()),
        "type": push_type, "sendCount": 0, "version": version, "client_id": client_id,
        "mode": 1, "kdt_id": KDT_ID, "id": tid(order),
        "msg_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"youzan:{tid(order)}:{push_type}:"
                                                     f"{version}")),
        "root_kdt_id": KDT_ID, "status": push_status(order, push_type),
    })


class YouzanWebhookSim(WebhookChannelSim):
    channel = CHANNEL

    def _ids(self) -> tuple[str, str]:
        return self.config.get("client_id", ""), self.config.get("client_secret", "")

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        push_type = TYPES.get(event)
        if push_type is None:
            return []
        client_id, secret = self._ids()
        body = envelope(order, push_type, client_id, secret)
        msg_id = orjson.loads(body)["msg_id"]
        return [Delivery(CHANNEL, body, {
            "Content-Type": "application/json", "Event-Type": push_type,
            "Event-Sign": event_sign(client_id, secret, body)}, msg_id)]

    def forge(self, delivery: Delivery) -> Delivery:
        client_id, _secret = self._ids()
        headers = {**delivery.headers,
                   "Event-Sign": event_sign(client_id, "not-the-secret", delivery.body)}
        return Delivery(delivery.channel, delivery.body, headers, delivery.delivery_id)


def _gateway_error(code: int, message: str) -> web.Response:
    # Youzan's gateway answers errors with HTTP 200 and gw_err_resp.
    return web.json_response({"gw_err_resp": {"err_code": code, "err_msg": message},
                              "trace_id": uuid.uuid4().hex})


class YouzanPollSim(PollChannelSim):
    """``/youzan/auth/token`` and ``/youzan/api/youzan.trades.sold.get/<v>``."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = 5.0
    burst: ClassVar[int] = 5
    token_ttl_s: ClassVar[float] = 7 * 86400

    def __init__(self, config: dict[str, str]) -> None:
        super().__init__(config)
        self.tokens: set[str] = {config["access_token"]} if config.get("access_token") else set()

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        self.store.put(tid(order), order.updated.replace(microsecond=0), render(order))

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/youzan/auth/token", self.token),
                web.post(f"/youzan/api/{TRADES_API}/{{version}}", self.trades)]

    async def token(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if (body.get("client_id") != self.config.get("client_id")
                or body.get("client_secret") != self.config.get("client_secret")):
            return web.json_response({"success": False, "code": 40001,
                                      "message": "client_id or client_secret invalid"})
        token = secrets.token_hex(16)
        self.tokens.add(token)
        expires = int((datetime.now(BEIJING).timestamp() + self.token_ttl_s) * 1000)
        return web.json_response({"success": True, "code": 200, "message": "",
                                  "data": {"access_token": token, "expires": expires,
                                           "scope": "trade", "authority_id": str(KDT_ID)}})

    async def trades(self, request: web.Request) -> web.Response:
        if not request.match_info["version"].startswith("4.0."):
            return _gateway_error(4001, "api version not found")
        if request.query.get("access_token") not in self.tokens:
            return _gateway_error(4203, "invalid access_token")
        if not self.bucket.take():
            return _gateway_error(429, "API调用频率超出限制")
        q = orjson.loads(await request.read())
        page_no, page_size = int(q.get("page_no", 1)), int(q.get("page_size", 20))
        if not 1 <= page_size <= 100:
            return web.json_response({"success": False, "code": 101,
                                      "message": "page_size out of range"})
        start = datetime.strptime(q["start_update"], TIME_FORMAT).replace(tzinfo=BEIJING)
        end = datetime.strptime(q["end_update"], TIME_FORMAT).replace(tzinfo=BEIJING)
        docs = self.store.window(start, end + timedelta(seconds=1))  # both bounds inclusive
        page = docs[(page_no - 1) * page_size:page_no * page_size]
        return web.json_response(
            {"success": True, "code": 200, "message": "successful", "trace_id": uuid.uuid4().hex,
             "data": {"total_results": len(docs), "full_order_info_list": page}},
            dumps=lambda o: orjson.dumps(o).decode())
