"""JD POP orders (JOS ``jingdong.pop.order.search``) to ``OrderEvent``.

Input: one ``OrderSearchInfo`` object per raw record, as
``connectors/channels/jd.py`` publishes it (``source_topic`` the API method,
``source_event_id`` ``poll:<orderId>:<modified>``). A poll sees states, not
deliveries: every event is ``STATE``. Channel facts relied on (research notes
``taobao_jd.md`` section 2; JD's Java SDK ``OrderSearchInfo``/``ItemInfo``):

- every scalar is a string: ``orderId`` (about 12 digits seen, up to 19 allowed;
  an exact JSON integer is tolerated), ``skuId``, yuan amounts, the quantity
  ``itemTotal``. Ids are checked to be ASCII digit strings.
- money: yuan decimal strings (``"247.00"``), currency CNY; a JSON float is refused
  (``bad_amount``), never rounded. ``orderPayment`` (what the buyer pays, freight
  included) is the total, ``freightPrice`` the shipping, ``sellerDiscount`` the
  discount, ``taxFee`` the tax when sent; ``balanceUsed`` (JD balance) is not added
  to the total [the money fields' exact semantics are unverified]. A line's
  ``jdPrice`` is its unit price.
- time: ``modified`` is the event time, a naive ``yyyy-MM-dd HH:mm:ss`` in Beijing
  time (GMT+8, no DST) -> source_tz ``Asia/Shanghai``. Times not reached are
  ``""`` or the placeholder ``0001-01-01 00:00:00``: "not set", never the epoch
  (an unset ``modified`` is ``bad_timestamp``).
- status: ``orderState`` is one of WAIT_SELLER_STOCK_OUT, WAIT_SELLER_DELIVERY
  (cross-border), WAIT_GOODS_RECEIVE_CONFIRM, FINISHED_L, TRADE_CANCELED, LOCKED, PAUSE,
  POP_ORDER_PAUSE (mapped in ``ORDER_STATE``; other states are unmapped until seen). JD
  lists online-paid orders only once paid, so a listed order counts as paid unless
  cancelled; ``paymentConfirmTime`` set is payment either way. ``payType`` ``1-货到付款``
  (cash on delivery; the code is unverified) waits for shipment unpaid: ``APPROVED``
  until finished. ``LOCKED`` (a cancel or after-sale request pending) and the pause
  states say nothing about progress: the order is ``SHIPPED`` when it has a ``waybill``,
  else paid.
- refunds: the order carries no refund record or per-line refund state. ``LOCKED``
  overlays ``REQUESTED``; a cancelled order that had been paid overlays ``FULL``
  with ``refunded_minor`` its payment (JD returns the money of a cancelled paid
  order); no ``refund`` record is made.
- lines: ``itemInfoList`` has no line id; ``skuId`` is used (``#n`` added when a
  sku repeats). ``outerSkuId`` (the merchant's code; not guaranteed) is the sku,
  else ``sku:<skuId>``. No bundle components are sent: ``components`` stay empty.
- PII: ``consigneeInfo`` name, phones and address are JOS TDE ciphertext for
  encrypted apps (``~...~1~`` text, ``$...$1$`` phones): the receiver's
  ``ciphertext`` is a compact JSON object of every encrypted consignee field
  (``{"fullAddress": ..., "fullname": ..., "mobile": ..., "telephone": ...}``) for
  JD's decryption service; clear values (non-encrypted apps) are masked and the
  phone hashed. ``open_id_buyer`` (else ``xid_buyer``, else ``pin``) is the buyer
  id behind ``buyer_ref``.
- shipment: ``waybill`` is the tracking number, ``logisticsId`` (JD's carrier id)
  the carrier when sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from orderpulse import names
from orderpulse.errors import MappingError
from orderpulse.streams.channels.common import (
    Context,
    build,
    digits_id,
    items,
    line,
    loads_object,
    lookup,
    obj,
    quantity,
    require,
    text,
    yuan,
)
from orderpulse.streams.pii import is_ciphertext, keyed_ref, party
from orderpulse.streams.timeparse import is_not_set, parse_china_naive

CHANNEL = names.CHANNEL_JD
CURRENCY = "CNY"

# source_topic (the polled API method) -> event type.
EVENT_TYPES: dict[str, str] = {
    "jingdong.pop.order.search": "STATE",
}

# orderState -> (lifecycle status, refund overlay); lifecycle None: the state says
# nothing about progress (see ``_progress``).
ORDER_STATE: dict[str, tuple[str | None, str]] = {
    "WAIT_SELLER_STOCK_OUT": ("PAID", "NONE"),  # paid, to be stocked out
    "WAIT_SELLER_DELIVERY": ("PAID", "NONE"),  # cross-border: domestic shipment pending
    "WAIT_GOODS_RECEIVE_CONFIRM": ("SHIPPED", "NONE"),
    "FINISHED_L": ("COMPLETED", "NONE"),
    "TRADE_CANCELED": ("CANCELLED", "NONE"),  # FULL when it had been paid
    "LOCKED": (None, "REQUESTED"),  # cancel or after-sale request pending
    "PAUSE": (None, "NONE"),  # LOC orders
    "POP_ORDER_PAUSE": (None, "NONE"),  # POP business pause
}

COD_PAY_TYPE = "1"  # payType "1-货到付款"

# Yuan: digits with an optional fraction (13 integer digits keep sums far below 2**63).
_CONSIGNEE = ("fullname", "mobile", "telephone", "fullAddress", "province", "city")


def _is_set(doc: dict[str, Any], field: str) -> bool:
    """Whether an optional Beijing time is set (checked when it is)."""
    if is_not_set(doc.get(field)):
        return False
    parse_china_naive(doc.get(field), field=field)
    return True


def _is_cod(doc: dict[str, Any]) -> bool:
    pay_type = doc.get("payType")
    return isinstance(pay_type, str) and pay_type.split("-", 1)[0].strip() == COD_PAY_TYPE


def _lines(doc: dict[str, Any]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for item in items(doc.get("itemInfoList"), "itemInfoList"):
        item = obj(item, "itemInfoList[]")
        sku_id = digits_id(require(item, "skuId"), "itemInfoList.skuId")
        seen[sku_id] = seen.get(sku_id, 0) + 1
        line_id = sku_id if seen[sku_id] == 1 else f"{sku_id}#{seen[sku_id]}"
        sku = text(item.get("outerSkuId"), "itemInfoList.outerSkuId") or f"sku:{sku_id}"
        lines.append(line(line_id, sku,
                          quantity(require(item, "itemTotal"), "itemInfoList.itemTotal"),
                          yuan(item.get("jdPrice"), "itemInfoList.jdPrice")))
    return lines


def _paid(doc: dict[str, Any], state: str, cod: bool, payment: int) -> int:
    if _is_set(doc, "paymentConfirmTime"):
        return payment
    if cod:
        return payment if state == "FINISHED_L" else 0
    return 0 if state == "TRADE_CANCELED" else payment


def _progress(waybill: str | None) -> str:
    """Lifecycle of a locked or paused order: shipped once it has a waybill."""
    return "SHIPPED" if waybill else "PAID"


def _receiver(ctx: Context, doc: dict[str, Any]) -> dict[str, Any] | None:
    info = obj(doc.get("consigneeInfo"), "consigneeInfo")
    t = {f: text(info.get(f), f"consigneeInfo.{f}") for f in _CONSIGNEE}
    if not any(t.values()):
        return None
    encrypted = {f: v for f, v in t.items() if v and is_ciphertext(v)}
    cipher = orjson.dumps(encrypted, option=orjson.OPT_SORT_KEYS).decode() if encrypted \
        else None
    return party(ctx.pii_key, name=t["fullname"], phone=t["mobile"] or t["telephone"],
                 address=t["fullAddress"],
                 province=None if "province" in encrypted else t["province"],
                 city=None if "city" in encrypted else t["city"], ciphertext=cipher)


def _buyer_ref(ctx: Context, doc: dict[str, Any]) -> str | None:
    for field in ("open_id_buyer", "xid_buyer", "pin"):
        value = text(doc.get(field), field)
        if value:
            return keyed_ref(ctx.pii_key, CHANNEL, field, value)
    return None


def map_status(doc: dict[str, Any]) -> tuple[str | None, str, str]:
    """(lifecycle status or None, refund overlay, raw status) of the order state alone."""
    raw = require(doc, "orderState")
    status, overlay = lookup(ORDER_STATE, raw, field="orderState")
    return status, overlay, str(raw)


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One polled JD order -> one ``STATE`` ``OrderEvent`` dict."""
    topic = raw.get("source_topic")
    if not isinstance(topic, str) or topic not in EVENT_TYPES:
        raise MappingError(f"unsupported JD topic {str(topic)[:60]!r}", reason="unknown_topic")
    doc = loads_object(raw["body"], "a JD order object")
    order_id = digits_id(require(doc, "orderId"), "orderId")
    status, overlay, raw_status = map_status(doc)
    event_time, source_tz = parse_china_naive(require(doc, "modified"), field="modified")
    payment = yuan(require(doc, "orderPayment"), "orderPayment")
    cod = _is_cod(doc)
    paid = _paid(doc, raw_status, cod, payment)
    waybill = text(doc.get("waybill"), "waybill")
    status = status or _progress(waybill)
    if cod and status == "PAID" and paid == 0:
        status = "APPROVED"  # cash on delivery: accepted for shipment, paid on delivery
    refunded = 0
    if raw_status == "TRADE_CANCELED" and paid:
        overlay, refunded = "FULL", paid
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=order_id, event_type=EVENT_TYPES[topic],
        status=status, raw_status=f"{raw_status};payType=cod" if cod else raw_status,
        event_time=event_time, source_tz=source_tz, currency=CURRENCY, total_minor=payment,
        refund_status=overlay,
        paid_minor=paid,
        discount_minor=yuan(doc.get("sellerDiscount"), "sellerDiscount"),
        shipping_minor=yuan(doc.get("freightPrice"), "freightPrice"),
        tax_minor=yuan(doc.get("taxFee"), "taxFee"),
        refunded_minor=refunded,
        lines=_lines(doc),
        buyer_ref=_buyer_ref(ctx, doc),
        receiver=_receiver(ctx, doc),
        carrier=text(doc.get("logisticsId"), "logisticsId"),
        tracking_no=waybill,
    )]
