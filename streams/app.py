"""The Faust application: the wiring of the stream steps, and nothing else.

    orders.raw.<channel> --normalize--> orders.normalized
                               \\------> orders.dlq  (bad input, with original bytes)

Agents decode the Kafka event, call a pure step from ``steps``, and send what
it returns through ``output.OutputProducer``. Delivery: at least once. The
output producer is flushed before Faust commits consumed offsets
(``output.FlushBeforeCommit``), so an output is durable before its input's
offset is committed; downstream idempotency comes from the deterministic
event_id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from orderpulse import names
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.output import FlushBeforeCommit, OutputProducer
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name

log = logging.getLogger(__name__)

_RAW = {"key_serializer": "raw", "value_serializer": "raw"}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def faust_broker_urls(settings: Settings) -> list[str]:
    servers = settings.kafka_client_config()["bootstrap.servers"]
    return [f"kafka://{hostport.strip()}" for hostport in servers.split(",") if hostport.strip()]


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    """Build the Faust app with its topics and agents."""
    app = faust.App(
        f"orderpulse-streams{settings.topic_suffix}",
        broker=faust_broker_urls(settings),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(settings.session_timeout_s / 10, 0.1),
        producer_acks=-1,
        topic_replication_factor=1,
        # The pipeline's topics are declared by orderpulse.topics, not by Faust.
        topic_allow_declare=False,
    )
    # Every channel's raw topic: a channel without a normalizer yet is dead-lettered
    # (reason unknown_channel, original bytes kept), never left unread.
    raw_topics = [topic_name(settings, names.raw_topic(ch)) for ch in names.CHANNELS]
    raw = app.topic(*raw_topics, **_RAW)
    normalized = topic_name(settings, names.TOPIC_NORMALIZED)
    dlq = topic_name(settings, names.TOPIC_DLQ)
    output = OutputProducer(settings.kafka_client_config())
    app.sensors.add(FlushBeforeCommit(output))
    events_metric = metrics.events
    pii_key = settings.pii_key.get_secret_value().encode()

    @app.agent(raw, name=names.STEP_NORMALIZE)
    async def normalize(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            src = Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
            result = normalize_message(src, now_ms=_now_ms(), pii_key=pii_key)
            events_metric.labels(names.STEP_NORMALIZE, result.channel, "in").inc()
            for key, value in result.outputs:
                output.send(normalized, key, value)
            if result.outputs:
                events_metric.labels(names.STEP_NORMALIZE, result.channel, "out").inc(
                    len(result.outputs))
            if result.dead_letter is not None:
                output.send(dlq, msg.key, result.dead_letter)
                events_metric.labels(names.STEP_NORMALIZE, result.channel, "dead_letter").inc()
                metrics.dead_letters.labels(names.STEP_NORMALIZE, result.reason).inc()
                if result.reason == "unmapped_status":
                    metrics.unmapped_status.labels(result.channel).inc()

    return app


def run_worker(settings: Settings, metrics: Metrics) -> None:
    """Run one Faust worker until SIGTERM/SIGINT (graceful: flush, commit, leave group)."""
    app = create_app(settings, metrics)
    metrics.up.labels(names.STEP_NORMALIZE).set(1)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                          redirect_stdouts=False)
    worker.execute_from_commandline()
