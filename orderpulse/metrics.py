"""Every Prometheus metric of orderpulse, built in one place from an injected registry.

Base units (seconds, rows), ``_total`` counters, and labels from bounded sets
only: step, topic, channel, reason, outcome. Never an id, never PII.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Channel event time to ClickHouse row: sub-second on a healthy pipeline, hours
# when a channel redelivers late, so the buckets span both.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
_BATCH_ROWS_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000)


@dataclass(frozen=True)
class Metrics:
    events: Counter
    dead_letters: Counter
    webhook_requests: Counter
    sink_batch_rows: Histogram
    sink_batch_seconds: Histogram
    sink_failures: Counter
    end_to_end_latency: Histogram
    up: Gauge
    poll_requests: Counter
    poll_lag: Gauge
    import_rows: Counter
    unmapped_status: Counter
    duplicates: Counter
    quarantined: Counter
    alerts: Counter
    stuck_orders: Gauge
    open_orders: Gauge
    order_table_entries: Gauge
    stock_events: Counter
    oversell_prevented: Counter
    out_of_stock_orders: Counter
    stock_units: Gauge
    inventory_violations: Counter
    stock_messages: Counter
    consumer_lag_messages: Gauge
    consumer_lag_seconds: Gauge
    lag_scrape_errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        """Register every metric on ``registry`` (tests pass a fresh one)."""
        return cls(
            events=Counter(
                "orderpulse_events_total",
                "Events through a step: outcome in (consumed/received), out (emitted/landed), "
                "dead_letter, rejected.",
                ["step", "channel", "outcome"], registry=registry,
            ),
            dead_letters=Counter(
                "orderpulse_dead_letters_total", "Records sent to the dead-letter topic.",
                ["step", "reason"], registry=registry,
            ),
            webhook_requests=Counter(
                "orderpulse_webhook_requests_total", "Webhook HTTP requests by answer.",
                ["channel", "code"], registry=registry,
            ),
            sink_batch_rows=Histogram(
                "orderpulse_sink_batch_rows", "Rows per ClickHouse insert.",
                ["table"], buckets=_BATCH_ROWS_BUCKETS, registry=registry,
            ),
            sink_batch_seconds=Histogram(
                "orderpulse_sink_batch_seconds", "Duration of one ClickHouse insert.",
                ["table"], registry=registry,
            ),
            sink_failures=Counter(
                "orderpulse_sink_failures_total", "Failed ClickHouse inserts (retried).",
                ["table"], registry=registry,
            ),
            end_to_end_latency=Histogram(
                "orderpulse_end_to_end_latency_seconds",
                "Channel event time to the row landing in ClickHouse.",
                ["channel"], buckets=_LATENCY_BUCKETS, registry=registry,
            ),
            up=Gauge(
                "orderpulse_process_up", "1 while the process runs its step.",
                ["step"], registry=registry,
            ),
            poll_requests=Counter(
                "orderpulse_poll_requests_total",
                "Channel API requests by outcome: ok, throttled, error, auth_failed.",
                ["channel", "outcome"], registry=registry,
            ),
            poll_lag=Gauge(
                "orderpulse_poll_checkpoint_lag_seconds",
                "Now minus the poller's checkpoint: how far behind the channel it is.",
                ["channel"], registry=registry,
            ),
            unmapped_status=Counter(
                "orderpulse_unmapped_status_total",
                "Channel status values no mapping table knows (the value itself is in the "
                "dead letter's message, not a label).",
                ["channel"], registry=registry,
            ),
            duplicates=Counter(
                "orderpulse_duplicates_total", "Repeated events recognised and not applied.",
                ["channel"], registry=registry,
            ),
            quarantined=Counter(
                "orderpulse_quarantined_total", "Events with an impossible transition.",
                ["channel"], registry=registry,
            ),
            alerts=Counter(
                "orderpulse_stuck_alerts_total", "Stuck-order alerts raised and resolved.",
                ["kind"], registry=registry,
            ),
            stuck_orders=Gauge(
                "orderpulse_stuck_orders", "Open orders past their state's limit, now.",
                ["state", "channel"], registry=registry,
            ),
            open_orders=Gauge(
                "orderpulse_open_orders", "Orders not yet completed or cancelled, now.",
                ["channel"], registry=registry,
            ),
            order_table_entries=Gauge(
                "orderpulse_order_table_entries", "Orders held in this worker's state table.",
                registry=registry,
            ),
            stock_events=Counter(
                "orderpulse_stock_events_total", "Stock ledger entries by kind (RESERVED, "
                "RESERVE_REJECTED, COMMITTED, RELEASED, EXPIRED, RESTORED, ADJUSTED, OVERSOLD...).",
                ["kind"], registry=registry,
            ),
            oversell_prevented=Counter(
                "orderpulse_oversell_prevented_total", "Reservations or payments refused "
                "because the stock was not there (an oversell that did not happen).",
                ["stage"], registry=registry,
            ),
            out_of_stock_orders=Counter(
                "orderpulse_out_of_stock_orders_total", "Orders whose lines could not all be "
                "reserved (verdict OUT_OF_STOCK or BACKORDERED), or paid without stock.",
                ["channel", "verdict"], registry=registry,
            ),
            stock_units=Gauge(
                "orderpulse_stock_units", "Units per kind (on_hand, reserved, available) over "
                "the SKUs of a partition, at its last sweep.",
                ["kind", "partition"], registry=registry,
            ),
            inventory_violations=Counter(
                "orderpulse_inventory_invariant_violations_total", "Audit failures found by "
                "the sweep (reserved != open reservations, negative without an oversell record).",
                registry=registry,
            ),
            stock_messages=Counter(
                "orderpulse_stock_messages_total", "Orders' stock commands and their answers, "
                "sent and handled (equal totals: no stock decision in flight).",
                ["stream", "outcome"], registry=registry,
            ),
            import_rows=Counter(
                "orderpulse_import_rows_total", "CSV import rows: accepted or rejected.",
                ["channel", "outcome"], registry=registry,
            ),
            # group and topic are declared names (orderpulse.lag.consumed_topics), partition
            # a number below the topic's partition count: bounded.
            consumer_lag_messages=Gauge(
                "orderpulse_consumer_lag_messages", "Records of a partition not yet consumed by "
                "a group: end offset minus committed offset.",
                ["group", "topic", "partition"], registry=registry,
            ),
            consumer_lag_seconds=Gauge(
                "orderpulse_consumer_lag_seconds", "Age of a group's first unconsumed record in "
                "a partition (now minus its timestamp); 0 when nothing is unconsumed.",
                ["group", "topic", "partition"], registry=registry,
            ),
            lag_scrape_errors=Counter(
                "orderpulse_lag_scrape_errors_total", "Lag scrapes that failed or came back "
                "incomplete (broker unreachable, a read timed out).",
                registry=registry,
            ),
        )


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Expose ``registry`` on http://host:port/metrics; returns the bound port (0 = none)."""
    if port == 0:
        return 0
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
