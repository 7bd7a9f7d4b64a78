import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orderpulse.connectors.base import ReplayError, Window
from orderpulse.connectors.channels import shopify
from orderpulse.errors import SignatureError

SECRET = b"hush"
BODY = b'{"id":5749625782341234567,"financial_status":"paid"}'
NOW = datetime(2026, 11, 11, 15, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def _headers(body: bytes = BODY, **extra: str) -> dict[str, str]:
    return {"X-Shopify-Topic": "orders/paid", "X-Shopify-Shop-Domain": "s.myshopify.com",
            "X-Shopify-Webhook-Id": "wh-1", "X-Shopify-Hmac-Sha256": shopify.sign(SECRET, body),
            "X-Shopify-Triggered-At": NOW.isoformat(), "Content-Type": "application/json",
            **extra}


def test_signature_is_base64_hmac_sha256_of_raw_body() -> None:
    expected = base64.b64encode(hmac.new(SECRET, BODY, hashlib.sha256).digest()).decode()
    assert shopify.sign(SECRET, BODY) == expected
    shopify.verify(SECRET, BODY, expected)


@pytest.mark.parametrize(("secret", "signature", "reason"), [
    (SECRET, None, "missing_signature"),
    (SECRET, "", "missing_signature"),
    (SECRET, shopify.sign(b"other", BODY), "bad_signature"),
    (SECRET, shopify.sign(SECRET, BODY + b" "), "bad_signature"),
    (b"", shopify.sign(b"", BODY), "no_secret"),
])
def test_bad_signatures_are_rejected(secret: bytes, signature: str | None, reason: str) -> None:
    with pytest.raises(SignatureError) as info:
        shopify.verify(secret, BODY, signature)
    assert info.value.reason == reason


def test_webhook_source_verifies_and_refuses_replays() -> None:
    source = shopify.ShopifyWebhook({"webhook_secret": SECRET.decode()})
    source.verify(_headers(), BODY, NOW_MS + 1000)
    with pytest.raises(ReplayError):
        source.verify(_headers(), BODY, NOW_MS + 49 * 3600 * 1000)
    with pytest.raises(SignatureError):
        source.verify(_headers(**{"X-Shopify-Hmac-Sha256": "x"}), BODY, NOW_MS)


def test_record_keeps_body_and_source_metadata_but_not_the_signature() -> None:
    source = shopify.ShopifyWebhook({"webhook_secret": "x"})
    [record] = source.records(_headers(), BODY)
    assert record.key == "5749625782341234567"
    assert record.body == BODY
    assert (record.shop_id, record.source_topic, record.source_event_id) == \
        ("s.myshopify.com", "orders/paid", "wh-1")
    assert "x-shopify-hmac-sha256" not in record.headers
    assert record.headers["x-shopify-webhook-id"] == "wh-1"


@pytest.mark.parametrize(("body", "key"), [
    (b'{"name":"#1","id":"42"}', "42"),
    (b"not json", "wh-1"),
    (b'{"no_id": 1}', "wh-1"),
    (b"[1]", "wh-1"),
])
def test_record_key_is_the_order_id_when_readable(body: bytes, key: str) -> None:
    [record] = shopify.ShopifyWebhook({}).records(_headers(body), body)
    assert record.key == key


def test_poll_records_and_next_page_link() -> None:
    source = shopify.ShopifyPoll({"shop_domain": "s.myshopify.com"})
    page = orjson.dumps({"orders": [{"id": 5749625782341234567, "updated_at": "t1"}]})
    [record] = source._records(page)
    assert record.key == "5749625782341234567"
    assert record.source_event_id == "poll:5749625782341234567:t1"
    link = ('<https://s.myshopify.com/admin/api/2025-10/orders.json?limit=250&page_info=abc>; '
            'rel="previous", <https://s.myshopify.com/admin/api/2025-10/orders.json?limit=250&'
            'page_info=def>; rel="next"')
    assert shopify._next_page_info(link) == "def"
    assert shopify._next_page_info("") is None
    assert Window(NOW, NOW + timedelta(hours=1)).end > NOW
