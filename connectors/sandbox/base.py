"""What each channel's sandbox provides: the channel, played locally over its real protocol.

- ``WebhookChannelSim``: renders lifecycle events as the channel's signed HTTP
  deliveries (body + headers exactly as the channel sends them), its
  verification handshake, and forged copies (bad signature) for fault tests.
- ``PollChannelSim``: renders an order's current state as the channel's API
  returns it, and serves that API (``routes``) from the sandbox store:
  request signature checks, time-window filters, paging, and the channel's own
  throttling error when a client exceeds the channel's documented rate.

Both take the same channel configuration dict as the connector's source
(secrets, app keys), so the sandbox signs/checks with what the connector uses.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from aiohttp import web

from orderpulse.connectors.sandbox.lifecycle import SimOrder


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery a pushing channel makes to ``/webhooks/<channel>``."""

    channel: str
    body: bytes
    headers: dict[str, str]  # complete and signed, as the channel sends them
    delivery_id: str
    method: str = "POST"
    content_type: str = "application/json"


class WebhookChannelSim(ABC):
    channel: ClassVar[str]

    def __init__(self, config: Mapping[str, str]) -> None:
        self.config = config

    @abstractmethod
    def deliveries(self, order: SimOrder, event: str, now: datetime) -> list[Delivery]:
        """The deliveries this lifecycle event causes on this channel (may be none)."""

    def handshake(self) -> Delivery | None:
        """The channel's verification/ping request, if it has one."""
        return None

    @abstractmethod
    def forge(self, delivery: Delivery) -> Delivery:
        """The same delivery with a signature that does not verify."""

    def resign(self, delivery: Delivery, body: bytes) -> Delivery | None:
        """The delivery with another body, signed validly (a channel sending a broken
        body), or None where the sandbox does not model that for the channel."""
        return None


class TokenBucket:
    """The rate a channel allows one app; the sandbox enforces it like the channel."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate, self.capacity = rate_per_s, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class ChannelStore:
    """The channel's side of the world: each order's latest native document."""

    docs: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)

    def put(self, key: str, modified: datetime, doc: dict[str, Any]) -> None:
        self.docs[key] = (modified, doc)

    def window(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Documents modified in [start, end), oldest first (how channel APIs page)."""
        hits = [(m, k, d) for k, (m, d) in self.docs.items() if start <= m < end]
        return [d for _m, _k, d in sorted(hits, key=lambda h: (h[0], h[1]))]


class PollChannelSim(ABC):
    channel: ClassVar[str]
    #: The channel's documented rate for one app, enforced by the sandbox.
    rate_per_s: ClassVar[float] = 10.0
    burst: ClassVar[int] = 10

    def __init__(self, config: Mapping[str, str]) -> None:
        self.config = config
        self.store = ChannelStore()
        # The account's quota, when configured higher than the channel's default.
        self.bucket = TokenBucket(float(config.get("rate_per_s", self.rate_per_s)),
                                  int(config.get("burst", self.burst)))

    @abstractmethod
    def record(self, order: SimOrder, event: str, now: datetime) -> None:
        """Update ``self.store`` with the order's state after ``event`` (if this
        channel sees the order at all)."""

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """aiohttp routes serving the channel's API from ``self.store``."""
