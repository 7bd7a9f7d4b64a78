"""The lifecycle on the real broker: out-of-order events, unpaid auto-close, stuck
alerts that fire once and survive a kill -9 of the worker."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import Pipeline, settings_env
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.unit.helpers import fixture_bytes

pytestmark = pytest.mark.integration
PAID = orjson.loads(fixture_bytes("shopify", "orders_paid.json"))


def shopify_raw(order: int, topic: str, at: datetime, **changes: Any) -> bytes:
    body = orjson.dumps({**PAID, "id": order, "updated_at": at.isoformat(timespec="seconds"),
                         **changes})
    return codec("RawEvent").encode({
        "channel": "shopify", "shop_id": "s", "delivery_mode": "WEBHOOK", "source_topic": topic,
        "source_event_id": f"{order}-{topic}", "request_id": "r",
        "received_at": int(time.time() * 1000), "headers": {},
        "content_type": "application/json", "body": body})


def produce(settings: Settings, items: list[tuple[int, bytes]]) -> None:
    producer = Producer(settings.kafka_client_config())
    for order, value in items:
        producer.produce(topic_name(settings, names.raw_topic("shopify")),
                         key=str(order).encode(), value=value)
    assert producer.flush(10) == 0


def read(settings: Settings, base: str, schema: str, seconds: float = 6) -> list[dict]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"r-{time.time()}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([topic_name(settings, base)])
    out, idle = [], time.monotonic()
    try:
        while time.monotonic() - idle < seconds:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    out.append(codec(schema).decode(msg.value()))
                    idle = time.monotonic()
    finally:
        consumer.close()
    return out


def wait_metric(pipeline: Pipeline, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if total(pipeline.samples(), name, **labels) >= value:
            return
        time.sleep(0.25)
    raise AssertionError(f"{name}{labels} did not reach {value}")


def test_out_of_order_auto_close_and_alerts_survive_a_restart(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory(stuck_tick_s=1.0)
    pipeline = pipeline_factory(settings, steps=("streams",))
    now = datetime.now(UTC)
    unpaid = 7_100_000_000_000_000_001  # created 31 minutes ago, never paid
    shipped_first = 7_100_000_000_000_000_002  # shipped arrives before paid
    stuck = 7_100_000_000_000_000_003  # paid 5 hours ago, never shipped
    produce(settings, [
        (unpaid, shopify_raw(unpaid, "orders/create", now - timedelta(minutes=31),
                             financial_status="pending", total_outstanding="423.00")),
        (shipped_first, shopify_raw(shipped_first, "orders/fulfilled",
                                    now - timedelta(minutes=5), fulfillment_status="fulfilled")),
        (shipped_first, shopify_raw(shipped_first, "orders/paid", now - timedelta(minutes=10))),
        (stuck, shopify_raw(stuck, "orders/paid", now - timedelta(hours=5))),
    ])
    wait_metric(pipeline, "orderpulse_stuck_alerts_total", 1, kind="raised")
    wait_metric(pipeline, "orderpulse_events_total", 5, step="normalize", outcome="out")

    states = {s["order_id"]: s for s in read(settings, names.TOPIC_STATE, "OrderState")}
    assert states[f"shopify:{shipped_first}"]["status"] == "SHIPPED"
    assert states[f"shopify:{unpaid}"]["status"] == "CANCELLED"
    assert states[f"shopify:{stuck}"]["stuck"] is True
    events = read(settings, names.TOPIC_NORMALIZED, "OrderEvent")
    [closed] = [e for e in events if e["order_id"] == f"shopify:{unpaid}"
                and e["event_type"] == "CANCELLED"]
    assert closed["raw_status"] == "orderpulse:auto_close_unpaid"

    # kill -9 after the alert; the restarted worker recovers the table: no second
    # alert for the stuck order, and a repeat of its payment is still a duplicate.
    time.sleep(settings.session_timeout_s)  # let the worker commit (interval 2.8 s)
    worker = pipeline.children["streams"]
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(10)
    restarted = spawn("streams", ["streams"], settings_env(pipeline.settings), free_port(),
                      settings.data_dir / "logs")
    pipeline.children["streams"] = restarted
    wait_for_metrics(restarted)
    produce(settings, [(stuck, shopify_raw(stuck, "orders/paid", now - timedelta(hours=5)))])
    wait_metric(pipeline, "orderpulse_duplicates_total", 1, channel="shopify")
    time.sleep(4)  # several ticks
    alerts = read(settings, names.TOPIC_ALERTS, "OrderAlert")
    # Stuck alerts only (no stock is seeded here, so the order also has an OUT_OF_STOCK one).
    raised = [a for a in alerts if a["order_id"] == f"shopify:{stuck}" and a["kind"] == "RAISED"
              and a["state"] == "PAID"]
    assert len(raised) == 1, alerts
    assert total(pipeline.samples(), "orderpulse_stuck_orders", state="PAID") == 1
