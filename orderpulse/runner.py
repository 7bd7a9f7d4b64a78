"""``orderpulse run``: the whole pipeline on one machine, then the report.

    traffic (sandbox) --HTTP--> webhook --Kafka--> streams worker --Kafka--> sink --> ClickHouse

Each step runs in its own process (as it would in production, one container
each) and exports Prometheus metrics; the runner reads those to show progress
and to know when everything accepted has landed.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from orderpulse import names
from orderpulse.broker import EmbeddedBroker, free_port, wait_for_port
from orderpulse.connectors.sandbox.config import CREDENTIAL_KEYS, SANDBOX_ENDPOINTS, SANDBOX_PATHS
from orderpulse.procs import Child, spawn, wait_for_metrics
from orderpulse.scrape import Samples, merged, total
from orderpulse.settings import Settings
from orderpulse.topics import declare_topics

STEPS = ("streams", "sink", "webhook")
RUN_STEPS = ("streams", "sink", "webhook", "poll", "lag")


def sandbox_channels(api_port: int) -> dict[str, dict[str, str]]:
    """Channel configuration for the local sandbox: every channel, fresh secrets per
    run, pull channels pointed at the sandbox's API on ``api_port``."""
    channels: dict[str, dict[str, str]] = {}
    for channel in names.CHANNELS:
        credentials = {key: secrets.token_hex(16) for key in CREDENTIAL_KEYS}
        base = f"http://127.0.0.1:{api_port}/{channel}"
        channels[channel] = {**credentials, **SANDBOX_ENDPOINTS.get(channel, {}),
                             "base_url": base + SANDBOX_PATHS.get(channel, "")}
    return channels


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
            "accepted": total(s, ev, step=names.STEP_WEBHOOK, outcome="out")
            + total(s, ev, step=names.STEP_POLL, outcome="out"),
            "rejected": total(s, ev, step=names.STEP_WEBHOOK, outcome="rejected"),
            "consumed": total(s, ev, step=names.STEP_NORMALIZE, outcome="in"),
            "normalized": total(s, ev, step=names.STEP_NORMALIZE, outcome="out"),
            "dead_lettered": total(s, ev, step=names.STEP_NORMALIZE, outcome="dead_letter"),
            "landed": total(s, ev, step=names.STEP_SINK, outcome="out"),
            "dead_landed": total(s, ev, step=names.STEP_SINK, outcome="dead_letter_landed"),
            "stock_violations": total(s, "orderpulse_inventory_invariant_violations_total"),
            "stock_in_flight": sum(
                total(s, "orderpulse_stock_messages_total", stream=stream, outcome="sent")
                - total(s, "orderpulse_stock_messages_total", stream=stream, outcome="handled")
                for stream in ("commands", "replies")),
            "oversell_prevented": total(s, "orderpulse_oversell_prevented_total"),
        }

    def drained(self, also_accepted: int = 0) -> bool:
        """Everything accepted (plus ``also_accepted`` published by this process) has
        been consumed and has landed in ClickHouse."""
        c = self.counts()
        return (c["consumed"] >= c["accepted"] + also_accepted and c["landed"] >= c["normalized"]
                and c["dead_landed"] >= c["dead_lettered"] and c["stock_in_flight"] <= 0)

    def polled_up_to(self, moment: float) -> bool:
        """Every poller's checkpoint is at or after ``moment`` (epoch seconds)."""
        poll = self.children.get("poll")
        if poll is None:
            return True
        lags = [v for (n, _l), v in poll.samples().items()
                if n == "orderpulse_poll_checkpoint_lag_seconds"]
        return bool(lags) and time.time() - max(lags) >= moment

    @staticmethod
    def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
        return _wait(check, timeout_s)

    def wait_drained(self, timeout_s: float, also_accepted: int = 0) -> bool:
        # Twice, a second apart: an answer can start the next round of commands.
        def settled() -> bool:
            if not self.drained(also_accepted):
                return False
            time.sleep(1.0)
            return self.drained(also_accepted)
        return _wait(settled, timeout_s)

    def stop(self) -> None:
        # Upstream first, so each step drains into a still-running next step; the lag
        # exporter last, so it watches the drain.
        for name in ("sandbox", "webhook", "poll", "streams", "sink", "lag"):
            if name in self.children:
                self.children[name].stop()
        if self.broker is not None:
            self.broker.stop()


def _local_pii_key(settings: Settings) -> str:
    """The data directory's own PII hash key, made once: joins must stay stable."""
    path = settings.data_dir / "pii.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


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
                "kafka_bootstrap_servers": pipeline.broker.bootstrap,
                "kafka_single_record_batches": True})
        if not settings.pii_key.get_secret_value():
            settings = settings.model_copy(update={"pii_key": SecretStr(_local_pii_key(settings))})
        if "webhook" in steps and settings.webhook_port == 0:
            settings = settings.model_copy(update={"webhook_port": free_port()})
        pipeline.settings = settings
        declare_topics(settings)
        env = settings_env(settings)
        for step in steps:
            pipeline.children[step] = spawn(step, [step], env, free_port(), log_dir)
        for child in pipeline.children.values():
            wait_for_metrics(child)
        # The receiver serves metrics before it binds its own port.
        if "webhook" in steps and not wait_for_port(settings.webhook_host,
                                                    settings.webhook_port, 30):
            raise RuntimeError(f"webhook receiver did not listen on {pipeline.webhook_url}")
    except BaseException:
        pipeline.stop()
        raise
    return pipeline


# --- the `run` command --------------------------------------------------------

def _progress_line(prev: dict[str, float], cur: dict[str, float], dt: float) -> str:
    def rate(k: str) -> str:
        return f"{(cur[k] - prev.get(k, 0)) / dt:6.0f}/s"

    return (f"in {rate('accepted')} | normalized {rate('normalized')} | landed {rate('landed')}"
            f" | dead-lettered {rate('dead_lettered')}   totals: in {cur['accepted']:.0f}"
            f" landed {cur['landed']:.0f} dlq {cur['dead_lettered']:.0f}"
            f" rejected {cur['rejected']:.0f}")


def _wait(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


def _import_pos(settings: Settings, stats: dict[str, Any], out: TextIO) -> int:
    from orderpulse.connectors.csv_import import import_file
    from orderpulse.metrics import Metrics

    if not stats.get("pos_file"):
        return 0
    plan = import_file(settings, Metrics.create(CollectorRegistry()), Path(stats["pos_file"]),
                       strict=False)
    out.write(f"imported store receipts: {len(plan.records)} receipts from "
              f"{stats['pos_file']}\n")
    return len(plan.records)


def _seed_stock(settings: Settings, out: TextIO) -> None:
    from orderpulse.connectors.stock_import import seed

    # A label per run: the sandbox's orders start from the catalogue's counts.
    n = seed(settings, label=f"opening/{int(time.time())}")
    out.write(f"stock: {n} opening counts from the catalogue published\n")


def run(settings: Settings, *, duration_s: float | None, rate: float, seed: int,
        out: TextIO, report: Callable[[Settings], None]) -> int:
    """Run everything until the duration ends or Ctrl-C, drain, stop, report."""
    api_port = free_port()
    if not settings.channels:
        # The sandbox has no history before the run: start the pollers just before it.
        settings = settings.model_copy(update={"channels": sandbox_channels(api_port),
                                               "poll_idle_s": 2.0,
                                               "poll_initial_lookback_s": 120.0})
    out.write("starting the embedded stack and the pipeline ...\n")
    out.flush()
    pipeline = start_pipeline(settings, steps=RUN_STEPS)
    settings = pipeline.settings
    _seed_stock(settings, out)
    stats_path = settings.data_dir / "sandbox-stats.json"
    stats_path.unlink(missing_ok=True)
    sandbox_args = ["sandbox", "--api-port", str(api_port), "--webhook-url", pipeline.webhook_url,
                    "--rate", str(rate), "--seed", str(seed), "--stats", str(stats_path),
                    "--pos-dir", str(settings.data_dir / "pos")]
    if duration_s is not None:
        sandbox_args += ["--duration", str(duration_s)]
    try:
        sandbox = spawn("sandbox", sandbox_args, settings_env(settings), free_port(),
                        settings.data_dir / "logs")
        pipeline.children["sandbox"] = sandbox
        wait_for_metrics(sandbox)
        out.write(f"pipeline up; the sandbox plays {len(settings.channels)} channels at "
                  f"{rate:.0f} lifecycle events/s (Ctrl-C to stop)\n")
        _follow(pipeline, stats_path, out)
        stats = json.loads(stats_path.read_text()) if _wait(stats_path.exists, 30) else {}
        traffic_done = time.time()
        out.write("traffic stopped; pollers catching up, then draining ...\n")
        out.flush()
        _wait(lambda: pipeline.polled_up_to(traffic_done), 60)
        imported = _import_pos(settings, stats, out)
        drained = pipeline.wait_drained(60, also_accepted=imported)
        counts = pipeline.counts()
    finally:
        pipeline.stop()
    out.write(f"sandbox: sent {sum(stats.get('sent', {}).values())} deliveries, "
              f"acknowledged {sum(stats.get('acknowledged', {}).values())}, rejected "
              f"{sum(stats.get('rejected', {}).values())}, failed {stats.get('failed', 0)}; "
              f"polled updates {sum(stats.get('polled_updates', {}).values())}; "
              f"store receipt lines {stats.get('pos_rows', 0)}\n")
    out.write(f"pipeline: accepted {counts['accepted']:.0f}, normalized "
              f"{counts['normalized']:.0f}, dead-lettered {counts['dead_lettered']:.0f}, "
              f"landed {counts['landed']:.0f}; drained: {drained}\n")
    out.write(f"stock: oversell attempts prevented {counts['oversell_prevented']:.0f}; "
              f"invariant violations found by the sweeps {counts['stock_violations']:.0f}\n\n")
    report(pipeline.settings)
    return 0 if drained and not counts["stock_violations"] else 1


def _follow(pipeline: Pipeline, stats_path: Path, out: TextIO) -> None:
    """Print progress every second until the sandbox's traffic ends or Ctrl-C."""
    prev, last = pipeline.counts(), time.monotonic()
    try:
        while not stats_path.exists() and pipeline.children["sandbox"].alive():
            time.sleep(1.0)
            now, cur = time.monotonic(), pipeline.counts()
            out.write(_progress_line(prev, cur, now - last) + "\n")
            out.flush()
            prev, last = cur, now
    except KeyboardInterrupt:
        # The sandbox stops its traffic on SIGINT and writes its stats.
        pipeline.children["sandbox"].process.send_signal(signal.SIGINT)
