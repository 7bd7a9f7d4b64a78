"""USPS normalizer: tracking events as the connector publishes them (the v3 answer
cut to one event; fixture from the USPS api-examples README sample plus the PR #35
fields), field by field; local-time trap; every event code; both code eras of the
sandbox; mutated samples (hypothesis)."""

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import RawRecord, Window, raw_event
from orderpulse.connectors.channels import usps as connector
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.usps import ERA_NEW, ERA_OLD, UspsPollSim
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import usps
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

DOC = orjson.loads(fixture_bytes("usps", "tracking_detail.json"))
NUMBER = "9400111899223197428490"
AUGUST = Window(datetime(2023, 8, 1, tzinfo=UTC), datetime(2023, 8, 31, tzinfo=UTC))
NOW = 1_794_409_700_000
CTX = Context(NOW, b"test-pii-key")


def _raw(record: RawRecord, **extra: Any) -> dict[str, Any]:
    return {**raw_event("usps", "POLL", record, received_at=1_794_409_600_000,
                        request_id="poll-1"), **extra}


def _event(**changes: Any) -> dict[str, Any]:
    """The fixture's delivered event with ``changes`` (None removes a field)."""
    event = {**DOC["trackingEvents"][0], **changes}
    return {k: v for k, v in event.items() if v is not None or k not in changes}


def _one(event: dict[str, Any], doc: dict[str, Any] | None = None) -> dict[str, Any]:
    body = orjson.dumps({**(doc or DOC), "trackingEvents": [event]})
    code = event.get("eventCode")
    [normalized] = usps.normalize(_raw(RawRecord(NUMBER, str(code), body)), CTX)
    return normalized


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    out = codec("OrderEvent")
    return out.decode(out.encode(event))


def test_documented_scans_field_by_field() -> None:
    records = connector.event_records(DOC, AUGUST, "acme-us")
    delivered, accepted = (usps.normalize(_raw(r), CTX)[0] for r in records)
    for event in (delivered, accepted):
        assert event["order_id"] == f"usps:{NUMBER}"
        assert event["channel_order_id"] == event["tracking_no"] == NUMBER
        assert (event["channel"], event["shop_id"], event["carrier"]) == \
            ("usps", "acme-us", "USPS")
        assert (event["event_type"], event["refund_status"]) == ("CARRIER_SCAN", "NONE")
        assert (event["currency"], event["total_minor"], event["paid_minor"],
                event["refunded_minor"], event["lines"]) == ("USD", 0, 0, 0, [])
        assert (event["buyer"], event["receiver"], event["refund"]) == (None, None, None)
        assert event["trace_id"] == "poll-1" and event["flags"] == []
        _roundtrip(event)
    assert (delivered["status"], delivered["raw_status"]) == \
        ("DELIVERED", "01:Delivered, In/At Mailbox")
    # GMTTimestamp 18:02Z; eventTimestamp "13:02Z" is Cedar Rapids wall clock (-5:00).
    assert (delivered["event_time"], delivered["source_tz"]) == \
        (_ms(2023, 8, 4, 18, 2), "-05:00")
    assert delivered["source_event_id"] == f"{NUMBER}:01:2023-08-04T18:02:00.000Z"
    assert (accepted["status"], accepted["raw_status"]) == \
        ("SHIPPED", "03:USPS in possession of item")
    assert (accepted["event_time"], accepted["source_tz"]) == \
        (_ms(2023, 8, 2, 11, 31), "-04:00")
    assert delivered["event_id"] != accepted["event_id"]


def test_local_event_timestamp_is_never_read_as_utc() -> None:
    event = _one(_event(GMTTimestamp=None))
    assert event["event_time"] == _ms(2023, 8, 4, 18, 2)  # 13:02 local + 5 h
    assert event["event_time"] != _ms(2023, 8, 4, 13, 2)


@pytest.mark.parametrize("gmt", ["2023-08-04T18:02:00Z", "2023-08-04T18:02:00.000Z",
                                 "2023-08-04T18:02:00", "2023-08-04T13:02:00-05:00"])
def test_gmt_timestamp_spellings_give_one_instant(gmt: str) -> None:
    assert _one(_event(GMTTimestamp=gmt))["event_time"] == _ms(2023, 8, 4, 18, 2)


def test_without_offset_the_zone_is_utc() -> None:
    event = _one(_event(GMTOffset=None))
    assert (event["event_time"], event["source_tz"]) == (_ms(2023, 8, 4, 18, 2), "UTC")


@pytest.mark.parametrize(("old", "new", "status"), [("MA", "GX", "PACKING"),
                                                    ("10", "PC", "IN_TRANSIT")])
def test_code_variants_map_alike(old: str, new: str, status: str) -> None:
    assert _one(_event(eventCode=old))["status"] == _one(_event(eventCode=new))["status"] == \
        status


def test_code_as_a_number_or_lower_case() -> None:
    assert _one(_event(eventCode=3))["status"] == "SHIPPED"
    assert _one(_event(eventCode=" pc "))["status"] == "IN_TRANSIT"


@pytest.mark.parametrize(("code", "status"), list(usps.EVENT_CODES.items()))
def test_every_event_code_maps(code: str, status: str) -> None:
    event = _one(_event(eventCode=code, eventType="whatever USPS says today"))
    assert (event["status"], event["raw_status"]) == (status, f"{code}:whatever USPS says today")


@pytest.mark.parametrize(("code", "wording"), [("02", "Notice Left (No Authorized Recipient)"),
                                               ("DX", "Delivery Status Not Updated"),
                                               ("09", "Return to Sender")])
def test_exceptions_stay_in_transit_with_their_raw_status(code: str, wording: str) -> None:
    event = _one(_event(eventCode=code, eventType=wording))
    assert (event["status"], event["raw_status"]) == ("IN_TRANSIT", f"{code}:{wording}")


def test_signer_name_is_masked() -> None:
    event = _one(_event(name="JOHN SMITH"))
    assert event["receiver"]["name_masked"] == "J*********"
    assert "SMITH" not in orjson.dumps(event).decode()


@pytest.mark.parametrize(("event", "doc", "error", "reason"), [
    (_event(eventCode="ZZ"), None, MappingError, "unmapped_status"),
    (_event(eventCode=["01"]), None, MappingError, "unmapped_status"),
    (_event(eventCode=None), None, MappingError, "missing_field"),
    (_event(GMTTimestamp=None, GMTOffset=None), None, MappingError, "bad_timestamp"),
    (_event(GMTTimestamp="1:02 pm"), None, MappingError, "bad_timestamp"),
    (_event(GMTTimestamp=None, eventTimestamp="13:02"), None, MappingError, "bad_timestamp"),
    (_event(GMTTimestamp="0001-01-01T00:00:00+05:00"), None, MappingError, "bad_timestamp"),
    (_event(GMTTimestamp=None, eventTimestamp="0001-01-01T00:00:00Z", GMTOffset="+5:00"), None,
     MappingError, "bad_timestamp"),
    (_event(GMTTimestamp=None, eventTimestamp="9999-12-31T23:59:59Z", GMTOffset="-5:00"), None,
     MappingError, "bad_timestamp"),
    (_event(), {**DOC, "trackingNumber": None}, MappingError, "missing_field"),
    (_event(), {**DOC, "trackingNumber": 9.4e21}, MappingError, "bad_id"),
])
def test_bad_scans_raise_reasoned_errors(event: dict[str, Any], doc: dict[str, Any] | None,
                                         error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        _one(event, doc)
    assert info.value.reason == reason


@pytest.mark.parametrize(("body", "error", "reason"), [
    (b"not json", DecodeError, "not_json"),
    (orjson.dumps({**DOC, "trackingEvents": []}), MappingError, "missing_field"),
    (orjson.dumps({**DOC, "trackingEvents": {"eventCode": "01"}}), MappingError, "bad_shape"),
    (orjson.dumps({**DOC, "trackingEvents": ["01"]}), MappingError, "bad_shape"),
])
def test_bad_bodies(body: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        usps.normalize(_raw(RawRecord(NUMBER, "01", body)), CTX)
    assert info.value.reason == reason


# Sandbox step -> the status its scan must normalize to.
_STEP_STATUS = {"label": "PACKING", "accepted": "SHIPPED", "processed": "IN_TRANSIT",
                "out_for_delivery": "IN_TRANSIT", "delivered": "DELIVERED"}


def test_sandbox_scans_of_both_code_eras_normalize() -> None:
    switch = datetime(2026, 3, 7, tzinfo=UTC)
    sim = UspsPollSim({"code_switch_at": switch.isoformat()})
    rng, at = random.Random(11), datetime(2026, 3, 1, 12, tzinfo=UTC)
    for number in range(1, 60):
        order = lifecycle.new_order(number, at, rng)
        for hours, event in ((0, "paid"), (2, "shipped"), (20, "in_transit"),
                             (60, "delivered")):
            lifecycle.apply(order, event, at + timedelta(hours=hours), rng)
            sim.record(order, event, order.updated)
        at += timedelta(hours=5)
    expected = {code: _STEP_STATUS[step] for era in (ERA_OLD, ERA_NEW)
                for step, (code, _w, _c) in era.items()}
    raw_codec, seen = codec("RawEvent"), set()
    everything = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    for _modified, doc in sim.store.docs.values():
        for record in connector.event_records(doc, everything, "acme-us"):
            raw = raw_codec.decode(raw_codec.encode(_raw(record)))  # as the pipeline sees it
            [event] = usps.normalize(raw, CTX)
            _roundtrip(event)
            code = record.source_topic
            assert event["status"] == expected[code]
            assert event["tracking_no"] == doc["trackingNumber"]
            at_ms = connector.event_time(orjson.loads(record.body)["trackingEvents"][0])
            assert at_ms is not None and event["event_time"] == int(at_ms.timestamp() * 1000)
            assert event["source_tz"] in {"-04:00", "-05:00", "-06:00", "-07:00", "-08:00"}
            seen.add(code)
    assert seen == set(expected)  # MA and GX, 10 and PC: both eras seen


# --- mutated real samples --------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.sampled_from(["", "01", "GX", "-5:00", "+14:00", "-23:59", "2023-08-04T18:02:00Z",
                       "0001-01-01T00:00:00", "9999-12-31T23:59:59", "0001-01-01 00:00:00",
                       "0001-01-01T00:00:00+05:00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_TOP = ["trackingNumber", "trackingEvents", "statusCategory", "status"]
_EVENT = list(DOC["trackingEvents"][0])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_TOP), _json, max_size=2),
       st.dictionaries(st.sampled_from(_EVENT), _json, max_size=5),
       st.sampled_from(DOC["trackingEvents"]))
def test_mutated_scans_normalize_or_raise_input_errors(
        top: dict[str, Any], fields: dict[str, Any], base: dict[str, Any]) -> None:
    doc = {**copy.deepcopy(DOC), "trackingEvents": [{**base, **fields}], **top}
    try:
        events = usps.normalize(_raw(RawRecord(NUMBER, "01", orjson.dumps(doc))), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("usps:")
