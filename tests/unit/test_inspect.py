import json

from orderpulse.inspect import normalize_payload
from tests.unit.helpers import fixture_bytes


def test_normalize_prints_the_events_the_agent_would_emit() -> None:
    code, text = normalize_payload("shopify", fixture_bytes("shopify", "orders_paid.json"),
                                   topic="orders/paid", shop="s", pii_key=b"k")
    assert code == 0
    [event] = json.loads(text)
    assert (event["order_id"], event["status"], event["total_minor"]) == \
        ("shopify:5749625782341234567", "PAID", 42300)
    assert event["event_time"] == "2026-11-11T15:05:30+00:00"


def test_normalize_explains_a_dead_letter_with_exit_2() -> None:
    code, text = normalize_payload("shopify", b'{"id": 1, "financial_status": "weird"}',
                                   topic="orders/paid", shop="", pii_key=b"k")
    assert code == 2
    assert json.loads(text)["dead_letter"]["reason"] in ("missing_field", "unmapped_status")
