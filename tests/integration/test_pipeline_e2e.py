"""Raw Shopify webhooks in, exact rows in ClickHouse out, on the real embedded stack."""

from __future__ import annotations

import base64
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest

from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.channels import shopify
from orderpulse.runner import Pipeline
from orderpulse.scrape import total
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.unit.helpers import fixture_bytes

pytestmark = pytest.mark.integration

PAID = orjson.loads(fixture_bytes("shopify", "orders_paid.json"))
SECRET = b"test-secret"


def post(pipeline: Pipeline, topic: str, body: bytes, webhook_id: str,
         secret: bytes = SECRET) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback URL of our own receiver
        f"{pipeline.webhook_url}/webhooks/shopify", data=body, method="POST",
        headers={"Content-Type": "application/json", "X-Shopify-Topic": topic,
                 "X-Shopify-Hmac-Sha256": shopify.sign(secret, body),
                 "X-Shopify-Shop-Domain": "test.myshopify.com",
                 "X-Shopify-Webhook-Id": webhook_id})
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def order_body(n: int, *, status: str, minute: int) -> bytes:
    return orjson.dumps({
        **PAID, "id": 7_100_000_000_000_000_000 + n, "financial_status": status,
        "total_outstanding": "0.00" if status == "paid" else PAID["total_price"],
        "updated_at": f"2026-11-11T10:{minute:02d}:00-05:00",
    })


def wait_for(pipeline: Pipeline, **expected: float) -> dict[str, float]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        counts = pipeline.counts()
        if all(counts[k] >= v for k, v in expected.items()):
            return counts
        time.sleep(0.25)
    raise AssertionError(f"pipeline did not reach {expected}: {pipeline.counts()}\n"
                         + "\n".join(c.log_tail() for c in pipeline.children.values()))


def test_webhooks_land_exactly_in_clickhouse_and_bad_input_is_dead_lettered(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory()
    pipeline = pipeline_factory(settings)

    valid = []
    for n in range(5):
        valid.append(("orders/create", order_body(n, status="pending", minute=n), f"c{n}"))
        valid.append(("orders/paid", order_body(n, status="paid", minute=n + 10), f"p{n}"))
    for topic, body, webhook_id in valid:
        assert post(pipeline, topic, body, webhook_id) == 200
    # Shopify retries a delivery it thinks failed: same id, same body.
    assert post(pipeline, *valid[3]) == 200
    bad = {
        "not_json": b'{"id": 7100000000000000099, "total_price": "1',
        "missing_field": orjson.dumps({k: v for k, v in PAID.items() if k != "id"}),
        "unmapped_status": orjson.dumps({**PAID, "financial_status": "on_hold_for_review"}),
    }
    for reason, body in bad.items():
        assert post(pipeline, "orders/updated", body, f"bad-{reason}") == 200
    assert post(pipeline, "orders/paid", valid[1][1], "forged", secret=b"wrong") == 401

    counts = wait_for(pipeline, accepted=14, landed=10, dead_landed=3)
    samples = pipeline.samples()
    assert counts["rejected"] == 1 and counts["accepted"] == 14
    # The retried delivery is recognised by the order's dedup state: recorded, not emitted.
    assert counts["normalized"] == 10 and counts["dead_lettered"] == 3
    assert total(samples, "orderpulse_duplicates_total", channel="shopify") == 1
    assert total(samples, "orderpulse_webhook_requests_total", code="401") == 1
    for reason in bad:
        assert total(samples, "orderpulse_dead_letters_total", step="normalize",
                     reason=reason) == 1
    assert total(samples, "orderpulse_end_to_end_latency_seconds_count",
                 channel="shopify") == 10
    assert total(samples, "orderpulse_sink_batch_rows_sum", table="order_events") == 10

    for child in pipeline.children.values():
        assert child.stop() == 0, child.log_tail()

    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    try:
        rows = client.query_rows(
            f"SELECT order_id, event_type, status, total_minor, paid_minor, shipping_minor, "
            f"toUnixTimestamp64Milli(event_time) AS event_ms, source_tz, line_skus "
            f"FROM {settings.clickhouse_database}.order_events FINAL ORDER BY order_id, event_ms")
        dead = client.query_rows(
            f"SELECT reason, step, original_value_b64 FROM "
            f"{settings.clickhouse_database}.dead_letters FINAL ORDER BY reason")
    finally:
        client.close()

    expected = []
    for n in range(5):
        order_id = f"shopify:{7_100_000_000_000_000_000 + n}"
        for event_type, status, paid, minute in (("CREATED", "PENDING_PAYMENT", 0, n),
                                                 ("PAID", "PAID", 42300, n + 10)):
            event_ms = int(datetime(2026, 11, 11, 15, minute, tzinfo=UTC).timestamp()) * 1000
            expected.append({
                "order_id": order_id, "event_type": event_type, "status": status,
                "total_minor": 42300, "paid_minor": paid, "shipping_minor": 1000,
                "event_ms": event_ms, "source_tz": "-05:00",
                "line_skus": ["IPOD2008PINK", "variant:457924702"],
            })
    assert rows == expected

    assert [(d["reason"], d["step"]) for d in dead] == sorted(
        (reason, "normalize") for reason in bad)
    for d in dead:
        envelope = codec("RawEvent").decode(base64.b64decode(d["original_value_b64"]))
        assert envelope["body"] == bad[d["reason"]]
