"""The own-site webhook: Stripe-style ``t=..,v1=..`` signing, replay window, records,
and the sandbox's deliveries against the connector (fixture written from the scheme
documented in ``connectors/channels/ownsite.py``)."""

import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice

import orjson
import pytest

from orderpulse.connectors.base import ReplayError
from orderpulse.connectors.channels import ownsite
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.ownsite import EVENT_NAMES, OwnsiteWebhookSim
from orderpulse.errors import SignatureError
from tests.unit.helpers import fixture_bytes

SECRET = "whsec_test"
BODY = fixture_bytes("ownsite", "order_paid.json")
T = 1_794_409_200  # 2026-11-11T15:00:00Z
CONFIG = {"webhook_secret": SECRET, "shop_id": "acme-cn"}


def _headers(body: bytes = BODY, t: int = T, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Orderpulse-Event-Id": "evt_1",
            "X-Orderpulse-Signature": ownsite.signature_header(secret.encode(), t, body)}


def test_signature_is_hex_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert ownsite.sign(SECRET.encode(), T, BODY) == expected
    assert ownsite.signature_header(SECRET.encode(), T, BODY) == f"t={T},v1={expected}"


def test_valid_delivery_verifies_within_the_window() -> None:
    source = ownsite.OwnsiteWebhook(CONFIG)
    source.verify(_headers(), BODY, (T + 299) * 1000)
    source.verify({k.lower(): v for k, v in _headers().items()}, BODY, (T - 299) * 1000)


def test_any_of_several_v1_signatures_may_match_during_rotation() -> None:
    good = ownsite.sign(SECRET.encode(), T, BODY)
    header = f"t={T},v1={ownsite.sign(b'old', T, BODY)},v1={good}"
    ownsite.verify(SECRET.encode(), BODY, header, T)


@pytest.mark.parametrize(("header", "reason"), [
    (None, "missing_signature"),
    ("", "missing_signature"),
    ("v1=abc", "malformed_signature"),
    (f"t={T}", "malformed_signature"),
    (f"t=soon,v1={'0' * 64}", "malformed_signature"),
    (ownsite.signature_header(b"other", T, BODY), "bad_signature"),
    (f"t={T + 1},v1={ownsite.sign(SECRET.encode(), T, BODY)}", "bad_signature"),  # t edited
    (ownsite.signature_header(SECRET.encode(), T, BODY + b" "), "bad_signature"),
])
def test_bad_signatures_are_rejected(header: str | None, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        ownsite.verify(SECRET.encode(), BODY, header, T)
    assert info.value.reason == reason


def test_no_secret_is_refused() -> None:
    with pytest.raises(SignatureError) as info:
        ownsite.verify(b"", BODY, ownsite.signature_header(b"", T, BODY), T)
    assert info.value.reason == "no_secret"


def test_replays_outside_the_configurable_window_are_refused() -> None:
    source = ownsite.OwnsiteWebhook(CONFIG)
    for now in (T + 301, T - 301):
        with pytest.raises(ReplayError):
            source.verify(_headers(), BODY, now * 1000)
    ownsite.OwnsiteWebhook({**CONFIG, "replay_window_s": "3600"}).verify(
        _headers(), BODY, (T + 1800) * 1000)


def test_record_keeps_body_and_metadata_but_not_the_signature() -> None:
    [record] = ownsite.OwnsiteWebhook(CONFIG).records(_headers(), BODY)
    assert record.key == "8100000000000000042"
    assert (record.source_topic, record.source_event_id, record.shop_id) == \
        ("order.paid", "evt_1", "acme-cn")
    assert record.body == BODY
    assert record.headers == {"x-orderpulse-event-id": "evt_1"}


@pytest.mark.parametrize(("body", "key", "topic"), [
    (b'{"event":"order.created","order":{"id":8100000000000000421}}', "8100000000000000421",
     "order.created"),
    (b"not json", "evt_1", ""),
    (b'{"event":7,"order":{"id":true}}', "evt_1", ""),
    (b"[1]", "evt_1", ""),
])
def test_record_key_is_the_order_id_when_readable(body: bytes, key: str, topic: str) -> None:
    [record] = ownsite.OwnsiteWebhook(CONFIG).records(_headers(body), body)
    assert (record.key, record.source_topic, record.body) == (key, topic, body)


def test_unreadable_body_without_event_id_is_keyed_by_content() -> None:
    [record] = ownsite.OwnsiteWebhook(CONFIG).records({}, b"\xff")
    assert len(record.key) == 32 and record.source_event_id is None


def _walk(seed: int = 3, steps: int = 600) -> Iterator[tuple[lifecycle.SimOrder, str, datetime]]:
    """Lifecycle steps a minute apart, lazily: render each before the next step."""
    ticks = (datetime(2026, 11, 11, 15, 0, tzinfo=UTC) + timedelta(minutes=i) for i in range(10**6))
    sim = lifecycle.Simulator(seed=seed, concurrent=20, clock=lambda: next(ticks))
    return ((order, event, order.updated) for order, event in islice(sim, steps))


def test_sandbox_deliveries_verify_and_forgeries_do_not() -> None:
    sim, source = OwnsiteWebhookSim(CONFIG), ownsite.OwnsiteWebhook(CONFIG)
    seen = set()
    for order, event, at in _walk():
        deliveries = sim.deliveries(order, event, at)
        assert len(deliveries) == (EVENT_NAMES[event] is not None)
        for delivery in deliveries:
            now_ms = int(at.timestamp() * 1000) + 2000
            source.verify(delivery.headers, delivery.body, now_ms)
            [record] = source.records(delivery.headers, delivery.body)
            body = orjson.loads(delivery.body)
            assert record.key == body["order"]["id"] == order.id19(8_100_000_000_000_000_000)
            assert record.source_topic == body["event"] == EVENT_NAMES[event]
            assert record.source_event_id == delivery.delivery_id
            assert datetime.fromisoformat(body["order"]["updated_at"]).utcoffset() == \
                timedelta(hours=8)
            seen.add(record.source_topic)
            with pytest.raises(SignatureError):
                source.verify(sim.forge(delivery).headers, delivery.body, now_ms)
    assert seen == set(ownsite.EVENTS)
