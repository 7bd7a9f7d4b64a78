"""The one settings object, read from the environment once at the entry point.

Every setting is documented here once: its environment variable and default.
Library code receives a ``Settings`` and never reads ``os.environ`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration (frozen).

    External mode: when ``KAFKA_BOOTSTRAP_SERVERS`` is set nothing embedded
    starts for Kafka; when ``CLICKHOUSE_URL`` is set the ClickHouse server is
    used through clickhouse-connect instead of the in-process chdb engine.
    """

    # hide_input_in_errors: a mistyped value must not be echoed into the error, which the
    # CLI prints to stderr, i.e. the step's log file; it may be a password or channel
    # secret (ORDERPULSE_CHANNELS, KAFKA_CONFIG's sasl.password, CLICKHOUSE_PASSWORD).
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    # --- Kafka -----------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None, alias="KAFKA_BOOTSTRAP_SERVERS",
        description="host:port list of an external Kafka; unset = embedded Tansu broker.",
    )
    kafka_config: dict[str, Any] = Field(
        default_factory=dict, alias="KAFKA_CONFIG",
        description="JSON object of raw librdkafka settings (security.protocol, sasl.*, ...), "
        "passed through to every confluent-kafka client.",
    )
    topic_suffix: str = Field(
        default="", alias="ORDERPULSE_TOPIC_SUFFIX",
        description="Appended to every topic and consumer group name (tests isolate runs with it).",
    )
    default_partitions: int = Field(default=4, alias="ORDERPULSE_PARTITIONS")
    kafka_single_record_batches: bool = Field(
        default=False, alias="ORDERPULSE_KAFKA_SINGLE_RECORD_BATCHES",
        description="Faust writes table changelogs one record per batch. For the embedded "
        "broker (Tansu reports a partition's end as its last batch's first offset + 1, so "
        "table recovery would stop short of a batch's tail); `orderpulse run` sets it.",
    )
    session_timeout_s: float = Field(
        default=6.0, alias="ORDERPULSE_SESSION_TIMEOUT_S",
        description="Consumer group session timeout. 6 s is Kafka's minimum; group joins on the "
        "embedded broker take about half of it.",
    )
    stream_fetch_max_wait_ms: int = Field(
        default=100, ge=1, alias="ORDERPULSE_STREAM_FETCH_MAX_WAIT_MS",
        description="The streams worker's fetch.max.wait.ms (Faust fixes 1500). The embedded "
        "broker answers a fetch only near this wait even when data is there, so it bounds "
        "each hop's latency; lower costs more fetch requests while idle.",
    )

    # --- ClickHouse ------------------------------------------------------------
    clickhouse_url: str | None = Field(
        default=None, alias="CLICKHOUSE_URL",
        description="http(s)://host:port of a ClickHouse server; unset = embedded chdb.",
    )
    clickhouse_user: str = Field(default="default", alias="CLICKHOUSE_USER")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), alias="CLICKHOUSE_PASSWORD")
    clickhouse_database: str = Field(default="orderpulse", alias="CLICKHOUSE_DATABASE")
    apply_ddl: bool = Field(
        default=True, alias="ORDERPULSE_APPLY_DDL",
        description="Sink applies the DDL at start. Production runs `orderpulse migrate` as an "
        "admin instead, so the sink's user needs INSERT only.",
    )
    data_dir: Path = Field(
        default=Path("var"), alias="ORDERPULSE_DATA_DIR",
        description="Where the embedded engine keeps its data (and run state).",
    )

    # --- Sink ------------------------------------------------------------------
    sink_batch_rows: int = Field(
        default=5000, alias="ORDERPULSE_SINK_BATCH_ROWS",
        description="Insert when this many rows are buffered ...",
    )
    sink_batch_seconds: float = Field(
        default=1.0, alias="ORDERPULSE_SINK_BATCH_SECONDS",
        description="... or when the oldest buffered row is this old (ClickHouse wants about "
        "one insert per second per table, never row-at-a-time).",
    )

    # --- Connectors ------------------------------------------------------------
    webhook_host: str = Field(default="127.0.0.1", alias="ORDERPULSE_WEBHOOK_HOST")
    webhook_port: int = Field(
        default=0, alias="ORDERPULSE_WEBHOOK_PORT",
        description="Webhook receiver port; 0 = a free port chosen by `orderpulse run`.",
    )
    webhook_max_body_bytes: int = Field(default=1_048_576, alias="ORDERPULSE_WEBHOOK_MAX_BODY")
    webhook_ack_timeout_s: float = Field(
        default=4.0, alias="ORDERPULSE_WEBHOOK_ACK_TIMEOUT_S",
        description="How long a webhook waits for the Kafka acknowledgement before answering "
        "503; under Shopify's 5 s delivery timeout, so the channel sees our answer.",
    )
    channels: dict[str, dict[str, str]] = Field(
        default_factory=dict, alias="ORDERPULSE_CHANNELS",
        description="JSON: per channel, its credentials and endpoints, e.g. "
        '{"shopify": {"webhook_secret": "..."}, "taobao": {"app_key": "...", '
        '"app_secret": "...", "session": "...", "base_url": "..."}}. A channel '
        "without an entry is not served or polled. Keep it in a secrets file.",
    )
    poll_initial_lookback_s: float = Field(
        default=86400.0, alias="ORDERPULSE_POLL_LOOKBACK_S",
        description="Where a poller with no checkpoint starts: this far before now.",
    )
    poll_idle_s: float = Field(
        default=10.0, alias="ORDERPULSE_POLL_IDLE_S",
        description="Pause of a caught-up poller before it asks for the next window.",
    )

    pii_key: SecretStr = Field(
        default=SecretStr(""), alias="ORDERPULSE_PII_KEY",
        description="Key of the HMAC that hashes buyer phones and ids for joins. Keep it "
        "stable: a new key breaks joins with older events. `orderpulse run` keeps one in "
        "the data directory.",
    )

    # --- Order lifecycle -----------------------------------------------------------
    dedup_window_s: float = Field(
        default=48 * 3600.0, alias="ORDERPULSE_DEDUP_WINDOW_S",
        description="How long (in event time) a repeat of an event is recognised: at least "
        "the longest channel retry schedule (Shopify retries for 48 h).",
    )
    stuck_tick_s: float = Field(
        default=10.0, alias="ORDERPULSE_STUCK_TICK_S",
        description="How often every partition's open orders are checked against their "
        "state's limit (no new event needed).",
    )
    stuck_limits_s: dict[str, float] = Field(
        default_factory=dict, alias="ORDERPULSE_STUCK_LIMITS",
        description='JSON overrides of the per-state limits in seconds, e.g. {"PAID": 7200}.',
    )
    peak_calendar: list[dict[str, Any]] = Field(
        default_factory=list, alias="ORDERPULSE_PEAK_CALENDAR",
        description='JSON list of promotions scaling the limits: [{"start": ISO, "end": ISO, '
        '"factor": 1.5}].',
    )

    # --- Inventory -------------------------------------------------------------------
    catalog_path: Path | None = Field(
        default=None, alias="ORDERPULSE_CATALOG",
        description="JSON file of warehouses, bills of materials and shipping rates (format: "
        "orderpulse/catalog.json, the demo catalogue used when unset).",
    )
    routing_policy: Literal["nearest", "cheapest"] = Field(
        default="nearest", alias="ORDERPULSE_ROUTING_POLICY",
        description="Warehouse choice: nearest with stock by the receiver's province, or "
        "lowest shipping cost from the catalogue's rate table.",
    )
    out_of_stock_policy: Literal["reject", "backorder"] = Field(
        default="reject", alias="ORDERPULSE_OUT_OF_STOCK_POLICY",
        description="An order whose lines cannot all be reserved: marked OUT_OF_STOCK, or "
        "BACKORDERED (both release every partial reservation and raise an alert).",
    )
    reservation_hold_s: float = Field(
        default=45 * 60.0, alias="ORDERPULSE_RESERVATION_HOLD_S",
        description="A reservation's expiry. Longer than the unpaid limit (30 min), so the "
        "order's auto-close releases it first; expiry is the backstop that proves no leak.",
    )
    inventory_retention_s: float = Field(
        default=30 * 86400.0, alias="ORDERPULSE_INVENTORY_RETENTION_S",
        description="How long ended reservations are kept (answers late commands and returns).",
    )
    inventory_resend_s: float = Field(
        default=30.0, alias="ORDERPULSE_INVENTORY_RESEND_S",
        description="An order waiting this long for stock answers re-sends its commands "
        "(idempotent), so a lost command cannot leave it waiting.",
    )

    # --- Observability ---------------------------------------------------------
    metrics_host: str = Field(default="127.0.0.1", alias="ORDERPULSE_METRICS_HOST")
    metrics_port: int = Field(
        default=0, alias="ORDERPULSE_METRICS_PORT",
        description="Prometheus endpoint port of this process; 0 = do not serve.",
    )
    log_level: str = Field(default="INFO", alias="ORDERPULSE_LOG_LEVEL")
    lag_interval_s: float = Field(
        default=5.0, alias="ORDERPULSE_LAG_INTERVAL_S",
        description="How often the lag exporter reads each consumer group's committed offsets "
        "and the end of each partition it consumes.",
    )

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    def group(self, name: str) -> str:
        """Consumer group id for a named step, isolated by the topic suffix."""
        return f"orderpulse.{name}{self.topic_suffix}"

    def kafka_client_config(self) -> dict[str, Any]:
        """Base librdkafka config: bootstrap plus the pass-through dict."""
        if not self.kafka_bootstrap_servers:
            raise ValueError("kafka_bootstrap_servers is not set (is the broker started?)")
        return {"bootstrap.servers": self.kafka_bootstrap_servers, **self.kafka_config}


def load_settings(secrets_dir: str | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment; keyword overrides win (by field name).

    ``secrets_dir`` (``ORDERPULSE_SECRETS_DIR`` at the entry point, e.g. /run/secrets):
    a file there named like a variable (``CLICKHOUSE_PASSWORD``) supplies its value,
    so secrets need not sit in the environment.
    """
    base = Settings(_secrets_dir=secrets_dir) if secrets_dir else Settings()
    return base.model_copy(update=overrides) if overrides else base
