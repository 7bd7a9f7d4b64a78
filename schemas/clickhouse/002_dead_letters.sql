-- Every record a step could not process, with the original bytes (base64, so
-- arbitrary bytes survive the JSON insert path; read them with base64Decode).
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    step               LowCardinality(String),
    reason             LowCardinality(String),
    error_class        LowCardinality(String),
    message            String,
    channel            Nullable(String),
    source_topic       String,
    source_partition   Int32,
    source_offset      Int64,
    original_key_b64   Nullable(String),
    original_value_b64 String,
    failed_at          DateTime64(3, 'UTC'),
    landed_at          DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(landed_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (step, source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 1000
