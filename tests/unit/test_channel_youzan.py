import hashlib
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote_plus

import orjson
import pytest

from orderpulse.connectors.base import (
    AuthFailed,
    PollError,
    ReplayError,
    Throttled,
    Window,
    content_id,
)
from orderpulse.connectors.channels import youzan
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox import youzan as sim
from orderpulse.errors import SignatureError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "youzan"
CLIENT_ID = "c346b8b39599aaa677"
SECRET = "test-client-secret"
CONFIG = {"client_id": CLIENT_ID, "client_secret": SECRET, "kdt_id": "13027865"}
PUSH = (FIXTURES / "trade_paid_push.json").read_bytes()
MSG = orjson.loads((FIXTURES / "trade_paid_msg.json").read_bytes())
TID = "E20261111100000094800001"
# The fixture's version: 2026-11-11 10:00:10 Beijing time.
SENT_MS = int(datetime(2026, 11, 11, 2, 0, 10, tzinfo=UTC).timestamp() * 1000)
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


def _md5(text: bytes) -> str:
    return hashlib.md5(text, usedforsecurity=False).hexdigest()


def _headers(body: bytes = PUSH, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Event-Type": "trade_TradePaid",
            "Event-Sign": _md5(CLIENT_ID.encode() + body + SECRET.encode()), **extra}


def test_event_sign_is_md5_of_client_id_raw_body_and_secret() -> None:
    expected = _md5(f"{CLIENT_ID}".encode() + PUSH + f"{SECRET}".encode())
    assert youzan.event_sign(CLIENT_ID, SECRET, PUSH) == expected
    youzan.verify(CLIENT_ID, SECRET, PUSH, expected)
    youzan.verify(CLIENT_ID, SECRET, PUSH, expected.upper())


def test_fixture_body_sign_covers_the_still_encoded_msg() -> None:
    envelope = orjson.loads(PUSH)
    assert envelope["sign"] == _md5((CLIENT_ID + envelope["msg"] + SECRET).encode())
    # Spaces are form-encoded as '+': unquote_plus restores the Beijing-time strings.
    assert "+10%3A00%3A00" in envelope["msg"]
    assert youzan.decode_msg(envelope["msg"]) == MSG
    assert MSG["full_order_info"]["order_info"]["created"] == "2026-11-11 10:00:00"


@pytest.mark.parametrize(("client_id", "secret", "signature", "reason"), [
    (CLIENT_ID, SECRET, None, "missing_signature"),
    (CLIENT_ID, SECRET, "", "missing_signature"),
    (CLIENT_ID, SECRET, youzan.event_sign(CLIENT_ID, "other", PUSH), "bad_signature"),
    (CLIENT_ID, SECRET, youzan.event_sign(CLIENT_ID, SECRET, PUSH + b" "), "bad_signature"),
    (CLIENT_ID, "", youzan.event_sign(CLIENT_ID, "", PUSH), "no_secret"),
    ("", SECRET, youzan.event_sign("", SECRET, PUSH), "no_secret"),
])
def test_bad_signatures_are_rejected(client_id: str, secret: str, signature: str | None,
                                     reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        youzan.verify(client_id, secret, PUSH, signature)
    assert info.value.reason == reason


def test_webhook_source_verifies_client_and_replay_window() -> None:
    source = youzan.YouzanWebhook(CONFIG)
    source.verify(_headers(), PUSH, SENT_MS + 60_000)
    source.verify({k.lower(): v for k, v in _headers().items()}, PUSH, SENT_MS)
    with pytest.raises(ReplayError):
        source.verify(_headers(), PUSH, SENT_MS + 49 * 3600 * 1000)
    with pytest.raises(SignatureError):
        source.verify(_headers(**{"Event-Sign": "0" * 32}), PUSH, SENT_MS)
    other = youzan.YouzanWebhook({**CONFIG, "client_id": "another-app"})
    with pytest.raises(SignatureError) as info:
        other.verify({"Event-Sign": youzan.event_sign("another-app", SECRET, PUSH)}, PUSH,
                     SENT_MS)
    assert info.value.reason == "wrong_client"


def test_ack_and_no_handshake() -> None:
    source = youzan.YouzanWebhook(CONFIG)
    assert orjson.loads(source.ack.body) == {"code": 0, "msg": "success"}
    assert source.ack.status == 200
    assert source.handshake("POST", _headers(), PUSH) is None


def test_record_keeps_body_and_metadata_but_not_the_signature() -> None:
    [record] = youzan.YouzanWebhook(CONFIG).records(_headers(), PUSH)
    assert record.body == PUSH
    assert record.key == TID
    assert (record.source_topic, record.source_event_id, record.shop_id) == (
        "trade_TradePaid", "7f0c2a4e-1b2d-4c8e-9a51-0e6a7c3d2b10", "13027865")
    assert record.headers == {"event-type": "trade_TradePaid",
                              "content-type": "application/json"}


@pytest.mark.parametrize(("body", "key", "event_id"), [
    (b"not json", content_id(b"not json"), content_id(b"not json")),
    (b"[1]", content_id(b"[1]"), content_id(b"[1]")),
    (b'{"msg_id":"m-1","msg":"%7B%22tid%22%3A%22E1%22%7D"}', "E1", "m-1"),
    (b'{"msg_id":"m-2","msg":"%7B%22full_order_info%22%3A%7B%22order_info%22%3A'
     b'%7B%22tid%22%3A%22E2%22%7D%7D%7D"}', "E2", "m-2"),
    (b'{"msg_id":"m-3","msg":"not%20json"}', "m-3", "m-3"),
    (b'{"msg_id":"m-5","msg":"%7B%22full_order_info%22%3A%22x%22%7D"}', "m-5", "m-5"),
    (b'{"id":1234567890123456789,"msg_id":"m-4"}', "1234567890123456789", "m-4"),
])
def test_records_never_raise_on_bad_bodies(body: bytes, key: str, event_id: str) -> None:
    [record] = youzan.YouzanWebhook(CONFIG).records(_headers(body), body)
    assert (record.key, record.source_event_id, record.body) == (key, event_id, body)
    assert record.source_topic == "trade_TradePaid"


def test_window_params_are_beijing_time_and_inclusive() -> None:
    params = youzan.window_params(Window(T0, T0 + timedelta(hours=1)))
    assert params == {"start_update": "2026-11-11 10:00:00", "end_update": "2026-11-11 10:59:59"}
    fractional = youzan.window_params(Window(T0 + timedelta(microseconds=5),
                                             T0 + timedelta(seconds=10, microseconds=5)))
    assert fractional == {"start_update": "2026-11-11 10:00:00",
                          "end_update": "2026-11-11 10:00:10"}


@pytest.mark.parametrize(("payload", "error"), [
    ({"gw_err_resp": {"err_code": 4203, "err_msg": "invalid access_token"}}, AuthFailed),
    ({"gw_err_resp": {"err_code": 429, "err_msg": "API调用频率超出限制"}}, Throttled),
    ({"gw_err_resp": {"err_code": 5001, "err_msg": "调用过于频繁, 已限流"}}, Throttled),
    ({"gw_err_resp": {"err_code": 5000, "err_msg": "system error"}}, PollError),
    ({"error_response": {"code": 50000, "msg": "boom"}}, PollError),
    ({"success": False, "code": 101, "message": "bad param"}, PollError),
])
def test_errors_arriving_with_http_200_are_classified(payload: dict, error: type) -> None:
    found = youzan.gateway_error(payload)
    assert found is not None
    with pytest.raises(error) as info:
        youzan.raise_for(*found)
    if error is PollError:
        assert type(info.value) is PollError


def test_page_records_from_the_documented_answer() -> None:
    payload = orjson.loads((FIXTURES / "trades_sold_get.json").read_bytes())
    assert youzan.gateway_error(payload) is None
    [record], total = youzan.page_records(payload, "13027865")
    assert total == 1
    assert record.key == TID
    assert record.source_event_id == f"poll:{TID}:2026-11-11 10:00:10"
    assert orjson.loads(record.body) == MSG
    assert record.source_topic == youzan.POLL_TOPIC
    with pytest.raises(PollError):
        youzan.page_records({"success": True, "code": 200, "data": {}}, "")


# --- sandbox ------------------------------------------------------------------------

def _walk(seed: int = 3) -> list[tuple[lifecycle.SimOrder, str, datetime]]:
    """One order through paid, shipped, delivered and completed, with its deliveries."""
    rng = random.Random(seed)
    order = lifecycle.new_order(42, T0, rng)
    steps = [(order, "created", T0)]
    for minutes, event in enumerate(("paid", "shipped", "in_transit", "delivered",
                                     "completed"), start=1):
        at = T0 + timedelta(minutes=minutes)
        lifecycle.apply(order, event, at, rng)
        steps.append((order, event, at))
    return steps


def test_sandbox_pushes_verify_with_the_connector_and_forgeries_do_not() -> None:
    webhook = sim.YouzanWebhookSim(CONFIG)
    source = youzan.YouzanWebhook(CONFIG)
    types = []
    for order, event, at in _walk():
        deliveries = webhook.deliveries(order, event, at)
        assert len(deliveries) == (0 if sim.TYPES[event] is None else 1)
        for delivery in deliveries:
            now_ms = int(at.timestamp() * 1000)
            source.verify(delivery.headers, delivery.body, now_ms)
            [record] = source.records(delivery.headers, delivery.body)
            assert record.key == sim.tid(order)
            assert record.source_event_id == delivery.delivery_id
            assert record.body == delivery.body
            types.append(record.source_topic)
            with pytest.raises(SignatureError):
                source.verify(webhook.forge(delivery).headers, delivery.body, now_ms)
    assert types == ["trade_TradeCreate", "trade_TradePaid", "trade_TradeSellerShip",
                     "trade_TradeSuccess"]


def test_sandbox_renders_youzan_shapes() -> None:
    order = _walk()[-1][0]
    doc = sim.render(order)["full_order_info"]
    info = doc["order_info"]
    assert info["tid"].startswith("E2026111110") and len(info["tid"]) == 24
    assert info["status"] == "TRADE_SUCCESS"
    assert info["created"] == "2026-11-11 10:00:00"
    assert info["update_time"] == "2026-11-11 10:05:00"
    for line in doc["orders"]:
        assert isinstance(line["oid"], str) and len(line["oid"]) == 19
        assert isinstance(line["payment"], str) and "." in line["payment"]
    assert doc["pay_info"]["payment"] == f"{order.total:.2f}"
    assert "****" in doc["buyer_info"]["buyer_phone"]
    assert order.buyer_phone not in orjson.dumps(doc).decode()
    push = orjson.loads(sim.envelope(order, "trade_TradePaid", CLIENT_ID, SECRET))
    assert push["status"] == "TRADE_PAID"
    assert push["sign"] == _md5((CLIENT_ID + push["msg"] + SECRET).encode())
    assert orjson.loads(unquote_plus(push["msg"]))["full_order_info"]["order_info"] == info
    small = orjson.loads(sim.envelope(order, "trade_TradeSuccess", CLIENT_ID, SECRET))
    assert youzan.decode_msg(small["msg"]) == {"tid": info["tid"],
                                               "update_time": "2026-11-11 10:05:00"}


@pytest.mark.parametrize(("events", "status", "refund_state"), [
    ((), "WAIT_BUYER_PAY", 0),
    (("cancelled",), "TRADE_CLOSED", 0),
    (("paid",), "WAIT_SELLER_SEND_GOODS", 0),
    (("paid", "cancelled"), "TRADE_CLOSED", 12),
    (("paid", "shipped", "refund_requested"), "WAIT_BUYER_CONFIRM_GOODS", 1),
])
def test_sandbox_status_mapping(events: tuple[str, ...], status: str, refund_state: int) -> None:
    rng = random.Random(1)
    order = lifecycle.new_order(7, T0, rng)
    mug = lifecycle.SimLine(9, "MUG-LOGO", 1, lifecycle.CATALOGUE["MUG-LOGO"])
    order.lines = [*order.lines[:1], mug]
    for i, event in enumerate(events, start=1):
        lifecycle.apply(order, event, T0 + timedelta(minutes=i), rng)
    info = sim.render(order)["full_order_info"]["order_info"]
    assert (info["status"], info["refund_state"]) == (status, refund_state)
