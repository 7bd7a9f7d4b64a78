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
