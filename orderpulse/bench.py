"""``orderpulse bench``: throughput and latency on the embedded broker, as ratios to
baselines measured in the same run (the machine is noisy; ratios travel).

    a  confluent-kafka consume -> produce loop (pass-through): the transport limit
    b  naive Faust agent: ``await topic.send()`` per event (pass-through)
    c  Faust agent that only consumes
    d  this pipeline: raw topic -> streams worker -> sink -> ClickHouse rows
    L  latency of d at a fixed offered rate: channel event time to ClickHouse row

The other suites: ``bench_connectors`` (connectors), ``normalize_figures``
(normalize) and ``bench_inventory`` (inventory: the stock agent).

Every figure counts events from the first one consumed to the last one out,
so process start-up and group joins are not in the rates.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs

import orjson
from confluent_kafka import Consumer, Producer
from prometheus_client import CollectorRegistry, Counter

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import EmbeddedBroker, free_port
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Faults, Sandbox
from orderpulse.connectors.sandbox.shopify import SHOP
from orderpulse.procs import spawn, wait_for_metrics
from orderpulse.runner import Pipeline, settings_env, start_pipeline
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import declare_topics, topic_name

BENCH_COUNTER = "orderpulse_bench_events_total"
_SHOP_TZ = timezone(timedelta(hours=-5))


# --- input --------------------------------------------------------------------

def sandbox_deliveries(seed: int, faults: Faults) -> Iterator[Delivery]:
    """Shopify webhook deliveries of simulated lifecycles, with ``faults``."""
    sandbox = Sandbox({names.CHANNEL_SHOPIFY: {"webhook_secret": "bench"}}, seed=seed,
                      faults=faults)
    # A late delivery is overtaken by the next few (about 10 per second of delay).
    held: list[tuple[float, int, Delivery]] = []
    position = 0
    while True:
        order, event = sandbox.sim.step()
        for delay, d in sandbox.with_faults(sandbox.emit(order, event, datetime.now(UTC))):
            position += 1
            held.append((position + delay * 10, position, d))
        held.sort(key=lambda h: (h[0], h[1]))
        while held and held[0][0] <= position:
            yield held.pop(0)[2]


def raw_events(count: int, seed: int = 11,
               faults: Faults | None = None) -> Iterator[tuple[bytes, bytes]]:
    """Realistic Shopify raw events (default: 2% duplicates, 2% late, ~0.4% broken)."""
    raw_codec = codec("RawEvent")
    # Forged deliveries never reach the raw topic.
    faults = faults or Faults(forged=0.0)
    for i, d in enumerate(islice(sandbox_deliveries(seed, faults), count)):
        yield (str(i).encode(), raw_codec.encode({
            "channel": names.CHANNEL_SHOPIFY, "shop_id": SHOP, "delivery_mode": "WEBHOOK",
            "source_topic": d.headers["X-Shopify-Topic"], "source_event_id": d.delivery_id,
            "request_id": f"b{i}",
            "received_at": time.time_ns() // 1_000_000, "headers": {},
            "content_type": "application/json", "body": d.body}))


def fill(settings: Settings, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20,
                         "enable.idempotence": True})
    for key, value in events:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(60)


# --- a: confluent-kafka loop -------------------------------------------------------

def confluent_loop(settings: Settings, src: str, dst: str, count: int) -> float:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"bench-a-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": int(settings.session_timeout_s * 1000)})
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 5,
                         "enable.idempotence": True})
    consumer.subscribe([src])
    seen, first = 0, 0.0
    try:
        while seen < count:
            batch = consumer.consume(1000, 1.0)
            if batch and not first:
                first = time.perf_counter()
            for msg in batch:
                if msg.error() is None:
                    producer.produce(dst, key=msg.key(), value=msg.value())
                    seen += 1
            producer.poll(0)
            consumer.commit(asynchronous=True)
        producer.flush(60)
        return count / (time.perf_counter() - first)
    finally:
        consumer.close()


# --- b, c: Faust agents (child processes) ------------------------------------------

def faust_child_main(mode: str) -> None:
    """Entry of a Faust benchmark child: ``naive`` (send per event) or ``consume``."""
    import faust

    from orderpulse.metrics import serve
    from orderpulse.settings import load_settings
    from orderpulse.streams.app import faust_broker_urls

    settings = load_settings()
    registry = CollectorRegistry()
    counter = Counter(BENCH_COUNTER, "Events handled by a benchmark agent.", registry=registry)
    serve(registry, settings.metrics_host, settings.metrics_port)
    app = faust.App(f"bench-{mode}-{uuid.uuid4().hex[:8]}", broker=faust_broker_urls(settings),
                    store="memory://", web_enabled=False, consumer_auto_offset_reset="earliest",
                    broker_session_timeout=settings.session_timeout_s,
                    broker_heartbeat_interval=settings.session_timeout_s / 10,
                    topic_allow_declare=False)
    src = app.topic(topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY)),
                    key_serializer="raw", value_serializer="raw")
    dst = app.topic(topic_name(settings, "bench.out.b"), key_serializer="raw",
                    value_serializer="raw")

    @app.agent(src)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            if mode == "naive":
                await dst.send(key=event.key, value=event.value)
            counter.inc()

    faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False
                 ).execute_from_commandline()


def _poll_rate(read: Any, count: int, timeout_s: float = 300) -> float:
    """Events/s between the first observed progress and reaching ``count``."""
    deadline = time.monotonic() + timeout_s
    first_at, first_n = 0.0, 0.0
    while time.monotonic() < deadline:
        n = read()
        now = time.perf_counter()
        if n > 0 and not first_at:
            first_at, first_n = now, n
        if n >= count:
            return (count - first_n) / (now - first_at) if now > first_at else float("nan")
        time.sleep(0.02)
    raise TimeoutError(f"benchmark stalled at {read()} of {count}")


def faust_agent(settings: Settings, mode: str, count: int, log_dir: Path) -> float:
    child = spawn(f"bench-{mode}", ["bench-agent", mode], settings_env(settings), free_port(),
                  log_dir)
    try:
        wait_for_metrics(child)
        return _poll_rate(lambda: total(child.samples(), BENCH_COUNTER), count)
    finally:
        child.stop()


# --- d: the pipeline ---------------------------------------------------------------

def _pipeline_progress(pipeline: Pipeline) -> float:
    """Raw events done: landed as rows or dead letters, or recognised as duplicates."""
    c = pipeline.counts()
    return c["landed"] + c["dead_landed"] + total(pipeline.samples(), "orderpulse_duplicates_total")


def pipeline_rate(settings: Settings, count: int) -> tuple[float, Pipeline]:
    pipeline = start_pipeline(settings, steps=("streams", "sink"))
    # Every raw event ends as an order_events row or a dead_letters row.
    rate = _poll_rate(lambda: _pipeline_progress(pipeline), count)
    return rate, pipeline


def lifecycle_rate(settings: Settings, count: int) -> float:
    """The streams worker alone over raw events with 10% duplicates, 5% out of order."""
    fill(settings, topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY)),
         list(raw_events(count, seed=21, faults=Faults(duplicate=0.10, late=0.05,
                                                         broken_body=0.0, forged=0.0))))
    pipeline = start_pipeline(settings, steps=("streams",))
    try:
        return _poll_rate(lambda: pipeline.counts()["consumed"], count)
    finally:
        pipeline.stop()


# --- L: latency at a fixed offered rate -----------------------------------------------

def _timed_bodies(count: int) -> Iterator[bytes]:
    for body in (d.body for d in sandbox_deliveries(5, NO_FAULTS)):
        if count <= 0:
            return
        doc = orjson.loads(body)
        now = datetime.now(UTC).astimezone(_SHOP_TZ)
        doc["updated_at"] = now.isoformat(timespec="milliseconds")
        count -= 1
        yield orjson.dumps(doc)


def offered_load(settings: Settings, rate: float, seconds: float) -> int:
    """Produce raw events at ``rate``/s, each stamped with its event time at send."""
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 1,
                         "enable.idempotence": True})
    topic = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
    raw_codec, count = codec("RawEvent"), int(rate * seconds)
    start = time.perf_counter()
    for i, body in enumerate(_timed_bodies(count)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, key=str(i).encode(), value=raw_codec.encode({
            "channel": names.CHANNEL_SHOPIFY, "shop_id": SHOP, "delivery_mode": "WEBHOOK",
            "source_topic": "orders/updated", "source_event_id": None, "request_id": f"l{i}",
            "received_at": time.time_ns() // 1_000_000, "headers": {},
            "content_type": "application/json", "body": body}))
        producer.poll(0)
    producer.flush(30)
    return count


def latency(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    pipeline = start_pipeline(settings, steps=("streams", "sink"))
    try:
        time.sleep(2 * settings.session_timeout_s)  # let both groups join before the clock runs
        count = offered_load(settings, rate, seconds)
        _poll_rate(lambda: _pipeline_progress(pipeline), count)
    finally:
        pipeline.stop()
    client = EmbeddedClickHouse(str(settings.chdb_path), settings.clickhouse_database)
    try:
        [row] = client.query_rows(
            f"SELECT quantile(0.5)(d) AS p50, quantile(0.99)(d) AS p99, max(d) AS max, "
            f"count() AS n FROM (SELECT dateDiff('millisecond', event_time, landed_at) / 1000 "
            f"AS d FROM {settings.clickhouse_database}.{names.TABLE_ORDER_EVENTS})")
    finally:
        client.close()
    return {k: float(v) for k, v in row.items()}


# --- the command ------------------------------------------------------------------

@dataclass
class Figure:
    name: str
    value: float
    unit: str
    ratio: str = ""


def settings_for(base: Settings, bootstrap: str, data_dir: Path) -> Settings:
    """One figure's settings on ``bootstrap``: its own topics, groups, data and database."""
    run = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={
        "kafka_bootstrap_servers": bootstrap, "topic_suffix": f".bench{run}",
        "data_dir": data_dir / run, "clickhouse_database": f"bench_{run}",
        "clickhouse_url": None, "log_level": "WARNING"})
    declare_topics(settings)
    return settings


def measure(base: Settings, events: int, out: TextIO) -> list[Figure]:
    data_dir = base.data_dir / "bench"
    log_dir = data_dir / "logs"
    with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
        settings = settings_for(base, broker.bootstrap, data_dir)
        out.write(f"filling {events} raw events ...\n")
        out.flush()
        fill(settings, topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY)),
             list(raw_events(events)))
        src = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
        a = confluent_loop(settings, src, topic_name(settings, "bench.out.a"), events)
        out.write(f"a confluent loop     {a:9.0f} events/s\n")
        out.flush()
        b = faust_agent(settings, "naive", events, log_dir)
        out.write(f"b naive Faust send   {b:9.0f} events/s\n")
        out.flush()
        c = faust_agent(settings, "consume", events, log_dir)
        out.write(f"c Faust consume-only {c:9.0f} events/s\n")
        out.flush()
        d, pipeline = pipeline_rate(settings, events)
        pipeline.stop()
        out.write(f"d pipeline to rows   {d:9.0f} events/s\n")
        out.flush()
        e = lifecycle_rate(settings_for(base, broker.bootstrap, data_dir), events)
        out.write(f"e normalize+dedup+lifecycle (10% dup, 5% late) {e:9.0f} events/s\n")
        out.flush()
        lat = latency(settings_for(base, broker.bootstrap, data_dir), 1000, 10)
    return [
        Figure("a: confluent-kafka consume->produce loop", a, "events/s", "1.00 (baseline)"),
        Figure("b: naive Faust agent, await send per event", b, "events/s", f"{b / a:.3f} x a"),
        Figure("c: Faust agent, consume only", c, "events/s", f"{c / a:.3f} x a"),
        Figure("d: orderpulse raw topic -> ClickHouse rows", d, "events/s",
               f"{d / a:.3f} x a; {d / c:.2f} x c; {d / b:.2f} x b"),
        Figure("e: streams worker alone (normalize, dedup, lifecycle), 10% duplicates, "
               "5% out of order", e, "events/s", f"{e / c:.2f} x c"),
        Figure("L: d at 1,000 events/s offered, p50 event->row", lat["p50"], "s"),
        Figure("L: d at 1,000 events/s offered, p99 event->row", lat["p99"], "s"),
    ]


def markdown_table(figures: list[Figure], events: int) -> str:
    lines = [f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {events} raw events, embedded broker "
             f"(Tansu, memory), chdb.", "", "| figure | value | ratio |", "|---|---:|---|"]
    lines += [f"| {f.name} | {f.value:,.2f} {f.unit} | {f.ratio} |" for f in figures]
    return "\n".join(lines) + "\n"


def _plain_parse(body: bytes) -> object:
    """The baseline: what parsing the payload alone costs (JSON, or a form's JSON field)."""
    if body[:1] in (b"{", b"["):
        return json.loads(body)
    form = parse_qs(body.decode("utf-8", "replace"))
    return json.loads(form["param"][0]) if "param" in form else body.decode().splitlines()


def normalize_figures(out: TextIO, steps: int = 20000) -> list[Figure]:
    """Normalizations per second over a realistic channel mix, next to parsing alone."""
    from orderpulse.connectors.base import raw_event
    from orderpulse.connectors.sandbox.capture import capture, sandbox_config
    from orderpulse.streams.steps import Source, normalize_message

    captured = capture(sandbox_config(), steps=steps)
    raw_codec = codec("RawEvent")
    envelopes = [raw_codec.encode(raw_event(ch, mode, r, received_at=0, request_id="b"))
                 for ch, mode, r in captured]
    bodies = [r.body for _ch, _mode, r in captured]
    started = time.perf_counter()
    for body in bodies:
        _plain_parse(body)
    parse_rate = len(bodies) / (time.perf_counter() - started)
    started, dead = time.perf_counter(), 0
    for value in envelopes:
        dead += normalize_message(Source("b", 0, 0, None, value), now_ms=0,
                                  pii_key=b"k").dead_letter is not None
    rate = len(envelopes) / (time.perf_counter() - started)
    out.write(f"n normalize mix      {rate:9.0f} events/s ({len(envelopes)} payloads, "
              f"{dead} dead letters); json.loads alone {parse_rate:.0f}/s\n")
    return [Figure("j: plain json.loads of the same channel payloads", parse_rate, "payloads/s",
                   "1.00 (baseline)"),
            Figure(f"n: normalize (Avro in, normalizer, Avro out), {len(envelopes)} payloads of "
                   f"10 channels", rate, "events/s", f"{rate / parse_rate:.3f} x j")]


def connector_figures(base: Settings, out: TextIO) -> list[Figure]:
    from orderpulse import bench_connectors

    data_dir = base.data_dir / "bench"
    with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
        settings = settings_for(base, broker.bootstrap, data_dir)
        rows = bench_connectors.measure(settings, out)
    units = ["records/s", "requests/s", "orders/s"]
    return [Figure(name, value, unit, ratio) for (name, value, ratio), unit in zip(
        rows, units, strict=True)]


def main(settings: Settings, *, events: int, out: TextIO, markdown: Path | None,
         suite: str = "all") -> int:
    figures: list[Figure] = []
    if suite in ("all", "pipeline"):
        figures += measure(settings, events, out)
    if suite in ("all", "connectors"):
        figures += connector_figures(settings, out)
    if suite in ("all", "normalize"):
        figures += normalize_figures(out)
    if suite in ("all", "inventory"):
        from orderpulse import bench_inventory

        figures += bench_inventory.measure(settings, events, out)
    table = markdown_table(figures, events)
    out.write("\n" + table)
    if markdown is not None:
        markdown.write_text(table)
    return 0


