"""Every schema version in schemas/avro, both directions: the newest reads data
written by every older version (BACKWARD), and every older reader reads data
the newest writes (FORWARD). Together: FULL_TRANSITIVE compatibility, the mode
this contract guarantees. A change that breaks it fails here."""

from __future__ import annotations

import io
from itertools import combinations
from pathlib import Path

import orjson
import pytest
from fastavro import schemaless_reader, schemaless_writer

from orderpulse.avro import all_versions, codec, latest
from tests.unit.helpers import fixture_bytes, raw_shopify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "avro"
NAMES = sorted({v.name for v in all_versions()})


def _versions(name: str):
    return sorted((v for v in all_versions() if v.name == name), key=lambda v: v.version)


def _example(name: str) -> dict:
    if name == "OrderEvent":
        from orderpulse.streams.channels import shopify
        from orderpulse.streams.channels.common import Context

        return shopify.normalize(raw_shopify(fixture_bytes("shopify", "orders_paid.json")),
                                 Context(1_794_409_700_000, b"k"))[0]
    if name == "RawEvent":
        return raw_shopify(b"{}")
    return {"step": "s", "reason": "r", "error_class": "E", "message": "m", "channel": None,
            "source_topic": "t", "source_partition": 0, "source_offset": 1,
            "original_key": None, "original_value": b"x", "failed_at": 0}


def _roundtrip(record: dict, writer, reader) -> dict:
    buf = io.BytesIO()
    schemaless_writer(buf, writer.parsed, record)
    buf.seek(0)
    return schemaless_reader(buf, writer.parsed, reader.parsed)


@pytest.mark.parametrize("name", NAMES)
def test_full_transitive_compatibility(name: str) -> None:
    versions = _versions(name)
    newest = versions[-1]
    record = _example(name)
    for old in versions[:-1]:
        as_old = _roundtrip(record, newest, old)  # forward: old reader, new data
        back = _roundtrip(as_old, old, newest)  # backward: new reader, old data
        assert back["event_id" if name == "OrderEvent" else "channel" if name == "RawEvent"
                    else "step"] == record["event_id" if name == "OrderEvent" else "channel"
                                          if name == "RawEvent" else "step"]
    for a, b in combinations(versions, 2):
        assert a.fingerprint != b.fingerprint


def test_new_enum_symbols_read_as_the_old_default() -> None:
    v1, v2 = _versions("OrderEvent")[:2]
    record = {**_example("OrderEvent"), "event_type": "CARRIER_SCAN", "refund_status": "REQUESTED"}
    as_v1 = _roundtrip(record, v2, v1)
    assert (as_v1["event_type"], as_v1["refund_status"]) == ("OTHER", "UNKNOWN")


def test_stored_v1_bytes_still_decode_with_the_current_codec() -> None:
    """Bytes written by v1 code (kept as a fixture) decode with today's reader."""
    data = (FIXTURES / "order_event.v1.bin").read_bytes()
    event = codec("OrderEvent").decode(data)
    expected = orjson.loads((FIXTURES / "order_event.v1.json").read_bytes())
    for key, value in expected.items():
        assert event[key] == value, key
    assert event["buyer"] is None and event["flags"] == [] and latest("OrderEvent").version >= 2
