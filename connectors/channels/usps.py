"""USPS: parcel tracking events, polled from the USPS Tracking API v3 (REST, OAuth2).

Facts relied on (USPS/api-examples README and PR #35; see research notes):

- Token: ``POST {base_url}/oauth2/v3/token`` with the JSON body
  ``{"client_id", "client_secret", "grant_type": "client_credentials"}``; the answer
  carries ``access_token`` and ``expires_in`` (seconds, **as a string**). The token
  is cached until 60 s before it expires (token calls count against the quota).
- Tracking: ``GET {base_url}/tracking/v3/tracking/{trackingNumber}?expand=DETAIL``
  with ``Authorization: Bearer <token>``. The answer has top-level fields
  (``trackingNumber``, ``statusCategory``, ``status``, ``mailClass`` ...; several
  booleans as strings) and ``trackingEvents[]``, newest first, each with
  ``eventType`` (wording drifts; never keyed on), ``eventCode`` (2 characters:
  ``03`` accepted, ``10``/``PC`` processed, ``OF`` out for delivery, ``01``
  delivered, ``MA``/``GX`` electronic label events, ``DX`` "delivery status not
  updated" ...), ``eventTimestamp`` (**local time at the scan, despite its ``Z``**),
  ``GMTTimestamp`` (true UTC, used here) and ``GMTOffset`` (``-7:00``, no leading
  zero). When ``GMTTimestamp`` is missing, the event time is ``eventTimestamp`` read
  as local time minus ``GMTOffset``; an event with neither is skipped.
- Limits: about 60 requests per hour per application, token calls included; over
  it, HTTP 429 with ``Retry-After`` (seconds). 401/403: credentials refused.
  400/404 for one tracking number (unknown, not yet in the system) skips it.

USPS has no "changed since" query: it answers per tracking number. So a window
walk here visits every watched tracking number once, one number per page, in
sorted order; the cursor is the last tracking number visited (its position in the
sorted list, robust to numbers added during the walk). Each page yields one record
per tracking event whose GMT time is in the window. The watch list comes from
``tracking_numbers()``: the ``tracking_numbers`` config key, plus, when
``sandbox_listing`` is true, the sandbox-only ``GET {base_url}/sandbox/
tracking-numbers`` (USPS itself has no such listing; in production a subclass or
the order pipeline supplies the shipped, not yet delivered parcels).

Config keys: ``client_id``, ``client_secret``, ``base_url`` (default
https://api.usps.com; the test environment is https://api-cat.usps.com),
``tracking_numbers`` (comma separated), ``sandbox_listing`` ("true" to add the
sandbox listing), ``shop_id`` (optional label).

Records: ``key`` = the tracking number; ``source_topic`` = the event's ``eventCode``;
``source_event_id`` = ``f"{trackingNumber}:{eventCode}:{GMT time}"`` with the GMT
time normalized to ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (USPS has sent it with and without
milliseconds); ``body`` = the tracking response with ``trackingEvents`` reduced to
that one event (re-serialized JSON), so the normalizer reads the API's own shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

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
)

CHANNEL = names.CHANNEL_USPS
DEFAULT_BASE_URL = "https://api.usps.com"
OAUTH_PATH = "/oauth2/v3/token"
TRACKING_PATH = "/tracking/v3/tracking/"
SANDBOX_LISTING_PATH = "/sandbox/tracking-numbers"
TOKEN_MARGIN_S = 60.0
DEFAULT_RETRY_AFTER_S = 60.0  # the quota is hourly: a missing Retry-After means "later"
_OFFSET = re.compile(r"^([+-])(\d{1,2}):(\d{2})$")


def parse_gmt_offset(value: object) -> timedelta | None:
    """``"-7:00"`` / ``"-07:00"`` / ``"+5:30"`` as a timedelta, None when unreadable."""
    found = _OFFSET.match(value.strip()) if isinstance(value, str) else None
    if not found:
        return None
    sign, hours, minutes = found.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    return -delta if sign == "-" else delta


def _parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def event_time(event: Mapping[str, Any]) -> datetime | None:
    """The event's UTC time: ``GMTTimestamp``, else local ``eventTimestamp`` - ``GMTOffset``."""
    gmt = _parse_iso(event.get("GMTTimestamp"))
    if gmt is not None:
        return gmt.replace(tzinfo=UTC) if gmt.tzinfo is None else gmt.astimezone(UTC)
    local, offset = _parse_iso(event.get("eventTimestamp")), parse_gmt_offset(
        event.get("GMTOffset"))
    if local is None or offset is None:
        return None
    # The trailing Z of eventTimestamp is not true: it is the scan location's wall clock.
    return (local.replace(tzinfo=None) - offset).replace(tzinfo=UTC)


def gmt_text(moment: datetime) -> str:
    """``2023-08-04T18:02:00.000Z``: one spelling of a GMT time, for stable ids."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{moment.microsecond // 1000:03d}Z"


def event_records(doc: Mapping[str, Any], window: Window, shop_id: str = "") -> list[RawRecord]:
    """One record per tracking event of ``doc`` whose GMT time is in ``window``."""
    number = str(doc.get("trackingNumber") or "")
    events = doc.get("trackingEvents")
    if not number or not isinstance(events, list):
        raise PollError("USPS tracking answer lacks trackingNumber or trackingEvents")
    top = {k: v for k, v in doc.items() if k != "trackingEvents"}
    records = []
    for event in events:
        at = event_time(event) if isinstance(event, dict) else None
        if at is None or not window.start <= at < window.end:
            continue
        code = str(event.get("eventCode") or "")
        records.append(RawRecord(
            key=number, source_topic=code,
            body=orjson.dumps({**top, "trackingEvents": [event]}), shop_id=shop_id,
            source_event_id=f"{number}:{code}:{gmt_text(at)}"))
    return records


def split_numbers(value: str) -> list[str]:
    """Tracking numbers from a comma separated config value (blank entries dropped)."""
    return [n.strip() for n in value.split(",") if n.strip()]


def _check(status: int, headers: Mapping[str, str], what: str) -> None:
    if status == 429:
        raise Throttled(f"USPS 429 on {what}",
                        float(headers.get("Retry-After", DEFAULT_RETRY_AFTER_S)))
    if status in (401, 403):
        raise AuthFailed(f"USPS answered {status} on {what}")
    if status != 200:
        raise PollError(f"USPS answered {status} on {what}")


def _json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PollError(f"USPS {what} answer is not JSON") from exc


class UspsPoll(PollSource):
    """Tracking events of watched USPS parcels, one tracking number per page."""

    channel = CHANNEL
    # USPS does not limit windows (it has none); a week keeps walks bounded.
    max_window_s: ClassVar[float] = 7 * 86400.0
    # Scans reach the API hours after they happen (GMTTimestamp is the scan time):
    # re-read a day so late uploads still fall in a walked window.
    overlap_s: ClassVar[float] = 86400.0
    settle_s: ClassVar[float] = 60.0
    page_size: ClassVar[int] = 1  # one tracking number per request
    rate_per_s: ClassVar[float] = 60 / 3600  # ~60 requests/hour/application
    burst: ClassVar[int] = 60

    def __init__(self, config: Mapping[str, str]) -> None:
        super().__init__(config)
        self._token: tuple[str, float] | None = None  # (token, monotonic expiry)
        self._numbers: list[str] = []

    def _base(self) -> str:
        return (self.config.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    async def _request(self, session: aiohttp.ClientSession, method: str, url: str,
                       what: str, **kwargs: Any) -> tuple[int, Mapping[str, str], bytes]:
        try:
            async with session.request(method, url, **kwargs) as resp:
                return resp.status, resp.headers, await resp.read()
        except aiohttp.ClientError as exc:
            raise PollError(f"USPS {what} request failed: {type(exc).__name__}") from exc

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A cached OAuth2 client-credentials access token."""
        if self._token and time.monotonic() < self._token[1]:
            return self._token[0]
        payload = {"client_id": self.config.get("client_id", ""),
                   "client_secret": self.config.get("client_secret", ""),
                   "grant_type": "client_credentials"}
        status, headers, body = await self._request(
            session, "POST", self._base() + OAUTH_PATH, "token", json=payload)
        if status in (400, 401):  # OAuth2 answers invalid_client with either
            raise AuthFailed(f"USPS refused the client credentials ({status})")
        _check(status, headers, "token")
        doc = _json(body, "token")
        try:
            token, expires_in = str(doc["access_token"]), float(doc.get("expires_in", 0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PollError("USPS token answer lacks access_token/expires_in") from exc
        self._token = (token, time.monotonic() + max(expires_in - TOKEN_MARGIN_S, 0.0))
        return token

    async def _authed_get(self, session: aiohttp.ClientSession, url: str, what: str,
                          params: Mapping[str, str] | None,
                          ) -> tuple[int, Mapping[str, str], bytes]:
        auth = {"Authorization": f"Bearer {await self.token(session)}"}
        return await self._request(session, "GET", url, what, params=params, headers=auth)

    async def _get(self, session: aiohttp.ClientSession, url: str, what: str,
                   params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """GET with the bearer token; one fresh token when the cached one is refused."""
        status, headers, body = await self._authed_get(session, url, what, params)
        if status == 401:  # expired or revoked before its time: one fresh token
            self._token = None
            status, headers, body = await self._authed_get(session, url, what, params)
        if status not in (400, 404):
            _check(status, headers, what)
        return status, body

    async def tracking_numbers(self, session: aiohttp.ClientSession) -> list[str]:
        """The sorted watch list: configured numbers, plus the sandbox listing if asked."""
        numbers = set(split_numbers(self.config.get("tracking_numbers", "")))
        if self.config.get("sandbox_listing", "") in ("1", "true", "yes"):
            status, body = await self._get(session, self._base() + SANDBOX_LISTING_PATH,
                                           "sandbox listing")
            if status != 200:
                raise PollError(f"sandbox listing answered {status}")
            listed = _json(body, "sandbox listing")
            if not isinstance(listed, dict) or not isinstance(listed.get("trackingNumbers"), list):
                raise PollError("sandbox listing lacks trackingNumbers")
            numbers.update(str(n) for n in listed["trackingNumbers"])
        return sorted(numbers)

    async def track(self, session: aiohttp.ClientSession,
                    number: str) -> dict[str, Any] | None:
        """The detailed tracking answer, or None when USPS does not know the number."""
        url = self._base() + TRACKING_PATH + quote(number, safe="")
        status, body = await self._get(session, url, "tracking", params={"expand": "DETAIL"})
        if status != 200:
            return None
        doc = _json(body, "tracking")
        if not isinstance(doc, dict):
            raise PollError("USPS tracking answer is not an object")
        return doc

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        if cursor is None or not self._numbers:  # a new (or resumed) walk reads the list
            self._numbers = await self.tracking_numbers(session)
        todo = [n for n in self._numbers if cursor is None or n > cursor]
        if not todo:
            return Page([], None)
        doc = await self.track(session, todo[0])
        records = event_records(doc, window, self.shop_id) if doc is not None else []
        return Page(records, todo[0] if len(todo) > 1 else None)
