"""README's example consumer decodes what the pipeline writes, with public libraries only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from orderpulse import names
from orderpulse.streams.steps import Source, normalize_message
from orderpulse.topics import topic_name
from tests.integration.conftest import SettingsFactory
from tests.unit.helpers import fixture_bytes, raw_bytes

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consume_normalized.py"


def test_example_consumer_reads_normalized_events(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    topic = topic_name(settings, names.TOPIC_NORMALIZED)
    raw = raw_bytes(fixture_bytes("shopify", "orders_paid.json"))
    [(key, value)] = normalize_message(Source("r", 0, 0, None, raw), now_ms=0).outputs
    producer = Producer(settings.kafka_client_config())
    producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0

    done = subprocess.run([sys.executable, str(EXAMPLE), settings.kafka_bootstrap_servers or "",
                           topic, "1"], capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout.strip())
    assert line == {"key": "shopify:5749625782341234567",
                    "order_id": "shopify:5749625782341234567", "status": "PAID",
                    "total_minor": 42300, "currency": "USD",
                    "event_time": "2026-11-11T15:05:30+00:00"}
