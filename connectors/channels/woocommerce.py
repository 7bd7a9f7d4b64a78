"""WooCommerce: ``order.*`` webhooks, and the REST API v3 orders list as the poll.

Facts relied on (woocommerce/woocommerce ``includes/class-wc-webhook.php`` and
the orders REST controller, via the research notes /work/research/youzan_woo.md):

Webhooks: ``POST`` JSON, the body ``trim(wp_json_encode(GET /wc/v3/orders/<id>))``
(``order.deleted`` sends only ``{"id": N}``). ``X-WC-Webhook-Signature`` =
base64(HMAC-SHA256(raw body, secret)); ``X-WC-Webhook-Topic`` (order.created,
order.updated, order.deleted, order.restored), ``-Resource``, ``-Event``,
``-Source`` (``home_url('/')``), ``-ID`` (the webhook) and ``-Delivery-ID``.
Newer WooCommerce sets the delivery id to ``wp_hash(webhook_id . time())``, so
deliveries of one webhook in one second share it: the source_event_id is
``<delivery id>:<topic>:<order id>:<date_modified_gmt>``. There is no delivery
timestamp (so no replay window) and no redelivery: the poll is the catch-up.
The secret is used as configured (newer WooCommerce HTML-entity-decodes the
stored secret before signing: configure the decoded text).
When a webhook is saved WooCommerce pings it with the unsigned form body
``webhook_id=<N>`` and needs exactly HTTP 200 (``handshake``).

Poll: ``GET {site}/wp-json/wc/v3/orders?modified_after=..&modified_before=..
&dates_are_gmt=true&orderby=modified&order=asc&per_page=100&page=N`` with HTTP
Basic ``consumer_key:consumer_secret`` (or, where hosts strip
``Authorization``, the keys as query parameters). The bounds are UTC without
offset and both exclusive (WP_Date_Query ``after``/``before``), so a window
[start, end) asks ``modified_after = start - 1s``. ``X-WP-TotalPages`` tells
whether more pages follow. Offset pages shift when an order in the window is
modified during the scan (it leaves the window), so the next page is asked by
keyset: ``modified_after`` moves to the last page's last ``date_modified_gmt``
second, and the ids already read at that second are skipped (the cursor
``<since>|<page>|<ids>``); ``page`` only grows when a whole page shares one
second. Core WooCommerce has no rate limit; hosts and WAFs answer 429/503
(Retry-After) or a non-JSON 403: throttled/retried, while 401 and JSON 403
refusals are AuthFailed.

Order fields: ``id`` int, ``number`` string, ``status`` (pending, processing,
on-hold, completed, cancelled, refunded, failed, checkout-draft, trash, custom),
money as decimal strings except ``line_items[].price`` (a number), ``date_*``
site-local without offset, ``*_gmt`` UTC without offset.

Config keys:
- webhook (``WooCommerceWebhook``): ``webhook_secret``; ``shop_id`` (default:
  the host of ``X-WC-Webhook-Source``).
- poll (``WooCommercePoll``): ``site_url`` (``https://shop.example``),
  ``consumer_key``, ``consumer_secret``, ``query_string_auth`` ("true": keys as
  query parameters), ``base_url`` (replaces ``site_url`` for requests),
  ``shop_id`` (default: the host of ``site_url``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import orjson

from orderpulse import names
from orderpulse.connectors.base import (
    AuthFailed,
    Page,
    PollError,
    PollSource,
    RawRecord,
    Reply,
    Throttled,
    WebhookSource,
    Window,
    content_id,
)
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_WOOCOMMERCE
SIGNATURE_HEADER = "x-wc-webhook-signature"
TOPIC_HEADER = "x-wc-webhook-topic"
DELIVERY_HEADER = "x-wc-webhook-delivery-id"
SOURCE_HEADER = "x-wc-webhook-source"
ORDERS_PATH = "/wp-json/wc/v3/orders"
POLL_TOPIC = "order.updated"
# Kept with the raw event (lower-cased); the signature itself is not kept.
KEPT_HEADERS = (TOPIC_HEADER, "x-wc-webhook-resource", "x-wc-webhook-event", SOURCE_HEADER,
                "x-wc-webhook-id", DELIVERY_HEADER)
_PING = re.compile(rb"webhook_id=\d+")
GMT_FORMAT = "%Y-%m-%dT%H:%M:%S"


# --- webhooks ---------------------------------------------------------------------

def sign(secret: bytes, body: bytes) -> str:
    """The X-WC-Webhook-Signature value for ``body``."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def verify(secret: bytes, body: bytes, signature: str | None) -> None:
    """Raise ``SignatureError`` unless ``signature`` is WooCommerce's HMAC of ``body``."""
    if not secret:
        raise SignatureError("no WooCommerce webhook secret configured", reason="no_secret")
    if not signature:
        raise SignatureError("missing X-WC-Webhook-Signature", reason="missing_signature")
    if not hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode()):
        raise SignatureError("signature does not match the body", reason="bad_signature")


def is_ping(headers: Mapping[str, str], body: bytes) -> bool:
    """WooCommerce's unsigned ``webhook_id=N`` ping, sent when a webhook is saved."""
    return (SIGNATURE_HEADER not in headers and TOPIC_HEADER not in headers
            and _PING.fullmatch(body.strip()) is not None)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _order(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def order_id_of(order: Mapping[str, Any]) -> str | None:
    """The order id of an order document (an int; digit strings accepted)."""
    value = order.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.isdigit() else None


def _modified(order: Mapping[str, Any]) -> str:
    value = order.get("date_modified_gmt")
    return value if isinstance(value, str) else ""


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


class WooCommerceWebhook(WebhookSource):
    channel = CHANNEL

    def __init__(self, config: Mapping[str, str]) -> None:
        self.secret = config.get("webhook_secret", "").encode()
        self.shop_id = config.get("shop_id", "")

    def handshake(self, method: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        # The ping counts only an exact 200 as success (201/204 fail it).
        if method == "POST" and is_ping(_lower(headers), body):
            return Reply(200, b"ok")
        return None

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        verify(self.secret, body, _lower(headers).get(SIGNATURE_HEADER))

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        lower = _lower(headers)
        topic = lower.get(TOPIC_HEADER, "")
        delivery = lower.get(DELIVERY_HEADER) or content_id(body)
        order = _order(body) or {}
        order_id = order_id_of(order)
        return [RawRecord(
            key=order_id or delivery,
            source_topic=topic,
            body=body,
            shop_id=self.shop_id or _host(lower.get(SOURCE_HEADER, "")),
            # Delivery ids collide within a second: the order's state names the event.
            source_event_id=f"{delivery}:{topic}:{order_id or ''}:{_modified(order)}",
            headers={k: lower[k] for k in KEPT_HEADERS if k in lower},
            content_type=lower.get("content-type", "application/json"),
        )]


# --- REST API v3 orders ---------------------------------------------------------------

def gmt(moment: datetime) -> str:
    """``moment`` as a ``dates_are_gmt=true`` parameter: UTC, no offset, whole seconds."""
    return moment.astimezone(UTC).strftime(GMT_FORMAT)


def parse_gmt(value: object) -> datetime | None:
    """A ``*_gmt`` field as an aware UTC datetime (WooCommerce omits the ``Z``)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value[:19], GMT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: orders modified at or after ``since`` (whole
    seconds), offset ``page``, minus ``seen`` (ids already read at ``since``)."""

    since: datetime
    page: int = 1
    seen: frozenset[str] = frozenset()

    def encode(self) -> str:
        return f"{gmt(self.since)}|{self.page}|{','.join(sorted(self.seen))}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        since, page, seen = text.split("|")
        return cls(parse_gmt(since) or datetime.fromtimestamp(0, UTC), int(page),
                   frozenset(filter(None, seen.split(","))))


def first_cursor(window: Window) -> Cursor:
    return Cursor(window.start.astimezone(UTC).replace(microsecond=0))


def query(window: Window, cursor: Cursor, per_page: int) -> dict[str, str]:
    """The orders-list parameters for one page (bounds exclusive, UTC)."""
    end = window.end.astimezone(UTC)
    before = end.replace(microsecond=0)
    if before < end:  # a fractional end still covers its own second
        before += timedelta(seconds=1)
    return {"modified_after": gmt(cursor.since - timedelta(seconds=1)),
            "modified_before": gmt(before), "dates_are_gmt": "true", "orderby": "modified",
            "order": "asc", "per_page": str(per_page), "page": str(cursor.page)}


def _state(doc: Any) -> tuple[str | None, datetime | None]:
    if not isinstance(doc, dict):
        return None, None
    return order_id_of(doc), parse_gmt(doc.get("date_modified_gmt"))


def next_cursor(docs: list[Any], cursor: Cursor, more: bool) -> Cursor | None:
    """Keyset step: move ``since`` to the page's last second, or the offset when the
    whole page shares ``since`` (so every step makes progress)."""
    if not more or not docs:
        return None
    _id, last = _state(docs[-1])
    if last is not None and last > cursor.since:
        return Cursor(last, 1, frozenset(i for i, m in map(_state, docs) if i and m == last))
    at_since = frozenset(i for i, m in map(_state, docs) if i and m == cursor.since)
    return Cursor(cursor.since, cursor.page + 1, cursor.seen | at_since)


def unseen(docs: list[Any], cursor: Cursor) -> list[Any]:
    """The page's orders minus those already read at ``cursor.since``."""
    return [d for d in docs if not (_state(d)[1] == cursor.since
                                    and _state(d)[0] in cursor.seen)]


def poll_record(doc: Any, shop_id: str) -> RawRecord:
    raw = orjson.dumps(doc)
    order_id = order_id_of(doc) if isinstance(doc, dict) else None
    modified = _modified(doc) if isinstance(doc, dict) else ""
    key = order_id or content_id(raw)
    return RawRecord(key=key, source_topic=POLL_TOPIC, body=raw, shop_id=shop_id,
                     # A poll sees a state, not a delivery: the state's own id.
                     source_event_id=f"poll:{key}:{modified}")


class WooCommercePoll(PollSource):
    """Orders modified in a window, via GET /wp-json/wc/v3/orders (webhook catch-up)."""

    channel = CHANNEL
    max_window_s: ClassVar[float] = 86400.0  # no API limit; keyset pages keep deep windows cheap
    overlap_s: ClassVar[float] = 300.0
    page_size: ClassVar[int] = 100  # per_page maximum
    rate_per_s: ClassVar[float] = 2.0  # core has no limit; be gentle with shared hosting
    burst: ClassVar[int] = 4

    @property
    def shop_id(self) -> str:
        return self.config.get("shop_id") or _host(self.config.get("site_url", ""))

    def _url(self) -> str:
        base = self.config.get("base_url") or self.config.get("site_url", "")
        return f"{base.rstrip('/')}{ORDERS_PATH}"

    def _auth(self, params: dict[str, str]) -> dict[str, str]:
        """Request headers; the keys go into ``params`` instead when so configured."""
        key, secret = self.config.get("consumer_key", ""), self.config.get("consumer_secret", "")
        if self.config.get("query_string_auth", "") in ("1", "true", "yes"):
            params.update(consumer_key=key, consumer_secret=secret)
            return {}
        return {"Authorization": aiohttp.encode_basic_auth(key, secret)}

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        at = Cursor.decode(cursor) if cursor else first_cursor(window)
        params = query(window, at, self.page_size)
        headers = self._auth(params)
        try:
            async with session.get(self._url(), params=params, headers=headers) as resp:
                body = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PollError(f"WooCommerce request failed: {type(exc).__name__}") from exc
        _raise_for_status(status, resp_headers, body)
        pages = resp_headers.get("X-WP-TotalPages", "")
        try:
            docs = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PollError("WooCommerce orders answer is not JSON") from exc
        if not isinstance(docs, list):
            raise PollError("WooCommerce orders answer is not a JSON array")
        more = at.page < int(pages) if pages.isdigit() else len(docs) >= self.page_size
        following = next_cursor(docs, at, more)
        return Page([poll_record(d, self.shop_id) for d in unseen(docs, at)],
                    following.encode() if following else None)


def _raise_for_status(status: int, headers: Mapping[str, str], body: bytes) -> None:
    if status == 200:
        return
    if status in (429, 503):
        retry = headers.get("Retry-After", "")
        raise Throttled(f"WooCommerce host answered {status}",
                        float(retry) if retry.replace(".", "", 1).isdigit() else 5.0)
    if status == 401 or (status == 403 and _is_rest_error(body)):
        raise AuthFailed(f"WooCommerce refused the consumer key ({status})")
    raise PollError(f"WooCommerce answered {status}")


def _is_rest_error(body: bytes) -> bool:
    """A WordPress REST error object (a WAF's 403 is HTML: retried, not fatal)."""
    doc = _order(body)
    return doc is not None and isinstance(doc.get("code"), str)
