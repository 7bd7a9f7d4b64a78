"""Every step, topic and sink has one stable name, defined here once.

These names appear in logs, metric labels, dead-letter records and consumer
group ids, so renaming one is a contract change.
"""

from __future__ import annotations

# --- steps (the `step` label) -------------------------------------------------
STEP_WEBHOOK = "webhook"
STEP_NORMALIZE = "normalize"
STEP_SINK = "clickhouse_sink"
STEP_STOCK = "stock"  # the per-SKU inventory agent
STEP_LAG = "lag"  # the consumer-lag exporter

# --- topics -----------------------------------------------------------------
RAW_TOPIC_PREFIX = "orders.raw."
TOPIC_NORMALIZED = "orders.normalized"
TOPIC_DLQ = "orders.dlq"
TOPIC_CURSORS = "orders.cursors"  # compacted: poller checkpoints, key <channel>/<shop>
TOPIC_STATE = "orders.state"  # compacted: each order's current state
TOPIC_ALERTS = "orders.alerts"  # stuck orders raised / resolved
TOPIC_QUARANTINE = "orders.quarantine"  # impossible transitions
TOPIC_DUPLICATES = "orders.duplicates"  # duplicate deliveries, recorded not applied
TOPIC_TICKS = "orders.ticks"  # internal: drives stuck checks in every partition
TOPIC_INV_COMMANDS = "inventory.commands"  # key sku: reserve/commit/release/restore/adjust
TOPIC_INV_REPLIES = "inventory.replies"  # key order id, in the order's partition
TOPIC_INV_EVENTS = "inventory.events"  # the stock ledger: every change and refusal
TOPIC_INV_LEVELS = "inventory.levels"  # compacted, key sku: available to sell per SKU

# --- steps added by the connectors ---------------------------------------------
STEP_POLL = "poll"
STEP_IMPORT = "import"

# --- channels (the `channel` label; raw topic orders.raw.<channel>) -------------
CHANNEL_SHOPIFY = "shopify"
CHANNEL_WOOCOMMERCE = "woocommerce"
CHANNEL_TAOBAO = "taobao"  # Taobao and Tmall share the TOP API
CHANNEL_JD = "jd"
CHANNEL_PINDUODUO = "pinduoduo"
CHANNEL_DOUYIN = "douyin"
CHANNEL_YOUZAN = "youzan"
CHANNEL_OWNSITE = "ownsite"  # the merchant's own site, by signed HTTP
CHANNEL_POS = "pos"  # the merchant's stores, by CSV import
CHANNEL_USPS = "usps"  # carrier tracking, polled (USPS Tracking API v3)
CHANNEL_KUAIDI100 = "kuaidi100"  # Chinese carrier aggregator, tracking pushes

CHANNELS = (CHANNEL_SHOPIFY, CHANNEL_WOOCOMMERCE, CHANNEL_TAOBAO, CHANNEL_JD, CHANNEL_PINDUODUO,
            CHANNEL_DOUYIN, CHANNEL_YOUZAN, CHANNEL_OWNSITE, CHANNEL_POS, CHANNEL_USPS,
            CHANNEL_KUAIDI100)

# --- ClickHouse tables --------------------------------------------------------
TABLE_ORDER_EVENTS = "order_events"
TABLE_DEAD_LETTERS = "dead_letters"
TABLE_INVENTORY_EVENTS = "inventory_events"
TABLE_INVENTORY_LEVELS = "inventory_levels"
TABLE_ORDER_STATES = "order_states"  # orders.state: current state, ReplacingMergeTree(updated_at)
TABLE_ORDER_ALERTS = "order_alerts"  # orders.alerts
TABLE_DUPLICATES = "duplicates"  # orders.duplicates
TABLE_QUARANTINE = "quarantine"  # orders.quarantine

# --- ClickHouse health views (docs/health-metrics.md gives each formula) --------
VIEW_HEALTH_BACKLOG = "health_backlog"
VIEW_HEALTH_STUCK_RATE = "health_stuck_rate"
VIEW_HEALTH_STATE_DELAY = "health_state_delay"
VIEW_HEALTH_DUPLICATE_RATE = "health_duplicate_rate"
VIEW_HEALTH_DEAD_LETTER_RATE = "health_dead_letter_rate"
VIEW_HEALTH_OVERSELL_PREVENTED = "health_oversell_prevented"
VIEW_HEALTH_PHANTOM_RESERVATIONS = "health_phantom_reservations"
VIEW_HEALTH_REFUND_TIME = "health_refund_time"
VIEW_HEALTH_FULFILMENT_LEAD_TIME = "health_fulfilment_lead_time"
VIEW_HEALTH_CONSISTENCY = "health_consistency"


def raw_topic(channel: str) -> str:
    """Raw topic of a channel: ``orders.raw.<channel>``."""
    return f"{RAW_TOPIC_PREFIX}{channel}"
