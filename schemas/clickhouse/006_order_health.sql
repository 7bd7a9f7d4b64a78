-- The order step's outputs besides the events themselves: current state
-- (orders.state), stuck-order alerts (orders.alerts), and the events it did not
-- apply (orders.duplicates, orders.quarantine). apply_ddl sends each statement
-- of this file as its own request (a server's HTTP interface takes one).

-- Current state per order (the compacted orders.state read as a table).
-- ReplacingMergeTree(updated_at): the newest state wins whatever order the
-- records land in, and a re-read of an older record cannot win. Two records of
-- one order with the same updated_at (same millisecond) keep the one inserted
-- last, which is the later Kafka offset: the sink inserts in offset order. No
-- PARTITION BY: rows are replaced only within a partition, and an order's state
-- moves across months. Read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.order_states
(
    order_id        String,
    channel         LowCardinality(String),
    status          LowCardinality(String),
    refund_status   LowCardinality(String),
    status_since    DateTime64(3, 'UTC'),
    last_event_time DateTime64(3, 'UTC'),
    event_count     UInt32,
    stuck           Bool,
    updated_at      DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY order_id
-- Makes insert_deduplication_token effective on a single (non-replicated) node.
SETTINGS non_replicated_deduplication_window = 1000;

-- Stuck-order alerts and stock alerts: RAISED once when an order crosses its
-- state's limit, RESOLVED when it moves. (order_id, state, since, kind) is one
-- alert, so a re-read or a worker's replay of the same alert collapses.
-- Partitioned by `since`, which is part of the key, so copies share a partition.
CREATE TABLE IF NOT EXISTS {db}.order_alerts
(
    kind            LowCardinality(String),
    order_id        String,
    channel         LowCardinality(String),
    state           LowCardinality(String),
    since           DateTime64(3, 'UTC'),
    limit_ms        Int64,
    stuck_for_ms    Int64,
    at              DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(since)
ORDER BY (channel, order_id, state, since, kind)
SETTINGS non_replicated_deduplication_window = 1000;

-- Repeats of an accepted event (orders.duplicates, reason 'duplicate'). One row
-- per duplicate record: the Kafka position is in the key, so three deliveries of
-- one event are two rows here, and a sink re-read of the same record collapses.
-- The embedded event bytes are not kept: the first copy of the event is in
-- order_events under the same event_id, and the topic keeps the bytes 7 days.
CREATE TABLE IF NOT EXISTS {db}.duplicates
(
    reason          LowCardinality(String),
    order_id        String,
    channel         LowCardinality(String),
    event_id        String,
    event_type      LowCardinality(String),
    from_status     Nullable(String),
    to_status       LowCardinality(String),
    event_time      DateTime64(3, 'UTC'),
    at              DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(at)
ORDER BY (channel, order_id, event_id, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;

-- Impossible transitions (orders.quarantine, reason 'impossible_transition'),
-- one row per record: an event can conflict with several states, one record
-- each. Same shape and keys as duplicates; the quarantined event itself is also
-- in order_events (the order step emits it and records the conflict), and the
-- topic keeps the bytes 28 days.
CREATE TABLE IF NOT EXISTS {db}.quarantine
(
    reason          LowCardinality(String),
    order_id        String,
    channel         LowCardinality(String),
    event_id        String,
    event_type      LowCardinality(String),
    from_status     Nullable(String),
    to_status       LowCardinality(String),
    event_time      DateTime64(3, 'UTC'),
    at              DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    landed_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(at)
ORDER BY (channel, order_id, event_id, kafka_partition, kafka_offset)
SETTINGS non_replicated_deduplication_window = 1000;
