"""The merchant's stores, played locally: receipts appended to a CSV file per run,
in the POS format of ``connectors/pos_csv.py``, for ``orderpulse import``."""

from __future__ import annotations

from datetime import timedelta, timezone
from pathlib import Path
from typing import TextIO

from orderpulse.connectors.pos_csv import COLUMNS, render
from orderpulse.connectors.sandbox.lifecycle import SimOrder

STORE_TZ = timezone(timedelta(hours=8))
STORES = ("SH-001", "BJ-002", "GZ-003")


def rows_for(order: SimOrder, event: str) -> list[dict[str, str]]:
    """A store sale is paid at the till: one receipt when the order is paid, and a
    return receipt when goods come back."""
    if event not in ("paid", "return_received"):
        return []
    store = STORES[order.number % len(STORES)]
    when = (order.paid_at if event == "paid" else order.updated) or order.updated
    lines = (order.lines if event == "paid"
             else [ln for ln in order.lines if ln.line_no == order.refund_line_no])
    return [{
        "store_id": store, "receipt_no": f"{store}-{order.number:08d}",
        "event": "sale" if event == "paid" else "return",
        "sold_at": when.astimezone(STORE_TZ).isoformat(timespec="seconds"),
        "currency": "CNY", "sku": ln.sku, "quantity": str(ln.quantity),
        "unit_price": f"{ln.unit_price:.2f}", "line_discount": "0.00",
        "payment": "alipay" if order.number % 2 else "card",
    } for ln in lines]


class PosLedger:
    """Appends receipts to ``<dir>/pos-<n>.csv``."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"pos-{len(list(folder.glob('pos-*.csv'))) + 1:04d}.csv"
        self._file: TextIO = self.path.open("w", encoding="utf-8", newline="")
        self._file.write(",".join(COLUMNS) + "\n")

    def record(self, order: SimOrder, event: str) -> int:
        rows = rows_for(order, event)
        if rows:
            # render() repeats the header; keep only the data lines.
            self._file.write(render(rows).split("\n", 1)[1])
        return len(rows)

    def close(self) -> None:
        self._file.close()
