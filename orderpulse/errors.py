"""The exception hierarchy of orderpulse, in one place.

    OrderPulseError
    ├── ConfigError          bad or missing configuration (fatal, crash loudly)
    ├── BrokerError          the Kafka broker cannot be started or reached
    ├── ClickHouseError      the ClickHouse engine or server refused a statement
    └── InputError           one input record is bad: becomes a dead letter, never a crash
        ├── DecodeError      bytes are not what the step expects (not JSON, wrong schema)
        ├── MappingError     decodable but not mappable (missing field, unknown status)
        └── SignatureError   a webhook's signature does not verify (rejected, never published)

``InputError`` carries a stable ``reason`` code; it is the ``reason`` of the
dead-letter record and the label of the dead-letter counter.
"""

from __future__ import annotations


class OrderPulseError(Exception):
    """Base class of every error raised by orderpulse."""


class ConfigError(OrderPulseError):
    """Configuration is missing or invalid."""


class BrokerError(OrderPulseError):
    """The Kafka broker cannot be started, reached or administered."""


class ClickHouseError(OrderPulseError):
    """ClickHouse refused or failed a statement."""


class InputError(OrderPulseError):
    """One input record is bad. ``reason`` is a short, stable, bounded code."""

    reason = "bad_input"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(InputError):
    reason = "decode_error"


class MappingError(InputError):
    reason = "mapping_error"


class SignatureError(InputError):
    reason = "bad_signature"
