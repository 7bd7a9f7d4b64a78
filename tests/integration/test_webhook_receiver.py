"""The receiver's answers on the real broker: ack only after Kafka, handshakes,
401 for forged or replayed deliveries, 404 for unknown channels, 413 for huge bodies."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from orderpulse.connectors.channels.shopify import sign
from orderpulse.runner import Pipeline
from orderpulse.scrape import total
from tests.integration.conftest import PipelineFactory, SettingsFactory

pytestmark = pytest.mark.integration
SECRET = b"test-secret"


def send(pipeline: Pipeline, channel: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback URL of our own receiver
        f"{pipeline.webhook_url}/webhooks/{channel}", data=body, method="POST",
        headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def shopify_headers(body: bytes, triggered: datetime, secret: bytes = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
            "X-Shopify-Hmac-Sha256": sign(secret, body), "X-Shopify-Webhook-Id": "w1",
            "X-Shopify-Triggered-At": triggered.isoformat()}


def test_receiver_answers(settings_factory: SettingsFactory,
                          pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory(
        channels={"shopify": {"webhook_secret": SECRET.decode()},
                  "woocommerce": {"webhook_secret": "woo"}},
        webhook_max_body_bytes=4096)
    pipeline = pipeline_factory(settings, steps=("webhook",))
    now = datetime.now(UTC)
    body = b'{"id": 1}'
    assert send(pipeline, "shopify", body, shopify_headers(body, now)) == 200
    assert send(pipeline, "shopify", body, shopify_headers(body, now, b"bad")) == 401
    old = now - timedelta(days=3)
    assert send(pipeline, "shopify", body, shopify_headers(body, old)) == 401
    assert send(pipeline, "taobao", body, {}) == 404
    huge = b'{"id": 1, "x": "' + b"x" * 5000 + b'"}'
    assert send(pipeline, "shopify", huge, shopify_headers(huge, now)) == 413
    # WooCommerce's unsigned creation ping must get exactly 200 and is not published.
    ping = send(pipeline, "woocommerce", b"webhook_id=12",
                {"Content-Type": "application/x-www-form-urlencoded"})
    assert ping == 200
    time.sleep(0.5)
    s = pipeline.samples()
    assert total(s, "orderpulse_events_total", step="webhook", outcome="out") == 1
    assert total(s, "orderpulse_events_total", step="webhook", outcome="rejected") == 2
    assert total(s, "orderpulse_events_total", step="webhook", outcome="handshake") == 1
