"""Dead letters keep what they can carry, and no input kills a stream agent."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.clickhouse_sink import ClickHouseSink
from orderpulse.errors import BrokerError, InputError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams import inventory
from orderpulse.streams.app import OrderWorker, _Worker, guarded, stock_rules
from orderpulse.streams.steps import MAX_ORIGINAL_BYTES, Source, dead_letter, normalize_message
from orderpulse.topics import topic_name
from tests.unit.helpers import fixture_bytes, raw_bytes

LETTER = codec("DeadLetter")


def letter_of(value: bytes, key: bytes | None = b"k") -> dict[str, Any]:
    src = Source("orders.raw.shopify", 2, 41, key, value)
    return LETTER.decode(dead_letter("normalize", src, InputError("bad", reason="not_json"),
                                     reason="not_json", channel=None, failed_at=1))


def test_a_letter_keeps_the_whole_original_up_to_the_bound() -> None:
    value = b"x" * (MAX_ORIGINAL_BYTES - 1)
    d = letter_of(value, key=b"k")
    assert (d["original_key"], d["original_value"], d["message"]) == (b"k", value, "bad")


def test_a_larger_original_is_cut_with_its_length_and_digest() -> None:
    value = bytes(range(256)) * 20_000  # 5,120,000 bytes
    d = letter_of(value, key=b"k" * 5000)
    assert len(d["original_key"]) == 1024
    assert len(d["original_key"]) + len(d["original_value"]) == MAX_ORIGINAL_BYTES
    assert value.startswith(d["original_value"])
    assert str(len(value)) in d["message"] and hashlib.sha256(value).hexdigest() in d["message"]
    assert d["message"].endswith("bad")
    # The letter fits what librdkafka's default producer accepts.
    assert len(LETTER.encode(d)) < 1_000_000


def test_a_null_value_is_a_letter_with_empty_original() -> None:
    result = normalize_message(Source("t", 0, 0, b"k", None), now_ms=1)  # type: ignore[arg-type]
    assert result.reason == "not_avro"
    assert LETTER.decode(result.dead_letter or b"")["original_value"] == b""


def test_adjust_without_a_warehouse_is_bad_input() -> None:
    cmd = {"kind": "ADJUST", "command_id": "a", "sku": "S", "quantity": 3, "warehouses": [],
           "adjust_mode": "SET", "at": 1}
    with pytest.raises(InputError) as caught:
        inventory.as_command(cmd)
    assert caught.value.reason == "missing_field"
    assert inventory.as_command({**cmd, "warehouses": ["WH"]})["warehouses"] == ["WH"]


class Output:
    """Collects what a worker sends (the unit under test is the guard, not Kafka)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.append((topic, key, value))


def worker(registry: CollectorRegistry | None = None) -> _Worker:
    w = _Worker()
    w.step, w.output = names.STEP_STOCK, Output()
    w.metrics = Metrics.create(registry or CollectorRegistry())
    w.topics = {names.TOPIC_DLQ: "orders.dlq"}
    return w


def test_an_unforeseen_exception_is_dead_lettered_and_counted() -> None:
    registry = CollectorRegistry()
    w, src = worker(registry), Source("inventory.commands", 1, 7, b"S", b"\x01")

    def crash(_src: Source) -> None:
        raise KeyError("buyer 13800138000")

    guarded(w, crash, src)
    [(topic, key, value)] = w.output.sent
    d = LETTER.decode(value)
    assert (topic, key, d["step"], d["reason"]) == ("orders.dlq", b"S", "stock", "internal_error")
    assert (d["source_offset"], d["original_value"]) == (7, b"\x01")
    assert "13800138000" not in d["message"]  # an exception's text may quote buyer data
    counted = registry.get_sample_value(
        "orderpulse_dead_letters_total", {"step": "stock", "reason": "internal_error"})
    assert counted == 1


def test_a_broker_failure_is_not_the_messages_fault() -> None:
    w = worker()

    def down(_src: Source) -> None:
        raise BrokerError("output delivery failed")

    with pytest.raises(BrokerError):
        guarded(w, down, Source("t", 0, 0, None, b""))
    assert w.output.sent == []


def test_the_sink_does_not_commit_past_a_dead_letter_the_broker_refused(
        tmp_path: Path) -> None:
    # Nothing listens on port 1: the letter times out, as a refused one would fail.
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_suffix=".t",
                        kafka_config={"message.timeout.ms": 300})
    client = EmbeddedClickHouse(str(tmp_path / "chdb"), "op_t")
    sink = ClickHouseSink(settings, client, Metrics.create(CollectorRegistry()))
    commits: list[int] = []
    sink._commit = lambda: commits.append(1)  # type: ignore[method-assign]
    try:
        sink._accept(Message(topic=topic_name(settings, names.TOPIC_NORMALIZED), partition=0,
                             offset=7, key=b"k", value=b"not avro"))
        assert sink.batch.dead_letters_out == 1
        with pytest.raises(BrokerError, match="output delivery failed"):
            sink.flush()
        assert commits == []
    finally:
        sink.consumer.close()
        client.close()


def test_an_order_s_record_on_another_partition_is_misrouted_not_applied() -> None:
    # The order's table record lives in the partition of its first raw record; a raw
    # record of the same order on another partition (not keyed by the order id) would
    # write the order's changelog from two partitions.
    registry = CollectorRegistry()
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    orders: dict[str, Any] = {}
    w = OrderWorker(settings, Metrics.create(registry), orders, Output(),
                    {base: base for base in (names.TOPIC_NORMALIZED, names.TOPIC_DLQ,
                                             names.TOPIC_STATE, names.TOPIC_INV_COMMANDS)},
                    stock_rules(settings))
    paid = raw_bytes(fixture_bytes("shopify", "orders_paid.json"))
    w.handle(Source("orders.raw.shopify", 1, 10, b"k", paid))
    [(order_id, record)] = orders.items()
    assert record["p"] == 1
    w.output.sent.clear()
    w.handle(Source("orders.raw.shopify", 3, 11, b"other-key", paid))
    [(topic, _key, value)] = w.output.sent
    letter = LETTER.decode(value)
    assert (topic, letter["reason"], letter["source_partition"], letter["channel"]) == \
        ("orders.dlq", "misrouted", 3, "shopify")
    assert orders[order_id] == record
    assert registry.get_sample_value(
        "orderpulse_dead_letters_total", {"step": "normalize", "reason": "misrouted"}) == 1
