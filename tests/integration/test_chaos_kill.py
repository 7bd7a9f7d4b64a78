"""kill -9 of every kind of process at random points while orders flow.

Signed webhooks of six channels (orders with lines, carrier pushes, the
sandbox's duplicates, late deliveries, broken bodies and forged signatures)
run for a minute; meanwhile the webhook receiver, the streams worker and the
ClickHouse sink are each killed with SIGKILL twice (seeded schedule, logged)
and restarted. Drained, what Kafka accepted is held against an offline
reference (``reference.py``): every event once in ClickHouse, every order's
final state, every SKU's stock, no stuck alert raised twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import free_port, wait_for_port
from orderpulse.connectors.channels import webhook_sources
from orderpulse.connectors.sandbox.driver import Faults
from orderpulse.connectors.stock_import import publish
from orderpulse.procs import Child, spawn, wait_for_metrics
from orderpulse.runner import Pipeline, sandbox_channels, settings_env
from orderpulse.scrape import total
from orderpulse.settings import Settings
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

SEED = 20261111
RATE = 40.0  # lifecycle events per second (each one or two deliveries)
TRAFFIC_S = 70.0
KILLS = ("webhook", "streams", "sink") * 2
RAW = [names.raw_topic(ch) for ch in WEBHOOK_CHANNELS]


@dataclass
class Kill:
    step: str
    at_s: float  # since traffic started
    pid: int
    wall: str  # when, as the processes' logs write it
    up_s: float = 0.0  # kill -> restarted process serving metrics (and its port)
    recovered_s: float | None = None  # kill -> the restarted process moved data again


def kill_schedule(rng: random.Random, start_s: float, end_s: float) -> list[tuple[float, str]]:
    """One kill per slot of the window, at a random point of its middle, kinds shuffled."""
    kinds = list(KILLS)
    rng.shuffle(kinds)
    slot = (end_s - start_s) / max(len(kinds), 1)
    return [(round(start_s + i * slot + rng.uniform(0.15, 0.85) * slot, 1), kind)
            for i, kind in enumerate(kinds)]


def restart(pipeline: Pipeline, step: str) -> Child:
    settings = pipeline.settings
    child = spawn(step, [step], settings_env(settings), free_port(), settings.data_dir / "logs")
    pipeline.children[step] = child
    wait_for_metrics(child)
    if step == "webhook":
        assert wait_for_port(settings.webhook_host, settings.webhook_port, 30)
    return child


def moved(pipeline: Pipeline, step: str, traffic: Traffic, since: float) -> bool:
    """Whether the restarted ``step`` has moved data since ``since`` (monotonic)."""
    if step == "webhook":
        return any(200 <= status < 300 for _t, status in traffic.answers(since))
    samples = pipeline.children[step].samples()
    if step == "streams":
        return total(samples, "orderpulse_events_total", step=names.STEP_NORMALIZE,
                     outcome="in") > 0
    return total(samples, "orderpulse_events_total", step=names.STEP_SINK, outcome="out") > 0


def chaos(pipeline: Pipeline, traffic: Traffic, schedule: list[tuple[float, str]],
          t0: float) -> list[Kill]:
    kills = []
    for at, step in schedule:
        time.sleep(max(t0 + at - time.monotonic(), 0))
        victim = pipeline.children[step].process
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        kill = Kill(step, round(killed_at - t0, 1), victim.pid, time.strftime("%H:%M:%S"))
        restart(pipeline, step)
        kill.up_s = round(time.monotonic() - killed_at, 1)
        if Pipeline.wait_until(lambda s=step, k=killed_at: moved(pipeline, s, traffic, k), 40):
            kill.recovered_s = round(time.monotonic() - killed_at, 1)
        log.info("kill -9 %s pid=%d at %.1fs (%s): up after %.1fs, moving data after %ss",
                 step, kill.pid, kill.at_s, kill.wall, kill.up_s, kill.recovered_s)
        kills.append(kill)
    return kills


def unacknowledged_on_raw(settings: Settings, traffic: Traffic, raw_bodies: set[bytes]) -> int:
    """Acknowledged deliveries with a record missing from the raw topics (the receiver's
    own ``records`` split says what a delivery's records are)."""
    sources = webhook_sources(settings.channels)
    return sum(1 for s in traffic.sent if s.acknowledged and any(
        r.body not in raw_bodies
        for r in sources[s.delivery.channel].records(s.delivery.headers, s.delivery.body)))


@pytest.mark.timeout(240)
def test_kill_9_of_every_process_loses_and_doubles_nothing(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    channels = {ch: cfg for ch, cfg in sandbox_channels(free_port()).items()
                if ch in WEBHOOK_CHANNELS}
    settings = settings_factory(channels=channels, stuck_tick_s=1.0, stuck_limits_s=STUCK_LIMITS,
                                inventory_resend_s=5.0)
    pipeline = pipeline_factory(settings)
    settings = pipeline.settings
    opening = ample_stock(5000, int(time.time() * 1000), "chaos")
    asyncio.run(publish(settings, opening))

    schedule = kill_schedule(random.Random(SEED), 5.0, TRAFFIC_S - 5.0)
    log.info("seed %d, kill schedule (s after traffic start): %s", SEED, schedule)
    traffic = Traffic(channels, pipeline.webhook_url, rate=RATE, duration_s=TRAFFIC_S,
                      seed=SEED, faults=Faults(duplicate=0.02, late=0.02, broken_body=0.004,
                                               forged=0.003)).start()
    t0 = time.monotonic()
    kills = chaos(pipeline, traffic, schedule, t0)
    assert traffic.join(120), "deliveries still unanswered"
    traffic_s = time.monotonic() - t0

    reader = TopicReader(settings, [*RAW, *SINK_TOPICS, names.TOPIC_INV_REPLIES])
    settle_s = wait_settled(settings, reader, {
        f"orderpulse-streams{settings.topic_suffix}": [*RAW, names.TOPIC_INV_REPLIES],
        settings.group(names.STEP_SINK): SINK_TOPICS}, quiet_s=5.0, timeout_s=60)
    assert pipeline.children["sink"].stop() == 0
    verdict = judge(settings, reader, landed(settings), opening, RAW)
    reader.close()
    answers = Counter(s.status for s in traffic.sent)
    verdict.figures.update(
        lifecycle_events=traffic.events, deliveries=len(traffic.sent), answers=dict(answers),
        retried_attempts=sum(len(s.attempts) - 1 for s in traffic.sent),
        traffic_s=round(traffic_s, 1), settle_s=round(settle_s, 1),
        kills=[k.__dict__ for k in kills])
    log.info("chaos figures: %s", verdict.figures)

    # Every delivery was answered for good (2xx, or 401 for a forged signature), and
    # every record of an acknowledged one is on the raw topics.
    assert set(answers) <= {200, 401}, answers
    raw_bodies = {codec("RawEvent").decode(r.value)["body"]
                  for base in RAW for r in reader.records[base]}
    assert unacknowledged_on_raw(settings, traffic, raw_bodies) == 0
    assert all(k.recovered_s is not None for k in kills), kills
    # (a)-(d) against the offline reference; the sweeps found no broken invariant.
    assert verdict.failures == {}, f"{verdict.failures}\n{verdict.figures}"
    assert verdict.figures["stuck_alerts"] > 0
    # Every incarnation of the worker logged to one file: their sweeps' findings.
    worker_log = pipeline.children["streams"].log_path.read_text(errors="replace")
    assert "inventory invariant violated" not in worker_log
