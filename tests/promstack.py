"""A real Prometheus and Alertmanager for tests: the Debian binaries (`make tools`
installs them), each on a free loopback port with its own temporary storage, stopped
by whoever started them.

    stack = PromStack.start(workdir, targets=["127.0.0.1:9401"], rule_files=[rules])
    [alert] = stack.wait_for_alerts("OrderpulseStuckOrdersPresent", timeout_s=40)
    stack.stop()

Nothing here is a double: the rules are the repository's (``with_short_for`` copies
them with short ``for:`` durations), Alertmanager runs the repository's routing.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from orderpulse.broker import free_port

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "dashboards" / "alerts" / "orderpulse.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "dashboards" / "alertmanager.yml"
INSTALL_HINT = ("`make tools` installs it: apt-get install prometheus prometheus-alertmanager "
                "(Debian packages)")
_HTTP_TIMEOUT_S = 5.0


def binary(name: str) -> str:
    """Path of a Prometheus tool; fails the test (never skips it) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)
    return path


def with_short_for(src: Path, dst: Path, for_: str) -> Path:
    """Copy the rule file ``src`` to ``dst`` with every alert's ``for:`` set to ``for_``,
    so a test sees an alert fire in seconds while the expressions stay the real ones."""
    doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = for_
    dst.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dst


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


@dataclass
class Service:
    """One started binary: its process, base URL and log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @classmethod
    def spawn(cls, name: str, args: list[str], port: int, log_path: Path) -> Service:
        with open(log_path, "ab") as log:
            process = subprocess.Popen([binary(name), *args], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        return cls(name, process, f"http://127.0.0.1:{port}", log_path)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until ``/-/ready`` answers 200; stop it and fail with its log if it exits
        first or is not ready in time."""
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready",  # noqa: S310 - loopback
                                            timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready in {timeout_s}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_alertmanager(workdir: Path, config: Path = ALERTMANAGER_CONFIG) -> Service:
    """Alertmanager with ``config``, storage under ``workdir``, no cluster listener."""
    port = free_port()
    am = Service.spawn("prometheus-alertmanager", [
        f"--config.file={config}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        # Empty: no gossip port (it would listen on every interface).
        "--cluster.listen-address=",
    ], port, workdir / "alertmanager.log")
    am.wait_ready()
    return am


def prometheus_config(targets: list[str], alertmanager: str, rule_files: list[Path],
                      interval: str) -> dict[str, Any]:
    """Scrape ``targets`` as the compose stack's job (``orderpulse``), every ``interval``,
    evaluate ``rule_files`` as often and send alerts to ``alertmanager`` (host:port)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "orderpulse",
                            "static_configs": [{"targets": targets}]}],
    }


def start_prometheus(workdir: Path, config: dict[str, Any]) -> Service:
    """Prometheus with ``config`` (written under ``workdir``) and storage there."""
    port = free_port()
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    prom = Service.spawn("prometheus", [
        f"--config.file={path}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ], port, workdir / "prometheus.log")
    prom.wait_ready()
    return prom


@dataclass
class PromStack:
    """Prometheus scraping some targets and evaluating rules, sending to Alertmanager."""

    prometheus: Service
    alertmanager: Service

    @classmethod
    def start(cls, workdir: Path, *, targets: list[str], rule_files: list[Path],
              interval: str = "1s") -> PromStack:
        workdir.mkdir(parents=True, exist_ok=True)
        am = start_alertmanager(workdir)
        try:
            config = prometheus_config(targets, am.url.removeprefix("http://"), rule_files,
                                       interval)
            prom = start_prometheus(workdir, config)
        except BaseException:
            am.stop()
            raise
        return cls(prom, am)

    def stop(self) -> None:
        self.prometheus.stop()
        self.alertmanager.stop()

    # --- reading them ----------------------------------------------------------------
    def alertmanager_alerts(self, name: str) -> list[dict[str, Any]]:
        """Alertmanager's alerts named ``name`` (API v2: resolved alerts are not listed)."""
        query = urllib.parse.urlencode({"filter": f'alertname="{name}"'})
        alerts: list[dict[str, Any]] = get_json(f"{self.alertmanager.url}/api/v2/alerts?{query}")
        return alerts

    def prometheus_alerts(self) -> list[dict[str, Any]]:
        """Prometheus's pending and firing alerts."""
        alerts: list[dict[str, Any]] = get_json(
            f"{self.prometheus.url}/api/v1/alerts")["data"]["alerts"]
        return alerts

    def rule_errors(self) -> dict[str, str]:
        """Rules whose last evaluation failed (name -> error): a rule can load and still
        fail on real series, e.g. two results with the same labels."""
        groups = get_json(f"{self.prometheus.url}/api/v1/rules")["data"]["groups"]
        return {rule["name"]: rule.get("lastError", "") for group in groups
                for rule in group["rules"] if rule["health"] == "err"}

    def query(self, promql: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": promql})
        result: list[dict[str, Any]] = get_json(
            f"{self.prometheus.url}/api/v1/query?{query}")["data"]["result"]
        return result

    def diagnostics(self) -> str:
        """What to print when an expected alert did not come (or go)."""
        parts = [f"prometheus alerts: {self.prometheus_alerts()}", f"up: {self.query('up')}"]
        parts.append(f"prometheus log:\n{self.prometheus.log_tail()}")
        parts.append(f"alertmanager log:\n{self.alertmanager.log_tail()}")
        return "\n".join(parts)

    # --- waiting on them -------------------------------------------------------------
    def wait_for_alerts(self, name: str, timeout_s: float,
                        diagnose: Callable[[], str] = lambda: "") -> list[dict[str, Any]]:
        """Alertmanager's active alerts named ``name``, once there is at least one."""
        found: list[dict[str, Any]] = []

        def active() -> bool:
            found[:] = [a for a in self.alertmanager_alerts(name)
                        if a["status"]["state"] == "active"]
            return bool(found)

        if not _wait(active, timeout_s):
            raise AssertionError(f"{name} did not reach Alertmanager in {timeout_s}s\n"
                                 f"{self.diagnostics()}\n{diagnose()}")
        return found

    def wait_until_resolved(self, name: str, timeout_s: float,
                            diagnose: Callable[[], str] = lambda: "") -> None:
        """Block until Alertmanager lists no alert named ``name`` any more."""
        if not _wait(lambda: not self.alertmanager_alerts(name), timeout_s):
            raise AssertionError(f"{name} did not resolve in {timeout_s}s: "
                                 f"{self.alertmanager_alerts(name)}\n{self.diagnostics()}\n"
                                 f"{diagnose()}")


def _wait(check: Callable[[], bool], timeout_s: float, every_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
