"""Pinduoduo (拼多多) polled OrderInfo snapshots to ``OrderEvent``.

Input: one record per order from ``connectors/channels/pinduoduo.py``: body = one
``OrderInfo`` of ``pdd.order.number.list.increment.get`` (re-serialised by orjson),
``source_topic`` = that API name, ``source_event_id`` = ``poll:<order_sn>:<updated_at>``.
Every record is a state, so the event type is always ``STATE``.

Pinduoduo facts this relies on (/work/research/pdd_douyin.md section 1; niltor/open-pdd-net-sdk
``GetOrderNumberListIncrementResponse.cs``, whose field docs are PDD's own):

- ids: ``order_sn`` is a string (``YYMMDD-`` + 15 digits); ``goods_id``/``sku_id`` are
  int64 (beyond 2**53), kept as strings;
- money: **yuan** as JSON numbers (``"pay_amount": 108.00``; the SDKs type them as double).
  ``orjson`` would turn them into floats, so the body is parsed a second time with
  ``json.loads(parse_float=Decimal)`` (after orjson has validated it: no NaN, no lone
  surrogates) and every amount goes through ``to_minor`` exactly. ``pay_amount = goods_amount
  - discount_amount + postage (+ service fees)``; ``item_list[].goods_price`` is a unit price.
  The connector re-serialises the body with orjson, which keeps any amount of up to 15
  significant digits as the same decimal text. Clear receiver values (none expected) are
  masked like any other, with a keyed phone hash;
- time: ``updated_at`` (the event time), ``pay_time``, ``receive_time``... are
  ``yyyy-MM-dd HH:mm:ss`` in China time (UTC+8, no offset): source_tz ``Asia/Shanghai``.
  ``""`` (or ``0001-01-01 00:00:00``) means not set, never epoch;
- status is four fields, combined here (tables below): ``order_status`` is shipping only
  (1 待发货, 2 已发货待签收, 3 已签收); ``confirm_status`` 0 未成交, 1 已成交, 2 已取消
  (cancellation lives here); ``refund_status`` 1 no after-sale or closed, 2 after-sale in
  progress, 3 refunding, 4 refunded; ``after_sales_status`` the fine-grained after-sale
  state (0 none, 2..32). PDD charges at order creation and "成交" is the group forming, so
  ``confirm_status`` 0 with a ``pay_time`` is a paid order waiting for its group (PAID);
  ``order_status`` 3 with ``receive_time`` (buyer confirmed receipt) is COMPLETED. The refund
  overlay comes from ``after_sales_status`` when an after-sale exists (exchange, resend and
  repair are after-sales without a refund: NONE), from ``refund_status`` otherwise, and money
  back (``refund_status`` 4) always shows;
- refunds: PDD after-sales are per order (an order is one goods); OrderInfo carries neither
  the refund id, the amount nor the lines (``pdd.refund.information.get`` has them). A
  successful refund of a cancelled order is FULL (PDD cancels a paid order by refunding all
  of it: ``refunded_minor`` = ``pay_amount``); any other successful refund is PARTIAL with
  ``refunded_minor`` 0 and ``refund.amount_minor`` 0: the amount is not stated;
- bundles: ``order_depot_info`` with ``ware_type`` 1 (组合货品) lists its
  ``ware_sub_info_list`` ``{ware_sn, ware_id, ware_quantity}``; the depot info is per order,
  so the components are attached only when the order has exactly one line;
- PII: ``receiver_name/phone/address`` are ciphertext (``~...~``/``$...$``) only while the
  order waits for shipping, ``""`` otherwise; ``receiver_*_mask`` / ``address_mask`` are
  PDD's masks. The masks become the receiver party (re-masked by our rules), the ciphertexts
  pass through as ``ciphertext`` (a JSON object ``{"name", "phone", "address"}``);
  ``province``/``city`` are clear. OrderInfo has no buyer id: ``buyer_ref`` stays None;
- shipping: ``tracking_number`` and ``logistics_id`` (PDD's carrier id; the logistics
  companies API that names it was not read): carrier = ``pdd:<logistics_id>``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

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
from orderpulse.streams.money import to_minor
from orderpulse.streams.pii import digits, is_ciphertext, mask_phone, party
from orderpulse.streams.timeparse import is_not_set, parse_china_naive

CHANNEL = names.CHANNEL_PINDUODUO
CURRENCY = "CNY"

# source_topic -> event type: a poll sees states, not deliveries.
EVENT_TYPES: dict[str, str] = {
    "pdd.order.number.list.increment.get": "STATE",
    "pdd.order.information.get": "STATE",  # same OrderInfo fields
}

# order_status (shipping only) -> lifecycle status.
ORDER_STATUS: dict[int, str] = {
    1: "PAID",  # 待发货: paid, waiting to be shipped
    2: "SHIPPED",  # 已发货待签收
    3: "DELIVERED",  # 已签收 (COMPLETED once receive_time is set)
}

# confirm_status -> lifecycle status that overrides shipping (None: shipping decides).
CONFIRM_STATUS: dict[int, str | None] = {
    0: "PENDING_PAYMENT",  # 未成交 (PAID when pay_time is set: the group is forming)
    1: None,  # 已成交
    2: "CANCELLED",  # 已取消
}

# refund_status -> refund overlay. "REFUNDED": money went back, FULL or PARTIAL below.
REFUND_STATUS: dict[int, str] = {
    1: "NONE",  # 无售后或售后关闭
    2: "REQUESTED",  # 售后处理中
    3: "REQUESTED",  # 退款中: agreed, money not back yet
    4: "REFUNDED",  # 退款成功
}

# after_sales_status -> (refund overlay, Refund.kind, Refund.status). 0 (None...): no
# after-sale, refund_status decides; exchange, resend and repair are after-sales without a
# refund ("NONE", no Refund record). Money back (refund_status 4) shows whatever this says.
AFTER_SALES_STATUS: dict[int, tuple[str | None, str | None, str | None]] = {
    0: (None, None, None),  # 无售后
    2: ("REQUESTED", "REFUND_ONLY", "REQUESTED"),  # 买家申请退款, 待商家处理
    3: ("RETURN_PENDING", "RETURN_AND_REFUND", "REQUESTED"),  # 退货退款, 待商家处理
    4: ("REQUESTED", "UNKNOWN", "APPROVED"),  # 商家同意退款, 退款中
    5: ("REQUESTED", "UNKNOWN", "APPROVED"),  # 平台同意退款, 退款中
    6: ("REJECTED", "UNKNOWN", "REJECTED"),  # 驳回退款, 待买家处理
    7: ("RETURN_PENDING", "RETURN_AND_REFUND", "APPROVED"),  # 已同意退货退款, 待用户发货
    8: ("REQUESTED", "UNKNOWN", "REQUESTED"),  # 平台处理中
    9: ("REJECTED", "UNKNOWN", "REJECTED"),  # 平台拒绝退款, 退款关闭
    10: ("REFUNDED", "UNKNOWN", "REFUNDED"),  # 退款成功
    11: ("NONE", "UNKNOWN", "CLOSED"),  # 买家撤销
    12: ("NONE", "UNKNOWN", "CLOSED"),  # 买家逾期未处理, 退款失败
    13: ("NONE", "UNKNOWN", "CLOSED"),  # 买家逾期, 超过有效期
    14: ("NONE", None, None),  # 换货补寄待商家处理
    15: ("NONE", None, None),  # 换货补寄待用户处理
    16: ("NONE", None, None),  # 换货补寄成功
    17: ("NONE", None, None),  # 换货补寄失败
    18: ("NONE", None, None),  # 换货补寄待用户确认完成
    21: ("NONE", None, None),  # 待商家同意维修
    22: ("NONE", None, None),  # 待用户确认发货
    24: ("NONE", None, None),  # 维修关闭
    25: ("NONE", None, None),  # 维修成功
    27: ("NONE", None, None),  # 待用户确认收货
    31: ("RETURN_PENDING", "RETURN_AND_REFUND", "APPROVED"),  # 已同意拒收退款, 待用户拒收
    32: ("NONE", None, None),  # 补寄待商家发货
}

# refund_status overlay -> Refund.status when after_sales_status says nothing.
_REFUND_RECORD: dict[str, str] = {"REQUESTED": "REQUESTED", "REFUNDED": "REFUNDED"}

_LONG = 2**63
_INT = 2**31


def _decode(body: bytes) -> dict[str, Any]:
    """The OrderInfo with exact Decimal amounts (see the module docstring)."""
    loads_object(body, "a Pinduoduo OrderInfo object")  # validates: orjson is strict
    try:
        doc = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise DecodeError("expected a Pinduoduo OrderInfo object", reason="not_json") from exc
    if not isinstance(doc, dict):
        raise DecodeError("expected a Pinduoduo OrderInfo object", reason="not_json")
    return doc


def _code(doc: dict[str, Any], field: str, default: int | None = None) -> int:
    """A status code: an integer (or digit string); never a bool or a decimal."""
    value = doc.get(field)
    if value is None and default is not None:
        return default
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MappingError(f"unmapped {field} {str(value)[:40]!r}", reason="unmapped_status")
    return value


def _yuan(value: Any, field: str) -> int:
    """A yuan amount (Decimal/int) to fen; refuses what an Avro long cannot hold."""
    try:
        fen = to_minor(value, CURRENCY, field=field)
    except ArithmeticError as exc:  # decimal signals: overflow and the like
        raise MappingError(f"{field}: not a usable amount", reason="bad_amount") from exc
    if not 0 <= fen < _LONG:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return fen


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _INT:
        raise MappingError(f"{field}: expected a non-negative integer", reason="bad_line")
    return value


def _text(value: Any, field: str) -> str | None:
    """A scalar text field as str, None when absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                           reason="bad_shape")
    return str(value).strip() or None


def _is_set(doc: dict[str, Any], field: str) -> bool:
    value = doc.get(field)
    return isinstance(value, str) and not is_not_set(value)


def _after_sale(doc: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(refund overlay before FULL/PARTIAL, Refund.kind, Refund.status) of the order."""
    coarse = lookup(REFUND_STATUS, _code(doc, "refund_status"), field="refund_status")
    overlay, kind, state = lookup(AFTER_SALES_STATUS, _code(doc, "after_sales_status", 0),
                                  field="after_sales_status")
    if coarse == "REFUNDED" and overlay != "REFUNDED":
        return coarse, "UNKNOWN", _REFUND_RECORD[coarse]
    if overlay is None:
        record = _REFUND_RECORD.get(coarse)
        return coarse, "UNKNOWN" if record else None, record
    return overlay, kind, state


def map_status(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(lifecycle status, refund overlay, raw_status); raises on any unknown code."""
    codes = {f: _code(doc, f) for f in ("order_status", "confirm_status", "refund_status")}
    codes["after_sales_status"] = _code(doc, "after_sales_status", default=0)
    shipping = lookup(ORDER_STATUS, codes["order_status"], field="order_status")
    confirm = lookup(CONFIRM_STATUS, codes["confirm_status"], field="confirm_status")
    overlay = _after_sale(doc)[0]
    if confirm == "CANCELLED" or (confirm == "PENDING_PAYMENT" and not _is_set(doc, "pay_time")):
        status = confirm
    elif shipping == "DELIVERED" and _is_set(doc, "receive_time"):
        status = "COMPLETED"
    else:
        status = shipping
    if overlay == "REFUNDED":
        overlay = "FULL" if status == "CANCELLED" else "PARTIAL"
    return status, overlay, ";".join(f"{k}={v}" for k, v in codes.items())


def _refund(doc: dict[str, Any], overlay: str, total: int) -> dict[str, Any] | None:
    """The Refund record OrderInfo supports: kind and state, amount only when FULL."""
    _, kind, state = _after_sale(doc)
    if state is None:
        return None
    return {"kind": kind, "status": state, "amount_minor": total if overlay == "FULL" else 0,
            "refund_id": None, "lines": []}


def _components(doc: dict[str, Any]) -> list[tuple[str, int]]:
    depot = obj(doc.get("order_depot_info"), "order_depot_info")
    if depot.get("ware_type") != 1 or isinstance(depot.get("ware_type"), bool):
        return []
    parts = []
    for sub in items(depot.get("ware_sub_info_list"), "order_depot_info.ware_sub_info_list"):
        sub = obj(sub, "ware_sub_info_list[]")
        sku = _text(sub.get("ware_sn"), "ware_sub_info_list.ware_sn") \
            or f"ware:{id_string(require(sub, 'ware_id'), 'ware_sub_info_list.ware_id')}"
        parts.append((sku, _count(sub.get("ware_quantity"), "ware_sub_info_list.ware_quantity")))
    return parts


def _lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    lines = []
    for n, item in enumerate(items(doc.get("item_list"), "item_list"), start=1):
        item = obj(item, "item_list[]")
        sku_id = item.get("sku_id")
        sku_id = None if sku_id in (None, "") else id_string(sku_id, "item_list.sku_id")
        outer_id = _text(item.get("outer_id"), "item_list.outer_id")
        if outer_id is None and sku_id is None:
            raise MappingError("item_list: neither outer_id nor sku_id", reason="missing_field")
        sku = outer_id or f"sku:{sku_id}"
        lines.append(line(sku_id or f"line:{n}", sku,
                          _count(item.get("goods_count"), "item_list.goods_count"),
                          _yuan(item.get("goods_price"), "item_list.goods_price")))
    if len(lines) == 1:
        lines[0]["components"] = [{"sku": s, "quantity": q} for s, q in _components(doc)]
    return lines


def _phone_mask(value: str | None) -> str | None:
    """PDD's phone mask kept (at most 7 digits show); anything clearer is masked again."""
    if value and "*" in value and len(digits(value)) <= 7:
        return value[:20]
    return mask_phone(value)


def _receiver(ctx: Context, doc: dict[str, Any]) -> dict[str, Any] | None:
    def text(field: str) -> str | None:
        return _text(doc.get(field), field)

    given = {"name": text("receiver_name"), "phone": text("receiver_phone"),
             "address": text("receiver_address") or text("address")}
    cipher = {k: v for k, v in given.items() if v and is_ciphertext(v)}
    clear = {k: v for k, v in given.items() if v and k not in cipher}
    receiver = party(ctx.pii_key, name=clear.get("name") or text("receiver_name_mask"),
                     phone=clear.get("phone"),
                     address=clear.get("address") or text("receiver_address_mask")
                     or text("address_mask"),
                     province=text("province"), city=text("city"),
                     ciphertext=orjson.dumps(cipher, option=orjson.OPT_SORT_KEYS).decode()
                     if cipher else None)
    if not clear.get("phone"):
        receiver["phone_masked"] = _phone_mask(text("receiver_phone_mask"))
    return receiver if any(receiver.values()) else None


def _shipment(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    tracking = _text(doc.get("tracking_number"), "tracking_number")
    logistics = doc.get("logistics_id")
    if tracking is None or logistics in (None, 0, "", "0"):
        return None, tracking
    return f"pdd:{id_string(logistics, 'logistics_id')}", tracking


def _warehouse(doc: dict[str, Any]) -> str | None:
    depot = obj(doc.get("order_depot_info"), "order_depot_info")
    return (_text(depot.get("depot_code"), "order_depot_info.depot_code")
            or _text(depot.get("depot_name"), "order_depot_info.depot_name"))


def _order_sn(doc: dict[str, Any]) -> str:
    value = require(doc, "order_sn")
    if not isinstance(value, str):
        raise MappingError("order_sn: expected a string", reason="bad_id")
    return id_string(value, "order_sn")


def _event_time(doc: dict[str, Any]) -> tuple[int, str]:
    value = doc.get("updated_at")
    if is_not_set(value) or value == "":
        raise MappingError("missing required field 'updated_at'", reason="missing_field")
    event_time, tz = parse_china_naive(value, field="updated_at")
    if event_time <= 0:  # before 1970 in UTC: no PDD order is that old
        raise MappingError("updated_at: before 1970", reason="bad_timestamp")
    return event_time, tz


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One Pinduoduo OrderInfo snapshot -> one ``STATE`` ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in EVENT_TYPES:
        raise MappingError(f"unsupported Pinduoduo topic {str(topic)[:60]!r}",
                           reason="unknown_topic")
    doc = _decode(raw["body"])
    order_sn = _order_sn(doc)
    status, overlay, raw_status = map_status(doc)
    event_time, source_tz = _event_time(doc)
    total = _yuan(require(doc, "pay_amount"), "pay_amount")
    paid = _is_set(doc, "pay_time") or status not in ("PENDING_PAYMENT", "CANCELLED")
    carrier, tracking = _shipment(doc)
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=order_sn, event_type=EVENT_TYPES[topic],
        status=status, raw_status=raw_status, event_time=event_time, source_tz=source_tz,
        currency=CURRENCY, total_minor=total,
        refund_status=overlay,
        paid_minor=total if paid else 0,
        discount_minor=_yuan(doc.get("discount_amount"), "discount_amount"),
        shipping_minor=_yuan(doc.get("postage"), "postage"),
        refunded_minor=total if overlay == "FULL" else 0,
        lines=_lines(doc),
        receiver=_receiver(ctx, doc),
        warehouse=_warehouse(doc),
        carrier=carrier, tracking_no=tracking,
        refund=_refund(doc, overlay, total),
    )]
