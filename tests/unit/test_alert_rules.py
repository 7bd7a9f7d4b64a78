"""The alert rules, checked by the real tools (promtool check/test, amtool) and against
what an on-call needs: a severity, a summary, a description and a runbook section per
alert, a unit test that fires it and one that keeps it quiet, bounded labels only, and
metric names that the code exports.

promtool and amtool are Debian packages (`make tools`); without them these tests fail
with the install command, they are never skipped."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from orderpulse.metrics import Metrics
from tests.promstack import ALERTMANAGER_CONFIG, ROOT, RULES, binary

RULE_TESTS = sorted((RULES.parent / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMETHEUS_CONFIG = ROOT / "dashboards" / "prometheus.yml"
SEVERITIES = {"page", "ticket"}
SECTION_PARTS = ("Meaning", "Impact", "First checks", "Fixes")
# Every label an alert may carry or a rule may group by: bounded sets (steps, channels,
# states, tables, groups, topics, partitions, stages, verdicts, scrape targets).
BOUNDED_LABELS = {"channel", "state", "step", "table", "group", "topic", "partition", "stage",
                  "verdict", "job", "instance", "le", "outcome", "slo", "severity"}


def run(tool: str, *args: str | Path) -> str:
    proc = subprocess.run([binary(tool), *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{tool} {' '.join(map(str, args))} failed:\n{output}"
    return output


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def anchor(alert: str) -> str:
    """The runbook anchor of an alert: OrderpulseSinkNotLanding -> orderpulse-sink-not-landing."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", alert).lower()


def runbook_sections() -> dict[str, str]:
    """Runbook text per explicit anchor (``<a id="...">``), up to the next one."""
    parts = re.split(r'<a id="([a-z0-9-]+)"></a>', RUNBOOK.read_text(encoding="utf-8"))
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# --- the real tools -----------------------------------------------------------------

def test_rule_file_passes_promtool_check() -> None:
    assert f"SUCCESS: {len(rules())} rules found" in run("promtool", "check", "rules", RULES)


def test_prometheus_config_loads_the_rule_file() -> None:
    out = run("promtool", "check", "config", PROMETHEUS_CONFIG)
    assert "SUCCESS: 1 rule files found" in out


def test_alertmanager_config_passes_amtool_check() -> None:
    run("amtool", "check-config", ALERTMANAGER_CONFIG)


def test_rule_unit_tests_exist() -> None:
    assert len(RULE_TESTS) >= 1


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda path: path.name)
def test_rule_unit_tests_pass(path: Path) -> None:
    assert "SUCCESS" in run("promtool", "test", "rules", path)


# --- what the rules promise -----------------------------------------------------------

def test_every_alert_is_tested_firing_and_quiet() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fired == set(), "alerts no promtool test fires"
    assert names - quiet == set(), "alerts no promtool test keeps quiet"
    assert (fired | quiet) - names == set(), "tests of alerts that do not exist"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_and_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["labels"]) <= BOUNDED_LABELS
    for key in ("summary", "description", "runbook_url"):
        assert rule["annotations"].get(key, "").strip(), f"no {key}"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_runbook_url_points_at_a_full_section(rule: dict[str, Any]) -> None:
    path, _, fragment = rule["annotations"]["runbook_url"].partition("#")
    assert ROOT / path == RUNBOOK
    assert fragment == anchor(rule["alert"])
    section = runbook_sections().get(fragment)
    assert section is not None, f"docs/runbook.md has no anchor {fragment}"
    assert section.lstrip().startswith(f"## {rule['alert']}\n")
    for part in SECTION_PARTS:
        body = re.search(rf"^### {part}\n(.*?)(?=^#|\Z)", section, re.MULTILINE | re.DOTALL)
        assert body and body.group(1).strip(), f"{fragment}: no '{part}'"


def test_runbook_links_between_sections_resolve() -> None:
    sections = runbook_sections()
    links = set(re.findall(r"\]\(#([a-z0-9-]+)\)", RUNBOOK.read_text(encoding="utf-8")))
    assert links - set(sections) == set()
    assert set(sections) == {anchor(rule["alert"]) for rule in alerts()}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule.get("alert", rule.get("record")))
def test_rules_group_and_match_by_bounded_labels_only(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    grouped = re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr)
    matched = re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)", expr)
    labels = {name.strip() for group in grouped for name in group.split(",") if name.strip()}
    assert labels | set(matched) <= BOUNDED_LABELS


def exported_series() -> set[str]:
    """Every series name orderpulse exports (counters as _total, histograms' parts)."""
    registry = CollectorRegistry()
    Metrics.create(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule.get("alert", rule.get("record")))
def test_rules_use_metrics_the_code_exports(rule: dict[str, Any]) -> None:
    # Recording rules' names (level:metric:operations) are not exported series.
    used = set(re.findall(r"(?<![:\w])(orderpulse_[a-z_]+)(?![:\w])", rule["expr"]))
    assert used - exported_series() == set()
