"""JD, played locally: ``jingdong.pop.order.search`` on ``/jd/routerjson`` (GET or
form POST), signed and answered like JOS.

Rendering: a ``SimOrder`` becomes a JOS ``OrderSearchInfo``: every scalar a
string (19-digit ``orderId``, yuan amounts, ``itemTotal``), naive GMT+8 times
(``""`` when not reached), ``consigneeInfo`` name/address as ``~...~1~`` and
phones as ``$...$1$`` opaque ciphertext (an HMAC of the value under the app
secret stands in for JOS TDE encryption; the exact format is unverified), the
province in clear, ``open_id_buyer`` / ``xid_buyer`` instead of ``pin``.

Lifecycle event -> ``orderState`` (JD lists POP orders only once payable work
exists, so unpaid orders never appear): created not listed; paid
WAIT_SELLER_STOCK_OUT; shipped WAIT_GOODS_RECEIVE_CONFIRM (``waybill``);
in_transit, delivered and return_received no change; completed FINISHED_L;
cancelled TRADE_CANCELED when paid (not listed otherwise); refund_requested /
return_requested LOCKED (an after-sale request is pending); refunded
TRADE_CANCELED when the refund covers the only line, else the order unlocks to
its shipping state.

Serving: gateway checks in JOS's codes (14/15 method, 4 version, 7/8 timestamp
+-6 min, 11/12 signature, 19 access_token; an unknown app_key also answers 12,
JOS's own code for that was not found), then the rate (code "2" "App Call
Limited"), then the business params (``apiResult.success`` false with the
sandbox's own ``numberCode`` 10100 when ``order_state``/``optional_fields`` are
missing, the dates are bad or more than a month apart, ``page_size`` > 50, or
``dateType`` is not ``0``). ``[start_date, end_date)`` on ``modified`` is served,
filtered by ``order_state``, oldest first, ``optional_fields`` honoured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.jd import (
    CHINA_TZ,
    MAX_PAGE_SIZE,
    METHOD,
    PARAM_JSON,
    RESPONSE_KEY,
    RESULT_KEY,
    TIME_FORMAT,
    JdPoll,
    china_time,
    signature_ok,
)
from orderpulse.connectors.sandbox.base import PollChannelSim
from orderpulse.connectors.sandbox.lifecycle import CATALOGUE, SimOrder

CHANNEL = names.CHANNEL_JD
ORDER_ID_BASE = 2_900_000_000_000_000_000
SKU_BASE = 100_012_345_600
WARE_BASE = 100_009_876_500
VENDER_ID = "10012345"
TIMESTAMP_SKEW = timedelta(minutes=6)
MAX_SPAN = timedelta(days=31)
_SKU_INDEX = {sku: n for n, sku in enumerate(sorted(CATALOGUE), start=1)}
STATE_REMARK = {"WAIT_SELLER_STOCK_OUT": "等待出库", "WAIT_GOODS_RECEIVE_CONFIRM": "等待确认收货",
                "FINISHED_L": "完成", "TRADE_CANCELED": "取消", "LOCKED": "已锁定"}
SILENT_EVENTS = frozenset({"created", "in_transit", "delivered", "return_received"})
_OK = {"success": True, "englishErrCode": "", "chineseErrCode": "", "numberCode": 0}


def seen(order: SimOrder, event: str) -> bool:
    """Whether ``event`` changes the order as ``jingdong.pop.order.search`` lists it."""
    return order.is_paid and event not in SILENT_EVENTS


def order_state(order: SimOrder) -> str:
    if order.cancelled_at:
        return "TRADE_CANCELED"
    if order.refund_state in ("requested", "returned"):
        return "LOCKED"
    if order.refund_state == "refunded" and len(order.lines) == 1:
        return "TRADE_CANCELED"
    if order.completed_at:
        return "FINISHED_L"
    return "WAIT_GOODS_RECEIVE_CONFIRM" if order.shipped_at else "WAIT_SELLER_STOCK_OUT"


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime | None) -> str:
    return china_time(at) if at else ""


def cipher(secret: str, value: str, mark: str) -> str:
    """Opaque stand-in for a JOS TDE ciphertext of ``value`` (``~`` text, ``$`` phones)."""
    digest = hmac.new(secret.encode(), value.encode(), hashlib.sha256).digest()
    return f"{mark}AgAAA{base64.b64encode(digest).decode()}{mark}1{mark}"


def render(order: SimOrder, secret: str, vender_id: str = VENDER_ID) -> dict[str, Any]:
    """The order as JOS's ``OrderSearchInfo`` (all fields the connector asks for)."""
    state = order_state(order)
    seller_price = order.subtotal - order.discount
    buyer = hashlib.sha256(f"buyer:{order.number}".encode()).hexdigest()
    return {
        "orderId": order.id19(ORDER_ID_BASE), "venderId": vender_id, "orderType": "22",
        "payType": "4-在线支付", "orderState": state, "orderStateRemark": STATE_REMARK[state],
        "orderTotalPrice": _money(order.subtotal), "sellerDiscount": _money(order.discount),
        "orderSellerPrice": _money(seller_price), "freightPrice": _money(order.shipping_fee),
        "orderPayment": _money(order.total), "balanceUsed": "0.00",
        "orderStartTime": _ts(order.created), "paymentConfirmTime": _ts(order.paid_at),
        "modified": _ts(order.updated),
        "orderEndTime": _ts(order.completed_at or order.cancelled_at or (
            order.updated if state == "TRADE_CANCELED" else None)),
        "orderRemark": "", "venderRemark": "", "waybill": order.tracking_no,
        "open_id_buyer": f"o_{buyer[:16]}", "xid_buyer": f"x_{buyer[16:32]}",
        "consigneeInfo": {
            "fullname": cipher(secret, order.buyer_name, "~"),
            "mobile": cipher(secret, order.buyer_phone, "$"),
            "telephone": cipher(secret, order.buyer_phone, "$"),
            "fullAddress": cipher(secret, order.address, "~"),
            "province": order.province, "city": "某市", "county": "某区", "town": "",
        },
        "itemInfoList": [{
            "skuId": str(SKU_BASE + _SKU_INDEX.get(line.sku, 99)), "outerSkuId": line.sku,
            "skuName": line.sku.title(), "jdPrice": _money(line.unit_price),
            "itemTotal": str(line.quantity),
            "wareId": str(WARE_BASE + _SKU_INDEX.get(line.sku, 99)),
            "productNo": line.sku.split("-")[0],
        } for line in order.lines],
    }


def _json(doc: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json",
                        charset="utf-8")


def _error(code: str, zh_desc: str, en_desc: str) -> web.Response:
    return _json({"error_response": {"code": code, "zh_desc": zh_desc, "en_desc": en_desc}})


def _result(result: dict[str, Any]) -> web.Response:
    return _json({RESPONSE_KEY: {"code": "0", RESULT_KEY: result}})


def _business_error(reason: str) -> web.Response:
    return _result({"apiResult": {"success": False, "englishErrCode": reason,
                                  "chineseErrCode": "参数错误", "numberCode": 10100},
                    "orderTotal": 0, "orderInfoList": []})


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=CHINA_TZ)
    except ValueError:
        return None


class JdPollSim(PollChannelSim):
    """JOS's ``routerjson`` serving ``jingdong.pop.order.search`` from the store."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = JdPoll.rate_per_s
    burst: ClassVar[int] = JdPoll.burst

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        if seen(order, event):
            doc = render(order, self.config.get("app_secret", ""),
                         self.config.get("shop_id") or VENDER_ID)
            self.store.put(order.id19(ORDER_ID_BASE), order.updated.replace(microsecond=0), doc)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/jd/routerjson", self.routerjson),
                web.post("/jd/routerjson", self.routerjson)]

    async def routerjson(self, request: web.Request) -> web.Response:
        params = {**request.query, **(await request.post())}
        params = {k: v for k, v in params.items() if isinstance(v, str)}
        refused = self._refusal(params)
        if refused is not None:
            return refused
        if not self.bucket.take():
            return _error("2", "限制时间内调用失败次数", "App Call Limited")
        try:
            business = orjson.loads(params.get(PARAM_JSON, "{}"))
        except orjson.JSONDecodeError:
            return _business_error(f"{PARAM_JSON} is not JSON")
        if not isinstance(business, dict):
            return _business_error(f"{PARAM_JSON} is not an object")
        return self._search(business)

    def _refusal(self, params: dict[str, str]) -> web.Response | None:
        """JOS's gateway checks: method, version, timestamp, signature, token."""
        if not params.get("method"):
            return _error("14", "缺少方法名参数", "Missing Method")
        if params["method"] != METHOD:
            return _error("15", "不存在的方法名", "Invalid Method")
        if not params.get("v"):
            return _error("4", "缺少版本参数", "Missing Version")
        if params["v"] != "2.0":
            return _error("5", "不支持的版本号", "Unsupported Version")
        if not params.get("timestamp"):
            return _error("7", "缺少时间戳参数", "Missing Timestamp")
        stamp = _parse_time(params["timestamp"])
        if stamp is None or abs(datetime.now(UTC) - stamp) > TIMESTAMP_SKEW:
            return _error("8", "非法的时间戳参数", "Invalid Timestamp")
        if not params.get("sign"):
            return _error("11", "缺少签名参数", "Missing Signature")
        if (params.get("app_key") != self.config.get("app_key")
                or not signature_ok(params, self.config.get("app_secret", ""))):
            return _error("12", "无效签名", "Invalid Signature")
        if params.get("access_token") != self.config.get("access_token"):
            return _error("19", "无效access_token", "Invalid access_token")
        return None

    def _search(self, q: dict[str, Any]) -> web.Response:
        states = set(str(q.get("order_state", "")).split(",")) - {""}
        fields = set(str(q.get("optional_fields", "")).split(",")) - {""}
        start, end = _parse_time(q.get("start_date")), _parse_time(q.get("end_date"))
        page, size = str(q.get("page", "1")), str(q.get("page_size", "20"))
        if not states or not fields:
            return _business_error("order_state and optional_fields are required")
        if start is None or end is None or not start < end <= start + MAX_SPAN:
            return _business_error("start_date/end_date invalid or more than a month apart")
        if (not page.isdigit() or int(page) < 1 or not size.isdigit()
                or not 1 <= int(size) <= MAX_PAGE_SIZE):
            return _business_error("page or page_size out of range")
        if str(q.get("dateType", "0")) != "0":
            return _business_error("the sandbox serves dateType 0 (modified) only")
        orders = [o for o in self.store.window(start, end) if o["orderState"] in states]
        offset = (int(page) - 1) * int(size)
        page_docs = [{k: v for k, v in o.items() if k in fields}
                     for o in orders[offset:offset + int(size)]]
        return _result({"apiResult": dict(_OK), "orderTotal": len(orders),
                        "orderInfoList": page_docs})
