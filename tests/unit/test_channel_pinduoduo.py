import hashlib
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window
from orderpulse.connectors.channels import pinduoduo
from orderpulse.connectors.sandbox import pinduoduo as sim
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from tests.unit.helpers import fixture_bytes

CONFIG = {"client_id": "pdd-client", "client_secret": "pdd-secret",
          "access_token": "mall-token", "shop_id": "mall-9"}
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(minutes=30))
PAGE = fixture_bytes("pinduoduo", "increment_get.json")


def test_signature_is_upper_md5_of_secret_sorted_pairs_secret() -> None:
    params = {"type": "pdd.order.number.list.increment.get", "client_id": "abc",
              "timestamp": "1700619341", "data_type": "JSON", "page": "1",
              "use_has_next": "false"}
    base = ("s3cr3t" + "client_idabc" + "data_typeJSON" + "page1" + "timestamp1700619341"
            + "typepdd.order.number.list.increment.get" + "use_has_nextfalse" + "s3cr3t")
    expected = hashlib.md5(base.encode(), usedforsecurity=False).hexdigest().upper()
    assert pinduoduo.sign("s3cr3t", params) == expected
    # `sign` itself is never part of what is signed.
    assert pinduoduo.sign("s3cr3t", {**params, "sign": expected}) == expected


def test_request_covers_the_window_in_unix_seconds_and_asks_for_every_state() -> None:
    source = pinduoduo.PinduoduoPoll(CONFIG)
    window = Window(T0 + timedelta(microseconds=500_000), T0 + timedelta(minutes=30))
    params = source.params(window, 3, now=1_800_000_000.7)
    assert params["start_updated_at"] == str(int(T0.timestamp()))
    assert params["end_updated_at"] == str(int(T0.timestamp()) + 1800)
    assert (params["timestamp"], params["page"], params["page_size"]) == ("1800000000", "3", "100")
    assert (params["order_status"], params["refund_status"], params["is_lucky_flag"]) == \
        ("5", "5", "0")
    assert (params["type"], params["client_id"], params["access_token"]) == \
        ("pdd.order.number.list.increment.get", "pdd-client", "mall-token")
    assert params["sign"] == pinduoduo.sign("pdd-secret", params)


def test_documented_limits() -> None:
    assert pinduoduo.PinduoduoPoll.max_window_s == 1800
    assert pinduoduo.PinduoduoPoll.page_size == 100
    assert pinduoduo.PinduoduoPoll.settle_s >= 180


def test_page_records_keep_the_order_and_key_by_order_sn() -> None:
    source = pinduoduo.PinduoduoPoll(CONFIG)
    [record] = source.records(source.result(PAGE))
    assert record.key == "231122-482910374651203"
    assert record.source_event_id == "poll:231122-482910374651203:2023-11-22 10:15:41"
    assert (record.source_topic, record.shop_id) == ("pdd.order.number.list.increment.get",
                                                    "mall-9")
    original = orjson.loads(PAGE)["order_sn_increment_get_response"]["order_sn_list"][0]
    assert orjson.loads(record.body) == original
    # Yuan amounts survive the re-serialisation as the same decimal text.
    assert Decimal(str(orjson.loads(record.body)["item_list"][0]["goods_price"])) == \
        Decimal("39")


def test_china_times() -> None:
    assert pinduoduo.china_time(datetime(2023, 11, 22, 2, 15, 41, tzinfo=UTC)) == \
        "2023-11-22 10:15:41"
    parsed = pinduoduo.parse_china_time("2023-11-22 10:15:41")
    assert parsed == datetime(2023, 11, 22, 2, 15, 41, tzinfo=UTC)
    assert pinduoduo.parse_china_time("") is None


@pytest.mark.parametrize(("body", "error"), [
    (fixture_bytes("pinduoduo", "error_throttled.json"), Throttled),
    (b'{"error_response":{"error_code":10019,"error_msg":"access_token expired"}}', AuthFailed),
    (b'{"error_response":{"error_code":20004,"error_msg":"sign error"}}', AuthFailed),
    (b'{"error_response":{"error_code":50000,"error_msg":"busy"}}', PollError),
    (b'{"error_response":{"error_msg":"no code"}}', PollError),
    (b"<html>gateway</html>", PollError),
    (b'{"other_response":{}}', PollError),
    (b'{"order_sn_increment_get_response":{"order_sn_list":{}}}', PollError),
])
def test_error_answers(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        pinduoduo.PinduoduoPoll(CONFIG).result(body)
    assert type(info.value) is error


def test_error_codes_come_from_config() -> None:
    source = pinduoduo.PinduoduoPoll({**CONFIG, "throttle_codes": "52101, 70031",
                                      "auth_codes": "", "throttle_retry_s": "2.5"})
    with pytest.raises(Throttled) as info:
        source.result(b'{"error_response":{"error_code":52101,"error_msg":"limit"}}')
    assert info.value.retry_after_s == 2.5
    with pytest.raises(PollError) as refused:
        source.result(b'{"error_response":{"error_code":10019,"error_msg":"expired"}}')
    assert not isinstance(refused.value, AuthFailed)


def test_pages_round_up() -> None:
    assert [pinduoduo.pages(n, 100) for n in (0, 1, 100, 101, 250)] == [1, 1, 1, 2, 3]


# --- the sandbox ---------------------------------------------------------------------------

def _order(events: list[str], seed: int = 5) -> SimOrder:
    rng = random.Random(seed)
    order = new_order(7, T0, rng)
    for i, event in enumerate(events, start=1):
        apply(order, event, T0 + timedelta(hours=i), rng)
    return order


def test_sandbox_renders_order_info_accepted_by_the_connector() -> None:
    order = _order(["paid"])
    doc = sim.render(order)
    assert doc["order_sn"] == "261111-482910374600007"
    assert doc["updated_at"] == "2026-11-11 11:00:00"  # 03:00 UTC, China time
    assert doc["pay_amount"] == float(order.total)
    assert (doc["order_status"], doc["confirm_status"], doc["refund_status"]) == (1, 1, 1)
    assert doc["receiver_phone"].startswith("$") and order.buyer_phone not in str(doc)
    assert doc["receiver_phone_mask"] == f"{order.buyer_phone[:3]}****{order.buyer_phone[-4:]}"
    body = orjson.dumps({"order_sn_increment_get_response": {"total_count": 1,
                                                             "order_sn_list": [doc]}})
    source = pinduoduo.PinduoduoPoll(CONFIG)
    [record] = source.records(source.result(body))
    assert record.key == doc["order_sn"]
    assert record.source_event_id == f"poll:{doc['order_sn']}:2026-11-11 11:00:00"


def test_sandbox_states() -> None:
    shipped = sim.render(_order(["paid", "shipped"]))
    assert (shipped["order_status"], shipped["receiver_name"], shipped["tracking_number"] != "") \
        == (2, "", True)
    received = sim.render(_order(["paid", "shipped", "in_transit", "delivered", "completed"]))
    assert received["order_status"] == 3 and received["receive_time"]
    returning = sim.render(_order(["paid", "shipped", "in_transit", "delivered",
                                   "return_requested"]))
    assert (returning["refund_status"], returning["after_sales_status"]) == (2, 3)
    refunded = sim.render(_order(["paid", "cancelled"]))
    assert (refunded["confirm_status"], refunded["refund_status"],
            refunded["after_sales_status"]) == (2, 4, 10)
    unpaid = sim.render(_order([]))
    assert (unpaid["confirm_status"], unpaid["pay_time"], unpaid["receiver_name"]) == (0, "", "")


def test_sandbox_checks_the_connector_signature() -> None:
    channel = sim.PinduoduoPollSim(CONFIG)
    params = pinduoduo.PinduoduoPoll(CONFIG).params(WINDOW, 1)
    assert channel.refusal(params) is None
    wrong = pinduoduo.PinduoduoPoll({**CONFIG, "client_secret": "other"}).params(WINDOW, 1)
    assert channel.refusal(wrong) == sim.SIGN_ERROR
    token = pinduoduo.PinduoduoPoll({**CONFIG, "access_token": "old"}).params(WINDOW, 1)
    assert channel.refusal(token) == sim.TOKEN_EXPIRED


def test_sandbox_refuses_windows_over_30_minutes() -> None:
    channel = sim.PinduoduoPollSim(CONFIG)
    params = pinduoduo.PinduoduoPoll(CONFIG).params(
        Window(T0, T0 + timedelta(minutes=31)), 1)
    with pytest.raises(ValueError, match="documented"):
        channel.increment(params)
