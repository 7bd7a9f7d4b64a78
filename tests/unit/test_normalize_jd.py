"""JD POP orders to OrderEvent: documented samples field by field, the channel's
traps, every order state, the sandbox's rendering of every lifecycle event, and
mutated samples (hypothesis)."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import Window, raw_event
from orderpulse.connectors.channels import jd as connector
from orderpulse.connectors.sandbox import jd as sim_jd
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import jd
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

KEY = b"test-pii-key"
NOW = int(datetime(2025, 1, 2, tzinfo=UTC).timestamp() * 1000)
CTX = Context(NOW, KEY)
RECEIVED = NOW - 1000
PAGE = orjson.loads(fixture_bytes("jd", "pop_order_search.json"))
DOCUMENTED = PAGE["jingdong_pop_order_search_responce"]["searchorderinfo_result"][
    "orderInfoList"][0]
LOCKED = orjson.loads(fixture_bytes("jd", "normalize_locked_after_shipment.json"))


def _raw(order: Any, *, topic: str = connector.METHOD, received_at: int = RECEIVED,
         request_id: str = "poll-1") -> dict[str, Any]:
    """The RawEvent dict the poller publishes for one order (received_at in ms)."""
    record = connector.record_of(order, "777")
    raw = raw_event(connector.CHANNEL, "POLL", record, received_at=received_at,
                    request_id=request_id)
    return {**raw, "source_topic": topic}


def _one(order: Any, ctx: Context = CTX) -> dict[str, Any]:
    [event] = jd.normalize(_raw(order), ctx)
    return event


def _order(base: dict[str, Any] = DOCUMENTED, **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    order_codec = codec("OrderEvent")
    return order_codec.decode(order_codec.encode(event))


# --- documented samples, field by field --------------------------------------------

def test_documented_order_field_by_field() -> None:
    orders, _ = connector.parse_page(PAGE)
    event = _one(orders[0])
    assert event["order_id"] == "jd:301234567890"
    assert event["channel"] == "jd" and event["shop_id"] == "777"
    assert event["channel_order_id"] == "301234567890"
    assert event["event_type"] == "STATE"
    assert (event["status"], event["refund_status"]) == ("PAID", "NONE")
    assert event["raw_status"] == "WAIT_SELLER_STOCK_OUT"
    # modified 2024-05-18 11:02:47 Beijing time (GMT+8) -> 03:02:47Z
    assert event["event_time"] == _ms(2024, 5, 18, 3, 2, 47)
    assert event["source_tz"] == "Asia/Shanghai"
    assert (event["received_at"], event["processed_at"]) == (RECEIVED, NOW)
    assert event["currency"] == "CNY"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (24700, 24700, 2000, 800, 0, 0)
    assert event["lines"] == [
        {"line_id": "100012345678", "sku": "SKU-1001-BLK-M", "quantity": 1,
         "unit_price_minor": 19900, "components": [], "refund_status": None},
        {"line_id": "100012345679", "sku": "SKU-2002-WHT", "quantity": 2,
         "unit_price_minor": 3000, "components": [], "refund_status": None},
    ]
    assert event["refund"] is None and event["buyer"] is None
    assert event["buyer_ref"] == hmac.new(KEY, b"jd\x00open_id_buyer\x00o_AbCdEf123456",
                                          hashlib.sha256).hexdigest()[:32]
    assert (event["carrier"], event["tracking_no"]) == (None, None)
    assert event["trace_id"] == "poll-1"
    assert event["source_event_id"] == "poll:301234567890:2024-05-18 11:02:47"
    assert event["flags"] == []
    _roundtrip(event)


def test_consignee_ciphertext_passes_through_opaque() -> None:
    receiver = _one(DOCUMENTED)["receiver"]
    assert receiver == {
        "name_masked": None, "phone_masked": None, "phone_hash": None,
        "address_masked": None, "province": "北京", "city": "北京市",
        "ciphertext": '{"fullAddress":"~AgAAAencryptedaddress~1~",'
                      '"fullname":"~AgAAAencryptedname~1~",'
                      '"mobile":"$AgAAAencryptedmobile$1$",'
                      '"telephone":"$AgAAAencryptedphone$1$"}',
    }
    assert orjson.loads(receiver["ciphertext"])["mobile"] == "$AgAAAencryptedmobile$1$"


def test_locked_order_after_shipment_field_by_field() -> None:
    event = _one(LOCKED)
    assert event["channel_order_id"] == "2900000000000000042"  # 19 digits, exact
    assert (event["status"], event["refund_status"]) == ("SHIPPED", "REQUESTED")
    assert event["raw_status"] == "LOCKED"
    # 2025-01-01 00:15 in Beijing is still 2024 in UTC.
    assert event["event_time"] == _ms(2024, 12, 31, 16, 15)
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["refunded_minor"]) == (30000, 30000, 1800, 0, 0)
    assert event["lines"] == [
        {"line_id": "100012345678", "sku": "SKU-1001-BLK-M", "quantity": 2,
         "unit_price_minor": 15900, "components": [], "refund_status": None},
        {"line_id": "100012345678#2", "sku": "SKU-1001-BLK-M", "quantity": 1,
         "unit_price_minor": 0, "components": [], "refund_status": None},
        {"line_id": "100012345680", "sku": "sku:100012345680", "quantity": 10,
         "unit_price_minor": 50, "components": [], "refund_status": None},
    ]
    assert (event["carrier"], event["tracking_no"]) == ("467", "JDV000123456789")
    assert event["refund"] is None
    _roundtrip(event)


def test_clear_consignee_fields_are_masked_and_hashed_never_kept() -> None:
    event = _one(LOCKED)
    assert event["receiver"] == {
        "name_masked": "李*", "phone_masked": "139****5678",
        "phone_hash": hmac.new(KEY, b"13912345678", hashlib.sha256).hexdigest(),
        "address_masked": "广东省深圳市" + "*" * 9, "province": "广东", "city": "深圳市",
        "ciphertext": None,
    }
    text = orjson.dumps(event).decode()
    for clear in ("李四", "13912345678", "南山区", "科技园路", "o_ZyXwVu987654"):
        assert clear not in text



def test_through_the_raw_event_codec_received_at_is_a_datetime() -> None:
    """In the pipeline the RawEvent comes out of Avro: received_at is a datetime."""
    raw_codec = codec("RawEvent")
    raw = raw_codec.decode(raw_codec.encode(_raw(DOCUMENTED)))
    assert isinstance(raw["received_at"], datetime)
    [event] = jd.normalize(raw, CTX)
    decoded = _roundtrip(event)
    assert decoded["order_id"] == "jd:301234567890"
    assert decoded["received_at"] == datetime.fromtimestamp(RECEIVED / 1000, UTC)

# --- channel traps -------------------------------------------------------------------

def test_every_value_a_string_and_exact_integers_tolerated() -> None:
    event = _one(_order(orderId=301234567890, itemInfoList=[
        {"skuId": 100012345678, "jdPrice": "199.00", "itemTotal": 3}]))
    assert event["channel_order_id"] == "301234567890"
    assert event["lines"][0]["line_id"] == "100012345678"
    assert event["lines"][0]["quantity"] == 3


@pytest.mark.parametrize(("order", "reason"), [
    (_order(orderId=3.0123456789e11), "bad_id"),
    (_order(orderId="301234567890.0"), "bad_id"),
    (_order(orderId=True), "bad_id"),
    (_order(itemInfoList=[{"skuId": "1", "itemTotal": "1.5"}]), "bad_shape"),
    (_order(itemInfoList=[{"skuId": "1", "itemTotal": "-1"}]), "bad_shape"),
    (_order(itemInfoList=[{"skuId": "1", "itemTotal": "4294967296"}]), "bad_shape"),
    (_order(itemInfoList=[{"skuId": "1"}]), "missing_field"),
    (_order(itemInfoList=[{"itemTotal": "1"}]), "missing_field"),
    (_order(itemInfoList={"skuId": "1"}), "bad_shape"),
    (_order(consigneeInfo="~AgAAAx~1~"), "bad_shape"),
    (_order(orderPayment=247.0), "bad_amount"),
    (_order(orderPayment="247.001"), "bad_amount"),
    (_order(freightPrice="8,00"), "bad_amount"),
    (_order(orderPayment=""), "missing_field"),
    (_order(orderState=None), "missing_field"),
])
def test_bad_values_raise_reasoned_mapping_errors(order: dict[str, Any], reason: str) -> None:
    with pytest.raises(MappingError) as info:
        _one(order)
    assert info.value.reason == reason


@pytest.mark.parametrize("confirm", ["", "0001-01-01 00:00:00", None])
def test_not_set_payment_time_of_a_cancelled_order_is_no_payment(confirm: str | None) -> None:
    event = _one(_order(orderState="TRADE_CANCELED", paymentConfirmTime=confirm,
                        orderEndTime="2024-05-18 11:02:47"))
    assert (event["status"], event["refund_status"]) == ("CANCELLED", "NONE")
    assert (event["paid_minor"], event["refunded_minor"]) == (0, 0)


def test_cancelled_after_payment_is_a_full_refund() -> None:
    event = _one(_order(orderState="TRADE_CANCELED"))
    assert (event["status"], event["refund_status"]) == ("CANCELLED", "FULL")
    assert (event["paid_minor"], event["refunded_minor"]) == (24700, 24700)


@pytest.mark.parametrize("modified", ["0001-01-01 00:00:00", "0001-01-01 00:00:01",
                                      "2024-05-18T11:02:47+08:00", 1716001367])
def test_event_time_must_be_a_real_beijing_time(modified: object) -> None:
    with pytest.raises(MappingError) as info:
        _one(_order(modified=modified))
    assert info.value.reason == "bad_timestamp"


def test_a_bad_payment_time_is_refused_not_ignored() -> None:
    with pytest.raises(MappingError) as info:
        _one(_order(paymentConfirmTime="yesterday"))
    assert info.value.reason == "bad_timestamp"


def test_cash_on_delivery_waits_unpaid_until_finished() -> None:
    cod = _order(payType="1-货到付款", paymentConfirmTime="0001-01-01 00:00:00")
    event = _one(cod)
    assert (event["status"], event["paid_minor"], event["raw_status"]) == \
        ("APPROVED", 0, "WAIT_SELLER_STOCK_OUT;payType=cod")
    assert _one(_order(cod, orderState="WAIT_GOODS_RECEIVE_CONFIRM"))["paid_minor"] == 0
    finished = _one(_order(cod, orderState="FINISHED_L"))
    assert (finished["status"], finished["paid_minor"]) == ("COMPLETED", 24700)
    cancelled = _one(_order(cod, orderState="TRADE_CANCELED"))
    assert (cancelled["refund_status"], cancelled["refunded_minor"]) == ("NONE", 0)


def test_buyer_ref_falls_back_to_xid_then_pin() -> None:
    without_open_id = {k: v for k, v in DOCUMENTED.items() if k != "open_id_buyer"}
    assert _one(without_open_id)["buyer_ref"] == hmac.new(
        KEY, b"jd\x00xid_buyer\x00x_9ZyXwV654321", hashlib.sha256).hexdigest()[:32]
    only_pin = {k: v for k, v in without_open_id.items() if k != "xid_buyer"} | {"pin": "jd_u"}
    event = _one(only_pin)
    assert event["buyer_ref"] and "jd_u" not in orjson.dumps(event).decode()


def test_redelivery_gets_the_same_event_id_and_a_change_a_new_one() -> None:
    first = _one(DOCUMENTED)
    [again] = jd.normalize(_raw(DOCUMENTED, received_at=RECEIVED + 9, request_id="p2"),
                           Context(NOW + 5000, KEY))
    assert again["event_id"] == first["event_id"]
    assert _one(_order(modified="2024-05-18 11:02:48"))["event_id"] != first["event_id"]


# --- the order state table -----------------------------------------------------------

# state -> (status without waybill, status with waybill, refund overlay)
EXPECTED_ORDER_STATE = {
    "WAIT_SELLER_STOCK_OUT": ("PAID", "PAID", "NONE"),
    "WAIT_SELLER_DELIVERY": ("PAID", "PAID", "NONE"),
    "WAIT_GOODS_RECEIVE_CONFIRM": ("SHIPPED", "SHIPPED", "NONE"),
    "FINISHED_L": ("COMPLETED", "COMPLETED", "NONE"),
    "TRADE_CANCELED": ("CANCELLED", "CANCELLED", "FULL"),
    "LOCKED": ("PAID", "SHIPPED", "REQUESTED"),
    "PAUSE": ("PAID", "SHIPPED", "NONE"),
    "POP_ORDER_PAUSE": ("PAID", "SHIPPED", "NONE"),
}


def test_every_order_state_is_tested() -> None:
    assert set(EXPECTED_ORDER_STATE) == set(jd.ORDER_STATE)


@pytest.mark.parametrize(("state", "expected"), sorted(EXPECTED_ORDER_STATE.items()))
def test_order_state_table(state: str, expected: tuple[str, str, str]) -> None:
    without, with_waybill, overlay = expected
    event = _one(_order(orderState=state, waybill=""))
    assert (event["status"], event["refund_status"], event["raw_status"]) == \
        (without, overlay, state)
    shipped = _one(_order(orderState=state, waybill="JDV000123456789"))
    assert (shipped["status"], shipped["tracking_no"]) == (with_waybill, "JDV000123456789")
    _roundtrip(shipped)


@pytest.mark.parametrize("state", ["WAIT_BUYER_PAY", "finished_l", "", ["LOCKED"], 6])
def test_unknown_states_are_unmapped_never_guessed(state: object) -> None:
    with pytest.raises(MappingError) as info:
        _one(_order(orderState=state))
    assert info.value.reason == ("missing_field" if state == "" else "unmapped_status")


def test_unknown_topic_and_non_json_bodies() -> None:
    with pytest.raises(MappingError) as info:
        jd.normalize(_raw(DOCUMENTED, topic="jingdong.pop.order.get"), CTX)
    assert info.value.reason == "unknown_topic"
    for body in (b"not json", b'"x"', b""):
        with pytest.raises(DecodeError) as decode:
            jd.normalize({**_raw(DOCUMENTED), "body": body}, CTX)
        assert decode.value.reason == "not_json"


# --- the sandbox's rendering of every lifecycle event ------------------------------

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
SIM_CTX = Context(int((T0 + timedelta(days=1)).timestamp() * 1000), KEY)
SECRET = "jd-secret"
PATHS = [
    ("paid", "shipped", "in_transit", "delivered", "completed"),
    ("cancelled",),
    ("paid", "cancelled"),
    ("paid", "shipped", "refund_requested", "refunded"),
    ("paid", "shipped", "in_transit", "delivered", "return_requested", "return_received",
     "refunded"),
    ("paid", "shipped", "in_transit", "delivered", "refund_requested", "refunded"),
]


def _served(order: SimOrder) -> dict[str, Any]:
    """The order as the sandbox answers the connector's ``optional_fields``."""
    doc = sim_jd.render(order, SECRET)
    return {k: v for k, v in doc.items() if k in connector.OPTIONAL_FIELDS}


@pytest.mark.parametrize("number", [1, 2, 7, 10, 20])
@pytest.mark.parametrize("path", PATHS)
def test_every_sandbox_lifecycle_event_normalizes(number: int, path: tuple[str, ...]) -> None:
    rng = random.Random(number)
    order = new_order(number, T0, rng)
    events = []
    for n, event in enumerate(path, start=1):
        apply(order, event, T0 + timedelta(minutes=n), rng)
        if sim_jd.seen(order, event):
            events.append((event, _one(_served(order), SIM_CTX)))
    for _event, normalized in events:
        decoded = _roundtrip(normalized)
        assert decoded["order_id"] == f"jd:{order.id19(sim_jd.ORDER_ID_BASE)}"
        assert decoded["receiver"]["ciphertext"] and decoded["receiver"]["phone_hash"] is None
    paid = int(order.total * 100)
    statuses = [(e, n["status"], n["refund_status"]) for e, n in events]
    if path == PATHS[0]:
        assert statuses == [("paid", "PAID", "NONE"), ("shipped", "SHIPPED", "NONE"),
                            ("completed", "COMPLETED", "NONE")]
        assert events[-1][1]["tracking_no"] == order.tracking_no
    if path == ("cancelled",):
        assert events == []  # JD never lists an unpaid order
    if path == ("paid", "cancelled"):
        assert statuses[-1] == ("cancelled", "CANCELLED", "FULL")
        assert events[-1][1]["refunded_minor"] == paid
    if path[-1] == "refunded":
        requested = [s for s in statuses if s[0].endswith("requested")]
        assert requested and requested[0][1:] == ("SHIPPED", "REQUESTED")
        assert statuses[-1][1:] == (("CANCELLED", "FULL") if len(order.lines) == 1
                                    else ("SHIPPED", "NONE"))


def test_sandbox_pages_fetched_by_the_connector_normalize() -> None:
    config = {"app_key": "k", "app_secret": SECRET, "access_token": "t"}
    sim = sim_jd.JdPollSim(config)
    orders = []
    for n in range(1, 25):
        rng = random.Random(n)
        order = new_order(n, T0, rng)
        for step, event in enumerate(PATHS[n % len(PATHS)], start=1):
            apply(order, event, T0 + timedelta(minutes=step), rng)
            sim.record(order, event, order.updated)
        orders.append(order)
    params = connector.request_params(config, Window(T0, T0 + timedelta(hours=1)), 1, 50,
                                      datetime.now(UTC))
    listed, total = connector.parse_page(orjson.loads(sim._search(orjson.loads(
        params[connector.PARAM_JSON])).body))
    assert total == len(listed) > 0
    ids = {_roundtrip(_one(o, SIM_CTX))["channel_order_id"] for o in listed}
    assert ids == {o.id19(sim_jd.ORDER_ID_BASE) for o in orders if o.is_paid}


# --- mutated real samples ------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["", "0001-01-01 00:00:00", "2024-05-18 11:02:47", "12.30", "-1.00",
                       "1e400", "2900000000000000042", "LOCKED", "TRADE_CANCELED",
                       "1-货到付款", "$AgAAAx$1$", "~AgAAAx~1~", "13812345678"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_ORDER_FIELDS = sorted(set(DOCUMENTED) | set(LOCKED) | {"pin", "taxFee"})
_ITEM_FIELDS = sorted(set(DOCUMENTED["itemInfoList"][0]))
_CONSIGNEE_FIELDS = sorted(set(DOCUMENTED["consigneeInfo"]))


def _normalizes_or_refuses(order: Any) -> None:
    try:
        events = jd.normalize(_raw(order), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("jd:")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([DOCUMENTED, LOCKED]),
       st.dictionaries(st.sampled_from(_ORDER_FIELDS), _json, max_size=6))
def test_mutated_orders_normalize_or_raise_input_errors(base: dict[str, Any],
                                                        mutation: dict[str, Any]) -> None:
    _normalizes_or_refuses({**base, **mutation})


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([DOCUMENTED, LOCKED]),
       st.dictionaries(st.sampled_from(_ITEM_FIELDS), _json, max_size=4),
       st.dictionaries(st.sampled_from(_CONSIGNEE_FIELDS), _json, max_size=4))
def test_mutated_items_and_consignee_normalize_or_raise_input_errors(
        base: dict[str, Any], item: dict[str, Any], consignee: dict[str, Any]) -> None:
    items = [{**base["itemInfoList"][0], **item}, *base["itemInfoList"][1:]]
    _normalizes_or_refuses({**base, "itemInfoList": items,
                            "consigneeInfo": {**base["consigneeInfo"], **consignee}})


@settings(max_examples=200, deadline=None)
@given(_json)
def test_any_json_body_normalizes_or_raises_input_errors(body: Any) -> None:
    _normalizes_or_refuses(body)
