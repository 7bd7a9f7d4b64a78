"""No buyer PII and no secret leaves the raw edge: a whole pipeline run, then a scan.

The run (streams + sink + webhook on the real broker and ClickHouse engine) gets every
push channel's sandbox deliveries for orders whose buyer names, phones, emails and
street addresses are known (a Chinese and a Latin buyer per channel, plus one order left
unpaid so stuck alerts fire), and signed bad input carrying the same PII that is
dead-lettered. Channel secrets, the PII hash key, a Kafka SASL password and a ClickHouse
password are known too. Then every place the run wrote is scanned for them:

- every log file of the run (``<data_dir>/logs``),
- every process's ``/metrics`` output,
- every record of every topic of the run except the raw topics (decoded: Avro by its
  fingerprint, anything else as text), the dead letters without their original bytes,
  and the Faust changelogs,
- every row of every ClickHouse table except ``dead_letters.original_value_b64``.

Any hit fails with its location. The raw topics (and the dead letters' original bytes)
are where PII is expected (README, "Topic contract"): the scan finds it there, which
also proves the scanner sees what it looks for.
"""

from __future__ import annotations

import base64
import io
import random
import secrets
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient
from fastavro import schemaless_reader
from pydantic import SecretStr

from orderpulse.avro import MARKER, all_versions
from orderpulse.clickhouse import EmbeddedClickHouse
from orderpulse.connectors.channels import WEBHOOK_SOURCES
from orderpulse.connectors.sandbox import WEBHOOK_SIMS
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.config import CREDENTIAL_KEYS
from orderpulse.connectors.sandbox.kuaidi100 import COMPANIES
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.runner import Pipeline, sandbox_channels
from orderpulse.scrape import total
from orderpulse.settings import Settings
from tests.integration.conftest import PipelineFactory, SettingsFactory, read_topics
from tests.integration.test_security import LIFECYCLE, post
from tests.unit.test_security_fuzz import signed

pytestmark = pytest.mark.integration

PUSH = sorted(WEBHOOK_SOURCES)
#: Buyers with PII nothing else in a run contains: (name, phone, province, address).
BUYERS = (("欧阳雪梅", "13912345678", "浙江省", "浙江省杭州市西湖区金丝雀路4242号"),
          ("Zebulon Quixotewood", "13987654321", "广东省", "4242 Canary Wharf Lane, Suite 77"))
SASL_PASSWORD = "kafka-pw-" + secrets.token_hex(8)
CLICKHOUSE_PASSWORD = "ch-pw-" + secrets.token_hex(8)
PII_KEY = "pii-key-" + secrets.token_hex(16)


def buyer_order(number: int, buyer: tuple[str, str, str, str], now: datetime) -> SimOrder:
    order = new_order(number, now - timedelta(minutes=20), random.Random(number))
    order.buyer_name, order.buyer_phone, order.province, order.address = buyer
    return order


def pii_terms(numbers: list[int]) -> dict[str, str]:
    """term -> what it is. Parts are included where channels split a value (Shopify and
    WooCommerce send the family name apart; Youzan drops the province)."""
    terms: dict[str, str] = {}
    for name, phone, province, address in BUYERS:
        terms |= {name: "buyer name", name[1:]: "buyer given name", phone: "buyer phone",
                  phone[3:]: "buyer phone (last 8)", address: "street address",
                  address.removeprefix(province): "street address (no province)"}
    for n in numbers:  # the sandbox's Shopify/WooCommerce emails and billing phone
        terms |= {f"buyer{n}@example.com": "buyer email", f"4155554{n % 1000:03d}": "phone"}
    return terms


def secret_terms(settings: Settings) -> dict[str, str]:
    terms = {SASL_PASSWORD: "KAFKA_CONFIG sasl.password",
             CLICKHOUSE_PASSWORD: "CLICKHOUSE_PASSWORD", PII_KEY: "ORDERPULSE_PII_KEY"}
    for channel, config in settings.channels.items():
        terms |= {v: f"{channel} {k}" for k, v in config.items() if k in CREDENTIAL_KEYS}
    return terms


def deliveries(channel: str, config: dict[str, str], number: int, buyer: tuple[str, ...],
               now: datetime, events: tuple[str, ...] = LIFECYCLE) -> list[Delivery]:
    sim, rng = WEBHOOK_SIMS[channel](config), random.Random(number)
    order = buyer_order(number, buyer, now)  # type: ignore[arg-type]
    out: list[Delivery] = []
    for minute, event in enumerate(events):
        apply(order, event, now - timedelta(minutes=15 - minute), rng)
        if event == "shipped" and order.carrier not in COMPANIES:
            order.carrier, order.tracking_no = "SF", f"SF{rng.randrange(10**11, 10**12)}"
        out += sim.deliveries(order, event, now)
    return out


def bad_inputs(channels: dict[str, dict[str, str]], now: datetime
               ) -> list[tuple[str, dict[str, str], bytes]]:
    """Signed deliveries that carry the buyers' PII and are dead-lettered downstream."""
    name, phone, _province, address = BUYERS[0]
    shop = orjson.loads(deliveries("shopify", channels["shopify"], 4301, BUYERS[0], now,
                                   ("created",))[0].body)
    own = orjson.loads(deliveries("ownsite", channels["ownsite"], 4302, BUYERS[0], now,
                                  ("created",))[0].body)
    woo = deliveries("woocommerce", channels["woocommerce"], 4303, BUYERS[0], now,
                     ("created",))[0].body
    bodies = {
        # a status no table knows (the status word is quoted in the message, nothing else)
        "shopify": [orjson.dumps({**shop, "financial_status": "on_hold_for_review"}),
                    # a phone that is not text
                    orjson.dumps({**shop, "shipping_address": {
                        **shop["shipping_address"], "phone": {"number": phone}}}),
                    # not JSON: cut inside the address
                    orjson.dumps(shop)[:orjson.dumps(shop).index(address.encode()) + 12]],
        # the buyer as a list, not an object
        "ownsite": [orjson.dumps({**own, "order": {**own["order"], "buyer": [name, phone]}})],
        "woocommerce": [woo[:woo.index(phone.encode()) + 5]],
        "douyin": [orjson.dumps([{"tag": "101", "msg_id": "bad-1",
                                  "data": f"{name} {phone} {address}"}])],
    }
    return [(ch, *signed(ch, body, channels[ch])) for ch, items in bodies.items()
            for body in items]


# --- the scan -----------------------------------------------------------------------------

def hits(text: str, terms: dict[str, str], where: str) -> Iterator[str]:
    for term, kind in terms.items():
        if term and term in text:
            yield f"{kind} {term!r} in {where}"


_WRITERS = {v.fingerprint: v for v in all_versions()}


def decoded(value: bytes | None) -> tuple[str, Any]:
    """(record name, value) for an Avro single-object value; else ("", text)."""
    if value is None:
        return "", ""
    if value[:2] == MARKER and value[2:10] in _WRITERS:
        writer = _WRITERS[value[2:10]]
        return writer.name, schemaless_reader(io.BytesIO(value[10:]), writer.parsed, None)
    return "", value.decode("utf-8", "replace")


def as_text(value: Any) -> str:
    return orjson.dumps(value, default=lambda v: v.decode("utf-8", "replace")
                        if isinstance(v, bytes) else str(v)).decode()


def scan_topics(settings: Settings, terms: dict[str, str]) -> tuple[list[str], list[str]]:
    """(hits outside the raw edge, hits in raw topics and dead letters' original bytes)."""
    admin = AdminClient(settings.kafka_client_config())
    topics = sorted(t for t in admin.list_topics(timeout=15).topics
                    if t.endswith(settings.topic_suffix) or f"{settings.topic_suffix}-" in t)
    assert len(topics) > 15, topics
    leaks: list[str] = []
    expected: list[str] = []
    for topic, key, value in read_topics(settings, topics):
        name, record = decoded(value)
        where = f"topic {topic} ({name or 'text'})"
        if topic.startswith("orders.raw."):
            expected += hits(as_text(record), terms, where)
            continue
        if name == "DeadLetter":
            _name, original = decoded(record.pop("original_value"))
            record.pop("original_key")
            expected += hits(as_text(original), terms, f"{where}, original_value")
        leaks += hits(as_text(record) + (key or b"").decode("utf-8", "replace"), terms, where)
    return leaks, expected


def scan_clickhouse(settings: Settings, terms: dict[str, str]) -> tuple[list[str], list[str]]:
    db = settings.clickhouse_database
    client = EmbeddedClickHouse(str(settings.chdb_path), db)
    leaks: list[str] = []
    expected: list[str] = []
    try:
        tables = [r["name"] for r in client.query_rows(
            f"SELECT name FROM system.tables WHERE database = '{db}' AND engine NOT LIKE "
            f"'%View%'")]
        assert "order_events" in tables and "dead_letters" in tables, tables
        for table in tables:
            for row in client.query_rows(f"SELECT * FROM {db}.{table}"):
                original = row.pop("original_value_b64", None)
                if original:
                    _name, raw = decoded(base64.b64decode(original))
                    expected += hits(as_text(raw), terms, f"ClickHouse {table}.original_value")
                leaks += hits(as_text(row), terms, f"ClickHouse table {table}")
    finally:
        client.close()
    return leaks, expected


def scan_files(folder: Path, terms: dict[str, str]) -> list[str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files, folder
    found: list[str] = []
    for path in files:
        for number, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1):
            found += hits(line, terms, f"{path}:{number}")
    return found


def scrape_all(pipeline: Pipeline, terms: dict[str, str]) -> list[str]:
    found: list[str] = []
    for child in pipeline.children.values():
        with urllib.request.urlopen(child.metrics_url, timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
        assert "orderpulse_" in text, child.name
        found += hits(text, terms, f"/metrics of {child.name}")
    return found


def test_no_pii_or_secret_outside_the_raw_edge(settings_factory: SettingsFactory,
                                               pipeline_factory: PipelineFactory) -> None:
    channels = {ch: cfg for ch, cfg in sandbox_channels(1).items() if ch in PUSH}
    settings = settings_factory(
        channels=channels, stuck_tick_s=1.0, stuck_limits_s={"PENDING_PAYMENT": 5.0},
        kafka_config={"sasl.username": "orderpulse", "sasl.password": SASL_PASSWORD},
        clickhouse_password=SecretStr(CLICKHOUSE_PASSWORD), pii_key=SecretStr(PII_KEY))
    pipeline = pipeline_factory(settings)
    now = datetime.now(UTC)
    numbers: list[int] = []
    for index, channel in enumerate(PUSH):
        for offset, buyer in enumerate(BUYERS):
            numbers.append(4200 + 10 * index + offset)
            for d in deliveries(channel, channels[channel], numbers[-1], buyer, now):
                assert post(pipeline, channel, d.headers, d.body) == 200, (channel, d.body[:80])
        numbers.append(4200 + 10 * index + 5)  # left unpaid: a stuck alert, then auto-close
        for d in deliveries(channel, channels[channel], numbers[-1], BUYERS[0], now,
                            ("created",)):
            assert post(pipeline, channel, d.headers, d.body) == 200, channel
    bad = bad_inputs(channels, now)
    for channel, headers, body in bad:
        assert post(pipeline, channel, headers, body) == 200, channel

    assert pipeline.wait_until(lambda: total(pipeline.samples(), "orderpulse_stuck_alerts_total")
                               > 0, 60), "no stuck alert was raised"
    assert pipeline.wait_drained(120), pipeline.counts()
    counts = pipeline.counts()
    assert counts["dead_lettered"] >= len(bad) and counts["normalized"] > 30, counts
    terms = pii_terms(numbers) | secret_terms(pipeline.settings)

    leaks = scrape_all(pipeline, terms)
    for child in pipeline.children.values():
        assert child.stop() == 0, child.log_tail()
    leaks += scan_files(pipeline.settings.data_dir / "logs", terms)
    topic_leaks, in_raw = scan_topics(pipeline.settings, terms)
    table_leaks, in_dead_letters = scan_clickhouse(pipeline.settings, terms)
    leaks += topic_leaks + table_leaks
    assert not leaks, "PII or secrets outside the raw edge:\n" + "\n".join(sorted(set(leaks)))
    # Positive control: the raw edge does keep the clear PII the channels sent.
    kinds = {h.split(" '")[0] for h in in_raw}
    assert {"buyer name", "buyer phone", "street address", "buyer email"} <= kinds, kinds
    assert any("original_value" in h for h in in_dead_letters), in_dead_letters[:3]
