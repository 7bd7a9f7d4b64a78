"""``orderpulse run``: the whole pipeline on one machine, then the report.

    traffic (sandbox) --HTTP--> webhook --Kafka--> streams worker --Kafka--> sink --> ClickHouse

Each step runs in its own process (as it would in production, one container
each) and exports Prometheus metrics; the runner reads those to show progress
and to know when everything accepted has landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from pydantic import SecretStr

from orderpulse import names
from orderpulse.broker import EmbeddedBroker, free_port
from orderpulse.procs import Child, spawn, wait_for_metrics
from orderpulse.scrape import Samples, merged, total
from orderpulse.settings import Settings
from orderpulse.topics import declare_topics

STEPS = ("streams", "sink", "webhook")


def sandbox_channels() -> dict[str, dict[str, str]]:
    """Channel configuration for the local sandbox: random secrets per run."""
    return {names.CHANNEL_SHOPIFY: {"webhook_secret": secrets.token_hex(32)}}


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a child process reads back."""
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None or info.alias is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = orjson.dumps(value).decode()
        env[info.alias] = str(value)
    return env


@dataclass
class Pipeline:
    """A running pipeline: the broker (if embedded) and one child per step."""

    settings: Settings
    broker: EmbeddedBroker | None = None
    children: dict[str, Child] = field(default_factory=dict)

    @property
    def webhook_url(self) -> str:
        return f"http://{self.settings.webhook_host}:{self.settings.webhook_port}"

    def samples(self) -> Samples:
        return merged(*(c.samples() for c in self.children.values()))

    def counts(self) -> dict[str, float]:
        """Totals the progress line and the drain check are made of."""
        s, ev = self.samples(), "orderpulse_events_total"
        return {
            "received": total(s, ev, step=names.STEP_WEBHOOK, outcome="in"),
            "accepted": total(s, ev, step=names.STEP_WEBHOOK, outcome="out"),
            "rejected": total(s, ev, step=names.STEP_WEBHOOK, outcome="rejected"),
            "consumed": total(s, ev, step=names.STEP_NORMALIZE, outcome="in"),
            "normalized": total(s, ev, step=names.STEP_NORMALIZE, outcome="out"),
            "dead_lettered": total(s, ev, step=names.STEP_NORMALIZE, outcome="dead_letter"),
            "landed": total(s, ev, step=names.STEP_SINK, outcome="out"),
            "dead_landed": total(s, ev, step=names.STEP_SINK, outcome="dead_letter_landed"),
        }

    def drained(self) -> bool:
        """Everything accepted has been consumed and has landed in ClickHouse."""
        c = self.counts()
        return (c["consumed"] >= c["accepted"] and c["landed"] >= c["normalized"]
                and c["dead_landed"] >= c["dead_lettered"])

    def wait_drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.drained():
                return True
            time.sleep(0.25)
        return self.drained()

    def stop(self) -> None:
        # Upstream first, so each step drains into a still-running next step.
        for name in ("webhook", "streams", "sink"):
            if name in self.children:
                self.children[name].stop()
        if self.broker is not None:
            self.broker.stop()


def start_pipeline(settings: Settings, *, steps: tuple[str, ...] = STEPS,
                   log_dir: Path | None = None) -> Pipeline:
    """Start the broker (embedded mode), declare topics, start each step's process."""
    log_dir = log_dir or settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(settings)
    try:
        if settings.embedded_kafka:
            pipeline.broker = EmbeddedBroker(log_path=log_dir / "broker.log").start()
            settings = settings.model_copy(update={
                "kafka_bootstrap_servers": pipeline.broker.bootstrap})
        if not settings.channels:
            # Embedded demo only: the sandbox's channels, fresh secrets per run.
            settings = settings.model_copy(update={"channels": sandbox_channels()})
        if "webhook" in steps and settings.webhook_port == 0:
            settings = settings.model_copy(update={"webhook_port": free_port()})
        pipeline.settings = settings
        declare_topics(settings)
        env = settings_env(settings)
        for step in steps:
            pipeline.children[step] = spawn(step, [step], env, free_port(), log_dir)
        for child in pipeline.children.values():
            wait_for_metrics(child)
    except BaseException:
        pipeline.stop()
        raise
    return pipeline


# --- the `run` command --------------------------------------------------------

def _progress_line(prev: dict[str, float], cur: dict[str, float], dt: float) -> str:
    def rate(k: str) -> str:
        return f"{(cur[k] - prev.get(k, 0)) / dt:7.0f}/s"

    return (f"in {rate('received')} | normalized {rate('normalized')} | landed {rate('landed')}"
            f" | dead-lettered {rate('dead_lettered')}   totals: in {cur['received']:.0f}"
            f" landed {cur['landed']:.0f} dlq {cur['dead_lettered']:.0f}"
            f" rejected {cur['rejected']:.0f}")


def _traffic_thread(pipeline: Pipeline, rate: float, duration_s: float | None, seed: int,
                    stop: threading.Event, result: dict[str, Any]) -> threading.Thread:
    from orderpulse.connectors.sandbox import shopify as sandbox

    url = f"{pipeline.webhook_url}/webhooks/shopify"
    secret = pipeline.settings.channels[names.CHANNEL_SHOPIFY]["webhook_secret"].encode()

    async def main() -> None:
        done = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.1)
            done.set()

        watcher = asyncio.create_task(watch())
        result["stats"] = await sandbox.drive(url, secret, rate=rate, duration_s=duration_s,
                                              seed=seed, stop=done)
        watcher.cancel()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="traffic", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _interrupt_sets(stop: threading.Event) -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        stop.set()


def run(settings: Settings, *, duration_s: float | None, rate: float, seed: int,
        out: TextIO, report: Callable[[Settings], None]) -> int:
    """Run everything until the duration ends or Ctrl-C, drain, stop, report."""
    out.write("starting the embedded stack and the pipeline ...\n")
    out.flush()
    pipeline = start_pipeline(settings)
    stop, result = threading.Event(), {}
    try:
        out.write(f"pipeline up; sandbox sends Shopify webhooks to {pipeline.webhook_url}"
                  f" at {rate:.0f}/s (Ctrl-C to stop)\n")
        traffic = _traffic_thread(pipeline, rate, duration_s, seed, stop, result)
        prev, last = pipeline.counts(), time.monotonic()
        with _interrupt_sets(stop):
            while traffic.is_alive():
                traffic.join(1.0)
                now = time.monotonic()
                cur = pipeline.counts()
                out.write(_progress_line(prev, cur, now - last) + "\n")
                out.flush()
                prev, last = cur, now
        stop.set()
        traffic.join(30)
        out.write("traffic stopped; waiting for everything accepted to land ...\n")
        drained = pipeline.wait_drained(60)
        counts = pipeline.counts()
    finally:
        pipeline.stop()
    stats = result.get("stats")
    if stats is not None:
        out.write(f"sandbox: sent {stats.sent}, acknowledged {stats.acknowledged}, "
                  f"rejected (bad signature) {stats.rejected}, retried {stats.retried}, "
                  f"failed {stats.failed}\n")
    out.write(f"pipeline: accepted {counts['accepted']:.0f}, normalized "
              f"{counts['normalized']:.0f}, dead-lettered {counts['dead_lettered']:.0f}, "
              f"landed {counts['landed']:.0f}; drained: {drained}\n\n")
    report(pipeline.settings)
    return 0 if drained else 1
