"""Taobao / Tmall (TOP): the seller's trades polled with ``taobao.trades.sold.increment.get``.

Channel facts relied on (research notes ``taobao_jd.md`` section 1):

- Gateway ``https://eco.taobao.com/router/rest`` (``base_url`` overrides it), one
  form-encoded POST per call. System params ``method``, ``app_key``, ``session``
  (the seller's authorization), ``timestamp`` (``yyyy-MM-dd HH:mm:ss`` in China
  time, GMT+8, +-10 min skew), ``v=2.0``, ``format=json``, ``sign_method``, ``sign``.
- Signature: every sent param except ``sign`` and empty values, sorted by key,
  concatenated as ``k1v1k2v2...`` (raw UTF-8, no separators); ``md5``:
  ``HEX(MD5(secret + s + secret))``, ``hmac``: ``HEX(HMAC_MD5(secret, s))``;
  upper-case hex.
- Business params: ``fields`` (only listed fields come back), ``start_modified`` /
  ``end_modified`` (naive GMT+8 strings, at most 1 day apart, <= 30 min advised),
  ``type`` (the default omits ``fixed`` and others, so the full list is sent),
  ``page_no``, ``page_size`` (1..100). Results are sorted by ``modified``
  descending and the doc requires paging backward from the last page to avoid
  missed trades, which needs ``total_results`` (so ``use_has_next`` is not sent).
- Answer: ``{"trades_sold_increment_get_response": {"total_results": n,
  "trades": {"trade": [...]}}}`` (``trades`` absent when empty); ``tid`` is a JSON
  number up to 19 digits, ``tid_str`` the same as a string (used as the key).
  Money: yuan strings with 2 dp. Times: naive GMT+8 strings. Receiver fields
  arrive masked (``oaid`` + ``taobao.top.oaid.decrypt`` gives plaintext; not used).
  Trade statuses: WAIT_BUYER_PAY, WAIT_SELLER_SEND_GOODS, WAIT_BUYER_CONFIRM_GOODS,
  TRADE_BUYER_SIGNED, TRADE_FINISHED, TRADE_CLOSED, TRADE_CLOSED_BY_TAOBAO, ...;
  lines carry their own ``status`` and ``refund_status``.
- Errors come as HTTP 200 ``{"error_response": {"code", "msg", "sub_code",
  "sub_msg"}}``: code 7 "App Call Limited" (or an ``accesscontrol.*`` sub_code)
  is throttling, its sub_msg says "This ban will last for N more seconds";
  11/12 (permissions), 25 (signature), 26/27 (session), 28/29 (app key) refuse
  the credentials. TOP documents no per-app QPS; the rate below is ours.

Config keys: ``app_key``, ``app_secret``, ``session``, ``shop_id``, optional
``base_url``, ``sign_method`` (``md5``, default, or ``hmac``), ``trade_types``
(comma list replacing ``TRADE_TYPES``), ``page_size`` (1..100).

Each trade of a page becomes one ``RawRecord`` whose body is that trade's JSON
object re-serialized with orjson (integers kept exactly), ``source_topic`` the
API method, ``source_event_id`` ``poll:<tid>:<modified>``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
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

CHANNEL = names.CHANNEL_TAOBAO
GATEWAY = "https://eco.taobao.com/router/rest"
METHOD = "taobao.trades.sold.increment.get"
RESPONSE_KEY = "trades_sold_increment_get_response"
CHINA_TZ = timezone(timedelta(hours=8))
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_PAGE_SIZE = 100
FIELDS = (
    "tid", "tid_str", "status", "type", "created", "modified", "pay_time", "consign_time",
    "end_time", "payment", "total_fee", "post_fee", "discount_fee", "adjust_fee",
    "received_payment", "buyer_nick", "buyer_open_uid", "receiver_name", "receiver_state",
    "receiver_city", "receiver_district", "receiver_town", "receiver_address", "receiver_zip",
    "receiver_mobile", "receiver_phone", "oaid", "orders",
)
# Every documented trade type: without ``type`` the API returns only
# guarantee_trade, auto_delivery, ec, cod and step (no ``fixed``, the usual one).
TRADE_TYPES = (
    "fixed,auction,guarantee_trade,step,independent_simple_trade,independent_shop_trade,"
    "auto_delivery,ec,cod,game_equipment,shopex_trade,netcn_trade,external_trade,instant_trade,"
    "b2c_cod,hotel_trade,super_market_trade,super_market_cod_trade,taohua,waimai,"
    "o2o_offlinetrade,nopaid,eticket,tmall_i18n,insurance_plus,finance,pre_auth_type"
)
THROTTLE_CODE = 7
AUTH_CODES = frozenset({11, 12, 25, 26, 27, 28, 29})
_BAN = re.compile(r"ban will last (?:for )?(\d+)")


def sign(params: Mapping[str, str], secret: str, method: str = "md5") -> str:
    """TOP's ``sign`` of ``params`` (``sign`` itself and empty values left out)."""
    joined = "".join(f"{k}{v}" for k, v in sorted(params.items()) if k != "sign" and v != "")
    if method == "hmac":
        return hmac.new(secret.encode(), joined.encode(), hashlib.md5).hexdigest().upper()
    if method == "md5":
        data = (secret + joined + secret).encode()
        return hashlib.md5(data, usedforsecurity=False).hexdigest().upper()
    raise ValueError(f"unsupported TOP sign_method {method!r}")


def signature_ok(params: Mapping[str, str], secret: str) -> bool:
    """Whether ``params["sign"]`` is TOP's signature of ``params`` under ``secret``."""
    method = params.get("sign_method", "md5")
    if method not in ("md5", "hmac") or not secret:
        return False
    return hmac.compare_digest(sign(params, secret, method).encode(),
                               params.get("sign", "").encode())


def china_time(moment: datetime) -> str:
    """``moment`` (aware) as TOP's naive GMT+8 string; sub-seconds are cut off."""
    return moment.astimezone(CHINA_TZ).strftime(TIME_FORMAT)


def window_bounds(window: Window) -> tuple[str, str]:
    """The window in TOP's whole-second strings, widened (never narrowed) to seconds."""
    end = window.end
    if end.microsecond:
        end += timedelta(microseconds=1_000_000 - end.microsecond)
    return china_time(window.start), china_time(end)


def request_params(config: Mapping[str, str], window: Window, page_no: int, page_size: int,
                   now: datetime) -> dict[str, str]:
    """The complete, signed form of one ``taobao.trades.sold.increment.get`` call."""
    start, end = window_bounds(window)
    params = {
        "method": METHOD, "app_key": config.get("app_key", ""),
        "session": config.get("session", ""), "timestamp": china_time(now), "v": "2.0",
        "format": "json", "sign_method": config.get("sign_method", "md5"),
        "fields": ",".join(FIELDS), "start_modified": start, "end_modified": end,
        "type": config.get("trade_types", TRADE_TYPES),
        "page_no": str(page_no), "page_size": str(page_size),
    }
    params = {k: v for k, v in params.items() if v}
    params["sign"] = sign(params, config.get("app_secret", ""), params["sign_method"])
    return params


def ban_seconds(sub_msg: str) -> float:
    """How long to wait after a throttling answer: its ban plus one second."""
    found = _BAN.search(sub_msg or "")
    return float(found.group(1)) + 1.0 if found else 1.0


def raise_for_error(doc: Any) -> None:
    """Raise the poll error an ``error_response`` stands for (no-op otherwise)."""
    err = doc.get("error_response") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return
    raw_code = err.get("code")
    code = int(raw_code) if str(raw_code).isdigit() else -1
    sub_code, sub_msg = str(err.get("sub_code", "")), str(err.get("sub_msg", ""))
    text = f"Taobao error {raw_code} {err.get('msg', '')!r} sub_code={sub_code!r}"
    if code == THROTTLE_CODE or sub_code.startswith("accesscontrol."):
        raise Throttled(f"{text} {sub_msg!r}", ban_seconds(sub_msg))
    if code in AUTH_CODES:
        raise AuthFailed(text)
    raise PollError(text)


def parse_page(doc: Any) -> tuple[list[Any], int]:
    """The trades of one answer and its ``total_results``."""
    raise_for_error(doc)
    resp = doc.get(RESPONSE_KEY) if isinstance(doc, dict) else None
    if not isinstance(resp, dict):
        raise PollError(f"Taobao answer has no {RESPONSE_KEY} object")
    trades = resp.get("trades") or []
    if isinstance(trades, dict):  # non-simplified JSON keeps the XML wrapper
        trades = trades.get("trade") or []
    total = resp.get("total_results", len(trades))
    if not isinstance(trades, list) or not isinstance(total, int) or isinstance(total, bool):
        raise PollError("Taobao trades page is not the documented shape")
    return trades, total


def trade_id(trade: Any) -> str | None:
    """The trade's ``tid`` as a string (``tid_str``, else the exact integer ``tid``)."""
    if not isinstance(trade, dict):
        return None
    tid_str, tid = trade.get("tid_str"), trade.get("tid")
    if isinstance(tid_str, str) and tid_str:
        return tid_str
    if isinstance(tid, int) and not isinstance(tid, bool):
        return str(tid)
    return None


def record_of(trade: Any, shop_id: str) -> RawRecord:
    """One trade of a page as a raw record (a trade without an id keys by content)."""
    body = orjson.dumps(trade)
    key = trade_id(trade) or content_id(body)
    modified = trade.get("modified", "") if isinstance(trade, dict) else ""
    return RawRecord(key=key, source_topic=METHOD, body=body, shop_id=shop_id,
                     source_event_id=f"poll:{key}:{modified}")


async def call(session: aiohttp.ClientSession, url: str, params: Mapping[str, str]) -> Any:
    """POST one TOP call and decode its JSON answer."""
    return await post_form_json(session, url, params, gateway="Taobao")


class TaobaoPoll(PollSource):
    """Trades modified in a window, paged backward from the last page as TOP requires.

    The cursor is the next ``page_no`` to read. The first call reads page 1 to learn
    ``total_results``; if it is the only page, that is the window. Otherwise the
    first call yields nothing and the pages are read from the last one back to 1:
    a trade that leaves the window mid-scan then shifts rows into pages not yet
    read (seen twice at worst, never missed).
    """

    channel = CHANNEL
    max_window_s: ClassVar[float] = 1800.0  # API limit 1 day; the doc advises <= 30 min
    # The trade index can lag up to ~10 minutes at peak (TOP's promotion-day notices).
    overlap_s: ClassVar[float] = 600.0
    page_size: ClassVar[int] = MAX_PAGE_SIZE
    rate_per_s: ClassVar[float] = 5.0  # undocumented per-app QPS: a conservative guess
    burst: ClassVar[int] = 5

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)  # takes the ``page_size`` config key; kept in the API's range
        self.page_size = max(1, min(MAX_PAGE_SIZE, self.page_size))  # type: ignore[misc]

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        if not self.config.get("app_secret"):
            raise AuthFailed("no Taobao app_secret configured")
        page_no = _page_no(cursor)
        params = request_params(self.config, window, page_no, self.page_size, datetime.now(UTC))
        trades, total = parse_page(await call(session, self.config.get("base_url") or GATEWAY,
                                              params))
        if cursor is None:
            last = max(1, math.ceil(total / self.page_size))
            if last > 1:
                return Page([], str(last))
        records = [record_of(trade, self.shop_id) for trade in trades]
        return Page(records, str(page_no - 1) if page_no > 1 else None)


def _page_no(cursor: str | None) -> int:
    if cursor is None:
        return 1
    if not cursor.isdigit() or int(cursor) < 1:
        raise PollError(f"not a Taobao page cursor: {cursor!r}")
    return int(cursor)
