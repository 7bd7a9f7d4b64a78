-- The stock ledger (inventory.events), one row per event_id. The event id is
-- deterministic (command id + kind), so a stream replay and a sink re-read after
-- a crash both write the same key; ReplacingMergeTree(landed_at) collapses the
-- copies. sku leads the key because ledger reads are per SKU ("what happened to
-- this SKU"). Monthly partitions as in order_events; a replayed copy carries
-- its own `at`, so one that lands in another month is collapsed only by FINAL.
-- Readers that need exact counts use FINAL or uniqExact(event_id).
-- inventory_levels is created by 005: the HTTP interface of a ClickHouse server
-- takes one statement per request, and apply_ddl sends one file per request.
CREATE TABLE IF NOT EXISTS {db}.inventory_events
(
    event_id        String,
    kind            LowCardinality(String),
    sku             String,
    warehouse       LowCardinality(Nullable(String)),
    reservation_id  Nullable(String),
    order_id        Nullable(String),
    quantity        Int64,
    on_hand         Int64,
    reserved        Int64,
    safety          Int64,
    available       Int64,
    reason          LowCardinality(String),
    at              DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(at)
ORDER BY (sku, event_id)
-- Makes insert_deduplication_token effective on a single (non-replicated) node.
SETTINGS non_replicated_deduplication_window = 1000
