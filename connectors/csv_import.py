"""``orderpulse import --channel pos FILE``: store receipts (and replays of stuck
orders) from CSV into the raw topic, with a result per row.

A receipt is imported whole or not at all: a receipt with any bad row is
rejected (each of its rows says why) and published to the dead-letter topic
with its original lines, so nothing is silently dropped; the good receipts are
published and acknowledged by Kafka before the command reports success.
``--strict`` publishes nothing when any row is rejected. Each receipt's
source event id is a hash of its own lines, so importing a file again (after a
broker failure, say) repeats ids that downstream deduplication collapses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors import pos_csv
from orderpulse.connectors.base import RawRecord, content_id, raw_event
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.errors import DecodeError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.steps import Source, dead_letter
from orderpulse.topics import topic_name

_REJECTED_BY_RECEIPT = "another row of this receipt is rejected"


@dataclass(frozen=True)
class RowResult:
    line: int
    receipt: str
    outcome: str  # accepted | rejected
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    records: list[RawRecord]
    rejected: list[pos_csv.Receipt]
    results: list[RowResult]


def plan(data: bytes, *, source_name: str) -> ImportPlan:
    """What importing ``data`` means, decided before anything is published."""
    header, rows = pos_csv.parse(data)
    records, rejected, results = [], [], []
    for receipt in pos_csv.receipts(rows):
        label = "/".join(receipt.key)
        if receipt.valid:
            body = "\n".join([header, *(r.raw_line for r in receipt.rows)]).encode() + b"\n"
            records.append(RawRecord(
                key=f"{receipt.key[0]}:{receipt.key[1]}", source_topic=f"pos/{receipt.key[2]}",
                body=body, shop_id=receipt.key[0], source_event_id=content_id(body),
                headers={"import-file": source_name}, content_type="text/csv"))
            results += [RowResult(r.number, label, "accepted", "") for r in receipt.rows]
        else:
            rejected.append(receipt)
            results += [RowResult(r.number, label, "rejected", r.error or _REJECTED_BY_RECEIPT)
                        for r in receipt.rows]
    return ImportPlan(records, rejected, sorted(results, key=lambda r: r.line))


def _dead_letters(plan_: ImportPlan, source_name: str, now_ms: int) -> list[tuple[bytes, bytes]]:
    out = []
    for receipt in plan_.rejected:
        first = receipt.rows[0]
        value = "\n".join(r.raw_line for r in receipt.rows).encode()
        reasons = "; ".join(f"line {r.number}: {r.error}" for r in receipt.rows if r.error)
        src = Source(source_name, -1, first.number, "/".join(receipt.key).encode(), value)
        out.append((src.key or b"", dead_letter(
            names.STEP_IMPORT, src, DecodeError(reasons[:400]), reason="bad_csv_row",
            channel=names.CHANNEL_POS, failed_at=now_ms)))
    return out


async def publish(settings: Settings, plan_: ImportPlan, source_name: str) -> None:
    """Publish accepted receipts and dead-letter rejected ones; return once acknowledged."""
    producer = AsyncProducer(settings.kafka_client_config())
    raw_topic = topic_name(settings, names.raw_topic(names.CHANNEL_POS))
    dlq = topic_name(settings, names.TOPIC_DLQ)
    now_ms = time.time_ns() // 1_000_000
    raw_codec = codec("RawEvent")
    try:
        sends = [producer.send(raw_topic, key=r.key.encode(), value=raw_codec.encode(
            raw_event(names.CHANNEL_POS, "BATCH", r, received_at=now_ms,
                      request_id=f"import:{source_name}:{r.source_event_id}")))
            for r in plan_.records]
        sends += [producer.send(dlq, key=k, value=v)
                  for k, v in _dead_letters(plan_, source_name, now_ms)]
        await asyncio.gather(*sends)
    finally:
        await asyncio.to_thread(producer.close)


def import_file(settings: Settings, metrics: Metrics, path: Path, *, strict: bool,
                ) -> ImportPlan:
    """Plan, then publish unless ``strict`` and something was rejected."""
    plan_ = plan(path.read_bytes(), source_name=path.name)
    if strict and plan_.rejected:
        return plan_
    asyncio.run(publish(settings, plan_, path.name))
    for result in plan_.results:
        metrics.import_rows.labels(names.CHANNEL_POS, result.outcome).inc()
    return plan_
