"""Fixtures of the unit tests: built from settings, nothing here connects."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.app import create_app


@pytest.fixture
def app() -> Any:
    """The streams app, built as the worker builds it, against no broker."""
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1",
                        ORDERPULSE_STREAM_FETCH_MAX_WAIT_MS=77)
    app = create_app(settings, Metrics.create(CollectorRegistry()))
    yield app
    app.consumer._thread.thread_loop.close()  # Faust's loops, made by the properties used
    app.loop.close()
