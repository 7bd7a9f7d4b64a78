"""USPS Tracking v3 parsing (no network): GMT times vs the local ``eventTimestamp``,
one record per event in the window, stable event ids, error mapping, and the
sandbox's rendering (fixture built from the USPS api-examples README sample plus
the PR #35 fields)."""

import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window
from orderpulse.connectors.channels import usps
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.usps import UspsPollSim
from tests.unit.helpers import fixture_bytes

DOC = orjson.loads(fixture_bytes("usps", "tracking_detail.json"))
NUMBER = "9400111899223197428490"
AUGUST = Window(datetime(2023, 8, 1, tzinfo=UTC), datetime(2023, 8, 31, tzinfo=UTC))


@pytest.mark.parametrize(("text", "minutes"), [
    ("-7:00", -420), ("-07:00", -420), ("+5:30", 330), ("-4:00", -240), ("0:00", None),
    ("", None), (None, None), ("-7", None),
])
def test_gmt_offset_without_leading_zero(text: str | None, minutes: int | None) -> None:
    offset = usps.parse_gmt_offset(text)
    assert (None if offset is None else offset.total_seconds() / 60) == minutes


def test_event_time_is_gmt_timestamp_not_the_local_one() -> None:
    delivered = DOC["trackingEvents"][0]
    assert usps.event_time(delivered) == datetime(2023, 8, 4, 18, 2, tzinfo=UTC)
    # eventTimestamp "13:02Z" is Cedar Rapids wall clock (UTC-5), not UTC.
    assert usps.event_time(delivered) != datetime(2023, 8, 4, 13, 2, tzinfo=UTC)


def test_without_gmt_timestamp_local_time_and_offset_give_utc() -> None:
    accepted = {k: v for k, v in DOC["trackingEvents"][1].items() if k != "GMTTimestamp"}
    assert usps.event_time(accepted) == datetime(2023, 8, 2, 11, 31, tzinfo=UTC)
    assert usps.event_time({"eventTimestamp": "2023-08-02T07:31:00Z"}) is None
    assert usps.event_time({"GMTTimestamp": "07:31 am"}) is None


def test_one_record_per_event_keyed_by_tracking_number() -> None:
    records = usps.event_records(DOC, AUGUST, "acme")
    assert [r.source_event_id for r in records] == [
        f"{NUMBER}:01:2023-08-04T18:02:00.000Z", f"{NUMBER}:03:2023-08-02T11:31:00.000Z"]
    assert {r.key for r in records} == {NUMBER}
    assert [r.source_topic for r in records] == ["01", "03"]
    for record, event in zip(records, DOC["trackingEvents"], strict=True):
        body = orjson.loads(record.body)
        assert body["trackingEvents"] == [event]
        assert {k: v for k, v in body.items() if k != "trackingEvents"} == \
            {k: v for k, v in DOC.items() if k != "trackingEvents"}
        assert record.shop_id == "acme"


def test_window_is_half_open_on_gmt_time() -> None:
    start = datetime(2023, 8, 4, 18, 2, tzinfo=UTC)
    assert [r.source_topic for r in usps.event_records(DOC, Window(start, start + timedelta(
        hours=1)))] == ["01"]
    assert usps.event_records(DOC, Window(start - timedelta(days=2), start)) == []


def test_event_id_does_not_depend_on_millisecond_spelling() -> None:
    doc = {**DOC, "trackingEvents": [{**DOC["trackingEvents"][0],
                                      "GMTTimestamp": "2023-08-04T18:02:00Z"}]}
    assert usps.event_records(doc, AUGUST)[0].source_event_id == \
        usps.event_records(DOC, AUGUST)[0].source_event_id


def test_undocumented_shapes_are_poll_errors() -> None:
    with pytest.raises(PollError):
        usps.event_records({"trackingNumber": NUMBER}, AUGUST)
    odd = {**DOC, "trackingEvents": ["?", {"eventCode": "01"}]}
    assert usps.event_records(odd, AUGUST) == []


def test_status_mapping() -> None:
    with pytest.raises(Throttled) as info:
        usps._check(429, {"Retry-After": "120"}, "tracking")
    assert info.value.retry_after_s == 120.0
    with pytest.raises(Throttled) as info:
        usps._check(429, {}, "tracking")
    assert info.value.retry_after_s == usps.DEFAULT_RETRY_AFTER_S
    for status in (401, 403):
        with pytest.raises(AuthFailed):
            usps._check(status, {}, "tracking")
    with pytest.raises(PollError):
        usps._check(503, {}, "tracking")
    usps._check(200, {}, "tracking")


def test_watch_list_from_config_is_sorted_and_clean() -> None:
    assert usps.split_numbers(" 9400b, ,9400a,") == ["9400b", "9400a"]
    assert usps.UspsPoll({}).page_size == 1


def _usps_orders(sim: UspsPollSim, count: int = 6) -> list[lifecycle.SimOrder]:
    """Shipped, then moved on, USPS parcels recorded in ``sim``, a fixed seed."""
    rng, at = random.Random(11), datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    orders: list[lifecycle.SimOrder] = []
    number = 0
    while len(orders) < count:
        number += 1
        order = lifecycle.new_order(number, at, rng)
        lifecycle.apply(order, "paid", at + timedelta(minutes=5), rng)
        lifecycle.apply(order, "shipped", at + timedelta(hours=2), rng)
        sim.record(order, "shipped", order.updated)
        if order.carrier == "USPS":
            orders.append(order)
            for hours, event in ((20, "in_transit"), (60, "delivered"))[:number % 3]:
                lifecycle.apply(order, event, at + timedelta(hours=hours), rng)
                sim.record(order, event, order.updated)
        at += timedelta(hours=9)
    return orders


def test_sandbox_documents_parse_and_switch_codes_midway() -> None:
    switch = datetime(2026, 3, 7, 0, 0, tzinfo=UTC)
    sim = UspsPollSim({"code_switch_at": switch.isoformat()})
    orders = _usps_orders(sim)
    assert sorted(sim.store.docs) == sorted(o.tracking_no for o in orders)
    everything = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    codes: dict[bool, set[str]] = {True: set(), False: set()}
    for _modified, doc in sim.store.docs.values():
        records = usps.event_records(doc, everything)
        assert len(records) == len(doc["trackingEvents"]) >= 2
        for event in doc["trackingEvents"]:
            at = usps.event_time(event)
            assert at is not None
            # Local eventTimestamp minus GMTOffset lands on the same instant.
            local_only = {k: v for k, v in event.items() if k != "GMTTimestamp"}
            assert usps.event_time(local_only) == at
            codes[at >= switch].add(event["eventCode"])
        times = [usps.event_time(e) for e in doc["trackingEvents"]]
        assert times == sorted(times, reverse=True)  # newest first
    assert "MA" in codes[False] and "MA" not in codes[True]
    assert "GX" in codes[True] and "GX" not in codes[False]


def test_sandbox_ignores_other_carriers() -> None:
    sim = UspsPollSim({})
    order = lifecycle.new_order(1, datetime(2026, 3, 1, tzinfo=UTC), random.Random(1))
    order.carrier, order.tracking_no = "SF", "SF123"
    sim.record(order, "shipped", datetime(2026, 3, 1, 1, tzinfo=UTC))
    assert sim.store.docs == {}
