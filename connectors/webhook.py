"""The webhook receiver (aiohttp): channel deliveries in, raw events to Kafka.

Answers, per delivery:
- 200 only after Kafka acknowledged the raw event (so the channel stops retrying);
- 401 when the signature does not verify (counted, never published);
- 413 when the body is over the size limit;
- 503 + Retry-After when the producer is saturated or Kafka did not acknowledge
  in time: the channel retries, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from aiohttp import web
from confluent_kafka import KafkaException

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors import shopify
from orderpulse.connectors.producer import AsyncProducer, Backpressure
from orderpulse.errors import SignatureError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

PRODUCER_KEY = web.AppKey("producer", AsyncProducer)


def _answer(metrics: Metrics, channel: str, status: int, text: str,
            headers: dict[str, str] | None = None) -> web.Response:
    metrics.webhook_requests.labels(channel, str(status)).inc()
    return web.Response(status=status, text=text, headers=headers)


def create_webhook_app(settings: Settings, metrics: Metrics,
                       producer: AsyncProducer) -> web.Application:
    """The receiver's routes; ``producer`` is closed (flushed) on shutdown."""
    secret = settings.shopify_webhook_secret.get_secret_value().encode()
    raw_topic = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
    raw_codec = codec("RawEvent")
    events = metrics.events
    channel = names.CHANNEL_SHOPIFY

    async def shopify_webhook(request: web.Request) -> web.Response:
        body = await request.read()
        request_id = uuid.uuid4().hex
        events.labels(names.STEP_WEBHOOK, channel, "in").inc()
        try:
            shopify.verify(secret, body, request.headers.get(shopify.HMAC_HEADER))
        except SignatureError as exc:
            events.labels(names.STEP_WEBHOOK, channel, "rejected").inc()
            log.info("webhook rejected step=%s channel=%s reason=%s request_id=%s",
                     names.STEP_WEBHOOK, channel, exc.reason, request_id)
            return _answer(metrics, channel, 401, "signature does not verify")
        key, event = shopify.raw_event(request.headers, body, request_id=request_id,
                                       received_at=time.time_ns() // 1_000_000)
        try:
            await asyncio.wait_for(
                producer.send(raw_topic, key=key, value=raw_codec.encode(event)),
                timeout=settings.webhook_ack_timeout_s)
        except (Backpressure, KafkaException, TimeoutError) as exc:
            events.labels(names.STEP_WEBHOOK, channel, "retry_later").inc()
            log.warning("webhook not persisted step=%s channel=%s request_id=%s: %s",
                        names.STEP_WEBHOOK, channel, request_id, type(exc).__name__)
            return _answer(metrics, channel, 503, "try again", {"Retry-After": "1"})
        events.labels(names.STEP_WEBHOOK, channel, "out").inc()
        return _answer(metrics, channel, 200, "ok")

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close_producer(app: web.Application) -> None:
        left = await asyncio.to_thread(app[PRODUCER_KEY].close)
        if left:
            log.error("step=%s: %d raw events unacknowledged at shutdown", names.STEP_WEBHOOK, left)

    app = web.Application(client_max_size=settings.webhook_max_body_bytes)
    app[PRODUCER_KEY] = producer
    app.router.add_post("/webhooks/shopify", shopify_webhook)
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(close_producer)
    return app


def run_webhook(settings: Settings, metrics: Metrics) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish, the producer flushes."""
    producer = AsyncProducer(settings.kafka_client_config())
    app = create_webhook_app(settings, metrics, producer)
    metrics.up.labels(names.STEP_WEBHOOK).set(1)
    web.run_app(app, host=settings.webhook_host, port=settings.webhook_port, print=None,
                shutdown_timeout=10, access_log=None)
