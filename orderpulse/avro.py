"""Avro schemas from ``schemas/avro`` and the wire format of every topic.

Wire format: Avro *single-object encoding* (Avro specification, "Single object
encoding"): the two marker bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary
body. A consumer needs no registry service: it looks the fingerprint up among
the ``.avsc`` files it has (every version ever written stays in ``schemas/avro``)
and reads with its own reader schema, so Avro schema resolution handles
evolution. Schemas are parsed once, at start.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from orderpulse.errors import DecodeError

MARKER = b"\xc3\x01"
_HEADER_LEN = 10


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # record name, e.g. "OrderEvent"
    version: int
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint


def _load(text: str) -> SchemaVersion:
    raw = json.loads(text)
    # Keep fastavro's "already parsed" hint: without it every read/write re-parses.
    parsed = parse_schema(raw)
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))
    return SchemaVersion(raw["name"], int(raw.get("version", 1)), parsed, fp)


@cache
def all_versions() -> tuple[SchemaVersion, ...]:
    """Every schema version shipped in ``schemas/avro`` (``<name>.v<N>.avsc``)."""
    folder = resources.files("orderpulse.schemas").joinpath("avro")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".avsc"))
    return tuple(_load(p.read_text(encoding="utf-8")) for p in files)


def latest(name: str) -> SchemaVersion:
    """The newest version of the record ``name`` (what this code writes)."""
    versions = [v for v in all_versions() if v.name == name]
    if not versions:
        raise LookupError(f"no schema named {name!r} in schemas/avro")
    return max(versions, key=lambda v: v.version)


class Codec:
    """Encode with the newest schema of one record; decode any known version."""

    def __init__(self, name: str) -> None:
        self.schema = latest(name)
        self._by_fp = {v.fingerprint: v for v in all_versions() if v.name == name}

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self.schema.header)
        schemaless_writer(buf, self.schema.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode single-object bytes into a dict of the newest schema's shape."""
        if len(data) < _HEADER_LEN or data[:2] != MARKER:
            raise DecodeError(
                f"expected Avro single-object bytes (C3 01 marker), got {data[:2]!r}",
                reason="not_avro",
            )
        writer = self._by_fp.get(data[2:_HEADER_LEN])
        if writer is None:
            raise DecodeError(
                f"unknown {self.schema.name} schema fingerprint {data[2:_HEADER_LEN].hex()}",
                reason="unknown_schema",
            )
        body = io.BytesIO(data[_HEADER_LEN:])
        # Schema resolution only when the writer is an older version.
        reader = None if writer is self.schema else self.schema.parsed
        try:
            return schemaless_reader(body, writer.parsed, reader)
        except (EOFError, ValueError, TypeError, IndexError) as exc:
            raise DecodeError(f"corrupt {self.schema.name} body: {exc}",
                              reason="corrupt_avro") from exc


@cache
def codec(name: str) -> Codec:
    """Shared codec per record name (schemas are parsed once per process)."""
    return Codec(name)
