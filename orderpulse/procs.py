"""Child processes of a run (one per step), started and stopped the same way by
``orderpulse run``, the benchmark and the integration tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orderpulse.scrape import Samples, scrape


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def samples(self) -> Samples:
        try:
            return scrape(self.metrics_url)
        except OSError:
            return {}

    def reachable(self) -> bool:
        try:
            scrape(self.metrics_url)
        except OSError:
            return False
        return True

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = 20.0) -> int:
        """SIGTERM (the step flushes and commits), SIGKILL after ``grace_s``."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], env: dict[str, str], metrics_port: int,
          log_dir: Path) -> Child:
    """Start ``orderpulse <args>`` with ``env`` added to this environment."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **env, "ORDERPULSE_METRICS_PORT": str(metrics_port)}
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orderpulse.cli", *args], env=full_env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Own session: a Ctrl-C reaches only the runner, which stops the
            # steps in order (upstream first) so nothing in flight is cut.
            start_new_session=True,
        )
    return Child(name, process, metrics_port, log_path)


def wait_for_metrics(child: Child, timeout_s: float = 30.0) -> None:
    """Block until the child's metrics endpoint answers (it is up) or it died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}:\n"
                               f"{child.log_tail()}")
        if child.reachable():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{child.name} metrics did not come up in {timeout_s}s")
