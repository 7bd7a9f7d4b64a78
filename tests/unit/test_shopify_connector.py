import base64
import hashlib
import hmac

import pytest

from orderpulse.connectors import shopify
from orderpulse.errors import SignatureError

SECRET = b"hush"
BODY = b'{"id":5749625782341234567,"financial_status":"paid"}'


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


def test_raw_event_keeps_body_and_source_metadata_but_not_the_signature() -> None:
    headers = {"X-Shopify-Topic": "orders/paid", "X-Shopify-Shop-Domain": "s.myshopify.com",
               "X-Shopify-Webhook-Id": "wh-1", "X-Shopify-Hmac-Sha256": "sig",
               "Content-Type": "application/json"}
    key, event = shopify.raw_event(headers, BODY, received_at=123, request_id="r1")
    assert key == b"5749625782341234567"
    assert event["body"] == BODY
    assert (event["channel"], event["shop_id"], event["source_topic"]) == \
        ("shopify", "s.myshopify.com", "orders/paid")
    assert event["source_event_id"] == "wh-1"
    assert "x-shopify-hmac-sha256" not in event["headers"]
    assert event["headers"]["x-shopify-webhook-id"] == "wh-1"


@pytest.mark.parametrize(("body", "key"), [
    (b'{"name":"#1","id":"42"}', b"42"),
    (b"not json", b"wh-1"),
    (b'{"no_id": 1}', b"wh-1"),
    (b"[1]", b"wh-1"),
])
def test_partition_key_is_the_order_id_when_readable(body: bytes, key: bytes) -> None:
    assert shopify.partition_key(body, "wh-1", "req") == key
