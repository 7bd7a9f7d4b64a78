"""Every step, topic and sink has one stable name, defined here once.

These names appear in logs, metric labels, dead-letter records and consumer
group ids, so renaming one is a contract change.
"""

from __future__ import annotations

# --- steps (the `step` label) -------------------------------------------------
STEP_WEBHOOK = "webhook"
STEP_NORMALIZE = "normalize"
STEP_SINK = "clickhouse_sink"

# --- topics -----------------------------------------------------------------
RAW_TOPIC_PREFIX = "orders.raw."
TOPIC_NORMALIZED = "orders.normalized"
TOPIC_DLQ = "orders.dlq"

# --- channels -----------------------------------------------------------------
CHANNEL_SHOPIFY = "shopify"

# --- ClickHouse tables --------------------------------------------------------
TABLE_ORDER_EVENTS = "order_events"
TABLE_DEAD_LETTERS = "dead_letters"


def raw_topic(channel: str) -> str:
    """Raw topic of a channel: ``orders.raw.<channel>``."""
    return f"{RAW_TOPIC_PREFIX}{channel}"
