import pytest

from orderpulse.avro import MARKER, all_versions, codec, latest
from orderpulse.errors import DecodeError
from tests.unit.helpers import raw_shopify


def test_every_schema_file_parses_and_has_a_unique_fingerprint() -> None:
    versions = all_versions()
    assert {v.name for v in versions} >= {"RawEvent", "OrderEvent", "DeadLetter"}
    assert len({v.fingerprint for v in versions}) == len(versions)


def test_single_object_encoding_header() -> None:
    data = codec("RawEvent").encode(raw_shopify(b"{}"))
    assert data[:2] == MARKER
    assert data[2:10] == latest("RawEvent").fingerprint


def test_round_trip_keeps_bytes_and_19_digit_strings() -> None:
    raw = raw_shopify(b'{"id": 5749625782341234567}\xff\x00')
    decoded = codec("RawEvent").decode(codec("RawEvent").encode(raw))
    assert decoded["body"] == raw["body"]
    assert decoded["source_event_id"] == raw["source_event_id"]


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "not_avro"),
    (b"{\"json\": true}", "not_avro"),
    (MARKER + b"\x00" * 8 + b"\x02", "unknown_schema"),
])
def test_decode_errors_are_reasoned(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec("RawEvent").decode(data)
    assert info.value.reason == reason


def test_truncated_body_is_corrupt() -> None:
    data = codec("RawEvent").encode(raw_shopify(b"x" * 100))
    with pytest.raises(DecodeError) as info:
        codec("RawEvent").decode(data[:40])
    assert info.value.reason == "corrupt_avro"
