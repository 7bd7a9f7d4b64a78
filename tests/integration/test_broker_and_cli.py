"""The embedded broker and the `orderpulse` command as a user runs them."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from orderpulse.broker import EmbeddedBroker
from orderpulse.errors import BrokerError
from orderpulse.topics import declare_topics, declared_topics
from tests.integration.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def test_topics_are_declared_once_with_their_partitions(settings_factory: SettingsFactory,
                                                        ) -> None:
    settings = settings_factory()  # declares
    assert declare_topics(settings) == []  # idempotent
    meta = AdminClient(settings.kafka_client_config()).list_topics(timeout=10)
    for spec in declared_topics(settings):
        assert len(meta.topics[spec.name].partitions) == spec.partitions


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(BrokerError, match="already taken"):
            EmbeddedBroker(port=sock.getsockname()[1]).start()


def _cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL")}
    env["ORDERPULSE_DATA_DIR"] = str(cwd / "var")
    return subprocess.run([sys.executable, "-m", "orderpulse.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _listeners_of(data_dir: Path) -> set[str]:
    """Listening sockets of processes working in ``data_dir`` (by their environment or
    command line): other processes on a shared machine do not count."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=False).stdout
    mine = str(data_dir).encode()
    found = set()
    for line in out.splitlines():
        for pid in re.findall(r"pid=(\d+)", line):
            try:
                proc = Path("/proc") / pid
                owned = mine in (proc / "environ").read_bytes() or \
                    mine in (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if owned:
                found.add(f"{line.split()[3]} (pid {pid})")
    return found


def test_run_reports_from_clickhouse_and_leaves_nothing_listening(tmp_path: Path) -> None:
    done = _cli(["run", "--duration", "6", "--rate", "100"], tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drained: True" in done.stdout
    assert "Dead letters by reason:" in done.stdout
    assert _listeners_of(tmp_path) == set()

    report = _cli(["report", "--json"], tmp_path, timeout=60)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    landed = int(re.search(r"^pipeline: .* landed (\d+);", done.stdout, re.M).group(1))
    # The sandbox sends duplicates (same event): the report counts each event once.
    assert 0 < data["events"] <= landed
    assert data["orders"] > 0
    channels = {row["channel"] for row in data["orders_by_current_status"]}
    assert {"shopify", "taobao", "douyin", "pos"} <= channels, channels
    assert data["dead_letters"] == sum(r["records"] for r in data["dead_letters_by_reason"])


def test_stack_up_status_down(tmp_path: Path) -> None:
    up = _cli(["stack", "up"], tmp_path, timeout=60)
    try:
        assert up.returncode == 0, up.stderr
        assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:" in up.stdout
        status = _cli(["stack", "status"], tmp_path, timeout=30)
        assert status.returncode == 0 and " up " in status.stdout
    finally:
        down = _cli(["stack", "down"], tmp_path, timeout=30)
    assert down.returncode == 0
    assert _cli(["stack", "status"], tmp_path, timeout=30).returncode == 3


def test_normalize_command_reads_stdin_and_exits_2_on_bad_input(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "orderpulse.cli", "normalize", "--channel",
                           "shopify", "-"], input=b"not json", capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 2
    assert json.loads(done.stdout)["dead_letter"]["reason"] == "not_json"
