"""Builders shared by unit tests (pure data, no I/O beyond reading fixtures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orderpulse.avro import codec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_bytes(*parts: str) -> bytes:
    return FIXTURES.joinpath(*parts).read_bytes()


def raw_shopify(body: bytes, topic: str = "orders/paid", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "shopify", "shop_id": "demo.myshopify.com", "delivery_mode": "WEBHOOK",
        "source_topic": topic, "source_event_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "request_id": "req-1", "received_at": 1_794_409_600_000,
        "headers": {"x-shopify-topic": topic}, "content_type": "application/json",
        "body": body, **extra,
    }


def raw_bytes(body: bytes, topic: str = "orders/paid", **extra: Any) -> bytes:
    return codec("RawEvent").encode(raw_shopify(body, topic, **extra))


def created_event(n: int, *, event_id: str, at_ms: int) -> dict[str, Any]:
    """A minimal valid ``OrderEvent``: Shopify order ``n`` created at ``at_ms``."""
    return {
        "event_id": event_id, "order_id": f"shopify:{n}", "channel": "shopify",
        "shop_id": "s", "channel_order_id": str(n), "event_type": "CREATED",
        "status": "PENDING_PAYMENT", "refund_status": "NONE", "raw_status": "financial=pending",
        "event_time": at_ms, "source_tz": "-05:00", "received_at": at_ms, "processed_at": at_ms,
        "currency": "USD", "total_minor": 100 + n, "paid_minor": 0, "discount_minor": 0,
        "shipping_minor": 0, "tax_minor": 0, "refunded_minor": 0, "lines": [],
        "buyer_ref": None, "trace_id": f"t{n}", "source_event_id": None,
    }
