"""``orderpulse stack up|down|status``: the embedded broker as a background service.

``up`` starts Tansu detached and records it in ``<data_dir>/stack.json``;
point the other commands at it with the printed ``KAFKA_BOOTSTRAP_SERVERS``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import TextIO

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from orderpulse.broker import EmbeddedBroker
from orderpulse.settings import Settings
from orderpulse.topics import declare_topics


def _state_path(settings: Settings) -> Path:
    return settings.data_dir / "stack.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _answers(bootstrap: str) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
    except KafkaException:
        return False
    return True


def up(settings: Settings, out: TextIO) -> int:
    path = _state_path(settings)
    if path.exists():
        state = json.loads(path.read_text())
        if _alive(state["pid"]):
            out.write(f"already up: KAFKA_BOOTSTRAP_SERVERS={state['bootstrap']}\n")
            return 0
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(log_path=settings.data_dir / "broker.log", detach=True).start()
    declare_topics(settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap}))
    assert broker.process is not None
    path.write_text(json.dumps({"pid": broker.process.pid, "bootstrap": broker.bootstrap}))
    out.write(f"embedded broker up (pid {broker.process.pid}); topics declared\n"
              f"export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}\n")
    return 0


def down(settings: Settings, out: TextIO) -> int:
    path = _state_path(settings)
    if not path.exists():
        out.write("not running\n")
        return 0
    pid = json.loads(path.read_text())["pid"]
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    path.unlink()
    out.write(f"embedded broker (pid {pid}) stopped\n")
    return 0


def status(settings: Settings, out: TextIO) -> int:
    path = _state_path(settings)
    if not path.exists():
        out.write("embedded broker: not running\n")
        return 3
    state = json.loads(path.read_text())
    ok = _alive(state["pid"]) and _answers(state["bootstrap"])
    out.write(f"embedded broker: {'up' if ok else 'DOWN'} at {state['bootstrap']} "
              f"(pid {state['pid']})\n")
    return 0 if ok else 1


def command(settings: Settings, action: str, out: TextIO) -> int:
    return {"up": up, "down": down, "status": status}[action](settings, out)
