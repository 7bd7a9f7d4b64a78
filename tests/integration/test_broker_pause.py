"""The Kafka broker frozen (SIGSTOP) for 12 s while signed webhooks keep coming.

A broker of its own (the session's broker is shared by every test), the whole pipeline
on it: webhook receiver, streams worker, ClickHouse sink. Six channels' signed
deliveries arrive at a steady rate before, during and after the pause; the sender
behaves like a channel (retries on 5xx or no answer, honours Retry-After).

Held:
- while the broker is stopped the receiver answers 503 + Retry-After, never 2xx, and
  always within the channel's 5 s (its ack timeout is 4 s);
- the producer buffers what it could not deliver, within its bound (the webhook's
  AsyncProducer: queue.buffering.max.messages 50,000 / max.kbytes 262,144; records wait
  up to librdkafka's message.timeout.ms, 300 s) and delivers all of it after SIGCONT:
  the raw topics hold exactly one record per 2xx-or-503 answer (a 503 is a timeout,
  its record stays queued);
- every delivery refused during the pause is acknowledged after SIGCONT;
- every event of an acknowledged delivery is in ClickHouse exactly once (FINAL, by
  event_id), nothing else is, nothing is lost;
- every process resumed without a restart (same PIDs, no crash in the logs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from orderpulse import names
from orderpulse.broker import EmbeddedBroker, free_port
from orderpulse.runner import Pipeline, sandbox_channels
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory
from tests.integration.deliveries import (
    WEBHOOK_CHANNELS,
    Attempt,
    Client,
    RssSampler,
    Sent,
    deliver,
    expected_event_ids,
    landed,
    raw_records,
    render,
)

pytestmark = pytest.mark.integration

SEED = 20261122
RATE = 30.0  # lifecycle events per second (a delivery or two each)
BEFORE_S, PAUSE_S, AFTER_S = 6.0, 12.0, 6.0
GIVE_UP_S = 60.0  # after the traffic: a delivery still refused by then is a failure


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker this test may freeze; requested before ``pipeline_factory``, so it is
    stopped after the pipeline."""
    broker = EmbeddedBroker(log_path=tmp_path / "own-broker.log").start()
    try:
        yield broker
    finally:
        if broker.process is not None and broker.process.poll() is None:
            broker.process.send_signal(signal.SIGCONT)  # never leave it frozen
        broker.stop()


def raw_count(settings: Settings, idle_s: float = 3.0) -> int:
    """Records on the webhook channels' raw topics, read to the end (by idleness:
    Tansu's reported end offsets are not exact)."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "pause-reader",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic_name(settings, names.raw_topic(ch)), p,
                                    OFFSET_BEGINNING)
                     for ch in WEBHOOK_CHANNELS for p in range(settings.default_partitions)])
    n, idle = 0, time.monotonic()
    try:
        while time.monotonic() - idle < idle_s:
            batch = [m for m in consumer.consume(1000, 0.3) if m.error() is None]
            if batch:
                n, idle = n + len(batch), time.monotonic()
    finally:
        consumer.close()
    return n


async def traffic(pipeline: Pipeline, sent: list[Sent], broker_pid: int) -> tuple[float, float]:
    """Send every delivery at a steady rate; freeze the broker in the middle.
    Returns (SIGSTOP, SIGCONT) times (monotonic)."""
    duration = BEFORE_S + PAUSE_S + AFTER_S
    # A channel opens what it needs: ~60 deliveries/s, each up to 4 s, and retries.
    client = Client(pipeline.webhook_url, connections=512)
    started = time.monotonic()
    give_up_at = started + duration + GIVE_UP_S

    async def freeze() -> tuple[float, float]:
        await asyncio.sleep(BEFORE_S)
        os.kill(broker_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        await asyncio.sleep(PAUSE_S)
        os.kill(broker_pid, signal.SIGCONT)
        return stopped, time.monotonic()

    pause = asyncio.create_task(freeze())
    tasks = []
    for i, s in enumerate(sent):
        due = started + i * duration / len(sent)
        await asyncio.sleep(max(due - time.monotonic(), 0))
        tasks.append(asyncio.create_task(deliver(client, s, give_up_at)))
    await asyncio.gather(*tasks)
    await client.close()
    return await pause


def crash_lines(pipeline: Pipeline) -> list[str]:
    marks = ("traceback", "crashed", "restarting dead")
    return [f"{c.name}: {line}" for c in pipeline.children.values()
            for line in c.log_path.read_text(errors="replace").splitlines()
            if any(m in line.lower() for m in marks)]


def test_broker_pause_refuses_retryably_buffers_and_loses_nothing(
        own_broker: EmbeddedBroker, pipeline_factory: PipelineFactory, tmp_path: Path) -> None:
    run_id = uuid.uuid4().hex[:10]
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=own_broker.bootstrap, ORDERPULSE_TOPIC_SUFFIX=f".{run_id}",
        ORDERPULSE_DATA_DIR=tmp_path / run_id, CLICKHOUSE_DATABASE=f"op_{run_id}",
        ORDERPULSE_SINK_BATCH_SECONDS=0.3, ORDERPULSE_CHANNELS=sandbox_channels(free_port()))
    pipeline = pipeline_factory(settings)
    settings = pipeline.settings
    pids = {name: c.process.pid for name, c in pipeline.children.items()}
    assert own_broker.process is not None
    sent = [Sent(d) for d in render(settings.channels,
                                    int(RATE * (BEFORE_S + PAUSE_S + AFTER_S)), SEED)]

    with RssSampler({**pids, "broker": own_broker.process.pid}) as rss:
        stopped, resumed = asyncio.run(traffic(pipeline, sent, own_broker.process.pid))
    assert pipeline.wait_drained(90), pipeline.counts()

    attempts = [a for s in sent for a in s.attempts]
    # While frozen (after the 2xx already on their way): refusals, never acks, never silence.
    frozen = [a for a in attempts if stopped + 0.5 < a.answered < resumed]
    assert frozen and all(a.status == 503 and a.retry_after for a in frozen), \
        sorted({a.status for a in frozen})
    assert all(a.status > 0 for a in attempts), "an attempt got no answer within 5 s"
    refused = [s for s in sent if any(a.status == 503 for a in s.attempts)]
    assert all(s.acknowledged for s in sent), [s.attempts for s in sent if not s.acknowledged]
    assert all(s.attempts[-1].answered > resumed for s in refused)

    # Every record a 2xx or an ack timeout (a 503 after 4 s) left in the producer reached
    # the raw topics, once. A 503 at once is a shed request: it published nothing.
    def left_a_record(a: Attempt) -> bool:
        return 200 <= a.status < 300 or (
            a.status == 503 and a.answered - a.started >= settings.webhook_ack_timeout_s - 0.1)
    published = sum(raw_records(settings, s.delivery) for s in sent for a in s.attempts
                    if left_a_record(a))
    shed = sum(a.status == 503 and not left_a_record(a) for a in attempts)
    on_topics = raw_count(settings)
    assert on_topics == published

    for name, child in pipeline.children.items():
        assert child.alive() and child.process.pid == pids[name], f"{name} restarted"
    assert crash_lines(pipeline) == []
    samples = pipeline.samples()
    duplicates = total(samples, "orderpulse_duplicates_total")
    for child in pipeline.children.values():
        assert child.stop() == 0, child.log_tail()

    expected = expected_event_ids(settings, [s.delivery for s in sent])
    rows = landed(settings)
    lost, unexpected = expected - set(rows.final), set(rows.final) - expected
    doubled = [e for e, n in rows.final.items() if n != 1]
    assert (lost, unexpected, doubled) == (set(), set(), [])
    print(f"\nbroker pause: {len(sent)} deliveries, {len(attempts)} attempts; frozen "
          f"{resumed - stopped:.1f} s: {len(frozen)} answers, all 503; refused deliveries "
          f"{len(refused)} ({shed} answers shed at once), all acknowledged after SIGCONT (last at "
          f"+{max(s.attempts[-1].answered for s in refused) - resumed:.1f} s); raw records "
          f"{on_topics} (= 2xx + ack-timeout answers); events expected {len(expected)}, landed "
          f"{len(rows.final)} (rows without FINAL {rows.rows}), lost 0, doubled 0; "
          f"duplicates recognised {duplicates:.0f}; RSS MiB first/peak "
          + ", ".join(f"{n} {rss.first[n]:.0f}/{rss.peak[n]:.0f}" for n in rss.peak))
