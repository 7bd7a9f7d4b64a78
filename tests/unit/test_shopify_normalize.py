from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.errors import DecodeError, MappingError
from orderpulse.streams.channels import shopify
from orderpulse.streams.channels.common import Context
from orderpulse.streams.steps import Source, normalize_message
from tests.unit.helpers import fixture_bytes, raw_bytes, raw_shopify

PAID = fixture_bytes("shopify", "orders_paid.json")
NOW = 1_794_409_700_000
CTX = Context(NOW, b"test-pii-key")
CTX5 = Context(NOW + 5000, b"test-pii-key")


def _doc(**changes: object) -> bytes:
    return orjson.dumps({**orjson.loads(PAID), **changes})


def test_documented_paid_order_field_by_field() -> None:
    [event] = shopify.normalize(raw_shopify(PAID), CTX)
    assert event["order_id"] == "shopify:5749625782341234567"
    assert event["channel_order_id"] == "5749625782341234567"  # 19 digits, exact
    assert event["event_type"] == "PAID"
    assert event["status"] == "PAID"
    assert event["refund_status"] == "NONE"
    assert event["raw_status"] == "financial=paid;fulfillment=None"
    # updated_at 10:05:30-05:00 -> 15:05:30Z
    assert event["event_time"] == int(datetime(2026, 11, 11, 15, 5, 30, tzinfo=UTC)
                                      .timestamp()) * 1000
    assert event["source_tz"] == "-05:00"
    assert event["currency"] == "USD"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (42300, 42300, 2000, 1000, 1500, 0)
    assert event["lines"] == [
        {"line_id": "866550311766439020", "sku": "IPOD2008PINK", "quantity": 1,
         "unit_price_minor": 19900, "components": [], "refund_status": None},
        {"line_id": "141249953214522974", "sku": "variant:457924702", "quantity": 1,
         "unit_price_minor": 21900, "components": [], "refund_status": None},
    ]
    assert event["trace_id"] == "req-1"
    assert event["processed_at"] == NOW


def test_no_pii_in_the_normalized_event() -> None:
    [event] = shopify.normalize(raw_shopify(PAID), CTX)
    text = orjson.dumps(event).decode()
    for secret in ("jon@example.com", "Snow", "4155550100", "Amoebobacterinstrasse"):
        assert secret not in text
    assert event["buyer"]["phone_masked"] == "141****0100"
    assert event["buyer"]["name_masked"] == "J*******"
    assert len(event["buyer"]["phone_hash"]) == 64
    assert event["receiver"]["address_masked"].startswith("123 Am")
    assert event["buyer_ref"] and event["flags"] == []


def test_future_event_time_is_flagged_not_accepted_silently() -> None:
    body = _doc(updated_at="2026-11-12T10:05:30-05:00")  # a day ahead of processing
    [event] = shopify.normalize(raw_shopify(body), CTX)
    assert event["flags"] == ["FUTURE_EVENT_TIME"]


def test_redelivery_gets_the_same_event_id() -> None:
    first = shopify.normalize(raw_shopify(PAID), CTX)[0]
    again = shopify.normalize(raw_shopify(PAID, source_event_id="other", request_id="r2"),
                              CTX5)[0]
    assert first["event_id"] == again["event_id"]
    later = shopify.normalize(raw_shopify(_doc(updated_at="2026-11-11T10:06:00-05:00")),
                              CTX)[0]
    assert later["event_id"] != first["event_id"]


@pytest.mark.parametrize(("changes", "status", "refund"), [
    ({"financial_status": "pending", "total_outstanding": "423.00"}, "PENDING_PAYMENT", "NONE"),
    ({"financial_status": "authorized"}, "PAID", "NONE"),
    ({"fulfillment_status": "fulfilled"}, "SHIPPED", "NONE"),
    ({"fulfillment_status": "fulfilled", "closed_at": "2026-11-12T10:00:00-05:00"},
     "COMPLETED", "NONE"),
    ({"cancelled_at": "2026-11-11T11:00:00-05:00", "financial_status": "voided"},
     "CANCELLED", "NONE"),
    ({"financial_status": "partially_refunded"}, "PAID", "PARTIAL"),
    ({"financial_status": "refunded", "fulfillment_status": "fulfilled"}, "SHIPPED", "FULL"),
])
def test_status_table(changes: dict[str, object], status: str, refund: str) -> None:
    [event] = shopify.normalize(raw_shopify(_doc(**changes)), CTX)
    assert (event["status"], event["refund_status"]) == (status, refund)


def test_pending_order_has_nothing_paid() -> None:
    body = _doc(financial_status="pending", total_outstanding="423.00")
    assert shopify.normalize(raw_shopify(body), CTX)[0]["paid_minor"] == 0


def test_refund_transactions_are_summed() -> None:
    refunds = [{"transactions": [
        {"kind": "refund", "status": "success", "amount": "19.90"},
        {"kind": "refund", "status": "failure", "amount": "5.00"},
    ]}]
    body = _doc(financial_status="partially_refunded", refunds=refunds)
    assert shopify.normalize(raw_shopify(body), CTX)[0]["refunded_minor"] == 1990


@pytest.mark.parametrize(("body", "error", "reason"), [
    (b"not json", DecodeError, "not_json"),
    (b"[1, 2]", DecodeError, "not_json"),
    (_doc(id=None), MappingError, "missing_field"),
    (_doc(financial_status="on_hold"), MappingError, "unmapped_status"),
    (_doc(fulfillment_status="lost_in_space"), MappingError, "unmapped_status"),
    (_doc(total_price="4.235"), MappingError, "bad_amount"),
    (_doc(updated_at="2026-11-11 10:05:30"), MappingError, "bad_timestamp"),
    (_doc(id=1.5), MappingError, "bad_id"),
])
def test_bad_input_raises_reasoned_errors(body: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        shopify.normalize(raw_shopify(body), CTX)
    assert info.value.reason == reason


def test_unknown_topic() -> None:
    with pytest.raises(MappingError) as info:
        shopify.normalize(raw_shopify(PAID, topic="products/create"), CTX)
    assert info.value.reason == "unknown_topic"


def _src(value: bytes) -> Source:
    return Source("orders.raw.shopify", 2, 41, b"5749625782341234567", value)


def test_step_emits_avro_keyed_by_unified_order_id() -> None:
    result = normalize_message(_src(raw_bytes(PAID)), now_ms=NOW)
    assert result.dead_letter is None
    [(key, value)] = result.outputs
    assert key == b"shopify:5749625782341234567"
    decoded = codec("OrderEvent").decode(value)
    assert decoded["total_minor"] == 42300
    assert decoded["event_time"] == datetime(2026, 11, 11, 15, 5, 30, tzinfo=UTC)


def test_step_dead_letters_with_original_bytes_and_provenance() -> None:
    original = raw_bytes(_doc(financial_status="on_hold"))
    result = normalize_message(_src(original), now_ms=NOW)
    assert result.outputs == [] and result.reason == "unmapped_status"
    letter = codec("DeadLetter").decode(result.dead_letter or b"")
    assert letter["step"] == "normalize"
    assert letter["reason"] == "unmapped_status"
    assert letter["original_value"] == original
    assert letter["original_key"] == b"5749625782341234567"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == \
        ("orders.raw.shopify", 2, 41)
    assert "on_hold" in letter["message"]


def test_step_dead_letters_non_avro_and_unknown_channel() -> None:
    assert normalize_message(_src(b"{}"), now_ms=NOW).reason == "not_avro"
    other = codec("RawEvent").encode(raw_shopify(PAID, channel="myspace"))
    result = normalize_message(_src(other), now_ms=NOW)
    assert result.reason == "unknown_channel" and result.channel == "unknown"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_step_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    result = normalize_message(_src(data), now_ms=NOW)
    assert result.dead_letter is not None
    assert codec("DeadLetter").decode(result.dead_letter)["original_value"] == data


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_FIELDS = ["id", "currency", "financial_status", "fulfillment_status", "total_price",
           "updated_at", "created_at", "line_items", "cancelled_at", "refunds",
           "total_shipping_price_set", "total_outstanding"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=8))
def test_step_never_raises_on_mutated_real_samples(mutation: dict[str, object]) -> None:
    body = orjson.dumps({**orjson.loads(PAID), **mutation})
    result = normalize_message(_src(raw_bytes(body)), now_ms=NOW)
    if result.dead_letter is None:
        for _key, value in result.outputs:
            assert codec("OrderEvent").decode(value)["order_id"].startswith("shopify:")
    else:
        assert result.reason != "internal_error", codec("DeadLetter").decode(
            result.dead_letter)["message"]
