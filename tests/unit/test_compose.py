"""docker-compose.yml against the Compose Specification and against the code it runs.

No Docker: the file is loaded as YAML (merge keys resolved, as Compose resolves them) and
checked for what would otherwise show only on a server: a variable no setting reads, a
command the CLI does not have, a scrape target on the wrong port, a mount of a missing file,
an unpinned image, a service without a health check, a ClickHouse user with more than it
needs. The schema is the official one, vendored in tests/fixtures/compose/ (see its README).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from orderpulse import names
from orderpulse.cli import build_parser
from orderpulse.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests/fixtures/compose/compose-spec.json"
CLICKHOUSE_INIT = ROOT / "deploy/clickhouse/01-users.sh"
SECRETS_DOC = ROOT / "deploy/secrets.example/README.md"
CHANNELS_EXAMPLE = ROOT / "deploy/secrets.example/channels.json.example"
SECRETS_MOUNT = "/run/secrets"  # where Compose mounts a secret with a relative target
# Read by the entry point (orderpulse/cli.py) before the settings exist, so not a field.
NON_SETTINGS = {"ORDERPULSE_SECRETS_DIR"}
ALIASES = {field.alias for field in Settings.model_fields.values()}
KAFKA_COMMANDS = {"topics", "webhook", "poll", "streams", "sink", "lag"}
CLICKHOUSE_COMMANDS = {"migrate", "sink"}


# --- the files, loaded once --------------------------------------------------------------

@cache
def _yaml(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return _yaml("docker-compose.yml")


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def pipeline() -> list[str]:
    """Services built from the Dockerfile: one orderpulse command each."""
    return sorted(n for n, s in compose()["services"].items() if "build" in s)


def long_running() -> list[str]:
    return sorted(n for n, s in compose()["services"].items() if s.get("restart") != "no")


def steps() -> list[str]:
    return sorted(set(pipeline()) & set(long_running()))


def env(name: str) -> dict[str, str]:
    raw = service(name).get("environment", {})
    pairs = (item.split("=", 1) for item in raw) if isinstance(raw, list) else raw.items()
    return {key: str(value) for key, value in pairs}


def secrets(name: str) -> dict[str, str]:
    """target -> source of a service's secrets."""
    out = {}
    for item in service(name).get("secrets", []):
        source = item if isinstance(item, str) else item["source"]
        target = source if isinstance(item, str) else item.get("target", source)
        out[target] = source
    return out


def mounts(name: str) -> list[tuple[str, str, bool]]:
    """(source, container path, read-only) of a service's volumes, short or long syntax."""
    out = []
    for item in service(name).get("volumes", []):
        if isinstance(item, dict):
            out.append((item["source"], item["target"], bool(item.get("read_only"))))
        else:
            source, target, *mode = item.split(":")
            out.append((source, target, "ro" in mode))
    return out


def is_bind(source: str) -> bool:
    return source.startswith(("./", "../", "/"))


def published(name: str) -> list[tuple[str, int]]:
    """(host address, container port) of a service's published ports."""
    out = []
    for item in service(name).get("ports", []):
        if isinstance(item, dict):
            out.append((item.get("host_ip", ""), int(item["target"])))
        else:
            parts = str(item).split("/")[0].split(":")
            out.append((parts[0] if len(parts) == 3 else "", int(parts[-1])))
    return out


def depends_on(name: str) -> dict[str, str]:
    raw = service(name).get("depends_on", {})
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {dep: spec["condition"] for dep, spec in raw.items()}


def scrape_targets() -> list[tuple[str, str]]:
    return [tuple(target.rsplit(":", 1))  # type: ignore[misc]
            for job in _yaml("dashboards/prometheus.yml").get("scrape_configs", [])
            for static in job.get("static_configs", [])
            for target in static["targets"]]


def container_settings(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """The settings the service's container reads: its environment plus its secrets files."""
    for variable in ALIASES | NON_SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    for key, value in env(name).items():
        monkeypatch.setenv(key, value)
    samples = {"channels": CHANNELS_EXAMPLE.read_text(encoding="utf-8")}
    for target, source in secrets(name).items():
        (tmp_path / target).write_text(samples.get(source, "sample\n"), encoding="utf-8")
    return load_settings(str(tmp_path))


# --- the specification ---------------------------------------------------------------------

@cache
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)  # the draft its "$schema" names
    cls.check_schema(schema)
    return cls(schema)


def _schema_errors(document: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in _validator().iter_errors(document)]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def test_follows_the_compose_specification() -> None:
    assert _schema_errors(compose()) == []


def test_merge_keys_are_resolved_before_validation() -> None:
    assert not [n for n in _walk(compose()) if isinstance(n, dict) and "<<" in n]


@pytest.mark.parametrize("breakage", [
    lambda d: d["services"]["kafka"].update(healthchek={"test": ["CMD", "true"]}),
    lambda d: d["services"]["sink"]["depends_on"]["migrate"].update(condition="service_done"),
    lambda d: d["services"]["webhook"].update(restart=["always"]),
    lambda d: d.update(volume={}),
])
def test_the_schema_rejects_a_broken_file(breakage: Any) -> None:
    document = copy.deepcopy(compose())
    breakage(document)
    assert _schema_errors(document)


# --- the pipeline services against the code ------------------------------------------------

@pytest.mark.parametrize("name", pipeline())
def test_environment_sets_only_settings(name: str) -> None:
    assert set(env(name)) - ALIASES - NON_SETTINGS == set()


def test_non_settings_are_documented() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert all(f"`{variable}`" in readme for variable in NON_SETTINGS)


@pytest.mark.parametrize("name", pipeline())
def test_secrets_are_settings_read_from_the_secrets_dir(name: str) -> None:
    targets = secrets(name)
    assert set(targets) <= ALIASES, "a pipeline secret is a file named like its variable"
    assert not set(targets) & set(env(name)), "set both ways: the environment would win"
    # Without secrets there is no folder, and orderpulse warns about a missing one.
    assert env(name).get("ORDERPULSE_SECRETS_DIR") == (SECRETS_MOUNT if targets else None)


@pytest.mark.parametrize("name", pipeline())
def test_command_is_an_orderpulse_subcommand(name: str) -> None:
    command = service(name)["command"]
    try:
        build_parser().parse_args(command)
    except SystemExit:
        pytest.fail(f"{name}: `orderpulse {' '.join(command)}` is not a command")


@pytest.mark.parametrize("name", pipeline())
def test_container_settings_reach_the_servers(name: str, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    settings = container_settings(name, monkeypatch, tmp_path)
    assert set(settings.channels) <= set(names.CHANNELS)
    # Unset, a step would quietly start the embedded broker or engine in its container.
    command = service(name)["command"][0]
    assert settings.embedded_kafka is (command not in KAFKA_COMMANDS)
    assert settings.embedded_clickhouse is (command not in CLICKHOUSE_COMMANDS), \
        "ClickHouse settings only where the command uses ClickHouse"


def test_pipeline_image_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for name in pipeline():
        assert service(name)["image"] == f"orderpulse:{version['project']['version']}"


@pytest.mark.parametrize("name", pipeline())
def test_pipeline_runs_unprivileged(name: str) -> None:
    assert service(name).get("cap_drop") == ["ALL"]
    assert "no-new-privileges:true" in service(name).get("security_opt", [])


# --- metrics and ports ----------------------------------------------------------------------

def test_every_scrape_target_is_a_step_on_its_metrics_port() -> None:
    for host, port in scrape_targets():
        assert host in steps(), f"{host}: not a long-running pipeline service"
        assert env(host).get("ORDERPULSE_METRICS_PORT") == port
        assert env(host).get("ORDERPULSE_METRICS_HOST") == "0.0.0.0", "unreachable by Prometheus"


def test_every_step_is_scraped() -> None:
    assert set(steps()) - {host for host, _ in scrape_targets()} == set()


def test_prometheus_rules_and_alertmanagers_resolve() -> None:
    config = _yaml("dashboards/prometheus.yml")
    for alerting in config.get("alerting", {}).get("alertmanagers", []):
        for static in alerting.get("static_configs", []):
            assert {t.rsplit(":", 1)[0] for t in static["targets"]} <= set(compose()["services"])
    flags = dict(arg.split("=", 1) for arg in service("prometheus")["command"])
    config_dir = PurePosixPath(flags["--config.file"]).parent
    binds = {target: source for source, target, _ in mounts("prometheus") if is_bind(source)}
    assert binds[flags["--config.file"]] == "./dashboards/prometheus.yml"
    for pattern in config.get("rule_files", []):
        path = config_dir / pattern
        folder = next((t for t in binds if path.is_relative_to(t)), None)
        assert folder, f"rule_files {pattern}: not mounted into the prometheus container"
        host = ROOT / binds[folder] / path.relative_to(folder)
        assert list(host.parent.glob(host.name)), f"rule_files {pattern}: matches no file"


def test_only_the_webhook_is_published_by_the_pipeline(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    for name in pipeline():
        ports = {port for _, port in published(name)}
        if name == "webhook":
            settings = container_settings(name, monkeypatch, tmp_path)
            assert ports == {settings.webhook_port} and settings.webhook_host == "0.0.0.0"
        else:
            assert ports == set(), f"{name} publishes {ports}"


def test_operator_uis_listen_on_loopback_only() -> None:
    for name in set(compose()["services"]) - set(pipeline()):
        assert {host for host, _ in published(name)} <= {"127.0.0.1"}, name


# --- images, health, volumes, mounts, secrets -----------------------------------------------

@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_image_is_pinned(name: str) -> None:
    image = service(name)["image"]
    repository, _, tag = image.split("@sha256:")[0].rpartition(":")
    version = bool(repository) and "/" not in tag and tag != "latest" and re.search(r"\d", tag)
    assert "@sha256:" in image or version, f"{image}: pin a version tag or a digest"


@pytest.mark.parametrize("name", long_running())
def test_long_running_service_has_a_healthcheck(name: str) -> None:
    check = service(name).get("healthcheck", {})
    assert check.get("test") and not check.get("disable")
    if name in pipeline():
        assert "/metrics" in " ".join(check["test"]) and "ORDERPULSE_METRICS_PORT" in str(check)


def test_dependencies_wait_for_what_can_report() -> None:
    for name in compose()["services"]:
        for dep, condition in depends_on(name).items():
            if condition == "service_healthy":
                assert dep in long_running() and service(dep).get("healthcheck"), dep
            if condition == "service_completed_successfully":
                assert service(dep).get("restart") == "no", f"{dep} never completes"


def test_named_volumes_are_declared_and_used() -> None:
    used = {source for name in compose()["services"]
            for source, _, _ in mounts(name) if not is_bind(source)}
    assert used == set(compose().get("volumes", {}))


def test_kafka_keeps_its_log_in_its_volume() -> None:
    named = {target for source, target, _ in mounts("kafka") if not is_bind(source)}
    assert env("kafka")["KAFKA_LOG_DIRS"] in named
    assert "controller" in env("kafka")["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert not [key for key in env("kafka") if "ZOOKEEPER" in key]


def test_clients_address_the_services() -> None:
    advertised = env("kafka")["KAFKA_ADVERTISED_LISTENERS"]
    for name in pipeline():
        for server in filter(None, env(name).get("KAFKA_BOOTSTRAP_SERVERS", "").split(",")):
            assert f"//{server}" in advertised
        url = env(name).get("CLICKHOUSE_URL")
        assert url is None or urlsplit(url).hostname in compose()["services"]


def test_bind_mounts_exist_and_are_read_only() -> None:
    for name in compose()["services"]:
        for source, target, read_only in mounts(name):
            if is_bind(source):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repository"
                assert read_only, f"{name}: {source} -> {target} should be :ro"


def test_secrets_come_from_documented_operator_files() -> None:
    doc = SECRETS_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", doc, flags=re.MULTILINE))
    files = {spec["file"] for spec in compose()["secrets"].values()}
    assert all(f.startswith("./secrets/") for f in files), "secrets are operator files"
    assert {f.removeprefix("./secrets/") for f in files} == documented
    assert "secrets/" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    used = {source for name in compose()["services"] for source in secrets(name).values()}
    assert used == set(compose()["secrets"])


@pytest.mark.parametrize("name", sorted(compose()["services"]))
def test_no_secret_value_in_the_environment(name: str) -> None:
    for key, value in env(name).items():
        if value.startswith(f"{SECRETS_MOUNT}/"):  # a path to a secret (the *_FILE variables)
            assert value.removeprefix(f"{SECRETS_MOUNT}/") in secrets(name), f"{key} not mounted"
        else:
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|KEY)$", key), f"{key}: use a secret"


# --- ClickHouse users and Grafana -----------------------------------------------------------

def init_statements() -> list[str]:
    """The SQL the init script sends, its shell variables filled in as the container would."""
    text = CLICKHOUSE_INIT.read_text(encoding="utf-8")
    sql = text.split("<<SQL\n", 1)[1].split("\nSQL\n", 1)[0]
    sql = sql.replace("${db}", env("clickhouse")["CLICKHOUSE_DB"])
    sql = re.sub(r"\$\{\w+_sha256\}", "0" * 64, sql)
    assert "$" not in sql, "a shell variable the test does not know"
    return [statement.strip() for statement in sql.split(";") if statement.strip()]


def init_user_secrets() -> dict[str, str]:
    """ClickHouse user -> the secret its password comes from."""
    text = CLICKHOUSE_INIT.read_text(encoding="utf-8")
    hashes = dict(re.findall(r"^(\w+)=\$\(password_sha256 (\w+)\)$", text, flags=re.MULTILINE))
    users = re.findall(r"CREATE USER IF NOT EXISTS (\w+) IDENTIFIED WITH sha256_hash "
                       r"BY '\$\{(\w+)\}'", text)
    return {user: hashes[variable] for user, variable in users}


def init_grants() -> dict[str, tuple[set[str], str]]:
    """user -> (privileges, on what)."""
    grants = {}
    for statement in init_statements():
        if match := re.fullmatch(r"GRANT (.+) ON (\S+) TO (\w+)", statement):
            grants[match[3]] = ({p.strip() for p in match[1].split(",")}, match[2])
    return grants


def grafana_provisioning(kind: str) -> list[dict[str, Any]]:
    folder = ROOT / "deploy/grafana/provisioning" / kind
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.yml"))]


def grafana_datasource(kind: str) -> dict[str, Any]:
    found = [d for doc in grafana_provisioning("datasources") for d in doc["datasources"]
             if d["type"] == kind]
    assert len(found) == 1, f"one {kind} datasource"
    return found[0]


def test_init_script_only_creates_users_and_grants() -> None:
    for statement in init_statements():
        assert statement.startswith(("CREATE USER IF NOT EXISTS ", "GRANT ", "REVOKE ")), \
            statement
    assert set(init_grants()) == set(init_user_secrets())
    # Revokes only take away: never a grant in disguise.
    assert all(" FROM " in s for s in init_statements() if s.startswith("REVOKE "))


def test_the_reader_cannot_read_raw_pii_in_dead_letters() -> None:
    reader = grafana_datasource("grafana-clickhouse-datasource")["jsonData"]["username"]
    revokes = [s for s in init_statements() if s.startswith("REVOKE ")]
    assert any("original_value_b64" in s and "original_key_b64" in s and ".dead_letters " in s
               and s.endswith(f"FROM {reader}") for s in revokes), revokes


def test_sink_may_only_insert(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = container_settings("sink", monkeypatch, tmp_path)
    assert settings.apply_ddl is False, "an INSERT-only user cannot apply the DDL"
    user = settings.clickhouse_user
    assert init_grants()[user] == ({"INSERT"}, f"{settings.clickhouse_database}.*")
    assert secrets("sink")["CLICKHOUSE_PASSWORD"] == init_user_secrets()[user]


def test_grafana_reads_as_the_read_only_user() -> None:
    source = grafana_datasource("grafana-clickhouse-datasource")
    user, database = source["jsonData"]["username"], source["jsonData"]["defaultDatabase"]
    assert init_grants()[user] == ({"SELECT"}, f"{database}.*")
    created = [s for s in init_statements() if s.startswith(f"CREATE USER IF NOT EXISTS {user} ")]
    assert len(created) == 1 and re.search(r"\breadonly = 1\b", created[0])
    password = f"$__file{{{SECRETS_MOUNT}/{init_user_secrets()[user]}}}"
    assert source["secureJsonData"]["password"] == password
    assert init_user_secrets()[user] in secrets("grafana")


def test_only_migrate_is_admin() -> None:
    admin = env("clickhouse")["CLICKHOUSE_USER"]
    assert admin not in init_grants()
    assert [n for n in pipeline() if env(n).get("CLICKHOUSE_USER") == admin] == ["migrate"]
    admin_secret = PurePosixPath(env("clickhouse")["CLICKHOUSE_PASSWORD_FILE"]).name
    assert secrets("migrate")["CLICKHOUSE_PASSWORD"] == admin_secret


def test_init_script_is_mounted_with_its_secrets() -> None:
    assert ("./deploy/clickhouse/01-users.sh", "/docker-entrypoint-initdb.d/01-users.sh",
            True) in mounts("clickhouse")
    assert set(init_user_secrets().values()) <= set(secrets("clickhouse"))


_PARSE = """
import json, sys, chdb
for statement in json.load(sys.stdin):
    chdb.query("EXPLAIN AST " + statement)
"""


def test_init_sql_parses_as_clickhouse_sql() -> None:
    # ClickHouse's own parser (chdb), in a child: chdb allows one engine per process.
    result = subprocess.run([sys.executable, "-c", _PARSE], input=json.dumps(init_statements()),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_grafana_datasources_point_at_the_stack() -> None:
    prometheus = grafana_datasource("prometheus")
    assert prometheus["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    clickhouse = grafana_datasource("grafana-clickhouse-datasource")["jsonData"]
    url = urlsplit(env("sink")["CLICKHOUSE_URL"])
    assert (clickhouse["protocol"], clickhouse["host"], clickhouse["port"]) == \
        (url.scheme, url.hostname, url.port)
    assert clickhouse["defaultDatabase"] == env("sink")["CLICKHOUSE_DATABASE"]


def test_grafana_installs_a_pinned_clickhouse_plugin() -> None:
    plugins = dict(entry.split("@", 1) for entry in
                   env("grafana")["GF_PLUGINS_PREINSTALL_SYNC"].split(","))
    assert re.fullmatch(r"\d+\.\d+\.\d+", plugins["grafana-clickhouse-datasource"])


def test_grafana_loads_the_repository_dashboards() -> None:
    binds = {source: target for source, target, _ in mounts("grafana") if is_bind(source)}
    for kind in ("datasources", "dashboards"):
        assert binds[f"./deploy/grafana/provisioning/{kind}"] == \
            f"/etc/grafana/provisioning/{kind}"
    providers = [p for doc in grafana_provisioning("dashboards") for p in doc["providers"]]
    assert [p["options"]["path"] for p in providers] == [binds["./dashboards/grafana"]]
