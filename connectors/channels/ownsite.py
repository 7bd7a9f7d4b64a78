"""The merchant's own web shop: order events pushed to ``/webhooks/ownsite``, signed by us.

There is no third-party spec: this docstring is the contract the shop implements
(modelled on Stripe's webhook signing).

Request: ``POST /webhooks/ownsite``, ``Content-Type: application/json``, headers

- ``X-Orderpulse-Event-Id``: the delivery id, unique per event and the same on
  every retry of it (the shop retries until it gets a 2xx);
- ``X-Orderpulse-Signature: t=<unix seconds>,v1=<hex>`` where
  ``<hex> = HMAC-SHA256(webhook_secret, f"{t}.{raw body}")`` in lower-case hex.
  Several ``v1=`` entries may be sent while a secret is rotated; one matching is
  enough. ``t`` is signed, so a delivery older (or newer) than ``replay_window_s``
  (default 300 s) is refused as a replay; a retry is signed afresh with a new ``t``.

Body (UTF-8 JSON)::

    {"event": "order.created" | "order.paid" | "order.shipped" | "order.delivered"
              | "order.completed" | "order.cancelled" | "order.refunded",
     "occurred_at": "2026-11-11T23:00:00+08:00",
     "order": {"id": "8100000000000000042",          # string, may exceed 2**53
               "number": "OP-000042",
               "status": "pending" | "paid" | "shipped" | "delivered" | "completed"
                         | "cancelled" | "refunded" | "partially_refunded",
               "currency": "CNY",
               "total": "123.45", "subtotal": ..., "shipping_fee": ..., "discount": ...,
                                                    # decimal strings, yuan (not fen)
               "created_at" / "updated_at" / "paid_at" / "shipped_at" / "delivered_at"
               / "completed_at" / "cancelled_at": ISO 8601 with offset, or null,
               "lines": [{"line_no": 1, "sku": "TEE-BLK-M", "quantity": 2,
                          "unit_price": "59.00", "amount": "118.00",
                          "components": [{"sku": ..., "quantity": ...}]}],   # bundles
               "buyer": {"name", "phone", "province", "address"},  # PII: never logged
               "shipment": {"carrier", "tracking_no"} | null,
               "refund": {"kind", "state", "amount", "line_no"} | null}}

Answer: ``200 {"received":true}`` once the event is durable; 401 on a bad
signature or replay; 503 (Retry-After) when we cannot persist it yet.

Config keys: ``webhook_secret`` (required), ``replay_window_s`` (default 300),
``shop_id`` (optional label of the shop, kept with each record).

Records: one per delivery, ``key`` = ``order.id`` (read as a string, never via a
float), ``source_topic`` = ``event``, ``source_event_id`` = the event id header;
the body is kept byte for byte. An unreadable body is still one record, keyed by
the event id (or a content hash when that is missing too).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from orderpulse import names
from orderpulse.connectors.base import RawRecord, ReplayError, Reply, WebhookSource, content_id
from orderpulse.errors import SignatureError

CHANNEL = names.CHANNEL_OWNSITE
SIGNATURE_HEADER = "X-Orderpulse-Signature"
EVENT_ID_HEADER = "X-Orderpulse-Event-Id"
DEFAULT_REPLAY_WINDOW_S = 300
EVENTS = ("order.created", "order.paid", "order.shipped", "order.delivered", "order.completed",
          "order.cancelled", "order.refunded")
# Kept with the raw event (lower-cased); the signature itself is not kept.
KEPT_HEADERS = ("x-orderpulse-event-id",)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``v1`` value: hex HMAC-SHA256 of ``f"{t}.{body}"``."""
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """The complete ``X-Orderpulse-Signature`` value for ``body`` signed at ``timestamp``."""
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def parse_signature(value: str) -> tuple[int, list[str]]:
    """``(t, [v1, ...])`` from the header; raise ``SignatureError`` when malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in value.split(","):
        name, _, item = part.strip().partition("=")
        if name == "t" and item.isdigit():
            timestamp = int(item)
        elif name == "v1" and item:
            signatures.append(item)
    if timestamp is None or not signatures:
        raise SignatureError(f"{SIGNATURE_HEADER} lacks t= or v1=", reason="malformed_signature")
    return timestamp, signatures


def verify(secret: bytes, body: bytes, header: str | None, now_s: float,
           window_s: float = DEFAULT_REPLAY_WINDOW_S) -> None:
    """Raise ``SignatureError`` unless one ``v1`` signs ``body`` at ``t``, then
    ``ReplayError`` when ``t`` is further than ``window_s`` from ``now_s``."""
    if not secret:
        raise SignatureError("no ownsite webhook secret configured", reason="no_secret")
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER}", reason="missing_signature")
    timestamp, signatures = parse_signature(header)
    expected = sign(secret, timestamp, body).encode()
    # Check every candidate: no early exit, so timing does not tell which one matched.
    matches = [hmac.compare_digest(expected, s.strip().lower().encode()) for s in signatures]
    if not any(matches):
        raise SignatureError("signature does not match the body", reason="bad_signature")
    # Only a signed t is trusted, so the window is checked after the signature.
    if abs(now_s - timestamp) > window_s:
        raise ReplayError(f"delivery signed {int(now_s - timestamp)}s from now, outside the "
                          f"{int(window_s)}s replay window")


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _parse(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def order_id_of(doc: Mapping[str, Any]) -> str | None:
    """``order.id`` as a string, if the body has a usable one (never a bool or a float)."""
    order = doc.get("order")
    order_id = order.get("id") if isinstance(order, dict) else None
    if isinstance(order_id, (int, str)) and not isinstance(order_id, bool) and str(order_id):
        return str(order_id)
    return None


class OwnsiteWebhook(WebhookSource):
    channel = CHANNEL
    ack: ClassVar[Reply] = Reply(200, b'{"received":true}', "application/json")

    def __init__(self, config: Mapping[str, str]) -> None:
        self.secret = config.get("webhook_secret", "").encode()
        self.replay_window_s = float(config.get("replay_window_s", DEFAULT_REPLAY_WINDOW_S))
        self.shop_id = config.get("shop_id", "")

    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        header = _lower(headers).get(SIGNATURE_HEADER.lower())
        verify(self.secret, body, header, now_ms / 1000, self.replay_window_s)

    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        lower = _lower(headers)
        event_id = lower.get(EVENT_ID_HEADER.lower()) or None
        doc = _parse(body)
        event = doc.get("event")
        return [RawRecord(
            key=order_id_of(doc) or event_id or content_id(body),
            source_topic=event if isinstance(event, str) else "",
            body=body,
            shop_id=self.shop_id,
            source_event_id=event_id,
            headers={k: lower[k] for k in KEPT_HEADERS if k in lower},
            content_type=lower.get("content-type", "application/json"),
        )]
