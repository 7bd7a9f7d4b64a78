"""Dead letters keep what they can carry, and no input kills a stream agent."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.errors import BrokerError, InputError
from orderpulse.metrics import Metrics
from orderpulse.streams import inventory
from orderpulse.streams.app import _Worker, guarded
from orderpulse.streams.steps import MAX_ORIGINAL_BYTES, Source, dead_letter, normalize_message

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
