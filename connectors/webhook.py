"""The webhook receiver (aiohttp): every pushing channel at ``/webhooks/<channel>``.

Answers, per delivery:
- the channel's own ack (2xx) only after Kafka acknowledged every record in it,
  so the channel stops retrying only for what is durable;
- the channel's handshake answer for its verification/ping requests;
- 401 when the signature does not verify or the delivery is a replay (counted,
  never published); 404 for a channel that is not configured;
- 413 when the body is over the size limit;
- 503 + Retry-After when the producer is saturated or Kafka did not acknowledge
  in time: the channel retries, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping

from aiohttp import web
from confluent_kafka import KafkaError, KafkaException
from multidict import CIMultiDict, CIMultiDictProxy

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors.base import Reply, WebhookSource, raw_event
from orderpulse.connectors.channels import webhook_sources
from orderpulse.connectors.producer import AsyncProducer, Backpressure
from orderpulse.errors import SignatureError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

PRODUCER_KEY = web.AppKey("producer", AsyncProducer)
_RETRY_LATER = Reply(503, b"try again")
#: Requests being verified and published at once. While answers come back within
#: SHED_TARGET_S the limit is MAX_IN_FLIGHT; once the slowest answer of a second took
#: longer (requests are queueing in the receiver), the limit becomes what the receiver
#: completes in SHED_TARGET_S at its current pace (Little's law: an admitted request then
#: waits about that long), within [MIN_IN_FLIGHT, MAX_IN_FLIGHT], and doubles back every
#: fast second. Past the limit the answer is 503 at once (0.18 ms of CPU against 0.65 ms
#: for a publish). Unbounded, an overload (twice the receiver's capacity) queued every
#: request until the channels' 5 s ran out: no answer at all, and almost nothing
#: acknowledged (tests/integration/test_overload.py). Limiting by pace alone shed a burst
#: after a quiet second, when the pace said nothing about capacity (a flash sale's
#: payments, tests/integration/test_flash_sale.py): only slowness lowers the limit.
SHED_TARGET_S = 1.0
MIN_IN_FLIGHT, MAX_IN_FLIGHT = 32, 512


class Admission:
    """Requests in flight, and the limit, recomputed from completions every second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_flight = 0
        self.limit = MAX_IN_FLIGHT
        self._completed, self._slowest, self._since = 0, 0.0, clock()

    def admit(self) -> float | None:
        """The admission time, or None: refuse (over the limit)."""
        if self.in_flight >= self.limit:
            return None
        self.in_flight += 1
        return self.clock()

    def done(self, admitted_at: float) -> None:
        now = self.clock()
        self.in_flight -= 1
        self._completed += 1
        self._slowest = max(self._slowest, now - admitted_at)
        elapsed = now - self._since
        if elapsed < 1.0:
            return
        if elapsed >= 2.0:  # idle time in the window: it says nothing about the pace
            self.limit = MAX_IN_FLIGHT
        elif self._slowest >= SHED_TARGET_S:  # queueing: admit what the pace clears
            pace = self._completed / elapsed
            self.limit = int(min(max(pace * SHED_TARGET_S, MIN_IN_FLIGHT), MAX_IN_FLIGHT))
        else:
            self.limit = min(self.limit * 2, MAX_IN_FLIGHT)
        self._completed, self._slowest, self._since = 0, 0.0, now


def text_headers(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    """The request headers with every value valid text.

    aiohttp keeps bytes that are not UTF-8 as lone surrogates (``surrogateescape``), and
    those raise ``UnicodeEncodeError`` wherever a value is encoded: every channel's
    signature comparison, the Avro envelope. An unsigned request with one such header
    was answered 500 (found by tests/unit/test_security_fuzz.py). Replaced by U+FFFD, a
    value simply does not verify (401) or is kept as readable text.
    """
    def clean(text: str) -> str:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    return CIMultiDictProxy(CIMultiDict((clean(k), clean(v)) for k, v in headers.items()))


def _too_large(exc: Exception) -> bool:
    """Kafka refused the record for its size, at produce() or from the broker.

    A body just under ORDERPULSE_WEBHOOK_MAX_BODY (1 MiB) is over librdkafka's default
    message.max.bytes (1,000,000) once in its envelope: it was answered 503, again and
    again (tests/integration/test_poison.py).
    """
    return (isinstance(exc, KafkaException) and bool(exc.args)
            and isinstance(exc.args[0], KafkaError)
            and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE)


def _response(reply: Reply, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type,
                        headers=headers)


class Receiver:
    """Verify, publish, answer: the request path shared by every channel."""

    def __init__(self, settings: Settings, metrics: Metrics, producer: AsyncProducer,
                 sources: Mapping[str, WebhookSource]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.producer = producer
        self.sources = dict(sources)
        self.topics = {ch: topic_name(settings, names.raw_topic(ch)) for ch in self.sources}
        self.codec = codec("RawEvent")
        self.admission = Admission()

    def _count(self, channel: str, outcome: str, code: int | None = None) -> None:
        self.metrics.events.labels(names.STEP_WEBHOOK, channel, outcome).inc()
        if code is not None:
            self.metrics.webhook_requests.labels(channel, str(code)).inc()

    async def handle(self, request: web.Request) -> web.Response:
        channel = request.match_info["channel"]
        source = self.sources.get(channel)
        if source is None:
            return web.Response(status=404, text="unknown channel")
        admitted_at = self.admission.admit()
        if admitted_at is None:
            # Shed before reading the body: a refusal costs a fraction of a publish.
            self._count(channel, "retry_later", 503)
            return _response(_RETRY_LATER, {"Retry-After": "1"})
        try:
            return await self._handle(request, channel, source)
        finally:
            self.admission.done(admitted_at)

    async def _handle(self, request: web.Request, channel: str,
                      source: WebhookSource) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            # aiohttp answers 413 itself; counted as an answer (not an event) so an
            # oversize flood shows in orderpulse_webhook_requests_total.
            self.metrics.webhook_requests.labels(channel, "413").inc()
            raise
        headers = text_headers(request.headers)
        reply = source.handshake(request.method, headers, body)
        if reply is not None:
            self._count(channel, "handshake", reply.status)
            return _response(reply)
        self._count(channel, "in")
        request_id = uuid.uuid4().hex
        try:
            source.verify(headers, body, time.time_ns() // 1_000_000)
        except SignatureError as exc:  # ReplayError is one too
            self._count(channel, "rejected", 401)
            log.info("webhook rejected step=%s channel=%s reason=%s request_id=%s",
                     names.STEP_WEBHOOK, channel, exc.reason, request_id)
            return web.Response(status=401, text="signature does not verify")
        return await self._publish(channel, source, headers, body, request_id)

    async def _publish(self, channel: str, source: WebhookSource, headers: Mapping[str, str],
                       body: bytes, request_id: str) -> web.Response:
        received_at = time.time_ns() // 1_000_000
        records = source.records(headers, body)
        sends = [self.producer.send(
            self.topics[channel], key=r.key.encode(),
            value=self.codec.encode(raw_event(channel, "WEBHOOK", r, received_at=received_at,
                                              request_id=request_id)))
            for r in records]
        try:
            await asyncio.wait_for(asyncio.gather(*sends),
                                   timeout=self.settings.webhook_ack_timeout_s)
        except (Backpressure, KafkaException, TimeoutError) as exc:
            if _too_large(exc):
                # Never publishable, so never 503: the channel would retry it for days.
                self._count(channel, "rejected", 413)
                log.warning("webhook too large to publish step=%s channel=%s request_id=%s "
                            "bytes=%d", names.STEP_WEBHOOK, channel, request_id, len(body))
                return web.Response(status=413, text="too large to publish")
            self._count(channel, "retry_later", 503)
            log.warning("webhook not persisted step=%s channel=%s request_id=%s: %s",
                        names.STEP_WEBHOOK, channel, request_id, type(exc).__name__)
            return _response(_RETRY_LATER, {"Retry-After": "1"})
        self.metrics.events.labels(names.STEP_WEBHOOK, channel, "out").inc(len(records))
        self.metrics.webhook_requests.labels(channel, str(source.ack.status)).inc()
        return _response(source.ack)


def create_webhook_app(settings: Settings, metrics: Metrics,
                       producer: AsyncProducer) -> web.Application:
    """The receiver's routes; ``producer`` is closed (flushed) on shutdown."""
    receiver = Receiver(settings, metrics, producer, webhook_sources(settings.channels))

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def close_producer(app: web.Application) -> None:
        left = await asyncio.to_thread(app[PRODUCER_KEY].close)
        if left:
            log.error("step=%s: %d raw events unacknowledged at shutdown", names.STEP_WEBHOOK, left)

    app = web.Application(client_max_size=settings.webhook_max_body_bytes)
    app[PRODUCER_KEY] = producer
    app.router.add_route("*", "/webhooks/{channel}", receiver.handle)
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
