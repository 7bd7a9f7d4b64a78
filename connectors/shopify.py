"""Shopify webhook source: verify, then wrap the untouched body as a ``RawEvent``.

Shopify signs every webhook with HMAC-SHA256 of the raw body keyed by the
app's client secret, base64 in ``X-Shopify-Hmac-Sha256``; the delivery id is
``X-Shopify-Webhook-Id`` (the same on retries), the event name
``X-Shopify-Topic``, the shop ``X-Shopify-Shop-Domain``. Shopify retries a
delivery that is not answered 2xx within 5 seconds, for up to 48 hours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

from orderpulse import names
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_SHOPIFY
HMAC_HEADER = "X-Shopify-Hmac-Sha256"
# Kept with the raw event (lower-cased); the signature itself is not kept.
KEPT_HEADERS = ("x-shopify-topic", "x-shopify-shop-domain", "x-shopify-webhook-id",
                "x-shopify-triggered-at", "x-shopify-event-id", "x-shopify-api-version")


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


def partition_key(body: bytes, webhook_id: str | None, request_id: str) -> bytes:
    """The channel order id, so all events of an order share a partition.

    A body without a readable id is still published (then dead-lettered by the
    normalizer, original bytes kept), keyed by its delivery id.
    """
    try:
        order_id = orjson.loads(body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        order_id = None
    if isinstance(order_id, (int, str)) and not isinstance(order_id, bool) and str(order_id):
        return str(order_id).encode()
    return (webhook_id or request_id).encode()


def raw_event(headers: Mapping[str, str], body: bytes, *, received_at: int,
              request_id: str) -> tuple[bytes, dict[str, Any]]:
    """(Kafka key, ``RawEvent`` dict) of one verified webhook delivery."""
    lower = {k.lower(): v for k, v in headers.items()}
    kept = {k: lower[k] for k in KEPT_HEADERS if k in lower}
    webhook_id = lower.get("x-shopify-webhook-id")
    event = {
        "channel": CHANNEL,
        "shop_id": lower.get("x-shopify-shop-domain", ""),
        "delivery_mode": "WEBHOOK",
        "source_topic": lower.get("x-shopify-topic", ""),
        "source_event_id": webhook_id,
        "request_id": request_id,
        "received_at": received_at,
        "headers": kept,
        "content_type": lower.get("content-type", "application/json"),
        "body": body,
    }
    return partition_key(body, webhook_id, request_id), event
