"""WooCommerce normalizer: the documented order field by field, the channel's traps,
every status table entry, the sandbox's traffic, and mutated samples."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import raw_event
from orderpulse.connectors.channels import woocommerce as connector
from orderpulse.connectors.sandbox import woocommerce as sim
from orderpulse.connectors.sandbox.lifecycle import EVENTS, Simulator
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import woocommerce
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

BODY = fixture_bytes("woocommerce", "order_4711.json")
ORDER = orjson.loads(BODY)
NOW = 1_794_409_700_000  # 2026-11-11 15:08:20 UTC
RECEIVED = 1_794_387_610_000
CTX = Context(NOW, b"test-pii-key")
# date_modified_gmt 2026-11-11T09:00:09 (UTC, no offset); date_modified is site-local.
MODIFIED_MS = int(datetime(2026, 11, 11, 9, 0, 9, tzinfo=UTC).timestamp()) * 1000


def _raw(body: bytes, topic: str = "order.updated", mode: str = "WEBHOOK",
         **extra: Any) -> dict[str, Any]:
    return {
        "channel": "woocommerce", "shop_id": "shop.example", "delivery_mode": mode,
        "source_topic": topic,
        "source_event_id": "3b1f0a9e:order.updated:4711:2026-11-11T09:00:09",
        "request_id": "req-1", "received_at": RECEIVED, "headers": {},
        "content_type": "application/json", "body": body, **extra,
    }


def _doc(**changes: Any) -> bytes:
    return orjson.dumps({**copy.deepcopy(ORDER), **changes})


def _item(index: int, **changes: Any) -> bytes:
    doc = copy.deepcopy(ORDER)
    doc["line_items"][index].update(changes)
    return orjson.dumps(doc)


def _one(raw: dict[str, Any]) -> dict[str, Any]:
    [event] = woocommerce.normalize(raw, CTX)
    return event


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    order_codec = codec("OrderEvent")
    return order_codec.decode(order_codec.encode(event))


# --- the documented order -----------------------------------------------------------------

def test_documented_order_field_by_field() -> None:
    event = _one(_raw(BODY))
    assert event["order_id"] == "woocommerce:4711"
    assert (event["channel"], event["shop_id"], event["channel_order_id"]) == \
        ("woocommerce", "shop.example", "4711")
    assert (event["event_type"], event["status"], event["raw_status"]) == \
        ("UPDATED", "PAID", "processing")
    # A partial refund keeps the status and adds refunds[] (a negative total).
    assert event["refund_status"] == "PARTIAL"
    assert (event["event_time"], event["source_tz"]) == (MODIFIED_MS, "UTC")
    assert (event["received_at"], event["processed_at"]) == (RECEIVED, NOW)
    assert event["currency"] == "EUR"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (7200, 7200, 500, 420, 1154, 1000)
    assert event["lines"] == [
        # subtotal 42.02 for 2: 21.01 before the coupon (price 18.91 is after it).
        {"line_id": "301", "sku": "TEA-01-250G", "quantity": 2, "unit_price_minor": 2101,
         "components": [], "refund_status": None},
        {"line_id": "302", "sku": "CUP-01", "quantity": 1, "unit_price_minor": 1849,
         "components": [], "refund_status": None},
    ]
    assert event["refund"] == {"kind": "UNKNOWN", "status": "REFUNDED", "amount_minor": 1000,
                               "refund_id": "4720", "lines": []}
    assert (event["carrier"], event["tracking_no"], event["warehouse"]) == (None, None, None)
    assert event["trace_id"] == "req-1"
    assert event["source_event_id"] == "3b1f0a9e:order.updated:4711:2026-11-11T09:00:09"
    assert event["flags"] == []
    decoded = _roundtrip(event)
    assert decoded["event_time"] == datetime(2026, 11, 11, 9, 0, 9, tzinfo=UTC)
    assert decoded["refund"]["amount_minor"] == 1000


def test_no_clear_pii_in_the_normalized_event() -> None:
    event = _one(_raw(BODY))
    text = orjson.dumps(event).decode()
    for secret in ("anna@example.com", "Anna", "Muster", "Hauptstr. 1", "301234567",
                   "10115"):
        assert secret not in text
    buyer, receiver = event["buyer"], event["receiver"]
    assert buyer["name_masked"] == "A**********"
    assert buyer["phone_masked"] == "493****4567"
    assert len(buyer["phone_hash"]) == 64
    assert buyer["address_masked"] == "Haupts*****"
    assert (buyer["city"], buyer["province"], buyer["ciphertext"]) == ("Berlin", None, None)
    assert receiver["name_masked"] == "A**********"
    assert receiver["phone_masked"] is None  # shipping.phone ""
    assert len(event["buyer_ref"]) == 32


def test_polled_order_is_a_state_snapshot() -> None:
    record = connector.poll_record(orjson.loads(BODY), "shop.example")
    raw = raw_event("woocommerce", "POLL", record, received_at=RECEIVED, request_id="poll-1")
    polled, pushed = _one(raw), _one(_raw(BODY))
    assert (polled["event_type"], polled["source_event_id"]) == \
        ("STATE", "poll:4711:2026-11-11T09:00:09")
    same = ("order_id", "status", "refund_status", "event_time", "total_minor", "lines",
            "buyer", "receiver", "buyer_ref", "refund")
    assert {k: polled[k] for k in same} == {k: pushed[k] for k in same}


def test_redelivery_gets_the_same_event_id() -> None:
    first = _one(_raw(BODY))
    again = woocommerce.normalize(_raw(BODY, source_event_id="x", request_id="r2"),
                                  Context(NOW + 5000, b"test-pii-key"))[0]
    assert first["event_id"] == again["event_id"]
    later = _one(_raw(_doc(date_modified_gmt="2026-11-11T09:05:00")))
    assert later["event_id"] != first["event_id"]


# --- traps --------------------------------------------------------------------------------

def test_body_numbers_are_decimals_never_floats() -> None:
    doc = woocommerce.loads_exact(BODY)
    price = doc["line_items"][0]["price"]
    assert isinstance(price, Decimal) and price == Decimal("18.91")
    with pytest.raises(DecodeError) as info:
        woocommerce.loads_exact(BODY.replace(b'"price":18.91', b'"price":NaN'))
    assert info.value.reason == "not_json"


@pytest.mark.parametrize(("price", "minor"), [
    ("18.91", 1891), ("33.333333333333336", 3333), ("0.125", 12), ("0.135", 14), ("7", 700),
])
def test_float_like_line_price_is_rounded_half_even_when_no_subtotal(price: str,
                                                                      minor: int) -> None:
    doc = copy.deepcopy(ORDER)
    del doc["line_items"][0]["subtotal"]
    body = orjson.dumps(doc).replace(b'"price":18.91', f'"price":{price}'.encode())
    assert _one(_raw(body))["lines"][0]["unit_price_minor"] == minor


def test_json_number_totals_are_read_exactly() -> None:
    # 72.1 is not a double; read as a Decimal it is exactly 72.10.
    assert _one(_raw(_doc(total=72.1)))["total_minor"] == 7210


def test_subtotal_not_divisible_by_quantity_rounds_half_even() -> None:
    event = _one(_raw(_item(0, subtotal="10.00", quantity=3)))
    assert event["lines"][0]["unit_price_minor"] == 333


def test_zero_decimal_currency() -> None:
    event = _one(_raw(_doc(currency="JPY", total="7200", discount_total="500",
                           shipping_total="420", total_tax="0",
                           refunds=[{"id": 1, "total": "-1000"}],
                           line_items=[{**ORDER["line_items"][1], "subtotal": "1849"}])))
    assert (event["currency"], event["total_minor"], event["refunded_minor"]) == \
        ("JPY", 7200, 1000)
    assert event["lines"][0]["unit_price_minor"] == 1849


def test_site_local_dates_are_ignored_for_the_gmt_ones() -> None:
    # The site moved zones: date_modified says 23:00, the GMT value is what counts.
    event = _one(_raw(_doc(date_modified="2026-11-11T23:00:09")))
    assert (event["event_time"], event["source_tz"]) == (MODIFIED_MS, "UTC")
    fallback = _one(_raw(_doc(date_modified_gmt=None)))
    assert fallback["event_time"] == MODIFIED_MS - 9000  # date_created_gmt


@pytest.mark.parametrize("unset", [None, ""])
def test_not_set_paid_date_means_nothing_paid(unset: object) -> None:
    event = _one(_raw(_doc(status="pending", date_paid=unset, date_paid_gmt=unset,
                           refunds=[]), "order.created"))
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("CREATED", "PENDING_PAYMENT", "NONE")
    assert (event["paid_minor"], event["refunded_minor"], event["refund"]) == (0, 0, None)


def test_several_refunds_sum_their_negative_totals() -> None:
    refunds = [{"id": 4731, "reason": "late", "total": "-2.50"},
               {"id": 4720, "reason": "damaged cup", "total": "-10.00"}]
    event = _one(_raw(_doc(refunds=refunds)))
    assert event["refunded_minor"] == 1250
    assert event["refund"]["amount_minor"] == 1250
    assert event["refund"]["refund_id"] == "4731"  # the newest (highest post id)


def test_full_refund() -> None:
    refunds = [{"id": 4720, "reason": "", "total": "-72.00"}]
    event = _one(_raw(_doc(status="refunded", refunds=refunds)))
    assert (event["status"], event["refund_status"], event["refunded_minor"]) == \
        ("PAID", "FULL", 7200)
    completed = _one(_raw(_doc(status="refunded", refunds=refunds,
                               date_completed_gmt="2026-11-11T10:00:00")))
    assert (completed["status"], completed["refund_status"]) == ("COMPLETED", "FULL")


def test_sku_fallbacks_to_variation_then_product() -> None:
    doc = copy.deepcopy(ORDER)
    doc["line_items"][0]["sku"] = ""
    doc["line_items"][1]["sku"] = None
    lines = _one(_raw(orjson.dumps(doc)))["lines"]
    assert [line["sku"] for line in lines] == ["variation:57", "product:60"]


def test_buyer_ref_is_per_shop_customer_or_guest_email() -> None:
    here = _one(_raw(BODY))["buyer_ref"]
    other_shop = _one(_raw(BODY, shop_id="other.example"))["buyer_ref"]
    assert here != other_shop  # customer ids are per WordPress site
    guest = _one(_raw(_doc(customer_id=0)))["buyer_ref"]
    billing = {**ORDER["billing"], "email": " Anna@Example.com "}
    assert _one(_raw(_doc(customer_id=0, billing=billing)))["buyer_ref"] == guest
    assert _one(_raw(_doc(customer_id=0, billing={})))["buyer_ref"] is None


def test_shipment_tracking_meta_gives_carrier_and_number() -> None:
    meta = [{"id": 1, "key": "_wc_shipment_tracking_items",
             "value": [{"tracking_provider": "DHL", "tracking_number": "JJD000390007"}]},
            {"id": 2, "key": "other_plugin", "value": {"any": ["shape"]}}]
    event = _one(_raw(_doc(status="completed", meta_data=meta)))
    assert (event["status"], event["carrier"], event["tracking_no"]) == \
        ("COMPLETED", "DHL", "JJD000390007")


def test_deleted_order_is_a_status_only_cancellation() -> None:
    event = _one(_raw(b'{"id":4711}', "order.deleted"))
    assert (event["order_id"], event["event_type"], event["status"], event["raw_status"]) == \
        ("woocommerce:4711", "CANCELLED", "CANCELLED", "deleted")
    assert (event["currency"], event["total_minor"], event["lines"]) == ("XXX", 0, [])
    assert (event["event_time"], event["source_tz"]) == (RECEIVED, "UTC")
    assert event["flags"] == ["STATUS_ONLY", "RECEIVED_TIME"]
    assert _roundtrip(event)["order_id"] == "woocommerce:4711"


def test_raw_events_read_back_from_avro_normalize() -> None:
    raw_codec = codec("RawEvent")
    for raw in (_raw(BODY), _raw(b'{"id":4711}', "order.deleted")):
        decoded = raw_codec.decode(raw_codec.encode(raw))  # received_at is a datetime
        event = _roundtrip(_one(decoded))
        assert event["received_at"] == datetime.fromtimestamp(RECEIVED / 1000, UTC)
    assert event["event_time"] == event["received_at"]  # the deletion's only time


def test_restored_order_is_an_update() -> None:
    assert _one(_raw(BODY, "order.restored"))["event_type"] == "UPDATED"


# --- status tables ------------------------------------------------------------------------

@pytest.mark.parametrize(("word", "expected"), sorted(woocommerce.STATUSES.items()))
def test_every_status_maps(word: str, expected: tuple[str, str]) -> None:
    event = _one(_raw(_doc(status=word, refunds=[])))
    assert (event["status"], event["refund_status"]) == expected
    assert event["raw_status"] == word
    _roundtrip(event)


@pytest.mark.parametrize(("topic", "event_type"), sorted(woocommerce.EVENT_TYPES.items()))
def test_every_topic_maps(topic: str, event_type: str) -> None:
    assert _one(_raw(BODY, topic))["event_type"] == event_type


@pytest.mark.parametrize(("raw", "error", "reason"), [
    (_raw(_doc(status="shipped")), MappingError, "unmapped_status"),  # a plugin status
    (_raw(_doc(status={"a": 1})), MappingError, "unmapped_status"),
    (_raw(_doc(status=None)), MappingError, "missing_field"),
    (_raw(BODY, "product.created"), MappingError, "unknown_topic"),
    (_raw(b"not json"), DecodeError, "not_json"),
    (_raw(b"[1, 2]"), DecodeError, "not_json"),
    (_raw(b"\xff\xfe{"), DecodeError, "not_json"),
    (_raw(b"[" * 100_000), DecodeError, "not_json"),
    (_raw(_doc(id="47x1")), MappingError, "bad_id"),
    (_raw(_doc(id=None)), MappingError, "missing_field"),
    (_raw(b'{"status":"processing"}', "order.deleted"), MappingError, "missing_field"),
    (_raw(_doc(total="72.001")), MappingError, "bad_amount"),
    (_raw(_doc(total="1E+999999")), MappingError, "bad_amount"),
    (_raw(_doc(currency="EURO")), MappingError, "bad_currency"),
    (_raw(_doc(date_modified_gmt="yesterday")), MappingError, "bad_timestamp"),
    (_raw(_doc(date_modified_gmt=None, date_created_gmt=None)), MappingError,
     "missing_field"),
    (_raw(_item(0, quantity=-1)), MappingError, "bad_line"),
    (_raw(_item(0, quantity=2.0)), MappingError, "bad_line"),
    (_raw(_doc(line_items={"id": 1})), MappingError, "bad_shape"),
    (_raw(_doc(refunds=[{"id": "r1", "total": "-1.00"}])), MappingError, "bad_id"),
])
def test_bad_input_raises_reasoned_errors(raw: dict[str, Any], error: type,
                                          reason: str) -> None:
    with pytest.raises(error) as info:
        woocommerce.normalize(raw, CTX)
    assert info.value.reason == reason


def test_error_messages_carry_no_pii() -> None:
    billing = {**ORDER["billing"], "first_name": ["Anna"]}
    with pytest.raises(MappingError) as info:
        woocommerce.normalize(_raw(_doc(billing=billing)), CTX)
    assert info.value.reason == "bad_shape" and "Anna" not in str(info.value)


# --- the sandbox's traffic ------------------------------------------------------------------

T0 = datetime(2026, 11, 11, 12, tzinfo=UTC)
SIM_CONFIG = {"webhook_secret": "sandbox-secret", "webhook_id": "12",
              "site_url": sim.SITE, "consumer_key": "ck", "consumer_secret": "cs"}


def _sandbox() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(lifecycle event, mode, raw event) for the sandbox's webhooks and poll answers,
    built the way the connector's records() and fetch() build them."""
    clock = iter(T0 + timedelta(seconds=i) for i in range(10**6))
    webhook = sim.WooCommerceWebhookSim(SIM_CONFIG)
    source = connector.WooCommerceWebhook(SIM_CONFIG)
    poll = connector.WooCommercePoll(SIM_CONFIG)
    for order, event in islice(Simulator(seed=5, clock=lambda: next(clock)), 2500):
        received = int(order.updated.timestamp() * 1000) + 500
        for delivery in webhook.deliveries(order, event, order.updated):
            for record in source.records(delivery.headers, delivery.body):
                yield event, "push", raw_event("woocommerce", "WEBHOOK", record,
                                               received_at=received, request_id="r")
        # The poll answer as fetch() reads it: orjson over HTTP (prices become floats).
        doc = orjson.loads(orjson.dumps(sim.render(order)))
        yield event, "poll", raw_event("woocommerce", "POLL",
                                       connector.poll_record(doc, poll.shop_id),
                                       received_at=received, request_id="r")


# Sandbox lifecycle event -> the lifecycle statuses a poll of that state may show.
SANDBOX_STATES: dict[str, set[str]] = {
    "created": {"PENDING_PAYMENT"}, "paid": {"PAID"}, "shipped": {"COMPLETED"},
    "in_transit": {"COMPLETED"}, "delivered": {"COMPLETED"}, "completed": {"COMPLETED"},
    "cancelled": {"CANCELLED", "PAID"},  # paid orders are refunded when cancelled
    "refund_requested": {"COMPLETED"}, "return_requested": {"COMPLETED"},
    "return_received": {"COMPLETED"}, "refunded": {"COMPLETED", "PAID"},
}


def test_sandbox_webhooks_and_polls_normalize_for_every_lifecycle_event() -> None:
    seen: dict[str, set[str]] = {"push": set(), "poll": set()}
    for lifecycle_event, mode, raw in _sandbox():
        event = _roundtrip(_one(raw))
        seen[mode].add(lifecycle_event)
        assert event["order_id"].startswith("woocommerce:")
        assert event["status"] in SANDBOX_STATES[lifecycle_event], lifecycle_event
        assert event["lines"] and event["total_minor"] > 0 and event["source_tz"] == "UTC"
        assert event["event_type"] == ("STATE" if mode == "poll" else
                                       "CREATED" if lifecycle_event == "created" else "UPDATED")
        if lifecycle_event == "refunded":
            assert event["refund_status"] in ("PARTIAL", "FULL")
            assert event["refunded_minor"] > 0 and event["refund"]["status"] == "REFUNDED"
        if lifecycle_event == "shipped":
            assert event["tracking_no"]
    assert seen["poll"] == set(EVENTS)
    assert seen["push"] == {e for e, t in sim.TOPICS.items() if t}


# --- mutated real samples -------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["", "0", "-10.00", "2026-11-11T09:00:09", "2026-11-11T09:00:09Z",
                       "0000-00-00 00:00:00", "1E+999999", "processing", "refunded", "EUR"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_PATHS: list[tuple[Any, ...]] = [
    *[(k,) for k in ("id", "status", "currency", "total", "discount_total", "shipping_total",
                     "total_tax", "date_modified_gmt", "date_created_gmt", "date_paid_gmt",
                     "date_completed_gmt", "customer_id", "billing", "shipping", "line_items",
                     "refunds", "meta_data")],
    *[("line_items", 0, k) for k in ("id", "quantity", "price", "subtotal", "sku",
                                     "variation_id", "product_id")],
    ("line_items", 1), ("refunds", 0), ("refunds", 0, "total"), ("refunds", 0, "id"),
    *[("billing", k) for k in ("first_name", "phone", "email", "address_1", "city")],
    ("shipping", "phone"), ("meta_data", 0), ("meta_data", 0, "value"),
]
_TRACKED = [{"id": 1, "key": "_wc_shipment_tracking_items",
             "value": [{"tracking_provider": "DHL", "tracking_number": "JJD1"}]}]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    if isinstance(doc, dict) != isinstance(path[-1], str):
        raise TypeError("the path no longer fits the document")
    doc[path[-1]] = value


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _json), min_size=1, max_size=4),
       st.sampled_from(sorted(woocommerce.EVENT_TYPES)), st.sampled_from(["WEBHOOK", "POLL"]))
def test_mutated_orders_normalize_or_raise_input_errors(
        mutation: list[tuple[tuple[Any, ...], Any]], topic: str, mode: str) -> None:
    doc = {**copy.deepcopy(ORDER), "meta_data": copy.deepcopy(_TRACKED)}
    for path, value in mutation:
        # An earlier mutation may have replaced the container: keep that one.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(doc, path, value)
    try:
        events = woocommerce.normalize(_raw(orjson.dumps(doc), topic, mode), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("woocommerce:")
