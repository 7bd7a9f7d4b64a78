"""Every channel ingests through its real protocol: the sandbox plays each one on
loopback (signed webhooks, signed and throttled poll APIs, a store CSV file),
and every raw topic receives that channel's original bytes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port
from orderpulse.connectors.csv_import import import_file
from orderpulse.connectors.sandbox import WEBHOOK_SIMS
from orderpulse.metrics import Metrics
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import sandbox_channels, settings_env
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory

pytestmark = pytest.mark.integration


def raw_counts(settings: Settings) -> dict[str, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"check-{time.time()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000})
    consumer.subscribe([topic_name(settings, names.raw_topic(ch)) for ch in names.CHANNELS])
    counts: dict[str, int] = {}
    idle_since = time.monotonic()
    try:
        while time.monotonic() - idle_since < 8:
            batch = consumer.consume(1000, 1.0)
            if batch:
                idle_since = time.monotonic()
            for msg in batch:
                if msg.error() is None:
                    raw = codec("RawEvent").decode(msg.value())
                    assert raw["body"], raw["channel"]
                    counts[raw["channel"]] = counts.get(raw["channel"], 0) + 1
    finally:
        consumer.close()
    return counts


def test_every_channel_reaches_its_raw_topic(settings_factory: SettingsFactory,
                                             pipeline_factory: PipelineFactory,
                                             tmp_path: Path) -> None:
    api_port = free_port()
    settings = settings_factory(channels=sandbox_channels(api_port), poll_idle_s=1.0,
                                poll_initial_lookback_s=60.0)
    pipeline = pipeline_factory(settings, steps=("webhook", "poll"))
    stats_path = tmp_path / "stats.json"
    sandbox = spawn("sandbox", ["sandbox", "--api-port", str(api_port), "--webhook-url",
                                pipeline.webhook_url, "--rate", "150", "--duration", "8",
                                "--pos-dir", str(tmp_path / "pos"), "--stats", str(stats_path)],
                    settings_env(pipeline.settings), free_port(), tmp_path / "logs")
    pipeline.children["sandbox"] = sandbox
    wait_for_metrics(sandbox)
    deadline = time.monotonic() + 60
    while not stats_path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    traffic_done = time.time()
    assert pipeline.wait_until(lambda: pipeline.polled_up_to(traffic_done), 60)
    stats = json.loads(stats_path.read_text())
    plan = import_file(pipeline.settings, Metrics.create(CollectorRegistry()),
                       Path(stats["pos_file"]), strict=False)
    assert plan.records and not plan.rejected

    counts = raw_counts(pipeline.settings)
    assert set(counts) == set(names.CHANNELS), counts
    # Pushed deliveries: each acknowledged one is on its raw topic (a delivery may
    # carry several messages; handshake pings are answered, not published).
    for channel, acked in stats["acknowledged"].items():
        sim = WEBHOOK_SIMS[channel](pipeline.settings.channels[channel])
        assert counts[channel] >= acked - (sim.handshake() is not None), channel
    s = pipeline.samples()
    assert total(s, "orderpulse_webhook_requests_total", code="401") == \
        sum(stats["rejected"].values())
    for channel in ("taobao", "jd", "pinduoduo", "usps"):
        assert total(s, "orderpulse_poll_requests_total", channel=channel, outcome="ok") > 0
    assert counts[names.CHANNEL_POS] == len(plan.records)
