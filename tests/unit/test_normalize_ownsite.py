"""Own-site normalizer: the documented event body (fixture written from the scheme in
``connectors/channels/ownsite.py``) field by field, its traps, every status table
entry, the sandbox's deliveries, and mutated samples (hypothesis)."""

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import raw_event
from orderpulse.connectors.channels.ownsite import OwnsiteWebhook
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.ownsite import EVENT_NAMES, OwnsiteWebhookSim
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import ownsite
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

PAID = fixture_bytes("ownsite", "order_paid.json")
NOW = 1_794_409_700_000  # 2026-11-11T15:08:20Z
CTX = Context(NOW, b"test-pii-key")
CONFIG = {"webhook_secret": "whsec_test", "shop_id": "acme-cn"}


def _raw(body: bytes, topic: str = "order.paid", **extra: Any) -> dict[str, Any]:
    return {
        "channel": "ownsite", "shop_id": "acme-cn", "delivery_mode": "WEBHOOK",
        "source_topic": topic, "source_event_id": "evt_1", "request_id": "req-1",
        "received_at": 1_794_409_600_000, "headers": {"x-orderpulse-event-id": "evt_1"},
        "content_type": "application/json", "body": body, **extra,
    }


def _doc(**order: Any) -> dict[str, Any]:
    doc = orjson.loads(PAID)
    doc["order"].update(order)
    return doc


def _one(doc: dict[str, Any], topic: str = "order.paid") -> dict[str, Any]:
    [event] = ownsite.normalize(_raw(orjson.dumps(doc), topic), CTX)
    return event


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    out = codec("OrderEvent")
    return out.decode(out.encode(event))


def test_documented_paid_event_field_by_field() -> None:
    [event] = ownsite.normalize(_raw(PAID), CTX)
    assert event["order_id"] == "ownsite:8100000000000000042"
    assert event["channel_order_id"] == "8100000000000000042"  # 19 digits, exact
    assert (event["channel"], event["shop_id"]) == ("ownsite", "acme-cn")
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("PAID", "PAID", "NONE")
    assert event["raw_status"] == "paid"
    # occurred_at 23:00:05+08:00 -> 15:00:05Z
    assert event["event_time"] == _ms(2026, 11, 11, 15, 0, 5)
    assert event["source_tz"] == "+08:00"
    assert event["currency"] == "CNY"
    # yuan decimal strings -> fen: 325.90 total, 8.00 shipping, 10.00 discount
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (32590, 32590, 1000, 800, 0, 0)
    assert event["lines"] == [
        {"line_id": "1", "sku": "HOODIE-GRY-M", "quantity": 1, "unit_price_minor": 19900,
         "components": [], "refund_status": None},
        {"line_id": "2", "sku": "MUG-LOGO", "quantity": 1, "unit_price_minor": 2990,
         "components": [], "refund_status": None},
        {"line_id": "3", "sku": "GIFT-SET-1", "quantity": 1, "unit_price_minor": 9900,
         "components": [{"sku": "MUG-LOGO", "quantity": 1}, {"sku": "SOCKS-3PK", "quantity": 2}],
         "refund_status": None},
    ]
    assert (event["carrier"], event["tracking_no"], event["refund"]) == (None, None, None)
    assert (event["trace_id"], event["source_event_id"]) == ("req-1", "evt_1")
    assert (event["received_at"], event["processed_at"], event["flags"]) == \
        (1_794_409_600_000, NOW, [])
    assert event["buyer_ref"] is None  # the shop has no buyer account id
    decoded = _roundtrip(event)
    assert decoded["event_time"] == datetime(2026, 11, 11, 15, 0, 5, tzinfo=UTC)
    assert decoded["total_minor"] == 32590


def test_buyer_is_masked_and_no_clear_pii_anywhere() -> None:
    [event] = ownsite.normalize(_raw(PAID), CTX)
    text = orjson.dumps(event).decode()
    for secret in ("王伟", "13800000000", "某区某路1号"):
        assert secret not in text
    buyer = event["buyer"]
    assert buyer["name_masked"] == "王*"
    assert buyer["phone_masked"] == "138****0000"
    assert len(buyer["phone_hash"]) == 64
    assert buyer["address_masked"] == "浙江省某市某*****"
    assert (buyer["province"], buyer["ciphertext"]) == ("浙江省", None)
    assert event["receiver"] == buyer  # the buyer block is the delivery address


def test_ciphertext_passes_through_opaque() -> None:
    doc = _doc(buyer={"name": "~AgAAAAbc~1~", "phone": "~AgAAAA12~1~", "province": "浙江省"})
    event = _one(doc)
    assert event["buyer"]["ciphertext"] == "~AgAAAAbc~1~"
    assert event["buyer"]["phone_masked"] is None and event["buyer"]["name_masked"] is None


def test_integer_19_digit_id_is_exact() -> None:
    body = PAID.replace(b'"id":"8100000000000000042"', b'"id":8100000000000000421')
    [event] = ownsite.normalize(_raw(body), CTX)
    assert event["channel_order_id"] == "8100000000000000421"


def test_event_time_keeps_the_stated_offset() -> None:
    doc = orjson.loads(PAID)
    doc["occurred_at"] = "2026-11-11T10:00:05-05:00"
    event = _one(doc)
    assert (event["event_time"], event["source_tz"]) == (_ms(2026, 11, 11, 15, 0, 5), "-05:00")


def test_updated_at_when_occurred_at_is_missing() -> None:
    doc = orjson.loads(PAID)
    doc["occurred_at"] = None
    doc["order"]["updated_at"] = "2026-11-11T23:01:00+08:00"
    assert _one(doc)["event_time"] == _ms(2026, 11, 11, 15, 1)


def test_redelivery_has_the_same_event_id() -> None:
    first = ownsite.normalize(_raw(PAID), CTX)[0]
    again = ownsite.normalize(_raw(PAID, source_event_id="evt_2", request_id="r2"),
                              Context(NOW + 5000, b"test-pii-key"))[0]
    assert first["event_id"] == again["event_id"]


def test_future_event_time_is_flagged() -> None:
    doc = orjson.loads(PAID)
    doc["occurred_at"] = "2026-11-12T23:00:05+08:00"
    assert _one(doc)["flags"] == ["FUTURE_EVENT_TIME"]


@pytest.mark.parametrize(("topic", "event_type"), list(ownsite.EVENT_TYPES.items()))
def test_every_event_maps(topic: str, event_type: str) -> None:
    doc = orjson.loads(PAID)
    doc["event"] = topic
    assert _one(doc, topic)["event_type"] == event_type


_STAMP = "2026-11-11T23:30:00+08:00"


@pytest.mark.parametrize(("order", "status", "refund", "paid"), [
    ({"status": "pending", "paid_at": None}, "PENDING_PAYMENT", "NONE", 0),
    ({"status": "paid"}, "PAID", "NONE", 32590),
    ({"status": "shipped", "shipped_at": _STAMP}, "SHIPPED", "NONE", 32590),
    ({"status": "delivered"}, "DELIVERED", "NONE", 32590),
    ({"status": "completed"}, "COMPLETED", "NONE", 32590),
    ({"status": "cancelled", "paid_at": None, "cancelled_at": _STAMP}, "CANCELLED", "NONE", 0),
    # The refund words do not say the lifecycle: the latest stamp set does.
    ({"status": "refunded", "cancelled_at": _STAMP}, "CANCELLED", "FULL", 32590),
    ({"status": "refunded", "shipped_at": _STAMP}, "SHIPPED", "FULL", 32590),
    ({"status": "partially_refunded", "shipped_at": _STAMP, "delivered_at": _STAMP},
     "DELIVERED", "PARTIAL", 32590),
    ({"status": "partially_refunded", "completed_at": _STAMP}, "COMPLETED", "PARTIAL", 32590),
    ({"status": "refunded", "paid_at": None}, "PAID", "FULL", 32590),
])
def test_status_table(order: dict[str, Any], status: str, refund: str, paid: int) -> None:
    event = _one(_doc(**order))
    assert (event["status"], event["refund_status"], event["paid_minor"]) == \
        (status, refund, paid)
    assert event["raw_status"] == order["status"]


def test_every_status_table_entry_is_covered() -> None:
    assert set(ownsite.ORDER_STATUS) == {
        "pending", "paid", "shipped", "delivered", "completed", "cancelled", "refunded",
        "partially_refunded"}


def _refund(kind: str, state: str, amount: str, line_no: int) -> dict[str, Any]:
    return {"kind": kind, "state": state, "amount": amount, "line_no": line_no}


def test_partial_refund_of_one_line() -> None:
    doc = _doc(status="partially_refunded", delivered_at=_STAMP,
               refund=_refund("return_and_refund", "refunded", "29.90", 2))
    event = _one(doc, "order.refunded")
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("REFUNDED", "DELIVERED", "PARTIAL")
    assert event["refunded_minor"] == 2990
    assert event["refund"] == {"kind": "RETURN_AND_REFUND", "status": "REFUNDED",
                               "amount_minor": 2990, "refund_id": None,
                               "lines": [{"line_id": "2", "quantity": 1, "amount_minor": 2990}]}
    assert [ln["refund_status"] for ln in event["lines"]] == [None, "refunded", None]
    _roundtrip(event)


def test_refund_of_part_of_a_line_states_no_quantity() -> None:
    doc = _doc(status="partially_refunded", refund=_refund("refund_only", "refunded",
                                                            "10.00", 1))
    event = _one(doc, "order.refunded")
    assert event["refund"]["lines"] == [{"line_id": "1", "quantity": 0, "amount_minor": 1000}]


def test_whole_order_refund_after_cancel() -> None:
    doc = _doc(status="refunded", cancelled_at=_STAMP,
               refund=_refund("refund_only", "refunded", "325.90", 0))
    event = _one(doc, "order.refunded")
    assert (event["status"], event["refund_status"], event["refunded_minor"]) == \
        ("CANCELLED", "FULL", 32590)
    assert event["refund"]["kind"] == "REFUND_ONLY" and event["refund"]["lines"] == []


def test_refunded_status_without_refund_object_returns_the_total() -> None:
    assert _one(_doc(status="refunded"))["refunded_minor"] == 32590
    assert _one(_doc(status="partially_refunded"))["refunded_minor"] == 0


@pytest.mark.parametrize(("kind", "state", "overlay", "record"), [
    ("refund_only", "requested", "REQUESTED", "REQUESTED"),
    ("return_and_refund", "requested", "RETURN_PENDING", "REQUESTED"),
    ("return_and_refund", "returned", "RETURN_PENDING", "RETURN_RECEIVED"),
    ("refund_only", "refunded", "PARTIAL", "REFUNDED"),
    ("return_and_refund", "refunded", "PARTIAL", "REFUNDED"),
])
def test_refund_overlay_while_the_order_status_is_not_a_refund_word(
        kind: str, state: str, overlay: str, record: str) -> None:
    event = _one(_doc(status="delivered", refund=_refund(kind, state, "59.00", 1)))
    assert (event["status"], event["refund_status"]) == ("DELIVERED", overlay)
    assert event["refund"]["status"] == record
    assert event["refunded_minor"] == (5900 if state == "refunded" else 0)
    assert event["lines"][0]["refund_status"] == state


def test_every_refund_table_entry_is_covered() -> None:
    assert set(ownsite.REFUND_OVERLAY) == {
        (k, s) for k in ownsite.REFUND_KINDS for s in ownsite.REFUND_STATES} - {
        ("refund_only", "returned")}  # a refund without a return has no goods to get back


def test_full_refund_by_amount_when_status_is_not_a_refund_word() -> None:
    event = _one(_doc(status="delivered", refund=_refund("refund_only", "refunded",
                                                          "325.90", 0)))
    assert event["refund_status"] == "FULL"


def test_not_set_dates_are_not_epoch() -> None:
    doc = _doc(status="paid", shipped_at=None, delivered_at="", cancelled_at=None)
    event = _one(doc)
    assert event["status"] == "PAID"


@pytest.mark.parametrize(("doc", "error", "reason"), [
    (_doc(status="on_hold"), MappingError, "unmapped_status"),
    (_doc(status=["paid"]), MappingError, "unmapped_status"),
    (_doc(refund=_refund("store_credit", "refunded", "1.00", 0)), MappingError,
     "unmapped_status"),
    (_doc(refund=_refund("refund_only", "disputed", "1.00", 0)), MappingError,
     "unmapped_status"),
    (_doc(refund=_refund("refund_only", "returned", "1.00", 0)), MappingError,
     "unmapped_status"),
    (_doc(id=None), MappingError, "missing_field"),
    (_doc(id=8.1e18), MappingError, "bad_id"),
    (_doc(total="4.235"), MappingError, "bad_amount"),
    (_doc(total=325.9), MappingError, "bad_amount"),  # money as a JSON number: refused
    (_doc(total="9" * 30), MappingError, "bad_amount"),  # beyond an Avro long
    (_doc(currency="RMB1"), MappingError, "bad_currency"),
    (_doc(currency=156), MappingError, "bad_currency"),
    (_doc(lines=[{"line_no": 1, "sku": "A", "quantity": 1.5, "unit_price": "1.00"}]),
     MappingError, "bad_line"),
    (_doc(lines={"line_no": 1}), MappingError, "bad_shape"),
    (_doc(buyer={"name": {"first": "x"}}), MappingError, "bad_shape"),
    ({"event": "order.paid", "order": "8100000000000000042"}, MappingError, "bad_shape"),
])
def test_bad_input_raises_reasoned_errors(doc: dict[str, Any], error: type,
                                          reason: str) -> None:
    with pytest.raises(error) as info:
        _one(doc)
    assert info.value.reason == reason


@pytest.mark.parametrize("occurred_at", [
    "2026-11-11 23:00:05",  # naive: the zone would be a guess
    "0001-01-01T00:00:00+05:00",  # before year 1 in UTC: unreadable as a datetime
    "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
    1794409205,
])
def test_unusable_event_times(occurred_at: object) -> None:
    doc = orjson.loads(PAID)
    doc["occurred_at"] = occurred_at
    with pytest.raises(MappingError) as info:
        _one(doc)
    assert info.value.reason == "bad_timestamp"


def test_not_json() -> None:
    for body in (b"not json", b"[1]", PAID[: len(PAID) // 2]):
        with pytest.raises(DecodeError) as decode:
            ownsite.normalize(_raw(body), CTX)
        assert decode.value.reason == "not_json"


def test_unknown_topic() -> None:
    for topic in ("order.updated", ""):
        with pytest.raises(MappingError) as info:
            ownsite.normalize(_raw(PAID, topic), CTX)
        assert info.value.reason == "unknown_topic"


def _walk(seed: int = 3, steps: int = 800) -> Iterator[tuple[lifecycle.SimOrder, str, datetime]]:
    ticks = (datetime(2026, 11, 11, 15, 0, tzinfo=UTC) + timedelta(minutes=i)
             for i in range(10**6))
    sim = lifecycle.Simulator(seed=seed, concurrent=20, clock=lambda: next(ticks))
    return ((order, event, order.updated) for order, event in islice(sim, steps))


# Lifecycle event -> (status, refund overlay) the normalized event must say.
_EXPECTED: dict[str, tuple[str, set[str]]] = {
    "created": ("PENDING_PAYMENT", {"NONE"}), "paid": ("PAID", {"NONE"}),
    "shipped": ("SHIPPED", {"NONE"}), "delivered": ("DELIVERED", {"NONE"}),
    "completed": ("COMPLETED", {"NONE"}), "cancelled": ("CANCELLED", {"NONE", "FULL"}),
}


def test_sandbox_deliveries_normalize_for_every_event() -> None:
    sim, source = OwnsiteWebhookSim(CONFIG), OwnsiteWebhook(CONFIG)
    raw_codec, seen = codec("RawEvent"), set()
    for order, event, at in _walk():
        for delivery in sim.deliveries(order, event, at):
            [record] = source.records(delivery.headers, delivery.body)
            received = int(at.timestamp() * 1000) + 2000
            raw = raw_event("ownsite", "WEBHOOK", record, received_at=received,
                            request_id=f"req-{delivery.delivery_id}")
            # As the pipeline sees it: through the RawEvent Avro envelope.
            [normalized] = ownsite.normalize(raw_codec.decode(raw_codec.encode(raw)), CTX)
            _roundtrip(normalized)
            assert normalized["order_id"] == f"ownsite:{order.id19(8_100_000_000_000_000_000)}"
            assert normalized["event_type"] == ownsite.EVENT_TYPES[EVENT_NAMES[event] or ""]
            assert normalized["event_time"] == int(at.timestamp()) * 1000
            assert normalized["source_tz"] == "+08:00"
            total = sum(ln.amount for ln in order.lines) + order.shipping_fee - order.discount
            assert normalized["total_minor"] == int(total * 100)
            if event == "refunded":
                assert normalized["refund_status"] in {"FULL", "PARTIAL"}
                assert normalized["refunded_minor"] == int(order.refund_amount * 100)
            else:
                status, overlays = _EXPECTED[event]
                assert normalized["status"] == status
                assert normalized["refund_status"] in overlays
            seen.add(normalized["event_type"])
    assert seen == set(ownsite.EVENT_TYPES.values())


# --- mutated real samples --------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)
    | st.sampled_from(["", "0", "2026-11-11T23:00:05+08:00", "0001-01-01 00:00:00",
                       "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                       "refunded", "return_and_refund", "CNY", "JPY", "sNaN", "1E+999999"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_REFUNDED = _doc(status="partially_refunded", delivered_at=_STAMP,
                 refund=_refund("return_and_refund", "refunded", "29.90", 2),
                 shipment={"carrier": "SF", "tracking_no": "SF123456789012"})
_PATHS = [("event",), ("occurred_at",), ("order",)] + [("order", k) for k in _REFUNDED["order"]] \
    + [("order", "lines", 0, k) for k in _REFUNDED["order"]["lines"][2]] \
    + [("order", "lines", 2, "components", 0, "quantity"), ("order", "buyer", "phone"),
       ("order", "refund", "line_no"), ("order", "refund", "amount"),
       ("order", "refund", "kind"), ("order", "shipment", "tracking_no")]


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Set ``path`` in ``doc`` to ``value`` where the path still exists."""
    node: Any = doc
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return
    if isinstance(node, dict):
        node[path[-1]] = value


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.dictionaries(st.sampled_from(_PATHS), _json, max_size=6))
def test_mutated_samples_normalize_or_raise_input_errors(
        refunded: bool, mutation: dict[tuple[Any, ...], Any]) -> None:
    doc = copy.deepcopy(_REFUNDED if refunded else orjson.loads(PAID))
    for path, value in mutation.items():
        _mutate(doc, path, value)
    try:
        events = ownsite.normalize(_raw(orjson.dumps(doc), doc.get("event")
                                        if isinstance(doc.get("event"), str) else ""), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("ownsite:")
