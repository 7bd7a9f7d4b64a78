"""The store (POS) CSV format, shared by ``orderpulse import`` and the sandbox.

One row per receipt line, UTF-8, header first:

    store_id,receipt_no,event,sold_at,currency,sku,quantity,unit_price,line_discount,payment

- ``event``: ``sale`` or ``return`` (goods brought back to the store);
- ``sold_at``: ISO 8601 with the store's UTC offset (``2026-11-11T20:15:03+08:00``);
- ``unit_price``/``line_discount``: decimal strings in major units of ``currency``;
- ``quantity``: a positive integer.

A receipt (store_id + receipt_no + event) is the unit of import: its rows are
published together as one raw record whose body is the header plus the
receipt's own original lines.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

COLUMNS = ("store_id", "receipt_no", "event", "sold_at", "currency", "sku", "quantity",
           "unit_price", "line_discount", "payment")
EVENTS = frozenset({"sale", "return"})


@dataclass
class Row:
    number: int  # 1-based line number in the file (header = 1)
    raw_line: str
    values: dict[str, str]
    error: str | None = None

    @property
    def receipt(self) -> tuple[str, str, str]:
        v = self.values
        return v.get("store_id", ""), v.get("receipt_no", ""), v.get("event", "")


@dataclass
class Receipt:
    key: tuple[str, str, str]
    rows: list[Row] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(r.error is None for r in self.rows)


def check_row(values: dict[str, str]) -> str | None:
    """Why a row is not importable, or None."""
    missing = [c for c in COLUMNS if c != "line_discount" and not values.get(c, "").strip()]
    if missing:
        return f"missing {', '.join(missing)}"
    if values["event"] not in EVENTS:
        return f"event must be sale or return, got {values['event'][:20]!r}"
    try:
        sold = datetime.fromisoformat(values["sold_at"])
    except ValueError:
        return "sold_at is not ISO 8601"
    if sold.tzinfo is None:
        return "sold_at has no UTC offset"
    if not values["quantity"].isdigit() or int(values["quantity"]) <= 0:
        return "quantity must be a positive integer"
    for money in ("unit_price", "line_discount"):
        try:
            Decimal(values.get(money) or "0")
        except InvalidOperation:
            return f"{money} is not a decimal amount"
    if len(values["currency"]) != 3 or not values["currency"].isalpha():
        return "currency is not an ISO 4217 code"
    return None


def parse(data: bytes) -> tuple[str, list[Row]]:
    """(header line, rows) of a POS CSV file; rows carry their own error, if any."""
    text = data.decode("utf-8-sig")
    lines = text.splitlines()
    if not lines:
        return "", []
    header = lines[0]
    names = next(csv.reader([header]))
    if tuple(n.strip() for n in names) != COLUMNS:
        raise ValueError(f"header must be {','.join(COLUMNS)}")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        values = dict(zip(COLUMNS, (c.strip() for c in cells), strict=False))
        error = (f"expected {len(COLUMNS)} columns, got {len(cells)}"
                 if len(cells) != len(COLUMNS) else check_row(values))
        rows.append(Row(number, line, values, error))
    return header, rows


def receipts(rows: list[Row]) -> list[Receipt]:
    """Rows grouped by receipt, in file order; a receipt with a bad row is invalid."""
    grouped: dict[tuple[str, str, str], Receipt] = {}
    for row in rows:
        grouped.setdefault(row.receipt, Receipt(row.receipt)).rows.append(row)
    return list(grouped.values())


def render(rows: list[dict[str, str]]) -> str:
    """CSV text (header + rows) in this format."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
