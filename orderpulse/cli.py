"""The ``orderpulse`` command. Settings are read here, once, and passed down."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from orderpulse.errors import OrderPulseError
from orderpulse.metrics import Metrics, serve
from orderpulse.settings import Settings, load_settings


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _metrics(settings: Settings) -> Metrics:
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    serve(registry, settings.metrics_host, settings.metrics_port)
    return metrics


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# --- subcommands --------------------------------------------------------------

def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.runner import run

    return run(settings, duration_s=args.duration, rate=args.rate, seed=args.seed,
               out=sys.stdout, report=lambda s: _print_report(s, as_json=False))


def _print_report(settings: Settings, *, as_json: bool) -> None:
    from orderpulse.clickhouse import apply_ddl, connect
    from orderpulse.report import build_report, render_text

    client = connect(settings)
    try:
        apply_ddl(client)
        data = build_report(client)
    finally:
        client.close()
    print(json.dumps(data, indent=2) if as_json else render_text(data))


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.report import run_report

    return run_report(settings, as_json=args.json,
                      html_path=Path(args.html) if args.html else None,
                      png_path=Path(args.png) if args.png else None)


def cmd_streams(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.streams.app import run_worker

    run_worker(settings, _metrics(settings))
    return 0


def cmd_sink(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.clickhouse import connect
    from orderpulse.connectors.clickhouse_sink import run_sink

    metrics, stop = _metrics(settings), _stop_event()
    client = connect(settings)
    try:
        run_sink(settings, client, metrics, stop)
    finally:
        client.close()
    return 0


def cmd_lag(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.lag import run_lag

    run_lag(settings, _metrics(settings), _stop_event())
    return 0


def cmd_webhook(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.connectors.webhook import run_webhook

    run_webhook(settings, _metrics(settings))
    return 0


def cmd_poll(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.connectors.poller import run_poller

    run_poller(settings, _metrics(settings))
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.connectors.csv_import import import_file

    if args.channel != "pos":
        print(f"orderpulse import: no CSV format for channel {args.channel!r} (pos)",
              file=sys.stderr)
        return 2
    plan = import_file(settings, _metrics(settings), Path(args.file), strict=args.strict)
    for result in plan.results:
        print(f"line {result.line}\t{result.receipt}\t{result.outcome}\t{result.reason}")
    accepted = sum(r.outcome == "accepted" for r in plan.results)
    published = not (args.strict and plan.rejected)
    print(f"{accepted} rows accepted, {len(plan.results) - accepted} rejected; "
          f"{len(plan.records) if published else 0} receipts published"
          + ("" if published else " (--strict: nothing published)"))
    return 0 if not plan.rejected else 3


def cmd_stock(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.connectors import stock_import

    if args.action == "seed":
        print(f"{stock_import.seed(settings, args.label)} opening-stock adjustments published")
        return 0
    if not args.file:
        print("orderpulse stock import: a CSV file is required", file=sys.stderr)
        return 2
    plan = stock_import.import_file(settings, Path(args.file), strict=args.strict)
    for line, _raw, why in plan.rejected:
        print(f"line {line}\trejected\t{why}")
    published = not (args.strict and plan.rejected)
    print(f"{len(plan.commands)} adjustments accepted, {len(plan.rejected)} rejected; "
          + ("published" if published else "--strict: nothing published"))
    return 0 if not plan.rejected else 3


def cmd_sandbox(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from orderpulse.connectors.sandbox.driver import serve_and_drive

    _metrics(settings).up.labels("sandbox").set(1)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_and_drive(
            settings.channels, api_port=args.api_port, webhook_url=args.webhook_url,
            rate=args.rate, duration_s=args.duration, seed=args.seed,
            pos_dir=Path(args.pos_dir) if args.pos_dir else None,
            stats_path=Path(args.stats), stop=stop)

    asyncio.run(main())
    return 0


def cmd_normalize(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.inspect import normalize_payload

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    code, text = normalize_payload(args.channel, data, topic=args.topic, shop=args.shop,
                                   pii_key=settings.pii_key.get_secret_value().encode())
    print(text)
    return code


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse import stack

    return stack.command(settings, args.action, out=sys.stdout)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.bench import main as bench_main

    return bench_main(settings, events=args.events, out=sys.stdout,
                      markdown=Path(args.markdown) if args.markdown else None, suite=args.suite)


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.clickhouse import apply_ddl, connect

    client = connect(settings)
    try:
        apply_ddl(client)
    finally:
        client.close()
    print(f"ClickHouse schema applied to database {settings.clickhouse_database}")
    return 0


def cmd_topics(settings: Settings, _args: argparse.Namespace) -> int:
    from orderpulse.topics import declare_topics

    created = declare_topics(settings)
    print(f"created: {', '.join(created) or 'nothing (all declared topics exist)'}")
    return 0


def cmd_dashboards(_settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse import dashboards

    directory = Path(args.dir)
    if args.check:
        problems = dashboards.stale(directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("orderpulse dashboards: run `orderpulse dashboards` and commit the result",
                  file=sys.stderr)
        return 1 if problems else 0
    for path in dashboards.write(directory):
        print(f"wrote {path}")
    return 0


def cmd_bench_agent(_settings: Settings, args: argparse.Namespace) -> int:
    from orderpulse.bench import faust_child_main

    faust_child_main(args.mode)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderpulse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline on the embedded stack, then report")
    run.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    run.add_argument("--rate", type=float, default=200.0, help="sandbox webhooks per second")
    run.add_argument("--seed", type=int, default=1)
    run.set_defaults(func=cmd_run)
    rep = sub.add_parser("report", help="print the report read back from ClickHouse")
    rep.add_argument("--json", action="store_true", help="machine-readable JSON")
    rep.add_argument("--html", metavar="FILE", default=None,
                     help="also save a self-contained HTML snapshot (tables and charts)")
    rep.add_argument("--png", metavar="FILE", default=None,
                     help="also save the order-health charts as a PNG image")
    rep.set_defaults(func=cmd_report)
    stk = sub.add_parser("stack", help="start/stop/inspect the embedded broker")
    stk.add_argument("action", choices=["up", "down", "status"])
    stk.set_defaults(func=cmd_stack)
    bench = sub.add_parser("bench", help="benchmarks; ratios to baselines measured in the same run")
    bench.add_argument("--events", type=int, default=20000)
    bench.add_argument("--markdown", default=None, help="also write the table to this file")
    bench.add_argument("--suite", default="all",
                       choices=["all", "pipeline", "connectors", "normalize", "inventory"])
    bench.set_defaults(func=cmd_bench)
    norm = sub.add_parser("normalize", help="normalize one native payload, print the events "
                          "as JSON (or the dead-letter reason, exit 2)")
    norm.add_argument("--channel", required=True)
    norm.add_argument("--topic", default=None,
                      help="the channel's event name (Shopify X-Shopify-Topic, Douyin tag, ...); "
                      "default: the channel's usual one")
    norm.add_argument("--shop", default="", help="shop id recorded on the event")
    norm.add_argument("file", nargs="?", default="-", help="payload file, or - for stdin")
    norm.set_defaults(func=cmd_normalize)
    imp = sub.add_parser("import", help="import a CSV file (store receipts) into the raw topic")
    imp.add_argument("--channel", required=True, help="the file's channel (pos)")
    imp.add_argument("--strict", action="store_true", help="publish nothing if a row is bad")
    imp.add_argument("file")
    imp.set_defaults(func=cmd_import)
    stock = sub.add_parser("stock", help="warehouse adjustments into the stock tables: import a "
                           "CSV (adjustment_id,warehouse,sku,mode,quantity,reason) or seed the "
                           "catalogue's opening stock")
    stock.add_argument("action", choices=["import", "seed"])
    stock.add_argument("file", nargs="?", default=None)
    stock.add_argument("--strict", action="store_true", help="publish nothing if a row is bad")
    stock.add_argument("--label", default="opening",
                       help="seed: adjustment id prefix (a new label counts the stock in again)")
    stock.set_defaults(func=cmd_stock)
    sbx = sub.add_parser("sandbox", help="(run/tests) play every channel locally")
    sbx.add_argument("--api-port", type=int, required=True)
    sbx.add_argument("--webhook-url", required=True)
    sbx.add_argument("--rate", type=float, default=200.0)
    sbx.add_argument("--duration", type=float, default=None)
    sbx.add_argument("--seed", type=int, default=1)
    sbx.add_argument("--pos-dir", default=None)
    sbx.add_argument("--stats", required=True, help="where to write the traffic stats (JSON)")
    sbx.set_defaults(func=cmd_sandbox)
    dash = sub.add_parser("dashboards", help="write the Grafana dashboards generated by "
                          "orderpulse/dashboards.py (--check: fail if the files differ)")
    dash.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if a file differs from the generated one")
    dash.add_argument("--dir", default="dashboards/grafana",
                      help="the dashboards folder (default: %(default)s)")
    dash.set_defaults(func=cmd_dashboards)
    agent = sub.add_parser("bench-agent", help="(internal) a Faust benchmark baseline agent")
    agent.add_argument("mode", choices=["naive", "consume"])
    agent.set_defaults(func=cmd_bench_agent)
    for name, func, text in (("topics", cmd_topics, "declare the pipeline's topics (idempotent)"),
                             ("migrate", cmd_migrate, "apply the ClickHouse DDL (idempotent)"),
                             ("streams", cmd_streams, "one Faust worker (normalize)"),
                             ("poll", cmd_poll, "the pollers of every configured pull channel"),
                             ("sink", cmd_sink, "the ClickHouse sink connector"),
                             ("lag", cmd_lag, "the consumer-lag exporter (every group's "
                              "committed offsets against the end of each partition)"),
                             ("webhook", cmd_webhook, "the webhook receiver connector")):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ.get("ORDERPULSE_SECRETS_DIR"))
    except ValueError as exc:  # pydantic ValidationError is a ValueError
        print(f"orderpulse: invalid configuration: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        return int(args.func(settings, args))
    except OrderPulseError as exc:
        print(f"orderpulse {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
