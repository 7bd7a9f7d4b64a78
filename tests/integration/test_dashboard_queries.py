"""Every query of every committed dashboard, run for real: the pipeline's steps on the
embedded broker (streams, sink, webhook, lag exporter) take a few signed webhooks, a
real Prometheus (tests/promstack.py) scrapes them, and each PromQL query goes through
its HTTP API; then each ClickHouse query runs on the chdb database the sink filled.

Grafana's macros are substituted first, as Grafana would: ``$__rate_interval`` and
``$__range`` by windows, ``$channel`` by All (``.*``) and by one channel, and the
ClickHouse plugin's ``$__timeFilter``, ``$__timeInterval`` and ``$__conditionalAll``
by the SQL its backend generates (pkg/macros/macros.go of grafana-clickhouse-datasource).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from orderpulse.clickhouse import EmbeddedClickHouse, apply_ddl
from orderpulse.errors import ClickHouseError
from orderpulse.runner import Pipeline
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.integration.test_pipeline_e2e import PAID, post
from tests.promstack import ROOT, PromStack, get_json

pytestmark = pytest.mark.integration

PROMETHEUS_UID, CLICKHOUSE_UID = "orderpulse-prometheus", "orderpulse-clickhouse"
# Grafana's $__rate_interval is at least 4 scrape intervals; Prometheus scrapes every
# second here, and 10 s leaves room for a late scrape.
RATE_INTERVAL, RANGE = "10s", "5m"
CHANNELS = (".*", "shopify")  # the variable at All, and at one channel
INTERVAL_S = 10  # what $__timeInterval buckets by
# Panels that must show data after the traffic below, not just run. No stock is seeded,
# so the paid orders cannot reserve theirs: out-of-stock orders and ledger refusals.
# Left out: pollers (no pull channel runs), stuck orders (none is past its limit), sink
# failures, refunds and shipments (none happen).
KEY_PROM = {"Events in per step and channel", "Events out per step and channel",
            "Webhook answers", "Dead letters", "Duplicates and quarantined",
            "End-to-end latency p50 / p99", "End-to-end latency p99 per channel",
            "Open orders per channel", "Duplicate rate per channel",
            "Dead-letter rate per channel", "Out-of-stock orders", "Stock events by kind",
            "Stock units", "Process up", "Consumer lag (records)", "Consumer lag (seconds)",
            "Rows landed per table", "Batch rows p50 / p99", "Insert duration p50 / p99",
            "Order table entries", "Stock messages in flight",
            "Inventory invariant violations", "Lag scrape errors"}
KEY_SQL = {"Events landed per channel", "Events landed by channel and status",
           "State delay p50 / p95 per channel", "Duplicate rate per channel (landed)",
           "Dead-letter rate per channel and reason (landed)", "Consistency index per channel",
           "Ledger entries by kind", "Backlog", "Phantom reservations (landed)",
           "Oversell prevented (landed)"}

BOARDS = [json.loads(path.read_text(encoding="utf-8"))
          for path in sorted((ROOT / "dashboards" / "grafana").glob("*.json"))]
Panel = dict[str, Any]


def committed_panels(uid: str) -> list[Panel]:
    """Every panel on datasource ``uid`` in dashboards/grafana/*.json: the files Grafana
    loads (tests/unit/test_dashboards.py keeps them equal to what the code generates)."""
    return [panel for board in BOARDS for panel in board["panels"]
            if panel.get("datasource", {}).get("uid") == uid]


# --- macro substitution ------------------------------------------------------------

def promql(expr: str, channel: str) -> str:
    out = (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", RANGE)
           .replace("$channel", channel))
    assert "$" not in out, out
    return out


def expand(sql: str, macro: str, render: Callable[[list[str]], str]) -> str:
    """Replace every ``$__macro(arg, ...)`` (arguments may hold parentheses)."""
    head = f"$__{macro}("
    while (start := sql.find(head)) >= 0:
        depth, args, arg_start, i = 1, [], start + len(head), start + len(head)
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            if (sql[i] == "," and depth == 1) or depth == 0:
                args.append(sql[arg_start:i].strip())
                arg_start = i + 1
            i += 1
        sql = sql[:start] + render(args) + sql[i:]
    return sql


def clickhouse_sql(sql: str, database: str, channel: str, start: int, end: int) -> str:
    """The SQL the plugin's backend runs, over ``database`` instead of ``orderpulse``."""
    def conditional_all(args: list[str]) -> str:
        return "1=1" if channel == ".*" else args[0].replace("${channel:singlequote}",
                                                             f"'{channel}'")
    out = expand(sql, "conditionalAll", conditional_all)
    out = expand(out, "timeFilter", lambda a: f"{a[0]} >= toDateTime({start}) AND "
                                              f"{a[0]} <= toDateTime({end})")
    out = expand(out, "timeInterval", lambda a: f"toStartOfInterval(toDateTime({a[0]}), "
                                                f"INTERVAL {INTERVAL_S} second)")
    out = re.sub(r"\borderpulse\.", f"{database}.", out)
    assert "$" not in out, out
    return out


def test_macro_expansion_mirrors_the_plugin() -> None:
    sql = ("SELECT $__timeInterval(at) AS time FROM orderpulse.t WHERE $__timeFilter(at) "
           "AND $__conditionalAll(channel IN (${channel:singlequote}), $channel)")
    assert clickhouse_sql(sql, "op_x", "shopify", 1, 2) == (
        "SELECT toStartOfInterval(toDateTime(at), INTERVAL 10 second) AS time FROM op_x.t "
        "WHERE at >= toDateTime(1) AND at <= toDateTime(2) AND channel IN ('shopify')")
    assert clickhouse_sql(sql, "op_x", ".*", 1, 2).endswith("AND 1=1")


# --- Prometheus ---------------------------------------------------------------------

def instant(stack: PromStack, expr: str) -> dict[str, Any]:
    """/api/v1/query's whole answer, errors (HTTP 400/422 with a JSON body) included."""
    url = f"{stack.prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        answer: dict[str, Any] = get_json(url)
    except urllib.error.HTTPError as exc:
        answer = json.loads(exc.read() or b"{}") or {"status": f"HTTP {exc.code}"}
    return answer


def run_panel(stack: PromStack, panel: Panel, channel: str, *, key: bool) -> str | None:
    """None when every query of the panel succeeds (and, for a key panel, one of them
    returns data within 20 s); else what went wrong."""
    exprs = [promql(target["expr"], channel) for target in panel["targets"]]
    deadline = time.monotonic() + 20
    while True:
        answers = [instant(stack, expr) for expr in exprs]
        for expr, answer in zip(exprs, answers, strict=True):
            if answer.get("status") != "success":
                return f"{panel['title']}: {expr}\n  -> {answer}"
        if not key or any(answer["data"]["result"] for answer in answers):
            return None
        if time.monotonic() > deadline:
            return f"{panel['title']} ({channel}): no data\n  " + "\n  ".join(exprs)
        time.sleep(0.5)


def label_values(stack: PromStack, definition: str) -> list[str]:
    """A Grafana ``label_values(selector, label)`` variable query, on Prometheus."""
    call = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert call is not None, definition
    query = urllib.parse.urlencode({"match[]": call[1]})
    answer = get_json(f"{stack.prometheus.url}/api/v1/label/{call[2]}/values?{query}")
    assert answer["status"] == "success", answer
    values: list[str] = answer["data"]
    return values


@pytest.fixture
def promstack(tmp_path: Path) -> Iterator[Callable[[list[str]], PromStack]]:
    started: list[PromStack] = []

    def start(targets: list[str]) -> PromStack:
        stack = PromStack.start(tmp_path / "promstack", targets=targets, rule_files=[])
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


# --- traffic ------------------------------------------------------------------------

def order(n: int, status: str) -> bytes:
    return orjson.dumps({**PAID, "id": 7_400_000_000_000_000_000 + n, "financial_status": status,
                         "updated_at": datetime.now(UTC).isoformat(timespec="seconds")})


def send_traffic(pipeline: Pipeline) -> None:
    """Three orders created and paid, one retried delivery, one broken body, one
    forged signature."""
    for n in range(3):
        assert post(pipeline, "orders/create", order(n, "pending"), f"c{n}") == 200
        assert post(pipeline, "orders/paid", order(n, "paid"), f"p{n}") == 200
    assert post(pipeline, "orders/paid", order(0, "paid"), "p0") == 200
    assert post(pipeline, "orders/updated", b'{"id": 1, "total', "broken") == 200
    assert post(pipeline, "orders/paid", order(9, "paid"), "forged", secret=b"wrong") == 401


def wait_landed(pipeline: Pipeline) -> None:
    ok = pipeline.wait_until(lambda: (c := pipeline.counts())["landed"] >= 6
                             and c["dead_landed"] >= 1, 40)
    assert ok, f"{pipeline.counts()}\n" + "\n".join(
        c.log_tail() for c in pipeline.children.values())


# --- the test -------------------------------------------------------------------------

@pytest.mark.timeout(90)
def test_every_dashboard_query_runs_on_prometheus_and_clickhouse(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory,
        promstack: Callable[[list[str]], PromStack]) -> None:
    prom_panels, sql_panels = committed_panels(PROMETHEUS_UID), committed_panels(CLICKHOUSE_UID)
    titles = {panel["title"] for panel in prom_panels + sql_panels}
    assert (KEY_PROM | KEY_SQL) - titles == set(), "a key panel was renamed"

    settings = settings_factory(lag_interval_s=1.0, stuck_tick_s=1.0)
    pipeline = pipeline_factory(settings, steps=("streams", "sink", "webhook", "lag"))
    stack = promstack([f"127.0.0.1:{c.metrics_port}" for c in pipeline.children.values()])
    send_traffic(pipeline)
    wait_landed(pipeline)

    failures = [failure for panel in prom_panels for channel in CHANNELS
                if (failure := run_panel(stack, panel, channel, key=panel["title"] in KEY_PROM))]
    for variable in (v for board in BOARDS for v in board["templating"]["list"]):
        assert label_values(stack, variable["definition"]) == ["shopify"], variable["name"]

    for child in pipeline.children.values():  # the sink flushes; chdb is free again
        assert child.stop() == 0, child.log_tail()
    failures += run_sql(settings.chdb_path, settings.clickhouse_database, sql_panels)
    assert not failures, "\n".join(failures)


def run_sql(path: Path, database: str, panels: list[Panel]) -> list[str]:
    """Run every ClickHouse query for each channel value; what failed or came back
    empty (for a key panel)."""
    now = int(time.time())
    client = EmbeddedClickHouse(str(path), database)
    failures = []
    try:
        apply_ddl(client)
        for title, target in ((p["title"], t) for p in panels for t in p["targets"]):
            for channel in CHANNELS:
                sql = clickhouse_sql(target["rawSql"], database, channel, now - 3600, now + 60)
                try:
                    rows = client.query_rows(sql)
                except ClickHouseError as exc:
                    failures.append(f"{title}: {sql}\n  -> {exc}")
                    continue
                if title in KEY_SQL and not rows:
                    failures.append(f"{title}: no rows\n  {sql}")
    finally:
        client.close()
    return failures
