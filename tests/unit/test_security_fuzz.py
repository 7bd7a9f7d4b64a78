"""Hostile input, property-tested: whatever arrives, nothing raises and nothing unsigned
is published.

- The agent's entry point (``steps.normalize_message``) for **every** channel, fed
  arbitrary bodies in a well-formed envelope and byte- and structure-mutated real
  fixtures (``tests/fixtures/<channel>/``, turned into raw records by each channel's own
  connector): it returns events or a dead letter with a bad-input reason, never an
  exception and never ``internal_error`` (which would mean a bug, not bad data). The
  per-channel normalizer tests mutate fields within each channel's shape; this file adds
  what crosses channels: raw-byte damage, JSON bombs, huge numbers, NUL and lone
  surrogates, wrong envelope metadata.
- The webhook receiver (``connectors.webhook``, the real aiohttp app on aiohttp's test
  server) under malformed and hostile requests: random headers and bodies, huge
  headers, invalid UTF-8, NUL bytes, CR/LF injection on the raw socket, lying
  Content-Length, chunked bodies over the limit. It never answers 5xx, never answers
  2xx to an unsigned delivery other than a channel's documented handshake, publishes
  nothing unsigned, and is still healthy afterwards. Signed hostile bodies are
  accepted (the merchant's bytes go to the raw topic to be dead-lettered downstream),
  never a 5xx.

Example counts are bounded so the file runs in well under 30 s on a shared 2-core box.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from unittest import mock
from urllib.parse import quote_plus, urlencode

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from orderpulse import names
from orderpulse.avro import codec
from orderpulse.connectors.base import RawRecord, raw_event
from orderpulse.connectors.channels import (
    WEBHOOK_SOURCES,
    douyin,
    jd,
    kuaidi100,
    ownsite,
    shopify,
    taobao,
    woocommerce,
    youzan,
)
from orderpulse.connectors.channels.pinduoduo import API_TYPE
from orderpulse.connectors.csv_import import plan
from orderpulse.connectors.pos_csv import COLUMNS
from orderpulse.connectors.producer import AsyncProducer
from orderpulse.connectors.webhook import create_webhook_app
from orderpulse.metrics import Metrics
from orderpulse.settings import Settings
from orderpulse.streams.channels import NORMALIZERS
from orderpulse.streams.steps import Source, normalize_message
from tests.unit.helpers import fixture_bytes

NOW = 1_794_409_700_000
PII_KEY = b"fuzz-pii-key"
BAD_INPUT = re.compile(r"[a-z_]+")


# --- seeds: one real raw record per channel, built by its own connector ---------------

def _pos_file() -> bytes:
    header = ",".join(COLUMNS)
    line = "SH-001,R1,sale,2026-11-11T20:15:03+08:00,CNY,TEE-BLK-M,2,59.00,0.00,alipay"
    return f"{header}\n{line}\n".encode()


def _seed_records() -> dict[str, tuple[str, RawRecord]]:
    """channel -> (delivery mode, the record the connector would publish)."""
    kuaidi_param = fixture_bytes("kuaidi100", "push_param.json").decode().strip()
    kuaidi_body = (b"param=" + kuaidi_param.encode().replace(b"%", b"%25").replace(b"&", b"%26")
                   .replace(b"+", b"%2B") + b"&sign=" + kuaidi100.sign(kuaidi_param, "s").encode())
    usps = orjson.loads(fixture_bytes("usps", "tracking_detail.json"))
    [pos_record] = plan(_pos_file(), source_name="day.csv").records
    return {
        "shopify": ("WEBHOOK", shopify.ShopifyWebhook({}).records(
            {"X-Shopify-Topic": "orders/paid"}, fixture_bytes("shopify", "orders_paid.json"))[0]),
        "woocommerce": ("WEBHOOK", woocommerce.WooCommerceWebhook({}).records(
            {"X-WC-Webhook-Topic": "order.updated"},
            fixture_bytes("woocommerce", "order_4711.json"))[0]),
        "douyin": ("WEBHOOK", douyin.DouyinWebhook({}).records(
            {}, fixture_bytes("douyin", "push_101.json"))[0]),
        "youzan": ("WEBHOOK", youzan.YouzanWebhook({}).records(
            {}, fixture_bytes("youzan", "trade_paid_push.json"))[0]),
        "ownsite": ("WEBHOOK", ownsite.OwnsiteWebhook({}).records(
            {}, fixture_bytes("ownsite", "order_paid.json"))[0]),
        "kuaidi100": ("WEBHOOK", kuaidi100.Kuaidi100Webhook({}).records(
            {"Content-Type": kuaidi100.FORM_CONTENT_TYPE}, kuaidi_body)[0]),
        "taobao": ("POLL", taobao.record_of(orjson.loads(fixture_bytes(
            "taobao", "normalize_finished_partial_refund.json")), "tb-shop")),
        "jd": ("POLL", jd.record_of(orjson.loads(fixture_bytes(
            "jd", "normalize_locked_after_shipment.json")), "777")),
        "pinduoduo": ("POLL", RawRecord("231123-482910374651999", API_TYPE, fixture_bytes(
            "pinduoduo", "normalize_shipped_return.json"), shop_id="mall-9")),
        "usps": ("POLL", RawRecord(usps["trackingNumber"],
                                   str(usps["trackingEvents"][0].get("eventCode", "")),
                                   orjson.dumps(usps))),
        "pos": ("BATCH", pos_record),
    }


SEEDS = _seed_records()
CHANNELS = sorted(SEEDS)


def test_every_normalized_channel_has_a_seed_that_normalizes() -> None:
    assert set(CHANNELS) == set(NORMALIZERS)
    for channel in CHANNELS:
        result = _run(channel, SEEDS[channel][1].body)
        assert result.dead_letter is None and result.events, (channel, result.reason)


def _src(channel: str, body: bytes, **envelope: Any) -> Source:
    mode, record = SEEDS[channel]
    raw = {**raw_event(channel, mode, record, received_at=NOW - 60_000, request_id="fuzz"),
           "body": body, **envelope}
    value = codec("RawEvent").encode(raw)
    return Source(names.raw_topic(channel), 1, 7, record.key.encode(), value)


def _run(channel: str, body: bytes, **envelope: Any) -> Any:
    return normalize_message(_src(channel, body, **envelope), now_ms=NOW, pii_key=PII_KEY)


def _check(result: Any, src_value: bytes | None = None) -> None:
    """Events that encode, or a dead letter for bad input that keeps the original bytes."""
    if result.dead_letter is None:
        for key, value in result.outputs:
            event = codec("OrderEvent").decode(value)
            assert key == event["order_id"].encode()
        return
    letter = codec("DeadLetter").decode(result.dead_letter)
    assert result.reason != "internal_error", (letter["error_class"], letter["message"])
    assert BAD_INPUT.fullmatch(result.reason), result.reason
    if src_value is not None:
        assert letter["original_value"] == src_value


# --- (a) every normalizer, through the agent's entry point -------------------------------

@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400))
def test_arbitrary_body_bytes_in_a_valid_envelope(channel: str, body: bytes) -> None:
    src = _src(channel, body)
    _check(normalize_message(src, now_ms=NOW, pii_key=PII_KEY), src.value)


def _byte_mutation(seed: bytes) -> st.SearchStrategy[bytes]:
    """Damage a real body: flip, delete, insert, truncate, or splice a hostile chunk."""
    hostile = st.sampled_from([b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'"',
                               b"\\", b"{", b"]", b"\r\n", b"%", b"%00", b"&", b"=", b"+",
                               b"\xe2\x80\xae"])
    position = st.integers(0, len(seed))

    def apply(ops: list[tuple[int, int, int, bytes]]) -> bytes:
        data = bytearray(seed)
        for kind, at, span, chunk in ops:
            at = min(at, len(data))
            if kind == 0 and at < len(data):
                data[at] ^= 0xFF
            elif kind == 1:
                del data[at:at + span]
            elif kind == 2:
                data[at:at] = chunk
            elif kind == 3:
                del data[at:]
        return bytes(data)

    op = st.tuples(st.integers(0, 3), position, st.integers(1, 64), hostile | st.binary(max_size=8))
    return st.lists(op, min_size=1, max_size=4).map(apply)


@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_byte_mutated_fixtures(channel: str, data: st.DataObject) -> None:
    body = data.draw(_byte_mutation(SEEDS[channel][1].body))
    src = _src(channel, body)
    _check(normalize_message(src, now_ms=NOW, pii_key=PII_KEY), src.value)


#: Raw JSON values that break parsers rather than mappings: nesting past recursion
#: limits, integers past 64 bits and past Python's 4300-digit limit, exponents past
#: float range, NaN/Infinity spellings, NUL, lone surrogates, bidi overrides.
HOSTILE_JSON = [
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"9" * 5000,
    b"-" + b"9" * 40,
    b"18446744073709551616",
    b"1e999999",
    b"-1e-999999",
    b"1.0000000000000000000000000000000000001",
    b"-0",
    b"NaN",
    b"Infinity",
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\xe2\x80\xae13800138000"',
    b'"' + b"x" * 100_000 + b'"',
    b'""',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b'{"":null}',
    # Type confusion: numbers where text is documented and text where numbers are.
    b"0",
    b"-1",
    b"1.5",
    b'"abc"',
    b'"-0.000"',
    b'"1e400"',
    b'"99999999999999999999999"',
    b'"2026-02-30 25:61:61"',
    b'"0001-01-01T00:00:00+99:99"',
]
_PLACEHOLDER = "\x01HOSTILE\x01"


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _with_placeholder(doc: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return _PLACEHOLDER
    head, *rest = path
    if isinstance(doc, dict):
        return {**doc, head: _with_placeholder(doc[head], tuple(rest))}
    return [_with_placeholder(v, tuple(rest)) if i == head else v for i, v in enumerate(doc)]


def _json_seeds() -> dict[str, tuple[Any, Callable[[bytes], bytes]]]:
    """channel -> (its JSON document, how a changed document becomes the raw body)."""
    seeds: dict[str, tuple[Any, Callable[[bytes], bytes]]] = {}
    for channel in CHANNELS:
        body = SEEDS[channel][1].body
        try:
            seeds[channel] = (orjson.loads(body), lambda b: b)
        except orjson.JSONDecodeError:
            continue  # form (kuaidi100) and CSV (pos) bodies: byte mutations cover them
    # Nested JSON strings are where a second parser runs: Douyin's data, Youzan's msg.
    douyin_msg = orjson.loads(SEEDS["douyin"][1].body)
    seeds["douyin.data"] = (orjson.loads(douyin_msg["data"]), lambda b: orjson.dumps(
        {**douyin_msg, "data": b.decode("utf-8", "surrogatepass")}))
    youzan_env = orjson.loads(SEEDS["youzan"][1].body)
    youzan_msg = orjson.loads(fixture_bytes("youzan", "trade_paid_msg.json"))
    seeds["youzan.msg"] = (youzan_msg, lambda b: orjson.dumps(
        {**youzan_env, "msg": quote_plus(b.decode("utf-8", "surrogatepass"))}))
    return seeds


JSON_SEEDS = _json_seeds()


@pytest.mark.parametrize("seed", sorted(JSON_SEEDS))
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_structure_mutated_fixtures(seed: str, data: st.DataObject) -> None:
    doc, to_body = JSON_SEEDS[seed]
    path = data.draw(st.sampled_from(list(_paths(doc))))
    hostile = data.draw(st.sampled_from(HOSTILE_JSON))
    text = orjson.dumps(_with_placeholder(doc, path))
    body = to_body(text.replace(orjson.dumps(_PLACEHOLDER), hostile))
    channel = seed.split(".")[0]
    src = _src(channel, body)
    _check(normalize_message(src, now_ms=NOW, pii_key=PII_KEY), src.value)


_TEXT = st.text(max_size=40) | st.sampled_from(["", "\x00", "\ud800", "x" * 5000])


@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=_TEXT, content_type=_TEXT, shop=_TEXT,
       headers=st.dictionaries(_TEXT, _TEXT, max_size=3))
def test_hostile_envelope_metadata(channel: str, topic: str, content_type: str, shop: str,
                                   headers: dict[str, str]) -> None:
    """The envelope's text fields come from the channel's request: they are input too."""
    try:
        src = _src(channel, SEEDS[channel][1].body, source_topic=topic,
                   content_type=content_type, shop_id=shop, headers=headers)
    except (UnicodeEncodeError, ValueError):
        return  # a lone surrogate cannot be Avro-encoded: it never reaches the topic
    _check(normalize_message(src, now_ms=NOW, pii_key=PII_KEY), src.value)


# --- (b) the webhook receiver under hostile requests ------------------------------------

MAX_BODY = 256 * 1024
SECRETS: dict[str, dict[str, str]] = {
    "shopify": {"webhook_secret": "shp-secret"},
    "woocommerce": {"webhook_secret": "woo-secret"},
    "douyin": {"app_key": "dy-app", "app_secret": "dy-secret"},
    "youzan": {"client_id": "yz-client", "client_secret": "yz-secret", "kdt_id": "42"},
    "ownsite": {"webhook_secret": "own-secret"},
    "kuaidi100": {"salt": "k100-salt"},
}
PUSH_CHANNELS = sorted(WEBHOOK_SOURCES)
#: Header names the receivers read: hostile values for them are the interesting ones.
KNOWN_HEADERS = sorted({
    "Content-Type", "Content-Length", "Transfer-Encoding", shopify.HMAC_HEADER,
    "X-Shopify-Topic", "X-Shopify-Webhook-Id", "X-Shopify-Triggered-At",
    woocommerce.SIGNATURE_HEADER, woocommerce.TOPIC_HEADER, woocommerce.DELIVERY_HEADER,
    douyin.SIGN_HEADER, douyin.APP_HEADER, douyin.METHOD_HEADER, youzan.SIGN_HEADER,
    youzan.TYPE_HEADER, ownsite.SIGNATURE_HEADER, ownsite.EVENT_ID_HEADER})


class Harness:
    """The real receiver app on aiohttp's test server, with a spec-checked producer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.producer = mock.create_autospec(AsyncProducer, instance=True)
        self.producer.close.return_value = 0
        settings = Settings(ORDERPULSE_CHANNELS=SECRETS, ORDERPULSE_WEBHOOK_MAX_BODY=MAX_BODY,
                            ORDERPULSE_WEBHOOK_ACK_TIMEOUT_S=2.0)
        app = create_webhook_app(settings, Metrics.create(CollectorRegistry()), self.producer)
        self.client: TestClient[Any, Any] = self.run(self._start(app))

    @staticmethod
    async def _start(app: Any) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(TestServer(app))  # needs the running loop
        await client.start_server()
        return client

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _request(self, method: str, path: str, headers: Mapping[str, str],
                       body: bytes) -> int:
        async with self.client.request(method, path, headers=headers, data=body) as resp:
            await resp.read()
            return resp.status

    def request(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> int:
        return int(self.run(self._request(method, path, headers, body)))

    async def _raw(self, data: bytes) -> bytes:
        """Send bytes as they are on a new connection; the answer's status line (b"" when
        the server closed without one)."""
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        try:
            writer.write(data)
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), timeout=10)
        except ConnectionError:
            return b""
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def raw(self, data: bytes) -> bytes:
        return bytes(self.run(self._raw(data)))

    def healthy(self) -> bool:
        return self.request("GET", "/healthz", {}, b"") == 200

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def _is_handshake(channel: str, method: str, headers: Mapping[str, str], body: bytes) -> bool:
    """The documented unsigned answers: WooCommerce's ping, a Kuaidi100 reachability probe."""
    lower = {k.lower() for k in headers}
    if channel == "woocommerce":
        return (method == "POST" and woocommerce.SIGNATURE_HEADER not in lower
                and woocommerce.TOPIC_HEADER not in lower
                and re.fullmatch(rb"webhook_id=\d+", body.strip()) is not None)
    return channel == "kuaidi100" and method in ("GET", "HEAD")


_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60) \
    | st.sampled_from(["", "sha256=", "t=1,v1=00", "t=99999999999,v1=" + "0" * 64, "md5",
                       "hmac-sha256", "application/json", "text/plain; charset=latin-1",
                       "A" * 4000, "dy-app", "yz-client"])
_headers = st.dictionaries(st.sampled_from(KNOWN_HEADERS) | st.from_regex(
    r"X-[A-Za-z-]{1,20}", fullmatch=True), _header_text, max_size=6).map(
    lambda h: {k: v for k, v in h.items() if k not in ("Content-Length", "Transfer-Encoding")})
_bodies = st.binary(max_size=300) | st.sampled_from(
    [b"", b"\x00" * 64, b"\xff\xfe\xfd", b"webhook_id=12", b"param={}&sign=", b"[]",
     b'[{"tag":"0","msg_id":"0","data":"{}"}]', b'{"client_id":"yz-client","version":1}',
     *HOSTILE_JSON[:3]])
_paths_to = st.sampled_from([*PUSH_CHANNELS, "taobao", "jd", "unknown", "SHOPIFY", "shopify%00",
                             "%2e%2e", "shopify%2F..", "x" * 300])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=_paths_to, method=st.sampled_from(["POST", "PUT", "PATCH", "GET", "DELETE",
                                                  "HEAD", "OPTIONS"]),
       headers=_headers, body=_bodies)
def test_unsigned_requests_are_never_published_nor_5xx(
        receiver: Harness, channel: str, method: str, headers: dict[str, str],
        body: bytes) -> None:
    status = receiver.request(method, f"/webhooks/{channel}", headers, body)
    assert status < 500, status
    if 200 <= status < 300:
        assert _is_handshake(channel, method, headers, body), (status, channel, method)
    elif channel not in PUSH_CHANNELS:
        assert status in (404, 405), status
    receiver.producer.send.assert_not_awaited()


_raw_values = st.binary(max_size=80) | st.sampled_from([
    b"\r\nX-Shopify-Hmac-Sha256: forged", b"a\r\n\r\nPOST /webhooks/shopify HTTP/1.1", b"\x00",
    b"\xff\xfe\xc3\x28", b"\xed\xa0\x80", b" folded\r\n continued", b"A" * 20_000])
_raw_names = st.sampled_from([h.encode() for h in KNOWN_HEADERS]) | st.binary(min_size=1,
                                                                                  max_size=20)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=st.sampled_from([c.encode() for c in PUSH_CHANNELS])
       | st.binary(min_size=1, max_size=30),
       method=st.sampled_from([b"POST", b"GET", b"post", b"PRI", b"\x00"]),
       headers=st.lists(st.tuples(_raw_names, _raw_values), max_size=5),
       body=_bodies)
def test_raw_malformed_http_is_answered_4xx_or_closed(
        receiver: Harness, channel: bytes, method: bytes, headers: list[tuple[bytes, bytes]],
        body: bytes) -> None:
    """Bytes the client libraries would refuse to send: CR/LF injection, NUL, invalid
    UTF-8, folded and oversized headers, garbage methods and paths."""
    lines = [method + b" /webhooks/" + channel + b" HTTP/1.1", b"Host: fuzz"]
    lines += [name + b": " + value for name, value in headers]
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    status_line = receiver.raw(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    if status_line:  # else the server dropped a request it could not parse: fine
        status = int(status_line.split()[1])
        assert status < 500, status_line
        if 200 <= status < 300:
            assert channel in (b"woocommerce", b"kuaidi100"), status_line
    receiver.producer.send.assert_not_awaited()


def _request(path: str, headers: list[str], body: bytes = b"", *,
             length: bool = True) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: fuzz", "Connection: close", *headers]
    if length:
        head.append(f"Content-Length: {len(body)}")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


def _chunked(body: bytes, size: int = 8192) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


HOSTILE_REQUESTS: dict[str, tuple[bytes, set[int]]] = {
    "huge header value": (_request("/webhooks/shopify", ["X-Shopify-Topic: " + "a" * 100_000]),
                          {400, 431}),
    "huge header name": (_request("/webhooks/shopify", ["X-" + "a" * 100_000 + ": 1"]),
                         {400, 431}),
    "many headers": (_request("/webhooks/shopify", [f"X-H{i}: {i}" for i in range(500)]),
                     {400, 401, 431}),
    "body over the limit": (_request("/webhooks/shopify", ["Content-Type: application/json"],
                                     b"x" * (MAX_BODY + 1)), {413}),
    "chunked body over the limit": (_request(
        "/webhooks/ownsite", ["Transfer-Encoding: chunked"], _chunked(b"x" * (MAX_BODY + 1)),
        length=False), {413}),
    "body at the limit, unsigned": (_request("/webhooks/shopify", [], b"x" * MAX_BODY), {401}),
    "content-length and chunked (smuggling)": (_request(
        "/webhooks/shopify", ["Transfer-Encoding: chunked"], b"0\r\n\r\n"), {400}),
    "negative content-length": (_request("/webhooks/shopify", ["Content-Length: -1"],
                                         length=False), {400}),
    "two content-lengths": (_request("/webhooks/shopify", ["Content-Length: 0"], b"abc"),
                            {400}),
    "NUL in a header value": (_request("/webhooks/shopify", ["X-Shopify-Hmac-Sha256: a\x00b"]),
                              {400, 401}),
    "invalid UTF-8 in a header value": (_request("/webhooks/shopify", []).replace(
        b"Host: fuzz", b"Host: fuzz\r\nX-Shopify-Hmac-Sha256: \xff\xfe\xc3\x28"), {400, 401}),
    "CR/LF header injection": (_request("/webhooks/shopify", [
        "X-Shopify-Topic: orders/paid\r\nX-Shopify-Hmac-Sha256: forged"], b"{}"), {401}),
    "obsolete line folding": (_request("/webhooks/shopify", ["X-Shopify-Hmac-Sha256: a",
                                                             " folded-into-the-signature"]),
                              {400, 401}),
    "duplicate signature headers": (_request("/webhooks/shopify", [
        "X-Shopify-Hmac-Sha256: forged1", "X-Shopify-Hmac-Sha256: forged2"], b"{}"), {401}),
    "invalid UTF-8 in the path": (_request("/webhooks/shop\xff\xfeify".encode("latin-1")
                                           .decode("latin-1"), []), {400, 404}),
    "dot segments to a known channel": (_request("/webhooks/x/../shopify", [], b"{}"),
                                        {401, 404}),
    "encoded slash": (_request("/webhooks/shopify%2F..%2Ftaobao", [], b"{}"), {404}),
    "JSON bomb, unsigned": (_request("/webhooks/douyin", ["Content-Type: application/json"],
                                     b"[" * 100_000 + b"]" * 100_000), {401}),
    "wrong content type, unsigned": (_request("/webhooks/kuaidi100", [
        "Content-Type: application/json"], b'{"param": "{}", "sign": "x"}'), {401}),
    "missing content type, unsigned": (_request("/webhooks/youzan", [], b"{}"), {401}),
    "HTTP/1.0": (_request("/webhooks/ownsite", [], b"{}").replace(b"HTTP/1.1", b"HTTP/1.0"),
                 {401}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_REQUESTS))
def test_hostile_requests_get_a_4xx(receiver: Harness, case: str) -> None:
    data, expected = HOSTILE_REQUESTS[case]
    status_line = receiver.raw(data)
    status = int(status_line.split()[1]) if status_line else None
    assert status in expected, (case, status_line)
    receiver.producer.send.assert_not_awaited()
    assert receiver.healthy()


def signed(channel: str, body: bytes, secrets: Mapping[str, str],
           now_s: int | None = None) -> tuple[dict[str, str], bytes]:
    """Headers and body of a delivery signed with the channel's real scheme (also used by
    tests/integration/test_security.py)."""
    s = secrets
    if channel == "shopify":
        return {shopify.HMAC_HEADER: shopify.sign(s["webhook_secret"].encode(), body),
                "X-Shopify-Topic": "orders/paid"}, body
    if channel == "woocommerce":
        return {woocommerce.SIGNATURE_HEADER: woocommerce.sign(
            s["webhook_secret"].encode(), body), woocommerce.TOPIC_HEADER: "order.updated"}, body
    if channel == "douyin":
        return {douyin.APP_HEADER: s["app_key"],
                douyin.SIGN_HEADER: douyin.sign(s["app_key"], s["app_secret"], body)}, body
    if channel == "youzan":
        return {youzan.SIGN_HEADER: youzan.event_sign(s["client_id"], s["client_secret"],
                                                      body)}, body
    if channel == "ownsite":
        return {ownsite.SIGNATURE_HEADER: ownsite.signature_header(
            s["webhook_secret"].encode(), int(time.time()) if now_s is None else now_s, body),
            ownsite.EVENT_ID_HEADER: "evt-fuzz"}, body
    # Kuaidi100 signs the form's param text: the hostile bytes become that text.
    param = body.decode("utf-8", "replace")
    return ({"Content-Type": kuaidi100.FORM_CONTENT_TYPE},
            urlencode({"param": param, "sign": kuaidi100.sign(param, s["salt"])}).encode())


_signed_bodies = st.binary(max_size=400) | st.sampled_from(HOSTILE_JSON) | st.sampled_from(
    [SEEDS[c][1].body for c in PUSH_CHANNELS])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=st.sampled_from(PUSH_CHANNELS), body=_signed_bodies,
       content_type=st.sampled_from(["", "application/json", "text/plain", "text/html; utf-7",
                                     "application/x-www-form-urlencoded"]))
def test_signed_hostile_bodies_are_accepted_never_5xx(
        receiver: Harness, channel: str, body: bytes, content_type: str) -> None:
    """A signed body is the merchant's: published as sent (the normalizer dead-letters it),
    whatever its content type; the receiver never fails on it and never stores a secret."""
    headers, body = signed(channel, body, SECRETS[channel])
    if content_type:
        headers["Content-Type"] = content_type
    receiver.producer.reset_mock()
    status = receiver.request("POST", f"/webhooks/{channel}", headers, body)
    allowed = {200} | ({401} if channel == "youzan" else set())  # its body names client/age
    assert status in allowed | ({413} if len(body) > MAX_BODY else set()), status
    for call in receiver.producer.send.await_args_list:
        raw = codec("RawEvent").decode(call.kwargs["value"])
        assert raw["channel"] == channel and call.kwargs["key"]
        if channel != "douyin":  # Douyin's records are the batch's messages, re-serialized
            assert raw["body"] == body
        blob = call.kwargs["value"]
        assert not any(v.encode() in blob for v in SECRETS[channel].values()
                       if v not in ("42", SECRETS[channel].get("app_key"),
                                    SECRETS[channel].get("client_id")))


def test_receiver_survived_and_published_nothing_unsigned(receiver: Harness) -> None:
    assert receiver.healthy()


def test_signed_delivery_with_a_non_utf8_header_is_kept_as_text(receiver: Harness) -> None:
    """Shopify signs only the body: a header that is not UTF-8 must not turn a valid
    delivery into a 500 (Shopify would retry it for 48 h); it is kept with U+FFFD."""
    body = SEEDS["shopify"][1].body
    signature = shopify.sign(SECRETS["shopify"]["webhook_secret"].encode(), body).encode()
    receiver.producer.reset_mock()
    status_line = receiver.raw(_request("/webhooks/shopify", [], body).replace(
        b"Host: fuzz", b"Host: fuzz\r\nX-Shopify-Hmac-Sha256: " + signature
        + b"\r\nX-Shopify-Topic: orders/\xffpaid"))
    assert status_line.split()[1] == b"200", status_line
    [call] = receiver.producer.send.await_args_list
    raw = codec("RawEvent").decode(call.kwargs["value"])
    assert raw["headers"]["x-shopify-topic"] == "orders/\ufffdpaid" and raw["body"] == body
