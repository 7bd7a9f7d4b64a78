"""Twice the receiver's capacity of signed webhooks for 20 s.

The capacity is measured on this run: what the receiver acknowledges per second in a
closed loop of 128 connections for 5 s, with the streams worker, the sink and the lag
exporter running beside it (on a shared 2-core machine it moves from run to run). It
bounds the pipeline's end-to-end capacity from above (every event passes the receiver),
so twice it is at least twice the pipeline's. Then deliveries arrive at twice that rate,
each with a channel's patience (5 s), from a raw-socket client that costs about a third
of what the receiver spends per request.

Held:
- every answer is 2xx (persisted: see below) or 503 + Retry-After (shed, retryable);
- the receiver sheds rather than lets deliveries time out: any attempt left unanswered
  in 5 s means 503s were being given too (before its admission limit it answered no
  503 at all, and 90% of attempts timed out);
- every attempt is answered within the channel's 5 s (0.5% tolerance) whenever the
  machine gave the receiver the CPU to refuse what it cannot take (see the test; on
  the shared 2-core machine it often does not, and the run says so);
- the RSS of each pipeline process stays under its bound (``RSS_BOUND_MIB``);
- after the burst the pipeline drains (``Pipeline.drained``) and the consumer lag
  (the ``lag`` step's orderpulse_consumer_lag_messages) is back to ~0 within 90 s;
- every event of an acknowledged delivery is in ClickHouse exactly once (FINAL, by
  event_id), and nothing that was not sent is: lost 0, doubled 0.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from orderpulse.broker import free_port
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.runner import Pipeline, sandbox_channels
from orderpulse.scrape import total
from tests.integration.conftest import PipelineFactory, SettingsFactory
from tests.integration.deliveries import (
    CHANNEL_TIMEOUT_S,
    Attempt,
    Client,
    CpuMeter,
    RssSampler,
    event_ids,
    landed,
    render,
)

pytestmark = pytest.mark.integration

SEED = 20261123
MEASURE_S, BURST_S = 5.0, 20.0
#: Deliveries in flight while the capacity is measured: enough to keep the receiver busy
#: (its publish waits ~50 ms for Kafka's ack), few enough not to measure its queue.
MEASURE_CONNECTIONS = 128
RECOVERY_S = 90.0
#: CPU the receiver needs in the burst, against what it used at capacity (see the test).
REFUSAL_HEADROOM, FULL_CORE = 1.3, 0.9
#: Attempts left unanswered in 5 s, at most (the admission limit adapts within a second).
UNANSWERED_TOLERANCE = 0.005
#: Lag left by the periodic work alone: a tick and a sweep per partition every 10 s.
IDLE_LAG = 16
#: RSS bounds (MiB), against about 75 / 85 / 330 / 50 idle. The receiver: its producer
#: queue is bounded at 256 MiB (queue.buffering.max.kbytes) and admission at 512
#: requests. The streams worker: in-memory tables, a few kB per open order. The sink:
#: chdb in the process plus one batch (5,000 rows). The lag exporter: admin calls only.
RSS_BOUND_MIB = {"webhook": 320, "streams": 320, "sink": 1024, "lag": 200}

Sent = list[tuple[Delivery, Attempt]]


async def closed_loop(client: Client, todo: list[Delivery], seconds: float,
                      concurrency: int) -> Sent:
    """``concurrency`` senders back to back for ``seconds``: what the receiver sustains."""
    out: Sent = []
    end = time.monotonic() + seconds

    async def sender() -> None:
        while time.monotonic() < end and todo:
            d = todo.pop()
            out.append((d, await client.send(d, time.monotonic() + CHANNEL_TIMEOUT_S)))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return out


@dataclass
class Burst:
    sent: Sent
    offered: float  # deliveries started per second
    late_p99: float  # how late the client started them (its own limit), seconds


async def open_loop(client: Client, todo: list[Delivery], rate: float) -> Burst:
    """Deliveries at ``rate``/s, one attempt each (5 s)."""
    sent: Sent = []
    late: list[float] = []
    started = time.monotonic()

    async def one(d: Delivery, due: float) -> None:
        attempt = await client.send(d, time.monotonic() + CHANNEL_TIMEOUT_S)
        late.append(attempt.started - due)
        sent.append((d, attempt))

    tasks = []
    for i, d in enumerate(todo):
        due = started + i / rate
        if due > time.monotonic():
            await asyncio.sleep(due - time.monotonic())
        tasks.append(asyncio.create_task(one(d, due)))
    offered = len(tasks) / (time.monotonic() - started)
    await asyncio.gather(*tasks)
    return Burst(sent, offered, sorted(late)[int(len(late) * 0.99)])


def lag_messages(pipeline: Pipeline) -> float:
    return total(pipeline.children["lag"].samples(), "orderpulse_consumer_lag_messages")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(int(len(values) * q), len(values) - 1)]


def test_overload_is_shed_with_retryable_answers_and_recovers(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    settings = settings_factory(channels=sandbox_channels(free_port()), lag_interval_s=1.0)
    pipeline = pipeline_factory(settings, steps=("streams", "sink", "webhook", "lag"))
    settings = pipeline.settings
    pids = {name: c.process.pid for name, c in pipeline.children.items()}
    processes = {**pids, "client": os.getpid()}
    url = pipeline.webhook_url

    async def measure(todo: list[Delivery]) -> Sent:
        client = Client(url, connections=MEASURE_CONNECTIONS)
        await client.warm(MEASURE_CONNECTIONS)
        try:
            return await closed_loop(client, todo, MEASURE_S, MEASURE_CONNECTIONS)
        finally:
            await client.close()

    async def overload(todo: list[Delivery], rate: float) -> Burst:
        client = Client(url, connections=1024)
        await client.warm(1024)
        try:
            return await open_loop(client, todo, rate)
        finally:
            await client.close()

    todo = render(settings.channels, 10_000, SEED)
    with CpuMeter(processes) as at_capacity:
        measured = asyncio.run(measure(todo))
    capacity = sum(200 <= a.status < 300 for _d, a in measured) / MEASURE_S
    rate = 2 * capacity
    todo = render(settings.channels, int(rate * BURST_S), SEED + 1)[: int(rate * BURST_S)]

    with RssSampler(pids) as rss:
        with CpuMeter(processes) as in_burst:
            started = time.monotonic()
            burst = asyncio.run(overload(todo, rate))
        burst_end = time.monotonic()
        lag_peak = lag_messages(pipeline)
        drained = pipeline.wait_drained(RECOVERY_S)
        settled = Pipeline.wait_until(lambda: lag_messages(pipeline) <= IDLE_LAG,
                                      max(RECOVERY_S - (time.monotonic() - burst_end), 1))
        recovered_s = time.monotonic() - burst_end

    statuses = Counter(a.status for _d, a in burst.sent)
    unanswered = [a for _d, a in burst.sent if a.status == 0]
    latency = [a.answered - a.started for _d, a in burst.sent]
    # The 5 s promise needs the CPU to refuse what it cannot take: at twice its capacity
    # the receiver publishes what it did at capacity and refuses as much again, a refusal
    # costing 0.28 of a publish (0.18 vs 0.65 ms of CPU, measured on this machine); or,
    # already saturated at capacity, a whole core, and it publishes less. A shared machine
    # may give it far less during the burst than during the measurement: then no design
    # answers in time, and the promise is not judged (the other properties still are).
    needed = min(REFUSAL_HEADROOM * at_capacity.cores["webhook"], FULL_CORE)
    fed = in_burst.cores["webhook"] >= needed
    summary = (
        f"\noverload: capacity {capacity:.0f}/s; offered {burst.offered:.0f}/s for "
        f"{burst_end - started:.1f} s ({len(burst.sent)} deliveries, client late p99 "
        f"{burst.late_p99:.2f} s): {dict(statuses)}, shed {statuses[503] / len(burst.sent):.0%}"
        f", unanswered {len(unanswered)} ({sum(a.written for a in unanswered)} sent, the rest "
        f"waiting for a connection); answer p50 {percentile(latency, 0.5):.2f} s p99 "
        f"{percentile(latency, 0.99):.2f} s max {max(latency):.2f} s; lag at burst end "
        f"{lag_peak:.0f}, drained and lag <= {IDLE_LAG} {recovered_s:.1f} s after it; RSS MiB "
        "first/peak " + ", ".join(f"{n} {rss.first[n]:.0f}/{rss.peak[n]:.0f}" for n in rss.peak)
        + "; CPU cores at capacity / in the burst " + ", ".join(
            f"{n} {at_capacity.cores[n]:.2f}/{in_burst.cores[n]:.2f}" for n in processes))
    print(summary)

    if fed:
        assert len(unanswered) <= UNANSWERED_TOLERANCE * len(burst.sent), summary
    else:
        print(f"receiver starved by the machine: {in_burst.cores['webhook']:.2f} cores in the "
              f"burst, {needed:.2f} needed; the 5 s promise is not judged on this run")
    assert not unanswered or statuses[503] > 0, f"timed out without shedding{summary}"
    assert all(200 <= s < 300 or s in (0, 503) for s in statuses), summary
    assert all(a.retry_after for _d, a in burst.sent if a.status == 503)
    for name, bound in RSS_BOUND_MIB.items():
        assert rss.peak[name] < bound, (name, rss.peak[name])
    assert drained and settled, summary
    for name, child in pipeline.children.items():
        assert child.alive() and child.process.pid == pids[name], f"{name} restarted"
    for child in pipeline.children.values():
        assert child.stop() == 0, child.log_tail()

    everything = measured + burst.sent
    per_delivery = event_ids(settings, [d for d, _a in everything])
    acked = set().union(*(ids for ids, (_d, a) in zip(per_delivery, everything, strict=True)
                          if 200 <= a.status < 300))
    sent_ids = set().union(*per_delivery)
    rows = landed(settings)
    lost, foreign = acked - set(rows.final), set(rows.final) - sent_ids
    doubled = [e for e, n in rows.final.items() if n != 1]
    print(f"acknowledged events {len(acked)}, landed {len(rows.final)} (a 503 after the ack "
          f"timeout may land too), lost {len(lost)}, doubled {len(doubled)}")
    assert (lost, foreign, doubled) == (set(), set(), [])
