"""The Grafana dashboards: generated from orderpulse/dashboards.py, committed in sync,
and referring only to what exists: the provisioned datasources, the metrics the code
registers, the tables and views the DDL creates, Grafana's unit ids, and macros that
tests/integration/test_dashboard_queries.py knows how to substitute before it runs
every query on a real Prometheus and ClickHouse engine."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from orderpulse import cli, dashboards, grafana
from orderpulse.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "dashboards" / "grafana"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "orderpulse.yml"
DDL_DIR = ROOT / "schemas" / "clickhouse"

BOARDS = {name: build() for name, build in dashboards.DASHBOARDS.items()}
# Grafana's unit ids in use (packages/grafana-data/src/valueFormats/categories.ts).
GRAFANA_UNITS = {"short", "none", "percentunit", "s", "d", "cps", "cpm", "reqps"}
# Every macro and variable a query may contain: the integration test substitutes these.
MACROS = {"$__rate_interval", "$__range", "$channel", "${channel:singlequote}",
          "$__timeFilter", "$__timeInterval", "$__conditionalAll"}
# PromQL words that are not series names.
PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                   "group_right", "offset", "bool"}


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def targets(uid: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query on datasource ``uid``, all dashboards."""
    for board in BOARDS.values():
        for panel in data_panels(board):
            for target in panel["targets"]:
                if target["datasource"]["uid"] == uid:
                    yield panel["title"], target


PROM_TARGETS = list(targets(grafana.PROMETHEUS["uid"]))
SQL_TARGETS = list(targets(grafana.CLICKHOUSE["uid"]))


# --- generated and committed ------------------------------------------------------

def test_committed_dashboards_are_the_generated_ones() -> None:
    assert dashboards.stale(GRAFANA_DIR) == [], "run `orderpulse dashboards` and commit"
    assert sorted(p.name for p in GRAFANA_DIR.iterdir()) == sorted(dashboards.DASHBOARDS)


def test_check_fails_on_a_hand_edit_and_passes_after_writing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             ) -> None:
    assert cli.main(["dashboards", "--check", "--dir", str(tmp_path)]) == 1
    assert cli.main(["dashboards", "--dir", str(tmp_path)]) == 0
    assert cli.main(["dashboards", "--check", "--dir", str(tmp_path)]) == 0
    edited = tmp_path / "order-flow.json"
    edited.write_text(edited.read_text().replace('"Order flow"', '"Edited in the UI"'))
    (tmp_path / "extra.json").write_text("{}")
    assert cli.main(["dashboards", "--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{edited}: differs" in err and "extra.json: not generated" in err


def test_generation_is_deterministic() -> None:
    assert dashboards.generate() == dashboards.generate()


# --- dashboards and panels ----------------------------------------------------------

def test_four_dashboards_with_unique_uids_and_titles() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    titles = [b["title"] for b in BOARDS.values()]
    assert titles == ["Order flow", "Order health", "Inventory", "Pipeline internals"]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)


@pytest.mark.parametrize("name", BOARDS)
def test_panels_have_unique_ids_titles_and_do_not_overlap(name: str) -> None:
    panels = BOARDS[name]["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    assert all(p["title"] for p in panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= grafana.GRID_WIDTH
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine


def provisioned() -> dict[str, str]:
    """uid -> type of the datasources Grafana is provisioned with."""
    doc = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {d["uid"]: d["type"] for d in doc["datasources"]}


@pytest.mark.parametrize("name", BOARDS)
def test_every_panel_queries_a_provisioned_datasource(name: str) -> None:
    sources = provisioned()
    for panel in data_panels(BOARDS[name]):
        ds = panel["datasource"]
        assert sources.get(ds["uid"]) == ds["type"], panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == ds for t in panel["targets"]), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


@pytest.mark.parametrize("name", BOARDS)
def test_every_panel_has_a_grafana_unit_and_a_description(name: str) -> None:
    for panel in data_panels(BOARDS[name]):
        config = panel["fieldConfig"]
        units = [config["defaults"]["unit"]] + [
            prop["value"] for o in config["overrides"] for prop in o["properties"]
            if prop["id"] == "unit"]
        assert set(units) <= GRAFANA_UNITS, panel["title"]
        assert panel["description"], panel["title"]


def test_the_channel_variable_is_defined_where_it_is_used() -> None:
    for board in BOARDS.values():
        defined = {v["name"] for v in board["templating"]["list"]}
        for panel in data_panels(board):
            text = str(panel["targets"])
            assert "$channel" not in text or "channel" in defined, panel["title"]


def test_queries_use_only_substitutable_macros() -> None:
    for title, target in PROM_TARGETS + SQL_TARGETS:
        text = target.get("expr") or target["rawSql"]
        used = set(re.findall(r"\$\{\w+(?::\w+)?\}|\$\w+", text))
        assert used <= MACROS, (title, used - MACROS)


# --- PromQL names registered metrics --------------------------------------------------

def exported_series() -> set[str]:
    """Every series name ``Metrics.create`` registers (lag metrics included)."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes[family.type]}


def series_names(expr: str) -> set[str]:
    """The series an expression selects: identifiers outside strings, label matchers,
    range selectors and groupings, that are neither a function call nor a keyword."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    return {name for name, call in re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?", bare)
            if not call and name not in PROMQL_KEYWORDS}


def test_series_names_are_found() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, channel) (rate(a_bucket{channel=~"x|y"}'
            '[$__rate_interval]))) / on (channel) b and c offset 1h')
    assert series_names(expr) == {"a_bucket", "b", "c"}


@pytest.mark.parametrize(("title", "target"), PROM_TARGETS,
                         ids=[f"{t}-{x['refId']}" for t, x in PROM_TARGETS])
def test_promql_selects_only_registered_metrics(title: str, target: dict[str, Any]) -> None:
    used = series_names(target["expr"])
    assert used, f"{title}: no series selected"
    assert used <= exported_series(), f"{title}: {used - exported_series()}"


def test_key_metrics_are_charted() -> None:
    charted = {n for _, t in PROM_TARGETS for n in series_names(t["expr"])}
    stems = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in charted}
    wanted = {"orderpulse_events", "orderpulse_webhook_requests", "orderpulse_poll_requests",
              "orderpulse_dead_letters", "orderpulse_duplicates",
              "orderpulse_end_to_end_latency_seconds", "orderpulse_stuck_orders",
              "orderpulse_open_orders", "orderpulse_stuck_alerts",
              "orderpulse_oversell_prevented", "orderpulse_out_of_stock_orders",
              "orderpulse_stock_events", "orderpulse_stock_units",
              "orderpulse_consumer_lag_messages", "orderpulse_consumer_lag_seconds",
              "orderpulse_sink_batch_rows", "orderpulse_sink_batch_seconds",
              "orderpulse_sink_failures", "orderpulse_process_up",
              "orderpulse_order_table_entries", "orderpulse_stock_messages",
              "orderpulse_inventory_invariant_violations", "orderpulse_lag_scrape_errors"}
    assert wanted - stems == set()


# --- SQL names tables and views of the DDL -------------------------------------------

def ddl_objects() -> set[str]:
    """Tables and views the versioned DDL creates (in database ``{db}``)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(DDL_DIR.glob("*.sql")))
    return set(re.findall(r"CREATE (?:TABLE IF NOT EXISTS|OR REPLACE VIEW) \{db\}\.(\w+)", text))


@pytest.mark.parametrize(("title", "target"), SQL_TARGETS, ids=[t for t, _ in SQL_TARGETS])
def test_sql_reads_only_ddl_tables_fully_qualified(title: str, target: dict[str, Any]) -> None:
    sources = re.findall(r"\b(?:FROM|JOIN)\s+([\w.]+)", target["rawSql"], re.IGNORECASE)
    assert sources, f"{title}: reads no table"
    for source in sources:
        database, _, name = source.partition(".")
        assert database == "orderpulse" and name in ddl_objects(), f"{title}: {source}"


@pytest.mark.parametrize(("title", "target"), SQL_TARGETS, ids=[t for t, _ in SQL_TARGETS])
def test_time_series_sql_returns_a_time_column(title: str, target: dict[str, Any]) -> None:
    series = target["format"] == 0
    assert series == (target["queryType"] == "timeseries"), title
    assert series == ("$__timeInterval(" in target["rawSql"]), title
    if series:
        assert re.search(r"AS time\b.*ORDER BY time\b", target["rawSql"], re.DOTALL), title


# --- the JSON model helpers ------------------------------------------------------------

def test_layout_wraps_at_the_grid_width_and_rows_start_a_line() -> None:
    q = [grafana.prom("m")]
    panels = grafana.layout([
        grafana.timeseries("a", "", q, unit="s", w=16), grafana.timeseries("b", "", q, unit="s"),
        grafana.row("r"), grafana.stat("c", "", q, unit="s", w=6, h=5)])
    assert [(p["id"], p["gridPos"]) for p in panels] == [
        (1, {"h": 8, "w": 16, "x": 0, "y": 0}), (2, {"h": 8, "w": 12, "x": 0, "y": 8}),
        (3, {"h": 1, "w": 24, "x": 0, "y": 16}), (4, {"h": 5, "w": 6, "x": 0, "y": 17})]


def test_a_panel_never_mixes_datasources() -> None:
    with pytest.raises(ValueError, match="one datasource per panel"):
        grafana.table("t", "", [grafana.prom("m"), grafana.sql("SELECT 1")])
