"""Warehouse adjustments into ``inventory.commands``: cycle counts, receipts,
write-offs and safety stock, from the warehouse system's CSV export or from
the catalogue's opening stock.

CSV columns: ``adjustment_id,warehouse,sku,mode,quantity,reason`` where mode
is ``set`` (a count: on hand := quantity), ``delta`` (a receipt or write-off:
on hand += quantity, may be negative) or ``safety`` (safety stock :=
quantity). Each adjustment applies once (its id), so importing a file again
changes nothing. A bad row is published to the dead-letter topic with its
line and reason; the good rows are published and acknowledged by Kafka before
the command reports success.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.catalog import Catalog
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.errors import DecodeError
from orderpulse.settings import Settings
from orderpulse.streams.steps import Source, dead_letter
from orderpulse.topics import topic_name

COLUMNS = ("adjustment_id", "warehouse", "sku", "mode", "quantity", "reason")
MODES = {"set": "SET", "delta": "DELTA", "safety": "SAFETY"}


@dataclass
class StockPlan:
    commands: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, raw, why)


def adjust(adjustment_id: str, warehouse: str, sku: str, mode: str, quantity: int,
           reason: str, now_ms: int) -> dict[str, Any]:
    """An ``ADJUST`` command."""
    return {"kind": "ADJUST", "command_id": adjustment_id, "sku": sku, "reservation_id": None,
            "order_id": None, "quantity": quantity, "warehouses": [warehouse],
            "adjust_mode": mode, "expires_at": None, "reply_partition": -1, "reason": reason,
            "at": now_ms}


def _row_error(row: dict[str, str]) -> str | None:
    if any(not (row.get(c) or "").strip() for c in COLUMNS[:5]):
        return "missing " + ", ".join(c for c in COLUMNS[:5] if not (row.get(c) or "").strip())
    if row["mode"].strip().lower() not in MODES:
        return f"mode must be one of {', '.join(MODES)}"
    try:
        qty = int(row["quantity"].strip())
    except ValueError:
        return "quantity is not a whole number"
    if qty < 0 and row["mode"].strip().lower() != "delta":
        return "only a delta may be negative"
    return None


def plan(data: bytes, now_ms: int) -> StockPlan:
    """Parse and check every row before anything is published."""
    out = StockPlan()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        out.rejected.append((1, data[:200].decode("utf-8", "replace"), f"not UTF-8: {exc}"))
        return out
    lines = text.splitlines()
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not set(COLUMNS[:5]) <= set(reader.fieldnames):
        out.rejected.append((1, lines[0] if lines else "", f"header must be {','.join(COLUMNS)}"))
        return out
    for number, row in enumerate(reader, start=2):
        error = _row_error(row)
        raw = lines[number - 1] if number - 1 < len(lines) else ""
        if error:
            out.rejected.append((number, raw, error))
            continue
        out.commands.append(adjust(row["adjustment_id"].strip(), row["warehouse"].strip(),
                                   row["sku"].strip(), MODES[row["mode"].strip().lower()],
                                   int(row["quantity"].strip()), (row.get("reason") or "").strip(),
                                   now_ms))
    return out


def opening_stock(catalog: Catalog, now_ms: int, label: str = "opening") -> list[dict[str, Any]]:
    """The catalogue's opening stock and safety stock as adjustments (ids stable per label)."""
    commands = []
    for warehouse, skus in catalog.opening_stock.items():
        for sku, qty in skus.items():
            commands.append(adjust(f"{label}/{warehouse}/{sku}", warehouse, sku, "SET", qty,
                                   "opening stock", now_ms))
            if catalog.safety_stock.get(sku):
                commands.append(adjust(f"{label}/{warehouse}/{sku}/safety", warehouse, sku,
                                       "SAFETY", catalog.safety_stock[sku], "safety stock",
                                       now_ms))
    return commands


async def publish(settings: Settings, commands: list[dict[str, Any]],
                  rejected: list[tuple[int, str, str]] = (), source_name: str = "") -> None:
    """Publish the commands (keyed by SKU) and dead-letter the rejected rows."""
    producer = AsyncProducer(settings.kafka_client_config())
    topic = topic_name(settings, names.TOPIC_INV_COMMANDS)
    dlq = topic_name(settings, names.TOPIC_DLQ)
    command = codec("InventoryCommand")
    now_ms = time.time_ns() // 1_000_000
    try:
        sends = [producer.send(topic, key=c["sku"].encode(), value=command.encode(c))
                 for c in commands]
        for line, raw, why in rejected:
            src = Source(source_name, -1, line, None, raw.encode())
            sends.append(producer.send(dlq, key=None, value=dead_letter(
                names.STEP_IMPORT, src, DecodeError(why), reason="bad_stock_row", channel=None,
                failed_at=now_ms)))
        await asyncio.gather(*sends)
    finally:
        await asyncio.to_thread(producer.close)


def import_file(settings: Settings, path: Path, *, strict: bool) -> StockPlan:
    """Plan, then publish unless ``strict`` and a row was rejected."""
    plan_ = plan(path.read_bytes(), time.time_ns() // 1_000_000)
    if not (strict and plan_.rejected):
        asyncio.run(publish(settings, plan_.commands, plan_.rejected, path.name))
    return plan_


def seed(settings: Settings, label: str = "opening") -> int:
    """Publish the catalogue's opening stock; returns the number of adjustments."""
    commands = opening_stock(Catalog.load(settings.catalog_path), time.time_ns() // 1_000_000,
                             label)
    asyncio.run(publish(settings, commands))
    return len(commands)
