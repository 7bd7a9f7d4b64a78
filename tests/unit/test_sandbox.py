from datetime import UTC, datetime
from itertools import islice, pairwise

import orjson

from orderpulse.connectors.channels import shopify
from orderpulse.connectors.sandbox.shopify import Faults, deliveries, headers

CLOCK = datetime(2026, 11, 11, 15, 0, tzinfo=UTC)


def _take(n: int, faults: Faults, seed: int = 7) -> list:
    return list(islice(deliveries(seed, faults, clock=lambda: CLOCK), n))


def test_reproducible_for_a_seed_and_clock() -> None:
    assert _take(200, Faults()) == _take(200, Faults())


def test_each_order_follows_shopify_lifecycle_order() -> None:
    topics: dict[int, list[str]] = {}
    for d in _take(2000, Faults(duplicate=0, not_json=0, missing_id=0, unknown_status=0,
                                bad_signature=0)):
        topics.setdefault(orjson.loads(d.body)["id"], []).append(d.topic)
    assert topics
    for seq in topics.values():
        assert seq[0] == "orders/create"
        assert seq in (["orders/create"], ["orders/create", "orders/cancelled"],
                       ["orders/create", "orders/paid"],
                       ["orders/create", "orders/paid", "orders/fulfilled"])


def test_ids_are_19_digits_and_money_is_decimal_strings() -> None:
    body = orjson.loads(_take(1, Faults(not_json=0, missing_id=0, unknown_status=0))[0].body)
    assert len(str(body["id"])) == 19
    assert isinstance(body["total_price"], str) and "." in body["total_price"]


def test_faults_are_injected_and_duplicates_repeat_the_delivery() -> None:
    sample = _take(4000, Faults(duplicate=0.05, not_json=0.01, missing_id=0.01,
                                unknown_status=0.01, bad_signature=0.01))
    kinds = {d.kind for d in sample}
    assert kinds == {"valid", "duplicate", "not_json", "missing_id", "unknown_status"}
    assert any(d.bad_signature for d in sample)
    for prev, cur in pairwise(sample):
        if cur.kind == "duplicate":
            assert (cur.body, cur.webhook_id, cur.topic) == (prev.body, prev.webhook_id, prev.topic)


def test_headers_sign_like_shopify() -> None:
    d = _take(1, Faults(bad_signature=0))[0]
    h = headers(d, b"secret")
    shopify.verify(b"secret", d.body, h["X-Shopify-Hmac-Sha256"])
    assert h["X-Shopify-Webhook-Id"] == d.webhook_id
