"""Grafana's dashboard JSON model, built by small pure functions (no Grafana client).

A panel is a plain dict in the shape Grafana saves (schemaVersion 39); `layout` gives
the panels of one dashboard their ids and grid positions in order. Only what the
orderpulse dashboards use is modelled: time series, stat and table panels, rows, a
Prometheus or ClickHouse target, a multi-value query variable, and the PromQL shapes
the panels repeat (summed rates and histogram quantiles over ``$__rate_interval``).

The datasources are the two provisioned by deploy/grafana/provisioning/datasources,
referred to by uid; a panel never mixes them.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

Json = dict[str, Any]

PROMETHEUS: Json = {"type": "prometheus", "uid": "orderpulse-prometheus"}
CLICKHOUSE: Json = {"type": "grafana-clickhouse-datasource", "uid": "orderpulse-clickhouse"}

SCHEMA_VERSION = 39  # Grafana 10.4+; newer versions migrate it on load
GRID_WIDTH = 24  # Grafana's grid is 24 columns wide

# grafana-clickhouse-datasource (v4) query model: `format` is the plugin's numeric
# enum (0 time series, 1 table), `queryType` picks the editor's display.
_CH_TIME_SERIES, _CH_TABLE = 0, 1


# --- PromQL with Grafana's $__rate_interval -----------------------------------------

def series(metric: str, matchers: str = "") -> str:
    """A vector selector: ``metric{matchers}``, or the bare name."""
    return f"{metric}{{{matchers}}}" if matchers else metric


def rate(metric: str, matchers: str = "", by: str = "", per: int = 1) -> str:
    """``sum by (by) (rate(metric{matchers}[$__rate_interval]))``, times ``per``
    (60: per minute, for counters that move a few times an hour)."""
    inner = f"rate({series(metric, matchers)}[$__rate_interval])"
    summed = f"sum by ({by}) ({inner})" if by else f"sum({inner})"
    return f"{per} * {summed}" if per != 1 else summed


def quantile(q: float, histogram: str, matchers: str = "", by: str = "") -> str:
    """``histogram_quantile`` over a histogram's bucket rates, per ``by``."""
    keep = f"le, {by}" if by else "le"
    return (f"histogram_quantile({q}, sum by ({keep}) "
            f"(rate({series(histogram + '_bucket', matchers)}[$__rate_interval])))")


# --- targets ---------------------------------------------------------------------

def prom(expr: str, legend: str = "") -> Json:
    """A PromQL target; ``legend`` is a legendFormat such as ``{{channel}}``."""
    return {"datasource": PROMETHEUS, "editorMode": "code", "expr": expr,
            "legendFormat": legend or "__auto", "range": True}


def sql(query: str, *, series: bool = False) -> Json:
    """A ClickHouse SQL target: a time series (a `time` column, long format: the
    plugin pivots the other string columns into series) or a table."""
    return {"datasource": CLICKHOUSE, "editorType": "sql",
            "format": _CH_TIME_SERIES if series else _CH_TABLE,
            "queryType": "timeseries" if series else "table", "rawSql": query.strip()}


# --- panels ----------------------------------------------------------------------

def _panel(kind: str, title: str, description: str, targets: list[Json], *, unit: str,
           w: int, h: int) -> Json:
    sources = {t["datasource"]["uid"] for t in targets}
    if len(sources) != 1:
        raise ValueError(f"panel {title!r}: one datasource per panel, got {sorted(sources)}")
    return {
        "type": kind, "title": title, "description": description,
        "datasource": targets[0]["datasource"],
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": ref, **t} for ref, t in zip(string.ascii_uppercase, targets,
                                                           strict=False)],
    }


def timeseries(title: str, description: str, targets: list[Json], *, unit: str,
               w: int = 12, h: int = 8) -> Json:
    """Lines over time; the legend lists every series."""
    panel = _panel("timeseries", title, description, targets, unit=unit, w=w, h=h)
    panel["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "showPoints": "never"}
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(title: str, description: str, targets: list[Json], *, unit: str, w: int = 6,
         h: int = 5, red_above: float | None = None,
         mappings: Mapping[str, tuple[str, str]] | None = None) -> Json:
    """The last value of each series (or each numeric column of a one-row table).
    ``red_above`` turns it red past that value; ``mappings`` shows a value as text
    in a colour, e.g. ``{"0": ("DOWN", "red")}``."""
    panel = _panel("stat", title, description, targets, unit=unit, w=w, h=h)
    steps: list[Json] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    defaults = panel["fieldConfig"]["defaults"]
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    if mappings:
        defaults["mappings"] = [{"type": "value", "options": {
            value: {"text": text, "color": color, "index": i}
            for i, (value, (text, color)) in enumerate(mappings.items())}}]
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value", "graphMode": "none", "justifyMode": "auto",
        "orientation": "auto", "textMode": "auto",
    }
    return panel


def table(title: str, description: str, targets: list[Json], *, unit: str = "short",
          w: int = 12, h: int = 8) -> Json:
    """Rows as they come; per-column units with `with_units`."""
    panel = _panel("table", title, description, targets, unit=unit, w=w, h=h)
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


def with_units(panel: Json, units: Mapping[str, str]) -> Json:
    """Override the panel's unit for the named fields (columns or series)."""
    panel["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byName", "options": field},
         "properties": [{"id": "unit", "value": unit}]}
        for field, unit in units.items()]
    return panel


def row(title: str) -> Json:
    """A section header across the grid (not collapsed: its panels follow it)."""
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": 0}}


def layout(panels: Iterable[Json]) -> list[Json]:
    """Number the panels 1.. and place them left to right, wrapping at the grid's
    width; a row always starts a new line."""
    placed, x, y, line_h = [], 0, 0, 0
    for pid, panel in enumerate(panels, start=1):
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if panel["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line_h = 0, y + line_h, 0
        placed.append({"id": pid, **panel, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x, line_h = x + w, max(line_h, h)
        if panel["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return placed


# --- variables and the dashboard --------------------------------------------------

def query_variable(name: str, label: str, definition: str) -> Json:
    """A multi-value Prometheus variable, `All` by default (regex ``.*``)."""
    return {
        "name": name, "label": label, "type": "query", "datasource": PROMETHEUS,
        "definition": definition,
        "query": {"qryType": 1, "query": definition, "refId": "PrometheusVariableQueryEditor"},
        "refresh": 2, "regex": "", "sort": 1, "multi": True, "includeAll": True,
        "allValue": ".*", "current": {"text": ["All"], "value": ["$__all"]},
    }


def dashboard(uid: str, title: str, description: str, panels: Iterable[Json], *,
              variables: Iterable[Json] = (), tags: tuple[str, ...] = ("orderpulse",)) -> Json:
    """A whole dashboard, linked to the others sharing its first tag."""
    return {
        "uid": uid, "title": title, "description": description, "tags": list(tags),
        "editable": False, "graphTooltip": 1, "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION, "version": 1,
        "links": [{"type": "dashboards", "title": "orderpulse", "tags": [tags[0]],
                   "asDropdown": True, "includeVars": True, "keepTime": True}],
        "annotations": {"list": []},
        "templating": {"list": list(variables)},
        "panels": layout(panels),
    }
