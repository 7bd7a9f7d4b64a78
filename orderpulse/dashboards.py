"""The four Grafana dashboards of orderpulse, generated from code.

    order-flow.json          events in/out per step and channel, answers, latency, landed rows
    order-health.json        stuck orders, backlog, refunds, fulfilment, consistency, rates
    inventory.json           oversell prevented, out of stock, stock units, levels, ledger
    pipeline-internals.json  consumer lag, sink batches, processes, tables, in-flight stock

``orderpulse dashboards`` writes them to dashboards/grafana/ (Grafana loads that folder,
deploy/grafana/provisioning/dashboards); ``--check`` fails when the committed files
differ from what this module generates. PromQL names only metrics of
``orderpulse.metrics.Metrics``; SQL names only tables and views of schemas/clickhouse,
qualified with the ``orderpulse`` database. Grafana macros used: ``$__rate_interval``
and ``$__range`` (PromQL), ``$__timeFilter``, ``$__timeInterval`` and
``$__conditionalAll`` (ClickHouse plugin), and the ``$channel`` variable;
tests/integration/test_dashboard_queries.py substitutes each and runs every query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orderpulse.grafana import (
    Json,
    dashboard,
    prom,
    quantile,
    query_variable,
    rate,
    row,
    sql,
    stat,
    table,
    timeseries,
    with_units,
)

DEFAULT_DIR = Path("dashboards/grafana")

# The channel variable as a PromQL matcher. In SQL it is written out where it is used,
# `$__conditionalAll(channel IN (${channel:singlequote}), $channel)`: the condition, or
# none at all when every channel is selected. SQL is plain text, as Grafana gets it.
CH = 'channel=~"$channel"'
CHANNEL_VAR = query_variable("channel", "Channel",
                             'label_values(orderpulse_events_total{step="normalize"}, channel)')


# --- Order flow ------------------------------------------------------------------

def order_flow() -> Json:
    """Events through each step, the answers channels get, latency, rows landed."""
    ev = "orderpulse_events_total"
    panels = [
        row("Events through the steps"),
        timeseries("Events in per step and channel", "Events each step took in: webhook "
                   "requests received, raw events the normalizer consumed.",
                   [prom(rate(ev, f'outcome="in",{CH}', "step, channel"),
                         "{{step}} {{channel}}")], unit="cps"),
        timeseries("Events out per step and channel", "Events each step passed on: "
                   "published raw events (webhook, poll), normalized events, rows landed.",
                   [prom(rate(ev, f'outcome="out",{CH}', "step, channel"),
                         "{{step}} {{channel}}")], unit="cps"),
        timeseries("Events not passed on", "Rejected (bad signature), dead-lettered, "
                   "retried later, re-read and skipped; per step and outcome.",
                   [prom(rate(ev, f'outcome!~"in|out",{CH}', "step, outcome"),
                         "{{step}} {{outcome}}")], unit="cps", w=8),
        timeseries("Webhook answers", "HTTP answers of the webhook receiver by channel "
                   "and code (401 bad signature, 503 Kafka did not acknowledge).",
                   [prom(rate("orderpulse_webhook_requests_total", CH, "channel, code"),
                         "{{channel}} {{code}}")], unit="reqps", w=8),
        timeseries("Poll requests", "Channel API requests of the pollers by outcome "
                   "(ok, throttled, error, auth_failed).",
                   [prom(rate("orderpulse_poll_requests_total", CH, "channel, outcome"),
                         "{{channel}} {{outcome}}")], unit="reqps", w=8),
        timeseries("Dead letters", "Records sent to orders.dlq by step and reason, and "
                   "channel statuses no mapping knows.",
                   [prom(rate("orderpulse_dead_letters_total", "", "step, reason"),
                         "{{step}} {{reason}}"),
                    prom(rate("orderpulse_unmapped_status_total", CH, "channel"),
                         "unmapped status {{channel}}")], unit="cps", w=8),
        timeseries("Duplicates and quarantined", "Repeated deliveries recognised and not "
                   "applied; events with an impossible transition.",
                   [prom(rate("orderpulse_duplicates_total", CH, "channel"),
                         "duplicate {{channel}}"),
                    prom(rate("orderpulse_quarantined_total", CH, "channel"),
                         "quarantined {{channel}}")], unit="cps", w=8),
        timeseries("Poller behind channel", "Now minus each poller's checkpoint.",
                   [prom(f"max by (channel) (orderpulse_poll_checkpoint_lag_seconds{{{CH}}})",
                         "{{channel}}")], unit="s", w=8),
        row("End-to-end latency (channel event time to ClickHouse row)"),
        timeseries("End-to-end latency p50 / p99", "From the sink's histogram "
                   "orderpulse_end_to_end_latency_seconds, selected channels together.",
                   [prom(quantile(0.5, "orderpulse_end_to_end_latency_seconds", CH), "p50"),
                    prom(quantile(0.99, "orderpulse_end_to_end_latency_seconds", CH), "p99")],
                   unit="s"),
        timeseries("End-to-end latency p99 per channel", "Polled channels run up to "
                   "minutes behind by design (their SLO threshold is 300 s, push 10 s).",
                   [prom(quantile(0.99, "orderpulse_end_to_end_latency_seconds", CH,
                                  "channel"), "{{channel}}")], unit="s"),
        row("Landed in ClickHouse"),
        timeseries("Events landed per channel", "order_events rows by landing time "
                   "(distinct event ids: a re-inserted copy is not counted twice).",
                   [sql("""
SELECT $__timeInterval(landed_at) AS time, channel, uniqExact(event_id) AS events
FROM orderpulse.order_events
WHERE $__timeFilter(landed_at) AND $__conditionalAll(channel IN (${channel:singlequote}), $channel)
GROUP BY time, channel
ORDER BY time""", series=True)], unit="short"),
        table("Events landed by channel and status", "Distinct events of the time range "
              "(by event time) per channel and status.",
              [sql("""
SELECT channel, status, uniqExact(event_id) AS events
FROM orderpulse.order_events
WHERE $__timeFilter(event_time) AND $__conditionalAll(channel IN (${channel:singlequote}), $channel)
GROUP BY channel, status
ORDER BY channel, events DESC""")]),
        with_units(table("State delay p50 / p95 per channel", "health_state_delay: channel "
                         "event time to processing time, all landed events "
                         "(docs/health-metrics.md).",
                         [sql("""
SELECT channel, events, p50_s, p95_s
FROM orderpulse.health_state_delay
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY channel""")], w=24, h=7), {"p50_s": "s", "p95_s": "s"}),
    ]
    return dashboard("orderpulse-order-flow", "Order flow",
                     "Events through each step of the pipeline and what landed in ClickHouse.",
                     panels, variables=[CHANNEL_VAR])


# --- Order health ----------------------------------------------------------------

def order_health() -> Json:
    """Stuck and open orders now, and the health views over what landed."""
    normalized_in = rate("orderpulse_events_total", f'step="normalize",outcome="in",{CH}',
                         "channel")
    panels = [
        row("Now (Prometheus, from the streams worker)"),
        timeseries("Stuck-order rate per channel", "Open orders past their state's limit "
                   "/ open orders (the alert OrderpulseStuckOrderRateHigh pages at 10%).",
                   [prom(f"sum by (channel) (orderpulse_stuck_orders{{{CH}}})\n  / "
                         f"sum by (channel) (orderpulse_open_orders{{{CH}}})",
                         "{{channel}}")], unit="percentunit", w=8),
        timeseries("Stuck orders per state and channel", "Open orders past their state's "
                   "limit, now.",
                   [prom(f"sum by (state, channel) (orderpulse_stuck_orders{{{CH}}})",
                         "{{channel}} {{state}}")], unit="short", w=8),
        timeseries("Open orders per channel", "Orders not completed or cancelled.",
                   [prom(f"sum by (channel) (orderpulse_open_orders{{{CH}}})",
                         "{{channel}}")], unit="short", w=8),
        timeseries("Stuck alerts", "Stuck-order alerts raised and resolved, per minute.",
                   [prom(rate("orderpulse_stuck_alerts_total", "", "kind", per=60),
                         "{{kind}}")], unit="cpm", w=8),
        timeseries("Duplicate rate per channel", "Repeated deliveries / raw events "
                   "consumed by the normalizer.",
                   [prom(f"{rate('orderpulse_duplicates_total', CH, 'channel')}\n  / "
                         f"{normalized_in}", "{{channel}}")], unit="percentunit", w=8),
        timeseries("Dead-letter rate per channel", "Raw events the normalizer "
                   "dead-lettered / raw events consumed (OrderpulseDeadLetterSurge: 5%).",
                   [prom(rate("orderpulse_events_total",
                              f'step="normalize",outcome="dead_letter",{CH}', "channel")
                         + f"\n  / {normalized_in}", "{{channel}}")],
                   unit="percentunit", w=8),
        row("Health views (ClickHouse, docs/health-metrics.md)"),
        with_units(stat("Backlog", "health_backlog: paid orders not shipped, in days of "
                        "the last 7 days' shipping rate.",
                        [sql("SELECT backlog_days, backlog_orders, capacity_orders_per_day "
                             "FROM orderpulse.health_backlog")], unit="short", w=8, h=6),
                   {"backlog_days": "d"}),
        with_units(table("Stuck-order rate per state and channel", "health_stuck_rate: "
                         "stuck orders in a state / open orders of the channel.",
                         [sql("""
SELECT channel, state, stuck_orders, open_in_state, open_orders, stuck_rate
FROM orderpulse.health_stuck_rate
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY stuck_rate DESC, channel, state""")], w=16, h=6), {"stuck_rate": "percentunit"}),
        timeseries("Stuck alerts landed", "order_alerts rows (RAISED, RESOLVED) by the "
                   "time the alert was raised or resolved.",
                   [sql("""
SELECT $__timeInterval(at) AS time, kind, count() AS alerts
FROM orderpulse.order_alerts FINAL
WHERE $__timeFilter(at) AND $__conditionalAll(channel IN (${channel:singlequote}), $channel)
GROUP BY time, kind
ORDER BY time""", series=True)], unit="short", w=8),
        with_units(table("Refund processing time per channel", "health_refund_time: refund "
                         "asked to money returned, per order.",
                         [sql("""
SELECT channel, refunded_orders, p50_s, p95_s
FROM orderpulse.health_refund_time
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY channel""")], w=8), {"p50_s": "s", "p95_s": "s"}),
        with_units(table("Fulfilment lead time vs target", "health_fulfilment_lead_time: "
                         "first seen paid to first shipped; share within the 48 h target.",
                         [sql("""
SELECT channel, shipped_orders, p50_s, p95_s, target_s, within_target
FROM orderpulse.health_fulfilment_lead_time
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY within_target, channel""")], w=8),
                   {"p50_s": "s", "p95_s": "s", "target_s": "s", "within_target": "percentunit"}),
        with_units(table("Consistency index per channel", "health_consistency: share of "
                         "orders whose latest reported status is the pipeline's state.",
                         [sql("""
SELECT channel, orders, consistent_orders, consistency_index
FROM orderpulse.health_consistency
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY consistency_index, channel""")], w=8), {"consistency_index": "percentunit"}),
        with_units(table("Duplicate rate per channel (landed)", "health_duplicate_rate: "
                         "duplicate records / (accepted events + duplicates).",
                         [sql("""
SELECT channel, accepted_events, duplicate_events, duplicate_rate
FROM orderpulse.health_duplicate_rate
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY duplicate_rate DESC, channel""")], w=8), {"duplicate_rate": "percentunit"}),
        with_units(table("Dead-letter rate per channel and reason (landed)",
                         "health_dead_letter_rate: dead letters / every record of the "
                         "channel that got a verdict; no channel = 'unknown'.",
                         [sql("""
SELECT channel, reason, dead_letters, channel_records, dead_letter_rate
FROM orderpulse.health_dead_letter_rate
WHERE $__conditionalAll(channel IN (${channel:singlequote}), $channel)
ORDER BY dead_letter_rate DESC, channel, reason""")], w=8),
                   {"dead_letter_rate": "percentunit"}),
    ]
    return dashboard("orderpulse-order-health", "Order health",
                     "Orders that stopped moving, backlog, refunds, fulfilment and "
                     "consistency: the SRE's view of the merchant's orders.",
                     panels, variables=[CHANNEL_VAR])


# --- Inventory -------------------------------------------------------------------

def inventory() -> Json:
    """Stock decisions as they happen, and the stock and ledger that landed."""
    units = "orderpulse_stock_units"
    panels = [
        row("Stock decisions (Prometheus, from the stock agent)"),
        timeseries("Oversell prevented", "Reservations (reserve) and payments (commit) "
                   "refused because the stock was not there, per minute.",
                   [prom(rate("orderpulse_oversell_prevented_total", "", "stage", per=60),
                         "{{stage}}")], unit="cpm", w=8),
        timeseries("Out-of-stock orders", "Orders rejected, backordered or paid without "
                   "stock, per minute.",
                   [prom(rate("orderpulse_out_of_stock_orders_total", CH, "channel, verdict",
                              per=60), "{{channel}} {{verdict}}")], unit="cpm", w=8),
        timeseries("Stock events by kind", "Stock ledger entries written by the agent.",
                   [prom(rate("orderpulse_stock_events_total", "", "kind"), "{{kind}}")],
                   unit="cps", w=8),
        timeseries("Stock units", "On hand, reserved and available over every partition's "
                   "SKUs at its last sweep.",
                   [prom(f"sum by (kind) ({units})", "{{kind}}")], unit="short"),
        timeseries("Phantom-reservation rate", "Units held by unpaid orders per unit still "
                   "sellable: sum(reserved) / sum(available).",
                   [prom(f'sum({units}{{kind="reserved"}})\n  / '
                         f'sum({units}{{kind="available"}})', "phantom reservations")],
                   unit="percentunit"),
        row("Stock and ledger (ClickHouse)"),
        table("Stock by warehouse", "inventory_levels FINAL: the current level of every "
              "SKU, summed per warehouse.",
              [sql("""
SELECT warehouse, count() AS skus, sum(on_hand) AS on_hand, sum(reserved) AS reserved,
       sum(available) AS available, sum(available_to_sell) AS available_to_sell
FROM orderpulse.inventory_levels FINAL
GROUP BY warehouse
ORDER BY warehouse""")]),
        timeseries("Ledger entries by kind", "inventory_events by the time of the change "
                   "(distinct event ids).",
                   [sql("""
SELECT $__timeInterval(at) AS time, kind, uniqExact(event_id) AS entries
FROM orderpulse.inventory_events
WHERE $__timeFilter(at)
GROUP BY time, kind
ORDER BY time""", series=True)], unit="short"),
        with_units(stat("Phantom reservations (landed)", "health_phantom_reservations: "
                        "reserved units / available units over the current levels.",
                        [sql("SELECT phantom_reservation_rate, reserved_units, available_units "
                             "FROM orderpulse.health_phantom_reservations")],
                        unit="short", w=12), {"phantom_reservation_rate": "percentunit"}),
        stat("Oversell prevented (landed)", "health_oversell_prevented: RESERVE_REJECTED "
             "and COMMIT_REJECTED ledger entries, routing rounds left out.",
             [sql("SELECT oversell_prevented, reserve_rejected, commit_rejected "
                  "FROM orderpulse.health_oversell_prevented")], unit="short", w=12),
        table("Lowest available to sell", "The 20 SKU and warehouse levels closest to "
              "selling out.",
              [sql("""
SELECT sku, warehouse, available_to_sell, available, reserved, on_hand
FROM orderpulse.inventory_levels FINAL
ORDER BY available_to_sell, sku, warehouse
LIMIT 20""")], w=24),
    ]
    return dashboard("orderpulse-inventory", "Inventory",
                     "Oversells prevented, out-of-stock orders, stock units and the stock "
                     "ledger.", panels, variables=[CHANNEL_VAR])


# --- Pipeline internals ------------------------------------------------------------

def pipeline_internals() -> Json:
    """Consumer lag, the sink's batches, the processes and the workers' own state."""
    lag = "max by (group, topic, partition) (orderpulse_consumer_lag_{})"
    legend = "{{group}} {{topic}}[{{partition}}]"
    sent, handled = (f'sum by (stream) (orderpulse_stock_messages_total{{outcome="{o}"}})'
                     for o in ("sent", "handled"))
    panels = [
        row("Processes"),
        stat("Process up", "orderpulse_process_up per step and instance (0: the process "
             "runs but its step stopped).",
             [prom("max by (step, instance) (orderpulse_process_up)", "{{step}} {{instance}}")],
             unit="none", w=12, mappings={"0": ("DOWN", "red"), "1": ("UP", "green")}),
        stat("Inventory invariant violations", "Audit failures found by the stock sweep "
             "since each worker started (must stay 0).",
             [prom("sum(orderpulse_inventory_invariant_violations_total)", "violations")],
             unit="short", red_above=1),
        stat("Lag scrape errors", "Failed or incomplete lag scrapes in the time range.",
             [prom("sum(increase(orderpulse_lag_scrape_errors_total[$__range]))", "errors")],
             unit="short", red_above=1),
        row("Consumer lag (lag exporter)"),
        timeseries("Consumer lag (records)", "End offset minus committed offset per group "
                   "and partition.", [prom(lag.format("messages"), legend)], unit="short"),
        timeseries("Consumer lag (seconds)", "Age of each group's first unconsumed record "
                   "per partition.", [prom(lag.format("seconds"), legend)], unit="s"),
        row("ClickHouse sink"),
        timeseries("Rows landed per table", "Rows inserted per second (sum of the batch "
                   "sizes).", [prom(rate("orderpulse_sink_batch_rows_sum", "", "table"),
                                    "{{table}}")], unit="cps", w=6),
        timeseries("Batch rows p50 / p99", "Rows per insert (ClickHouse wants thousands, "
                   "about once a second per table).",
                   [prom(quantile(0.5, "orderpulse_sink_batch_rows", by="table"),
                         "p50 {{table}}"),
                    prom(quantile(0.99, "orderpulse_sink_batch_rows", by="table"),
                         "p99 {{table}}")], unit="short", w=6),
        timeseries("Insert duration p50 / p99", "Duration of one ClickHouse insert.",
                   [prom(quantile(0.5, "orderpulse_sink_batch_seconds", by="table"),
                         "p50 {{table}}"),
                    prom(quantile(0.99, "orderpulse_sink_batch_seconds", by="table"),
                         "p99 {{table}}")], unit="s", w=6),
        timeseries("Sink insert failures", "Failed inserts per minute (retried with "
                   "backoff, offsets held).",
                   [prom(rate("orderpulse_sink_failures_total", "", "table", per=60),
                         "{{table}}")], unit="cpm", w=6),
        row("Streams worker state"),
        timeseries("Order table entries", "Orders held in each worker's state table.",
                   [prom("sum by (instance) (orderpulse_order_table_entries)",
                         "{{instance}}")], unit="short"),
        timeseries("Stock messages in flight", "Stock commands and answers sent minus "
                   "handled (0: no stock decision pending).",
                   [prom(f"{sent}\n  - {handled}", "{{stream}}")], unit="short"),
    ]
    return dashboard("orderpulse-pipeline-internals", "Pipeline internals",
                     "Consumer lag, ClickHouse sink batches, processes and the streams "
                     "worker's state.", panels)


# --- files ---------------------------------------------------------------------------

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "order-flow.json": order_flow,
    "order-health.json": order_health,
    "inventory.json": inventory,
    "pipeline-internals.json": pipeline_internals,
}


def render(board: Json) -> str:
    """The file text of a dashboard: stable key order, two-space indent."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> text of every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def write(directory: Path) -> list[Path]:
    """Write every dashboard into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """What in ``directory`` differs from the generated dashboards: a file changed or
    missing, or a JSON file the generator does not make. Empty when in sync."""
    expected = generate()
    problems = []
    for name, text in expected.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the generated dashboard")
    problems += [f"{path}: not generated by orderpulse.dashboards"
                 for path in sorted(directory.glob("*.json")) if path.name not in expected]
    return problems
