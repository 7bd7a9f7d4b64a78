"""What every channel normalizer shares: the context it runs in, the event id, and
the builder that fills an ``OrderEvent`` (v2) with its defaults and flags."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from orderpulse.errors import DecodeError, MappingError
from orderpulse.streams.money import to_minor

#: Events further in the future than this are flagged (a server in the wrong zone).
DEFAULT_MAX_FUTURE_SKEW_MS = 5 * 60 * 1000
FLAG_FUTURE = "FUTURE_EVENT_TIME"
# Event times outside this range are bad input (and years beyond 9999 would not
# even decode as Avro timestamps downstream).
_MIN_TIME_MS = 946_684_800_000  # 2000-01-01
_MAX_TIME_MS = 4_102_444_800_000  # 2100-01-01


@dataclass(frozen=True)
class Context:
    """Per call: when the event is processed, and the key for PII hashes."""

    processed_at: int
    pii_key: bytes = b""
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS


def event_id(order_id: str, event_type: str, event_time_ms: int, discriminator: str = "") -> str:
    """Deterministic: a redelivery of the same channel event gets the same id.

    ``discriminator`` separates distinct events that share order, type and time
    (two carrier scans in one second, two after-sales of one order); it must be
    as stable across redeliveries as the rest (a scan code, an after-sale id),
    never a delivery id that changes on retry.
    """
    key = f"{order_id}|{event_type}|{event_time_ms}"
    if discriminator:
        key += f"|{discriminator}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def loads_object(body: bytes, what: str = "a JSON object") -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"expected {what}, got {len(body)} bytes that are not JSON: "
                          f"{exc.msg}", reason="not_json") from exc
    if not isinstance(doc, dict):
        raise DecodeError(f"expected {what}, got {type(doc).__name__}", reason="not_json")
    return doc


def require(doc: dict[str, Any], field: str) -> Any:
    value = doc.get(field)
    if value is None or value == "":
        raise MappingError(f"missing required field {field!r}", reason="missing_field")
    return value


def obj(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MappingError(f"{field}: expected an object, got {type(value).__name__}",
                           reason="bad_shape")
    return value


def items(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MappingError(f"{field}: expected a list, got {type(value).__name__}",
                           reason="bad_shape")
    return value


def id_string(value: Any, field: str) -> str:
    """A channel id as a string; integers stay exact (never through a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip():
        raise MappingError(f"{field}: expected an id, got {type(value).__name__}",
                           reason="bad_id")
    return str(value).strip()


# --- shared by the China-time, yuan-string channels (Taobao, JD) --------------------
_YUAN = re.compile(r"\d{1,13}(?:\.\d{1,6})?")
_MAX_INT = 2**31 - 1


def digits_id(value: Any, field: str) -> str:
    text = id_string(value, field)
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise MappingError(f"{field}: expected a numeric id", reason="bad_id")
    return text


def text(value: Any, field: str) -> str | None:
    """An optional scalar text field (an integer is its digits); blank is None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise MappingError(f"{field}: expected text, got {type(value).__name__}",
                           reason="bad_shape")
    return value.strip() or None


def yuan(value: Any, field: str) -> int:
    """A CNY yuan amount (string, or integer yuan) in fen; absent is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, str):
        ok = _YUAN.fullmatch(value.strip()) is not None
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**13
    if not ok:
        raise MappingError(f"{field}: expected a yuan amount like '12.30', got "
                           f"{str(value)[:20]!r}", reason="bad_amount")
    return to_minor(value, "CNY", field=field)


def quantity(value: Any, field: str) -> int:
    if isinstance(value, str) and value.isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise MappingError(f"{field}: expected a non-negative integer", reason="bad_shape")
    return value



def lookup(table: dict[Any, Any], value: Any, *, field: str) -> Any:
    """A status table lookup; a value no table knows is ``unmapped_status``, never guessed."""
    try:
        return table[value]
    except (KeyError, TypeError):
        raise MappingError(f"unmapped {field} {str(value)[:40]!r}",
                           reason="unmapped_status") from None


def build(raw: dict[str, Any], ctx: Context, *, channel: str, channel_order_id: str,
          event_type: str, status: str, raw_status: str, event_time: int, source_tz: str,
          currency: str, total_minor: int, order_id: str | None = None,
          discriminator: str = "", **fields: Any) -> dict[str, Any]:
    """An OrderEvent dict: identity, defaults for every optional field, flags."""
    if not _MIN_TIME_MS <= event_time <= _MAX_TIME_MS:
        raise MappingError(f"event time {event_time} ms is outside 2000..2100",
                           reason="bad_timestamp")
    unified = order_id or f"{channel}:{channel_order_id}"
    flags = list(fields.pop("flags", []))
    if event_time > ctx.processed_at + ctx.max_future_skew_ms:
        flags.append(FLAG_FUTURE)
    return {
        # The state it reports is part of the identity: an exact retry repeats it,
        # while two different updates within one second (whole-second channel
        # clocks) stay two events.
        "event_id": event_id(unified, event_type, event_time,
                             f"{status}/{fields.get('refund_status', 'NONE')}/{discriminator}"),
        "order_id": unified,
        "channel": channel,
        "shop_id": raw.get("shop_id", ""),
        "channel_order_id": channel_order_id,
        "event_type": event_type,
        "status": status,
        "refund_status": "NONE",
        "raw_status": raw_status,
        "event_time": event_time,
        "source_tz": source_tz,
        "received_at": raw["received_at"],
        "processed_at": ctx.processed_at,
        "currency": currency.upper(),
        "total_minor": total_minor,
        "paid_minor": 0, "discount_minor": 0, "shipping_minor": 0, "tax_minor": 0,
        "refunded_minor": 0,
        "lines": [],
        "buyer_ref": None, "buyer": None, "receiver": None, "warehouse": None,
        "carrier": None, "tracking_no": None, "refund": None,
        "trace_id": raw["request_id"],
        "source_event_id": raw.get("source_event_id"),
        **fields,
        "flags": flags,
    }


def line(line_id: str, sku: str, quantity: int, unit_price_minor: int,
         components: list[tuple[str, int]] | None = None,
         refund_status: str | None = None) -> dict[str, Any]:
    """An OrderLine dict."""
    return {"line_id": line_id, "sku": sku, "quantity": quantity,
            "unit_price_minor": unit_price_minor,
            "components": [{"sku": s, "quantity": q} for s, q in components or []],
            "refund_status": refund_status}
