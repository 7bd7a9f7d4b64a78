"""What every channel source provides, whatever its delivery mode.

A channel module (``connectors/channels/<name>.py``) defines up to two sources:

- ``WebhookSource``: the channel pushes. The receiver (``connectors/webhook.py``)
  calls ``handshake`` (channel verification pings), ``verify`` (signature and
  replay window, constant time), then ``records`` (one body may carry several
  messages), publishes them, and answers ``ack`` only after Kafka acknowledged.
- ``PollSource``: we pull. The poller (``connectors/poller.py``) asks for time
  windows no longer than ``max_window``, overlapped by ``overlap`` so late
  updates are not missed, page by page through ``fetch``, within the
  channel's rate limit, and checkpoints the window end once every record of
  the window is acknowledged.

Both produce ``RawRecord``s: the channel's original bytes for one order event
plus the metadata the ``RawEvent`` envelope keeps.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import aiohttp
import orjson

from orderpulse.errors import OrderPulseError, SignatureError


@dataclass(frozen=True)
class RawRecord:
    """One order event as the channel sent it."""

    key: str  # the channel's order id (partition key); delivery id when unreadable
    source_topic: str  # the channel's own event name (orders/create, trade_TradePaid, ...)
    body: bytes  # the original bytes of this record
    shop_id: str = ""
    source_event_id: str | None = None  # the channel's delivery/event id, stable on retries
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def raw_event(channel: str, mode: str, record: RawRecord, *, received_at: int,
              request_id: str) -> dict[str, Any]:
    """The ``RawEvent`` envelope (schemas/avro/raw_event) of one record."""
    return {
        "channel": channel,
        "shop_id": record.shop_id,
        "delivery_mode": mode,
        "source_topic": record.source_topic,
        "source_event_id": record.source_event_id,
        "request_id": request_id,
        "received_at": received_at,
        "headers": dict(record.headers),
        "content_type": record.content_type,
        "body": record.body,
    }


def content_id(*parts: str | bytes) -> str:
    """A stable id from content (for channels without delivery ids): sha256, 32 hex."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


# --- webhooks ---------------------------------------------------------------------

class ReplayError(SignatureError):
    """A signed delivery outside the channel's replay window (answered 401)."""

    reason = "replayed"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer a source dictates (handshakes, channel-specific acks)."""

    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"


class WebhookSource(ABC):
    """A channel that pushes signed HTTP deliveries to ``/webhooks/<channel>``."""

    channel: ClassVar[str]
    #: The answer the channel expects for an accepted delivery.
    ack: ClassVar[Reply] = Reply()

    def handshake(self, method: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        """Answer a channel verification/ping request, or None for a normal delivery."""
        return None

    @abstractmethod
    def verify(self, headers: Mapping[str, str], body: bytes, now_ms: int) -> None:
        """Raise ``SignatureError``/``ReplayError`` unless the delivery is authentic."""

    @abstractmethod
    def records(self, headers: Mapping[str, str], body: bytes) -> list[RawRecord]:
        """The order records in one verified delivery (never raises on bad bodies:
        an unreadable body is still one record, keyed by its delivery id)."""


# --- polling ----------------------------------------------------------------------

class PollError(OrderPulseError):
    """A poll request failed; retried with backoff."""


class Throttled(PollError):
    """The channel said: too many requests. Wait ``retry_after_s`` before the next."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthFailed(PollError):
    """Credentials refused: fatal for this channel until configuration changes."""


@dataclass(frozen=True)
class Window:
    """A half-open interval of the channel's modification time, in UTC."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class Page:
    records: list[RawRecord]
    next_cursor: str | None  # None: the window is complete


async def post_form_json(session: aiohttp.ClientSession, url: str,
                         params: Mapping[str, str], *, gateway: str) -> Any:
    """POST form parameters to an open-platform gateway and decode its JSON answer;
    transport failures, non-200 answers and non-JSON bodies are ``PollError``s."""
    try:
        async with session.post(url, data=dict(params)) as resp:
            status, body = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PollError(f"{gateway} gateway unreachable: {type(exc).__name__}") from exc
    if status != 200:
        raise PollError(f"{gateway} gateway answered HTTP {status}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PollError(f"{gateway} answer is not JSON") from exc


class PollSource(ABC):
    """A channel whose orders we pull by modification-time windows."""

    channel: ClassVar[str]
    #: The longest window the API accepts (Taobao: 1 day, Pinduoduo: 30 minutes).
    max_window_s: ClassVar[float] = 3600.0
    #: Re-read this much before the checkpoint: late index updates on the channel side.
    overlap_s: ClassVar[float] = 300.0
    #: Do not query closer to now than this: the channel's index lags its writes.
    settle_s: ClassVar[float] = 5.0
    page_size: ClassVar[int] = 100
    #: Steady request rate and burst the channel allows this app.
    rate_per_s: ClassVar[float] = 2.0
    burst: ClassVar[int] = 2

    def __init__(self, config: Mapping[str, str]) -> None:
        self.config = config
        # An operator may tune these per account (a higher negotiated quota, smaller
        # pages); the class values are the channel's documented defaults.
        for name in ("page_size", "burst"):
            if name in config:
                setattr(self, name, int(config[name]))
        for name in ("rate_per_s", "settle_s", "overlap_s", "max_window_s"):
            if name in config:
                setattr(self, name, float(config[name]))

    @property
    def shop_id(self) -> str:
        return self.config.get("shop_id", "")

    @abstractmethod
    async def fetch(self, session: aiohttp.ClientSession, window: Window,
                    cursor: str | None) -> Page:
        """One page of orders modified in ``window``; ``cursor`` None = first page.

        Raise ``Throttled`` on the channel's rate-limit answer, ``AuthFailed``
        on refused credentials, ``PollError`` on anything else retryable.
        """
