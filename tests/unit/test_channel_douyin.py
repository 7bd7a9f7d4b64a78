import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orderpulse.connectors.base import content_id
from orderpulse.connectors.channels import douyin
from orderpulse.connectors.sandbox import douyin as sim
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.errors import SignatureError
from tests.unit.helpers import fixture_bytes

APP_KEY = "7012345678901234567"
APP_SECRET = "doudian-secret"
CONFIG = {"app_key": APP_KEY, "app_secret": APP_SECRET}
NOW_MS = 1_700_619_400_000
PUSH = fixture_bytes("douyin", "push_101.json")
BATCH = fixture_bytes("douyin", "push_batch.json")
VERIFY = fixture_bytes("douyin", "verify.json")
T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)


def _md5(body: bytes, key: str = APP_KEY, secret: str = APP_SECRET) -> str:
    return hashlib.md5(key.encode() + body + secret.encode(), usedforsecurity=False).hexdigest()


def _headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "app-id": APP_KEY, "event-sign": _md5(body),
            **extra}


def test_signature_is_lower_hex_md5_of_key_body_secret() -> None:
    expected = _md5(PUSH)
    assert douyin.sign(APP_KEY, APP_SECRET, PUSH) == expected
    assert expected == expected.lower() and len(expected) == 32
    douyin.verify(APP_KEY, APP_SECRET, _headers(PUSH), PUSH)


def test_hmac_sign_method_is_accepted() -> None:
    expected = hmac.new(APP_SECRET.encode(), APP_KEY.encode() + PUSH + APP_SECRET.encode(),
                        hashlib.sha256).hexdigest()
    headers = _headers(PUSH, **{"sign-method": "hmac-sha256", "event-sign": expected})
    douyin.verify(APP_KEY, APP_SECRET, headers, PUSH)


@pytest.mark.parametrize(("headers", "config", "reason"), [
    ({"app-id": APP_KEY}, CONFIG, "missing_signature"),
    ({"app-id": APP_KEY, "event-sign": ""}, CONFIG, "missing_signature"),
    ({"app-id": "other-app", "event-sign": _md5(PUSH)}, CONFIG, "wrong_app"),
    ({"event-sign": _md5(PUSH)}, CONFIG, "wrong_app"),
    ({"app-id": APP_KEY, "event-sign": _md5(PUSH, secret="wrong")}, CONFIG, "bad_signature"),
    ({"app-id": APP_KEY, "event-sign": _md5(PUSH + b" ")}, CONFIG, "bad_signature"),
    ({"app-id": APP_KEY, "event-sign": _md5(PUSH), "sign-method": "sha1"}, CONFIG,
     "bad_signature"),
    ({"app-id": APP_KEY, "event-sign": _md5(PUSH, secret="")}, {"app_key": APP_KEY},
     "no_secret"),
])
def test_bad_pushes_are_rejected(headers: dict[str, str], config: dict[str, str],
                                 reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        douyin.DouyinWebhook(config).verify(headers, PUSH, NOW_MS)
    assert info.value.reason == reason


def test_header_names_and_signature_case_do_not_matter() -> None:
    headers = {"App-Id": APP_KEY, "Event-Sign": _md5(PUSH).upper()}
    douyin.DouyinWebhook(CONFIG).verify(headers, PUSH, NOW_MS)


def test_ack_is_the_documented_success_body() -> None:
    ack = douyin.DouyinWebhook.ack
    assert (ack.status, orjson.loads(ack.body)) == (200, {"code": 0, "msg": "success"})


def test_one_record_per_message_keyed_by_p_id() -> None:
    [record] = douyin.DouyinWebhook(CONFIG).records(_headers(PUSH), PUSH)
    assert record.key == "6920123456789012345"
    assert (record.source_topic, record.source_event_id, record.shop_id) == \
        ("101", "7301234567890123456:101", "4463798")
    # The message is unchanged, its data string byte for byte.
    assert orjson.loads(record.body) == orjson.loads(PUSH)[0]
    assert orjson.loads(record.body)["data"] == orjson.loads(PUSH)[0]["data"]
    assert record.headers == {"app-id": APP_KEY}


def test_a_batch_gives_one_record_per_message() -> None:
    records = douyin.DouyinWebhook(CONFIG).records(_headers(BATCH), BATCH)
    assert [(r.key, r.source_topic, r.shop_id, r.source_event_id) for r in records] == [
        ("6920123456789012345", "100", "4463798", "7301234567890120001:100"),
        ("6920123456789099999", "200", "4463799", "7301234567890120002:200"),
    ]
    assert [orjson.loads(r.body) for r in records] == orjson.loads(BATCH)


@pytest.mark.parametrize("body", [b"not json", b'{"tag":"101"}', b""])
def test_an_unreadable_body_is_one_record_with_its_bytes(body: bytes) -> None:
    [record] = douyin.DouyinWebhook(CONFIG).records(_headers(body), body)
    assert (record.key, record.body, record.source_event_id) == (content_id(body), body, None)


@pytest.mark.parametrize(("element", "key"), [
    ({"tag": "101", "msg_id": "m-1", "data": "not json"}, "m-1"),
    ({"tag": "101", "msg_id": "m-2", "data": '{"p_id": 6.92e18}'}, "m-2"),
    ({"tag": "101", "msg_id": "m-3", "data": {"p_id": "6920123456789012345"}},
     "6920123456789012345"),
])
def test_unreadable_messages_fall_back_to_the_msg_id(element: dict, key: str) -> None:
    body = orjson.dumps([element])
    [record] = douyin.DouyinWebhook(CONFIG).records(_headers(body), body)
    assert record.key == key


def test_a_non_object_element_is_keyed_by_its_content() -> None:
    [record] = douyin.DouyinWebhook(CONFIG).records({}, b"[1]")
    assert (record.key, record.body) == (content_id(b"1"), b"1")


def test_verification_push_is_answered_and_not_published() -> None:
    source = douyin.DouyinWebhook(CONFIG)
    reply = source.handshake("POST", _headers(VERIFY), VERIFY)
    assert reply is not None and orjson.loads(reply.body) == {"code": 0, "msg": "success"}
    forged = source.handshake("POST", _headers(VERIFY, **{"event-sign": "0" * 32}), VERIFY)
    assert forged is not None and forged.status == 401
    assert source.handshake("POST", _headers(PUSH), PUSH) is None
    assert source.handshake("POST", {}, b"not json") is None
    mixed = orjson.dumps([*orjson.loads(VERIFY), *orjson.loads(PUSH)])
    assert source.handshake("POST", _headers(mixed), mixed) is None
    assert [r.source_topic for r in source.records(_headers(mixed), mixed)] == ["101"]


# --- the sandbox ---------------------------------------------------------------------------

def _lifecycle(events: list[str], seed: int = 3) -> tuple[SimOrder, list[tuple[str, datetime]]]:
    rng = random.Random(seed)
    order = new_order(42, T0, rng)
    steps = [("created", T0)]
    for i, event in enumerate(events, start=1):
        at = T0 + timedelta(hours=i)
        apply(order, event, at, rng)
        steps.append((event, at))
    return order, steps


def _deliveries(events: list[str]) -> list:
    rng = random.Random(3)
    order = new_order(42, T0, rng)
    channel = sim.DouyinWebhookSim(CONFIG)
    out = channel.deliveries(order, "created", T0)
    for i, event in enumerate(events, start=1):
        at = T0 + timedelta(hours=i)
        apply(order, event, at, rng)
        out += channel.deliveries(order, event, at)
    return out


def test_sandbox_deliveries_verify_and_key_by_the_19_digit_p_id() -> None:
    source = douyin.DouyinWebhook(CONFIG)
    deliveries = _deliveries(["paid", "shipped", "in_transit", "delivered", "completed"])
    tags = []
    for d in deliveries:
        source.verify(d.headers, d.body, NOW_MS)
        for record in source.records(d.headers, d.body):
            tags.append(record.source_topic)
            assert record.key == str(sim.ID_BASE + 42) and len(record.key) == 19
            assert record.source_event_id == d.delivery_id
            assert record.shop_id == str(sim.DEFAULT_SHOP_ID)
    assert tags == ["100", "101", "102", "103"]


def test_sandbox_renders_fen_seconds_and_masked_receivers() -> None:
    deliveries = _deliveries(["paid", "shipped"])
    paid = douyin.message_data(orjson.loads(deliveries[1].body)[0])
    order, _ = _lifecycle(["paid"])
    assert paid["pay_amount"] == int(order.total * 100)
    assert paid["pay_time"] == int((T0 + timedelta(hours=1)).timestamp())
    assert paid["order_status"] == 2 and len(paid["s_ids"]) == len(order.lines)
    shipped = douyin.message_data(orjson.loads(deliveries[2].body)[0])
    assert shipped["order_status"] == 3 and shipped["logistics_msg"]["logistics_code"]
    assert "****" in shipped["receiver_msg"]["tel"]
    assert order.buyer_phone not in deliveries[2].body.decode()


def test_sandbox_after_sale_and_cancellation_tags() -> None:
    refund = _deliveries(["paid", "shipped", "refund_requested", "refunded"])
    assert [orjson.loads(d.body)[0]["tag"] for d in refund] == ["100", "101", "102", "200", "206"]
    created = douyin.message_data(orjson.loads(refund[3].body)[0])
    assert (created["aftersale_status"], created["aftersale_type"]) == (6, 1)
    ret = _deliveries(["paid", "shipped", "in_transit", "delivered", "return_requested",
                       "return_received", "refunded"])
    assert [orjson.loads(d.body)[0]["tag"] for d in ret][-3:] == ["200", "203", "206"]
    cancel_paid = _deliveries(["paid", "cancelled"])[-1]
    assert [m["tag"] for m in orjson.loads(cancel_paid.body)] == ["206", "106"]
    records = douyin.DouyinWebhook(CONFIG).records(cancel_paid.headers, cancel_paid.body)
    assert [r.source_topic for r in records] == ["206", "106"]
    assert douyin.message_data(orjson.loads(cancel_paid.body)[0])["aftersale_type"] == 2
    assert [orjson.loads(d.body)[0]["tag"] for d in _deliveries(["cancelled"])] == ["100", "106"]


def test_sandbox_forged_and_resigned_deliveries() -> None:
    source = douyin.DouyinWebhook(CONFIG)
    channel = sim.DouyinWebhookSim(CONFIG)
    d = _deliveries(["paid"])[1]
    with pytest.raises(SignatureError):
        source.verify(channel.forge(d).headers, d.body, NOW_MS)
    broken = channel.resign(d, d.body[:10])
    assert broken is not None
    source.verify(broken.headers, broken.body, NOW_MS)
    [record] = source.records(broken.headers, broken.body)
    assert record.body == d.body[:10]


def test_sandbox_handshake_is_answered_by_the_connector() -> None:
    ping = sim.DouyinWebhookSim(CONFIG).handshake()
    assert ping is not None
    reply = douyin.DouyinWebhook(CONFIG).handshake(ping.method, ping.headers, ping.body)
    assert reply == douyin.ACK
