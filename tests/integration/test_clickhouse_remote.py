"""The server path (``ServerClickHouse``, clickhouse-connect over HTTP) against an
endpoint that speaks ClickHouse's HTTP interface and runs real ClickHouse SQL
(``chdb_http.py``: chdb behind a loopback HTTP server): the client's connect
handshake, the DDL one statement per request, the dedup token, the real sink
with its outage handling, and the health views."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.clickhouse import ServerClickHouse, apply_ddl, ddl_statements
from orderpulse.connectors.clickhouse_sink import ClickHouseSink
from orderpulse.errors import ClickHouseError
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.chdb_http import ChdbHttpServer
from tests.integration.conftest import SettingsFactory, group_offsets
from tests.integration.test_health_views import EXPECTED, load_health_rows, read_view
from tests.integration.test_sink_faults import order_event, wait_until

pytestmark = pytest.mark.integration

USER, PASSWORD = "orderpulse_sink", "s3cret"
T0 = 1_794_409_200_000  # 2026-11-11 15:00:00 UTC


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ChdbHttpServer]:
    with ChdbHttpServer(tmp_path / "chdb", user=USER, password=PASSWORD) as running:
        yield running


def server_settings(server: ChdbHttpServer, tmp_path: Path, password: str = PASSWORD,
                    ) -> Settings:
    return Settings(CLICKHOUSE_URL=server.url, CLICKHOUSE_USER=USER,
                    CLICKHOUSE_PASSWORD=password, ORDERPULSE_DATA_DIR=tmp_path,
                    CLICKHOUSE_DATABASE=f"op_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def client(server: ChdbHttpServer, tmp_path: Path) -> Iterator[ServerClickHouse]:
    connected = ServerClickHouse(server_settings(server, tmp_path))
    yield connected
    connected.close()


# --- the client and the DDL ------------------------------------------------------------
def test_connect_handshake_and_a_wrong_password(server: ChdbHttpServer, tmp_path: Path) -> None:
    connected = ServerClickHouse(server_settings(server, tmp_path))
    version, settings_query = server.requests[0].sql, server.requests[1].sql
    assert version.startswith("SELECT version(), timezone()")
    assert "system.settings" in settings_query and settings_query.endswith("FORMAT Native")
    assert connected.query_rows("SELECT 1 + 1 AS two") == [{"two": 2}]
    connected.close()
    with pytest.raises(ClickHouseError, match="516"):
        ServerClickHouse(server_settings(server, tmp_path, password="wrong"))


def test_ddl_goes_one_statement_per_request_and_reapplies(server: ChdbHttpServer,
                                                           client: ServerClickHouse) -> None:
    apply_ddl(client)
    sent = [r.sql for r in server.requests if re.search(r"^\s*(CREATE|ALTER)", _code(r.sql),
                                                        re.M)]
    assert sent == [f"CREATE DATABASE IF NOT EXISTS {client.database}",
                    *ddl_statements(client.database)]
    apply_ddl(client)  # idempotent on the server too
    objects = client.query_rows(
        f"SELECT name, engine FROM system.tables WHERE database = '{client.database}' "
        "ORDER BY name")
    engines = {o["name"]: o["engine"] for o in objects}
    assert {n for n, e in engines.items() if e == "View"} == {
        v for k, v in vars(names).items() if k.startswith("VIEW_HEALTH_")}
    assert {n for n, e in engines.items() if e == "ReplacingMergeTree"} == {
        v for k, v in vars(names).items() if k.startswith("TABLE_")}
    with pytest.raises(ClickHouseError, match="UNKNOWN_TABLE"):
        client.query_rows(f"SELECT * FROM {client.database}.no_such_table")


def _code(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def test_same_dedup_token_twice_lands_one_copy(server: ChdbHttpServer,
                                               client: ServerClickHouse) -> None:
    apply_ddl(client)
    row = {"order_id": "shopify:1", "channel": "shopify", "status": "PAID",
           "refund_status": "NONE", "status_since": "2026-11-11 15:00:00.000",
           "last_event_time": "2026-11-11 15:00:00.000", "event_count": 2, "stuck": False,
           "updated_at": "2026-11-11 15:00:01.000", "kafka_partition": 0, "kafka_offset": 7,
           "landed_at": "2026-11-11 15:00:02.000"}
    client.insert_rows(names.TABLE_ORDER_STATES, [row], dedup_token="batch-1")
    client.insert_rows(names.TABLE_ORDER_STATES, [row], dedup_token="batch-1")  # a retry
    count = f"SELECT count() AS n FROM {client.database}.{names.TABLE_ORDER_STATES}"
    # No FINAL: the token, not a merge, kept the second copy out.
    assert client.query_rows(count + " SETTINGS output_format_json_quote_64bit_integers=0") == [
        {"n": 1}]
    client.insert_rows(names.TABLE_ORDER_STATES, [row], dedup_token="batch-2")
    assert client.query_rows(count + " SETTINGS output_format_json_quote_64bit_integers=0") == [
        {"n": 2}]
    inserts = [r for r in server.requests if r.sql.startswith("INSERT")]
    assert [r.params["insert_deduplication_token"] for r in inserts] == [
        "batch-1", "batch-1", "batch-2"]


def test_health_views_through_the_server(client: ServerClickHouse) -> None:
    apply_ddl(client)
    load_health_rows(client, int(time.time()) * 1000)
    for view, expected in EXPECTED.items():
        assert read_view(client, view) == expected, view


# --- the real sink ---------------------------------------------------------------------
Stack = tuple[Settings, ClickHouseSink, ServerClickHouse, ChdbHttpServer]


@pytest.fixture
def remote_sink(settings_factory: SettingsFactory, server: ChdbHttpServer,
                tmp_path: Path) -> Iterator[Stack]:
    base = settings_factory()
    settings = base.model_copy(update={
        "clickhouse_url": server.url, "clickhouse_user": USER,
        "clickhouse_password": SecretStr(PASSWORD)})
    sink_client, reader = ServerClickHouse(settings), ServerClickHouse(settings)
    apply_ddl(sink_client)
    sink = ClickHouseSink(settings, sink_client, Metrics.create(CollectorRegistry()))
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
    thread.start()
    yield settings, sink, reader, server
    stop.set()
    thread.join(30)
    sink_client.close()
    reader.close()


def _state(status: str, updated_ms: int, order: str = "shopify:1") -> bytes:
    return codec("OrderState").encode({
        "order_id": order, "channel": "shopify", "status": status,
        "refund_status": "NONE", "status_since": T0, "last_event_time": T0, "event_count": 1,
        "stuck": status == "PAID", "updated_at": updated_ms})


def _alert(kind: str) -> bytes:
    return codec("OrderAlert").encode({
        "kind": kind, "order_id": "shopify:1", "channel": "shopify", "state": "PAID",
        "since": T0, "limit_ms": 14_400_000, "stuck_for_ms": 15_000_000, "at": T0 + 15_000_000})


def _rejected(reason: str, from_status: str | None) -> bytes:
    return codec("RejectedEvent").encode({
        "reason": reason, "order_id": "shopify:1", "channel": "shopify", "event_id": "e00001",
        "event_type": "CREATED", "from_status": from_status, "to_status": "PENDING_PAYMENT",
        "event_time": T0, "event": b"\xc3\x01whatever", "at": T0 + 5})


def produce(settings: Settings, records: dict[str, list[bytes]]) -> None:
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    for topic, values in records.items():
        for value in values:
            producer.produce(topic_name(settings, topic), key=b"shopify:1", value=value)
    assert producer.flush(15) == 0


def committed(settings: Settings, topics: dict[str, list[bytes]]) -> bool:
    for topic, values in topics.items():
        offsets = group_offsets(settings, settings.group(names.STEP_SINK),
                                [topic_name(settings, topic)])
        if sum(max(tp.offset, 0) for tp in offsets) != len(values):
            return False
    return True


def rows(client: ServerClickHouse, sql: str) -> list[dict[str, Any]]:
    return client.query_rows(sql.format(db=client.database)
                             + " SETTINGS output_format_json_quote_64bit_integers = 0")


def test_sink_lands_every_topic_through_the_server(remote_sink: Stack) -> None:
    settings, _sink, reader, server = remote_sink
    records = {
        names.TOPIC_NORMALIZED: [codec("OrderEvent").encode(order_event(n)) for n in (1, 2)],
        # The newer state first, then a stale re-send: the version (updated_at) wins.
        names.TOPIC_STATE: [_state("PENDING_PAYMENT", T0 + 1), _state("PAID", T0 + 3),
                            _state("PENDING_PAYMENT", T0 + 1), b"garbage"],
        names.TOPIC_ALERTS: [_alert("RAISED"), _alert("RESOLVED"), _alert("RAISED")],
        names.TOPIC_DUPLICATES: [_rejected("duplicate", None), _rejected("duplicate", None)],
        names.TOPIC_QUARANTINE: [_rejected("impossible_transition", "DELIVERED")],
    }
    produce(settings, records)
    wait_until(lambda: committed(settings, records) and bool(
        rows(reader, "SELECT 1 FROM {db}.dead_letters")))

    assert rows(reader, "SELECT order_id, status, stuck, toString(updated_at) AS u "
                        "FROM {db}.order_states FINAL") == [
        {"order_id": "shopify:1", "status": "PAID", "stuck": True,
         "u": "2026-11-11 15:00:00.003"}]
    assert rows(reader, "SELECT kind, state, stuck_for_ms FROM {db}.order_alerts FINAL "
                        "ORDER BY kind") == [
        {"kind": "RAISED", "state": "PAID", "stuck_for_ms": 15_000_000},
        {"kind": "RESOLVED", "state": "PAID", "stuck_for_ms": 15_000_000}]
    # One row per duplicate record (two deliveries repeated), with its Kafka position.
    assert rows(reader, "SELECT count() AS n, uniqExact(kafka_offset) AS offsets "
                        "FROM {db}.duplicates FINAL") == [{"n": 2, "offsets": 2}]
    assert rows(reader, "SELECT reason, from_status, to_status, event_id "
                        "FROM {db}.quarantine FINAL") == [
        {"reason": "impossible_transition", "from_status": "DELIVERED",
         "to_status": "PENDING_PAYMENT", "event_id": "e00001"}]
    assert rows(reader, "SELECT count() AS n FROM {db}.order_events FINAL") == [{"n": 2}]
    assert rows(reader, "SELECT reason, source_topic FROM {db}.dead_letters") == [
        {"reason": "not_avro", "source_topic": topic_name(settings, names.TOPIC_STATE)}]

    inserts = [r for r in server.requests if r.sql.startswith("INSERT")]
    assert inserts and all(re.fullmatch(r"[0-9a-f]{64}", r.params["insert_deduplication_token"])
                           for r in inserts)


def test_sink_holds_offsets_while_the_server_fails_then_recovers(remote_sink: Stack) -> None:
    settings, sink, reader, _server = remote_sink
    first = {names.TOPIC_STATE: [_state("PAID", T0 + n, f"shopify:{n}") for n in range(1, 4)]}
    produce(settings, first)
    wait_until(lambda: committed(settings, first))

    # The server loses the table: inserts fail with a server exception over HTTP.
    reader.command(f"DETACH TABLE {reader.database}.{names.TABLE_ORDER_STATES}")
    produce(settings, {names.TOPIC_STATE: [_state("SHIPPED", T0 + 10, "shopify:4")]})
    failures = sink.metrics.sink_failures.labels(names.TABLE_ORDER_STATES)
    wait_until(lambda: failures._value.get() >= 2)
    assert committed(settings, first), "offsets moved while the insert was failing"

    reader.command(f"ATTACH TABLE {reader.database}.{names.TABLE_ORDER_STATES}")
    wait_until(lambda: committed(settings, {names.TOPIC_STATE: [b""] * 4}))
    # Nothing lost: every order's state, the one held back during the outage too.
    assert rows(reader, "SELECT order_id, status FROM {db}.order_states FINAL "
                        "ORDER BY order_id") == [
        {"order_id": f"shopify:{n}", "status": "PAID" if n < 4 else "SHIPPED"}
        for n in range(1, 5)]
