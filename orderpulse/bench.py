"""``orderpulse bench``: throughput and latency on the embedded broker, as ratios to
baselines measured in the same run (the machine is noisy; ratios travel).

    a  confluent-kafka consume -> produce loop (pass-through): the transport limit
    b  naive Faust agent: ``await topic.send()`` per event (pass-through)
    c  Faust agent that only consumes
    d  this pipeline: raw topics (ten channels' mix, 10% duplicates, 5% out of order)
       -> streams worker -> sink -> ClickHouse rows
    d2 the same with two streams workers sharing the partitions
    L  latency of d (and L2 of d2) at a fixed offered rate: channel event time to row;
       Lh the same at half of d's measured rate (the path, not a queue)

The other suites: ``bench_connectors`` (connectors), ``normalize_figures``
(normalize) and ``bench_inventory`` (inventory: the stock agent).

Every figure counts events from the first one consumed to the last one out,
so process start-up and group joins are not in the rates. Next to d the suite
reports what one streams worker costs: CPU per raw event and resident memory.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
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
from orderpulse.connectors.channels.shopify import order_id_of
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Faults, Sandbox
from orderpulse.connectors.sandbox.shopify import SHOP
from orderpulse.procs import Child, spawn, wait_for_metrics
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
        # Keyed as the receiver keys it (the topic contract): by the order id.
        key = order_id_of(d.body) or d.delivery_id
        yield (key.encode(), raw_codec.encode({
            "channel": names.CHANNEL_SHOPIFY, "shop_id": SHOP, "delivery_mode": "WEBHOOK",
            "source_topic": d.headers["X-Shopify-Topic"], "source_event_id": d.delivery_id,
            "request_id": f"b{i}",
            "received_at": time.time_ns() // 1_000_000, "headers": {},
            "content_type": "application/json", "body": d.body}))


@dataclass
class Mix:
    """Raw records of every channel, in arrival order: ``(raw topic base, key, value)``;
    ``units``: what the pipeline turns them into (normalized events + dead letters),
    computed offline with the same pure step the worker runs."""

    records: list[tuple[str, bytes, bytes]]
    units: int


def channel_mix(count: int, seed: int = 3, duplicate: float = 0.10, late: float = 0.05) -> Mix:
    """``count`` raw records of the ten simulated channels (webhook pushes, poll pages,
    carriers), as the connectors would publish them; ``duplicate`` of them delivered
    again a few records later (a channel's retry), ``late`` overtaken by up to 50 later
    ones (out of order)."""
    import random

    from orderpulse.connectors.base import raw_event
    from orderpulse.connectors.sandbox.capture import capture, sandbox_config
    from orderpulse.streams.steps import Source, normalize_message

    rng, raw_codec = random.Random(seed), codec("RawEvent")  # noqa: S311 - a workload
    # About 0.8 records per lifecycle step (poll pages bundle some): enough for ``count``.
    captured = capture(sandbox_config(), steps=count * 3 // 2, seed=seed)
    by_channel: dict[str, list[tuple[str, bytes, bytes]]] = {}
    for i, (ch, mode, r) in enumerate(captured):
        by_channel.setdefault(ch, []).append((names.raw_topic(ch), r.key.encode(), raw_codec.encode(
            raw_event(ch, mode, r, received_at=time.time_ns() // 1_000_000, request_id=f"m{i}"))))
    # The capture lists pushes, then each poller's pages: merge the channels at random,
    # each in its own order, so that any prefix has every channel in proportion.
    records: list[tuple[str, bytes, bytes]] = []
    queues = {ch: list(reversed(recs)) for ch, recs in by_channel.items()}
    while queues:
        ch = rng.choices(list(queues), weights=[len(q) for q in queues.values()])[0]
        records.append(queues[ch].pop())
        if not queues[ch]:
            del queues[ch]
    arrival: list[tuple[float, tuple[str, bytes, bytes]]] = []
    for i, record in enumerate(records):
        arrival.append((i + (rng.uniform(1, 50) if rng.random() < late else 0), record))
        if rng.random() < duplicate:
            arrival.append((i + rng.uniform(1, 10), record))
    ordered = [r for _at, r in sorted(arrival, key=lambda a: a[0])][:count]
    now = time.time_ns() // 1_000_000
    units = sum(len(result.events) or 1 for result in (
        normalize_message(Source("bench", 0, 0, key, value), now_ms=now, pii_key=b"bench")
        for _base, key, value in ordered))
    return Mix(ordered, units)


def produce_all(settings: Settings, records: Iterable[tuple[str, bytes, bytes]]) -> None:
    """Write ``(topic, key, value)`` records and wait until they are acknowledged."""
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20,
                         "enable.idempotence": True})
    for topic, key, value in records:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush(60)


def fill_mix(settings: Settings, mix: Mix) -> None:
    produce_all(settings, ((topic_name(settings, base), key, value)
                           for base, key, value in mix.records))


def fill(settings: Settings, topic: str, events: list[tuple[bytes, bytes]]) -> None:
    produce_all(settings, ((topic, key, value) for key, value in events))


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

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    # As in the streams worker: Faust's spinner would turn on DEBUG logging in the
    # whole process, and the baselines would pay for it (see run_worker).
    worker.spinner = None
    worker.execute_from_commandline()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@dataclass
class Timed:
    rate: float  # events/s
    cpu_us: float = float("nan")  # CPU of the watched process per event, microseconds


def _timed(read: Any, count: int, pid: int | None = None, timeout_s: float = 300) -> Timed:
    """Events/s between the first observed progress and reaching ``count``.

    Polls every 20 ms until the first progress and near the end, and a few times a
    second in between: every poll scrapes a worker's metrics under its GIL (at a
    steady 50 polls/s, py-spy put about 10% of the worker there).
    """
    deadline = time.monotonic() + timeout_s
    first_at, first_n, first_cpu = 0.0, 0.0, 0.0
    while time.monotonic() < deadline:
        n = read()
        now = time.perf_counter()
        if n > 0 and not first_at:
            first_at, first_n = now, n
            first_cpu = cpu_seconds(pid) if pid else 0.0
        if n >= count:
            if now <= first_at:
                return Timed(float("nan"))
            cpu = (cpu_seconds(pid) - first_cpu) / (count - first_n) * 1e6 if pid else float("nan")
            return Timed((count - first_n) / (now - first_at), cpu)
        pause = 0.02
        if first_at and n > first_n:
            remaining_s = (count - n) * (now - first_at) / (n - first_n)
            pause = min(0.25, max(0.02, remaining_s / 4))
        time.sleep(pause)
    raise TimeoutError(f"benchmark stalled at {read()} of {count}")


def _poll_rate(read: Any, count: int, timeout_s: float = 300) -> float:
    return _timed(read, count, timeout_s=timeout_s).rate


def faust_agent(settings: Settings, mode: str, count: int, log_dir: Path) -> float:
    return faust_agent_timed(settings, mode, count, log_dir).rate


def faust_agent_timed(settings: Settings, mode: str, count: int, log_dir: Path) -> Timed:
    child = spawn(f"bench-{mode}", ["bench-agent", mode], settings_env(settings), free_port(),
                  log_dir)
    try:
        wait_for_metrics(child)
        return _timed(lambda: total(child.samples(), BENCH_COUNTER), count, child.process.pid)
    finally:
        child.stop()


# --- d: the pipeline ---------------------------------------------------------------

def _pipeline_progress(pipeline: Pipeline) -> float:
    """Raw events done: landed as rows or dead letters, or recognised as duplicates."""
    c = pipeline.counts()
    return c["landed"] + c["dead_landed"] + total(pipeline.samples(), "orderpulse_duplicates_total")


@dataclass
class PipelineRun:
    timed: Timed  # the rate, and the streams worker's CPU per raw event
    rss_mb: dict[str, float]  # resident memory per step process at the end


def start_workers(settings: Settings, workers: int) -> tuple[Pipeline, list[Child]]:
    """The streams worker(s) and the sink; ``workers`` > 1 adds workers to the same
    group, so the partitions are shared out among them (production's scale-out)."""
    pipeline = start_pipeline(settings, steps=("streams", "sink"))
    extra: list[Child] = []
    try:
        for n in range(2, workers + 1):
            extra.append(spawn(f"streams-{n}", ["streams"], settings_env(pipeline.settings),
                               free_port(), pipeline.settings.data_dir / "logs"))
            wait_for_metrics(extra[-1])
            pipeline.children[extra[-1].name] = extra[-1]
    except BaseException:
        stop_workers(pipeline, extra)
        raise
    return pipeline, extra


def stop_workers(pipeline: Pipeline, extra: list[Child]) -> None:
    for child in extra:  # upstream of the sink, like the first worker
        child.stop()
    pipeline.stop()


def pipeline_rate(settings: Settings, mix: Mix, workers: int = 1,
                  after_join: bool = False) -> PipelineRun:
    """d: raw records of the channel mix to ClickHouse rows, in raw records per second.
    ``after_join``: the mix is written once the workers have joined their group (else
    the raw topics are expected to hold it already)."""
    pipeline, extra = start_workers(settings, workers)
    try:
        if after_join:
            time.sleep(2 * settings.session_timeout_s)  # the group settles, then the input
            fill_mix(settings, mix)
        # Every normalized event ends as an order_events row (or is recognised as a
        # duplicate), every bad record as a dead_letters row.
        timed = _timed(lambda: _pipeline_progress(pipeline), mix.units,
                       pipeline.children["streams"].process.pid)
        per_record = mix.units / len(mix.records)
        timed = Timed(timed.rate / per_record, timed.cpu_us * per_record)
        memory = {name: rss_mb(child.process.pid) for name, child in pipeline.children.items()}
    finally:
        stop_workers(pipeline, extra)
    return PipelineRun(timed, memory)


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


def sink_rate(settings: Settings, raw: list[tuple[bytes, bytes]]) -> tuple[Timed, float]:
    """s: the sink alone over the normalized events of ``raw`` (pre-filled, as the
    streams worker would have written them): rows/s of one sink process, and the
    insert rate of ClickHouse itself (rows per second spent inside inserts)."""
    from orderpulse.streams.steps import Source, normalize_message

    now = time.time_ns() // 1_000_000
    normalized = [out for key, value in raw for out in normalize_message(
        Source("bench", 0, 0, key, value), now_ms=now, pii_key=b"bench").outputs]
    fill(settings, topic_name(settings, names.TOPIC_NORMALIZED), normalized)
    pipeline = start_pipeline(settings, steps=("sink",))
    try:
        timed = _timed(lambda: pipeline.counts()["landed"], len(normalized),
                       pipeline.children["sink"].process.pid)
        samples = pipeline.samples()
    finally:
        pipeline.stop()
    inserted = total(samples, "orderpulse_sink_batch_rows_sum")
    return timed, inserted / max(total(samples, "orderpulse_sink_batch_seconds_sum"), 1e-9)


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


def latency(settings: Settings, rate: float, seconds: float,
            workers: int = 1) -> dict[str, float]:
    pipeline, extra = start_workers(settings, workers)
    try:
        time.sleep(2 * settings.session_timeout_s)  # let both groups join before the clock runs
        count = offered_load(settings, rate, seconds)
        _poll_rate(lambda: _pipeline_progress(pipeline), count)
    finally:
        stop_workers(pipeline, extra)
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
        "clickhouse_url": None, "log_level": "WARNING",
        # The embedded broker, configured as `orderpulse run` configures it.
        "kafka_single_record_batches": True})
    declare_topics(settings)
    return settings


def measure(base: Settings, events: int, out: TextIO) -> list[Figure]:
    data_dir = base.data_dir / "bench"
    log_dir = data_dir / "logs"
    with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
        settings = settings_for(base, broker.bootstrap, data_dir)
        out.write(f"filling {events} raw events ...\n")
        out.flush()
        raw = list(raw_events(events))
        fill(settings, topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY)), raw)
        src = topic_name(settings, names.raw_topic(names.CHANNEL_SHOPIFY))
        mix = channel_mix(events)
        out.write(f"channel mix: {len(mix.records)} raw records, {mix.units} events\n")
        out.flush()
        a = confluent_loop(settings, src, topic_name(settings, "bench.out.a"), events)
        out.write(f"a confluent loop     {a:9.0f} events/s\n")
        out.flush()
        b = faust_agent(settings, "naive", events, log_dir)
        out.write(f"b naive Faust send   {b:9.0f} events/s\n")
        out.flush()
        c_run = faust_agent_timed(settings, "consume", events, log_dir)
        c = c_run.rate
        out.write(f"c Faust consume-only {c:9.0f} events/s\n")
        out.flush()
        fill_mix(settings, mix)
        d_run = pipeline_rate(settings, mix)
        d = d_run.timed.rate
        out.write(f"d pipeline to rows   {d:9.0f} events/s\n")
        out.flush()
        d2 = pipeline_rate(settings_for(base, broker.bootstrap, data_dir), mix, workers=2,
                           after_join=True).timed.rate
        out.write(f"d2 two workers       {d2:9.0f} events/s\n")
        out.flush()
        sink, insert_rate = sink_rate(settings_for(base, broker.bootstrap, data_dir), raw)
        out.write(f"s sink alone         {sink.rate:9.0f} rows/s\n")
        out.flush()
        e = lifecycle_rate(settings_for(base, broker.bootstrap, data_dir), events)
        out.write(f"e normalize+dedup+lifecycle (10% dup, 5% late) {e:9.0f} events/s\n")
        out.flush()
        lat = latency(settings_for(base, broker.bootstrap, data_dir), 1000, 10)
        lat2 = latency(settings_for(base, broker.bootstrap, data_dir), 1000, 10, workers=2)
        # And below capacity (half of d): the latency of the path itself, not of a queue.
        half = max(round(d / 2, -1), 10)
        lat_half = latency(settings_for(base, broker.bootstrap, data_dir), half, 20)
    return [
        Figure("a: confluent-kafka consume->produce loop", a, "events/s", "1.00 (baseline)"),
        Figure("b: naive Faust agent, await send per event", b, "events/s", f"{b / a:.3f} x a"),
        Figure("c: Faust agent, consume only", c, "events/s", f"{c / a:.3f} x a"),
        Figure("d: orderpulse raw topics -> ClickHouse rows, ten channels' mix with 10% "
               "duplicates and 5% out of order", d, "raw records/s",
               f"{d / a:.3f} x a; {d / c:.2f} x c; {d / b:.2f} x b"),
        Figure("d2: d with two streams workers in one group", d2, "raw records/s",
               f"{d2 / c:.2f} x c; {d2 / b:.2f} x b; {d2 / d:.2f} x d"),
        Figure("e: streams worker alone (normalize, dedup, lifecycle), 10% duplicates, "
               "5% out of order", e, "events/s", f"{e / c:.2f} x c"),
        Figure("W: streams worker CPU per raw event during d (all its threads)",
               d_run.timed.cpu_us, "µs", f"{d_run.timed.cpu_us / c_run.cpu_us:.1f} x c's "
               f"{c_run.cpu_us:,.0f} µs per event"),
        Figure("M: streams worker resident memory at the end of d", d_run.rss_mb["streams"],
               "MiB", f"sink {d_run.rss_mb['sink']:,.0f} MiB"),
        Figure("s: sink alone, orders.normalized -> order_events rows", sink.rate, "rows/s",
               f"{sink.cpu_us:,.0f} µs CPU per row; inside ClickHouse inserts "
               f"{insert_rate:,.0f} rows/s"),
        Figure("L: d at 1,000 events/s offered, p50 event->row", lat["p50"], "s"),
        Figure("L: d at 1,000 events/s offered, p99 event->row", lat["p99"], "s"),
        Figure("L2: d2 at 1,000 events/s offered, p50 event->row", lat2["p50"], "s"),
        Figure("L2: d2 at 1,000 events/s offered, p99 event->row", lat2["p99"], "s"),
        Figure(f"Lh: d at {half:,.0f} events/s offered (half of d), p50 event->row",
               lat_half["p50"], "s"),
        Figure(f"Lh: d at {half:,.0f} events/s offered (half of d), p99 event->row",
               lat_half["p99"], "s"),
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


