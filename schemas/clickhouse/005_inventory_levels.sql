-- Current stock (the compacted inventory.levels), one row per sku + warehouse.
-- A StockLevel carries the SKU's change sequence (version) on every warehouse
-- row, so ReplacingMergeTree(version) keeps the newest level whatever order the
-- rows arrive in, and a re-read of an older record cannot win. No PARTITION BY:
-- rows are replaced only within a partition, and the table is small (SKUs x
-- warehouses). Read with FINAL for the current figures.
CREATE TABLE IF NOT EXISTS {db}.inventory_levels
(
    sku               String,
    warehouse         LowCardinality(String),
    on_hand           Int64,
    reserved          Int64,
    safety            Int64,
    available         Int64,
    available_to_sell Int64,
    version           Int64,
    at                DateTime64(3, 'UTC'),
    landed_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (sku, warehouse)
-- Makes insert_deduplication_token effective on a single (non-replicated) node.
SETTINGS non_replicated_deduplication_window = 1000
