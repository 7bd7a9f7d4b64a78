"""The stuck-order alert end to end: the streams worker on the embedded broker, a real
Prometheus scraping it and evaluating the repository's rules (with short `for:`), a real
Alertmanager with the repository's routing. Paid orders that never ship must reach
Alertmanager; shipping them must resolve it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from orderpulse.scrape import total
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.integration.test_lifecycle_stream import produce, shopify_raw
from tests.promstack import RULES, PromStack, with_short_for

pytestmark = pytest.mark.integration

STUCK = "OrderpulseStuckOrdersPresent"
PromStackFactory = Callable[..., PromStack]


@pytest.fixture
def promstack_factory(tmp_path: Path) -> Iterator[PromStackFactory]:
    """Start Prometheus and Alertmanager for a test; both stop at teardown."""
    started: list[PromStack] = []

    def make(*, targets: list[str], rule_files: list[Path]) -> PromStack:
        stack = PromStack.start(tmp_path / f"promstack-{len(started)}", targets=targets,
                                rule_files=rule_files)
        started.append(stack)
        return stack

    yield make
    for stack in started:
        stack.stop()


@pytest.mark.timeout(90)
def test_stuck_orders_alert_reaches_alertmanager_and_resolves(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory,
        promstack_factory: PromStackFactory, tmp_path: Path) -> None:
    # PAID is stuck after 2 s, checked every second; every alert waits 1 s instead of
    # its production `for:` (the expressions are the real ones).
    settings = settings_factory(stuck_tick_s=1.0, stuck_limits_s={"PAID": 2.0})
    pipeline = pipeline_factory(settings, steps=("streams",))
    worker = pipeline.children["streams"]
    stack = promstack_factory(targets=[f"127.0.0.1:{worker.metrics_port}"],
                              rule_files=[with_short_for(RULES, tmp_path / "rules.yml", "1s")])

    def worker_side() -> str:
        stuck = stack.query("orderpulse_stuck_orders")
        return f"orderpulse_stuck_orders: {stuck}\nstreams log:\n{worker.log_tail()}"

    # Three orders paid 30 s ago (already past the limit), never shipped. Fewer than the
    # stuck-rate page's 10, which would inhibit this ticket in Alertmanager.
    orders = [7_300_000_000_000_000_001 + i for i in range(3)]
    paid_at = datetime.now(UTC) - timedelta(seconds=30)
    produce(settings, [(o, shopify_raw(o, "orders/paid", paid_at)) for o in orders])

    [alert] = stack.wait_for_alerts(STUCK, timeout_s=30, diagnose=worker_side)
    assert alert["labels"] == {"alertname": STUCK, "severity": "ticket",
                               "channel": "shopify", "state": "PAID"}
    assert alert["annotations"]["summary"].endswith("shopify orders stuck in PAID")
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#orderpulse-stuck-orders-present"
    assert [r["name"] for r in alert["receivers"]] == ["ticket"]

    # Ship them: the worker resolves each order's alert and drops the gauge's series.
    shipped_at = datetime.now(UTC)
    produce(settings, [(o, shopify_raw(o, "orders/fulfilled", shipped_at,
                                       fulfillment_status="fulfilled")) for o in orders])
    stack.wait_until_resolved(STUCK, timeout_s=30, diagnose=worker_side)
    assert total(worker.samples(), "orderpulse_stuck_alerts_total", kind="resolved") == 3
    assert stack.query("orderpulse_stuck_orders") == []
    # Every rule of the file evaluated cleanly against the worker's real series.
    assert stack.rule_errors() == {}
