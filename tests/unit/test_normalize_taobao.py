"""Taobao trades to OrderEvent: documented samples field by field, the channel's
traps, every status table entry, the sandbox's rendering of every lifecycle event,
and mutated samples (hypothesis)."""

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
from orderpulse.connectors.channels import taobao as connector
from orderpulse.connectors.sandbox import taobao as sim_taobao
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import taobao
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

KEY = b"test-pii-key"
NOW = int(datetime(2024, 6, 2, tzinfo=UTC).timestamp() * 1000)
CTX = Context(NOW, KEY)
RECEIVED = NOW - 1000
PAGE = orjson.loads(fixture_bytes("taobao", "trades_sold_increment_get.json"))
DOCUMENTED = PAGE["trades_sold_increment_get_response"]["trades"]["trade"][0]
FINISHED = orjson.loads(fixture_bytes("taobao", "normalize_finished_partial_refund.json"))


def _raw(trade: Any, *, topic: str = connector.METHOD, received_at: int = RECEIVED,
         request_id: str = "poll-1") -> dict[str, Any]:
    """The RawEvent dict the poller publishes for one trade (received_at in ms)."""
    record = connector.record_of(trade, "tb-shop")
    raw = raw_event(connector.CHANNEL, "POLL", record, received_at=received_at,
                    request_id=request_id)
    return {**raw, "source_topic": topic}


def _one(trade: Any, ctx: Context = CTX) -> dict[str, Any]:
    [event] = taobao.normalize(_raw(trade), ctx)
    return event


def _trade(base: dict[str, Any] = DOCUMENTED, **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def _with_lines(base: dict[str, Any], *changes: dict[str, Any]) -> dict[str, Any]:
    lines = [{**ln, **change} for ln, change in
             zip(base["orders"]["order"], changes, strict=False)]
    return {**base, "orders": {"order": lines + base["orders"]["order"][len(lines):]}}


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    order_codec = codec("OrderEvent")
    return order_codec.decode(order_codec.encode(event))


# --- documented samples, field by field --------------------------------------------

def test_documented_trade_field_by_field() -> None:
    trades, _ = connector.parse_page(PAGE)
    event = _one(trades[0])
    assert event["order_id"] == "taobao:3891234567890123456"
    assert event["channel"] == "taobao" and event["shop_id"] == "tb-shop"
    assert event["channel_order_id"] == "3891234567890123456"  # 19 digits, exact
    assert event["event_type"] == "STATE"
    assert (event["status"], event["refund_status"]) == ("PAID", "REQUESTED")
    assert event["raw_status"] == "WAIT_SELLER_SEND_GOODS"
    # modified 2024-05-18 11:02:47 in China (GMT+8) -> 03:02:47Z
    assert event["event_time"] == _ms(2024, 5, 18, 3, 2, 47)
    assert event["source_tz"] == "Asia/Shanghai"
    assert (event["received_at"], event["processed_at"]) == (RECEIVED, NOW)
    assert event["currency"] == "CNY"
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (19700, 19700, 1000, 800, 0, 0)
    assert event["lines"] == [
        {"line_id": "3891234567890123457", "sku": "SKU-1001-BLK-M", "quantity": 1,
         "unit_price_minor": 12800, "components": [], "refund_status": "NO_REFUND"},
        {"line_id": "3891234567890123458", "sku": "SKU-2002-WHT", "quantity": 2,
         "unit_price_minor": 3550, "components": [], "refund_status": "WAIT_SELLER_AGREE"},
    ]
    # The second line's refund request: the trade carries no refund amount, so the
    # line's paid amount (Order.payment) stands for it.
    assert event["refund"] == {
        "kind": "UNKNOWN", "status": "REQUESTED", "amount_minor": 7100, "refund_id": None,
        "lines": [{"line_id": "3891234567890123458", "quantity": 2, "amount_minor": 7100}]}
    assert event["buyer_ref"] == hmac.new(KEY, b"taobao\x00AAHk5d-EAAeGwJedwSFu0XXX",
                                          hashlib.sha256).hexdigest()[:32]
    assert (event["carrier"], event["tracking_no"], event["warehouse"]) == (None, None, None)
    assert event["trace_id"] == "poll-1"
    assert event["source_event_id"] == "poll:3891234567890123456:2024-05-18 11:02:47"
    assert event["flags"] == []
    assert _roundtrip(event)["refund"]["lines"][0]["amount_minor"] == 7100


def test_documented_trade_receiver_keeps_taobao_masks_and_oaid() -> None:
    event = _one(DOCUMENTED)
    assert event["receiver"] == {
        "name_masked": "张**",
        "phone_masked": "*******5678",  # Taobao's own mask, passed on
        "phone_hash": None,  # four digits would collide: never hashed
        "address_masked": "浙江省杭州市" + "*" * 12,
        "province": "浙江省", "city": "杭州市",
        "ciphertext": "1aB3cD4eF5gH6iJ7kL8mN9oP0qR",  # oaid, for taobao.top.oaid.decrypt
    }
    assert event["buyer"]["name_masked"] == "t***"
    assert "文***路**号" not in orjson.dumps(event).decode()


def test_finished_trade_with_one_line_refunded_field_by_field() -> None:
    event = _one(FINISHED)
    assert event["channel_order_id"] == "3891234567890123999"
    assert (event["status"], event["refund_status"]) == ("COMPLETED", "PARTIAL")
    # 2024-06-01 00:30:00 China is still May 31 in UTC.
    assert event["event_time"] == _ms(2024, 5, 31, 16, 30)
    assert (event["total_minor"], event["paid_minor"], event["refunded_minor"]) == \
        (19700, 19700, 7100)
    assert [ln["sku"] for ln in event["lines"]] == ["SKU-1001-BLK-M", "sku:5012345678902"]
    assert [ln["refund_status"] for ln in event["lines"]] == ["NO_REFUND", "SUCCESS"]
    assert event["refund"] == {
        "kind": "UNKNOWN", "status": "REFUNDED", "amount_minor": 7100,
        "refund_id": "3912345678901234567",  # a 19-digit JSON number, kept exact
        "lines": [{"line_id": "3891234567890124001", "quantity": 2, "amount_minor": 7100}]}
    assert (event["carrier"], event["tracking_no"]) == ("顺丰速运", "SF1234567890123")
    _roundtrip(event)


def test_clear_receiver_fields_are_masked_and_hashed_never_kept() -> None:
    event = _one(FINISHED)
    receiver = event["receiver"]
    assert receiver["name_masked"] == "张**"
    assert receiver["phone_masked"] == "138****5678"
    assert receiver["phone_hash"] == hmac.new(KEY, b"13812345678", hashlib.sha256).hexdigest()
    assert receiver["address_masked"] == "浙江省杭州市" + "*" * 12
    assert receiver["ciphertext"] == "1aB3cD4eF5gH6iJ7kL8mN9oP0qS"
    assert event["buyer"]["name_masked"] == "t*******"
    text = orjson.dumps(event).decode()
    for clear in ("张三丰", "13812345678", "文一西路", "969", "tb_alice", "西湖区",
                  "AAHk5d-EAAeGwJedwSFu0YYY"):
        assert clear not in text
    assert "13812345678" not in orjson.dumps(_roundtrip(event), default=str).decode()



def test_through_the_raw_event_codec_received_at_is_a_datetime() -> None:
    """In the pipeline the RawEvent comes out of Avro: received_at is a datetime."""
    raw_codec = codec("RawEvent")
    raw = raw_codec.decode(raw_codec.encode(_raw(DOCUMENTED)))
    assert isinstance(raw["received_at"], datetime)
    [event] = taobao.normalize(raw, CTX)
    decoded = _roundtrip(event)
    assert decoded["order_id"] == "taobao:3891234567890123456"
    assert decoded["received_at"] == datetime.fromtimestamp(RECEIVED / 1000, UTC)

# --- channel traps -------------------------------------------------------------------

def test_ids_never_go_through_a_float() -> None:
    without_str = {k: v for k, v in DOCUMENTED.items() if k != "tid_str"}
    assert orjson.dumps(without_str).count(b"3891234567890123456") == 1
    assert _one(without_str)["channel_order_id"] == "3891234567890123456"
    assert _one(_trade(tid=1))["channel_order_id"] == "3891234567890123456"  # tid_str wins
    lines = _one(DOCUMENTED)["lines"]
    assert [ln["line_id"] for ln in lines] == ["3891234567890123457", "3891234567890123458"]


@pytest.mark.parametrize("trade", [
    {k: v for k, v in _trade(tid=3.891234567890123e18).items() if k != "tid_str"},
    _trade(tid_str="3.8912345678901235e18"),
    _trade(tid_str="\uff13\uff18\uff19"),  # full-width digits
    _with_lines(DOCUMENTED, {"oid": 3.9e18}),
])
def test_ids_that_are_not_exact_digits_are_bad_ids(trade: dict[str, Any]) -> None:
    with pytest.raises(MappingError) as info:
        _one(trade)
    assert info.value.reason == "bad_id"


def test_china_time_is_converted_to_utc_across_the_date_line() -> None:
    event = _one(_trade(modified="2024-01-01 07:59:59"))
    assert event["event_time"] == _ms(2023, 12, 31, 23, 59, 59)
    assert event["source_tz"] == "Asia/Shanghai"


@pytest.mark.parametrize("pay_time", ["", "0001-01-01 00:00:00", "0000-00-00 00:00:00", None])
def test_not_set_pay_time_is_not_a_payment(pay_time: str | None) -> None:
    unpaid = _trade(status="WAIT_BUYER_PAY", pay_time=pay_time)
    assert _one(unpaid)["paid_minor"] == 0
    cod = _trade(type="cod", pay_time=pay_time)
    event = _one(cod)
    assert (event["status"], event["paid_minor"], event["raw_status"]) == \
        ("APPROVED", 0, "WAIT_SELLER_SEND_GOODS;type=cod")


def test_cash_on_delivery_is_paid_once_signed_for() -> None:
    signed = _one(_trade(type="cod", status="TRADE_BUYER_SIGNED",
                         pay_time="2024-05-20 15:00:00"))
    assert (signed["status"], signed["paid_minor"]) == ("DELIVERED", 19700)
    assert _one(_trade(type="cod", status="TRADE_FINISHED", pay_time=""))["paid_minor"] == 19700


@pytest.mark.parametrize("modified", ["0001-01-01 00:00:00", "2024-05-18T11:02:47+08:00",
                                      "0001-01-01 00:00:01", 1716001367, "18/05/2024 11:02"])
def test_event_time_must_be_a_real_china_time(modified: object) -> None:
    with pytest.raises(MappingError) as info:
        _one(_trade(modified=modified))
    assert info.value.reason == "bad_timestamp"


def test_missing_status_modified_or_payment_is_a_missing_field() -> None:
    for field in ("modified", "payment", "status"):
        trade = {k: v for k, v in DOCUMENTED.items() if k != field}
        with pytest.raises(MappingError) as info:
            _one(trade)
        assert info.value.reason == "missing_field"


@pytest.mark.parametrize(("payment", "minor"), [("200.07", 20007), ("0.07", 7), ("1", 100),
                                                ("0.00", 0), (12, 1200)])
def test_yuan_strings_become_fen_exactly(payment: object, minor: int) -> None:
    assert _one(_trade(payment=payment))["total_minor"] == minor


@pytest.mark.parametrize("payment", [197.0, "1.234", "-5.00", "1e3", "NaN", "sNaN", True,
                                     "12,30", "99999999999999.00", [1]])
def test_amounts_that_are_not_exact_yuan_are_refused(payment: object) -> None:
    with pytest.raises(MappingError) as info:
        _one(_trade(payment=payment))
    assert info.value.reason == "bad_amount"


def test_tax_is_the_lines_sub_order_tax_fee() -> None:
    trade = _with_lines(DOCUMENTED, {"sub_order_tax_fee": "11.80"}, {"sub_order_tax_fee": "0.71"})
    assert _one(trade)["tax_minor"] == 1251


def test_refund_of_every_line_is_full() -> None:
    trade = _with_lines(FINISHED, {"refund_status": "SUCCESS", "refund_id": "39"},
                        {"refund_id": "39"})
    event = _one(trade)
    assert (event["refund_status"], event["refunded_minor"]) == ("FULL", 18900)
    assert event["refund"]["refund_id"] == "39"
    assert event["refund"]["amount_minor"] == 18900


def test_trade_closed_after_payment_is_a_full_refund_of_the_payment() -> None:
    closed = _with_lines(DOCUMENTED, {"refund_status": "SUCCESS", "refund_id": "41"},
                         {"refund_status": "SUCCESS", "refund_id": "42"})
    event = _one(_trade(closed, status="TRADE_CLOSED"))
    assert (event["status"], event["refund_status"]) == ("CANCELLED", "FULL")
    assert (event["paid_minor"], event["refunded_minor"]) == (19700, 19700)  # postage too
    assert event["refund"]["status"] == "REFUNDED"
    assert event["refund"]["refund_id"] is None  # two refunds: no single id
    assert [ln["line_id"] for ln in event["refund"]["lines"]] == [
        "3891234567890123457", "3891234567890123458"]


def test_a_pending_request_leads_over_money_already_returned() -> None:
    trade = _with_lines(FINISHED, {"refund_status": "WAIT_BUYER_RETURN_GOODS"})
    event = _one(trade)
    assert event["refund_status"] == "RETURN_PENDING"
    assert event["refunded_minor"] == 7100  # the other line's money is back all the same
    assert event["refund"]["status"] == "APPROVED"
    assert event["refund"]["kind"] == "RETURN_AND_REFUND"
    assert [ln["line_id"] for ln in event["refund"]["lines"]] == ["3891234567890124000"]


def test_bundles_have_no_components_on_taobao() -> None:
    order = _sim_order(7, ("paid",), bundle=True)
    event = _one(_served(order))
    assert "GIFT-SET-1" in [ln["sku"] for ln in event["lines"]]
    assert all(ln["components"] == [] for ln in event["lines"])


def test_simplified_json_lines_are_read_too() -> None:
    simplified = _trade(orders=DOCUMENTED["orders"]["order"])
    assert _one(simplified)["lines"] == _one(DOCUMENTED)["lines"]


def test_redelivery_gets_the_same_event_id_and_a_change_a_new_one() -> None:
    first = _one(DOCUMENTED)
    [again] = taobao.normalize(_raw(DOCUMENTED, received_at=RECEIVED + 9, request_id="p2"),
                               Context(NOW + 5000, KEY))
    assert again["event_id"] == first["event_id"]
    assert _one(_trade(modified="2024-05-18 11:02:48"))["event_id"] != first["event_id"]


def test_future_event_time_is_flagged() -> None:
    assert _one(_trade(modified="2024-06-03 08:00:00"))["flags"] == ["FUTURE_EVENT_TIME"]


# --- status tables -------------------------------------------------------------------

EXPECTED_TRADE_STATUS = {
    "TRADE_NO_CREATE_PAY": ("PENDING_PAYMENT", "NONE", 0),
    "WAIT_BUYER_PAY": ("PENDING_PAYMENT", "NONE", 0),
    "PAY_PENDING": ("PENDING_PAYMENT", "NONE", 0),
    "WAIT_PRE_AUTH_CONFIRM": ("PENDING_PAYMENT", "NONE", 0),
    "WAIT_SELLER_SEND_GOODS": ("PAID", "NONE", 19700),
    "PAID_FORBID_CONSIGN": ("PAID", "NONE", 19700),
    "SELLER_CONSIGNED_PART": ("SHIPPED", "NONE", 19700),
    "WAIT_BUYER_CONFIRM_GOODS": ("SHIPPED", "NONE", 19700),
    "TRADE_BUYER_SIGNED": ("DELIVERED", "NONE", 19700),
    "TRADE_FINISHED": ("COMPLETED", "NONE", 19700),
    "TRADE_CLOSED": ("CANCELLED", "FULL", 19700),
    "TRADE_CLOSED_BY_TAOBAO": ("CANCELLED", "NONE", 0),
}


def test_every_trade_status_is_tested() -> None:
    assert set(EXPECTED_TRADE_STATUS) == set(taobao.TRADE_STATUS)
    assert set(EXPECTED_LINE_REFUND) == set(taobao.LINE_REFUND_STATUS)


@pytest.mark.parametrize(("raw_status", "expected"), sorted(EXPECTED_TRADE_STATUS.items()))
def test_trade_status_table(raw_status: str, expected: tuple[str, str, int]) -> None:
    no_refunds = _with_lines(DOCUMENTED, {}, {"refund_status": "NO_REFUND"})
    trade = {k: v for k, v in _trade(no_refunds, status=raw_status).items() if k != "pay_time"}
    event = _one(trade)
    assert (event["status"], event["refund_status"], event["paid_minor"]) == expected
    assert event["raw_status"] == raw_status
    _roundtrip(event)


EXPECTED_LINE_REFUND = {
    "NO_REFUND": ("NONE", None, None),
    "WAIT_SELLER_AGREE": ("REQUESTED", "REQUESTED", "UNKNOWN"),
    "WAIT_BUYER_RETURN_GOODS": ("RETURN_PENDING", "APPROVED", "RETURN_AND_REFUND"),
    "WAIT_SELLER_CONFIRM_GOODS": ("RETURN_PENDING", "RETURN_RECEIVED", "RETURN_AND_REFUND"),
    "SUCCESS": ("PARTIAL", "REFUNDED", "UNKNOWN"),
    "SELLER_REFUSE_BUYER": ("REJECTED", "REJECTED", "UNKNOWN"),
    "CLOSED": ("NONE", "CLOSED", "UNKNOWN"),
}


@pytest.mark.parametrize(("refund_status", "expected"), sorted(EXPECTED_LINE_REFUND.items()))
def test_line_refund_status_table(refund_status: str,
                                  expected: tuple[str, str | None, str | None]) -> None:
    trade = _with_lines(DOCUMENTED, {}, {"refund_status": refund_status, "refund_id": 77})
    event = _one(trade)
    overlay, record_status, kind = expected
    assert event["refund_status"] == overlay
    assert event["lines"][1]["refund_status"] == refund_status
    if record_status is None:
        assert event["refund"] is None
    else:
        assert (event["refund"]["status"], event["refund"]["kind"],
                event["refund"]["refund_id"]) == (record_status, kind, "77")
    assert event["refunded_minor"] == (7100 if refund_status == "SUCCESS" else 0)
    _roundtrip(event)


@pytest.mark.parametrize("trade", [
    _trade(status="TRADE_LOST_IN_SPACE"),
    _trade(status="wait_buyer_pay"),
    _trade(status=["WAIT_BUYER_PAY"]),
    _with_lines(DOCUMENTED, {"refund_status": "REFUND_MAYBE"}),
])
def test_unknown_statuses_are_unmapped_never_guessed(trade: dict[str, Any]) -> None:
    with pytest.raises(MappingError) as info:
        _one(trade)
    assert info.value.reason == "unmapped_status"


def test_unknown_topic_and_non_json_bodies() -> None:
    with pytest.raises(MappingError) as info:
        taobao.normalize(_raw(DOCUMENTED, topic="taobao.trade.get"), CTX)
    assert info.value.reason == "unknown_topic"
    for body in (b"not json", b"[1]", b""):
        with pytest.raises(DecodeError) as decode:
            taobao.normalize({**_raw(DOCUMENTED), "body": body}, CTX)
        assert decode.value.reason == "not_json"


# --- the sandbox's rendering of every lifecycle event ------------------------------

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)
SIM_CTX = Context(int((T0 + timedelta(days=1)).timestamp() * 1000), KEY)
PATHS = [
    ("paid", "shipped", "in_transit", "delivered", "completed"),
    ("cancelled",),
    ("paid", "cancelled"),
    ("paid", "shipped", "refund_requested", "refunded"),
    ("paid", "shipped", "in_transit", "delivered", "return_requested", "return_received",
     "refunded"),
    ("paid", "shipped", "in_transit", "delivered", "refund_requested", "refunded"),
]


def _sim_order(number: int, events: tuple[str, ...], *, seed: int = 3,
               bundle: bool = False) -> SimOrder:
    rng = random.Random(seed)
    order = new_order(number, T0, rng)
    while bundle and "GIFT-SET-1" not in [ln.sku for ln in order.lines]:
        order = new_order(number, T0, rng)
    for n, event in enumerate(events, start=1):
        apply(order, event, T0 + timedelta(minutes=n), rng)
    return order


def _served(order: SimOrder) -> dict[str, Any]:
    """The trade as the sandbox answers the connector's ``fields`` list."""
    return sim_taobao.select(sim_taobao.render(order), set(connector.FIELDS))


@pytest.mark.parametrize("number", [1, 2, 7, 10, 20])
@pytest.mark.parametrize("path", PATHS)
def test_every_sandbox_lifecycle_event_normalizes(number: int, path: tuple[str, ...]) -> None:
    rng = random.Random(number)
    order = new_order(number, T0, rng)
    seen = {"created"}
    events = [_one(_served(order), SIM_CTX)]
    for n, event in enumerate(path, start=1):
        apply(order, event, T0 + timedelta(minutes=n), rng)
        seen.add(event)
        if sim_taobao.seen(order, event):
            events.append(_one(_served(order), SIM_CTX))
    for event in events:
        decoded = _roundtrip(event)
        assert decoded["order_id"] == f"taobao:{order.id19(sim_taobao.TID_BASE)}"
        assert decoded["source_tz"] == "Asia/Shanghai"
    last = events[-1]
    paid = int(order.total * 100)
    if path[-1] == "completed":
        assert (last["status"], last["paid_minor"]) == ("COMPLETED", paid)
    if path == ("cancelled",):
        assert (last["status"], last["refund_status"], last["paid_minor"]) == \
            ("CANCELLED", "NONE", 0)
    if path == ("paid", "cancelled") and not sim_taobao.is_cod(order):
        assert (last["status"], last["refund_status"], last["refunded_minor"]) == \
            ("CANCELLED", "FULL", paid)
    if path[-1] == "refunded":
        assert last["refund_status"] == ("FULL" if len(order.lines) == 1 else "PARTIAL")
        assert last["refund"]["status"] == "REFUNDED"
        # Cash on delivery not yet signed for: nothing was paid, so nothing went back.
        assert last["refunded_minor"] > 0 or last["paid_minor"] == 0


def test_sandbox_statuses_per_event_in_order() -> None:
    def statuses(number: int, path: tuple[str, ...]) -> list[tuple[str, str, int]]:
        rng = random.Random(5)
        order = new_order(number, T0, rng)
        out = []
        for n, event in enumerate(("created", *path)):
            if n:
                apply(order, event, T0 + timedelta(minutes=n), rng)
            e = _one(_served(order), SIM_CTX)
            out.append((e["status"], e["refund_status"], e["paid_minor"] > 0))
        return out

    online = statuses(1, ("paid", "shipped", "in_transit", "delivered", "return_requested",
                          "return_received"))
    assert [s[:2] for s in online] == [
        ("PENDING_PAYMENT", "NONE"), ("PAID", "NONE"), ("SHIPPED", "NONE"),
        ("SHIPPED", "NONE"), ("SHIPPED", "NONE"), ("SHIPPED", "REQUESTED"),
        ("SHIPPED", "RETURN_PENDING")]
    assert [s[2] for s in online] == [False] + [True] * 6
    cod = statuses(10, ("paid", "shipped", "in_transit", "delivered", "completed"))
    assert cod == [("APPROVED", "NONE", False), ("APPROVED", "NONE", False),
                   ("SHIPPED", "NONE", False), ("SHIPPED", "NONE", False),
                   ("DELIVERED", "NONE", True), ("COMPLETED", "NONE", True)]


def test_sandbox_pages_fetched_by_the_connector_normalize() -> None:
    sim = sim_taobao.TaobaoPollSim({"app_key": "k", "app_secret": "s", "session": "x"})
    orders = [_sim_order(n, PATHS[n % len(PATHS)], seed=n) for n in range(1, 25)]
    for order in orders:
        sim.record(order, "created", order.updated)
    params = connector.request_params(sim.config, Window(T0, T0 + timedelta(hours=1)), 1, 100,
                                      datetime.now(UTC))
    trades, total = connector.parse_page(orjson.loads(sim._search(params).body))
    assert total == len(trades) == len(orders)
    ids = set()
    for trade in trades:
        [event] = taobao.normalize(_raw(trade), SIM_CTX)
        ids.add(_roundtrip(event)["channel_order_id"])
    assert ids == {o.id19(sim_taobao.TID_BASE) for o in orders}


# --- mutated real samples ------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["", "0001-01-01 00:00:00", "2024-05-18 11:02:47", "12.30", "-1.00",
                       "1e400", "3891234567890123456", "SUCCESS", "TRADE_CLOSED", "cod",
                       "*******5678", "~AgAAAx~1~"])
    | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=20,
)
_TRADE_FIELDS = sorted(set(DOCUMENTED) | set(FINISHED) | {"pay_time", "orders"})
_LINE_FIELDS = sorted(set(FINISHED["orders"]["order"][1]) | {"sub_order_tax_fee"})


def _normalizes_or_refuses(trade: Any) -> None:
    try:
        events = taobao.normalize(_raw(trade), CTX)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("taobao:")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([DOCUMENTED, FINISHED]),
       st.dictionaries(st.sampled_from(_TRADE_FIELDS), _json, max_size=6))
def test_mutated_trades_normalize_or_raise_input_errors(base: dict[str, Any],
                                                        mutation: dict[str, Any]) -> None:
    _normalizes_or_refuses({**base, **mutation})


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([DOCUMENTED, FINISHED]), st.integers(0, 1),
       st.dictionaries(st.sampled_from(_LINE_FIELDS), _json, max_size=5))
def test_mutated_lines_normalize_or_raise_input_errors(base: dict[str, Any], index: int,
                                                       mutation: dict[str, Any]) -> None:
    changes: list[dict[str, Any]] = [{}, {}]
    changes[index] = mutation
    _normalizes_or_refuses(_with_lines(base, *changes))


@settings(max_examples=200, deadline=None)
@given(_json)
def test_any_json_body_normalizes_or_raises_input_errors(body: Any) -> None:
    _normalizes_or_refuses(body)
