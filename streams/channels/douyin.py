"""Douyin Shop (抖店) pushed messages to ``OrderEvent``.

Input: one record per pushed message from ``connectors/channels/douyin.py``: body = one
array element ``{"tag", "msg_id", "data"}`` re-serialised by orjson, where ``data`` is a
JSON **string** decoded a second time here (an object is accepted as is);
``source_topic`` = the tag, ``source_event_id`` = ``msg_id``, ``shop_id`` = ``data.shop_id``.

Douyin facts this relies on (/work/research/pdd_douyin.md section 2; zsmhub/doudian-sdk
``message/*.go``, one file per tag, each citing op.jinritemai.com/docs/message-docs):

- order tags (data: ``p_id``, ``s_ids[]``, ``shop_id``, ``order_status``, ``order_type``,
  ``biz`` and the fields below): 100 TradeCreate (``create_time``), 101 TradePaid
  (``pay_amount``, ``pay_time``), 102 TradeSellerShip (``update_time``, ``logistics_msg``,
  ``receiver_msg``), 103 TradeSuccess (``complete_time``), 104 TradeLogisticsChanged
  (``update_time``, ``logistics_msg``), 105 TradeAddressChanged (``update_time``,
  ``receiver_msg`` with ``encrypt_name``/``encrypt_tel`` and ``addr`` a JSON string of
  ``{province, city, town, street: {name}, detail, encrypt_detail}``), 106 TradeCanceled
  (``cancel_time``, ``cancel_reason``), 108 TradePartlySellerShip (``update_time``,
  ``logistics_msg``), 109 TradeAmountChanged (``modify_time``, ``total_amount``,
  ``post_amount``). 110 TradePending carries no time at all and is not mapped
  (``unknown_topic``, like any other tag);
- ``order_status``: 1 awaiting payment, 105 paid (some flows), 2 备货中 (paid, to ship),
  101 partially shipped, 3 shipped, 4 cancelled, 5 completed (not contiguous: never compared
  with < or >; the research marks this enum unverified);
- after-sale tags (data: ``aftersale_id``, ``aftersale_status``, ``aftersale_type``, ``p_id``,
  ``s_id`` (the child order), ``shop_id``, ``refund_amount``, ``refund_post_amount``,
  ``update_time``): 200 RefundCreated (``apply_time``), 201 RefundAgreed (``agree_time``),
  202 RefundReturnApplyAgreed, 203 RefundBuyerReturnGoods (the buyer has sent the goods
  back: not yet received, Douyin has no "seller received" message), 204 RefundRefused
  (``refuse_time``), 205 RefundReturnApplyRefused (``refuse_time``), 206 RefundSuccess
  (``success_time``), 207 RefundClosed (``close_time``). ``aftersale_type``: 0 return and
  refund, 1 refund only after shipping, 2 whole-order refund before shipping (the order is
  then closed: tag 106 follows). ``aftersale_status`` is kept raw (its enum was not read);
- an after-sale names one child order (``s_id``), and the message does not say whether
  other child orders remain, so a refund success of type 0/1 is PARTIAL; type 2 is the
  whole order, FULL. ``refund_amount`` (fen) is what goes back (the sandbox includes the
  refunded postage in it; whether Douyin does is unverified); the child order is the refund
  line, with quantity 0 because messages never state quantities;
- money: integer **fen**, validated as integers (a float or string is ``bad_amount``).
  Messages carry only what changed: ``total_minor`` is 0 unless the message states an amount
  (101 ``pay_amount``, 109 ``total_amount``); there are no line details (only child ids),
  so ``lines`` is empty: consumers merge events by ``order_id``;
- time: unix **seconds** (source_tz ``UTC``); 0 means not set. After-sale ``update_time`` is
  typed ``time.Time`` by the SDK, so a string is accepted too: digits (unix seconds), RFC 3339
  with its offset, or ``yyyy-MM-dd HH:mm:ss`` read as China time;
- ids: ``p_id``, ``s_id``, ``aftersale_id`` are 19-digit JSON numbers, read as exact ints
  (a number beyond 64 bits comes out of orjson as a float and is refused) and kept as strings;
- PII: ``receiver_msg`` ``name``/``tel``/``addr`` are Douyin's masks (``张*``,
  ``138****5678``), re-masked by our rules; ``encrypt_*`` ciphertexts pass through as the
  receiver's ``ciphertext`` (a JSON object ``{"name", "phone", "address"}``). Messages carry
  no buyer id: ``buyer_ref`` stays None;
- shipping: ``logistics_msg.express_company_id`` (Douyin's carrier code) and
  ``logistics_code`` (the waybill number).
"""

from __future__ import annotations

from typing import Any

import orjson

from orderpulse import names
from orderpulse.errors import DecodeError, MappingError
from orderpulse.streams.channels.common import Context, build, id_string, loads_object, lookup, obj
from orderpulse.streams.pii import digits, mask_phone, party
from orderpulse.streams.timeparse import parse_china_naive, parse_epoch, parse_iso_with_offset

CHANNEL = names.CHANNEL_DOUYIN
CURRENCY = "CNY"

# Order tag -> (event type, the data field holding the event time; update_time is the
# fallback for every tag).
ORDER_TAGS: dict[str, tuple[str, str]] = {
    "100": ("CREATED", "create_time"),
    "101": ("PAID", "pay_time"),
    "102": ("SHIPPED", "update_time"),
    "103": ("COMPLETED", "complete_time"),
    "104": ("UPDATED", "update_time"),  # logistics changed
    "105": ("UPDATED", "update_time"),  # receiver changed
    "106": ("CANCELLED", "cancel_time"),
    "108": ("PARTIALLY_FULFILLED", "update_time"),
    "109": ("UPDATED", "modify_time"),  # amount changed
}

# order_status -> lifecycle status.
ORDER_STATUS: dict[int, str] = {
    1: "PENDING_PAYMENT",  # 待确认/待支付
    105: "PAID",  # 已支付
    2: "PAID",  # 备货中
    101: "SHIPPED",  # 部分发货
    3: "SHIPPED",  # 已发货
    4: "CANCELLED",  # 已取消
    5: "COMPLETED",  # 已完成
}

# After-sale tag -> (event type, Refund.status, refund overlay, time field). The overlay
# "REFUNDED" is FULL for a whole-order after-sale, else PARTIAL (module docstring).
AFTERSALE_TAGS: dict[str, tuple[str, str, str, str]] = {
    "200": ("REFUND_REQUESTED", "REQUESTED", "REQUESTED", "apply_time"),
    "201": ("UPDATED", "APPROVED", "REQUESTED", "agree_time"),
    "202": ("UPDATED", "APPROVED", "RETURN_PENDING", "update_time"),
    "203": ("UPDATED", "APPROVED", "RETURN_PENDING", "update_time"),
    "204": ("UPDATED", "REJECTED", "REJECTED", "refuse_time"),
    "205": ("UPDATED", "REJECTED", "REJECTED", "refuse_time"),
    "206": ("REFUNDED", "REFUNDED", "REFUNDED", "success_time"),
    "207": ("UPDATED", "CLOSED", "NONE", "close_time"),
}

# aftersale_type -> (Refund.kind, lifecycle status the after-sale implies, whole order).
# A return comes after delivery; a refund only after shipping may be before delivery.
AFTERSALE_TYPES: dict[int, tuple[str, str, bool]] = {
    0: ("RETURN_AND_REFUND", "DELIVERED", False),
    1: ("REFUND_ONLY", "SHIPPED", False),
    2: ("REFUND_ONLY", "PAID", True),
}

_LONG = 2**63
# Unix seconds before year 10000: later values are not times (and overflow readers).
_MAX_SECONDS = 253_402_300_800


def _message(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(message, decoded data) of one pushed message."""
    message = loads_object(body, "a Douyin message object")
    data = message.get("data")
    if isinstance(data, str):
        data = loads_object(data.encode(), "a Douyin message data object")
    elif not isinstance(data, dict):
        raise DecodeError("data: expected a JSON string or object", reason="not_json")
    return message, data


def _code(data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MappingError(f"unmapped {field} {str(value)[:40]!r}", reason="unmapped_status")
    return value


def _id(data: dict[str, Any], field: str) -> str:
    """A 19-digit id: an int or a digit string, never a float."""
    value = data.get(field)
    if value is None or value == "":
        raise MappingError(f"missing required field {field!r}", reason="missing_field")
    text = id_string(value, field)
    if not (text.isascii() and text.isdigit()):
        raise MappingError(f"{field}: expected a numeric id", reason="bad_id")
    return text


def _fen(data: dict[str, Any], field: str) -> int:
    """An amount in fen: a non-negative integer an Avro long can hold (0 when absent)."""
    value = data.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _LONG:
        raise MappingError(f"{field}: expected integer fen, got {type(value).__name__}",
                           reason="bad_amount")
    return value


def _time(value: Any, field: str) -> tuple[int, str] | None:
    """Unix seconds (or, for update_time, an SDK-typed string) -> (UTC ms, zone); None: unset."""
    if value is None or value in (0, "", "0") or isinstance(value, bool):
        return None
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        if len(value) == 19 and value[10] == " ":
            return parse_china_naive(value, field=field)
        return parse_iso_with_offset(value, field=field)
    event_time, zone = parse_epoch(value, field=field)
    if event_time >= _MAX_SECONDS * 1000:
        raise MappingError(f"{field}: unix seconds out of range", reason="bad_timestamp")
    return event_time, zone


def _event_time(data: dict[str, Any], field: str) -> tuple[int, str]:
    for name in dict.fromkeys((field, "update_time")):
        parsed = _time(data.get(name), name)
        if parsed is not None:
            if parsed[0] <= 0:
                raise MappingError(f"{name}: before 1970", reason="bad_timestamp")
            return parsed
    raise MappingError(f"missing required field {field!r}", reason="missing_field")


def _text(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                           reason="bad_shape")
    return str(value).strip() or None


def _phone_mask(value: str | None) -> str | None:
    """Douyin's phone mask kept (at most 7 digits show); anything clearer is masked again."""
    if value and "*" in value and len(digits(value)) <= 7:
        return value[:20]
    return mask_phone(value)


def _address(value: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """(masked address, province, city, address ciphertext) of ``receiver_msg.addr``: a
    masked string, or (tag 105) a JSON string of the address parts."""
    if not value or not value.startswith("{"):
        return value, None, None, None
    try:
        parts = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise MappingError("receiver_msg.addr: expected a JSON object", reason="bad_shape") \
            from exc
    parts = obj(parts, "receiver_msg.addr")

    def name(key: str) -> str | None:
        return _text(obj(parts.get(key), f"receiver_msg.addr.{key}").get("name"),
                     f"receiver_msg.addr.{key}.name")

    detail = _text(parts.get("detail"), "receiver_msg.addr.detail")
    masked = "".join(p for p in (name("province"), name("city"), name("town"), name("street"),
                                 detail) if p) or None
    return (masked, name("province"), name("city"),
            _text(parts.get("encrypt_detail"), "receiver_msg.addr.encrypt_detail"))


def _receiver(ctx: Context, data: dict[str, Any]) -> dict[str, Any] | None:
    msg = obj(data.get("receiver_msg"), "receiver_msg")
    if not msg:
        return None
    address, province, city, address_cipher = _address(_text(msg.get("addr"),
                                                             "receiver_msg.addr"))
    cipher = {k: v for k, v in (
        ("name", _text(msg.get("encrypt_name"), "receiver_msg.encrypt_name")),
        ("phone", _text(msg.get("encrypt_tel"), "receiver_msg.encrypt_tel")),
        ("address", address_cipher)) if v}
    receiver = party(ctx.pii_key, name=_text(msg.get("name"), "receiver_msg.name"),
                     address=address, province=province, city=city,
                     ciphertext=orjson.dumps(cipher, option=orjson.OPT_SORT_KEYS).decode()
                     if cipher else None)
    receiver["phone_masked"] = _phone_mask(_text(msg.get("tel"), "receiver_msg.tel"))
    return receiver if any(receiver.values()) else None


def _shipment(data: dict[str, Any]) -> tuple[str | None, str | None]:
    logistics = obj(data.get("logistics_msg"), "logistics_msg")
    return (_text(logistics.get("express_company_id"), "logistics_msg.express_company_id"),
            _text(logistics.get("logistics_code"), "logistics_msg.logistics_code"))


def _order_event(raw: dict[str, Any], ctx: Context, tag: str,
                 data: dict[str, Any]) -> dict[str, Any]:
    event_type, time_field = ORDER_TAGS[tag]
    code = _code(data, "order_status")
    status = lookup(ORDER_STATUS, code, field="order_status")
    event_time, source_tz = _event_time(data, time_field)
    total = _fen(data, "pay_amount") or _fen(data, "total_amount")
    carrier, tracking = _shipment(data)
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=_id(data, "p_id"), event_type=event_type,
        status=status, raw_status=f"tag={tag};order_status={code}", event_time=event_time,
        source_tz=source_tz, currency=CURRENCY, total_minor=total,
        paid_minor=_fen(data, "pay_amount"),
        shipping_minor=_fen(data, "post_amount"),
        receiver=_receiver(ctx, data),
        carrier=carrier, tracking_no=tracking,
    )


def _aftersale_event(raw: dict[str, Any], ctx: Context, tag: str,
                     data: dict[str, Any]) -> dict[str, Any]:
    event_type, refund_state, overlay, time_field = AFTERSALE_TAGS[tag]
    kind_code = _code(data, "aftersale_type")
    kind, status, whole_order = lookup(AFTERSALE_TYPES, kind_code, field="aftersale_type")
    aftersale_status = data.get("aftersale_status")
    if aftersale_status is not None:
        aftersale_status = _code(data, "aftersale_status")
    if tag == "200" and kind == "RETURN_AND_REFUND":
        event_type, overlay = "RETURN_REQUESTED", "RETURN_PENDING"
    if overlay == "REFUNDED":
        overlay = "FULL" if whole_order else "PARTIAL"
        status = "CANCELLED" if whole_order else status  # refunded before shipping: closed
    event_time, source_tz = _event_time(data, time_field)
    amount = _fen(data, "refund_amount")
    _fen(data, "refund_post_amount")  # validated; included in refund_amount (docstring)
    lines = [] if whole_order else [
        {"line_id": _id(data, "s_id"), "quantity": 0, "amount_minor": amount}]
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=_id(data, "p_id"), event_type=event_type,
        status=status, event_time=event_time, source_tz=source_tz, currency=CURRENCY,
        raw_status=f"tag={tag};aftersale_status={aftersale_status};aftersale_type={kind_code}",
        total_minor=0, refund_status=overlay,
        refunded_minor=amount if refund_state == "REFUNDED" else 0,
        refund={"kind": kind, "status": refund_state, "amount_minor": amount,
                "refund_id": _id(data, "aftersale_id"), "lines": lines},
    )


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One Douyin pushed message -> one ``OrderEvent`` dict."""
    message, data = _message(raw["body"])
    tag = message.get("tag", raw.get("source_topic"))
    tag = str(tag) if isinstance(tag, (str, int)) and not isinstance(tag, bool) else ""
    if tag in ORDER_TAGS:
        return [_order_event(raw, ctx, tag, data)]
    if tag in AFTERSALE_TAGS:
        return [_aftersale_event(raw, ctx, tag, data)]
    raise MappingError(f"unsupported Douyin tag {tag[:20]!r}", reason="unknown_topic")
