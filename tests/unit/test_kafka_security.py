"""KAFKA_CONFIG's security settings reach every Kafka client: passed as they are to every
confluent-kafka client, translated for Faust/aiokafka (``orderpulse.kafka_security``).

The embedded Tansu broker cannot run with authentication (docs/security.md, "Kafka"), so
these are checked here without a broker: statically at every place a confluent client
is built, and through Faust's own translation into aiokafka's arguments.
"""

from __future__ import annotations

import ast
import ssl
from pathlib import Path
from typing import Any
from unittest import mock

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from orderpulse.connectors import producer as async_producer
from orderpulse.errors import ConfigError
from orderpulse.kafka_security import TRANSLATED, faust_credentials, security_keys
from orderpulse.settings import Settings, load_settings
from orderpulse.streams import output

ROOT = Path(__file__).resolve().parents[2]
TLS = ROOT / "tests" / "fixtures" / "tls"
SCRAM_SSL = {
    "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
    "sasl.username": "orderpulse", "sasl.password": "pw-canary-7f3a",
    "ssl.ca.location": str(TLS / "ca.pem"),
}


# --- every confluent client ------------------------------------------------------------

CLIENTS = {"Producer", "Consumer", "AdminClient", "AsyncProducer", "OutputProducer",
           "SerializingProducer", "DeserializingConsumer"}
#: Clients that talk only to the embedded broker, which has no security to configure.
EMBEDDED_ONLY = {("orderpulse/broker.py", "wait_until_ready"), ("orderpulse/stack.py", "_answers")}
#: Wrappers that take the caller's config and add defaults: the caller's keys must win.
WRAPPERS = {("connectors/producer.py", "__init__"), ("streams/output.py", "__init__")}


def _is_config_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "kafka_client_config")


def _from_config(func: ast.AST, name: str) -> bool:
    """``name`` is assigned ``<settings>.kafka_client_config()`` in ``func``."""
    return any(isinstance(n, ast.Assign) and _is_config_call(n.value)
               and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
               for n in ast.walk(func))


def _verdict(arg: ast.AST, func: ast.AST, site: tuple[str, str]) -> str | None:
    """None when the client's config carries KAFKA_CONFIG unchanged, else why not."""
    if _is_config_call(arg) or (isinstance(arg, ast.Name) and _from_config(func, arg.id)):
        return None
    if not isinstance(arg, ast.Dict):
        return f"config is {ast.dump(arg)[:60]}, not derived from kafka_client_config()"
    explicit = [k.value for k in arg.keys if isinstance(k, ast.Constant)]
    overridden = set(security_keys(dict.fromkeys(explicit)))
    if overridden:
        return f"overrides security keys {sorted(overridden)}"
    spreads = [v for k, v in zip(arg.keys, arg.values, strict=True) if k is None]
    if site in WRAPPERS:
        last = arg.keys[-1] is None and isinstance(arg.values[-1], ast.Name)
        return None if last else "the caller's config must come last, over the defaults"
    if any(_is_config_call(s) or (isinstance(s, ast.Name) and _from_config(func, s.id))
           for s in spreads):
        return None
    return "no **kafka_client_config() in the config"


def _client_sites() -> dict[tuple[str, str, int], str | None]:
    sites: dict[tuple[str, str, int], str | None] = {}
    for folder in ("orderpulse", "connectors", "streams"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), rel)
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for call in ast.walk(func):
                    name = getattr(getattr(call, "func", None), "id", None) or getattr(
                        getattr(call, "func", None), "attr", None)
                    if isinstance(call, ast.Call) and name in CLIENTS and call.args:
                        site = (rel, func.name)
                        verdict = ("embedded broker only" if site in EMBEDDED_ONLY
                                   else _verdict(call.args[0], func, site))
                        sites[(rel, func.name, call.lineno)] = verdict
    return sites


def test_every_confluent_client_is_built_from_kafka_config() -> None:
    sites = _client_sites()
    # The sink, lag exporter, topics, cursors, webhook, poller, imports, output producer...
    assert len(sites) >= 15, sites
    bad = {site: why for site, why in sites.items()
           if why is not None and why != "embedded broker only"}
    assert not bad, bad
    assert {(f, fn) for (f, fn, _l), why in sites.items() if why == "embedded broker only"} \
        == EMBEDDED_ONLY


@pytest.mark.parametrize("wrapper", [async_producer.AsyncProducer, output.OutputProducer])
def test_client_wrappers_keep_the_security_keys_over_their_defaults(wrapper: Any) -> None:
    module = async_producer if wrapper is async_producer.AsyncProducer else output
    config = Settings(KAFKA_BOOTSTRAP_SERVERS="kafka:9093", KAFKA_CONFIG={
        **SCRAM_SSL, "acks": "1"}).kafka_client_config()
    with mock.patch.object(module, "Producer", autospec=True) as producer:
        producer.return_value.flush.return_value = 0
        producer.return_value.poll.side_effect = lambda timeout: None
        client = wrapper(config)
        if hasattr(client, "close"):
            client.close()
    [call] = producer.call_args_list
    assert call.args[0] == {**call.args[0], **config}  # every KAFKA_CONFIG key, unchanged


def test_kafka_config_is_read_from_the_environment_or_a_secrets_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    monkeypatch.delenv("KAFKA_CONFIG", raising=False)
    (tmp_path / "KAFKA_CONFIG").write_text(__import__("json").dumps(SCRAM_SSL))
    from_file = load_settings(str(tmp_path)).kafka_client_config()
    assert security_keys(from_file) == SCRAM_SSL
    monkeypatch.setenv("KAFKA_CONFIG", __import__("json").dumps(SCRAM_SSL))
    assert security_keys(Settings().kafka_client_config()) == SCRAM_SSL


def test_a_mistyped_secret_is_never_echoed_in_the_configuration_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI prints configuration errors to stderr, the step's log file."""
    monkeypatch.setenv("KAFKA_CONFIG", '["sasl.password=pw-canary-7f3a"]')
    with pytest.raises(ValueError, match="KAFKA_CONFIG") as err:
        Settings()
    assert "pw-canary-7f3a" not in str(err.value)
    monkeypatch.delenv("KAFKA_CONFIG")
    monkeypatch.setenv("ORDERPULSE_CHANNELS", '{"shopify": {"webhook_secret": 731946285}}')
    with pytest.raises(ValueError, match="webhook_secret") as err:
        Settings()
    assert "731946285" not in str(err.value)


# --- Faust / aiokafka --------------------------------------------------------------------

def _aiokafka_args(config: dict[str, Any]) -> dict[str, Any]:
    """What Faust hands aiokafka's producer and consumer for these settings."""
    app = faust.App("security-test", broker="kafka://kafka:9093",
                    broker_credentials=faust_credentials(config))
    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))


def _ca_subjects(context: ssl.SSLContext) -> list[str]:
    return [str(dict(part[0] for part in c["subject"]).get("commonName"))
            for c in context.get_ca_certs()]


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials({}) is None
    assert faust_credentials({"security.protocol": "plaintext", "acks": "all"}) is None
    assert _aiokafka_args({}) == {"security_protocol": "PLAINTEXT"}


def test_scram_over_tls_is_translated_for_aiokafka() -> None:
    args = _aiokafka_args(SCRAM_SSL)
    assert (args["security_protocol"], args["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (args["sasl_plain_username"], args["sasl_plain_password"]) == \
        ("orderpulse", "pw-canary-7f3a")
    context = args["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert _ca_subjects(context) == ["orderpulse test CA (test only)"]
    assert "pw-canary-7f3a" not in repr(faust_credentials(SCRAM_SSL))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_without_tls(mechanism: str) -> None:
    args = _aiokafka_args({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                           "sasl.username": "u", "sasl.password": "p"})
    assert args["security_protocol"] == "SASL_PLAINTEXT" and args["ssl_context"] is None
    assert args["sasl_mechanism"] == mechanism.upper()


def test_mutual_tls_loads_the_client_certificate() -> None:
    config = {"security.protocol": "SSL", "ssl.ca.location": str(TLS),
              "ssl.certificate.location": str(TLS / "client.pem"),
              "ssl.key.location": str(TLS / "client.key")}
    args = _aiokafka_args(config)
    assert args["security_protocol"] == "SSL"
    assert args["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="cannot be loaded"):
        faust_credentials({**config, "ssl.key.location": str(TLS / "ca.pem")})


def test_ca_given_as_pem_text_and_verification_switches() -> None:
    pem = (TLS / "ca.pem").read_text()
    context = _aiokafka_args({"security.protocol": "SSL", "ssl.ca.pem": pem,
                              "ssl.endpoint.identification.algorithm": "none"})["ssl_context"]
    assert "orderpulse test CA (test only)" in _ca_subjects(context)
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    context = _aiokafka_args({"security.protocol": "SSL",
                              "enable.ssl.certificate.verification": "false"})["ssl_context"]
    assert context.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize(("config", "complaint"), [
    ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "GSSAPI",
      "sasl.username": "u", "sasl.password": "pw-canary-7f3a"}, "sasl.mechanisms"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "OAUTHBEARER",
      "sasl.oauthbearer.config": "pw-canary-7f3a"}, "sasl.oauthbearer.config"),
    ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12",
      "ssl.keystore.password": "pw-canary-7f3a"}, "ssl.keystore.location"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-256",
      "sasl.username": "u"}, "sasl.password"),
    ({"security.protocol": "SASL_SSL", "sasl.username": "u",
      "sasl.password": "pw-canary-7f3a"}, "sasl.mechanisms"),
    ({"security.protocol": "TLS"}, "security.protocol"),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, "cannot be loaded"),
])
def test_what_cannot_be_translated_stops_the_worker(config: dict[str, Any],
                                                   complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint) as err:
        faust_credentials(config)
    assert "pw-canary-7f3a" not in str(err.value)


def test_every_translated_key_is_a_real_librdkafka_property() -> None:
    from confluent_kafka import Producer
    for key in TRANSLATED - {"sasl.mechanism", "sasl.password", "sasl.username"}:
        value = {"security.protocol": "PLAINTEXT", "sasl.mechanisms": "PLAIN",
                 "ssl.endpoint.identification.algorithm": "none",
                 "enable.ssl.certificate.verification": "true"}.get(key, "x")
        try:
            Producer({key: value}).flush(0)
        except Exception as exc:  # noqa: BLE001 - only "no such property" is wrong
            assert "No such configuration property" not in str(exc), key


def test_the_streams_worker_passes_the_translated_credentials_to_faust() -> None:
    import faust
    from prometheus_client import CollectorRegistry

    from orderpulse.metrics import Metrics
    from orderpulse.settings import Settings
    from orderpulse.streams.app import create_app

    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", kafka_config={
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "orderpulse", "sasl.password": "s3cret"})
    app = create_app(settings, Metrics.create(CollectorRegistry()))
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.username == "orderpulse" and credentials.password == "s3cret"
    plain = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:1"),
                       Metrics.create(CollectorRegistry()))
    assert plain.conf.broker_credentials is None
