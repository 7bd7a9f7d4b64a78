import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import RawRecord, raw_event
from orderpulse.connectors.channels.douyin import DouyinWebhook
from orderpulse.connectors.sandbox import douyin as sim
from orderpulse.connectors.sandbox.lifecycle import Simulator, apply, new_order
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import douyin
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

PUSH = fixture_bytes("douyin", "push_101.json")
BATCH = fixture_bytes("douyin", "push_batch.json")
MESSAGES = fixture_bytes("douyin", "normalize_messages.json")
CANCEL_PAID = fixture_bytes("douyin", "normalize_cancel_paid.json")
NOW = 1_800_000_000_000
CTX = Context(NOW, b"test-pii-key")
CONFIG = {"app_key": "7012345678901234567", "app_secret": "doudian-secret"}
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
P_ID = "6920123456789012345"


def _records(body: bytes) -> list[RawRecord]:
    return DouyinWebhook(CONFIG).records({"app-id": CONFIG["app_key"]}, body)


def _raw(record: RawRecord) -> dict[str, Any]:
    return raw_event("douyin", "WEBHOOK", record, received_at=1_700_619_400_000,
                     request_id="req-9")


def _events(body: bytes) -> list[dict[str, Any]]:
    """Every event of a push body, built the way the connector's records() build them."""
    return [e for r in _records(body) for e in douyin.normalize(_raw(r), CTX)]


def _by_tag(body: bytes) -> dict[str, dict[str, Any]]:
    return {r.source_topic: douyin.normalize(_raw(r), CTX)[0] for r in _records(body)}


def _message(tag: str, as_tag: str | None = None, **data: Any) -> bytes:
    """The fixtures' first message of ``tag``, with ``data`` fields changed (None removes
    one), sent as ``as_tag`` when given."""
    element = next(m for body in (MESSAGES, BATCH, PUSH, CANCEL_PAID)
                   for m in orjson.loads(body) if m["tag"] == tag)
    doc = {**orjson.loads(element["data"]), **data}
    doc = {k: v for k, v in doc.items() if v is not None}
    return orjson.dumps({**element, "tag": as_tag or tag, "data": orjson.dumps(doc).decode()})


def _one(body: bytes, topic: str = "") -> dict[str, Any]:
    raw = _raw(RawRecord(key="k", source_topic=topic, body=body, shop_id="4463798",
                         source_event_id="m-1"))
    [event] = douyin.normalize(raw, CTX)
    return event


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    return codec("OrderEvent").decode(codec("OrderEvent").encode(event))


# --- documented samples ---------------------------------------------------------------------

def test_documented_paid_push_field_by_field() -> None:
    [event] = _events(PUSH)
    assert event["order_id"] == f"douyin:{P_ID}"
    assert event["channel_order_id"] == P_ID  # 19 digits, exact
    assert (event["channel"], event["shop_id"]) == ("douyin", "4463798")
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("PAID", "PAID", "NONE")
    assert event["raw_status"] == "tag=101;order_status=2"
    assert (event["event_time"], event["source_tz"]) == (1_700_619_338_000, "UTC")
    assert event["currency"] == "CNY"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (10800, 10800, 0, 0, 0, 0)  # fen stay fen
    assert event["lines"] == [] and event["refund"] is None
    assert (event["buyer"], event["buyer_ref"], event["receiver"]) == (None, None, None)
    assert (event["trace_id"], event["source_event_id"]) == ("req-9", "7301234567890123456:101")
    assert (event["received_at"], event["processed_at"], event["flags"]) == \
        (1_700_619_400_000, NOW, [])


def test_documented_batch_gives_one_event_per_message() -> None:
    created, requested = _events(BATCH)
    assert (created["event_type"], created["status"], created["total_minor"]) == \
        ("CREATED", "PENDING_PAYMENT", 0)
    assert created["event_time"] == 1_700_619_303_000
    assert requested["order_id"] == "douyin:6920123456789099999"
    assert requested["shop_id"] == "4463799"
    assert (requested["event_type"], requested["status"], requested["refund_status"]) == \
        ("REFUND_REQUESTED", "SHIPPED", "REQUESTED")
    assert requested["raw_status"] == "tag=200;aftersale_status=6;aftersale_type=1"
    assert requested["refund"] == {
        "kind": "REFUND_ONLY", "status": "REQUESTED", "amount_minor": 3700,
        "refund_id": "7311234567890123456",
        "lines": [{"line_id": "6920123456789099998", "quantity": 0, "amount_minor": 3700}]}
    assert requested["refunded_minor"] == 0


def test_shipment_carries_carrier_tracking_and_masked_receiver() -> None:
    event = _by_tag(MESSAGES)["102"]
    assert (event["event_type"], event["status"]) == ("SHIPPED", "SHIPPED")
    assert (event["carrier"], event["tracking_no"]) == ("zhongtong", "78512345678901")
    assert event["event_time"] == 1_700_702_000_000
    assert event["receiver"] == {
        "name_masked": "张*", "phone_masked": "138****5678", "phone_hash": None,
        "address_masked": "浙江省杭州市" + "*" * 9, "province": None, "city": None,
        "ciphertext": None}


def test_address_change_passes_ciphertext_and_keeps_regions() -> None:
    event = _by_tag(MESSAGES)["105"]
    assert (event["event_type"], event["status"]) == ("UPDATED", "PAID")
    receiver = event["receiver"]
    assert (receiver["province"], receiver["city"]) == ("浙江省", "杭州市")
    assert (receiver["name_masked"], receiver["phone_masked"], receiver["phone_hash"]) == \
        ("李*", "139****4321", None)
    assert receiver["address_masked"] == "浙江省杭州市" + "*" * 12
    assert orjson.loads(receiver["ciphertext"]) == {
        "name": "#Ym9i#Q2lw#", "phone": "$VGVs$Q2lw$", "address": "#3kLmN0pQ#AbCdEf==#"}


def test_partial_shipment_and_amount_change() -> None:
    tags = _by_tag(MESSAGES)
    partial = tags["108"]
    assert (partial["event_type"], partial["status"], partial["raw_status"]) == \
        ("PARTIALLY_FULFILLED", "SHIPPED", "tag=108;order_status=101")
    assert (partial["carrier"], partial["tracking_no"]) == ("shunfeng", "SF1234567890123")
    changed = tags["109"]
    assert (changed["event_type"], changed["status"]) == ("UPDATED", "PENDING_PAYMENT")
    assert (changed["total_minor"], changed["shipping_minor"], changed["paid_minor"]) == \
        (9900, 800, 0)
    assert changed["event_time"] == 1_700_619_320_000  # modify_time


def test_return_lifecycle() -> None:
    tags = _by_tag(MESSAGES)
    asked = tags["200"]
    assert (asked["event_type"], asked["status"], asked["refund_status"]) == \
        ("RETURN_REQUESTED", "DELIVERED", "RETURN_PENDING")
    assert asked["refund"]["kind"] == "RETURN_AND_REFUND"
    sent_back = tags["203"]  # the buyer has sent the goods back; not received yet
    assert (sent_back["event_type"], sent_back["refund_status"]) == ("UPDATED", "RETURN_PENDING")
    assert sent_back["refund"]["status"] == "APPROVED"
    # update_time as RFC 3339 text (the SDK types it time.Time): 10:00+08:00 = 02:00Z
    assert (sent_back["event_time"], sent_back["source_tz"]) == \
        (int(datetime(2023, 11, 27, 2, tzinfo=UTC).timestamp()) * 1000, "+08:00")


def test_partial_refund_of_one_child_order() -> None:
    refunded = _by_tag(MESSAGES)["206"]
    assert (refunded["event_type"], refunded["status"], refunded["refund_status"]) == \
        ("REFUNDED", "DELIVERED", "PARTIAL")
    assert refunded["refunded_minor"] == 3700
    assert refunded["refund"] == {
        "kind": "RETURN_AND_REFUND", "status": "REFUNDED", "amount_minor": 3700,
        "refund_id": "7311234567890123456",
        "lines": [{"line_id": "6920123456789012347", "quantity": 0, "amount_minor": 3700}]}
    assert refunded["event_time"] == 1_701_100_000_000


def test_closed_after_sale_falls_back_to_update_time_in_china_time() -> None:
    closed = _by_tag(MESSAGES)["207"]  # close_time 0 = not set
    assert (closed["event_type"], closed["refund_status"], closed["refund"]["status"]) == \
        ("UPDATED", "NONE", "CLOSED")
    assert (closed["event_time"], closed["source_tz"]) == \
        (int(datetime(2023, 11, 28, 4, tzinfo=UTC).timestamp()) * 1000, "Asia/Shanghai")


def test_paid_order_cancelled_by_whole_order_refund() -> None:
    refunded, cancelled = _events(CANCEL_PAID)
    assert (refunded["event_type"], refunded["status"], refunded["refund_status"]) == \
        ("REFUNDED", "CANCELLED", "FULL")
    assert refunded["refunded_minor"] == 10800 and refunded["refund"]["lines"] == []
    assert (cancelled["event_type"], cancelled["status"], cancelled["raw_status"]) == \
        ("CANCELLED", "CANCELLED", "tag=106;order_status=4")
    assert cancelled["event_time"] == 1_700_640_001_000
    assert refunded["event_id"] != cancelled["event_id"]


def test_every_fixture_event_encodes_and_decodes() -> None:
    for body in (PUSH, BATCH, MESSAGES, CANCEL_PAID):
        for event in _events(body):
            assert _roundtrip(event)["order_id"] == event["order_id"]


def test_redelivery_gets_the_same_event_id() -> None:
    [first] = _events(PUSH)
    [again] = [douyin.normalize(_raw(r), Context(NOW + 9, b"test-pii-key"))[0]
               for r in _records(PUSH)]
    assert again["event_id"] == first["event_id"]


# --- channel traps -------------------------------------------------------------------------------

@pytest.mark.parametrize("p_id", [6920123456789012345, "6920123456789012345"])
def test_19_digit_ids_are_exact(p_id: Any) -> None:
    assert _one(_message("101", p_id=p_id))["channel_order_id"] == "6920123456789012345"


@pytest.mark.parametrize(("data", "reason"), [
    ({"p_id": 6.920123456789012e18}, "bad_id"),  # a double already lost the last digits
    ({"p_id": True}, "bad_id"),
    ({"p_id": "69201-23"}, "bad_id"),
    ({"p_id": None}, "missing_field"),
    ({"pay_amount": 108.0}, "bad_amount"),  # fen are integers
    ({"pay_amount": "10800"}, "bad_amount"),
    ({"pay_amount": -1}, "bad_amount"),
    ({"pay_time": 1700619338000 * 1000}, "bad_timestamp"),
    ({"pay_time": -5}, "bad_timestamp"),
    ({"pay_time": "yesterday"}, "bad_timestamp"),
    ({"pay_time": None}, "missing_field"),
    ({"pay_time": 0}, "missing_field"),
    ({"order_status": 9}, "unmapped_status"),
    ({"order_status": "2.0"}, "unmapped_status"),
    ({"order_status": None}, "unmapped_status"),
])
def test_bad_paid_messages(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(MappingError) as info:
        _one(_message("101", **data))
    assert info.value.reason == reason


def test_p_id_beyond_64_bits_is_refused() -> None:
    body = _message("101").replace(b"6920123456789012345", b"69201234567890123456789")
    with pytest.raises(MappingError) as info:
        _one(body)
    assert info.value.reason == "bad_id"


@pytest.mark.parametrize(("value", "ms", "zone"), [
    (1701000000, 1_701_000_000_000, "UTC"),
    ("1701000000", 1_701_000_000_000, "UTC"),
    ("2023-11-26T12:00:00Z", 1_701_000_000_000, "+00:00"),
    ("2023-11-26 20:00:00", 1_701_000_000_000, "Asia/Shanghai"),
])
def test_after_sale_update_time_variants(value: Any, ms: int, zone: str) -> None:
    event = _one(_message("200", as_tag="202", aftersale_status=7, update_time=value))
    assert (event["event_time"], event["source_tz"]) == (ms, zone)


@pytest.mark.parametrize(("data", "reason"), [
    ({"aftersale_type": 3}, "unmapped_status"),  # exchange: not a refund we know
    ({"aftersale_type": False}, "unmapped_status"),
    ({"aftersale_status": [6]}, "unmapped_status"),
    ({"aftersale_id": None}, "missing_field"),
    ({"s_id": 1.5}, "bad_id"),
    ({"refund_amount": 37.0}, "bad_amount"),
    ({"refund_post_amount": "0"}, "bad_amount"),
    ({"apply_time": None, "update_time": None}, "missing_field"),
    ({"apply_time": None, "update_time": "2023-11-26 20:00"}, "bad_timestamp"),
])
def test_bad_after_sale_messages(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(MappingError) as info:
        _one(_message("200", **data))
    assert info.value.reason == reason


def test_masked_receiver_stays_masked_and_clear_values_are_masked_again() -> None:
    clear = {"name": "张三丰", "tel": "13812345678", "addr": "浙江省杭州市西湖区文三路100号"}
    event = _one(_message("102", receiver_msg=clear))
    text = orjson.dumps(event).decode()
    for secret in ("张三丰", "13812345678", "文三路100号"):
        assert secret not in text
    assert event["receiver"]["phone_masked"] == "138****5678"


@pytest.mark.parametrize(("body", "error", "reason"), [
    (b"not json", DecodeError, "not_json"),
    (b"[1]", DecodeError, "not_json"),
    (b'{"tag":"101","msg_id":"m","data":"not json"}', DecodeError, "not_json"),
    (b'{"tag":"101","msg_id":"m","data":"[1]"}', DecodeError, "not_json"),
    (b'{"tag":"101","msg_id":"m","data":7}', DecodeError, "not_json"),
    (b'{"tag":"101","msg_id":"m"}', DecodeError, "not_json"),
    (b'{"tag":"0","msg_id":"0","data":"{}"}', MappingError, "unknown_topic"),
    (b'{"tag":"110","msg_id":"m","data":"{}"}', MappingError, "unknown_topic"),
    (b'{"tag":true,"msg_id":"m","data":"{}"}', MappingError, "unknown_topic"),
    (b'{"tag":"102","data":{"p_id":1,"order_status":3,"update_time":1,"receiver_msg":[]}}',
     MappingError, "bad_shape"),
    (b'{"tag":"105","data":{"p_id":1,"order_status":2,"update_time":1,'
     b'"receiver_msg":{"addr":"{broken"}}}', MappingError, "bad_shape"),
])
def test_bad_bodies(body: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        _one(body)
    assert info.value.reason == reason


def test_data_as_an_object_and_the_tag_from_source_topic() -> None:
    data = orjson.loads(orjson.loads(PUSH)[0]["data"])
    event = _one(orjson.dumps({"msg_id": "m", "data": data}), topic="101")
    assert (event["event_type"], event["channel_order_id"]) == ("PAID", P_ID)


# --- status tables -------------------------------------------------------------------------------

LIFECYCLE = {"PENDING_PAYMENT", "PAID", "APPROVED", "PACKING", "SHIPPED", "IN_TRANSIT",
             "DELIVERED", "COMPLETED", "CANCELLED"}
EVENT_TYPES = {"CREATED", "UPDATED", "PAID", "CANCELLED", "FULFILLED", "PARTIALLY_FULFILLED",
               "REFUNDED", "APPROVED", "SHIPPED", "DELIVERED", "COMPLETED", "REFUND_REQUESTED",
               "RETURN_REQUESTED", "RETURN_RECEIVED", "CARRIER_SCAN", "STATE", "OTHER"}


@pytest.mark.parametrize("code", sorted(douyin.ORDER_STATUS))
def test_every_order_status_maps(code: int) -> None:
    event = _roundtrip(_one(_message("102", order_status=code)))
    assert event["status"] == douyin.ORDER_STATUS[code]


@pytest.mark.parametrize("tag", sorted(douyin.ORDER_TAGS))
def test_every_order_tag_maps(tag: str) -> None:
    data = orjson.loads(orjson.loads(_message("102"))["data"])
    data[douyin.ORDER_TAGS[tag][1]] = 1_700_700_000
    event = _one(orjson.dumps({"tag": tag, "msg_id": "m", "data": orjson.dumps(data).decode()}))
    assert event["event_type"] == douyin.ORDER_TAGS[tag][0] in EVENT_TYPES
    assert event["event_time"] == 1_700_700_000_000


@pytest.mark.parametrize("tag", sorted(douyin.AFTERSALE_TAGS))
@pytest.mark.parametrize("kind", sorted(douyin.AFTERSALE_TYPES))
def test_every_after_sale_tag_and_type_maps(tag: str, kind: int) -> None:
    data = orjson.loads(orjson.loads(_message("200"))["data"])
    data.update(aftersale_type=kind, update_time=1_701_000_100)
    event = _roundtrip(_one(orjson.dumps({"tag": tag, "msg_id": "m",
                                          "data": orjson.dumps(data).decode()})))
    event_type, state, _overlay, _field = douyin.AFTERSALE_TAGS[tag]
    refund_kind, _status, whole = douyin.AFTERSALE_TYPES[kind]
    returning = tag == "200" and refund_kind == "RETURN_AND_REFUND"
    assert event["event_type"] == ("RETURN_REQUESTED" if returning else event_type)
    assert event["event_type"] in EVENT_TYPES and event["status"] in LIFECYCLE
    assert (event["refund"]["kind"], event["refund"]["status"]) == (refund_kind, state)
    assert len(event["refund"]["lines"]) == (0 if whole else 1)
    if tag == "206":
        assert event["refund_status"] == ("FULL" if whole else "PARTIAL")
        assert event["refunded_minor"] == 3700
    else:
        assert event["refunded_minor"] == 0


# --- the sandbox ------------------------------------------------------------------------------

PATHS = [
    ["paid", "shipped", "in_transit", "delivered", "completed"],
    ["cancelled"],
    ["paid", "cancelled"],
    ["paid", "shipped", "refund_requested", "refunded"],
    ["paid", "shipped", "in_transit", "delivered", "refund_requested", "refunded"],
    ["paid", "shipped", "in_transit", "delivered", "return_requested", "return_received",
     "refunded"],
]
# lifecycle event -> (event type, status, refund overlay) of the events its delivery makes.
EXPECTED = {
    "created": [("CREATED", "PENDING_PAYMENT", "NONE")],
    "paid": [("PAID", "PAID", "NONE")],
    "shipped": [("SHIPPED", "SHIPPED", "NONE")],
    "completed": [("COMPLETED", "COMPLETED", "NONE")],
    "return_requested": [("RETURN_REQUESTED", "DELIVERED", "RETURN_PENDING")],
    "return_received": [("UPDATED", "DELIVERED", "RETURN_PENDING")],
}


def _sandbox_events(order: Any, step: str, at: datetime) -> list[dict[str, Any]]:
    source = DouyinWebhook(CONFIG)
    events = []
    for delivery in sim.DouyinWebhookSim(CONFIG).deliveries(order, step, at):
        source.verify(delivery.headers, delivery.body, NOW)
        for record in source.records(delivery.headers, delivery.body):
            [event] = douyin.normalize(_raw(record), CTX)
            assert _roundtrip(event)["order_id"] == event["order_id"]
            events.append(event)
    return events


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(p))
def test_sandbox_deliveries_normalize_for_every_lifecycle_event(path: list[str]) -> None:
    rng = random.Random(4)
    order = new_order(42, T0, rng)
    steps = [("created", _sandbox_events(order, "created", T0))]
    for i, step in enumerate(path, start=1):
        at = T0 + timedelta(hours=i)
        apply(order, step, at, rng)
        steps.append((step, _sandbox_events(order, step, at)))
    for step, events in steps:
        for event in events:
            assert event["order_id"] == f"douyin:{sim.ID_BASE + 42}"
            text = orjson.dumps(event).decode()
            for secret in (order.buyer_name, order.buyer_phone, order.address):
                assert secret not in text
        if step in EXPECTED:
            assert [(e["event_type"], e["status"], e["refund_status"]) for e in events] == \
                EXPECTED[step]
        if step in ("in_transit", "delivered"):
            assert events == []  # Douyin pushes nothing for these
    last = steps[-1][1]
    if path == ["paid", "cancelled"]:
        assert [(e["event_type"], e["status"], e["refund_status"]) for e in last] == \
            [("REFUNDED", "CANCELLED", "FULL"), ("CANCELLED", "CANCELLED", "NONE")]
        assert last[0]["refunded_minor"] == int(order.total * 100)
    elif path[-1] == "refunded":
        [refunded] = last
        assert (refunded["event_type"], refunded["refund_status"]) == ("REFUNDED", "PARTIAL")
        assert refunded["refunded_minor"] == int(order.refund_amount * 100)
        assert refunded["refund"]["lines"][0]["line_id"] == \
            str(sim.SKU_ORDER_BASE + 42 * 10 + order.refund_line_no)
    if "paid" in path:
        paid = steps[path.index("paid") + 1][1][0]
        assert paid["total_minor"] == paid["paid_minor"] == int(order.total * 100)
    if "shipped" in path:
        shipped = steps[path.index("shipped") + 1][1][0]
        assert (shipped["carrier"], shipped["tracking_no"]) == \
            (sim.EXPRESS[order.carrier], order.tracking_no)
        assert shipped["receiver"]["phone_masked"] == \
            f"{order.buyer_phone[:3]}****{order.buyer_phone[-4:]}"


def test_sandbox_simulation_normalizes_without_error() -> None:
    simulator = Simulator(seed=9, concurrent=20, clock=lambda: T0)
    for _ in range(400):
        order, step = simulator.step()
        _sandbox_events(order, step, T0)


# --- property: mutated real samples -----------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "1700619338", "2023-11-26 20:00:00", "2023-11-26T12:00:00Z",
                       "{}", '{"province":{"name":"x"}}', "138****5678"])
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_DATA_FIELDS = ["p_id", "s_id", "s_ids", "shop_id", "order_status", "pay_amount", "pay_time",
                "create_time", "update_time", "total_amount", "post_amount", "modify_time",
                "logistics_msg", "receiver_msg", "aftersale_id", "aftersale_status",
                "aftersale_type", "apply_time", "success_time", "refund_amount",
                "refund_post_amount"]
_SAMPLES = [m for body in (PUSH, BATCH, MESSAGES, CANCEL_PAID) for m in orjson.loads(body)]


def _check(body: bytes) -> None:
    try:
        events = _events(body)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"] == event["order_id"]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_SAMPLES), st.dictionaries(st.sampled_from(_DATA_FIELDS), _json,
                                                  max_size=5))
def test_mutated_data_normalizes_or_raises_input_errors(message: dict[str, Any],
                                                        mutation: dict[str, Any]) -> None:
    data = {**orjson.loads(message["data"]), **mutation}
    _check(orjson.dumps([{**message, "data": orjson.dumps(data).decode()}]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_SAMPLES), st.dictionaries(st.sampled_from(["tag", "msg_id", "data"]),
                                                  _json, max_size=2))
def test_mutated_messages_normalize_or_raise_input_errors(message: dict[str, Any],
                                                          mutation: dict[str, Any]) -> None:
    _check(orjson.dumps([{**message, **mutation}]))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_input_errors_only(data: bytes) -> None:
    _check(data)
