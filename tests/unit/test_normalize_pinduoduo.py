import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import raw_event
from orderpulse.connectors.channels.pinduoduo import API_TYPE, RESPONSE_KEY, PinduoduoPoll
from orderpulse.connectors.sandbox import pinduoduo as sim
from orderpulse.connectors.sandbox.lifecycle import Simulator, apply, new_order
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import pinduoduo
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

PAGE = orjson.loads(fixture_bytes("pinduoduo", "increment_get.json"))
ORDER = PAGE[RESPONSE_KEY]["order_sn_list"][0]  # waiting to ship, ciphertext receiver
SHIPPED = fixture_bytes("pinduoduo", "normalize_shipped_return.json")  # raw PDD text
NOW = 1_800_000_000_000
CTX = Context(NOW, b"test-pii-key")
CONFIG = {"client_id": "pdd-client", "client_secret": "pdd-secret",
          "access_token": "mall-token", "shop_id": "mall-9"}
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


def _raw(body: bytes, topic: str = API_TYPE, **extra: Any) -> dict[str, Any]:
    return {"channel": "pinduoduo", "shop_id": "mall-9", "delivery_mode": "POLL",
            "source_topic": topic, "source_event_id": "poll:sn:ts", "request_id": "req-7",
            "received_at": 1_700_619_400_000, "headers": {},
            "content_type": "application/json", "body": body, **extra}


def _doc(**changes: Any) -> bytes:
    return orjson.dumps({**ORDER, **changes})


def _one(body: bytes) -> dict[str, Any]:
    [event] = pinduoduo.normalize(_raw(body), CTX)
    return event


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    return codec("OrderEvent").decode(codec("OrderEvent").encode(event))


# --- the documented sample ------------------------------------------------------------------

def test_documented_order_field_by_field() -> None:
    event = _one(orjson.dumps(ORDER))
    assert event["order_id"] == "pinduoduo:231122-482910374651203"
    assert event["channel"] == "pinduoduo" and event["shop_id"] == "mall-9"
    assert event["channel_order_id"] == "231122-482910374651203"
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("STATE", "PAID", "NONE")
    assert event["raw_status"] == \
        "order_status=1;confirm_status=1;refund_status=1;after_sales_status=0"
    # updated_at 2023-11-22 10:15:41 China time = 02:15:41 UTC
    assert event["event_time"] == _ms(2023, 11, 22, 2, 15, 41)
    assert event["source_tz"] == "Asia/Shanghai"
    assert event["currency"] == "CNY"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (10800, 10800, 1000, 0, 0, 0)
    assert event["lines"] == [
        {"line_id": "1100223344556", "sku": "SKU-RED-M", "quantity": 2,
         "unit_price_minor": 3900, "components": [], "refund_status": None},
        {"line_id": "1100223344999", "sku": "SKU-CAP", "quantity": 1,
         "unit_price_minor": 4000, "components": [], "refund_status": None},
    ]
    assert (event["carrier"], event["tracking_no"], event["warehouse"]) == (None, None, None)
    assert event["refund"] is None and event["buyer"] is None and event["buyer_ref"] is None
    assert (event["trace_id"], event["source_event_id"]) == ("req-7", "poll:sn:ts")
    assert (event["received_at"], event["processed_at"], event["flags"]) == \
        (1_700_619_400_000, NOW, [])


def test_receiver_keeps_masks_and_passes_ciphertext_through() -> None:
    receiver = _one(orjson.dumps(ORDER))["receiver"]
    assert receiver == {
        "name_masked": "张*", "phone_masked": "138****5678", "phone_hash": None,
        "address_masked": "文三路****", "province": "浙江省", "city": "杭州市",
        "ciphertext": '{"address":"~AgAAAAF0addr~","name":"~AgAAAAF0name~",'
                      '"phone":"$AgAAAAF0phone$"}',
    }


def test_clear_receiver_fields_are_masked_and_hashed_never_kept() -> None:
    event = _one(_doc(receiver_name="张三丰", receiver_phone="13812345678",
                      receiver_address="浙江省杭州市西湖区文三路100号"))
    receiver = event["receiver"]
    assert (receiver["name_masked"], receiver["phone_masked"]) == ("张**", "138****5678")
    assert receiver["address_masked"] == "浙江省杭州市" + "*" * 10
    assert receiver["phone_hash"] and receiver["ciphertext"] is None
    text = orjson.dumps(event).decode()
    for secret in ("张三丰", "13812345678", "文三路100号"):
        assert secret not in text


def test_the_same_state_polled_twice_gets_the_same_event_id() -> None:
    first = _one(orjson.dumps(ORDER))
    [again] = pinduoduo.normalize(_raw(orjson.dumps(ORDER), request_id="other"),
                                  Context(NOW + 60_000, b"test-pii-key"))
    assert again["event_id"] == first["event_id"]
    assert _one(_doc(updated_at="2023-11-22 10:16:00"))["event_id"] != first["event_id"]


# --- channel traps ----------------------------------------------------------------------------

def test_shipped_return_sample_from_raw_pdd_text() -> None:
    event = _one(SHIPPED)
    assert event["channel_order_id"] == "231123-482910374651999"
    # 00:30:05 on the 24th in China is still the 23rd in UTC.
    assert event["event_time"] == _ms(2023, 11, 23, 16, 30, 5)
    assert (event["status"], event["refund_status"]) == ("SHIPPED", "RETURN_PENDING")
    # yuan numbers 96.90 / 10.10 / 8.00 / 99.00, exactly.
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["refunded_minor"]) == (9690, 9690, 1010, 800, 0)
    assert (event["carrier"], event["tracking_no"], event["warehouse"]) == \
        ("pdd:85", "YT7432109876543", "WH-SZ-01")
    assert event["refund"] == {"kind": "RETURN_AND_REFUND", "status": "REQUESTED",
                               "amount_minor": 0, "refund_id": None, "lines": []}
    # 19-digit sku_id kept exactly, no outer_id: the sku falls back to it.
    assert event["lines"] == [{
        "line_id": "9100223344556677889", "sku": "sku:9100223344556677889", "quantity": 1,
        "unit_price_minor": 9900, "refund_status": None,
        "components": [{"sku": "MUG-LOGO", "quantity": 1}, {"sku": "SOCKS-3PK", "quantity": 2}],
    }]
    # Ciphertext is gone once shipped: the masks remain, nothing to pass through.
    assert event["receiver"] == {
        "name_masked": "王*", "phone_masked": "186****0123", "phone_hash": None,
        "address_masked": "科技园路****", "province": "广东省", "city": "深圳市",
        "ciphertext": None}


def test_shipped_sample_through_the_connector_is_the_same_event() -> None:
    body = b'{"%s":{"total_count":1,"order_sn_list":[%s]}}' % (RESPONSE_KEY.encode(), SHIPPED)
    source = PinduoduoPoll(CONFIG)
    [record] = source.records(source.result(body))
    raw = raw_event("pinduoduo", "POLL", record, received_at=1, request_id="r")
    [event] = pinduoduo.normalize(raw, CTX)
    direct = _one(SHIPPED)
    assert {k: v for k, v in event.items() if k not in ("received_at", "trace_id",
                                                       "source_event_id")} == \
        {k: v for k, v in direct.items() if k not in ("received_at", "trace_id",
                                                     "source_event_id")}
    assert event["source_event_id"] == "poll:231123-482910374651999:2023-11-24 00:30:05"


@pytest.mark.parametrize(("text", "fen"), [
    ("19.99", 1999),  # 19.99 * 100 is 1998.9999999999998 in floats
    ("0.3", 30), ("1.10", 110), ("118.00", 11800), ("7", 700), ("1E+2", 10000),
    ("12345678901234.56", 1234567890123456),
])
def test_yuan_json_numbers_are_exact(text: str, fen: int) -> None:
    body = orjson.dumps(ORDER).replace(b'"pay_amount":108.0', b'"pay_amount":' + text.encode())
    assert _one(body)["total_minor"] == fen


def test_no_float_reaches_the_money_code(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    original = pinduoduo.to_minor

    def spy(amount: Any, currency: str, *, field: str) -> int:
        seen.append(amount)
        return original(amount, currency, field=field)

    monkeypatch.setattr(pinduoduo, "to_minor", spy)
    _one(SHIPPED)
    assert seen and all(isinstance(v, Decimal | int) for v in seen)


def test_not_set_dates_are_none_never_epoch() -> None:
    unpaid = _one(_doc(confirm_status=0, pay_time="", confirm_time=""))
    assert (unpaid["status"], unpaid["paid_minor"]) == ("PENDING_PAYMENT", 0)
    assert _one(_doc(confirm_status=0, pay_time="0001-01-01 00:00:00"))["status"] == \
        "PENDING_PAYMENT"
    for not_set in ("", "0001-01-01 00:00:00", "0000-00-00 00:00:00", None):
        with pytest.raises(MappingError) as info:
            _one(_doc(updated_at=not_set))
        assert info.value.reason == "missing_field"


def test_group_forming_order_is_paid() -> None:
    # 未成交 with a pay_time: PDD charged the buyer, the group has not formed yet.
    event = _one(_doc(confirm_status=0, group_status=0))
    assert (event["status"], event["paid_minor"]) == ("PAID", 10800)


def test_received_and_confirmed_orders() -> None:
    signed = _one(_doc(order_status=3, shipping_time="2023-11-23 09:00:00", receive_time=""))
    assert signed["status"] == "DELIVERED"
    done = _one(_doc(order_status=3, receive_time="2023-11-30 09:00:00"))
    assert done["status"] == "COMPLETED"


def test_cancelled_after_payment_is_a_full_refund() -> None:
    event = _one(_doc(confirm_status=2, refund_status=4, after_sales_status=10))
    assert (event["status"], event["refund_status"], event["refunded_minor"]) == \
        ("CANCELLED", "FULL", 10800)
    assert event["refund"] == {"kind": "UNKNOWN", "status": "REFUNDED", "amount_minor": 10800,
                               "refund_id": None, "lines": []}


def test_refund_of_a_standing_order_is_partial_with_unknown_amount() -> None:
    event = _one(_doc(order_status=3, refund_status=4, after_sales_status=10))
    assert (event["status"], event["refund_status"], event["refunded_minor"]) == \
        ("DELIVERED", "PARTIAL", 0)
    assert event["refund"]["status"] == "REFUNDED" and event["refund"]["amount_minor"] == 0


def test_refund_status_alone_still_gives_a_refund_record() -> None:
    event = _one(_doc(refund_status=3, after_sales_status=0))
    assert event["refund_status"] == "REQUESTED"
    assert event["refund"]["status"] == "REQUESTED" and event["refund"]["kind"] == "UNKNOWN"


def test_exchange_after_sale_is_not_a_refund() -> None:
    # refund_status 2 is "after-sale in progress": for an exchange no money is asked.
    event = _one(_doc(order_status=3, refund_status=2, after_sales_status=14))
    assert (event["refund_status"], event["refund"]) == ("NONE", None)


def test_money_back_shows_whatever_the_after_sale_says() -> None:
    event = _one(_doc(order_status=3, refund_status=4, after_sales_status=16))
    assert event["refund_status"] == "PARTIAL" and event["refund"]["status"] == "REFUNDED"


def test_combo_components_only_for_a_single_line_order() -> None:
    depot = orjson.loads(SHIPPED)["order_depot_info"]
    event = _one(_doc(order_depot_info=depot))  # two lines: whose combo would it be?
    assert all(ln["components"] == [] for ln in event["lines"])
    assert event["warehouse"] == "WH-SZ-01"


# --- status tables -----------------------------------------------------------------------------

LIFECYCLE = {"PENDING_PAYMENT", "PAID", "APPROVED", "PACKING", "SHIPPED", "IN_TRANSIT",
             "DELIVERED", "COMPLETED", "CANCELLED"}
OVERLAYS = {"NONE", "REQUESTED", "RETURN_PENDING", "PARTIAL", "FULL", "REJECTED"}


@pytest.mark.parametrize("code", sorted(pinduoduo.ORDER_STATUS))
def test_every_order_status_maps(code: int) -> None:
    event = _roundtrip(_one(_doc(order_status=code)))
    assert event["status"] == pinduoduo.ORDER_STATUS[code]


@pytest.mark.parametrize(("code", "status"), [(0, "PAID"), (1, "PAID"), (2, "CANCELLED")])
def test_every_confirm_status_maps(code: int, status: str) -> None:
    assert _one(_doc(confirm_status=code))["status"] == status
    assert set(pinduoduo.CONFIRM_STATUS) == {0, 1, 2}


@pytest.mark.parametrize(("code", "overlay"), [(1, "NONE"), (2, "REQUESTED"), (3, "REQUESTED"),
                                               (4, "PARTIAL")])
def test_every_refund_status_maps(code: int, overlay: str) -> None:
    assert _one(_doc(refund_status=code))["refund_status"] == overlay
    assert set(pinduoduo.REFUND_STATUS) == {1, 2, 3, 4}


@pytest.mark.parametrize("code", sorted(pinduoduo.AFTER_SALES_STATUS))
def test_every_after_sales_status_maps(code: int) -> None:
    event = _roundtrip(_one(_doc(refund_status=2, after_sales_status=code)))
    overlay, kind, state = pinduoduo.AFTER_SALES_STATUS[code]
    assert event["status"] in LIFECYCLE and event["refund_status"] in OVERLAYS
    if overlay is None:
        assert event["refund_status"] == "REQUESTED"  # refund_status 2 decides
    else:
        assert event["refund_status"] == {"REFUNDED": "PARTIAL"}.get(overlay, overlay)
        refund = event["refund"] and (event["refund"]["kind"], event["refund"]["status"])
        assert refund == (None if state is None else (kind, state))


@pytest.mark.parametrize("changes", [
    {"order_status": 4}, {"order_status": 5}, {"confirm_status": 3}, {"refund_status": 0},
    {"refund_status": 5}, {"after_sales_status": 1}, {"after_sales_status": 99},
    {"order_status": True}, {"order_status": 1.0}, {"order_status": "1.0"},
    {"order_status": None}, {"confirm_status": "²"},
])
def test_unknown_status_is_unmapped_never_guessed(changes: dict[str, Any]) -> None:
    with pytest.raises(MappingError) as info:
        _one(_doc(**changes))
    assert info.value.reason == "unmapped_status"


def test_digit_string_codes_are_read_as_numbers() -> None:
    assert _one(_doc(order_status="2"))["status"] == "SHIPPED"


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "error", "reason"), [
    (b"not json", DecodeError, "not_json"),
    (b"[1, 2]", DecodeError, "not_json"),
    (b'{"order_sn": NaN}', DecodeError, "not_json"),
    (_doc(order_sn=None), MappingError, "missing_field"),
    (_doc(order_sn=2311224829103746512), MappingError, "bad_id"),
    (_doc(pay_amount=None), MappingError, "missing_field"),
    (_doc(pay_amount="abc"), MappingError, "bad_amount"),
    (_doc(pay_amount="1.005"), MappingError, "bad_amount"),
    (_doc(pay_amount=-1), MappingError, "bad_amount"),
    (_doc(pay_amount="1e30"), MappingError, "bad_amount"),
    (_doc(updated_at="2023-11-22T10:15:41+08:00"), MappingError, "bad_timestamp"),
    (_doc(updated_at=1700619341), MappingError, "bad_timestamp"),
    (_doc(item_list={}), MappingError, "bad_shape"),
    (_doc(item_list=[{"goods_count": -1, "goods_price": 1, "outer_id": "A"}]), MappingError,
     "bad_line"),
    (_doc(item_list=[{"goods_count": 1, "goods_price": 1, "outer_id": ""}]), MappingError,
     "missing_field"),
    (_doc(item_list=[{"goods_count": 1, "goods_price": 1, "sku_id": 1.5}]), MappingError,
     "bad_id"),
    (_doc(receiver_name_mask={"a": 1}), MappingError, "bad_shape"),
    (_doc(order_depot_info=[]), MappingError, "bad_shape"),
])
def test_bad_input_raises_reasoned_errors(body: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        _one(body)
    assert info.value.reason == reason


def test_unknown_topic() -> None:
    with pytest.raises(MappingError) as info:
        pinduoduo.normalize(_raw(orjson.dumps(ORDER), topic="pdd.refund.list.increment.get"),
                            CTX)
    assert info.value.reason == "unknown_topic"


def test_errors_never_carry_pii() -> None:
    with pytest.raises(MappingError) as info:
        _one(_doc(receiver_name_mask=["张三丰"]))
    assert "张三丰" not in str(info.value)


def test_no_buyer_ref_without_a_buyer_id() -> None:
    # OrderInfo has no buyer id, and nothing else may stand in for one.
    event = _one(_doc(buyer_id=12345))
    assert event["buyer_ref"] is None and event["buyer"] is None


# --- the sandbox ---------------------------------------------------------------------------------

PATHS = [
    ["paid", "shipped", "in_transit", "delivered", "completed"],
    ["cancelled"],
    ["paid", "cancelled"],
    ["paid", "shipped", "refund_requested", "refunded"],
    ["paid", "shipped", "in_transit", "delivered", "refund_requested", "refunded"],
    ["paid", "shipped", "in_transit", "delivered", "return_requested", "return_received",
     "refunded"],
]
EXPECTED = {  # lifecycle event -> (status, refund overlay) the PDD rendering supports
    "created": ("PENDING_PAYMENT", "NONE"), "paid": ("PAID", "NONE"),
    "shipped": ("SHIPPED", "NONE"), "in_transit": ("SHIPPED", "NONE"),
    "delivered": ("DELIVERED", "NONE"), "completed": ("COMPLETED", "NONE"),
}


def _normalized_state(doc: dict[str, Any]) -> dict[str, Any]:
    body = orjson.dumps({RESPONSE_KEY: {"total_count": 1, "order_sn_list": [doc]}})
    source = PinduoduoPoll(CONFIG)
    [record] = source.records(source.result(body))
    raw = raw_event("pinduoduo", "POLL", record, received_at=NOW, request_id="req")
    [event] = pinduoduo.normalize(raw, CTX)
    assert _roundtrip(event)["order_id"] == event["order_id"]
    return event


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(p))
def test_sandbox_states_normalize_for_every_lifecycle_event(path: list[str]) -> None:
    rng = random.Random(11)
    order = new_order(7, T0, rng)
    steps = [("created", _normalized_state(sim.render(order)))]
    for i, step in enumerate(path, start=1):
        apply(order, step, T0 + timedelta(hours=i), rng)
        steps.append((step, _normalized_state(sim.render(order))))
    for step, event in steps:
        assert event["order_id"] == f"pinduoduo:{sim.order_sn(order)}"
        assert event["event_type"] == "STATE" and event["source_tz"] == "Asia/Shanghai"
        assert event["total_minor"] == int(order.total * 100)
        if step in EXPECTED:
            assert (event["status"], event["refund_status"]) == EXPECTED[step]
        text = orjson.dumps(event).decode()
        for secret in (order.buyer_name, order.buyer_phone, order.address):
            assert secret not in text
    last = steps[-1][1]
    if path[-1] == "cancelled":
        assert last["status"] == "CANCELLED"
        assert last["refund_status"] == ("FULL" if "paid" in path else "NONE")
    if path[-1] == "refunded":
        assert last["refund_status"] == "PARTIAL" and last["refund"]["status"] == "REFUNDED"
    if "return_requested" in path:
        assert steps[path.index("return_requested") + 1][1]["refund_status"] == "RETURN_PENDING"
    if "shipped" in path:
        shipped = steps[path.index("shipped") + 1][1]
        assert shipped["tracking_no"] == order.tracking_no and shipped["carrier"]


def test_sandbox_simulation_normalizes_without_error() -> None:
    simulator = Simulator(seed=5, concurrent=20, clock=lambda: T0)
    for _ in range(400):
        order, _event = simulator.step()
        _normalized_state(sim.render(order))


def test_sandbox_bundle_lines_are_kept() -> None:
    rng = random.Random(0)
    order = next(o for o in (new_order(n, T0, rng) for n in range(1, 200))
                 if any(ln.components for ln in o.lines))
    event = _normalized_state(sim.render(order))
    assert "GIFT-SET-1" in [ln["sku"] for ln in event["lines"]]
    assert sum(ln["quantity"] * ln["unit_price_minor"] for ln in event["lines"]) == \
        int(order.subtotal * 100)


# --- property: mutated real samples ---------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64)
    | st.text(max_size=20)
    | st.sampled_from(["", "0001-01-01 00:00:00", "2023-11-22 10:15:41", "~AgA~", "$x$", "1"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_FIELDS = ["order_sn", "order_status", "confirm_status", "refund_status", "after_sales_status",
           "updated_at", "pay_time", "receive_time", "pay_amount", "discount_amount", "postage",
           "item_list", "receiver_name", "receiver_phone", "receiver_phone_mask",
           "receiver_name_mask", "receiver_address_mask", "address", "province",
           "tracking_number", "logistics_id", "order_depot_info"]
_ITEM_FIELDS = ["sku_id", "outer_id", "goods_count", "goods_price"]


def _dumps(doc: Any) -> bytes:
    # json.dumps writes Decimals as PDD would (numbers), via a float-free default.
    return json.dumps(doc, default=str, ensure_ascii=False).encode()


def _check(body: bytes) -> None:
    try:
        events = pinduoduo.normalize(_raw(body), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"] == event["order_id"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6),
       st.sampled_from([ORDER, orjson.loads(SHIPPED)]))
def test_mutated_orders_normalize_or_raise_input_errors(mutation: dict[str, Any],
                                                        base: dict[str, Any]) -> None:
    _check(_dumps({**base, **mutation}))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_ITEM_FIELDS), _json, max_size=3))
def test_mutated_lines_normalize_or_raise_input_errors(mutation: dict[str, Any]) -> None:
    items = [{**ORDER["item_list"][0], **mutation}]
    _check(_dumps({**ORDER, "item_list": items}))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_input_errors_only(data: bytes) -> None:
    _check(data)
