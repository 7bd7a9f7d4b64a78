"""Youzan (有赞云) trades to ``OrderEvent``: push messages and polled ``trades.sold.get``.

Inputs (connectors/channels/youzan.py):
- a push: body = the push envelope ``{id (tid), kdt_id, type, status, msg, msg_id,
  version, test, ...}``, source_topic = ``type`` (``trade_TradeCreate``...).
  ``msg`` is the payload as **form-URL-encoded JSON** (``+`` for spaces: decoded
  with ``unquote_plus``). Trade pushes carry the full trade ``{full_order_info,
  refund_order, delivery_order, order_promotion}``; ``trade_TradeSuccess`` (and
  ``trade_TradePartlySellerShip``) carry a small ``{tid, update_time, ...}``: those
  become status-only events (no money, no lines) flagged ``STATUS_ONLY``, their
  status from the envelope's ``status`` (else from the push type).
- a poll: source_topic ``youzan.trades.sold.get``, body = one
  ``full_order_info_list`` element (the same shape as a full ``msg``), event STATE.

Channel facts used (research notes /work/research/youzan_woo.md; the official
docs were unavailable, OSS-derived facts marked there):
- ``order_info.status``: WAIT_BUYER_PAY, TRADE_PAID (transient, TradePaid pushes),
  WAIT_CONFIRM (paid, awaiting group/merchant acceptance), WAIT_SELLER_SEND_GOODS,
  WAIT_BUYER_CONFIRM_GOODS, TRADE_SUCCESS, TRADE_CLOSED (also spelt TRADE_CLOSE).
- ``order_info.refund_state``: 0 none, 1 partial refund in progress, 2 partial
  refunded, 11 full refund in progress, 12 fully refunded (int; digit strings read).
- Money: yuan decimal strings (CNY). ``pay_info.payment`` = what the buyer pays,
  shipping included; ``total_fee`` = goods before shipping and discounts; the
  discount is derived as ``total_fee + post_fee - payment`` (never below 0).
  No tax field (Chinese prices include VAT): tax_minor stays 0.
- Times: ``yyyy-MM-dd HH:mm:ss`` Beijing time (UTC+8) without offset; unset
  times are ``""`` (or 0 / 1970...): None, never epoch. Event time =
  ``update_time``, else the envelope ``version`` (epoch seconds, = update time),
  else ``created``; source_tz ``Asia/Shanghai`` (``UTC`` when from ``version``).
- Ids: ``tid`` an "E..." string; ``oid`` a 19-digit string (kept a string, must
  be digits); ``sku_id`` 0 = no SKU.
- Lines: sku = ``outer_sku_id``; else for a no-SKU item ``outer_item_id``
  (else ``item:<item_id>``); else ``sku:<sku_id>``. Unit price = ``price`` (list
  price, yuan). Combo (组合商品) contents are not in the researched item shape:
  components stay empty [unverified].
- Refunds: ``refund_order[] {refund_id, refund_fee, refund_state, oids[]}``
  [unverified shape, as the sandbox renders it]: refunded_minor sums the
  refund_fee of refunded elements (state 2/12); with no element, a full refund
  (12) counts the whole payment and a partial one (2) counts 0. Each oid's
  element state is its line's raw refund_status. The refund record (kind
  UNKNOWN: Youzan's element does not say refund-only vs return) sums the
  elements; a line's amount is the element's fee when it covers one oid, else
  the line's ``payment``.
- Shipping: ``delivery_order[].dists[].express_info {express_id, express_no}``:
  tracking_no = express_no, carrier = ``youzan_express:<express_id>`` (Youzan's
  express ids are not mapped to carrier codes [unverified]).
- PII: ``buyer_info`` (fans_nickname, buyer_phone) and ``address_info``
  (receiver_name, receiver_tel, delivery_*) via ``party()``; the address is
  province+city+district+street so the mask keeps only the region. Youzan
  already masks phones (``138****8000``): such a value is kept as phone_masked
  and never hashed (a hash of a mask joins strangers). Ciphertext markers pass
  through. buyer_ref = keyed ref of ``yz_open_id`` (else ``buyer_id``).
- Console test pushes (``test: true``) are flagged ``TEST_MESSAGE``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

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
from orderpulse.streams.pii import keyed_ref, party
from orderpulse.streams.timeparse import is_not_set, parse_china_naive, parse_epoch

CHANNEL = names.CHANNEL_YOUZAN
CURRENCY = "CNY"
POLL_TOPIC = "youzan.trades.sold.get"
FLAG_STATUS_ONLY = "STATUS_ONLY"  # the message had no money or lines: absent, not zero
FLAG_TEST = "TEST_MESSAGE"  # a console test push

# Push type (source_topic) -> event type; the poll is a snapshot.
EVENT_TYPES: dict[str, str] = {
    "trade_TradeCreate": "CREATED",
    "trade_TradeBuyerPay": "PAID",
    "trade_TradePaid": "PAID",
    "trade_TradePartlySellerShip": "PARTIALLY_FULFILLED",
    "trade_TradeSellerShip": "SHIPPED",
    "trade_TradeSuccess": "COMPLETED",
    "trade_TradeClose": "CANCELLED",
    POLL_TOPIC: "STATE",
}

# order_info.status (and a push envelope's status) -> lifecycle status.
STATUSES: dict[str, str] = {
    "WAIT_BUYER_PAY": "PENDING_PAYMENT",
    "TRADE_PAID": "PAID",
    "WAIT_CONFIRM": "PAID",  # paid; waits for the group to fill or the merchant to accept
    "WAIT_SELLER_SEND_GOODS": "PAID",
    "WAIT_BUYER_CONFIRM_GOODS": "SHIPPED",
    "TRADE_SUCCESS": "COMPLETED",
    "TRADE_CLOSED": "CANCELLED",
    "TRADE_CLOSE": "CANCELLED",  # the spelling some sources use
}

# Status-only pushes without an envelope status: what the push type itself says.
TOPIC_STATUSES: dict[str, str] = {
    "trade_TradeCreate": "PENDING_PAYMENT",
    "trade_TradeBuyerPay": "PAID",
    "trade_TradePaid": "PAID",
    "trade_TradePartlySellerShip": "SHIPPED",
    "trade_TradeSellerShip": "SHIPPED",
    "trade_TradeSuccess": "COMPLETED",
    "trade_TradeClose": "CANCELLED",
}

# order_info.refund_state -> (refund_status overlay, refund record status).
REFUND_STATES: dict[int, tuple[str, str | None]] = {
    0: ("NONE", None),
    1: ("REQUESTED", "REQUESTED"),  # partial refund in progress
    2: ("PARTIAL", "REFUNDED"),
    11: ("REQUESTED", "REQUESTED"),  # full refund in progress
    12: ("FULL", "REFUNDED"),
}
_REFUNDED = frozenset({2, 12})
# No trade comes near this (10^13 yuan); the bound keeps sums inside Avro longs.
MAX_MINOR = 10**15
_MASKED_PHONE = re.compile(r"\d{3}\*{4}\d{4}")


def _text(value: Any, field: str) -> str | None:
    """A free-text field: None when empty; numbers as text; anything else is bad shape."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                       reason="bad_shape")


def _minor(amount: Any, field: str) -> int:
    """Yuan (decimal string) -> fen, range-checked (exotic exponents are bad input)."""
    try:
        minor = to_minor(amount, CURRENCY, field=field)
    except ArithmeticError as exc:  # decimal Overflow / InvalidOperation (sNaN)
        raise MappingError(f"{field}: not a usable decimal amount",
                           reason="bad_amount") from exc
    if abs(minor) > MAX_MINOR:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return minor


def _time(value: Any, field: str) -> tuple[int, str] | None:
    """A Beijing-time string; None when Youzan's "not set" ("", 0, 1970...)."""
    if is_not_set(value) or value in (0, "0"):
        return None
    return parse_china_naive(value, field=field)


def _version(envelope: dict[str, Any]) -> tuple[int, str] | None:
    version = envelope.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 2**62:
        return None
    # Epoch seconds (the connector has seen milliseconds on some pushes).
    return parse_epoch(version, field="version", unit="ms" if version > 10**12 else "s")


def _event_time(info: dict[str, Any], envelope: dict[str, Any]) -> tuple[int, str]:
    found = (_time(info.get("update_time"), "update_time") or _version(envelope)
             or _time(info.get("created"), "created"))
    if found is None:
        raise MappingError("missing required field 'update_time'", reason="missing_field")
    return found


def _refund_state(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 6:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _oid(value: Any, field: str) -> str:
    text = id_string(value, field)
    if not (text.isascii() and text.isdigit()):
        raise MappingError(f"{field}: expected a numeric id", reason="bad_id")
    return text


def _sku(item: dict[str, Any]) -> str:
    outer = _text(item.get("outer_sku_id"), "orders.outer_sku_id")
    if outer:
        return outer
    sku_id = item.get("sku_id")
    if sku_id in (None, 0, "0", ""):
        return (_text(item.get("outer_item_id"), "orders.outer_item_id")
                or f"item:{id_string(item.get('item_id'), 'orders.item_id')}")
    return f"sku:{id_string(sku_id, 'orders.sku_id')}"


def _quantity(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise MappingError(f"{field}: expected a non-negative integer", reason="bad_line")
    return value


def _lines(full: dict[str, Any], line_refunds: dict[str, str]) -> list[dict[str, Any]]:
    lines = []
    for item in items(full.get("orders"), "orders"):
        item = obj(item, "orders[]")
        oid = _oid(require(item, "oid"), "orders.oid")
        lines.append(line(oid, _sku(item), _quantity(item.get("num"), "orders.num"),
                          _minor(item.get("price"), "orders.price"),
                          refund_status=line_refunds.get(oid)))
    return lines


def _line_payments(full: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """oid -> (quantity, amount paid for the line)."""
    out = {}
    for item in items(full.get("orders"), "orders"):
        item = obj(item, "orders[]")
        oid = _oid(require(item, "oid"), "orders.oid")
        out[oid] = (_quantity(item.get("num"), "orders.num"),
                    _minor(item.get("payment"), "orders.payment"))
    return out


class _RefundPart(NamedTuple):
    """One ``refund_order`` element."""

    refund_id: str | None
    fee: int
    state: int  # the element's refund_state (the trade's when it has none)
    raw_state: str  # as Youzan wrote it: the lines' raw refund_status
    oids: list[str]


def _refund_parts(payload: dict[str, Any], state: int) -> list[_RefundPart]:
    parts = []
    for element in items(payload.get("refund_order"), "refund_order"):
        element = obj(element, "refund_order[]")
        refund_id = element.get("refund_id")
        own = element.get("refund_state")
        parts.append(_RefundPart(
            id_string(refund_id, "refund_order.refund_id") if refund_id else None,
            _minor(element.get("refund_fee"), "refund_order.refund_fee"),
            state if own is None else _refund_state(own),
            _text(own, "refund_order.refund_state") or str(state),
            [_oid(o, "refund_order.oids") for o in items(element.get("oids"),
                                                          "refund_order.oids")]))
    return parts


def _refund(full: dict[str, Any], parts: list[_RefundPart], state: int,
            total: int) -> tuple[int, dict[str, Any] | None]:
    """(refunded_minor, refund record) of a trade."""
    if parts:
        refunded = sum(p.fee for p in parts if p.state in _REFUNDED)
    else:
        refunded = total if state == 12 else 0
    record_status = REFUND_STATES[state][1]
    if record_status is None:
        return refunded, None
    paid_lines = _line_payments(full)
    lines = []
    for part in parts:
        for oid in part.oids:
            quantity, payment = paid_lines.get(oid, (0, 0))
            lines.append({"line_id": oid, "quantity": quantity,
                          "amount_minor": part.fee if len(part.oids) == 1 else payment})
    amount = sum(p.fee for p in parts) if parts else (total if state in (11, 12) else 0)
    return refunded, {"kind": "UNKNOWN", "status": record_status, "amount_minor": amount,
                      "refund_id": parts[-1].refund_id if parts else None, "lines": lines}


def _tracking(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    for delivery in items(payload.get("delivery_order"), "delivery_order"):
        for dist in items(obj(delivery, "delivery_order[]").get("dists"),
                          "delivery_order.dists"):
            info = obj(obj(dist, "delivery_order.dists[]").get("express_info"),
                       "delivery_order.dists.express_info")
            found = _express(info)
            if found[1]:
                return found
    return None, None


def _express(info: dict[str, Any]) -> tuple[str | None, str | None]:
    number = _text(info.get("express_no"), "express_no")
    express_id = info.get("express_id")
    carrier = (f"youzan_express:{id_string(express_id, 'express_id')}"
               if number and express_id not in (None, "") else None)
    return carrier, number


def _phone_party(key: bytes, name: str | None, phone: str | None, **where: Any) -> \
        dict[str, Any] | None:
    if not (name or phone or any(where.values())):
        return None
    masked = phone if phone and "*" in phone else None
    person = party(key, name=name, phone=None if masked else phone, **where)
    if masked:
        person["phone_masked"] = masked if _MASKED_PHONE.fullmatch(masked) else None
    return person


def _buyer(ctx: Context, full: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    info = obj(full.get("buyer_info"), "buyer_info")
    ident = info.get("yz_open_id") or info.get("buyer_id")
    ref = keyed_ref(ctx.pii_key, CHANNEL, id_string(ident, "buyer_info.yz_open_id")) \
        if ident else None
    return ref, _phone_party(ctx.pii_key, _text(info.get("fans_nickname"), "fans_nickname"),
                             _text(info.get("buyer_phone"), "buyer_phone"))


def _receiver(ctx: Context, full: dict[str, Any]) -> dict[str, Any] | None:
    info = obj(full.get("address_info"), "address_info")
    parts = [_text(info.get(k), f"address_info.{k}") for k in
             ("delivery_province", "delivery_city", "delivery_district", "delivery_address")]
    return _phone_party(ctx.pii_key, _text(info.get("receiver_name"), "receiver_name"),
                        _text(info.get("receiver_tel"), "receiver_tel"),
                        address="".join(p for p in parts if p) or None,
                        province=parts[0], city=parts[1])


def _paid(info: dict[str, Any], total: int) -> int:
    tags = obj(info.get("order_tags"), "order_tags")
    paid = _time(info.get("pay_time"), "pay_time") is not None or tags.get("is_payed") is True
    return total if paid else 0


def _full_event(raw: dict[str, Any], ctx: Context, payload: dict[str, Any],
                envelope: dict[str, Any], event_type: str, flags: list[str]) -> dict[str, Any]:
    full = obj(payload.get("full_order_info"), "full_order_info")
    info = obj(require(full, "order_info"), "order_info")
    raw_state = info.get("refund_state")
    state = _refund_state(raw_state)
    refund_status = lookup(REFUND_STATES, state, field="refund_state")[0]
    status_word = require(info, "status")
    status = lookup(STATUSES, status_word, field="status")
    event_time, source_tz = _event_time(info, envelope)
    pay = obj(full.get("pay_info"), "pay_info")
    total = _minor(require(pay, "payment"), "pay_info.payment")
    goods = _minor(pay.get("total_fee"), "pay_info.total_fee")
    shipping = _minor(pay.get("post_fee"), "pay_info.post_fee")
    parts = _refund_parts(payload, state)
    refunded, refund = _refund(full, parts, state, total)
    line_refunds = {oid: part.raw_state for part in parts for oid in part.oids}
    buyer_ref, buyer = _buyer(ctx, full)
    carrier, tracking = _tracking(payload)
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=id_string(require(info, "tid"), "tid"),
        event_type=event_type, status=status,
        raw_status=f"status={status_word};refund_state={raw_state}",
        event_time=event_time, source_tz=source_tz, currency=CURRENCY, total_minor=total,
        refund_status=refund_status, paid_minor=_paid(info, total),
        discount_minor=max(goods + shipping - total, 0), shipping_minor=shipping,
        refunded_minor=refunded, lines=_lines(full, line_refunds), refund=refund,
        buyer_ref=buyer_ref, buyer=buyer, receiver=_receiver(ctx, full),
        carrier=carrier, tracking_no=tracking, flags=flags)


def _status_only_event(raw: dict[str, Any], ctx: Context, payload: dict[str, Any],
                       envelope: dict[str, Any], topic: str,
                       flags: list[str]) -> dict[str, Any]:
    tid = payload.get("tid") or envelope.get("id")
    if not tid:
        raise MappingError("missing required field 'tid'", reason="missing_field")
    word = envelope.get("status")
    status = (lookup(STATUSES, word, field="status") if word is not None
              else lookup(TOPIC_STATUSES, topic, field="push type"))
    event_time, source_tz = _event_time(payload, envelope)
    carrier, tracking = _express(payload)
    return build(
        raw, ctx, channel=CHANNEL, channel_order_id=id_string(tid, "tid"),
        event_type=EVENT_TYPES[topic], status=status,
        raw_status=f"status={word if word is not None else topic}",
        event_time=event_time, source_tz=source_tz, currency=CURRENCY, total_minor=0,
        carrier=carrier, tracking_no=tracking, flags=[*flags, FLAG_STATUS_ONLY])


def decode_msg(envelope: dict[str, Any]) -> dict[str, Any]:
    """The push payload: the envelope's ``msg``, form-URL-decoded, as a JSON object."""
    msg = require(envelope, "msg")
    if not isinstance(msg, str):
        raise MappingError(f"msg: expected a URL-encoded string, got {type(msg).__name__}",
                           reason="bad_shape")
    try:
        data = unquote_plus(msg).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError("msg: not UTF-8 text", reason="not_json") from exc
    return loads_object(data, "msg: URL-encoded JSON object")


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One Youzan push (envelope) or polled trade -> one ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in EVENT_TYPES:
        raise MappingError(f"unsupported Youzan message type {topic[:60]!r}",
                           reason="unknown_topic")
    doc = loads_object(raw["body"])
    if topic == POLL_TOPIC:
        return [_full_event(raw, ctx, doc, {}, "STATE", [])]
    flags = [FLAG_TEST] if doc.get("test") is True else []
    payload = decode_msg(doc)
    if "full_order_info" in payload:
        return [_full_event(raw, ctx, payload, doc, EVENT_TYPES[topic], flags)]
    return [_status_only_event(raw, ctx, payload, doc, topic, flags)]
