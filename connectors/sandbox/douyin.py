"""Douyin Shop (抖店), played locally: message pushes exactly as
``connectors/channels/douyin.py`` documents them.

Each delivery is a JSON array of ``{"tag", "msg_id", "data"}`` with ``data`` a JSON string,
signed in ``event-sign`` (MD5 of app_key + body + app_secret) with ``app-id`` = app_key.
Ids are 19-digit JSON numbers (p_id per order, s_ids per line, aftersale_id), money integer
fen, times unix seconds; the receiver in tag 102 is masked the way Douyin shows it.

Lifecycle event -> tags: created 100, paid 101, shipped 102, completed 103, cancelled 106
(preceded in the same delivery by 206 RefundSuccess with aftersale_type 2 when the order was
paid), refund_requested 200 (type 1), return_requested 200 (type 0), return_received 203
(the buyer's return is on its way to the seller: Douyin has no "seller received" message),
refunded 206. in_transit and delivered: Douyin pushes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from orderpulse import names
from orderpulse.connectors.channels.douyin import APP_HEADER, SIGN_HEADER, VERIFY_TAG, sign
from orderpulse.connectors.sandbox.base import Delivery, WebhookChannelSim
from orderpulse.connectors.sandbox.lifecycle import SimOrder

CHANNEL = names.CHANNEL_DOUYIN
ID_BASE = 6_920_000_000_000_000_000  # p_id (shop order)
SKU_ORDER_BASE = 6_930_000_000_000_000_000  # s_ids (one child order per line)
AFTERSALE_BASE = 7_310_000_000_000_000_000
MSG_BASE = 7_300_000_000_000_000_000
DEFAULT_SHOP_ID = 4463798
FORGED_SECRET = "not-the-app-secret"  # noqa: S105 - signs forged deliveries on purpose
# Lifecycle event -> the tags it pushes (empty: Douyin sends nothing).
TAGS: dict[str, tuple[str, ...]] = {
    "created": ("100",), "paid": ("101",), "shipped": ("102",), "in_transit": (),
    "delivered": (), "completed": ("103",), "cancelled": ("106",),
    "refund_requested": ("200",), "return_requested": ("200",), "return_received": ("203",),
    "refunded": ("206",),
}
ORDER_STATUS = {"100": 1, "101": 2, "102": 3, "103": 5, "106": 4}
AFTERSALE_STATUS = {"200": 6, "203": 11, "206": 12}
# Express company codes of the lifecycle's carriers (Douyin's code list was not read).
EXPRESS = {"SF": "shunfeng", "YTO": "yuantong", "ZTO": "zhongtong", "USPS": "usps"}


def fen(amount: Decimal) -> int:
    """Yuan to integer fen."""
    return int((amount * 100).to_integral_value())


def _ts(at: datetime | None) -> int:
    return int(at.timestamp()) if at else 0


def sku_order_ids(order: SimOrder) -> list[int]:
    return [SKU_ORDER_BASE + order.number * 10 + line.line_no for line in order.lines]


def _order_base(order: SimOrder, tag: str, shop_id: int) -> dict[str, Any]:
    return {"biz": 2, "order_status": ORDER_STATUS[tag], "order_type": 0,
            "p_id": int(order.id19(ID_BASE)), "s_ids": sku_order_ids(order), "shop_id": shop_id}


def _masked_receiver(order: SimOrder) -> dict[str, str]:
    phone = order.buyer_phone
    return {"name": order.buyer_name[:1] + "*", "tel": f"{phone[:3]}****{phone[-4:]}",
            "addr": f"{order.province}***"}


def _aftersale(order: SimOrder, tag: str, shop_id: int) -> dict[str, Any]:
    line_no = order.refund_line_no or order.lines[0].line_no
    # 0: return and refund; 1: refund only after shipping; 2: whole order, before shipping.
    kind = 0 if order.refund_kind == "return_and_refund" else 1 if order.shipped_at else 2
    post = order.shipping_fee if kind == 2 else Decimal("0")
    return {"aftersale_id": AFTERSALE_BASE + order.number,
            "aftersale_status": AFTERSALE_STATUS[tag], "aftersale_type": kind,
            "p_id": int(order.id19(ID_BASE)),
            "s_id": SKU_ORDER_BASE + order.number * 10 + line_no, "shop_id": shop_id,
            "reason_code": 1 if kind == 2 else 6, "refund_amount": fen(order.refund_amount),
            "refund_post_amount": fen(post), "refund_voucher_num": 0,
            "update_time": _ts(order.updated)}


def message_data(order: SimOrder, tag: str, shop_id: int) -> dict[str, Any]:
    """The ``data`` object of one message (before its JSON-string encoding)."""
    if tag in AFTERSALE_STATUS:
        data = _aftersale(order, tag, shop_id)
        time_field = {"200": "apply_time", "206": "success_time"}.get(tag)
        if time_field:
            data[time_field] = _ts(order.updated)
        return data
    data = _order_base(order, tag, shop_id)
    if tag == "100":
        data["create_time"] = _ts(order.created)
    elif tag == "101":
        data.update(pay_amount=fen(order.total), pay_time=_ts(order.paid_at), pay_type=1)
    elif tag == "102":
        data.update(update_time=_ts(order.shipped_at), receiver_msg=_masked_receiver(order),
                    logistics_msg={"express_company_id": EXPRESS.get(order.carrier, "other"),
                                   "logistics_code": order.tracking_no})
    elif tag == "103":
        data["complete_time"] = _ts(order.completed_at)
    elif tag == "106":
        data.update(cancel_time=_ts(order.cancelled_at),
                    cancel_reason="买家取消" if not order.is_paid else "退款成功 订单关闭")
    return data


def message(tag: str, data: dict[str, Any]) -> dict[str, str]:
    msg_id = str(MSG_BASE + uuid.uuid4().int % 10**17)
    return {"tag": tag, "msg_id": msg_id, "data": orjson.dumps(data).decode()}


def tags_for(order: SimOrder, event: str) -> tuple[str, ...]:
    if event == "cancelled" and order.is_paid:
        return ("206", "106")
    return TAGS.get(event, ())


class DouyinWebhookSim(WebhookChannelSim):
    channel = CHANNEL

    @property
    def shop_id(self) -> int:
        return int(self.config.get("shop_id", DEFAULT_SHOP_ID))

    def _delivery(self, msgs: list[dict[str, str]]) -> Delivery:
        return self._signed(orjson.dumps(msgs), msgs[0]["msg_id"])

    def _signed(self, body: bytes, delivery_id: str, secret: str | None = None) -> Delivery:
        app_key = self.config.get("app_key", "")
        secret = self.config.get("app_secret", "") if secret is None else secret
        return Delivery(CHANNEL, body, {
            "Content-Type": "application/json", APP_HEADER: app_key,
            SIGN_HEADER: sign(app_key, secret, body),
        }, delivery_id)

    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        tags = tags_for(order, event)
        if not tags:
            return []
        return [self._delivery([message(t, message_data(order, t, self.shop_id))
                                for t in tags])]

    def handshake(self) -> Delivery | None:
        """The push-URL verification message (tag "0"; its data is not documented)."""
        return self._delivery([message(VERIFY_TAG, {})])

    def forge(self, delivery: Delivery) -> Delivery:
        return self._signed(delivery.body, delivery.delivery_id, secret=FORGED_SECRET)

    def resign(self, delivery: Delivery, body: bytes) -> Delivery | None:
        return self._signed(body, delivery.delivery_id)
