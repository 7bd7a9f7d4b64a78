"""USPS Tracking API v3 scans to ``OrderEvent`` (a shipment event, ``CARRIER_SCAN``).

The connector (``connectors/channels/usps.py``) publishes one record per tracking
event: the ``expand=DETAIL`` answer with ``trackingEvents`` cut to that one event;
``source_topic`` is its ``eventCode``. Facts this relies on (USPS/api-examples
README and PR #35, USPS Pub 97 code list via OSS; /work/research notes):

- ``eventCode`` (2 characters) decides the status, never ``eventType``, whose wording
  drifts (``03`` was "Accepted at USPS Origin Facility", now "USPS in possession of
  item"). Codes changed too: label created ``MA`` became ``GX``, processed ``10``
  became ``PC``; both spellings are in ``EVENT_CODES`` with the same status.
  Electronic pre-shipment events (label created, manifest: no physical scan) are
  PACKING; acceptance / pickup is SHIPPED; every movement scan is IN_TRANSIT;
  delivered or picked up by the addressee is DELIVERED. Exceptions (notice left,
  refused, return to sender, "delivery status not updated" ``DX``...) keep
  IN_TRANSIT: the code and wording stay in ``raw_status`` (``"02:Notice Left"``).
  An unknown code is ``unmapped_status``;
- time: ``GMTTimestamp`` is true UTC (with or without milliseconds; one without an
  offset is GMT by name). ``eventTimestamp`` is the scan location's wall clock
  despite its ``Z``: used only without ``GMTTimestamp``, minus ``GMTOffset``.
  ``GMTOffset`` (``-5:00``, no leading zero) is the scan's zone: ``source_tz`` is
  it as ``-05:00`` (``UTC`` when absent);
- ids: ``trackingNumber`` (22 digits, a string): ``order_id`` =
  ``usps:<trackingNumber>``, ``tracking_no`` the same, ``carrier`` ``USPS``;
- money: a scan has none: ``currency`` USD and every amount 0;
- PII: ``name`` (who signed at delivery) is masked into ``receiver``; scan places
  (facility city/ZIP) are not personal and not kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from orderpulse import names
from orderpulse.connectors.channels.usps import parse_gmt_offset
from orderpulse.errors import MappingError
from orderpulse.streams.channels.common import (
    Context,
    build,
    id_string,
    items,
    loads_object,
    lookup,
    obj,
    require,
)
from orderpulse.streams.pii import party
from orderpulse.streams.timeparse import is_not_set, offset_label

CHANNEL = names.CHANNEL_USPS
CARRIER = "USPS"
CURRENCY = "USD"  # a scan carries no money; the amounts are 0

_IN_TRANSIT_EXCEPTIONS = (
    "02", "52", "53", "54", "55", "56", "30", "51",  # notice left / delivery attempted
    "06", "08", "15", "71",  # forwarded, missent, mis-shipped, rescheduled
    "04", "05", "09", "11", "44",  # refused, undeliverable, return to sender, dead letter, recall
    "21", "22", "23", "24", "25", "26", "27", "28", "29", "31",  # return-to-sender reasons
    "DX",  # "Delivery Status Not Updated": stale, not a delivery exception
)

# eventCode -> lifecycle status of the shipment. The sandbox sends MA/GX, 03, 10/PC,
# OF and 01; the other codes are from USPS Pub 97 (through the OSS Perl module
# USPS::WebTools::Tracking::Codes) and eHub's event table, as the research notes list
# them, not from a USPS v3 enum (USPS publishes none). 07 is Pub 97's "Arrival at
# Unit" (eHub calls it out for delivery): IN_TRANSIT either way.
EVENT_CODES: dict[str, str] = {
    # Electronic: a label or manifest exists, USPS does not have the item yet.
    **dict.fromkeys(("MA", "GX", "89", "TM"), "PACKING"),
    # Accepted or picked up (PA: acceptance inferred from a later scan).
    **dict.fromkeys(("03", "PA", "83", "OA", "UA", "AD"), "SHIPPED"),
    # Moving: processed (10, later PC), departed, arrived, out for delivery, at pickup.
    **dict.fromkeys(("10", "PC", "EF", "SF", "07", "19", "41", "42", "80", "81", "82",
                     "OF", "14", "16"), "IN_TRANSIT"),
    **dict.fromkeys(_IN_TRANSIT_EXCEPTIONS, "IN_TRANSIT"),
    # Delivered, or picked up by the addressee / an agent.
    **dict.fromkeys(("01", "17", "43"), "DELIVERED"),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Readers turn timestamp-millis into datetimes: a time outside years 1-9999 UTC
# would make the event unreadable.
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MS
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MS


def _parse(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise MappingError(f"{field}: expected an ISO 8601 timestamp", reason="bad_timestamp")
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise MappingError(f"{field}: expected ISO 8601, got {value[:40]!r}",
                           reason="bad_timestamp") from exc


def event_time(event: dict[str, Any]) -> tuple[int, str]:
    """(UTC ms, the scan's offset label) of one tracking event."""
    at, source_tz = _utc_ms(event)
    if not _MIN_MS <= at <= _MAX_MS:
        raise MappingError("scan time outside years 1-9999 UTC", reason="bad_timestamp")
    return at, source_tz


def _utc_ms(event: dict[str, Any]) -> tuple[int, str]:
    offset = parse_gmt_offset(event.get("GMTOffset"))
    source_tz = offset_label(offset) if offset is not None else "UTC"
    if not is_not_set(event.get("GMTTimestamp")):
        gmt = _parse(event["GMTTimestamp"], "GMTTimestamp")
        gmt = gmt.replace(tzinfo=UTC) if gmt.tzinfo is None else gmt
        return (gmt - _EPOCH) // _MS, source_tz
    if offset is None:
        raise MappingError("event has neither GMTTimestamp nor a usable GMTOffset",
                           reason="bad_timestamp")
    # The Z of eventTimestamp is not true: it is the scan location's wall clock.
    local = _parse(require(event, "eventTimestamp"), "eventTimestamp").replace(tzinfo=None)
    try:
        utc = (local - offset).replace(tzinfo=UTC)
    except OverflowError as exc:
        raise MappingError("eventTimestamp out of range", reason="bad_timestamp") from exc
    return (utc - _EPOCH) // _MS, source_tz


def _code(event: dict[str, Any]) -> str:
    code = require(event, "eventCode")
    if isinstance(code, int) and not isinstance(code, bool):
        return f"{code:02d}"  # a JSON number 3 is the code "03"
    if not isinstance(code, str):
        raise MappingError("eventCode: expected a code", reason="unmapped_status")
    return code.strip().upper()


def _receiver(ctx: Context, event: dict[str, Any]) -> dict[str, Any] | None:
    name = event.get("name")
    return party(ctx.pii_key, name=name) if isinstance(name, str) and name.strip() else None


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One USPS tracking event (the API answer cut to it) -> one ``OrderEvent`` dict."""
    doc = loads_object(raw["body"])
    number = id_string(require(doc, "trackingNumber"), "trackingNumber")
    events = items(require(doc, "trackingEvents"), "trackingEvents")
    if not events:
        raise MappingError("trackingEvents is empty", reason="missing_field")
    # One event per record; were there more, the API lists them newest first.
    event = obj(events[0], "trackingEvents[]")
    code = _code(event)
    status = lookup(EVENT_CODES, code, field="USPS eventCode")
    wording = event.get("eventType")
    raw_status = f"{code}:{wording}" if isinstance(wording, str) and wording else code
    at, source_tz = event_time(event)
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=number, event_type="CARRIER_SCAN",
        status=status, raw_status=raw_status, event_time=at, source_tz=source_tz,
        currency=CURRENCY, total_minor=0, carrier=CARRIER, tracking_no=number,
        receiver=_receiver(ctx, event), discriminator=code,
    )]
