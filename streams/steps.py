"""Pure step functions: Kafka message in, messages out. No I/O, no clock reads.

The Faust agents in ``orderpulse.streams.app`` only decode the Kafka event,
call these, and send what they return.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.errors import InputError
from orderpulse.streams.channels import NORMALIZERS, normalizer_for
from orderpulse.streams.channels.common import Context


@dataclass(frozen=True)
class Source:
    """Where a message came from: the dead-letter record's provenance."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class StepResult:
    """What one input produced: keyed outputs, or one dead letter."""

    outputs: list[tuple[bytes, bytes]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # the outputs, decoded
    dead_letter: bytes | None = None
    reason: str | None = None
    channel: str = "unknown"


#: Original bytes a dead letter keeps at most. Its producer refuses a record over
#: librdkafka's message.max.bytes (1,000,000; brokers default to 1,048,588), and a
#: letter that cannot be sent would stop the step that makes it. The embedded broker
#: takes any size, so a 5 MB record does arrive (tests/integration/test_poison.py).
MAX_ORIGINAL_BYTES = 960_000


def _kept(src: Source) -> tuple[bytes | None, bytes, str]:
    """Key and value a letter can carry, and a note when the value was cut: its length
    and SHA-256 (the whole record stays at its source offset for the topic's retention).
    A null value (a tombstone) is kept as empty bytes."""
    value = src.value or b""
    if len(value) + len(src.key or b"") <= MAX_ORIGINAL_BYTES:
        return src.key, value, ""
    key = None if src.key is None else src.key[:1024]
    kept = MAX_ORIGINAL_BYTES - len(key or b"")
    note = (f"original value cut to its first {kept} of {len(value)} bytes (sha256 "
            f"{hashlib.sha256(value).hexdigest()}); ")
    return key, value[:kept], note


def dead_letter(step: str, src: Source, exc: BaseException, *, reason: str,
                channel: str | None, failed_at: int) -> bytes:
    """Encode a ``DeadLetter`` carrying the original bytes (cut to fit) and the failure."""
    key, value, note = _kept(src)
    return codec("DeadLetter").encode({
        "step": step,
        "reason": reason,
        "error_class": type(exc).__name__,
        # Messages are built by our code from field names and bounded value
        # excerpts, never from buyer data, so they are safe to store.
        "message": (note + str(exc))[:500],
        "channel": channel,
        "source_topic": src.topic,
        "source_partition": src.partition,
        "source_offset": src.offset,
        "original_key": key,
        "original_value": value,
        "failed_at": failed_at,
    })


def normalize_message(src: Source, *, now_ms: int, pii_key: bytes = b"") -> StepResult:
    """``orders.raw.*`` message -> ``orders.normalized`` messages, or a dead letter.

    Never raises: an unexpected exception is a dead letter with reason
    ``internal_error`` so one poison message cannot stop the partition.
    """
    channel: str | None = None
    try:
        raw: dict[str, Any] = codec("RawEvent").decode(src.value or b"")
        # Only known channels become labels: metric label sets stay bounded.
        channel = raw["channel"] if raw["channel"] in NORMALIZERS else None
        events = normalizer_for(raw["channel"])(raw, Context(now_ms, pii_key))
        order_codec = codec("OrderEvent")
        outputs = [(e["order_id"].encode(), order_codec.encode(e)) for e in events]
        return StepResult(outputs=outputs, events=events, channel=raw["channel"])
    except InputError as exc:
        reason = exc.reason
        error: BaseException = exc
    except Exception as exc:  # noqa: BLE001 - see docstring: a bug must not stop the partition
        reason, error = "internal_error", exc
    letter = dead_letter(names.STEP_NORMALIZE, src, error, reason=reason, channel=channel,
                         failed_at=now_ms)
    return StepResult(dead_letter=letter, reason=reason, channel=channel or "unknown")
