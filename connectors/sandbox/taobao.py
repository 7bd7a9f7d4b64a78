"""Taobao / Tmall, played locally: ``taobao.trades.sold.increment.get`` on
``/taobao/router/rest`` (GET or form POST), signed and answered like TOP.

Rendering: a ``SimOrder`` becomes a TOP ``Trade`` (non-simplified JSON): ``tid``
a JSON number (19 digits) plus ``tid_str``, yuan strings, naive GMT+8 times
(unset ones left out, as TOP does), receiver fields masked (name ``张**``, mobile
``*******1234``, street ``某***号``; the exact mask format is unverified) with an
opaque ``oaid``, lines under ``orders.order`` with their own ``status`` and
``refund_status``. Every tenth order is cash on delivery (``type`` ``cod``); the
rest are ``fixed``, a type the API returns only when asked for it.

Lifecycle event -> trade status (``modified`` moves only when the trade changes):
created WAIT_BUYER_PAY (COD: WAIT_SELLER_SEND_GOODS); paid WAIT_SELLER_SEND_GOODS
(COD: no change); shipped WAIT_BUYER_CONFIRM_GOODS; in_transit no change;
delivered no change (COD: TRADE_BUYER_SIGNED); completed TRADE_FINISHED;
cancelled TRADE_CLOSED_BY_TAOBAO before payment, TRADE_CLOSED after (lines
refund_status SUCCESS); refund_requested / return_requested: the line's
refund_status WAIT_SELLER_AGREE; return_received WAIT_SELLER_CONFIRM_GOODS;
refunded SUCCESS, the line TRADE_CLOSED, the trade TRADE_CLOSED when it had one line.

Serving: app key, session and signature checked (TOP codes 28/29, 26/27, 25),
timestamp within +-10 minutes (31), then the rate (code 7 "App Call Limited",
sub_code ``accesscontrol.limited-by-app-access-count``, "This ban will last for 1
more seconds"), then the arguments (40/41: window <= 1 day, page_size 1..100,
format json only). ``[start_modified, end_modified)`` is served (the doc does not
say whether the end is inclusive), filtered by ``type`` (default set without
``fixed``), newest ``modified`` first, ``fields`` honoured, ``total_results`` or
``has_next`` (``use_has_next=true``).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar

import orjson
from aiohttp import web

from orderpulse import names
from orderpulse.connectors.channels.taobao import (
    CHINA_TZ,
    MAX_PAGE_SIZE,
    METHOD,
    RESPONSE_KEY,
    TIME_FORMAT,
    TaobaoPoll,
    china_time,
    signature_ok,
)
from orderpulse.connectors.sandbox.base import PollChannelSim
from orderpulse.connectors.sandbox.lifecycle import CATALOGUE, SimLine, SimOrder

CHANNEL = names.CHANNEL_TAOBAO
TID_BASE = 3_800_000_000_000_000_000
OID_BASE = 3_900_000_000_000_000_000
NUM_IID_BASE = 712_000_000_000
DEFAULT_TYPES = frozenset({"guarantee_trade", "auto_delivery", "ec", "cod", "step"})
TIMESTAMP_SKEW = timedelta(minutes=10)
CENT = Decimal("0.01")
_SKU_INDEX = {sku: n for n, sku in enumerate(sorted(CATALOGUE), start=1)}
REFUND_STATUS = {"requested": "WAIT_SELLER_AGREE", "returned": "WAIT_SELLER_CONFIRM_GOODS",
                 "refunded": "SUCCESS"}


def is_cod(order: SimOrder) -> bool:
    return order.number % 10 == 0


def seen(order: SimOrder, event: str) -> bool:
    """Whether ``event`` changes the trade (and so its ``modified``) on Taobao."""
    if event == "in_transit":
        return False
    if event == "delivered":
        return is_cod(order)  # signed for on delivery; otherwise nothing changes
    return not (event == "paid" and is_cod(order))


def paid_online(order: SimOrder) -> bool:
    return order.is_paid and not is_cod(order)


def trade_status(order: SimOrder) -> str:
    if order.cancelled_at:
        return "TRADE_CLOSED" if paid_online(order) else "TRADE_CLOSED_BY_TAOBAO"
    if order.refund_state == "refunded" and len(order.lines) == 1:
        return "TRADE_CLOSED"
    if order.completed_at:
        return "TRADE_FINISHED"
    if is_cod(order) and order.delivered_at:
        return "TRADE_BUYER_SIGNED"
    if order.shipped_at:
        return "WAIT_BUYER_CONFIRM_GOODS"
    return "WAIT_SELLER_SEND_GOODS" if order.is_paid or is_cod(order) else "WAIT_BUYER_PAY"


def refund_status(order: SimOrder, line: SimLine) -> str:
    if order.cancelled_at:
        return "SUCCESS" if paid_online(order) else "NO_REFUND"
    if order.refund_state and line.line_no == order.refund_line_no:
        return REFUND_STATUS[order.refund_state]
    return "NO_REFUND"


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime | None) -> str | None:
    return china_time(at) if at else None


def _mask_phone(phone: str) -> str:
    return "*" * 7 + phone[-4:]


def _street(order: SimOrder) -> str:
    return order.address.removeprefix(order.province).removeprefix("某市").removeprefix("某区")


def _line_discounts(order: SimOrder) -> list[Decimal]:
    """The trade discount spread over lines by amount (the last line takes the rest)."""
    shares, left = [], order.discount
    for line in order.lines[:-1]:
        share = (order.discount * line.amount / order.subtotal).quantize(CENT, ROUND_HALF_UP)
        shares.append(share)
        left -= share
    return [*shares, left]


def _line(order: SimOrder, line: SimLine, discount: Decimal, status: str) -> dict[str, Any]:
    total = line.amount - discount
    refund = refund_status(order, line)
    return {
        "oid": OID_BASE + order.number * 100 + line.line_no,
        "num_iid": NUM_IID_BASE + _SKU_INDEX.get(line.sku, 99),
        "sku_id": str(5_012_345_678_900 + _SKU_INDEX.get(line.sku, 99)),
        "outer_iid": line.sku.split("-")[0], "outer_sku_id": line.sku, "title": line.sku.title(),
        "num": line.quantity, "price": _money(line.unit_price), "total_fee": _money(total),
        "discount_fee": _money(discount), "adjust_fee": "0.00",
        # Order.payment includes the postage only when the trade has a single line.
        "payment": _money(total + (order.shipping_fee if len(order.lines) == 1 else 0)),
        "divide_order_fee": _money(total),
        "status": "TRADE_CLOSED" if refund == "SUCCESS" else status,
        "refund_status": refund,
        **({"refund_id": str(order.number * 1000 + line.line_no)} if refund != "NO_REFUND"
           else {}),
    }


def render(order: SimOrder) -> dict[str, Any]:
    """The order as TOP's ``Trade`` (all fields the connector asks for)."""
    tid = order.id19(TID_BASE)
    status = trade_status(order)
    pay_time = order.delivered_at if is_cod(order) else order.paid_at
    end = order.completed_at or order.cancelled_at or (
        order.updated if status == "TRADE_CLOSED" else None)
    nick = f"tb{order.number}"
    trade: dict[str, Any] = {
        "tid": int(tid), "tid_str": tid, "status": status, "type": "cod" if is_cod(order)
        else "fixed", "created": _ts(order.created), "modified": _ts(order.updated),
        "pay_time": _ts(pay_time), "consign_time": _ts(order.shipped_at), "end_time": _ts(end),
        "total_fee": _money(order.subtotal), "post_fee": _money(order.shipping_fee),
        "discount_fee": _money(order.discount), "adjust_fee": "0.00",
        "payment": _money(order.total),
        "received_payment": _money(order.total if status == "TRADE_FINISHED" else Decimal(0)),
        "buyer_nick": f"{nick[0]}**{nick[-1]}",
        "buyer_open_uid": "AAH" + hashlib.sha256(nick.encode()).hexdigest()[:21],
        "receiver_name": order.buyer_name[0] + "**", "receiver_state": order.province,
        "receiver_city": "某市", "receiver_district": "某区", "receiver_town": "",
        "receiver_address": f"{_street(order)[:1]}***{order.address[-1:]}",
        "receiver_zip": "000000", "receiver_mobile": _mask_phone(order.buyer_phone),
        "receiver_phone": "", "oaid": hashlib.sha256(f"oaid:{tid}".encode()).hexdigest()[:32],
        "orders": {"order": [_line(order, line, discount, status) for line, discount
                             in zip(order.lines, _line_discounts(order), strict=True)]},
    }
    return {k: v for k, v in trade.items() if v is not None}


def select(trade: dict[str, Any], fields: set[str]) -> dict[str, Any]:
    """Only the requested fields (``orders.x`` selects line fields), as TOP answers."""
    out = {k: v for k, v in trade.items() if k in fields}
    line_fields = {f.split(".", 1)[1] for f in fields if f.startswith("orders.")}
    if line_fields and "orders" not in fields:
        out["orders"] = {"order": [{k: v for k, v in line.items() if k in line_fields}
                                   for line in trade["orders"]["order"]]}
    return out


def _error(code: int, msg: str, sub_code: str | None = None,
           sub_msg: str | None = None) -> web.Response:
    err: dict[str, Any] = {"code": code, "msg": msg}
    if sub_code:
        err["sub_code"], err["sub_msg"] = sub_code, sub_msg or sub_code
    err["request_id"] = uuid.uuid4().hex[:13]
    return _json({"error_response": err})


def _json(doc: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(doc), content_type="application/json",
                        charset="utf-8")


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=CHINA_TZ)
    except ValueError:
        return None


def _parse_timestamp(value: str) -> datetime | None:
    """TOP accepts the GMT+8 string and, from the official SDK, epoch milliseconds."""
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    return _parse_time(value)


class TaobaoPollSim(PollChannelSim):
    """TOP's router serving ``taobao.trades.sold.increment.get`` from the store."""

    channel = CHANNEL
    rate_per_s: ClassVar[float] = TaobaoPoll.rate_per_s
    burst: ClassVar[int] = TaobaoPoll.burst

    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        if seen(order, event):
            self.store.put(order.id19(TID_BASE), order.updated.replace(microsecond=0),
                           render(order))

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/taobao/router/rest", self.rest),
                web.post("/taobao/router/rest", self.rest)]

    async def rest(self, request: web.Request) -> web.Response:
        params = {**request.query, **(await request.post())}
        params = {k: v for k, v in params.items() if isinstance(v, str)}
        refused = self._refusal(params)
        if refused is not None:
            return refused
        if not self.bucket.take():
            return _error(7, "App Call Limited", "accesscontrol.limited-by-app-access-count",
                          "This ban will last for 1 more seconds")
        return self._search(params)

    def _refusal(self, params: dict[str, str]) -> web.Response | None:
        """TOP's gateway checks, in its order: method, app key, timestamp, sign, session."""
        if not params.get("method"):
            return _error(21, "Missing Method")
        if params["method"] != METHOD:
            return _error(22, "Invalid Method")
        if not params.get("app_key"):
            return _error(28, "Missing App Key")
        if params["app_key"] != self.config.get("app_key"):
            return _error(29, "Invalid App Key")
        stamp = _parse_timestamp(params.get("timestamp", ""))
        if stamp is None or abs(datetime.now(UTC) - stamp) > TIMESTAMP_SKEW:
            return _error(31, "Invalid Timestamp")
        if not signature_ok(params, self.config.get("app_secret", "")):
            return _error(25, "Invalid Signature")
        if not params.get("session"):
            return _error(26, "Missing Session")
        if params["session"] != self.config.get("session"):
            return _error(27, "Invalid Session", "invalid-sessionkey")
        return None

    def _search(self, params: dict[str, str]) -> web.Response:
        missing = [p for p in ("fields", "start_modified", "end_modified") if not params.get(p)]
        if missing:
            return _error(40, "Missing Required Arguments", f"isv.missing-parameter:{missing[0]}")
        start, end = _parse_time(params["start_modified"]), _parse_time(params["end_modified"])
        page_no, size = params.get("page_no", "1"), params.get("page_size", "40")
        if (start is None or end is None or not start < end <= start + timedelta(days=1)
                or not page_no.isdigit() or int(page_no) < 1 or not size.isdigit()
                or not 1 <= int(size) <= MAX_PAGE_SIZE or params.get("format") != "json"):
            return _error(41, "Invalid Arguments", "isv.invalid-parameter")
        types = set(params["type"].split(",")) if params.get("type") else DEFAULT_TYPES
        trades = [t for t in reversed(self.store.window(start, end)) if t["type"] in types]
        offset = (int(page_no) - 1) * int(size)
        fields = set(params["fields"].split(","))
        body: dict[str, Any] = {}
        page = [select(t, fields) for t in trades[offset:offset + int(size)]]
        if params.get("use_has_next") == "true":
            body["has_next"] = offset + int(size) < len(trades)
        else:
            body["total_results"] = len(trades)
        if page:  # TOP leaves empty lists out
            body["trades"] = {"trade": page}
        body["request_id"] = uuid.uuid4().hex[:13]
        return _json({RESPONSE_KEY: body})
