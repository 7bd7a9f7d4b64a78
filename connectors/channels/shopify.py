"""Shopify: ``orders/*`` webhooks, and the REST Admin API orders list as a poll fallback.

Webhooks (shopify.dev, "Verify webhooks"): HMAC-SHA256 of the raw body keyed by
the app's client secret, base64 in ``X-Shopify-Hmac-Sha256``; delivery id
``X-Shopify-Webhook-Id`` (the same on retries); event ``X-Shopify-Topic``; shop
``X-Shopify-Shop-Domain``; ``X-Shopify-Triggered-At`` is when Shopify fired it.
Shopify retries a delivery that is not answered 2xx within 5 seconds, 8 times
over 4 hours.

Polling: ``GET /admin/api/<version>/orders.json?status=any&updated_at_min=..&
updated_at_max=..&limit=250``, cursor pages through the ``Link: <...page_info=..>;
rel="next"`` header (later pages carry only ``page_info`` and ``limit``), auth
``X-Shopify-Access-Token``; a leaky bucket of 40 requests draining 2/s, 429 with
``Retry-After`` when it overflows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import unquote

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
    Throttled,
    WebhookSource,
    Window,
)
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_SHOPIFY
HMAC_HEADER = "X-Shopify-Hmac-Sha256"
API_VERSION = "2025-10"
# Kept with the raw event (lower-cased); the signature itself is not kept.
KEPT_HEADERS = ("x-shopify-topic", "x-shopify-shop-domain", "x-shopify-webhook-id",
                "x-shopify-triggered-at", "x-shopify-event-id", "x-shopify-api-version")
_NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')
_PAGE_INFO = re.compile(r"[?&]page_info=([^&]+)")


def sign(secret: bytes, body: bytes) -> str:
    """The X-Shopify-Hmac-Sha256 value for ``body``."""
    return base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()


def verify(secret: bytes, body: bytes, signature: str | None) -> None:
    """Raise ``SignatureError`` unless ``signature`` is Shopify's HMAC of ``body``."""
    if not secret:
        raise SignatureError("no Shopify secret configured", reason="no_secret")
    if not signature:
        raise SignatureError(f"missing {HMAC_HEADER}", reason="missing_signature")
    if not hmac.compare_digest(sign(secret, body).encode(), signature.strip().encode()):
        raise SignatureError("signature does not match the body", reason="bad_signature")


def order_id_of(body: bytes) -> str | None:
    """The order id of a Shopify order body, if it has a readable one."""
    try:
        order_id = orjson.loads(body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if isinstance(order_id, (int, str)) and not isinstance(order_id, bool) and str(order_id):
        return str(order_id)
    return None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


class ShopifyWebhook(WebhookSource):
    channel = CHANNEL

    def __init__(self, config: Mapping[str, str]) -> None:
        self.secret = config.get("webhook_secret", "").encode()
        # Replays older than Shopify's own retry horizon (48 h) are refused.
        self.replay_window_ms = int(float(config.get("replay_window_s", 48 * 3600)) * 1000)

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        verify(self.secret, body, headers.get(HMAC_HEADER) or _lower(headers).get(
            HMAC_HEADER.lower()))
        triggered = _parse_time(_lower(headers).get("x-shopify-triggered-at", ""))
        if triggered is not None:
            age_ms = now_ms - int(triggered.timestamp() * 1000)
            if age_ms > self.replay_window_ms:
                raise ReplayError(f"delivery triggered {age_ms // 1000}s ago, outside the "
                                  f"replay window")

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        lower = _lower(headers)
        webhook_id = lower.get("x-shopify-webhook-id")
        return [RawRecord(
            key=order_id_of(body) or webhook_id or "unknown",
            source_topic=lower.get("x-shopify-topic", ""),
            body=body,
            shop_id=lower.get("x-shopify-shop-domain", ""),
            source_event_id=webhook_id,
            headers={k: lower[k] for k in KEPT_HEADERS if k in lower},
            content_type=lower.get("content-type", "application/json"),
        )]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


class ShopifyPoll(PollSource):
    """Orders updated in a window, via the REST Admin API (fallback to webhooks)."""

    channel = CHANNEL
    max_window_s: ClassVar[float] = 86400.0
    overlap_s: ClassVar[float] = 300.0
    page_size: ClassVar[int] = 250
    rate_per_s: ClassVar[float] = 2.0  # leak rate of the standard bucket
    burst: ClassVar[int] = 40

    @property
    def shop_id(self) -> str:
        return self.config.get("shop_domain", "")

    def _base(self) -> str:
        return self.config.get("base_url") or f"https://{self.shop_id}/admin/api/{API_VERSION}"

    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        params = ({"limit": str(self.page_size), "page_info": cursor} if cursor else {
            "status": "any", "limit": str(self.page_size),
            "updated_at_min": _iso(window.start), "updated_at_max": _iso(window.end)})
        headers = {"X-Shopify-Access-Token": self.config.get("access_token", "")}
        async with session.get(f"{self._base()}/orders.json", params=params,
                               headers=headers) as resp:
            body = await resp.read()
            if resp.status == 429:
                raise Throttled("Shopify 429", float(resp.headers.get("Retry-After", "2")))
            if resp.status in (401, 403):
                raise AuthFailed(f"Shopify answered {resp.status}")
            if resp.status != 200:
                raise PollError(f"Shopify answered {resp.status}")
            link = resp.headers.get("Link", "")
        return Page(self._records(body), _next_page_info(link))

    def _records(self, body: bytes) -> list[RawRecord]:
        try:
            orders = orjson.loads(body)["orders"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise PollError(f"Shopify orders page is not the documented shape: {exc}") from exc
        records = []
        for order in orders:
            raw = orjson.dumps(order)
            order_id = str(order.get("id", "")) or "unknown"
            records.append(RawRecord(
                key=order_id, source_topic="poll", body=raw, shop_id=self.shop_id,
                # A poll sees a state, not a delivery: the state's own id is id+updated_at.
                source_event_id=f"poll:{order_id}:{order.get('updated_at', '')}"))
        return records


def _next_page_info(link: str) -> str | None:
    found = _NEXT_LINK.search(link)
    if not found:
        return None
    info = _PAGE_INFO.search(found.group(1))
    return unquote(info.group(1)) if info else None
