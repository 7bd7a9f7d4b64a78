"""The ClickHouse sink lands the inventory topics on the real broker and engine:
the ledger one row per event id, current levels one row per sku + warehouse with
the newest version winning, and an undecodable record on the dead-letter path."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse, apply_ddl
from orderpulse.connectors.clickhouse_sink import ClickHouseSink
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import SettingsFactory, group_offsets
from tests.integration.test_sink_faults import wait_until

pytestmark = pytest.mark.integration

T0 = 1_794_409_200_000  # 2026-11-11 15:00:00 UTC

Stack = tuple[Settings, ClickHouseSink, EmbeddedClickHouse]


@pytest.fixture
def running_sink(settings_factory: SettingsFactory) -> Iterator[Stack]:
    settings = settings_factory()
    settings.chdb_path.mkdir(parents=True)
    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    apply_ddl(client)
    sink = ClickHouseSink(settings, client, Metrics.create(CollectorRegistry()))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    yield settings, sink, client
    stop.set()
    thread.join(30)
    client.close()


def inventory_event(kind: str, command: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "event_id": f"{command}/{kind}", "sku": "A", "warehouse": "sh",
            "reservation_id": f"r-{command}", "order_id": "shopify:1", "quantity": 2,
            "on_hand": 10, "reserved": 2, "safety": 1, "available": 7, "reason": "",
            "at": T0, **fields}


def stock_level(sku: str, version: int, warehouses: dict[str, int]) -> dict[str, Any]:
    """``warehouses``: warehouse -> on_hand (reserved 1, safety 1)."""
    rows = [{"warehouse": w, "on_hand": n, "reserved": 1, "safety": 1, "available": n - 2}
            for w, n in sorted(warehouses.items())]
    return {"sku": sku, "available_to_sell": sum(max(r["available"], 0) for r in rows),
            "warehouses": rows, "version": version, "at": T0 + version}


def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic_name(settings, topic), key=key, value=value)
    assert producer.flush(15) == 0


def committed(settings: Settings, topic: str) -> int:
    offsets = group_offsets(settings, settings.group(names.STEP_SINK),
                            [topic_name(settings, topic)])
    return sum(max(tp.offset, 0) for tp in offsets)


def query(client: EmbeddedClickHouse, sql: str) -> list[dict[str, Any]]:
    # 64-bit integers as JSON numbers on every engine version.
    return client.query_rows(sql.format(db=client.database)
                             + " SETTINGS output_format_json_quote_64bit_integers = 0")


def test_inventory_topics_land_in_their_tables(running_sink: Stack) -> None:
    settings, sink, client = running_sink
    reserved = codec("InventoryEvent").encode(inventory_event("RESERVED", "c1"))
    out_of_stock = codec("InventoryEvent").encode(inventory_event(
        "OUT_OF_STOCK", "shopify:2#0", sku="A,B", warehouse=None, reservation_id=None,
        order_id="shopify:2", quantity=3, on_hand=0, reserved=0, safety=0, available=0,
        reason="insufficient_stock"))
    # The RESERVED event twice (a redelivery), and one record that is not Avro.
    produce(settings, names.TOPIC_INV_EVENTS, [
        (b"A", reserved), (b"shopify:2", out_of_stock), (b"A", reserved), (b"A", b"garbage")])
    level = codec("StockLevel")
    produce(settings, names.TOPIC_INV_LEVELS, [
        (b"A", level.encode(stock_level("A", 1, {"sh": 10, "bj": 4}))),
        (b"B", level.encode(stock_level("B", 1, {})))])  # no warehouses: no rows
    wait_until(lambda: committed(settings, names.TOPIC_INV_EVENTS) == 4
               and committed(settings, names.TOPIC_INV_LEVELS) == 2
               and bool(query(client, "SELECT 1 FROM {db}.dead_letters")))

    events = query(client, "SELECT * EXCEPT landed_at FROM {db}.inventory_events FINAL "
                           "ORDER BY event_id")
    assert [(e["event_id"], e["kind"], e["warehouse"]) for e in events] == [
        ("c1/RESERVED", "RESERVED", "sh"), ("shopify:2#0/OUT_OF_STOCK", "OUT_OF_STOCK", None)]
    assert events[0]["at"] == "2026-11-11 15:00:00.000" and events[0]["available"] == 7

    [letter] = query(client, "SELECT step, reason, source_topic, "
                             "base64Decode(original_value_b64) AS v FROM {db}.dead_letters")
    assert letter == {"step": names.STEP_SINK, "reason": "not_avro", "v": "garbage",
                      "source_topic": topic_name(settings, names.TOPIC_INV_EVENTS)}
    assert sink.metrics.dead_letters.labels(names.STEP_SINK, "not_avro")._value.get() == 1

    assert levels(client) == [("A", "bj", 4, 2, 10, 1), ("A", "sh", 10, 8, 10, 1)]

    # A newer level for A, then a stale re-send of version 1: the newest version wins.
    produce(settings, names.TOPIC_INV_LEVELS, [
        (b"A", level.encode(stock_level("A", 2, {"sh": 7, "bj": 4}))),
        (b"A", level.encode(stock_level("A", 1, {"sh": 10, "bj": 4})))])
    wait_until(lambda: committed(settings, names.TOPIC_INV_LEVELS) == 4)
    assert levels(client) == [("A", "bj", 4, 2, 7, 2), ("A", "sh", 7, 5, 7, 2)]


def levels(client: EmbeddedClickHouse) -> list[tuple[Any, ...]]:
    """(sku, warehouse, on_hand, available, available_to_sell, version), current rows."""
    rows = query(client, "SELECT sku, warehouse, on_hand, available, available_to_sell, "
                         "version FROM {db}.inventory_levels FINAL ORDER BY sku, warehouse")
    return [tuple(r.values()) for r in rows]
