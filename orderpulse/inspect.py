"""``orderpulse normalize``: one native payload through the exact code the streams
agent runs (RawEvent envelope, Avro, the channel's normalizer, Avro again), so
an SRE sees what the pipeline would emit for it, or why it was dead-lettered."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors.base import RawRecord, content_id, raw_event
from orderpulse.streams.steps import Source, normalize_message

#: The event name a payload is assumed to carry when none is given.
DEFAULT_TOPICS: dict[str, str] = {
    names.CHANNEL_SHOPIFY: "orders/updated",
    names.CHANNEL_WOOCOMMERCE: "order.updated",
    names.CHANNEL_POS: "pos/sale",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(type(value).__name__)


def normalize_payload(channel: str, data: bytes, *, topic: str | None, shop: str,
                      pii_key: bytes) -> tuple[int, str]:
    """(exit code, text): 0 and the events as JSON, or 2 and the dead-letter reason."""
    record = RawRecord(key="inspect", source_topic=topic or DEFAULT_TOPICS.get(channel, ""),
                       body=data, shop_id=shop, source_event_id=content_id(data))
    now = time.time_ns() // 1_000_000
    envelope = codec("RawEvent").encode(
        raw_event(channel, "BATCH", record, received_at=now, request_id="inspect"))
    result = normalize_message(Source("inspect", 0, 0, None, envelope), now_ms=now,
                               pii_key=pii_key)
    if result.dead_letter is not None:
        letter = codec("DeadLetter").decode(result.dead_letter)
        return 2, json.dumps({"dead_letter": {k: letter[k] for k in (
            "step", "reason", "error_class", "message")}}, ensure_ascii=False)
    events = [codec("OrderEvent").decode(value) for _key, value in result.outputs]
    return 0, json.dumps(events, default=_jsonable, ensure_ascii=False, indent=2)
