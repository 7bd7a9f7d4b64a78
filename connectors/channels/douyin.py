"""Douyin Shop (抖店, op.jinritemai.com): order and after-sale message push.

Facts relied on (/work/research/pdd_douyin.md section 2.1; the SDKs zsmhub/doudian-sdk
``message/*.go``, bububa/jinritemai-go ``message/*``, minibear2021/doudian ``core.py``):

- Delivery: ``POST`` to the push URL. The body is a JSON **array** of messages
  ``{"tag": "<string>", "msg_id": "<string>", "data": "<JSON-encoded string>"}``; ``data``
  is decoded a second time. One body may mix tags and shops (``shop_id`` is inside data).
- Headers: ``app-id`` is the app_key (a push for another app is refused); ``event-sign`` is
  the lower-case hex MD5 of ``app_key + raw body + app_secret``, over the raw bytes as
  received. ``sign-method: hmac-sha256`` is accepted as HMAC-SHA256 keyed by app_secret over
  the same string (unverified: neither SDK reads that header); any other method is refused.
- Answer HTTP 200 ``{"code":0,"msg":"success"}`` within 5 s, else the platform re-pushes
  (duplicates and out-of-order deliveries are normal). Tag ``"0"`` is the push-URL
  verification message: it is signed like any push, answered success, never published.
- Order tags (data fields): 100 TradeCreate (create_time), 101 TradePaid (pay_amount,
  pay_time, pay_type), 102 TradeSellerShip (update_time, logistics_msg{express_company_id,
  logistics_code}, receiver_msg{name, tel, addr} masked), 103 TradeSuccess (complete_time),
  106 TradeCanceled (cancel_time, cancel_reason); all carry p_id, s_ids[], shop_id,
  order_status, order_type, biz. order_status: 1 awaiting payment, 2 备货中 (paid, to ship),
  3 shipped, 4 cancelled, 5 completed.
- After-sale tags (data fields aftersale_id, aftersale_status, aftersale_type, p_id, s_id,
  shop_id, reason_code, refund_amount, refund_post_amount, refund_voucher_num, update_time):
  200 RefundCreated (apply_time), 201 RefundAgreed (agree_time), 202 RefundReturnApplyAgreed,
  203 RefundBuyerReturnGoods, 206 RefundSuccess (success_time), 207 RefundClosed
  (close_time). aftersale_type: 0 return and refund, 1 refund only after shipping, 2 whole
  order refund before shipping. aftersale_status: 6 awaiting seller, 7 awaiting the buyer's
  return, 11 awaiting seller receipt, 12 refund agreed, 27 refused, 28 closed, 29 refused
  after return.
- Money is integer fen; times are unix seconds (``update_time`` of after-sale tags may be a
  string, see the notes). p_id, s_ids, s_id and aftersale_id are 19-digit JSON numbers: they
  are decoded as Python ints (never floats) and keyed as strings.
- No timestamp header and re-pushes keep the event times, so there is no replay window;
  duplicates are recognised downstream by ``msg_id`` (the record's ``source_event_id``).

Records: one ``RawRecord`` per message except tag ``"0"``. Its body is that array element
re-serialised by orjson (same keys, order and ``data`` string, so the message's content is
unchanged; the signature covered the whole delivery, which is not kept per message). key =
``p_id`` as a string, source_topic = the tag, source_event_id = ``msg_id``, shop_id =
``data.shop_id``. An unreadable body is one record with the original bytes, keyed by
``content_id(body)``; an element without a readable ``p_id`` is keyed by its ``msg_id`` (or
its content id); the normalizer dead-letters those.

Config keys: ``app_key``, ``app_secret``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from orderpulse import names
from orderpulse.connectors.base import RawRecord, Reply, WebhookSource, content_id
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_DOUYIN
SIGN_HEADER = "event-sign"
APP_HEADER = "app-id"
METHOD_HEADER = "sign-method"
VERIFY_TAG = "0"
ACK = Reply(200, b'{"code":0,"msg":"success"}', "application/json")
# Kept with each raw event (lower-cased); the signature itself is not kept.
KEPT_HEADERS = (APP_HEADER, METHOD_HEADER)
#: The message names of the tags this connector documents (``source_topic`` is the tag).
TAG_NAMES: dict[str, str] = {
    "0": "Verify", "100": "TradeCreate", "101": "TradePaid", "102": "TradeSellerShip",
    "103": "TradeSuccess", "106": "TradeCanceled", "200": "RefundCreated",
    "201": "RefundAgreed", "202": "RefundReturnApplyAgreed", "203": "RefundBuyerReturnGoods",
    "206": "RefundSuccess", "207": "RefundClosed",
}


def sign(app_key: str, app_secret: str, body: bytes, method: str = "md5") -> str:
    """The ``event-sign`` value for ``body``: hex digest of app_key + body + app_secret."""
    message = app_key.encode() + body + app_secret.encode()
    if method == "hmac-sha256":
        return hmac.new(app_secret.encode(), message, hashlib.sha256).hexdigest()
    # MD5 is the channel's documented push signature, not our choice.
    return hashlib.md5(message).hexdigest()  # noqa: S324


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def verify(app_key: str, app_secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Raise ``SignatureError`` unless the push is signed for this app."""
    lower = _lower(headers)
    if not app_key or not app_secret:
        raise SignatureError("no Douyin app_key/app_secret configured", reason="no_secret")
    signature = lower.get(SIGN_HEADER, "").strip().lower()
    if not signature:
        raise SignatureError(f"missing {SIGN_HEADER}", reason="missing_signature")
    if not hmac.compare_digest(lower.get(APP_HEADER, "").strip().encode(), app_key.encode()):
        raise SignatureError(f"{APP_HEADER} is not this app's key", reason="wrong_app")
    method = lower.get(METHOD_HEADER, "md5").strip().lower() or "md5"
    if method not in ("md5", "hmac-sha256"):
        raise SignatureError(f"unsupported {METHOD_HEADER}", reason="bad_signature")
    if not hmac.compare_digest(sign(app_key, app_secret, body, method).encode(),
                               signature.encode()):
        raise SignatureError("signature does not match the body", reason="bad_signature")


def messages(body: bytes) -> list[Any] | None:
    """The array elements of a push body, or None when the body is not a JSON array."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) else None


def is_verification(body: bytes) -> bool:
    """True for the push-URL verification delivery (every message has tag "0")."""
    msgs = messages(body)
    return bool(msgs) and all(isinstance(m, dict) and m.get("tag") == VERIFY_TAG
                              for m in msgs or [])


def _id(value: Any) -> str | None:
    """A channel id as a string: ints and digit strings only (a float lost digits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.isdigit():
        return value
    return None


def message_data(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message's decoded ``data`` (a JSON string; an object is accepted as is)."""
    data = message.get("data")
    if isinstance(data, str | bytes):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            return {}
    return data if isinstance(data, dict) else {}


def message_record(element: Any, headers: Mapping[str, str]) -> RawRecord:
    """The record of one array element (never raises)."""
    raw = orjson.dumps(element)
    if not isinstance(element, dict):
        return RawRecord(key=content_id(raw), source_topic="", body=raw, headers=headers)
    data = message_data(element)
    msg_id = element.get("msg_id")
    msg_id = str(msg_id) if isinstance(msg_id, str | int) and str(msg_id) else None
    return RawRecord(
        key=_id(data.get("p_id")) or msg_id or content_id(raw),
        source_topic=str(element.get("tag", "")),
        body=raw,
        shop_id=_id(data.get("shop_id")) or "",
        source_event_id=msg_id,
        headers=headers,
    )


class DouyinWebhook(WebhookSource):
    channel = CHANNEL
    ack = ACK

    def __init__(self, config: Mapping[str, str]) -> None:
        self.app_key = config.get("app_key", "")
        self.app_secret = config.get("app_secret", "")

    def handshake(self, method: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        """Answer the tag "0" verification push (signature checked like any push)."""
        if not is_verification(body):
            return None
        try:
            verify(self.app_key, self.app_secret, headers, body)
        except SignatureError:
            return Reply(401, b"signature does not verify")
        return ACK

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        # No replay window: Douyin sends no delivery timestamp (see the module docstring).
        verify(self.app_key, self.app_secret, headers, body)

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        lower = _lower(headers)
        kept = {k: lower[k] for k in KEPT_HEADERS if k in lower}
        msgs = messages(body)
        if msgs is None:
            return [RawRecord(key=content_id(body), source_topic="", body=body, headers=kept,
                              content_type=lower.get("content-type", "application/json"))]
        return [message_record(m, kept) for m in msgs
                if not (isinstance(m, dict) and m.get("tag") == VERIFY_TAG)]
