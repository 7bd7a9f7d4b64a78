"""Pinduoduo (拼多多开放平台): orders polled with ``pdd.order.number.list.increment.get``.

Facts relied on (/work/research/pdd_douyin.md section 1; lywzx/pdd-node-sdk
``PddOrderNumberListIncrementGet.ts`` and ``pdd-client.ts``, Cherrs/pdd-rs,
niltor/open-pdd-net-sdk, differentname123/Shop-Fusion, dtapps/go-library):

- Gateway ``POST https://gw-api.pinduoduo.com/api/router``, every parameter form-encoded in
  the body, the API name in ``type``; system parameters ``client_id``, ``access_token``
  (the mall's OAuth token), ``timestamp`` (unix seconds), ``data_type=JSON``, ``sign``.
- ``sign = upper(hex(md5(client_secret + k1 + v1 + k2 + v2 ... + client_secret)))`` over
  every parameter but ``sign``, keys sorted ascending, no separators, no URL-encoding;
  booleans are sent and signed as ``true``/``false``.
- Business parameters: ``start_updated_at``/``end_updated_at`` (unix seconds of the last
  update, ``end - start <= 30 min``), ``order_status=5`` and ``refund_status=5`` (all: the
  narrower defaults hide refunding orders), ``is_lucky_flag=0`` (all), ``page`` (1-based),
  ``page_size`` (max 100), ``use_has_next=false`` (we need ``total_count``, below).
- Answer ``{"order_sn_increment_get_response": {"total_count": n, "order_sn_list": [..]}}``.
  Errors come with HTTP 200 as ``{"error_response": {"error_code": int, "error_msg",
  "sub_code", "sub_msg", "request_id"}}``.
- Paging: PDD says to page **backwards** (last page first) so that orders updated during
  the paging, which leave the window and shift later rows forward, are not skipped. The first
  request (page 1) only learns ``total_count`` when the window has several pages; its rows
  are then dropped and the pages are read from the last one down to page 1 (one extra
  request per multi-page window, no row missed, none returned twice).
- Only orders with a deal time in the last 3 months are returned, and the window end should
  stay at least 3 minutes behind PDD's clock (``settle_s = 180``).
- OrderInfo fields: ``order_sn`` (string ``YYMMDD-`` + 15 digits), ``updated_at``,
  ``created_time``, ``pay_time``, ``confirm_time``, ``shipping_time``, ``receive_time``
  (``yyyy-MM-dd HH:mm:ss`` in China time, UTC+8, no offset; empty until it happens);
  ``order_status`` 1 待发货 / 2 已发货待签收 / 3 已签收 (shipping only); ``confirm_status``
  0 未成交 / 1 已成交 / 2 已取消; ``refund_status`` 1 none or closed / 2 after-sale in
  progress / 3 refunding / 4 refunded; ``after_sales_status`` 0 none, 2 refund requested,
  3 return requested, 4 refund agreed, 10 refund succeeded, ...; money in **yuan** decimals
  (``pay_amount = goods_amount - discount_amount + postage``, ``item_list[].goods_price``
  is a unit price); ``goods_id``/``sku_id`` int64; ``receiver_name/phone/address`` are
  ciphertext only while the order waits for shipping (else ``""``), ``*_mask`` masked.
- Rate limits of this API are not documented in any source read; 5 requests/s is assumed.
  Error codes are not verified either: ``70031`` (too frequent) is treated as throttling,
  ``10019`` (access_token expired) and ``20004`` (sign error) as refused credentials; the
  config keys below override both lists.

Records: one per order; body = the OrderInfo re-serialised by orjson; key = ``order_sn``;
source_topic ``pdd.order.number.list.increment.get``; source_event_id
``poll:<order_sn>:<updated_at>``; shop_id = the ``shop_id`` config key (the mall id).

Config keys: ``client_id``, ``client_secret``, ``access_token``, ``shop_id``, ``base_url``
(default the gateway), ``throttle_codes`` and ``auth_codes`` (comma-separated error codes),
``throttle_retry_s`` (wait after a throttling answer, default 1).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar

import aiohttp
import orjson

from orderpulse import names
from orderpulse.connectors.base import (
    AuthFailed,
    Page,
    PollError,
    PollSource,
    RawRecord,
    Throttled,
    Window,
    content_id,
)

CHANNEL = names.CHANNEL_PINDUODUO
GATEWAY = "https://gw-api.pinduoduo.com/api/router"
API_TYPE = "pdd.order.number.list.increment.get"
RESPONSE_KEY = "order_sn_increment_get_response"
#: China has had no daylight saving since 1991: a fixed +08:00 is Asia/Shanghai.
CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
THROTTLE_CODES = "70031"  # unverified, see the module docstring
AUTH_CODES = "10019,20004"  # unverified
MAX_PAGE_SIZE = 100


def sign(client_secret: str, params: Mapping[str, str]) -> str:
    """PDD's request signature over every parameter except ``sign``."""
    joined = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    base = f"{client_secret}{joined}{client_secret}".encode()
    # MD5 is the gateway's documented signature, not our choice.
    return hashlib.md5(base).hexdigest().upper()  # noqa: S324


def china_time(moment: datetime) -> str:
    """A datetime as PDD writes times: China local, no offset."""
    return moment.astimezone(CHINA_TZ).strftime(TIME_FORMAT)


def parse_china_time(text: str) -> datetime | None:
    """A PDD time string as an aware datetime (None when empty or malformed)."""
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=CHINA_TZ)
    except (TypeError, ValueError):
        return None


def _codes(text: str) -> frozenset[int]:
    return frozenset(int(c) for c in text.split(",") if c.strip().isdigit())


def error_of(doc: Any) -> tuple[int, str] | None:
    """(error_code, error_msg) of an ``error_response`` answer, else None."""
    if not isinstance(doc, dict) or not isinstance(doc.get("error_response"), dict):
        return None
    err = doc["error_response"]
    code = err.get("error_code")
    return (code if isinstance(code, int) else -1,
            str(err.get("sub_msg") or err.get("error_msg") or ""))


def pages(total_count: int, page_size: int) -> int:
    return max(1, math.ceil(total_count / page_size))


class PinduoduoPoll(PollSource):
    """Orders updated in a window, read backwards page by page."""

    channel = CHANNEL
    max_window_s: ClassVar[float] = 1800.0  # end_updated_at - start_updated_at <= 30 min
    overlap_s: ClassVar[float] = 300.0
    settle_s: ClassVar[float] = 180.0  # "end no later than PDD's time minus 3 min"
    page_size: ClassVar[int] = MAX_PAGE_SIZE
    rate_per_s: ClassVar[float] = 5.0  # not documented for this API: an assumption
    burst: ClassVar[int] = 5

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)
        self.throttle_codes = _codes(config.get("throttle_codes", THROTTLE_CODES))
        self.auth_codes = _codes(config.get("auth_codes", AUTH_CODES))
        self.throttle_retry_s = float(config.get("throttle_retry_s", "1.0"))

    def params(self, window: Window, page: int, now: float | None = None) -> dict[str, str]:
        """The signed form of one request for ``page`` of ``window``."""
        params = {
            "type": API_TYPE, "client_id": self.config.get("client_id", ""),
            "access_token": self.config.get("access_token", ""), "data_type": "JSON",
            "timestamp": str(int(time.time() if now is None else now)),
            "start_updated_at": str(math.floor(window.start.timestamp())),
            "end_updated_at": str(math.floor(window.end.timestamp())),
            "order_status": "5", "refund_status": "5", "is_lucky_flag": "0",
            "page": str(page), "page_size": str(min(self.page_size, MAX_PAGE_SIZE)),
            "use_has_next": "false",
        }
        params["sign"] = sign(self.config.get("client_secret", ""), params)
        return params

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        page = int(cursor) if cursor else 1
        result = await self._call(session, self.params(window, page))
        if cursor is None:
            last = pages(int(result.get("total_count") or 0), self.page_size)
            if last > 1:  # read backwards from the last page (see the module docstring)
                return Page([], str(last))
            return Page(self.records(result), None)
        return Page(self.records(result), str(page - 1) if page > 1 else None)

    async def _call(self, session: aiohttp.ClientSession,
                    params: Mapping[str, str]) -> dict[str, Any]:
        async with session.post(self.config.get("base_url") or GATEWAY, data=params) as resp:
            body = await resp.read()
            status = resp.status
        if status == 429:
            raise Throttled("Pinduoduo answered 429", self.throttle_retry_s)
        if status != 200:
            raise PollError(f"Pinduoduo answered HTTP {status}")
        return self.result(body)

    def result(self, body: bytes) -> dict[str, Any]:
        """The ``order_sn_increment_get_response`` object, or the error it stands for."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PollError(f"Pinduoduo answer is not JSON: {exc}") from exc
        error = error_of(doc)
        if error is not None:
            code, message = error
            text = f"Pinduoduo error_code {code}: {message}"
            if code in self.throttle_codes:
                raise Throttled(text, self.throttle_retry_s)
            if code in self.auth_codes:
                raise AuthFailed(text)
            raise PollError(text)
        result = doc.get(RESPONSE_KEY) if isinstance(doc, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("order_sn_list", []), list):
            raise PollError(f"Pinduoduo answer has no {RESPONSE_KEY}.order_sn_list")
        return result

    def records(self, result: Mapping[str, Any]) -> list[RawRecord]:
        """One record per OrderInfo of a page."""
        records = []
        for order in result.get("order_sn_list") or []:
            order_sn = str(order.get("order_sn", "")) if isinstance(order, dict) else ""
            raw = orjson.dumps(order)
            updated = order.get("updated_at", "") if isinstance(order, dict) else ""
            records.append(RawRecord(
                key=order_sn or content_id(raw), source_topic=API_TYPE, body=raw,
                shop_id=self.shop_id,
                # A poll sees a state, not a delivery: the state's own id.
                source_event_id=f"poll:{order_sn}:{updated}"))
        return records
