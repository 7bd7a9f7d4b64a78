"""JD (JOS): the seller's POP orders polled with ``jingdong.pop.order.search``.

Channel facts relied on (research notes ``taobao_jd.md`` section 2):

- Gateway ``https://api.jd.com/routerjson`` (``base_url`` overrides it), one
  form-encoded POST per call. System params ``method``, ``app_key``,
  ``access_token`` (the seller's OAuth token), ``timestamp`` (``yyyy-MM-dd
  HH:mm:ss``, Beijing time GMT+8 by convention, +-6 min skew), ``v=2.0``,
  ``360buy_param_json`` (all business params as one JSON string, keys in
  alphabetical order), ``sign``.
- Signature: every sent param except ``sign``, sorted by key, as
  ``HEX(MD5(secret + k1v1k2v2... + secret))`` upper-case, values raw (not
  URL-encoded); ``360buy_param_json`` is signed as the exact string sent.
- Business params: ``start_date`` / ``end_date`` (GMT+8 strings, at most 1 month
  apart), ``dateType`` (``0`` = modification time; unverified against the
  official page), ``order_state`` (required, comma list of English states),
  ``optional_fields`` (required, camelCase), ``page`` (from 1), ``page_size`` (<= 50).
- Answer: ``{"jingdong_pop_order_search_responce": {"code": "0",
  "searchorderinfo_result": {"apiResult": {"success": ...}, "orderTotal": n,
  "orderInfoList": [...]}}}`` (sic ``responce``). Every scalar is a string:
  ``orderId``, yuan amounts (``orderPayment`` ...), ``itemTotal``; times are naive
  GMT+8 strings, ``""`` when not reached. ``consigneeInfo`` fields are TDE
  ciphertext for encrypted apps (not decrypted here). States: WAIT_SELLER_STOCK_OUT,
  WAIT_GOODS_RECEIVE_CONFIRM, WAIT_SELLER_DELIVERY, PAUSE, FINISHED_L,
  TRADE_CANCELED, LOCKED, POP_ORDER_PAUSE.
- Errors: gateway ``{"error_response": {"code": "2", "zh_desc", "en_desc"}}``
  (``code`` a string): 2 "App Call Limited" is throttling (no ban length given),
  11/12 (signature) and 19 (access_token) refuse the credentials; business
  failures are HTTP 200 with ``apiResult.success`` false. JOS documents no
  per-app QPS; the rate below is ours.

Config keys: ``app_key``, ``app_secret``, ``access_token``, ``shop_id`` (the
venderId), optional ``base_url``, ``page_size`` (1..50), ``order_states`` (comma
list replacing ``ORDER_STATES``), ``date_type`` (default ``0``).

Each order of a page becomes one ``RawRecord`` whose body is that order's JSON
object re-serialized with orjson, ``source_topic`` the API method,
``source_event_id`` ``poll:<orderId>:<modified>``. Pages are read backward from
the last one, like Taobao's, so an order leaving the window mid-scan cannot make
another one slip between pages.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
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
    post_form_json,
)

CHANNEL = names.CHANNEL_JD
GATEWAY = "https://api.jd.com/routerjson"
METHOD = "jingdong.pop.order.search"
RESPONSE_KEY = "jingdong_pop_order_search_responce"  # sic: JOS spells it "responce"
RESULT_KEY = "searchorderinfo_result"
PARAM_JSON = "360buy_param_json"
CHINA_TZ = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_PAGE_SIZE = 50
ORDER_STATES = ("WAIT_SELLER_STOCK_OUT", "WAIT_GOODS_RECEIVE_CONFIRM", "WAIT_SELLER_DELIVERY",
                "PAUSE", "FINISHED_L", "TRADE_CANCELED", "LOCKED", "POP_ORDER_PAUSE")
OPTIONAL_FIELDS = (
    "orderId", "venderId", "orderType", "payType", "orderState", "orderStateRemark",
    "orderTotalPrice", "orderSellerPrice", "orderPayment", "freightPrice", "sellerDiscount",
    "balanceUsed", "orderStartTime", "orderEndTime", "paymentConfirmTime", "modified",
    "orderRemark", "venderRemark", "consigneeInfo", "itemInfoList", "waybill",
    "open_id_buyer", "xid_buyer",
)
THROTTLE_CODE = "2"
AUTH_CODES = frozenset({"11", "12", "19"})


def sign(params: Mapping[str, str], secret: str) -> str:
    """JOS's ``sign`` of ``params`` (every param but ``sign``, sorted, secret-wrapped MD5)."""
    joined = "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign")
    return hashlib.md5((secret + joined + secret).encode(),
                       usedforsecurity=False).hexdigest().upper()


def signature_ok(params: Mapping[str, str], secret: str) -> bool:
    """Whether ``params["sign"]`` is JOS's signature of ``params`` under ``secret``."""
    return bool(secret) and hmac.compare_digest(sign(params, secret).encode(),
                                                params.get("sign", "").encode())


def china_time(moment: datetime) -> str:
    """``moment`` (aware) as JOS's naive GMT+8 string; sub-seconds are cut off."""
    return moment.astimezone(CHINA_TZ).strftime(TIME_FORMAT)


def window_bounds(window: Window) -> tuple[str, str]:
    """The window in whole-second strings, widened (never narrowed) to seconds."""
    end = window.end
    if end.microsecond:
        end += timedelta(microseconds=1_000_000 - end.microsecond)
    return china_time(window.start), china_time(end)


def param_json(config: Mapping[str, str], window: Window, page: int, page_size: int) -> str:
    """``360buy_param_json``: compact JSON, keys sorted as the doc asks."""
    start, end = window_bounds(window)
    return orjson.dumps({
        "dateType": config.get("date_type", "0"), "end_date": end,
        "optional_fields": ",".join(OPTIONAL_FIELDS),
        "order_state": config.get("order_states", ",".join(ORDER_STATES)),
        "page": str(page), "page_size": str(page_size), "start_date": start,
    }, option=orjson.OPT_SORT_KEYS).decode()


def request_params(config: Mapping[str, str], window: Window, page: int, page_size: int,
                   now: datetime) -> dict[str, str]:
    """The complete, signed form of one ``jingdong.pop.order.search`` call."""
    params = {
        "method": METHOD, "app_key": config.get("app_key", ""),
        "access_token": config.get("access_token", ""), "timestamp": china_time(now),
        "v": "2.0", PARAM_JSON: param_json(config, window, page, page_size),
    }
    params["sign"] = sign(params, config.get("app_secret", ""))
    return params


def raise_for_error(doc: Any) -> None:
    """Raise the poll error a gateway ``error_response`` stands for (no-op otherwise)."""
    err = doc.get("error_response") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return
    code = str(err.get("code", ""))
    text = f"JD error {code} {err.get('en_desc', '')!r}"
    if code == THROTTLE_CODE:
        raise Throttled(text, 1.0)
    if code in AUTH_CODES:
        raise AuthFailed(text)
    raise PollError(text)


def parse_page(doc: Any) -> tuple[list[Any], int]:
    """The orders of one answer and its ``orderTotal``."""
    raise_for_error(doc)
    resp = doc.get(RESPONSE_KEY) if isinstance(doc, dict) else None
    result = resp.get(RESULT_KEY) if isinstance(resp, dict) else None
    if not isinstance(result, dict):
        raise PollError(f"JD answer has no {RESPONSE_KEY}.{RESULT_KEY} object")
    if str(resp.get("code", "0")) != "0":
        raise PollError(f"JD answer code {resp.get('code')!r}")
    api = result.get("apiResult")
    if not isinstance(api, dict) or api.get("success") is not True:
        detail = api if isinstance(api, dict) else {}
        raise PollError(f"JD business error numberCode={detail.get('numberCode')!r} "
                        f"{detail.get('englishErrCode', '')!r}")
    orders = result.get("orderInfoList") or []
    total = _count(result.get("orderTotal", len(orders)))
    if not isinstance(orders, list) or total is None:
        raise PollError("JD orders page is not the documented shape")
    return orders, total


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(value) if isinstance(value, str) and value.isdigit() else None


def order_id(order: Any) -> str | None:
    """The order's ``orderId`` as a string (a string in JOS; an exact integer tolerated)."""
    value = order.get("orderId") if isinstance(order, dict) else None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def record_of(order: Any, shop_id: str) -> RawRecord:
    """One order of a page as a raw record (an order without an id keys by content)."""
    body = orjson.dumps(order)
    key = order_id(order) or content_id(body)
    modified = order.get("modified", "") if isinstance(order, dict) else ""
    return RawRecord(key=key, source_topic=METHOD, body=body, shop_id=shop_id,
                     source_event_id=f"poll:{key}:{modified}")


async def call(session: aiohttp.ClientSession, url: str, params: Mapping[str, str]) -> Any:
    """POST one JOS call and decode its JSON answer."""
    return await post_form_json(session, url, params, gateway="JD")


class JdPoll(PollSource):
    """Orders modified in a window; the cursor is the next ``page`` to read.

    The first call reads page 1 for ``orderTotal``; when there are more pages it
    yields nothing and the pages are then read from the last back to 1.
    """

    channel = CHANNEL
    max_window_s: ClassVar[float] = 86400.0  # API limit 1 month; pages cap near 300
    overlap_s: ClassVar[float] = 300.0
    page_size: ClassVar[int] = MAX_PAGE_SIZE
    rate_per_s: ClassVar[float] = 5.0  # undocumented per-app QPS: a conservative guess
    burst: ClassVar[int] = 5

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)  # takes the ``page_size`` config key; kept in the API's range
        self.page_size = max(1, min(MAX_PAGE_SIZE, self.page_size))  # type: ignore[misc]

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        if not self.config.get("app_secret"):
            raise AuthFailed("no JD app_secret configured")
        page = _page(cursor)
        params = request_params(self.config, window, page, self.page_size, datetime.now(UTC))
        orders, total = parse_page(await call(session, self.config.get("base_url") or GATEWAY,
                                              params))
        if cursor is None:
            last = max(1, math.ceil(total / self.page_size))
            if last > 1:
                return Page([], str(last))
        records = [record_of(order, self.shop_id) for order in orders]
        return Page(records, str(page - 1) if page > 1 else None)


def _page(cursor: str | None) -> int:
    if cursor is None:
        return 1
    if not cursor.isdigit() or int(cursor) < 1:
        raise PollError(f"not a JD page cursor: {cursor!r}")
    return int(cursor)
