"""The merchant's stores: one imported POS receipt (CSV) to one ``OrderEvent``.

The format is ``connectors/pos_csv.py``; ``connectors/csv_import.py`` publishes one
raw record per receipt (store_id + receipt_no + event). Facts this relies on:

- body: UTF-8 CSV text, the header
  ``store_id,receipt_no,event,sold_at,currency,sku,quantity,unit_price,line_discount,
  payment`` then the receipt's own lines (one row per receipt line), parsed with the
  ``csv`` module (quoted cells and all);
- ``source_topic``: ``pos/sale`` or ``pos/return`` (the rows' ``event``). A store sale
  is paid and handed over at the till, so it is COMPLETED at once (event type
  COMPLETED, paid_minor = total). A return (goods brought back to the store) is
  RETURN_RECEIVED, with a Refund record (RETURN_AND_REFUND, REFUNDED: the till pays
  the money back on the spot) and refunded_minor = the receipt's total. A return
  receipt lists only the returned lines, not the sale, so the normalizer cannot
  tell a full return from a partial one: its refund overlay is PARTIAL (money
  went back; downstream compares refunded_minor with the sale's total);
- ids: ``order_id`` = ``pos:<store_id>:<receipt_no>``, ``channel_order_id`` =
  ``<store_id>:<receipt_no>`` (the raw record's key); a return receipt with the
  sale's number is the same order. Lines are keyed by SKU (``SKU#2`` for a second
  row of the same SKU) so a return's lines name the sale's lines;
- money: decimal strings in major units of ``currency`` (one currency per receipt):
  ``unit_price`` per unit, ``line_discount`` per row (empty = 0);
  total = sum(quantity * unit_price - line_discount), discount_minor = sum of the
  line discounts; for a return, total_minor is the return receipt's own total
  (the amount paid back), not the original sale's;
- time: ``sold_at`` ISO 8601 with the store's offset (``+08:00``), the latest of the
  receipt's rows; ``source_tz`` is that offset;
- ``payment`` (alipay, card, ...) is kept in ``raw_status`` for audit; no buyer data,
  no tax, no shipping. Bundles are sold as their own SKU (no components in the file);
- bad input: bytes that are not UTF-8 CSV with this header are ``DecodeError``
  ``not_csv`` (the CSV counterpart of ``not_json``); rows that disagree on the
  receipt's identity, or with the topic, are ``bad_shape``.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from orderpulse import names
from orderpulse.connectors.pos_csv import COLUMNS
from orderpulse.errors import DecodeError, MappingError
from orderpulse.streams.channels.common import Context, build, line, lookup
from orderpulse.streams.money import exponent, to_minor
from orderpulse.streams.timeparse import parse_iso_with_offset

CHANNEL = names.CHANNEL_POS

# source_topic -> (the rows' event word, event type, lifecycle status, refund status).
TOPICS: dict[str, tuple[str, str, str, str]] = {
    "pos/sale": ("sale", "COMPLETED", "COMPLETED", "NONE"),
    "pos/return": ("return", "RETURN_RECEIVED", "COMPLETED", "PARTIAL"),
}

# The rows' ``event`` -> the topic the importer publishes it under.
ROW_EVENTS: dict[str, str] = {"sale": "pos/sale", "return": "pos/return"}

_LONG = 2**63
_INT = 2**31
# Readers turn timestamp-millis into datetimes: a time outside years 1-9999 UTC
# would make the event unreadable.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)


def _rows(body: bytes) -> list[dict[str, str]]:
    """The receipt's rows as dicts; the header must be the POS format's."""
    try:
        text = body.decode("utf-8-sig")
        table = [row for row in csv.reader(io.StringIO(text)) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DecodeError(f"expected UTF-8 POS CSV text, got {len(body)} bytes that are "
                          f"not", reason="not_csv") from exc
    if not table or tuple(cell.strip() for cell in table[0]) != COLUMNS:
        raise DecodeError(f"expected the POS CSV header {','.join(COLUMNS)}",
                          reason="not_csv")
    if len(table) < 2:
        raise MappingError("receipt has no lines", reason="missing_field")
    rows = []
    for number, cells in enumerate(table[1:], start=2):
        if len(cells) != len(COLUMNS):
            raise MappingError(f"row {number}: expected {len(COLUMNS)} cells, got {len(cells)}",
                               reason="bad_shape")
        rows.append(dict(zip(COLUMNS, (c.strip() for c in cells), strict=True)))
    return rows


def _same(rows: list[dict[str, str]], column: str) -> str:
    """A column every row of one receipt shares (the receipt's identity, currency)."""
    values = {row[column] for row in rows}
    if len(values) != 1 or not rows[0][column]:
        raise MappingError(f"{column}: rows of one receipt disagree or it is empty",
                           reason="bad_currency" if column == "currency" else "bad_shape")
    return rows[0][column]


def _quantity(text: str, number: int) -> int:
    if not text.isdigit() or not 0 < int(text) < _INT:
        raise MappingError(f"row {number}: quantity must be a positive integer",
                           reason="bad_line")
    return int(text)


def _minor(amount: str, currency: str, field: str) -> int:
    try:
        value = to_minor(amount, currency, field=field)
    except ArithmeticError as exc:  # decimal signals (overflow, sNaN)
        raise MappingError(f"{field}: not a usable amount", reason="bad_amount") from exc
    if not -_LONG <= value < _LONG:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return value


def _lines(rows: list[dict[str, str]], currency: str, word: str,
           ) -> tuple[list[dict[str, Any]], list[int], int]:
    """(lines, each line's amount, total discount)."""
    lines, amounts, discount, seen = [], [], 0, {}
    for number, row in enumerate(rows, start=2):
        sku = row["sku"]
        if not sku:
            raise MappingError(f"row {number}: missing sku", reason="missing_field")
        seen[sku] = seen.get(sku, 0) + 1
        line_id = sku if seen[sku] == 1 else f"{sku}#{seen[sku]}"
        quantity = _quantity(row["quantity"], number)
        if not row["unit_price"]:
            raise MappingError(f"row {number}: missing unit_price", reason="missing_field")
        unit = _minor(row["unit_price"], currency, f"row {number} unit_price")
        line_discount = _minor(row["line_discount"], currency, f"row {number} line_discount")
        # Exact: integer minor units, no rounding anywhere.
        amounts.append(_checked(quantity * unit - line_discount, f"row {number} amount"))
        discount += line_discount
        lines.append(line(line_id, sku, quantity, unit,
                          refund_status=word if word == "return" else None))
    return lines, amounts, discount


def _checked(value: int, field: str) -> int:
    if not -_LONG <= value < _LONG:
        raise MappingError(f"{field}: amount out of range", reason="bad_amount")
    return value


def _event_time(rows: list[dict[str, str]]) -> tuple[int, str]:
    """The latest ``sold_at`` of the receipt and its offset."""
    at = max(parse_iso_with_offset(row["sold_at"], field="sold_at") for row in rows)
    if not _MIN_MS <= at[0] <= _MAX_MS:
        raise MappingError("sold_at outside years 1-9999 UTC", reason="bad_timestamp")
    return at


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One POS receipt (CSV header + its rows) -> one ``OrderEvent`` dict."""
    topic = raw["source_topic"]
    if topic not in TOPICS:
        raise MappingError(f"unsupported POS topic {topic[:60]!r}", reason="unknown_topic")
    word, event_type, status, refund_status = TOPICS[topic]
    rows = _rows(raw["body"])
    store, receipt = _same(rows, "store_id"), _same(rows, "receipt_no")
    if lookup(ROW_EVENTS, _same(rows, "event"), field="POS event") != topic:
        raise MappingError(f"rows are not {word} rows but the topic is {topic}",
                           reason="bad_shape")
    currency = _same(rows, "currency")
    exponent(currency)  # three letters, else bad_currency
    event_time, source_tz = _event_time(rows)
    lines, amounts, discount = _lines(rows, currency, word)
    total = _checked(sum(amounts), "total")
    refund = None
    if word == "return":
        refund = {"kind": "RETURN_AND_REFUND", "status": "REFUNDED", "amount_minor": total,
                  "refund_id": f"{store}:{receipt}:return",
                  "lines": [{"line_id": ln["line_id"], "quantity": ln["quantity"],
                             "amount_minor": amount} for ln, amount in zip(lines, amounts,
                                                                          strict=True)]}
    payments = ",".join(sorted({row["payment"] for row in rows if row["payment"]}))
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=f"{store}:{receipt}",
        event_type=event_type, status=status, raw_status=f"{word};payment={payments}",
        event_time=event_time, source_tz=source_tz, currency=currency, total_minor=total,
        refund_status=refund_status,
        paid_minor=total if word == "sale" else 0,
        discount_minor=_checked(discount, "discount"),
        refunded_minor=total if word == "return" else 0,
        lines=lines, refund=refund,
    )]
