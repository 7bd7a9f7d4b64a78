"""Taobao / Tmall trades (TOP ``taobao.trades.sold.increment.get``) to ``OrderEvent``.

Input: one ``Trade`` object per raw record, as ``connectors/channels/taobao.py``
publishes it (``source_topic`` the API method, ``source_event_id``
``poll:<tid>:<modified>``). A poll sees states, not deliveries: every event is
``STATE``. Channel facts relied on (research notes ``taobao_jd.md`` section 1;
field comments of TOP's SDK ``Trade``/``Order`` classes):

- ids: ``tid`` and the lines' ``oid`` are JSON numbers up to 19 digits (beyond a
  double); ``tid_str`` is the trade id as a string and is preferred. orjson keeps
  the integers exact; ids are checked to be ASCII digit strings.
- money: yuan decimal strings with 2 dp (``"200.07"``), currency CNY. A JSON
  float where a yuan string belongs is refused (``bad_amount``), never rounded.
  ``payment`` (what the buyer pays, postage included) is the total;
  ``post_fee`` shipping, ``discount_fee`` discount; lines' ``sub_order_tax_fee``
  (Tmall Global duties) the tax. ``Order.payment`` includes the postage only on
  single-line trades.
- time: ``modified`` (moves on any change) is the event time, a naive
  ``yyyy-MM-dd HH:mm:ss`` in China time (GMT+8, no DST) -> source_tz
  ``Asia/Shanghai``. Unset times are left out, ``""`` or a placeholder such as
  ``0001-01-01 00:00:00``: all of them mean "not set", never the epoch.
- status: ``Trade.status`` is one of TRADE_NO_CREATE_PAY, WAIT_BUYER_PAY, PAY_PENDING,
  WAIT_PRE_AUTH_CONFIRM, WAIT_SELLER_SEND_GOODS, PAID_FORBID_CONSIGN,
  SELLER_CONSIGNED_PART, WAIT_BUYER_CONFIRM_GOODS, TRADE_BUYER_SIGNED, TRADE_FINISHED,
  TRADE_CLOSED, TRADE_CLOSED_BY_TAOBAO (mapped in ``TRADE_STATUS``). ``TRADE_CLOSED`` =
  closed after payment because the refund succeeded; ``TRADE_CLOSED_BY_TAOBAO`` = closed
  before payment. ``type`` ``cod`` (cash on delivery) trades wait for shipment unpaid:
  ``PAID`` then reads ``APPROVED`` until ``pay_time`` is set or the trade is signed for.
- refunds: per line only, ``orders.order[].refund_status`` NO_REFUND, WAIT_SELLER_AGREE,
  WAIT_BUYER_RETURN_GOODS, WAIT_SELLER_CONFIRM_GOODS, SUCCESS, SELLER_REFUSE_BUYER,
  CLOSED (``LINE_REFUND_STATUS``; NO_REFUND is unverified but what the field says
  without a refund) with the line's latest ``refund_id``. The trade carries no refund
  amount (that is ``refund_fee`` of ``taobao.refund.get``): a line's refund amount here
  is its paid amount ``Order.payment``, an upper bound. Lines are grouped by refund
  state; the most pressing group (see ``_REFUND_PRECEDENCE``) becomes the ``refund``
  record and the overlay. ``refunded_minor`` sums the ``SUCCESS`` lines (the whole
  ``payment`` for ``TRADE_CLOSED``), never more than was paid.
- bundles: TOP's ``Order`` has no component list (``item_meal_name`` is free
  text), so ``components`` stay empty.
- PII: ``receiver_*`` arrive masked by Taobao (``张**``, ``*******5678``); a masked
  phone is passed on as its own mask and never hashed (four digits would collide).
  ``oaid`` (the handle for ``taobao.top.oaid.decrypt``) is the receiver's
  ``ciphertext``. ``buyer_open_uid`` is the buyer id behind ``buyer_ref``;
  ``buyer_nick`` (itself masked) becomes the buyer's masked name.
- shipment: a line's ``invoice_no`` / ``logistics_company`` (the parcel's waybill
  and carrier name) give ``tracking_no`` / ``carrier``.
"""

from __future__ import annotations

from typing import Any

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
from orderpulse.streams.pii import keyed_ref, party
from orderpulse.streams.timeparse import is_not_set, parse_china_naive

CHANNEL = names.CHANNEL_TAOBAO
CURRENCY = "CNY"

# source_topic (the polled API method) -> event type.
EVENT_TYPES: dict[str, str] = {
    "taobao.trades.sold.increment.get": "STATE",
}

# Trade.status -> (lifecycle status, refund overlay).
TRADE_STATUS: dict[str, tuple[str, str]] = {
    "TRADE_NO_CREATE_PAY": ("PENDING_PAYMENT", "NONE"),  # no Alipay transaction yet
    "WAIT_BUYER_PAY": ("PENDING_PAYMENT", "NONE"),
    "PAY_PENDING": ("PENDING_PAYMENT", "NONE"),  # international card being confirmed
    "WAIT_PRE_AUTH_CONFIRM": ("PENDING_PAYMENT", "NONE"),  # 0-yuan pre-auth contract
    "WAIT_SELLER_SEND_GOODS": ("PAID", "NONE"),
    "PAID_FORBID_CONSIGN": ("PAID", "NONE"),  # paid, shipping held (group buy)
    "SELLER_CONSIGNED_PART": ("SHIPPED", "NONE"),  # partly shipped
    "WAIT_BUYER_CONFIRM_GOODS": ("SHIPPED", "NONE"),
    "TRADE_BUYER_SIGNED": ("DELIVERED", "NONE"),  # cash on delivery only
    "TRADE_FINISHED": ("COMPLETED", "NONE"),
    "TRADE_CLOSED": ("CANCELLED", "FULL"),  # refunded after payment
    "TRADE_CLOSED_BY_TAOBAO": ("CANCELLED", "NONE"),  # closed before payment
}

# Statuses in which nothing has been paid (online payment).
_UNPAID = frozenset({"TRADE_NO_CREATE_PAY", "WAIT_BUYER_PAY", "PAY_PENDING",
                     "WAIT_PRE_AUTH_CONFIRM", "TRADE_CLOSED_BY_TAOBAO"})
# Cash on delivery: paid once signed for.
_COD_PAID = frozenset({"TRADE_BUYER_SIGNED", "TRADE_FINISHED", "TRADE_CLOSED"})

# Order.refund_status -> (refund overlay, refund record status, refund kind);
# record status None: no refund. SUCCESS reads FULL when every line is refunded.
LINE_REFUND_STATUS: dict[str, tuple[str, str | None, str]] = {
    "NO_REFUND": ("NONE", None, "UNKNOWN"),
    "WAIT_SELLER_AGREE": ("REQUESTED", "REQUESTED", "UNKNOWN"),
    "WAIT_BUYER_RETURN_GOODS": ("RETURN_PENDING", "APPROVED", "RETURN_AND_REFUND"),
    "WAIT_SELLER_CONFIRM_GOODS": ("RETURN_PENDING", "RETURN_RECEIVED", "RETURN_AND_REFUND"),
    "SUCCESS": ("PARTIAL", "REFUNDED", "UNKNOWN"),
    "SELLER_REFUSE_BUYER": ("REJECTED", "REJECTED", "UNKNOWN"),
    "CLOSED": ("NONE", "CLOSED", "UNKNOWN"),
}
# Which line group leads when lines differ: work waiting on the seller first, then
# money returned, then final refusals/closures.
_REFUND_PRECEDENCE = ("RETURN_RECEIVED", "APPROVED", "REQUESTED", "REFUNDED", "REJECTED",
                      "CLOSED")

# Yuan: digits with an optional fraction (13 integer digits keep sums far below 2**63).


def _is_set(doc: dict[str, Any], field: str) -> bool:
    """Whether an optional China time is set (checked when it is)."""
    if is_not_set(doc.get(field)):
        return False
    parse_china_naive(doc.get(field), field=field)
    return True


def _trade_id(doc: dict[str, Any]) -> str:
    if doc.get("tid_str") not in (None, ""):
        return digits_id(doc["tid_str"], "tid_str")
    return digits_id(require(doc, "tid"), "tid")


def _order_items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    orders = doc.get("orders")
    if isinstance(orders, dict):  # non-simplified JSON keeps the XML wrapper
        orders = orders.get("order")
    return [obj(item, "orders.order[]") for item in items(orders, "orders.order")]


def _sku(item: dict[str, Any]) -> str:
    """Merchant SKU code first; TOP's sku id, merchant item code, item id after."""
    for field, prefix in (("outer_sku_id", ""), ("sku_id", "sku:"), ("outer_iid", ""),
                          ("num_iid", "item:")):
        found = text(item.get(field), f"orders.order.{field}")
        if found:
            return prefix + found
    raise MappingError("orders.order: no sku, item code or item id", reason="missing_field")


def _line_refund(item: dict[str, Any]) -> str | None:
    """The line's raw refund status (checked against the table), None when absent."""
    raw = item.get("refund_status")
    if raw is None or raw == "":
        return None
    lookup(LINE_REFUND_STATUS, raw, field="orders.order.refund_status")
    return str(raw)


def _line_amount(item: dict[str, Any]) -> int:
    field = "payment" if item.get("payment") not in (None, "") else "divide_order_fee"
    return yuan(item.get(field), f"orders.order.{field}")


def _refund(lines: list[dict[str, Any]], amounts: dict[str, int],
            refund_ids: dict[str, str | None]) -> tuple[str, dict[str, Any] | None, int]:
    """(overlay, refund record, refunded amount) from the lines' refund states."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for ln in lines:
        status = LINE_REFUND_STATUS[ln["refund_status"] or "NO_REFUND"][1]
        if status is not None:
            groups.setdefault(status, []).append(ln)
    refunded = sum(amounts[ln["line_id"]] for ln in groups.get("REFUNDED", []))
    lead = next((s for s in _REFUND_PRECEDENCE if s in groups), None)
    if lead is None:
        return "NONE", None, refunded
    group = groups[lead]
    overlay, _status, kind = LINE_REFUND_STATUS[group[0]["refund_status"]]
    if lead == "REFUNDED" and len(group) == len(lines):
        overlay = "FULL"
    ids = {refund_ids[ln["line_id"]] for ln in group}
    record = {
        "kind": kind, "status": lead,
        "amount_minor": sum(amounts[ln["line_id"]] for ln in group),
        "refund_id": ids.pop() if len(ids) == 1 else None,
        "lines": [{"line_id": ln["line_id"], "quantity": ln["quantity"],
                   "amount_minor": amounts[ln["line_id"]]} for ln in group],
    }
    return overlay, record, refunded


def _lines(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int],
                                         dict[str, str | None]]:
    """The lines, each line's paid amount and latest refund id, keyed by oid."""
    lines, amounts, refund_ids = [], {}, {}
    for item in _order_items(doc):
        oid = digits_id(require(item, "oid"), "orders.order.oid")
        lines.append(line(oid, _sku(item), quantity(require(item, "num"), "orders.order.num"),
                          yuan(item.get("price"), "orders.order.price"),
                          refund_status=_line_refund(item)))
        amounts[oid] = _line_amount(item)
        refund_ids[oid] = text(item.get("refund_id"), "orders.order.refund_id")
    return lines, amounts, refund_ids


def _paid(doc: dict[str, Any], status: str, cod: bool, payment: int) -> int:
    if _is_set(doc, "pay_time"):
        return payment
    if cod:
        return payment if status in _COD_PAID else 0
    return 0 if status in _UNPAID else payment


def _receiver(ctx: Context, doc: dict[str, Any]) -> dict[str, Any] | None:
    fields = ("receiver_name", "receiver_mobile", "receiver_phone", "receiver_state",
              "receiver_city", "receiver_district", "receiver_town", "receiver_address",
              "oaid")
    t = {f: text(doc.get(f), f) for f in fields}
    if not any(t.values()):
        return None
    phone = t["receiver_mobile"] or t["receiver_phone"]
    masked = phone if phone and "*" in phone else None  # Taobao's own mask: keep, never hash
    address = "".join(t[f] or "" for f in ("receiver_state", "receiver_city",
                                           "receiver_district", "receiver_town",
                                           "receiver_address"))
    person = party(ctx.pii_key, name=t["receiver_name"], phone=None if masked else phone,
                   address=address or None, province=t["receiver_state"],
                   city=t["receiver_city"], ciphertext=t["oaid"])
    if masked:
        person["phone_masked"] = masked
    return person


def _shipment(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    for item in _order_items(doc):
        tracking = text(item.get("invoice_no"), "orders.order.invoice_no")
        if tracking:
            return text(item.get("logistics_company"), "orders.order.logistics_company"), \
                tracking
    return None, None


def map_status(doc: dict[str, Any]) -> tuple[str, str, str]:
    """(lifecycle status, refund overlay, raw status) of the trade, before lines and payment."""
    raw = require(doc, "status")
    status, overlay = lookup(TRADE_STATUS, raw, field="status")
    cod = doc.get("type") == "cod"
    return status, overlay, f"{raw};type=cod" if cod else str(raw)


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One polled Taobao trade -> one ``STATE`` ``OrderEvent`` dict."""
    topic = raw.get("source_topic")
    if not isinstance(topic, str) or topic not in EVENT_TYPES:
        raise MappingError(f"unsupported Taobao topic {str(topic)[:60]!r}",
                           reason="unknown_topic")
    doc = loads_object(raw["body"], "a Taobao trade object")
    tid = _trade_id(doc)
    status, overlay, raw_status = map_status(doc)
    trade_status = str(doc["status"])
    event_time, source_tz = parse_china_naive(require(doc, "modified"), field="modified")
    payment = yuan(require(doc, "payment"), "payment")
    cod = doc.get("type") == "cod"
    paid = _paid(doc, trade_status, cod, payment)
    if cod and status == "PAID" and paid == 0:
        status = "APPROVED"  # cash on delivery: accepted for shipment, paid on delivery
    lines, amounts, refund_ids = _lines(doc)
    line_overlay, refund, refunded = _refund(lines, amounts, refund_ids)
    if overlay == "FULL":
        refunded = paid  # TRADE_CLOSED: the trade closed because its refund succeeded
    else:
        overlay = line_overlay
    carrier, tracking = _shipment(doc)
    buyer_id = text(doc.get("buyer_open_uid"), "buyer_open_uid")
    nick = text(doc.get("buyer_nick"), "buyer_nick")
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=tid, event_type=EVENT_TYPES[topic],
        status=status, raw_status=raw_status, event_time=event_time, source_tz=source_tz,
        currency=CURRENCY, total_minor=payment,
        refund_status=overlay,
        paid_minor=paid,
        discount_minor=yuan(doc.get("discount_fee"), "discount_fee"),
        shipping_minor=yuan(doc.get("post_fee"), "post_fee"),
        tax_minor=sum(yuan(item.get("sub_order_tax_fee"), "orders.order.sub_order_tax_fee")
                      for item in _order_items(doc)),
        refunded_minor=min(refunded, paid),
        lines=lines,
        buyer_ref=keyed_ref(ctx.pii_key, CHANNEL, buyer_id) if buyer_id else None,
        buyer=party(ctx.pii_key, name=nick) if nick else None,
        receiver=_receiver(ctx, doc),
        carrier=carrier, tracking_no=tracking, refund=refund,
    )]
