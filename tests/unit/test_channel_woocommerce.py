import base64
import hashlib
import hmac
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from orderpulse.connectors.base import AuthFailed, PollError, Throttled, Window, content_id
from orderpulse.connectors.channels import woocommerce as wc
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox import woocommerce as sim
from orderpulse.errors import SignatureError

FIXTURES = Path(__file__).parent.parent / "fixtures" / "woocommerce"
SECRET = b"wc-webhook-secret"
BODY = (FIXTURES / "order_4711.json").read_bytes()
DELIVERY = "3b1f0a9e5c7d2b4a6f8e0d1c3b5a7f9e"
T0 = datetime(2026, 11, 11, 9, 0, tzinfo=UTC)


def _headers(body: bytes = BODY, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-WC-Webhook-Source": "https://shop.example/",
            "X-WC-Webhook-Topic": "order.updated", "X-WC-Webhook-Resource": "order",
            "X-WC-Webhook-Event": "updated", "X-WC-Webhook-ID": "12",
            "X-WC-Webhook-Delivery-ID": DELIVERY,
            "X-WC-Webhook-Signature": wc.sign(SECRET, body), **extra}


def test_signature_is_base64_hmac_sha256_of_raw_body() -> None:
    expected = base64.b64encode(hmac.new(SECRET, BODY, hashlib.sha256).digest()).decode()
    assert wc.sign(SECRET, BODY) == expected
    wc.verify(SECRET, BODY, expected)


@pytest.mark.parametrize(("secret", "signature", "reason"), [
    (SECRET, None, "missing_signature"),
    (SECRET, "", "missing_signature"),
    (SECRET, wc.sign(b"other", BODY), "bad_signature"),
    (SECRET, wc.sign(SECRET, BODY + b"\n"), "bad_signature"),
    (b"", wc.sign(b"", BODY), "no_secret"),
])
def test_bad_signatures_are_rejected(secret: bytes, signature: str | None, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        wc.verify(secret, BODY, signature)
    assert info.value.reason == reason


def test_webhook_source_verifies_with_any_header_case() -> None:
    source = wc.WooCommerceWebhook({"webhook_secret": SECRET.decode()})
    source.verify(_headers(), BODY, 0)
    source.verify({k.lower(): v for k, v in _headers().items()}, BODY, 0)
    with pytest.raises(SignatureError):
        source.verify(_headers(**{"X-WC-Webhook-Signature": "x"}), BODY, 0)


def test_ping_is_answered_exactly_200_before_any_signature_check() -> None:
    source = wc.WooCommerceWebhook({"webhook_secret": SECRET.decode()})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = source.handshake("POST", form, b"webhook_id=12")
    assert reply is not None and reply.status == 200
    assert source.handshake("POST", {}, b"webhook_id=7\n") is not None
    assert source.handshake("POST", _headers(), BODY) is None
    assert source.handshake("POST", form, b"webhook_id=12&x=1") is None
    assert source.handshake("GET", form, b"webhook_id=12") is None
    signed = {**form, "X-WC-Webhook-Signature": "x"}
    assert source.handshake("POST", signed, b"webhook_id=12") is None


def test_record_keeps_body_and_metadata_but_not_the_signature() -> None:
    [record] = wc.WooCommerceWebhook({"webhook_secret": "x"}).records(_headers(), BODY)
    assert record.body == BODY
    assert record.key == "4711"
    assert record.source_topic == "order.updated"
    assert record.source_event_id == f"{DELIVERY}:order.updated:4711:2026-11-11T09:00:09"
    assert record.shop_id == "shop.example"
    assert "x-wc-webhook-signature" not in record.headers
    assert record.headers["x-wc-webhook-delivery-id"] == DELIVERY


def test_colliding_delivery_ids_still_name_distinct_events() -> None:
    source = wc.WooCommerceWebhook({"shop_id": "my-shop"})
    other = BODY.replace(b'"id":4711', b'"id":4712', 1)
    later = BODY.replace(b"2026-11-11T09:00:09", b"2026-11-11T09:00:10")
    ids = {source.records(_headers(b), b)[0].source_event_id for b in (BODY, other, later)}
    assert len(ids) == 3
    assert source.records(_headers(), BODY)[0].shop_id == "my-shop"


@pytest.mark.parametrize(("body", "key", "event_id"), [
    (b"not json", DELIVERY, f"{DELIVERY}:order.updated::"),
    (b"[1]", DELIVERY, f"{DELIVERY}:order.updated::"),
    (b'{"id":4711}', "4711", f"{DELIVERY}:order.updated:4711:"),
    (b'{"id":true}', DELIVERY, f"{DELIVERY}:order.updated::"),
])
def test_records_never_raise_on_bad_bodies(body: bytes, key: str, event_id: str) -> None:
    [record] = wc.WooCommerceWebhook({}).records(_headers(body), body)
    assert (record.key, record.source_event_id, record.body) == (key, event_id, body)


def test_record_without_delivery_id_uses_the_content() -> None:
    headers = _headers()
    del headers["X-WC-Webhook-Delivery-ID"]
    [record] = wc.WooCommerceWebhook({}).records(headers, b"not json")
    assert record.key == content_id(b"not json")


# --- REST API paging ----------------------------------------------------------------

def test_query_bounds_are_gmt_and_exclusive() -> None:
    window = Window(T0, T0 + timedelta(hours=1))
    params = wc.query(window, wc.first_cursor(window), 100)
    assert params == {"modified_after": "2026-11-11T08:59:59",
                      "modified_before": "2026-11-11T10:00:00", "dates_are_gmt": "true",
                      "orderby": "modified", "order": "asc", "per_page": "100", "page": "1"}
    fractional = Window(T0, T0 + timedelta(seconds=3, microseconds=1))
    assert wc.query(fractional, wc.first_cursor(fractional), 10)["modified_before"] == (
        "2026-11-11T09:00:04")


def _doc(order_id: int, second: int) -> dict:
    return {"id": order_id, "date_modified_gmt": wc.gmt(T0 + timedelta(seconds=second))}


def test_keyset_cursor_moves_to_the_last_second_and_skips_what_was_read() -> None:
    start = wc.Cursor(T0)
    page = [_doc(1, 0), _doc(2, 5), _doc(3, 7), _doc(4, 7)]
    following = wc.next_cursor(page, start, more=True)
    assert following == wc.Cursor(T0 + timedelta(seconds=7), 1, frozenset({"3", "4"}))
    assert wc.Cursor.decode(following.encode()) == following
    again = [_doc(3, 7), _doc(4, 7), _doc(5, 7), _doc(6, 9)]
    assert [d["id"] for d in wc.unseen(again, following)] == [5, 6]
    assert wc.next_cursor(page, start, more=False) is None


def test_keyset_cursor_pages_on_when_a_page_shares_one_second() -> None:
    at = wc.Cursor(T0, 1, frozenset({"1"}))
    same = [_doc(1, 0), _doc(2, 0), _doc(3, 0)]
    assert wc.next_cursor(same, at, more=True) == wc.Cursor(T0, 2, frozenset({"1", "2", "3"}))


@pytest.mark.parametrize(("status", "headers", "body", "error", "retry"), [
    (429, {"Retry-After": "7"}, b"<html>slow down</html>", Throttled, 7.0),
    (503, {}, b"<html>busy</html>", Throttled, 5.0),
    (401, {}, b'{"code":"woocommerce_rest_authentication_error"}', AuthFailed, None),
    (403, {}, b'{"code":"woocommerce_rest_cannot_view","message":"no"}', AuthFailed, None),
    (403, {}, b"<html>Access denied by WAF</html>", PollError, None),
    (500, {}, b"", PollError, None),
])
def test_http_errors_are_classified(status: int, headers: dict, body: bytes, error: type,
                                    retry: float | None) -> None:
    with pytest.raises(error) as info:
        wc._raise_for_status(status, headers, body)
    if retry is not None:
        assert info.value.retry_after_s == retry
    if error is PollError:
        assert type(info.value) is PollError


def test_poll_record_is_keyed_by_the_order_state() -> None:
    record = wc.poll_record(orjson.loads(BODY), "shop.example")
    assert record.key == "4711"
    assert record.source_event_id == "poll:4711:2026-11-11T09:00:09"
    assert orjson.loads(record.body) == orjson.loads(BODY)


# --- sandbox ------------------------------------------------------------------------

def _order(*events: str) -> lifecycle.SimOrder:
    rng = random.Random(5)
    order = lifecycle.new_order(11, T0, rng)
    for i, event in enumerate(events, start=1):
        lifecycle.apply(order, event, T0 + timedelta(minutes=i), rng)
    return order


def test_sandbox_deliveries_verify_and_forgeries_do_not() -> None:
    config = {"webhook_secret": SECRET.decode()}
    webhook, source = sim.WooCommerceWebhookSim(config), wc.WooCommerceWebhook(config)
    rng = random.Random(5)
    order = lifecycle.new_order(11, T0, rng)
    topics = [d.headers["X-WC-Webhook-Topic"] for d in webhook.deliveries(order, "created", T0)]
    for i, event in enumerate(("paid", "shipped", "in_transit", "delivered", "completed"), 1):
        at = T0 + timedelta(minutes=i)
        lifecycle.apply(order, event, at, rng)
        for delivery in webhook.deliveries(order, event, at):
            source.verify(delivery.headers, delivery.body, 0)
            [record] = source.records(delivery.headers, delivery.body)
            assert record.key == str(sim.order_id(order))
            assert record.body == delivery.body
            topics.append(record.source_topic)
            with pytest.raises(SignatureError):
                forged = webhook.forge(delivery)
                source.verify(forged.headers, forged.body, 0)
    assert topics == ["order.created", "order.updated", "order.updated"]


def test_sandbox_ping_is_answered_by_the_connector() -> None:
    ping = sim.WooCommerceWebhookSim({"webhook_secret": "s"}).handshake()
    reply = wc.WooCommerceWebhook({"webhook_secret": "s"}).handshake(ping.method, ping.headers,
                                                                       ping.body)
    assert reply is not None and reply.status == 200


def test_sandbox_body_is_php_json_and_delivery_ids_collide_within_a_second() -> None:
    webhook = sim.WooCommerceWebhookSim({"webhook_secret": "s"})
    order = _order()
    [first] = webhook.deliveries(order, "created", T0)
    other = lifecycle.new_order(12, T0, random.Random(6))
    [second] = webhook.deliveries(other, "created", T0 + timedelta(milliseconds=400))
    assert first.delivery_id == second.delivery_id
    assert b"\\u" in first.body and first.body.isascii()  # PHP escapes non-ASCII
    assert sim.wp_json({"href": "https://shop.example/é"}) == (
        b'{"href":"https:\\/\\/shop.example\\/\\u00e9"}')
    assert orjson.loads(first.body)["billing"]["email"] == "buyer11@example.com"
    source = wc.WooCommerceWebhook({})
    ids = {source.records(d.headers, d.body)[0].source_event_id for d in (first, second)}
    assert len(ids) == 2


def test_sandbox_renders_woocommerce_shapes() -> None:
    doc = sim.render(_order("paid", "shipped", "in_transit"))
    assert doc["status"] == "completed"
    assert isinstance(doc["id"], int) and doc["number"] == str(doc["id"])
    assert doc["date_modified_gmt"] == "2026-11-11T09:02:00"  # in_transit is not a change
    assert doc["date_modified"] == "2026-11-11T10:02:00"  # site-local, no offset
    assert doc["date_paid_gmt"] == "2026-11-11T09:01:00"
    assert isinstance(doc["total"], str)
    for line in doc["line_items"]:
        assert isinstance(line["price"], float) and isinstance(line["total"], str)
    tracking = doc["meta_data"][0]
    assert tracking["key"] == "_wc_shipment_tracking_items"


@pytest.mark.parametrize(("events", "status", "refunds"), [
    ((), "pending", 0),
    (("cancelled",), "cancelled", 0),
    (("paid",), "processing", 0),
    (("paid", "cancelled"), "refunded", 1),
    (("paid", "shipped", "refund_requested"), "completed", 0),
    (("paid", "shipped", "refund_requested", "refunded"), "completed", 1),
])
def test_sandbox_status_mapping(events: tuple[str, ...], status: str, refunds: int) -> None:
    order = _order()
    mug = lifecycle.SimLine(9, "MUG-LOGO", 1, lifecycle.CATALOGUE["MUG-LOGO"])
    order.lines = [*order.lines[:1], mug]
    for i, event in enumerate(events, start=1):
        lifecycle.apply(order, event, T0 + timedelta(minutes=i), random.Random(i))
    doc = sim.render(order)
    assert (doc["status"], len(doc["refunds"])) == (status, refunds)
    if refunds:
        assert doc["refunds"][0]["total"].startswith("-")
