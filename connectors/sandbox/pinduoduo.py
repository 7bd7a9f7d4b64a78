"""Pinduoduo, played locally: ``POST /pinduoduo/api/router`` serving
``pdd.order.number.list.increment.get`` from the sandbox store, as
``connectors/channels/pinduoduo.py`` documents it.

The router checks ``client_id``, ``access_token`` and the MD5 ``sign`` with the same
config as the connector, enforces the 30-minute window and ``page_size <= 100``, filters by
``order_status``/``refund_status`` (5 = all), pages 1-based with ``total_count`` (or
``has_next`` when ``use_has_next=true``), and answers every refusal with HTTP 200 and an
``error_response``. The error codes are the connector's unverified ones: 70031 throttled,
20004 sign error, 10019 access_token expired, 10000 parameter error.

Orders render as PDD's OrderInfo: ``order_sn`` ``YYMMDD-`` + 15 digits (China date of
creation), times ``yyyy-MM-dd HH:mm:ss`` China time, money yuan decimals, receiver fields as
opaque ciphertext only while the order waits for shipping (empty afterwards), masks always.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.pinduoduo import (
    API_TYPE,
    CHINA_TZ,
    MAX_PAGE_SIZE,
    RESPONSE_KEY,
    PinduoduoPoll,
    china_time,
    sign,
)
from orderpulse.connectors.sandbox.base import PollChannelSim
from orderpulse.connectors.sandbox.lifecycle import BUNDLES, CATALOGUE, SimOrder

CHANNEL = names.CHANNEL_PINDUODUO
ORDER_SN_BASE = 482_910_374_600_000  # the 15 digits after YYMMDD-
GOODS_BASE = 523_001_100_000
SKU_BASE = 1_100_223_300_000
SKUS = sorted(CATALOGUE) + sorted(BUNDLES)
# PDD logistics company ids (the logistics companies API was not read: illustrative).
LOGISTICS_IDS = {"SF": 44, "YTO": 85, "ZTO": 115}
THROTTLED = (70031, "调用过于频繁, 请调整调用频率")
SIGN_ERROR = (20004, "签名错误")
TOKEN_EXPIRED = (10019, "access_token已过期")
PARAM_ERROR = (10000, "参数错误")
MAX_WINDOW_S = 1800


def _yuan(value: Decimal) -> float:
    # PDD sends JSON numbers; a 2-decimal amount round-trips exactly through a double.
    return float(value.quantize(Decimal("0.01")))


def _ts(at: datetime | None) -> str:
    return china_time(at) if at else ""


def order_sn(order: SimOrder) -> str:
    return f"{order.created.astimezone(CHINA_TZ):%y%m%d}-{ORDER_SN_BASE + order.number:015d}"


def _cipher(marker: str, value: str) -> str:
    """Opaque ciphertext in PDD's shape (a marked base64 blob): never the plain value."""
    digest = hashlib.sha256(b"pdd-sandbox:" + value.encode()).digest()
    return f"{marker}AgAAAAF0{base64.b64encode(digest).decode().rstrip('=')}{marker}"


def _status(order: SimOrder) -> dict[str, int]:
    shipping = 3 if order.delivered_at else 2 if order.shipped_at else 1
    confirm = 2 if order.cancelled_at else 1 if order.is_paid else 0
    refund, after_sales = {
        "requested": (2, 2 if order.refund_kind == "refund_only" else 3),
        "returned": (3, 4), "refunded": (4, 10)}.get(order.refund_state, (1, 0))
    return {"order_status": shipping, "confirm_status": confirm,
            "group_status": 1 if order.is_paid else 0, "refund_status": refund,
            "after_sales_status": after_sales}


def _receiver(order: SimOrder, waiting_to_ship: bool) -> dict[str, str]:
    phone = order.buyer_phone
    masks = {"receiver_name_mask": order.buyer_name[:1] + "*",
             "receiver_phone_mask": f"{phone[:3]}****{phone[-4:]}",
             "receiver_address_mask": "某路***号", "address_mask": f"{order.province}***"}
    if not waiting_to_ship:
        return {"receiver_name": "", "receiver_phone": "", "receiver_address": "",
                "address": "", **masks}
    return {"receiver_name": _cipher("~", order.buyer_name),
            "receiver_phone": _cipher("$", phone),
            "receiver_address": _cipher("~", order.address),
            "address": _cipher("~", order.address), **masks}


def _items(order: SimOrder) -> list[dict[str, Any]]:
    return [{"goods_id": GOODS_BASE + SKUS.index(ln.sku), "sku_id": SKU_BASE + SKUS.index(ln.sku),
             "outer_id": ln.sku, "outer_goods_id": ln.sku.split("-")[0],
             "goods_name": ln.sku.replace("-", " ").title(), "goods_spec": "",
             "goods_count": ln.quantity, "goods_price": _yuan(ln.unit_price),
             "goods_img": f"https://img.example.com/{ln.sku}.jpg"}
            for ln in order.lines]


def render(order: SimOrder) -> dict[str, Any]:
    """The order as PDD's OrderInfo in an increment.get page."""
    status = _status(order)
    waiting = order.is_paid and not order.shipped_at and not order.cancelled_at
    return {
        "order_sn": order_sn(order), **status, "trade_type": 0, "is_lucky_flag": 1,
        "risk_control_status": 0, "created_time": _ts(order.created),
        "confirm_time": _ts(order.paid_at), "pay_time": _ts(order.paid_at),
        "updated_at": _ts(order.updated), "shipping_time": _ts(order.shipped_at),
        "receive_time": _ts(order.completed_at),
        "last_ship_time": _ts(order.created + timedelta(hours=48)),
        "goods_amount": _yuan(order.subtotal), "discount_amount": _yuan(order.discount),
        "platform_discount": 0.0, "seller_discount": _yuan(order.discount),
        "capital_free_discount": 0.0, "postage": _yuan(order.shipping_fee),
        "pay_amount": _yuan(order.total), "pay_type": "WEIXIN" if order.is_paid else "",
        "pay_no": f"42000{order.number:020d}" if order.is_paid else "",
        "country": "中国", "province": order.province, "city": "某市", "town": "某区",
        **_receiver(order, waiting),
        "tracking_number": order.tracking_no, "logistics_id": LOGISTICS_IDS.get(order.carrier, 0),
        "buyer_memo": "", "remark": "", "item_list": _items(order),
    }


def error_response(error: tuple[int, str]) -> web.Response:
    """PDD's refusal: HTTP 200 with an ``error_response`` body."""
    code, message = error
    body = {"error_response": {"error_code": code, "error_msg": message, "sub_code": "",
                               "sub_msg": "", "request_id": uuid.uuid4().hex}}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _matches(doc: dict[str, Any], order_status: int, refund_status: int) -> bool:
    return (order_status == 5 or doc["order_status"] == order_status) and \
           (refund_status == 5 or doc["refund_status"] == refund_status)


class PinduoduoPollSim(PollChannelSim):
    """``POST /pinduoduo/api/router`` with PDD's signature, window, paging and throttling."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = PinduoduoPoll.rate_per_s
    burst: ClassVar[int] = PinduoduoPoll.burst

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        doc = render(order)
        self.store.put(doc["order_sn"], order.updated.replace(microsecond=0), doc)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/pinduoduo/api/router", self.router)]

    def refusal(self, params: dict[str, str]) -> tuple[int, str] | None:
        """The credential error a request earns, if any."""
        expected = sign(self.config.get("client_secret", ""), params)
        if params.get("client_id") != self.config.get("client_id") or not hmac.compare_digest(
                params.get("sign", "").encode(), expected.encode()):
            return SIGN_ERROR
        if params.get("access_token") != self.config.get("access_token"):
            return TOKEN_EXPIRED
        return None

    async def router(self, request: web.Request) -> web.Response:
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        refused = self.refusal(params)
        if refused is not None:
            return error_response(refused)
        if not self.bucket.take():
            return error_response(THROTTLED)
        try:
            answer = self.increment(params)
        except (KeyError, ValueError):
            return error_response(PARAM_ERROR)
        return web.Response(body=orjson.dumps({RESPONSE_KEY: answer}),
                            content_type="application/json")

    def increment(self, params: dict[str, str]) -> dict[str, Any]:
        """One page of ``pdd.order.number.list.increment.get`` (ValueError: bad params)."""
        start, end = int(params["start_updated_at"]), int(params["end_updated_at"])
        page, size = int(params.get("page", "1")), int(params.get("page_size", "100"))
        if (params.get("type") != API_TYPE or not 0 <= end - start <= MAX_WINDOW_S
                or page < 1 or not 1 <= size <= MAX_PAGE_SIZE):
            raise ValueError("parameters outside the documented ranges")
        docs = [d for d in self.store.window(datetime.fromtimestamp(start, UTC),
                                             datetime.fromtimestamp(end, UTC))
                if _matches(d, int(params.get("order_status", "5")),
                            int(params.get("refund_status", "5")))]
        rows = docs[(page - 1) * size: page * size]
        if params.get("use_has_next") == "true":
            return {"has_next": page * size < len(docs), "order_sn_list": rows}
        return {"total_count": len(docs), "order_sn_list": rows}
