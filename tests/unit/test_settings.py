import pytest

from orderpulse.runner import settings_env
from orderpulse.settings import Settings


def test_reads_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("KAFKA_CONFIG", '{"security.protocol": "SASL_SSL"}')
    monkeypatch.setenv("CLICKHOUSE_URL", "http://ch:8123")
    monkeypatch.setenv("ORDERPULSE_SINK_BATCH_ROWS", "1234")
    s = Settings()
    assert not s.embedded_kafka and not s.embedded_clickhouse
    assert s.kafka_client_config() == {"bootstrap.servers": "k1:9092,k2:9092",
                                       "security.protocol": "SASL_SSL"}
    assert s.sink_batch_rows == 1234


def test_embedded_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.embedded_kafka and s.embedded_clickhouse


def test_child_environment_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", KAFKA_CONFIG={"acks": "all"},
                 ORDERPULSE_TOPIC_SUFFIX=".t1",
                 ORDERPULSE_CHANNELS={"shopify": {"webhook_secret": "s3"}})
    for key, value in settings_env(s).items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert again == s
    assert again.channels["shopify"]["webhook_secret"] == "s3"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError, match="frozen"):
        s.topic_suffix = "x"  # type: ignore[misc]


def test_every_setting_is_documented_in_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [f.alias for f in Settings.model_fields.values() if f"`{f.alias}`" not in readme]
    assert missing == []
