-- OrderEvent v2 fields (idempotent: ADD COLUMN IF NOT EXISTS). Buyer and receiver
-- arrive masked; only the keyed phone hash and the receiver's region are kept here.
ALTER TABLE {db}.order_events
    ADD COLUMN IF NOT EXISTS warehouse            Nullable(String),
    ADD COLUMN IF NOT EXISTS carrier              Nullable(String),
    ADD COLUMN IF NOT EXISTS tracking_no          Nullable(String),
    ADD COLUMN IF NOT EXISTS refund_kind          Nullable(String),
    ADD COLUMN IF NOT EXISTS refund_state         Nullable(String),
    ADD COLUMN IF NOT EXISTS refund_amount_minor  Nullable(Int64),
    ADD COLUMN IF NOT EXISTS buyer_phone_hash     Nullable(String),
    ADD COLUMN IF NOT EXISTS receiver_province    Nullable(String),
    ADD COLUMN IF NOT EXISTS receiver_city        Nullable(String),
    ADD COLUMN IF NOT EXISTS line_components      Array(String),
    ADD COLUMN IF NOT EXISTS flags                Array(LowCardinality(String))
