import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window
from orderpulse.connectors.channels import taobao
from orderpulse.connectors.sandbox import taobao as sim_taobao
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from tests.unit.helpers import fixture_bytes

SECRET = "helloworld"
CONFIG = {"app_key": "12345678", "app_secret": SECRET, "session": "sess-1", "shop_id": "tb-shop"}
PARAMS = {"method": "taobao.trades.sold.increment.get", "app_key": "12345678",
          "session": "sess-1", "timestamp": "2026-11-11 10:00:00", "v": "2.0",
          "format": "json", "sign_method": "md5", "page_no": "1"}
# PARAMS sorted by key and concatenated as key+value, written out by hand.
JOINED = ("app_key12345678formatjsonmethodtaobao.trades.sold.increment.getpage_no1"
          "sessionsess-1sign_methodmd5timestamp2026-11-11 10:00:00v2.0")
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # 10:00 in China


def test_md5_signature_known_answer() -> None:
    digest = hashlib.md5((SECRET + JOINED + SECRET).encode(), usedforsecurity=False)
    expected = digest.hexdigest().upper()
    assert taobao.sign(PARAMS, SECRET) == expected
    assert taobao.signature_ok({**PARAMS, "sign": expected}, SECRET)


def test_hmac_signature_known_answer() -> None:
    params = {**PARAMS, "sign_method": "hmac"}
    joined = JOINED.replace("sign_methodmd5", "sign_methodhmac")
    expected = hmac.new(SECRET.encode(), joined.encode(), hashlib.md5).hexdigest().upper()
    assert taobao.sign(params, SECRET, "hmac") == expected
    assert taobao.signature_ok({**params, "sign": expected}, SECRET)


def test_sign_leaves_out_sign_and_empty_values() -> None:
    assert taobao.sign({**PARAMS, "sign": "X", "buyer_nick": ""}, SECRET) == \
        taobao.sign(PARAMS, SECRET)


@pytest.mark.parametrize(("params", "secret"), [
    ({**PARAMS, "sign": taobao.sign(PARAMS, "other")}, SECRET),
    ({**PARAMS, "page_no": "2", "sign": taobao.sign(PARAMS, SECRET)}, SECRET),
    ({**PARAMS, "sign": taobao.sign(PARAMS, SECRET).lower()}, SECRET),
    ({**PARAMS, "sign_method": "sha1", "sign": "A" * 32}, SECRET),
    ({**PARAMS, "sign": taobao.sign(PARAMS, "")}, ""),
    (PARAMS, SECRET),
])
def test_bad_signatures_are_refused(params: dict[str, str], secret: str) -> None:
    assert not taobao.signature_ok(params, secret)


def test_request_params_use_china_time_and_every_trade_type() -> None:
    window = Window(T0, T0 + timedelta(minutes=30, microseconds=5))
    params = taobao.request_params(CONFIG, window, 3, 40, T0 + timedelta(hours=1))
    assert params["start_modified"] == "2026-11-11 10:00:00"
    assert params["end_modified"] == "2026-11-11 10:30:01"  # widened, never narrowed
    assert params["timestamp"] == "2026-11-11 11:00:00"
    assert (params["page_no"], params["page_size"], params["session"]) == ("3", "40", "sess-1")
    assert "fixed" in params["type"].split(",")
    assert "orders" in params["fields"].split(",")
    assert taobao.signature_ok(params, SECRET)


def _fixture() -> dict:
    return orjson.loads(fixture_bytes("taobao", "trades_sold_increment_get.json"))


def test_documented_page_becomes_records_keyed_by_tid_str() -> None:
    doc = _fixture()
    trades, total = taobao.parse_page(doc)
    assert total == 1
    record = taobao.record_of(trades[0], "tb-shop")
    assert record.key == "3891234567890123456"
    assert record.source_topic == "taobao.trades.sold.increment.get"
    assert record.source_event_id == "poll:3891234567890123456:2024-05-18 11:02:47"
    assert record.shop_id == "tb-shop"
    assert orjson.loads(record.body) == doc["trades_sold_increment_get_response"]["trades"][
        "trade"][0]
    assert b'"tid":3891234567890123456' in record.body  # 19 digits kept exactly


@pytest.mark.parametrize(("trade", "key"), [
    ({"tid": 3891234567890123999, "modified": "m"}, "3891234567890123999"),
    ({"tid_str": "", "tid": 42}, "42"),
    ({"tid": 1.5}, None),
    ({"tid": True}, None),
    (["not", "a", "trade"], None),
])
def test_record_key_never_goes_through_float(trade: object, key: str | None) -> None:
    record = taobao.record_of(trade, "")
    if key is None:
        assert len(record.key) == 32 and record.source_event_id == f"poll:{record.key}:"
    else:
        assert record.key == key


def test_empty_window_has_no_trades_object() -> None:
    assert taobao.parse_page({taobao.RESPONSE_KEY: {"total_results": 0}}) == ([], 0)
    simplified = {taobao.RESPONSE_KEY: {"total_results": 1, "trades": [{"tid": 1}]}}
    assert taobao.parse_page(simplified) == ([{"tid": 1}], 1)


def _err(code: object, sub_code: str = "", sub_msg: str = "") -> dict:
    return {"error_response": {"code": code, "msg": "m", "sub_code": sub_code,
                               "sub_msg": sub_msg}}


@pytest.mark.parametrize(("doc", "error", "retry_after"), [
    (_err(7, "accesscontrol.limited-by-app-access-count", "This ban will last for 1 more "
                                                          "seconds"), Throttled, 2.0),
    (_err(7, "accesscontrol.limited-by-api-access-count"), Throttled, 1.0),
    (_err(15, "accesscontrol.limited-by-app-api-access-count", "ban will last 30 seconds"),
     Throttled, 31.0),
    (_err(25), AuthFailed, None),
    (_err(27, "invalid-sessionkey"), AuthFailed, None),
    (_err("29"), AuthFailed, None),
    (_err(15, "isp.top-remote-connection-timeout"), PollError, None),
    ({"unexpected": {}}, PollError, None),
    ([], PollError, None),
    ({taobao.RESPONSE_KEY: {"trades": {"trade": "x"}}}, PollError, None),
])
def test_error_answers_map_to_poll_errors(doc: object, error: type, retry_after: float | None,
                                          ) -> None:
    with pytest.raises(PollError) as info:
        taobao.parse_page(doc)
    assert type(info.value) is error
    if retry_after is not None:
        assert info.value.retry_after_s == retry_after


# --- the sandbox renders what the connector reads -----------------------------------

def _order(number: int, events: tuple[str, ...], seed: int = 3) -> SimOrder:
    rng = random.Random(seed)
    order = new_order(number, T0, rng)
    for n, event in enumerate(events, start=1):
        apply(order, event, T0 + timedelta(minutes=n), rng)
    return order


@pytest.mark.parametrize(("number", "events", "status"), [
    (1, (), "WAIT_BUYER_PAY"),
    (1, ("paid",), "WAIT_SELLER_SEND_GOODS"),
    (1, ("paid", "shipped", "in_transit", "delivered"), "WAIT_BUYER_CONFIRM_GOODS"),
    (1, ("paid", "shipped", "in_transit", "delivered", "completed"), "TRADE_FINISHED"),
    (1, ("cancelled",), "TRADE_CLOSED_BY_TAOBAO"),
    (1, ("paid", "cancelled"), "TRADE_CLOSED"),
    (10, (), "WAIT_SELLER_SEND_GOODS"),
    (10, ("paid", "shipped", "in_transit", "delivered"), "TRADE_BUYER_SIGNED"),
])
def test_lifecycle_maps_to_taobao_statuses(number: int, events: tuple[str, ...],
                                           status: str) -> None:
    trade = sim_taobao.render(_order(number, events))
    assert trade["status"] == status
    assert trade["type"] == ("cod" if number == 10 else "fixed")


def test_refunds_show_on_the_line() -> None:
    order = _order(1, ("paid", "shipped", "in_transit", "delivered", "return_requested"))
    lines = sim_taobao.render(order)["orders"]["order"]
    assert [ln["refund_status"] for ln in lines if ln["refund_status"] != "NO_REFUND"] == \
        ["WAIT_SELLER_AGREE"]
    apply(order, "return_received", T0 + timedelta(hours=1), random.Random(1))
    apply(order, "refunded", T0 + timedelta(hours=2), random.Random(1))
    lines = sim_taobao.render(order)["orders"]["order"]
    refunded = [ln for ln in lines if ln["refund_status"] == "SUCCESS"]
    assert len(refunded) == 1 and refunded[0]["status"] == "TRADE_CLOSED"


def test_render_is_masked_in_china_time_with_exact_money() -> None:
    order = _order(4, ("paid",))
    trade = sim_taobao.render(order)
    assert trade["created"] == "2026-11-11 10:00:00"
    assert trade["modified"] == "2026-11-11 10:01:00"
    assert "consign_time" not in trade and "end_time" not in trade
    text = orjson.dumps(trade).decode()
    assert order.buyer_name not in text and order.buyer_phone not in text
    assert order.address not in text
    assert trade["receiver_mobile"] == "*******" + order.buyer_phone[-4:]
    assert trade["payment"] == f"{order.total:.2f}"
    assert len(trade["tid_str"]) == 19 and trade["tid"] == int(trade["tid_str"])
    lines = trade["orders"]["order"]
    assert sum(float(ln["divide_order_fee"]) for ln in lines) == pytest.approx(
        float(order.subtotal - order.discount))


def test_silent_events_do_not_touch_modified() -> None:
    sim = sim_taobao.TaobaoPollSim(CONFIG)
    order = _order(2, ("paid", "shipped"))
    sim.record(order, "shipped", order.updated)
    before = sim.store.docs[order.id19(sim_taobao.TID_BASE)]
    apply(order, "in_transit", T0 + timedelta(hours=1), random.Random(1))
    sim.record(order, "in_transit", order.updated)
    assert sim.store.docs[order.id19(sim_taobao.TID_BASE)] == before
    cod = _order(10, ())
    assert not sim_taobao.seen(cod, "paid") and sim_taobao.seen(cod, "delivered")
    assert not sim_taobao.seen(order, "delivered")


def test_sim_pages_are_read_by_the_connector() -> None:
    sim = sim_taobao.TaobaoPollSim(CONFIG)
    orders = [_order(n, ("paid",), seed=n) for n in range(1, 12)]
    for order in orders:
        sim.record(order, "created", order.updated)  # COD trades: "paid" changes nothing
    params = taobao.request_params(CONFIG, Window(T0, T0 + timedelta(hours=1)), 1, 100,
                                   datetime.now(UTC))
    assert sim._refusal(params) is None
    trades, total = taobao.parse_page(orjson.loads(sim._search(params).body))
    assert total == 11
    assert sorted(taobao.record_of(t, "").key for t in trades) == sorted(
        o.id19(sim_taobao.TID_BASE) for o in orders)
    assert {t["type"] for t in trades} == {"fixed", "cod"}
    # The API's default type set leaves ``fixed`` trades out.
    without_type = {k: v for k, v in params.items() if k != "type"}
    default, _ = taobao.parse_page(orjson.loads(sim._search(without_type).body))
    assert [t["type"] for t in default] == ["cod"]


@pytest.mark.parametrize(("change", "code"), [
    ({"sign": "0" * 32}, 25),
    ({"app_key": "87654321"}, 29),
    ({"session": "someone-else"}, 27),
    ({"timestamp": "2020-01-01 00:00:00"}, 31),
    ({"method": "taobao.trade.get"}, 22),
])
def test_sim_refuses_forged_calls_like_top(change: dict[str, str], code: int) -> None:
    sim = sim_taobao.TaobaoPollSim(CONFIG)
    params = taobao.request_params(CONFIG, Window(T0, T0 + timedelta(hours=1)), 1, 100,
                                   datetime.now(UTC))
    forged = {**params, **change}
    if "sign" not in change:  # signed correctly, so the other check is what refuses
        forged["sign"] = taobao.sign(forged, SECRET)
    refused = sim._refusal(forged)
    assert refused is not None
    assert orjson.loads(refused.body)["error_response"]["code"] == code
