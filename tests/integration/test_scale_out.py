"""Streams workers scaled out and in while orders flow.

Two workers of one consumer group share the partitions (each worker's own log
says which it holds, its metrics that it processed events); signed webhooks
keep flowing while a third worker joins and then the first is stopped, each
change a rebalance that moves partitions, with their order and stock tables,
between processes. Drained, nothing is lost and nothing doubled: every raw
event's ids are on ``orders.normalized`` (repeats only as replays of the same
record, collapsed in ClickHouse), final states and stock equal the offline
reference, no stuck alert is raised twice.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest

from orderpulse import names
from orderpulse.broker import free_port
from orderpulse.connectors.sandbox.driver import Faults
from orderpulse.connectors.stock_import import publish
from orderpulse.procs import Child, spawn, wait_for_metrics
from orderpulse.runner import Pipeline, sandbox_channels, settings_env
from orderpulse.scrape import total
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.integration.reference import (
    SINK_TOPICS,
    STUCK_LIMITS,
    WEBHOOK_CHANNELS,
    TopicReader,
    Traffic,
    ample_stock,
    judge,
    landed,
    wait_settled,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

SEED = 4242
RATE = 40.0
TRAFFIC_S = 60.0
JOIN_AT_S, LEAVE_AT_S = 18.0, 38.0  # the third worker joins; the first one stops
RAW = [names.raw_topic(ch) for ch in WEBHOOK_CHANNELS]
# aiokafka logs each assignment as a table: "| <topic> | {0-1, 3} |".
_ASSIGNED = "Setting newly assigned partitions"
_ROW = re.compile(r"^\| (\S+)\s+\| \{([^}]*)\}")


def assignments(log_path: Path, topic: str) -> list[set[int]]:
    """Every partition set of ``topic`` the worker was assigned, in order."""
    out: list[set[int]] = []
    inside = False
    for line in log_path.read_text(errors="replace").splitlines():
        if _ASSIGNED in line:
            inside = "set()" not in line  # nothing assigned: no table follows
            out.append(set())
            continue
        if inside and line.startswith("+") and "for group" in line:
            inside = False
        elif inside and (row := _ROW.match(line)) and row.group(1) == topic:
            out[-1] = _partitions(row.group(2))
    return out


def _partitions(text: str) -> set[int]:
    parts: set[int] = set()
    for piece in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = piece.partition("-")
        parts.update(range(int(first), int(last or first) + 1))
    return parts


def held(workers: dict[str, Child], topic: str) -> dict[str, set[int]]:
    """Each worker's current partitions of ``topic`` (its last assignment)."""
    return {name: (assignments(w.log_path, topic) or [set()])[-1] for name, w in workers.items()}


def shared(workers: dict[str, Child], topic: str, partitions: int) -> bool:
    """Every partition held by exactly one worker, and every worker holds some."""
    now = held(workers, topic)
    owned = [p for parts in now.values() for p in parts]
    return sorted(owned) == list(range(partitions)) and all(now.values())


def consumed(worker: Child) -> float:
    return total(worker.samples(), "orderpulse_events_total", step=names.STEP_NORMALIZE,
                 outcome="in")


def start_worker(pipeline: Pipeline, name: str) -> Child:
    settings = pipeline.settings
    child = spawn(name, ["streams"], settings_env(settings), free_port(),
                  settings.data_dir / "logs")
    wait_for_metrics(child)
    return child


def rebalanced(workers: dict[str, Child], topic: str, partitions: int) -> float:
    """Seconds until the live workers share every partition; fails at once if one died."""
    started = time.monotonic()

    def done() -> bool:
        assert_alive(workers)
        return shared(workers, topic, partitions)

    assert Pipeline.wait_until(done, 60), held(workers, topic)
    return round(time.monotonic() - started, 1)


def assert_alive(workers: dict[str, Child]) -> None:
    """Fail with each dead worker's last logged error."""
    dead = {name: crash(w) for name, w in workers.items() if not w.alive()}
    assert not dead, f"worker died: {dead}"


def crash(worker: Child) -> str:
    """The error a worker logged last (its log says why it stopped)."""
    errors = [ln for ln in worker.log_path.read_text(errors="replace").splitlines()
              if "[ERROR]" in ln]
    return errors[-1][:400] if errors else worker.log_tail(5)


@pytest.mark.timeout(240)
def test_workers_joining_and_leaving_lose_and_double_nothing(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    channels = {ch: cfg for ch, cfg in sandbox_channels(free_port()).items()
                if ch in WEBHOOK_CHANNELS}
    # Six partitions: three workers hold two each (with four, Faust's assignor would
    # leave the third idle), and two hold three each.
    settings = settings_factory(channels=channels, stuck_tick_s=1.0, stuck_limits_s=STUCK_LIMITS,
                                inventory_resend_s=5.0, default_partitions=6)
    pipeline = pipeline_factory(settings)
    settings = pipeline.settings
    topic, n = topic_name(settings, names.raw_topic("shopify")), settings.default_partitions
    workers = {"a": pipeline.children["streams"]}
    extra: list[Child] = []
    try:
        workers["b"] = start_worker(pipeline, "streams-b")
        extra.append(workers["b"])
        figures: dict[str, object] = {"two_workers_rebalance_s": rebalanced(workers, topic, n)}
        figures["assigned_two"] = {w: sorted(p) for w, p in held(workers, topic).items()}
        opening = ample_stock(5000, int(time.time() * 1000), "scale")
        asyncio.run(publish(settings, opening))

        traffic = Traffic(channels, pipeline.webhook_url, rate=RATE, duration_s=TRAFFIC_S,
                          seed=SEED, faults=Faults(duplicate=0.02, late=0.02, broken_body=0.004,
                                                   forged=0.003)).start()
        t0 = time.monotonic()
        time.sleep(max(t0 + JOIN_AT_S - time.monotonic(), 0))
        workers["c"] = start_worker(pipeline, "streams-c")
        extra.append(workers["c"])
        figures["join_rebalance_s"] = rebalanced(workers, topic, n)
        figures["assigned_three"] = {w: sorted(p) for w, p in held(workers, topic).items()}

        time.sleep(max(t0 + LEAVE_AT_S - time.monotonic(), 0))
        assert_alive(workers)
        leaver = workers.pop("a")
        figures["consumed_by_a"] = consumed(leaver)
        stopped = time.monotonic()
        assert leaver.stop() == 0, leaver.log_tail()
        figures["leave_stop_s"] = round(time.monotonic() - stopped, 1)
        figures["leave_rebalance_s"] = rebalanced(workers, topic, n)
        figures["assigned_after_leave"] = {w: sorted(p) for w, p in held(workers, topic).items()}
        assert traffic.join(120), "deliveries still unanswered"
        assert_alive(workers)

        reader = TopicReader(settings, [*RAW, *SINK_TOPICS, names.TOPIC_INV_REPLIES])
        figures["settle_s"] = round(wait_settled(settings, reader, {
            f"orderpulse-streams{settings.topic_suffix}": [*RAW, names.TOPIC_INV_REPLIES],
            settings.group(names.STEP_SINK): SINK_TOPICS}, quiet_s=5.0, timeout_s=60), 1)
        figures.update({f"consumed_by_{w}": consumed(c) for w, c in workers.items()})
    finally:
        for child in extra:
            child.stop()
    assert pipeline.children["sink"].stop() == 0
    verdict = judge(settings, reader, landed(settings), opening, RAW)
    reader.close()
    verdict.figures.update(figures, lifecycle_events=traffic.events,
                           deliveries=len(traffic.sent))
    log.info("scale-out figures: %s", verdict.figures)

    # Each worker held some partitions and processed some events.
    assert all(figures[f"consumed_by_{w}"] for w in ("a", "b", "c")), figures
    # Nothing lost, nothing doubled once collapsed, the same end as the reference.
    assert verdict.failures == {}, f"{verdict.failures}\n{verdict.figures}"
    assert verdict.figures["stuck_alerts"] > 0
    for child in (pipeline.children["streams"], *extra):
        assert "inventory invariant violated" not in child.log_path.read_text(errors="replace")
