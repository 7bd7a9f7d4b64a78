import hashlib
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window
from orderpulse.connectors.channels import jd
from orderpulse.connectors.sandbox import jd as sim_jd
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from tests.unit.helpers import fixture_bytes

SECRET = "jd-secret"
CONFIG = {"app_key": "ABCDEF", "app_secret": SECRET, "access_token": "tok-1", "shop_id": "777"}
PARAM_JSON = '{"order_state":"WAIT_SELLER_STOCK_OUT","page":"1"}'
PARAMS = {"method": "jingdong.pop.order.search", "app_key": "ABCDEF", "access_token": "tok-1",
          "timestamp": "2026-11-11 10:00:00", "v": "2.0", "360buy_param_json": PARAM_JSON}
# PARAMS sorted by key ("360buy..." sorts first) and concatenated, written out by hand.
JOINED = ("360buy_param_json" + PARAM_JSON + "access_tokentok-1app_keyABCDEF"
          "methodjingdong.pop.order.searchtimestamp2026-11-11 10:00:00v2.0")
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in Beijing


def test_signature_known_answer() -> None:
    digest = hashlib.md5((SECRET + JOINED + SECRET).encode(), usedforsecurity=False)
    expected = digest.hexdigest().upper()
    assert jd.sign(PARAMS, SECRET) == expected
    assert jd.sign({**PARAMS, "sign": "X"}, SECRET) == expected
    assert jd.signature_ok({**PARAMS, "sign": expected}, SECRET)


@pytest.mark.parametrize(("params", "secret"), [
    ({**PARAMS, "sign": jd.sign(PARAMS, "other")}, SECRET),
    ({**PARAMS, "360buy_param_json": PARAM_JSON.replace(":", ": "),
      "sign": jd.sign(PARAMS, SECRET)}, SECRET),  # the JSON is signed byte for byte
    ({**PARAMS, "sign": jd.sign(PARAMS, SECRET).lower()}, SECRET),
    ({**PARAMS, "sign": jd.sign(PARAMS, "")}, ""),
    (PARAMS, SECRET),
])
def test_bad_signatures_are_refused(params: dict[str, str], secret: str) -> None:
    assert not jd.signature_ok(params, secret)


def test_request_params_use_beijing_time_and_sorted_param_json() -> None:
    window = Window(T0, T0 + timedelta(hours=1, microseconds=1))
    params = jd.request_params(CONFIG, window, 2, 50, T0 + timedelta(hours=2))
    assert params["timestamp"] == "2026-11-11 12:00:00"
    business = params["360buy_param_json"]
    assert '", "' not in business and '": "' not in business  # compact, as signed
    decoded = orjson.loads(business)
    assert list(decoded) == sorted(decoded)
    assert (decoded["start_date"], decoded["end_date"]) == ("2026-11-11 10:00:00",
                                                            "2026-11-11 11:00:01")
    assert (decoded["page"], decoded["page_size"], decoded["dateType"]) == ("2", "50", "0")
    assert set(decoded["order_state"].split(",")) >= {"WAIT_SELLER_STOCK_OUT", "LOCKED",
                                                      "FINISHED_L", "TRADE_CANCELED"}
    assert "consigneeInfo" in decoded["optional_fields"].split(",")
    assert jd.signature_ok(params, SECRET)


def _fixture() -> dict:
    return orjson.loads(fixture_bytes("jd", "pop_order_search.json"))


def test_documented_page_becomes_records_keyed_by_order_id() -> None:
    doc = _fixture()
    orders, total = jd.parse_page(doc)
    assert total == 1
    record = jd.record_of(orders[0], "777")
    assert record.key == "301234567890"
    assert record.source_topic == "jingdong.pop.order.search"
    assert record.source_event_id == "poll:301234567890:2024-05-18 11:02:47"
    assert record.shop_id == "777"
    assert orjson.loads(record.body) == doc[jd.RESPONSE_KEY][jd.RESULT_KEY]["orderInfoList"][0]


@pytest.mark.parametrize(("order", "key"), [
    ({"orderId": 2900000000000000123}, "2900000000000000123"),
    ({"orderId": "2900000000000000123"}, "2900000000000000123"),
    ({"orderId": 3.0e18}, None),
    ({"orderId": ""}, None),
    ("garbage", None),
])
def test_record_key_never_goes_through_float(order: object, key: str | None) -> None:
    record = jd.record_of(order, "")
    assert record.key == (key or jd.content_id(record.body))


def _gateway_err(code: str) -> dict:
    return {"error_response": {"code": code, "zh_desc": "z", "en_desc": "e"}}


def _business_err() -> dict:
    return {jd.RESPONSE_KEY: {"code": "0", jd.RESULT_KEY: {
        "apiResult": {"success": False, "englishErrCode": "bad", "chineseErrCode": "坏",
                      "numberCode": 10100}, "orderTotal": 0, "orderInfoList": []}}}


@pytest.mark.parametrize(("doc", "error"), [
    (_gateway_err("2"), Throttled),
    (_gateway_err("12"), AuthFailed),
    (_gateway_err("19"), AuthFailed),
    (_gateway_err("8"), PollError),
    (_business_err(), PollError),
    ({"jingdong_pop_order_search_response": {}}, PollError),  # correctly spelled: not JD's
    ({jd.RESPONSE_KEY: {jd.RESULT_KEY: {"apiResult": {"success": True},
                                        "orderInfoList": {"a": 1}}}}, PollError),
    ({jd.RESPONSE_KEY: {"code": "1", jd.RESULT_KEY: {"apiResult": {"success": True}}}},
     PollError),
    (None, PollError),
])
def test_error_answers_map_to_poll_errors(doc: object, error: type) -> None:
    with pytest.raises(PollError) as info:
        jd.parse_page(doc)
    assert type(info.value) is error


def test_order_total_may_be_a_string() -> None:
    doc = {jd.RESPONSE_KEY: {jd.RESULT_KEY: {"apiResult": {"success": True},
                                             "orderTotal": "3"}}}
    assert jd.parse_page(doc) == ([], 3)


# --- the sandbox renders what the connector reads -----------------------------------

def _order(number: int, events: tuple[str, ...], seed: int = 3) -> SimOrder:
    rng = random.Random(seed)
    order = new_order(number, T0, rng)
    for n, event in enumerate(events, start=1):
        apply(order, event, T0 + timedelta(minutes=n), rng)
    return order


@pytest.mark.parametrize(("events", "state"), [
    (("paid",), "WAIT_SELLER_STOCK_OUT"),
    (("paid", "shipped", "in_transit", "delivered"), "WAIT_GOODS_RECEIVE_CONFIRM"),
    (("paid", "shipped", "in_transit", "delivered", "completed"), "FINISHED_L"),
    (("paid", "cancelled"), "TRADE_CANCELED"),
    (("paid", "shipped", "refund_requested"), "LOCKED"),
    (("paid", "shipped", "in_transit", "delivered", "return_requested", "return_received"),
     "LOCKED"),
])
def test_lifecycle_maps_to_jd_order_states(events: tuple[str, ...], state: str) -> None:
    order = sim_jd.render(_order(1, events), SECRET)
    assert order["orderState"] == state
    assert order["orderStateRemark"]


def test_unpaid_orders_are_never_listed() -> None:
    sim = sim_jd.JdPollSim(CONFIG)
    order = _order(5, ())
    sim.record(order, "created", order.updated)
    apply(order, "cancelled", T0 + timedelta(minutes=9), random.Random(1))
    sim.record(order, "cancelled", order.updated)
    assert sim.store.docs == {}


def test_render_encrypts_consignee_and_uses_strings() -> None:
    order = _order(6, ("paid", "shipped"))
    doc = sim_jd.render(order, SECRET)
    text = orjson.dumps(doc).decode()
    assert order.buyer_name not in text and order.buyer_phone not in text
    assert order.address not in text
    info = doc["consigneeInfo"]
    assert info["fullname"].startswith("~") and info["fullname"].endswith("~1~")
    assert info["mobile"].startswith("$") and info["mobile"].endswith("$1$")
    assert doc["orderPayment"] == f"{order.total:.2f}"
    assert doc["waybill"] == order.tracking_no
    assert doc["orderStartTime"] == "2026-11-11 10:00:00" and doc["orderEndTime"] == ""
    assert len(doc["orderId"]) == 19
    for item in doc["itemInfoList"]:
        assert all(isinstance(v, str) for v in item.values())


def test_sim_pages_are_read_by_the_connector() -> None:
    sim = sim_jd.JdPollSim(CONFIG)
    orders = [_order(n, ("paid",), seed=n) for n in range(1, 8)]
    for order in orders:
        sim.record(order, "paid", order.updated)
    params = jd.request_params(CONFIG, Window(T0, T0 + timedelta(hours=1)), 1, 50,
                               datetime.now(UTC))
    assert sim._refusal(params) is None
    orders_page, total = jd.parse_page(orjson.loads(sim._search(orjson.loads(
        params["360buy_param_json"])).body))
    assert total == 7
    assert sorted(jd.record_of(o, "").key for o in orders_page) == sorted(
        o.id19(sim_jd.ORDER_ID_BASE) for o in orders)
    only_locked = {**orjson.loads(params["360buy_param_json"]), "order_state": "LOCKED"}
    assert jd.parse_page(orjson.loads(sim._search(only_locked).body)) == ([], 0)


@pytest.mark.parametrize(("change", "code"), [
    ({"sign": "0" * 32}, "12"),
    ({"app_key": "OTHER"}, "12"),
    ({"access_token": "stolen"}, "19"),
    ({"timestamp": "2020-01-01 00:00:00"}, "8"),
    ({"method": "jingdong.pop.order.get"}, "15"),
])
def test_sim_refuses_forged_calls_like_jos(change: dict[str, str], code: str) -> None:
    sim = sim_jd.JdPollSim(CONFIG)
    params = jd.request_params(CONFIG, Window(T0, T0 + timedelta(hours=1)), 1, 50,
                               datetime.now(UTC))
    forged = {**params, **change}
    if "sign" not in change:  # signed correctly, so the other check is what refuses
        forged["sign"] = jd.sign(forged, SECRET)
    refused = sim._refusal(forged)
    assert refused is not None
    assert orjson.loads(refused.body)["error_response"]["code"] == code


@pytest.mark.parametrize("change", [
    {"page_size": "51"}, {"order_state": ""}, {"optional_fields": ""},
    {"end_date": "2026-12-31 00:00:00"}, {"dateType": "1"},
])
def test_sim_business_errors_reach_the_connector_as_poll_errors(change: dict[str, str]) -> None:
    sim = sim_jd.JdPollSim(CONFIG)
    business = {**orjson.loads(jd.param_json(CONFIG, Window(T0, T0 + timedelta(hours=1)), 1,
                                             50)), **change}
    with pytest.raises(PollError):
        jd.parse_page(orjson.loads(sim._search(business).body))
