"""Youzan (有赞云): push messages (消息推送), and ``youzan.trades.sold.get`` as the poll.

Facts relied on (research notes /work/research/youzan_woo.md; the official docs
were unavailable, so the OSS-derived ones are marked there):

Push: ``POST`` with a JSON envelope ``{client_id, id (= tid), kdt_id, kdt_name,
type (trade_TradeCreate, trade_TradePaid, trade_TradeSellerShip, trade_TradeSuccess,
trade_TradeClose, ...), status, msg, msg_id, sendCount, test, mode, version,
sign}``. ``msg`` is the event payload as a **form-URL-encoded** JSON string
(``+`` for spaces; decode with ``unquote_plus``). ``version`` is the trade's
update time in epoch seconds. Header ``Event-Sign`` = lowercase hex
``md5(client_id + raw request body + client_secret)``; ``Event-Type`` repeats
``type``. The body's own ``sign`` (``md5(client_id + msg + client_secret)``)
covers only ``msg``, so the header is what we verify. Youzan expects HTTP 200
``{"code":0,"msg":"success"}``. Each push carries one message: one record, body
= the envelope's original bytes, key = ``id`` (the tid, an "E..." string),
source_event_id = ``msg_id``. Retries are not documented (``sendCount``
suggests they happen): replays older than ``replay_window_s`` by ``version``
are refused. Console test pushes (``test: true``) pass through like the others;
their bodies say so.

Poll: ``POST {base}/api/youzan.trades.sold.get/{api_version}?access_token=..``
with a JSON body ``{start_update, end_update, page_no, page_size}``; times are
``yyyy-MM-dd HH:mm:ss`` in Beijing time (UTC+8, no offset), both bounds taken
as inclusive, so a window [start, end) asks start..end-1s (second precision).
The answer comes with HTTP 200 even on errors: ``gw_err_resp {err_code,
err_msg}`` (gateway: token, limits), ``error_response {code, msg}`` or
``success: false``; an error is never read as an empty page. Success:
``data.total_results`` and ``data.full_order_info_list[]`` of
``{full_order_info, refund_order, delivery_order, order_promotion}`` (the same
shape as a decoded trade push ``msg``); one record per element, body = that
element re-serialized with orjson, key = ``order_info.tid``, source_event_id
``poll:<tid>:<order_info.update_time>``. Pages: ``page_no`` from 1 until a
short page or ``page_no * page_size >= total_results``. The token comes from
``POST {base}/auth/token`` (``authorize_type: silent``, ``client_id``,
``client_secret``, ``grant_id`` = kdt_id) -> ``data.access_token`` and
``data.expires`` (epoch ms); it is refreshed 5 minutes before expiry.

Unverified assumptions: the gateway's token error codes (``TOKEN_ERRORS``) and
rate-limit answer (``RATE_LIMIT_ERRORS``, or a message saying so), the page
size maximum (100), the rate limit (none documented; 5/s is assumed).

Money in bodies is yuan as decimal strings; ``oid`` is a 19-digit string.

Config keys:
- webhook (``YouzanWebhook``): ``client_id``, ``client_secret``, ``kdt_id``
  (shop id of the records when a push lacks one), ``replay_window_s`` (default
  48 h).
- poll (``YouzanPoll``): ``client_id``, ``client_secret``, ``kdt_id`` (the
  ``grant_id`` of the token and the records' shop id), ``access_token`` (optional
  fixed token; otherwise fetched from ``/auth/token``), ``api_version`` (default
  4.0.4), ``base_url`` (default https://open.youzanyun.com).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import unquote_plus

import aiohttp
import orjson

from orderpulse import names
from orderpulse.connectors.base import (
    AuthFailed,
    Page,
    PollError,
    PollSource,
    RawRecord,
    ReplayError,
    Reply,
    Throttled,
    WebhookSource,
    Window,
    content_id,
)
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_YOUZAN
BEIJING = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
SIGN_HEADER = "event-sign"
TYPE_HEADER = "event-type"
BASE_URL = "https://open.youzanyun.com"
API_VERSION = "4.0.4"
TRADES_API = "youzan.trades.sold.get"
POLL_TOPIC = TRADES_API
ACK = Reply(200, b'{"code":0,"msg":"success"}', "application/json")
KEPT_HEADERS = (TYPE_HEADER, "content-type")
# [unverified] gateway codes: token missing/expired/invalid, and call-rate limits.
TOKEN_ERRORS = frozenset({"4201", "4202", "4203"})
RATE_LIMIT_ERRORS = frozenset({"429", "4004"})
_RATE_WORDS = re.compile(r"限流|频率|频繁|rate.?limit|too many|frequen", re.IGNORECASE)
TOKEN_REFRESH_MARGIN_S = 300.0


# --- push messages ------------------------------------------------------------------

def event_sign(client_id: str, client_secret: str, body: bytes) -> str:
    """The ``Event-Sign`` header value: md5(client_id + raw body + client_secret), hex."""
    return hashlib.md5(client_id.encode() + body + client_secret.encode(),
                       usedforsecurity=False).hexdigest()


def verify(client_id: str, client_secret: str, body: bytes, signature: str | None) -> None:
    """Raise ``SignatureError`` unless ``signature`` is Youzan's Event-Sign of ``body``."""
    if not client_id or not client_secret:
        raise SignatureError("no Youzan client_id/client_secret configured", reason="no_secret")
    if not signature:
        raise SignatureError("missing Event-Sign", reason="missing_signature")
    expected = event_sign(client_id, client_secret, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise SignatureError("Event-Sign does not match the body", reason="bad_signature")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _envelope(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _text_id(value: object) -> str | None:
    """An id as text: strings as they are, integers exactly (never through float)."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def decode_msg(msg: str) -> Any:
    """The event payload inside an envelope's form-URL-encoded ``msg`` (None if unreadable)."""
    try:
        return orjson.loads(unquote_plus(msg))
    except orjson.JSONDecodeError:
        return None


def tid_of(envelope: Mapping[str, Any]) -> str | None:
    """The trade id of a push: the envelope's ``id``, else the tid inside ``msg``."""
    tid = _text_id(envelope.get("id"))
    if tid or not isinstance(envelope.get("msg"), str):
        return tid
    payload = decode_msg(envelope["msg"])
    if not isinstance(payload, dict):
        return None
    full = payload.get("full_order_info")
    info = full.get("order_info") if isinstance(full, dict) else None
    return _text_id(payload.get("tid")) or (_text_id(info.get("tid"))
                                            if isinstance(info, dict) else None)


class YouzanWebhook(WebhookSource):
    channel = CHANNEL
    ack = ACK

    def __init__(self, config: Mapping[str, str]) -> None:
        self.client_id = config.get("client_id", "")
        self.client_secret = config.get("client_secret", "")
        self.shop_id = config.get("kdt_id", "")
        self.replay_window_ms = int(float(config.get("replay_window_s", 48 * 3600)) * 1000)

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        verify(self.client_id, self.client_secret, body, _lower(headers).get(SIGN_HEADER))
        envelope = _envelope(body) or {}
        sender = envelope.get("client_id")
        if isinstance(sender, str) and sender != self.client_id:
            raise SignatureError("push is for another client_id", reason="wrong_client")
        version = envelope.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > 0:
            # version is the trade's update time in epoch seconds (ms on some pushes).
            sent_ms = version if version > 10**12 else version * 1000
            if now_ms - sent_ms > self.replay_window_ms:
                raise ReplayError(f"push version is {(now_ms - sent_ms) // 1000}s old, "
                                  f"outside the replay window")

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        lower = _lower(headers)
        envelope = _envelope(body)
        fallback = content_id(body)
        if envelope is None:
            return [RawRecord(key=fallback, source_topic=lower.get(TYPE_HEADER, ""), body=body,
                              shop_id=self.shop_id, source_event_id=fallback,
                              headers=_kept(lower), content_type=_ctype(lower))]
        msg_id = _text_id(envelope.get("msg_id"))
        topic = envelope.get("type")
        return [RawRecord(
            key=tid_of(envelope) or msg_id or fallback,
            source_topic=topic if isinstance(topic, str) else lower.get(TYPE_HEADER, ""),
            body=body,
            shop_id=_text_id(envelope.get("kdt_id")) or self.shop_id,
            source_event_id=msg_id or fallback,
            headers=_kept(lower), content_type=_ctype(lower))]


def _kept(lower: Mapping[str, str]) -> dict[str, str]:
    return {k: lower[k] for k in KEPT_HEADERS if k in lower}


def _ctype(lower: Mapping[str, str]) -> str:
    return lower.get("content-type", "application/json")


# --- trades.sold.get ----------------------------------------------------------------

def beijing(moment: datetime) -> str:
    """``moment`` as Youzan writes times: Beijing time, ``yyyy-MM-dd HH:mm:ss``."""
    return moment.astimezone(BEIJING).strftime(TIME_FORMAT)


def window_params(window: Window) -> dict[str, str]:
    """``start_update``/``end_update`` (both inclusive, whole seconds) for [start, end)."""
    start = window.start.replace(microsecond=0)
    end = window.end.replace(microsecond=0)
    if end < window.end:  # a fractional end still covers its own second
        end += timedelta(seconds=1)
    return {"start_update": beijing(start),
            "end_update": beijing(max(start, end - timedelta(seconds=1)))}


def gateway_error(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, message) of an error answer (all arrive with HTTP 200), or None."""
    for key, code_key, msg_key in (("gw_err_resp", "err_code", "err_msg"),
                                   ("error_response", "code", "msg")):
        err = payload.get(key)
        if isinstance(err, dict) and err.get(code_key) not in (None, 0, "0", 200):
            return str(err.get(code_key)), str(err.get(msg_key, ""))
    if payload.get("success") is False or payload.get("code") not in (None, 200, "200"):
        return str(payload.get("code", "")), str(payload.get("message", ""))
    return None


def raise_for(code: str, message: str) -> None:
    """Raise the poll error an answer's code means."""
    if code in RATE_LIMIT_ERRORS or _RATE_WORDS.search(message):
        raise Throttled(f"Youzan rate limit ({code})", 1.0)
    if code in TOKEN_ERRORS:
        raise AuthFailed(f"Youzan refused the access token ({code})")
    raise PollError(f"Youzan answered error {code}")


def page_records(payload: Mapping[str, Any], shop_id: str) -> tuple[list[RawRecord], int | None]:
    """The records of a successful trades.sold.get answer and its ``total_results``."""
    data = payload.get("data")
    items = data.get("full_order_info_list") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PollError("Youzan trades page lacks data.full_order_info_list")
    total = data.get("total_results")
    if not isinstance(total, int):
        paginator = data.get("paginator")
        total = paginator.get("total_count") if isinstance(paginator, dict) else None
    return [_poll_record(item, shop_id) for item in items], (
        total if isinstance(total, int) else None)


def _poll_record(item: Any, shop_id: str) -> RawRecord:
    raw = orjson.dumps(item)
    info: Any = {}
    if isinstance(item, dict) and isinstance(item.get("full_order_info"), dict):
        info = item["full_order_info"].get("order_info") or {}
    tid = _text_id(info.get("tid")) if isinstance(info, dict) else None
    updated = info.get("update_time", "") if isinstance(info, dict) else ""
    key = tid or content_id(raw)
    return RawRecord(key=key, source_topic=POLL_TOPIC, body=raw, shop_id=shop_id,
                     source_event_id=f"poll:{key}:{updated}")


class YouzanPoll(PollSource):
    """Trades updated in a window, via youzan.trades.sold.get (catch-up for pushes)."""

    channel = CHANNEL
    max_window_s: ClassVar[float] = 3600.0  # results shift while paging: keep windows small
    overlap_s: ClassVar[float] = 300.0
    page_size: ClassVar[int] = 100  # [unverified] maximum
    rate_per_s: ClassVar[float] = 5.0  # [unverified] no documented figure
    burst: ClassVar[int] = 5

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)
        self._token: str = ""
        self._token_expires: float = 0.0

    @property
    def shop_id(self) -> str:
        return self.config.get("kdt_id", "")

    def _base(self) -> str:
        return (self.config.get("base_url") or BASE_URL).rstrip("/")

    async def _access_token(self, session: aiohttp.ClientSession) -> str:
        fixed = self.config.get("access_token", "")
        if fixed:
            return fixed
        if self._token and time.time() < self._token_expires - TOKEN_REFRESH_MARGIN_S:
            return self._token
        request = {"authorize_type": "silent", "client_id": self.config.get("client_id", ""),
                   "client_secret": self.config.get("client_secret", ""),
                   "grant_id": self.shop_id, "refresh": True}
        payload = await _post_json(session, f"{self._base()}/auth/token", {}, request)
        data = payload.get("data")
        if gateway_error(payload) or not isinstance(data, dict) or not data.get("access_token"):
            raise AuthFailed("Youzan refused the client credentials")
        expires = data.get("expires")
        self._token = str(data["access_token"])
        self._token_expires = (expires / 1000 if isinstance(expires, (int, float))
                               else time.time() + 86400)
        return self._token

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        page_no = int(cursor or 1)
        token = await self._access_token(session)
        url = (f"{self._base()}/api/{TRADES_API}/"
               f"{self.config.get('api_version') or API_VERSION}")
        request = {**window_params(window), "page_no": page_no, "page_size": self.page_size}
        payload = await _post_json(session, url, {"access_token": token}, request)
        error = gateway_error(payload)
        if error is not None:
            if error[0] in TOKEN_ERRORS and not self.config.get("access_token"):
                self._token = ""  # fetched token went stale: fetch a fresh one on retry
                raise PollError(f"Youzan access token expired ({error[0]})")
            raise_for(*error)
        records, total = page_records(payload, self.shop_id)
        done = len(records) < self.page_size or (total is not None
                                                 and page_no * self.page_size >= total)
        return Page(records, None if done else str(page_no + 1))


async def _post_json(session: aiohttp.ClientSession, url: str, params: Mapping[str, str],
                     request: Mapping[str, Any]) -> dict[str, Any]:
    try:
        async with session.post(url, params=params, data=orjson.dumps(request),
                                headers={"Content-Type": "application/json"}) as resp:
            body = await resp.read()
            status, retry = resp.status, resp.headers.get("Retry-After", "")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PollError(f"Youzan request failed: {type(exc).__name__}") from exc
    if status == 429:
        raise Throttled("Youzan HTTP 429", float(retry) if retry.isdigit() else 1.0)
    if status in (401, 403):
        raise AuthFailed(f"Youzan answered HTTP {status}")
    if status != 200:
        raise PollError(f"Youzan answered HTTP {status}")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PollError("Youzan answer is not JSON") from exc
    if not isinstance(payload, dict):
        raise PollError("Youzan answer is not a JSON object")
    return payload
