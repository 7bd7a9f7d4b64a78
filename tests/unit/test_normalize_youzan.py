"""Youzan normalizer: documented push and poll samples field by field, the channel's
traps, every status table entry, the sandbox's traffic, and mutated samples."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import quote_plus

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import raw_event
from orderpulse.connectors.channels import youzan as connector
from orderpulse.connectors.sandbox import youzan as sim
from orderpulse.connectors.sandbox.lifecycle import EVENTS, Simulator
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import youzan
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

PUSH = fixture_bytes("youzan", "trade_paid_push.json")
MSG = orjson.loads(fixture_bytes("youzan", "trade_paid_msg.json"))
ELEMENT = orjson.loads(fixture_bytes("youzan", "trades_sold_get.json"))[
    "data"]["full_order_info_list"][0]
TID = "E20261111100000094800001"
OID1, OID2 = "2797062761566175276", "2797062761566175277"
NOW = 1_794_409_700_000  # 2026-11-11 15:08:20 UTC
RECEIVED = 1_794_362_411_000
CTX = Context(NOW, b"test-pii-key")
# update_time 2026-11-11 10:00:10 Beijing time = 02:00:10 UTC.
UPDATED_MS = int(datetime(2026, 11, 11, 2, 0, 10, tzinfo=UTC).timestamp()) * 1000


def _raw(body: bytes, topic: str = "trade_TradePaid", mode: str = "WEBHOOK",
         **extra: Any) -> dict[str, Any]:
    return {
        "channel": "youzan", "shop_id": "13027865", "delivery_mode": mode,
        "source_topic": topic, "source_event_id": "7f0c2a4e-1b2d-4c8e-9a51-0e6a7c3d2b10",
        "request_id": "req-1", "received_at": RECEIVED, "headers": {},
        "content_type": "application/json", "body": body, **extra,
    }


def _push(payload: dict[str, Any] | None = None, topic: str = "trade_TradePaid",
          **envelope: Any) -> dict[str, Any]:
    """A push like the fixture, its msg re-encoded the way Youzan does (form encoding)."""
    doc = orjson.loads(PUSH)
    if payload is not None:
        doc["msg"] = quote_plus(orjson.dumps(payload).decode())
    doc.update(type=topic, **envelope)
    return _raw(orjson.dumps(doc), topic)


def _poll(element: dict[str, Any]) -> dict[str, Any]:
    return _raw(orjson.dumps(element), connector.POLL_TOPIC, "POLL",
                source_event_id=f"poll:{TID}:2026-11-11 10:00:10")


def _msg(**info: Any) -> dict[str, Any]:
    """The fixture trade with ``order_info`` fields changed (and other parts via keys)."""
    doc = copy.deepcopy(MSG)
    for key in ("refund_order", "delivery_order"):
        if key in info:
            doc[key] = info.pop(key)
    for key in ("pay_info", "buyer_info", "address_info"):
        if key in info:
            doc["full_order_info"][key].update(info.pop(key))
    doc["full_order_info"]["order_info"].update(info)
    return doc


def _one(raw: dict[str, Any]) -> dict[str, Any]:
    [event] = youzan.normalize(raw, CTX)
    return event


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    order_codec = codec("OrderEvent")
    return order_codec.decode(order_codec.encode(event))


# --- documented samples ---------------------------------------------------------------

def test_documented_paid_push_field_by_field() -> None:
    event = _one(_raw(PUSH))
    assert event["order_id"] == f"youzan:{TID}"
    assert (event["channel"], event["shop_id"], event["channel_order_id"]) == \
        ("youzan", "13027865", TID)
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("PAID", "PAID", "NONE")
    assert event["raw_status"] == "status=TRADE_PAID;refund_state=0"
    assert (event["event_time"], event["source_tz"]) == (UPDATED_MS, "Asia/Shanghai")
    assert (event["received_at"], event["processed_at"]) == (RECEIVED, NOW)
    assert event["currency"] == "CNY"
    # payment 188.00 (shipping 10.00 included), goods 178.00: no discount, no tax field.
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (18800, 18800, 0, 1000, 0, 0)
    assert event["lines"] == [
        {"line_id": OID1, "sku": "TEA-01-250G", "quantity": 2, "unit_price_minor": 5900,
         "components": [], "refund_status": None},
        # outer_sku_id "" and sku_id 0 (no SKU): the item's outer code.
        {"line_id": OID2, "sku": "CUP-01", "quantity": 1, "unit_price_minor": 6000,
         "components": [], "refund_status": None},
    ]
    assert event["refund"] is None
    assert (event["carrier"], event["tracking_no"], event["warehouse"]) == (None, None, None)
    assert event["trace_id"] == "req-1"
    assert event["source_event_id"] == "7f0c2a4e-1b2d-4c8e-9a51-0e6a7c3d2b10"
    assert event["flags"] == []
    assert _roundtrip(event)["channel_order_id"] == TID


def test_polled_trade_is_a_state_snapshot_of_the_same_trade() -> None:
    pushed, polled = _one(_raw(PUSH)), _one(_poll(ELEMENT))
    assert polled["event_type"] == "STATE"
    assert polled["event_id"] != pushed["event_id"]
    same = ("order_id", "status", "refund_status", "event_time", "source_tz", "total_minor",
            "paid_minor", "shipping_minor", "lines", "buyer", "receiver", "buyer_ref")
    assert {k: polled[k] for k in same} == {k: pushed[k] for k in same}


def test_redelivery_gets_the_same_event_id() -> None:
    first = _one(_raw(PUSH))
    again = youzan.normalize(_raw(PUSH, source_event_id="other", request_id="r2"),
                             Context(NOW + 5000, b"test-pii-key"))[0]
    assert first["event_id"] == again["event_id"]
    later = _one(_push(_msg(update_time="2026-11-11 10:05:00")))
    assert later["event_id"] != first["event_id"]


def test_raw_events_read_back_from_avro_normalize() -> None:
    raw_codec = codec("RawEvent")
    for raw in (_raw(PUSH), _poll(ELEMENT)):
        event = _roundtrip(_one(raw_codec.decode(raw_codec.encode(raw))))
        assert event["received_at"] == datetime.fromtimestamp(RECEIVED / 1000, UTC)
        assert event["total_minor"] == 18800


def test_no_clear_pii_in_the_normalized_event() -> None:
    event = _one(_raw(PUSH))
    text = orjson.dumps(event).decode()
    for secret in ("小王", "某路1号", "嘉定区", "wKozXUzB709060524846944256"):
        assert secret not in text
    assert event["buyer"]["name_masked"] == "小*"
    # Youzan masks phones already: the mask is kept, a hash of a mask never made.
    assert event["buyer"]["phone_masked"] == "138****8000"
    assert event["buyer"]["phone_hash"] is None
    receiver = event["receiver"]
    assert receiver["name_masked"] == "王**"
    assert receiver["address_masked"] == "上海市上海市*******"
    assert (receiver["province"], receiver["city"]) == ("上海市", "上海市")
    assert receiver["phone_hash"] is None and receiver["ciphertext"] is None
    assert len(event["buyer_ref"]) == 32


def test_clear_phones_are_masked_and_hashed() -> None:
    event = _one(_push(_msg(buyer_info={"buyer_phone": "13800138000"},
                            address_info={"receiver_tel": "13912345678"})))
    assert event["buyer"]["phone_masked"] == "138****8000"
    assert len(event["buyer"]["phone_hash"]) == 64
    assert event["receiver"]["phone_masked"] == "139****5678"
    text = orjson.dumps(event).decode()
    assert "13800138000" not in text and "13912345678" not in text


def test_channel_ciphertext_passes_through_opaque() -> None:
    cipher = "$138$AbCdEf0123456789==$1$"
    event = _one(_push(_msg(address_info={"receiver_tel": cipher})))
    assert event["receiver"]["ciphertext"] == cipher
    assert event["receiver"]["phone_masked"] is None
    assert event["receiver"]["phone_hash"] is None


# --- traps ----------------------------------------------------------------------------

def test_beijing_time_without_offset_is_utc_plus_8() -> None:
    event = _one(_push(_msg(update_time="2026-11-11 00:30:00")))
    assert event["event_time"] == int(datetime(2026, 11, 10, 16, 30, tzinfo=UTC)
                                      .timestamp()) * 1000
    assert event["source_tz"] == "Asia/Shanghai"


def test_form_encoded_plus_is_a_space() -> None:
    # The fixture's msg writes "2026-11-11+10:00:10": unquote_plus makes it a time.
    assert "+10%3A00%3A10" in orjson.loads(PUSH)["msg"]
    assert _one(_raw(PUSH))["event_time"] == UPDATED_MS


@pytest.mark.parametrize("unset", ["", 0, "0", "1970-01-01 08:00:00", None])
def test_not_set_update_time_falls_back_never_to_epoch(unset: object) -> None:
    pushed = _one(_push(_msg(update_time=unset)))
    # The envelope's version (epoch seconds = the update time).
    assert (pushed["event_time"], pushed["source_tz"]) == (1_794_362_410_000, "UTC")
    element = {**ELEMENT, "full_order_info": _msg(update_time=unset)["full_order_info"]}
    polled = _one(_poll(element))
    # No envelope in a poll: the creation time (10:00:00 Beijing).
    assert polled["event_time"] == UPDATED_MS - 10_000


def test_not_set_pay_time_means_nothing_paid() -> None:
    event = _one(_push(_msg(status="WAIT_BUYER_PAY", pay_time="",
                            order_tags={"is_payed": False}), "trade_TradeCreate"))
    assert (event["event_type"], event["status"]) == ("CREATED", "PENDING_PAYMENT")
    assert (event["total_minor"], event["paid_minor"]) == (18800, 0)


def test_nineteen_digit_oids_stay_exact_even_as_json_numbers() -> None:
    doc = _msg()
    doc["full_order_info"]["orders"][0]["oid"] = int(OID1)  # above 2**53
    event = _one(_push(doc))
    assert event["lines"][0]["line_id"] == OID1
    assert _roundtrip(event)["lines"][0]["line_id"] == OID1


def test_yuan_strings_to_fen_and_derived_discount() -> None:
    event = _one(_push(_msg(pay_info={"payment": "168.01", "total_fee": "178.00",
                                      "post_fee": "10.00"})))
    assert (event["total_minor"], event["discount_minor"], event["shipping_minor"]) == \
        (16801, 1999, 1000)


@pytest.mark.parametrize("payment", ["188.001", 188.0, "abc", "1E+999999", True])
def test_bad_money_is_bad_amount(payment: object) -> None:
    with pytest.raises(MappingError) as info:
        youzan.normalize(_push(_msg(pay_info={"payment": payment})), CTX)
    assert info.value.reason == "bad_amount"


def test_sku_fallbacks() -> None:
    doc = _msg()
    first, second = doc["full_order_info"]["orders"]
    first.update(outer_sku_id="")  # a SKU without its outer code: the SKU id
    second.update(outer_item_id="")  # no SKU, no outer code: the item id
    lines = _one(_push(doc))["lines"]
    assert [line["sku"] for line in lines] == ["sku:37196971", "item:909787852"]


def test_partial_refund_of_one_line() -> None:
    refund = [{"refund_id": "201911111000000001", "refund_fee": "59.00", "refund_state": 2,
               "oids": [OID1]}]
    event = _one(_poll({**ELEMENT, **_msg(refund_state=2, refund_order=refund)}))
    assert (event["status"], event["refund_status"]) == ("PAID", "PARTIAL")
    assert event["raw_status"] == "status=TRADE_PAID;refund_state=2"
    assert event["refunded_minor"] == 5900
    assert event["refund"] == {"kind": "UNKNOWN", "status": "REFUNDED", "amount_minor": 5900,
                               "refund_id": "201911111000000001",
                               "lines": [{"line_id": OID1, "quantity": 2,
                                          "amount_minor": 5900}]}
    assert [line["refund_status"] for line in event["lines"]] == ["2", None]
    assert _roundtrip(event)["refund"]["lines"][0]["line_id"] == OID1


def test_refund_in_progress_is_requested_with_no_money_back() -> None:
    refund = [{"refund_id": "2001", "refund_fee": "188.00", "refund_state": 11,
               "oids": [OID1, OID2]}]
    event = _one(_poll({**ELEMENT, **_msg(refund_state="11", refund_order=refund)}))
    assert (event["refund_status"], event["refunded_minor"]) == ("REQUESTED", 0)
    assert event["refund"]["status"] == "REQUESTED"
    assert event["refund"]["amount_minor"] == 18800
    # Several oids in one refund: each line's paid amount.
    assert event["refund"]["lines"] == [
        {"line_id": OID1, "quantity": 2, "amount_minor": 11800},
        {"line_id": OID2, "quantity": 1, "amount_minor": 6000}]


@pytest.mark.parametrize("closed", ["TRADE_CLOSED", "TRADE_CLOSE"])
def test_full_refund_closes_the_trade(closed: str) -> None:
    event = _one(_push(_msg(status=closed, refund_state=12), "trade_TradeClose"))
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("CANCELLED", "CANCELLED", "FULL")
    assert event["refunded_minor"] == 18800  # no refund_order detail: the whole payment
    assert event["refund"]["status"] == "REFUNDED"


def test_shipment_carries_the_tracking_number() -> None:
    delivery = [{"express_state": 1, "express_type": 0, "oids": [{"oid": OID1}],
                 "dists": [{"express_info": {"express_id": 7, "express_no": "SF1234567890"}}]}]
    event = _one(_push(_msg(status="WAIT_BUYER_CONFIRM_GOODS", delivery_order=delivery,
                            consign_time="2026-11-11 12:00:00"), "trade_TradeSellerShip"))
    assert (event["event_type"], event["status"]) == ("SHIPPED", "SHIPPED")
    assert (event["carrier"], event["tracking_no"]) == ("youzan_express:7", "SF1234567890")


def test_small_success_push_is_a_status_only_event() -> None:
    event = _one(_push({"tid": TID, "update_time": "2026-11-11 20:00:00"},
                       "trade_TradeSuccess", status="TRADE_SUCCESS"))
    assert (event["order_id"], event["event_type"], event["status"]) == \
        (f"youzan:{TID}", "COMPLETED", "COMPLETED")
    assert event["event_time"] == int(datetime(2026, 11, 11, 12, tzinfo=UTC)
                                      .timestamp()) * 1000
    assert event["flags"] == ["STATUS_ONLY"]
    assert (event["total_minor"], event["lines"], event["buyer"]) == (0, [], None)
    assert event["raw_status"] == "status=TRADE_SUCCESS"


def test_status_only_push_without_status_uses_the_push_type() -> None:
    body = orjson.loads(_push({"tid": TID, "update_time": "2026-11-12 09:00:00",
                               "express_id": 3, "express_no": "ZTO123", "oids": OID1},
                              "trade_TradePartlySellerShip")["body"])
    del body["status"]
    event = _one(_raw(orjson.dumps(body), "trade_TradePartlySellerShip"))
    assert (event["event_type"], event["status"]) == ("PARTIALLY_FULFILLED", "SHIPPED")
    assert (event["carrier"], event["tracking_no"]) == ("youzan_express:3", "ZTO123")


def test_console_test_pushes_are_flagged() -> None:
    assert _one(_push(test=True))["flags"] == ["TEST_MESSAGE"]


# --- status tables ----------------------------------------------------------------------

@pytest.mark.parametrize(("word", "status"), sorted(youzan.STATUSES.items()))
def test_every_trade_status_maps(word: str, status: str) -> None:
    event = _one(_push(_msg(status=word)))
    assert event["status"] == status
    assert _roundtrip(event)["status"] == status


@pytest.mark.parametrize(("state", "expected"), sorted(youzan.REFUND_STATES.items()))
def test_every_refund_state_maps(state: int, expected: tuple[str, str | None]) -> None:
    event = _one(_poll({**ELEMENT, **_msg(refund_state=state)}))
    assert event["refund_status"] == expected[0]
    assert (event["refund"] or {}).get("status") == expected[1]
    _roundtrip(event)


@pytest.mark.parametrize(("topic", "event_type"), sorted(youzan.EVENT_TYPES.items()))
def test_every_message_type_maps(topic: str, event_type: str) -> None:
    raw = _poll(ELEMENT) if topic == youzan.POLL_TOPIC else _push(topic=topic)
    assert _one(raw)["event_type"] == event_type


@pytest.mark.parametrize(("topic", "status"), sorted(youzan.TOPIC_STATUSES.items()))
def test_every_push_type_status_maps(topic: str, status: str) -> None:
    body = orjson.loads(_push({"tid": TID, "update_time": "2026-11-12 09:00:00"}, topic)["body"])
    del body["status"]
    assert _one(_raw(orjson.dumps(body), topic))["status"] == status


@pytest.mark.parametrize(("raw", "error", "reason"), [
    (_push(_msg(status="WAIT_GROUP")), MappingError, "unmapped_status"),
    (_push(_msg(status=["TRADE_PAID"])), MappingError, "unmapped_status"),
    (_push(_msg(refund_state=3)), MappingError, "unmapped_status"),
    (_push(_msg(refund_state="partial")), MappingError, "unmapped_status"),
    (_push({"tid": TID, "update_time": "2026-11-12 09:00:00"}, "trade_TradeSuccess",
           status="PAID"), MappingError, "unmapped_status"),
    (_push(topic="trade_TradeMemoModified"), MappingError, "unknown_topic"),
    (_raw(b"not json"), DecodeError, "not_json"),
    (_raw(orjson.dumps({**orjson.loads(PUSH), "msg": "%7Bnope"})), DecodeError, "not_json"),
    (_raw(orjson.dumps({**orjson.loads(PUSH), "msg": {"tid": TID}})), MappingError,
     "bad_shape"),
    (_raw(orjson.dumps({k: v for k, v in orjson.loads(PUSH).items() if k != "msg"})),
     MappingError, "missing_field"),
    (_push(_msg(tid="")), MappingError, "missing_field"),
    (_push(_msg(update_time="2026/11/11 10:00:10")), MappingError, "bad_timestamp"),
    (_poll({"full_order_info": {}}), MappingError, "missing_field"),
    (_poll({**ELEMENT, "refund_order": {"refund_id": 1}}), MappingError, "bad_shape"),
])
def test_bad_input_raises_reasoned_errors(raw: dict[str, Any], error: type,
                                          reason: str) -> None:
    with pytest.raises(error) as info:
        youzan.normalize(raw, CTX)
    assert info.value.reason == reason


def test_bad_oid_is_bad_id_and_error_messages_carry_no_pii() -> None:
    doc = _msg(address_info={"receiver_name": ["王小明"]})
    with pytest.raises(MappingError) as info:
        youzan.normalize(_push(doc), CTX)
    assert info.value.reason == "bad_shape" and "王小明" not in str(info.value)
    doc = _msg()
    doc["full_order_info"]["orders"][0]["oid"] = "27970627615661752x6"
    with pytest.raises(MappingError) as info:
        youzan.normalize(_push(doc), CTX)
    assert info.value.reason == "bad_id"


# --- the sandbox's traffic ---------------------------------------------------------------

T0 = datetime(2026, 11, 11, 12, tzinfo=UTC)
SIM_CONFIG = {"client_id": "sandbox-client", "client_secret": "sandbox-secret",
              "kdt_id": str(sim.KDT_ID)}


def _sandbox() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(lifecycle event, mode, raw event) for the sandbox's pushes and poll answers,
    built the way the connector's records() and fetch() build them."""
    clock = iter(T0 + timedelta(seconds=i) for i in range(10**6))
    webhook, source = sim.YouzanWebhookSim(SIM_CONFIG), connector.YouzanWebhook(SIM_CONFIG)
    for order, event in islice(Simulator(seed=7, clock=lambda: next(clock)), 2500):
        order.carrier = order.carrier or "SF"
        received = int(order.updated.timestamp() * 1000) + 500
        for delivery in webhook.deliveries(order, event, order.updated):
            for record in source.records(delivery.headers, delivery.body):
                yield event, "push", raw_event("youzan", "WEBHOOK", record,
                                               received_at=received, request_id="r")
        # What the poll sim serves for this state, through JSON as over HTTP.
        payload = orjson.loads(orjson.dumps({"data": {"total_results": 1,
                                                      "full_order_info_list": [
                                                          sim.render(order)]}}))
        records, _total = connector.page_records(payload, SIM_CONFIG["kdt_id"])
        for record in records:
            yield event, "poll", raw_event("youzan", "POLL", record, received_at=received,
                                           request_id="r")


# Sandbox lifecycle event -> (status, refund statuses) a poll of that state shows.
SANDBOX_STATES: dict[str, tuple[str, set[str]]] = {
    "created": ("PENDING_PAYMENT", {"NONE"}), "paid": ("PAID", {"NONE"}),
    "shipped": ("SHIPPED", {"NONE"}), "in_transit": ("SHIPPED", {"NONE"}),
    "delivered": ("SHIPPED", {"NONE"}), "completed": ("COMPLETED", {"NONE"}),
    "cancelled": ("CANCELLED", {"NONE", "FULL"}),
    "refund_requested": ("SHIPPED", {"REQUESTED"}),
    "return_requested": ("SHIPPED", {"REQUESTED"}),
    "return_received": ("SHIPPED", {"REQUESTED"}),
    "refunded": ("SHIPPED", {"PARTIAL", "FULL"}),
}


def test_sandbox_pushes_and_polls_normalize_for_every_lifecycle_event() -> None:
    seen: dict[str, set[str]] = {"push": set(), "poll": set()}
    for lifecycle_event, mode, raw in _sandbox():
        event = _roundtrip(_one(raw))
        seen[mode].add(lifecycle_event)
        assert event["order_id"].startswith("youzan:E")
        if mode == "poll":
            status, refunds = SANDBOX_STATES[lifecycle_event]
            assert event["refund_status"] in refunds, lifecycle_event
            if event["refund_status"] != "FULL":  # a full refund closes the trade
                assert event["status"] == status, lifecycle_event
            assert event["lines"] and event["total_minor"] > 0
            if event["refund_status"] in ("PARTIAL", "FULL"):
                assert event["refunded_minor"] > 0 and event["refund"]["lines"]
        elif lifecycle_event == "completed":
            assert event["flags"] == ["STATUS_ONLY"]
    assert seen["poll"] == set(EVENTS)
    assert seen["push"] == {e for e, t in sim.TYPES.items() if t}


# --- mutated real samples -----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from(["", "0", "2026-11-11 10:00:10", "0001-01-01 00:00:00", "12.3",
                       "1E+999999", "TRADE_SUCCESS", OID1, "$cipher$1$"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_INFO = ("order_info", ["tid", "status", "update_time", "created", "pay_time",
                        "refund_state", "order_tags"])
_PATHS: list[tuple[Any, ...]] = [
    *[("full_order_info", "order_info", k) for k in _INFO[1]],
    *[("full_order_info", "pay_info", k) for k in ("payment", "total_fee", "post_fee")],
    *[("full_order_info", "buyer_info", k) for k in ("yz_open_id", "buyer_phone",
                                                     "fans_nickname")],
    *[("full_order_info", "address_info", k) for k in ("receiver_name", "receiver_tel",
                                                       "delivery_province",
                                                       "delivery_address")],
    *[("full_order_info", "orders", 0, k) for k in ("oid", "num", "price", "payment",
                                                    "outer_sku_id", "sku_id", "item_id")],
    ("full_order_info", "orders"), ("full_order_info", "orders", 1),
    ("full_order_info", "order_info"), ("full_order_info", "pay_info"),
    ("full_order_info",), ("refund_order",), ("delivery_order",),
    ("refund_order", 0, "refund_fee"), ("refund_order", 0, "oids"),
    ("refund_order", 0, "refund_state"), ("delivery_order", 0, "dists"),
]
_ENVELOPE = ["msg", "status", "version", "test", "id", "type"]
_REFUNDING = {"refund_order": [{"refund_id": "2001", "refund_fee": "59.00", "refund_state": 2,
                                "oids": [OID1]}],
              "delivery_order": [{"dists": [{"express_info": {"express_id": 7,
                                                              "express_no": "SF1"}}]}]}


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    if isinstance(doc, dict) != isinstance(path[-1], str):
        raise TypeError("the path no longer fits the document")
    doc[path[-1]] = value


def _mutated(mutation: list[tuple[tuple[Any, ...], Any]]) -> dict[str, Any]:
    doc = {**copy.deepcopy(MSG), **copy.deepcopy(_REFUNDING)}
    for path, value in mutation:
        # An earlier mutation may have replaced the container: keep that one.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            _set(doc, path, value)
    return doc


def _normalizes_or_rejects(raw: dict[str, Any]) -> None:
    try:
        events = youzan.normalize(raw, CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("youzan:")


_mutations = st.lists(st.tuples(st.sampled_from(_PATHS), _json), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(_mutations)
def test_mutated_polled_trades_normalize_or_raise_input_errors(
        mutation: list[tuple[tuple[Any, ...], Any]]) -> None:
    _normalizes_or_rejects(_poll(_mutated(mutation)))


@settings(max_examples=300, deadline=None)
@given(_mutations, st.dictionaries(st.sampled_from(_ENVELOPE), _json, max_size=3),
       st.sampled_from(sorted(youzan.EVENT_TYPES)), st.booleans())
def test_mutated_pushes_normalize_or_raise_input_errors(
        mutation: list[tuple[tuple[Any, ...], Any]], envelope: dict[str, Any],
        topic: str, small: bool) -> None:
    payload = {"tid": TID, "update_time": "2026-11-12 09:00:00"} if small \
        else _mutated(mutation)
    raw = _push(payload, topic if topic != youzan.POLL_TOPIC else "trade_TradePaid")
    body = {**orjson.loads(raw["body"]), **envelope}
    _normalizes_or_rejects({**raw, "body": orjson.dumps(body)})
