"""The merchant's catalogue: warehouses, bills of materials, shipping rates.

Loaded once from a JSON file (``ORDERPULSE_CATALOG``; the demo catalogue in
``orderpulse/catalog.json`` otherwise). Pure lookups: bundle explosion and
the warehouse routing order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DEMO = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class Warehouse:
    id: str
    province: str
    near: tuple[str, ...] = ()
    store: str | None = None  # the POS shop id this stock belongs to (a store, not a DC)


@dataclass(frozen=True)
class Catalog:
    warehouses: tuple[Warehouse, ...]
    bom: dict[str, dict[str, int]] = field(default_factory=dict)
    rates: dict[str, dict[str, int]] = field(default_factory=dict)
    safety_stock: dict[str, int] = field(default_factory=dict)
    opening_stock: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        raw: dict[str, Any] = json.loads((path or _DEMO).read_text(encoding="utf-8"))
        return cls(
            warehouses=tuple(Warehouse(w["id"], w.get("province", ""), tuple(w.get("near", ())),
                                       w.get("store")) for w in raw["warehouses"]),
            bom={k: {c: int(n) for c, n in v.items()} for k, v in raw.get("bom", {}).items()},
            rates={k: {p: int(c) for p, c in v.items()} for k, v in raw.get("rates", {}).items()},
            safety_stock={k: int(v) for k, v in raw.get("safety_stock", {}).items()},
            opening_stock={w: {s: int(n) for s, n in v.items()}
                           for w, v in raw.get("opening_stock", {}).items()},
        )

    def explode(self, lines: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        """Order lines as stock units: ``(line_id, sku, quantity)`` per component.

        A bundle's contents come from the channel when it sends them, else from
        the bill of materials; quantity is the line's times the component's count.
        """
        units = []
        for line in lines:
            # A channel may list one component twice (two sub-items, one SKU): the
            # counts add up, the later one does not replace the first.
            sent: dict[str, int] = {}
            for c in line.get("components") or []:
                sent[c["sku"]] = sent.get(c["sku"], 0) + int(c["quantity"])
            parts = sent or self.bom.get(line["sku"]) or {line["sku"]: 1}
            for sku, count in parts.items():
                units.append((line["line_id"], sku, int(line["quantity"]) * int(count)))
        return units

    def store_warehouse(self, shop_id: str) -> str | None:
        """The stock location of a store (POS shop id), if the catalogue tracks it."""
        return next((w.id for w in self.warehouses if w.store and w.store == shop_id), None)

    def route(self, province: str | None, policy: str) -> tuple[list[str], str]:
        """Distribution warehouses in preference order for a receiver, and why (stores
        sell their own stock and never ship online orders)."""
        centres = tuple(w for w in self.warehouses if not w.store)
        ids = [w.id for w in centres]
        if policy == "cheapest":
            def cost(w: str) -> int:
                table = self.rates.get(w, {})
                return table.get(province or "", table.get("*", 10**9))
            ranked = sorted(ids, key=lambda w: (cost(w), ids.index(w)))
            return ranked, f"cheapest for {province or 'unknown province'}"

        def distance(w: Warehouse) -> int:
            if province and w.province == province:
                return 0
            return 1 if province in w.near else 2
        ranked_w = sorted(centres, key=lambda w: (distance(w), ids.index(w.id)))
        return [w.id for w in ranked_w], f"nearest to {province or 'unknown province'}"
