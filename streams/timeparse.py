"""Channel timestamps to UTC milliseconds, keeping the zone the channel stated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orderpulse.errors import MappingError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def offset_label(offset: timedelta | None) -> str:
    """``-05:00`` style label of a UTC offset."""
    if offset is None:
        return "UTC"
    total = int(offset.total_seconds())
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def parse_iso_with_offset(value: object, *, field: str) -> tuple[int, str]:
    """ISO 8601 with an explicit offset (Shopify) -> (UTC epoch ms, source offset label).

    A naive timestamp is refused: guessing its zone is how a server in the
    wrong zone delays a day of orders.
    """
    if not isinstance(value, str) or not value:
        raise MappingError(f"{field}: expected an ISO 8601 timestamp, got {value!r}"[:120],
                           reason="bad_timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MappingError(f"{field}: expected ISO 8601, got {value[:40]!r}",
                           reason="bad_timestamp") from exc
    if parsed.tzinfo is None:
        raise MappingError(f"{field}: timestamp {value[:40]!r} has no UTC offset",
                           reason="bad_timestamp")
    # Integer arithmetic: float seconds would lose the millisecond.
    return (parsed - _EPOCH) // _MS, offset_label(parsed.utcoffset())


CHINA_TZ_LABEL = "Asia/Shanghai"
_CHINA = timedelta(hours=8)
# Channels' "not set" dates (JD uses 0001-01-01 00:00:00).
_NOT_SET = frozenset({"", "0000-00-00 00:00:00", "0001-01-01 00:00:00", "1970-01-01 08:00:00"})


def is_not_set(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in _NOT_SET)


def parse_china_naive(value: object, *, field: str) -> tuple[int, str]:
    """``yyyy-MM-dd HH:mm:ss`` in China time (Taobao, JD, Pinduoduo, Youzan) -> UTC ms.

    China has no daylight saving, so the fixed +08:00 offset is exact.
    """
    if not isinstance(value, str) or is_not_set(value):
        raise MappingError(f"{field}: expected 'yyyy-MM-dd HH:mm:ss', got {str(value)[:30]!r}",
                           reason="bad_timestamp")
    try:
        parsed = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S")
        return (parsed.replace(tzinfo=UTC) - _CHINA - _EPOCH) // _MS, CHINA_TZ_LABEL
    except (ValueError, OverflowError) as exc:  # year 1 minus 8 hours overflows
        raise MappingError(f"{field}: expected 'yyyy-MM-dd HH:mm:ss', got {value[:30]!r}",
                           reason="bad_timestamp") from exc


def parse_epoch(value: object, *, field: str, unit: str = "s") -> tuple[int, str]:
    """Unix seconds or milliseconds (int or digit string) -> (UTC ms, 'UTC')."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise MappingError(f"{field}: expected unix {unit}, got {str(value)[:30]!r}",
                           reason="bad_timestamp")
    number = int(value)
    return (number * 1000 if unit == "s" else number), "UTC"
