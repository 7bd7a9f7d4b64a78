-- Normalized order events, one row per event_id. At-least-once delivery can
-- insert an event twice (after a crash before the offset commit); the
-- ReplacingMergeTree key collapses such copies, and readers that need exact
-- counts use FINAL or uniqExact(event_id).
CREATE TABLE IF NOT EXISTS {db}.order_events
(
    event_id               String,
    order_id               String,
    channel                LowCardinality(String),
    shop_id                String,
    channel_order_id       String,
    event_type             LowCardinality(String),
    status                 LowCardinality(String),
    refund_status          LowCardinality(String),
    raw_status             String,
    event_time             DateTime64(3, 'UTC'),
    source_tz              LowCardinality(String),
    received_at            DateTime64(3, 'UTC'),
    processed_at           DateTime64(3, 'UTC'),
    landed_at              DateTime64(3, 'UTC'),
    currency               LowCardinality(String),
    total_minor            Int64,
    paid_minor             Int64,
    discount_minor         Int64,
    shipping_minor         Int64,
    tax_minor              Int64,
    refunded_minor         Int64,
    line_ids               Array(String),
    line_skus              Array(String),
    line_quantities        Array(Int32),
    line_unit_prices_minor Array(Int64),
    buyer_ref              Nullable(String),
    trace_id               String,
    source_event_id        Nullable(String),
    kafka_partition        UInt32,
    kafka_offset           UInt64
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(event_time)
ORDER BY (channel, order_id, event_id)
-- Makes insert_deduplication_token effective on a single (non-replicated) node.
SETTINGS non_replicated_deduplication_window = 1000
