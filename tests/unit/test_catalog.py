from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.catalog import Catalog, Warehouse

DEMO = Catalog.load()


def line(sku: str, qty: int, line_id: str = "1",
         components: list[tuple[str, int]] | None = None) -> dict[str, Any]:
    return {"line_id": line_id, "sku": sku, "quantity": qty,
            "components": [{"sku": s, "quantity": q} for s, q in components or []]}


def test_demo_catalogue_loads_typed() -> None:
    assert [w.id for w in DEMO.warehouses][:3] == ["WH-SH", "WH-GZ", "WH-CD"]
    assert DEMO.store_warehouse("SH-001") == "STORE-SH-001"
    assert DEMO.store_warehouse("nowhere") is None
    assert DEMO.warehouses[0] == Warehouse("WH-SH", "上海市", ("浙江省", "江苏省", "安徽省"))
    assert DEMO.bom["GIFT-SET-1"] == {"MUG-LOGO": 1, "SOCKS-3PK": 2}
    assert DEMO.rates["WH-GZ"]["*"] == 1300 and DEMO.safety_stock == {"HOODIE-GRY-M": 2}
    assert DEMO.opening_stock["WH-CD"]["HOODIE-GRY-M"] == 60


def test_a_plain_line_is_its_own_stock_unit() -> None:
    assert DEMO.explode([line("TEE-BLK-M", 3, "7")]) == [("7", "TEE-BLK-M", 3)]


def test_a_bundle_explodes_through_the_bill_of_materials() -> None:
    assert DEMO.explode([line("GIFT-SET-1", 2, "1"), line("CAP-RED", 1, "2")]) == [
        ("1", "MUG-LOGO", 2), ("1", "SOCKS-3PK", 4), ("2", "CAP-RED", 1)]


def test_the_channels_components_win_over_the_bill_of_materials() -> None:
    units = DEMO.explode([line("GIFT-SET-1", 3, components=[("MUG-LOGO", 2)])])
    assert units == [("1", "MUG-LOGO", 6)]


def test_a_component_listed_twice_counts_twice() -> None:
    units = DEMO.explode([line("BOX", 2, components=[("SOCKS-3PK", 1), ("MUG-LOGO", 1),
                                                     ("SOCKS-3PK", 2)])])
    assert sorted(units) == [("1", "MUG-LOGO", 2), ("1", "SOCKS-3PK", 6)]


@pytest.mark.parametrize(("province", "ranked"), [
    ("广东省", ["WH-GZ", "WH-SH", "WH-CD"]),  # the warehouse in the province
    ("重庆市", ["WH-CD", "WH-SH", "WH-GZ"]),  # a neighbour
    ("北京市", ["WH-SH", "WH-GZ", "WH-CD"]),  # neither: declared order
    (None, ["WH-SH", "WH-GZ", "WH-CD"]),
])
def test_nearest_routing(province: str | None, ranked: list[str]) -> None:
    order, reason = DEMO.route(province, "nearest")
    assert order == ranked
    assert reason == f"nearest to {province or 'unknown province'}"


@pytest.mark.parametrize(("province", "ranked"), [
    ("北京市", ["WH-SH", "WH-GZ", "WH-CD"]),  # 1200 < 1400 < 1600 ('*')
    ("福建省", ["WH-GZ", "WH-SH", "WH-CD"]),  # 900 < 1500 ('*') < 1600 ('*')
    ("四川省", ["WH-CD", "WH-GZ", "WH-SH"]),
    (None, ["WH-GZ", "WH-SH", "WH-CD"]),  # everyone's '*'
])
def test_cheapest_routing(province: str | None, ranked: list[str]) -> None:
    order, reason = DEMO.route(province, "cheapest")
    assert order == ranked and reason.startswith("cheapest for ")


def test_cheapest_ties_keep_the_declared_order_and_unpriced_warehouses_go_last() -> None:
    catalog = Catalog((Warehouse("A", "x"), Warehouse("B", "y"), Warehouse("C", "z")),
                      rates={"B": {"*": 500}, "C": {"*": 500}})
    assert catalog.route("q", "cheapest")[0] == ["B", "C", "A"]


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.sampled_from(["上海市", "浙江省", "广东省", "云南省", "北京市"]),
                 st.text(max_size=4)),
       st.sampled_from(["nearest", "cheapest"]))
def test_routing_always_ranks_every_warehouse_once(province: str | None, policy: str) -> None:
    ranked, _reason = DEMO.route(province, policy)
    # Every distribution centre once; stores never ship online orders.
    assert sorted(ranked) == sorted(w.id for w in DEMO.warehouses if not w.store)
