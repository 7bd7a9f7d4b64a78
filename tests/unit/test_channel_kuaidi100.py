"""Kuaidi100 pushes: ``sign`` = upper-case MD5(param + salt) over the raw form field,
one record per push, the ack, and the sandbox's pushes (fixture: the ``param`` of
the documented sample push, apifox project 514987 "推送接口")."""

import hashlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from urllib.parse import quote, urlencode

import orjson
import pytest

from orderpulse.connectors.channels import kuaidi100
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.kuaidi100 import Kuaidi100WebhookSim
from orderpulse.errors import SignatureError
from tests.unit.helpers import fixture_bytes

SALT = "s3cr3t-salt"
PARAM = fixture_bytes("kuaidi100", "push_param.json").decode().strip()
CONFIG = {"salt": SALT}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _md5_upper(text: str) -> str:
    """Computed here independently of the connector."""
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest().upper()


def _body(param: str = PARAM, sign: str | None = None) -> bytes:
    expected = _md5_upper(param + SALT)
    return urlencode({"sign": expected if sign is None else sign, "param": param}).encode()


def test_sign_is_uppercase_md5_of_param_plus_salt() -> None:
    expected = _md5_upper(PARAM + SALT)
    assert kuaidi100.sign(PARAM, SALT) == expected
    assert len(expected) == 32 and expected == expected.upper()
    kuaidi100.verify(SALT, _body())


def test_sign_is_compared_without_case() -> None:
    kuaidi100.verify(SALT, _body(sign=kuaidi100.sign(PARAM, SALT).lower()))


def test_sign_covers_the_param_string_as_sent_not_reserialized() -> None:
    # Same JSON, other spacing: its own sign verifies, the compact one's does not.
    spaced = orjson.dumps(orjson.loads(PARAM), option=orjson.OPT_INDENT_2).decode()
    kuaidi100.verify(SALT, _body(spaced))
    with pytest.raises(SignatureError):
        kuaidi100.verify(SALT, _body(spaced, kuaidi100.sign(PARAM, SALT)))


def test_plus_and_ampersand_in_param_survive_form_encoding() -> None:
    param = PARAM.replace("快件派送中", "派送中 + 电话 a&b=c")
    body = f"sign={kuaidi100.sign(param, SALT)}&param={quote(param, safe='')}".encode()
    kuaidi100.verify(SALT, body)
    kuaidi100.verify(SALT, _body(param))  # quote_plus spelling (spaces as +)


@pytest.mark.parametrize(("salt", "body", "reason"), [
    (SALT, _body(sign=kuaidi100.sign(PARAM, "other")), "bad_signature"),
    (SALT, _body(PARAM.replace('"state":"5"', '"state":"3"'), kuaidi100.sign(PARAM, SALT)),
     "bad_signature"),
    (SALT, _body(sign=""), "missing_signature"),
    (SALT, urlencode({"param": PARAM}).encode(), "missing_signature"),
    (SALT, urlencode({"sign": "ABC"}).encode(), "missing_signature"),
    (SALT, b"\xff\xfe", "missing_signature"),
    ("", _body(), "no_secret"),
])
def test_bad_pushes_are_rejected(salt: str, body: bytes, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        kuaidi100.Kuaidi100Webhook({"salt": salt}).verify(FORM, body, 0)
    assert info.value.reason == reason


def test_one_record_per_push_with_the_original_bytes() -> None:
    body = _body()
    [record] = kuaidi100.Kuaidi100Webhook({**CONFIG, "shop_id": "acme"}).records(FORM, body)
    assert record.key == "SF1444739949795"
    assert record.source_event_id == "SF1444739949795:2025-01-03 08:04:25:5"
    assert (record.source_topic, record.shop_id) == ("polling", "acme")
    assert record.body == body
    assert record.content_type == "application/x-www-form-urlencoded"


def test_latest_ftime_does_not_rely_on_the_order_of_data() -> None:
    doc = orjson.loads(PARAM)
    doc["lastResult"]["data"].reverse()
    assert kuaidi100.push_id(doc) == ("SF1444739949795",
                                      "SF1444739949795:2025-01-03 08:04:25:5")


@pytest.mark.parametrize("body", [b"not a form", b"\xff", _body('{"status":"abort"}'),
                                  _body("[]"), _body('{"lastResult":{"nu":7}}')])
def test_unreadable_pushes_are_still_one_record(body: bytes) -> None:
    [record] = kuaidi100.Kuaidi100Webhook(CONFIG).records({}, body)
    assert len(record.key) == 32 and record.source_event_id == record.key
    assert record.body == body


def test_ack_and_probe_answers() -> None:
    source = kuaidi100.Kuaidi100Webhook(CONFIG)
    assert orjson.loads(source.ack.body) == {"result": True, "returnCode": "200",
                                             "message": "成功"}
    assert (source.ack.status, source.ack.content_type) == (200, "application/json")
    assert source.handshake("GET", {}, b"") == source.ack
    assert source.handshake("POST", FORM, _body()) is None


def _walk(steps: int = 900) -> Iterator[tuple[lifecycle.SimOrder, str, datetime]]:
    """Lifecycle steps a minute apart, lazily: render each before the next step."""
    ticks = (datetime(2026, 6, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(10**6))
    sim = lifecycle.Simulator(seed=5, concurrent=25, clock=lambda: next(ticks))
    return ((order, event, order.updated) for order, event in islice(sim, steps))


def test_sandbox_pushes_verify_and_forgeries_do_not() -> None:
    switch = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    sim = Kuaidi100WebhookSim({**CONFIG, "code_switch_at": switch.isoformat()})
    source = kuaidi100.Kuaidi100Webhook(CONFIG)
    states: dict[bool, set[str]] = {True: set(), False: set()}
    for order, event, at in _walk():
        deliveries = sim.deliveries(order, event, at)
        carried = event in ("shipped", "in_transit", "delivered") and order.carrier != "USPS"
        assert len(deliveries) == carried
        for delivery in deliveries:
            source.verify(delivery.headers, delivery.body, 0)
            [record] = source.records(delivery.headers, delivery.body)
            assert (record.key, record.source_event_id) == (order.tracking_no,
                                                            delivery.delivery_id)
            param = orjson.loads(kuaidi100.parse_form(delivery.body)["param"])
            data = param["lastResult"]["data"]
            assert [d["ftime"] for d in data] == sorted((d["ftime"] for d in data), reverse=True)
            assert param["status"] == ("shutdown" if event == "delivered" else "polling")
            states[sim.advanced(order, at)].add(param["lastResult"]["state"])
            with pytest.raises(SignatureError):
                source.verify(delivery.headers, sim.forge(delivery).body, 0)
    assert states[False] == {"1", "0", "3"}
    assert states[True] == {"103", "1002", "301"}


def test_shanghai_times_without_offset() -> None:
    sim = Kuaidi100WebhookSim(CONFIG)
    order = lifecycle.new_order(1, datetime(2026, 6, 1, tzinfo=UTC), random.Random(2))
    order.history.append((datetime(2026, 6, 1, 16, 30, tzinfo=UTC), "shipped"))
    order.carrier, order.tracking_no = "SF", "SF1234567890"
    [delivery] = sim.deliveries(order, "shipped", datetime(2026, 6, 1, 16, 30, tzinfo=UTC))
    data = orjson.loads(kuaidi100.parse_form(delivery.body)["param"])["lastResult"]["data"]
    assert data[0]["ftime"] == "2026-06-02 00:30:00"
