"""Kuaidi100 normalizer: subscription pushes as the connector publishes them (the
form body; fixture: the ``param`` of the documented sample push), field by field;
China time; both state code sets; the sandbox's pushes across its code switch;
mutated pushes (hypothesis)."""

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors.base import RawRecord, raw_event
from orderpulse.connectors.channels.kuaidi100 import Kuaidi100Webhook
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.kuaidi100 import Kuaidi100WebhookSim
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import kuaidi100
from orderpulse.streams.channels.common import Context
from tests.unit.helpers import fixture_bytes

PARAM = fixture_bytes("kuaidi100", "push_param.json").decode().strip()
SALT = "s3cr3t-salt"
CONFIG = {"salt": SALT, "shop_id": "acme-cn"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOW = 1_794_409_700_000
CTX = Context(NOW, b"test-pii-key")


def _body(param: str) -> bytes:
    return urlencode({"sign": "0" * 32, "param": param}).encode()


def _raw(record: RawRecord, **extra: Any) -> dict[str, Any]:
    return {**raw_event("kuaidi100", "WEBHOOK", record, received_at=1_794_409_600_000,
                        request_id="req-1"), **extra}


def _param(**changes: Any) -> dict[str, Any]:
    param = orjson.loads(PARAM)
    param["lastResult"].update(changes)
    return param


def _push(param: dict[str, Any] | str, topic: str | None = None) -> list[dict[str, Any]]:
    text = param if isinstance(param, str) else orjson.dumps(param).decode()
    if topic is None:
        [record] = Kuaidi100Webhook(CONFIG).records(FORM, _body(text))
    else:
        record = RawRecord("k", topic, _body(text))
    return kuaidi100.normalize(_raw(record), CTX)


def _entry(**changes: Any) -> dict[str, Any]:
    """The fixture's newest entry with ``changes`` (None removes a field)."""
    entry = {**orjson.loads(PARAM)["lastResult"]["data"][0], **changes}
    return {k: v for k, v in entry.items() if v is not None}


def _one(entry: dict[str, Any], **result: Any) -> dict[str, Any]:
    [event] = _push(_param(data=[entry], **result))
    return event


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    out = codec("OrderEvent")
    return out.decode(out.encode(event))


def test_documented_push_field_by_field() -> None:
    [event] = _push(PARAM)
    assert event["order_id"] == "kuaidi100:SF1444739949795"
    assert event["channel_order_id"] == event["tracking_no"] == "SF1444739949795"
    assert (event["channel"], event["shop_id"], event["carrier"]) == \
        ("kuaidi100", "acme-cn", "shunfeng")
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("CARRIER_SCAN", "IN_TRANSIT", "NONE")
    assert event["raw_status"] == "state=5;status=派件;push=polling"
    # Newest entry: ftime 2025-01-03 08:04:25 China time -> 00:04:25Z.
    assert (event["event_time"], event["source_tz"]) == \
        (_ms(2025, 1, 3, 0, 4, 25), "Asia/Shanghai")
    assert (event["currency"], event["total_minor"], event["paid_minor"],
            event["refunded_minor"], event["lines"]) == ("CNY", 0, 0, 0, [])
    assert (event["buyer"], event["receiver"], event["refund"]) == (None, None, None)
    assert event["source_event_id"] == "SF1444739949795:2025-01-03 08:04:25:5"
    assert (event["trace_id"], event["flags"]) == ("req-1", [])
    decoded = _roundtrip(event)
    assert decoded["event_time"] == datetime(2025, 1, 3, 0, 4, 25, tzinfo=UTC)


def test_newest_entry_does_not_rely_on_the_order_of_data() -> None:
    param = orjson.loads(PARAM)
    param["lastResult"]["data"].reverse()
    [event] = _push(param)
    assert event["event_time"] == _ms(2025, 1, 3, 0, 4, 25)
    assert event["event_id"] == _push(PARAM)[0]["event_id"]  # a replayed snapshot repeats


def test_raw_time_when_ftime_is_missing() -> None:
    event = _one(_entry(ftime=None, time="2025-01-03 09:00:00"))
    assert event["event_time"] == _ms(2025, 1, 3, 1)


@pytest.mark.parametrize(("code", "status"), list(kuaidi100.STATE_CODES.items()))
def test_every_state_code_maps(code: str, status: str) -> None:
    assert _one(_entry(statusCode=code), state=code)["status"] == status


@pytest.mark.parametrize(("word", "status"), list(kuaidi100.STATE_WORDS.items()))
def test_every_state_word_maps_when_no_code_is_sent(word: str, status: str) -> None:
    event = _one(_entry(statusCode=None, status=word), state=None)
    assert (event["status"], event["raw_status"]) == (status, f"state=;status={word};push=polling")


@pytest.mark.parametrize(("base", "advanced", "status"), [
    ("1", "103", "SHIPPED"), ("0", "1002", "IN_TRANSIT"), ("5", "501", "IN_TRANSIT"),
    ("3", "301", "DELIVERED"), ("4", "401", "IN_TRANSIT"), ("2", "206", "IN_TRANSIT"),
])
def test_base_and_advanced_codes_map_alike(base: str, advanced: str, status: str) -> None:
    assert _one(_entry(statusCode=base))["status"] == status
    assert _one(_entry(statusCode=advanced))["status"] == status
    assert _one(_entry(statusCode=int(advanced)))["status"] == status  # a JSON number


def test_codes_and_words_tables_agree() -> None:
    words = {"1": "揽收", "103": "已揽收", "0": "在途", "1002": "干线", "5": "派件",
             "3": "签收", "301": "本人签收", "2": "疑难", "206": "无法联系", "14": "拒签",
             "101": "已下单", "102": "待揽收", "6": "退回", "4": "退签", "8": "清关"}
    for code, word in words.items():
        assert kuaidi100.STATE_CODES[code] == kuaidi100.STATE_WORDS[word]


def test_state_falls_back_to_last_result_state_then_word() -> None:
    assert _one(_entry(statusCode=None, status="签收"), state="1")["status"] == "SHIPPED"
    assert _one(_entry(statusCode=None, status="签收"), state="")["status"] == "DELIVERED"


@pytest.mark.parametrize(("code", "word"), [("14", "拒签"), ("206", "无法联系"), ("6", "退回")])
def test_problems_stay_in_transit_with_their_raw_status(code: str, word: str) -> None:
    event = _one(_entry(statusCode=code, status=word))
    assert (event["status"], event["raw_status"]) == \
        ("IN_TRANSIT", f"state={code};status={word};push=polling")


def test_signed_for_push_is_delivered_and_the_signer_is_not_copied() -> None:
    entry = _entry(statusCode="301", status="签收", ftime="2025-01-03 18:00:00",
                   context="[深圳市]快件已签收,签收人:张三丰,感谢使用顺丰速运")
    param = _param(state="301", ischeck="1", data=[entry, *orjson.loads(PARAM)["lastResult"]
                                                  ["data"]])
    param["status"] = "shutdown"
    [event] = _push(param)
    assert (event["status"], event["raw_status"]) == \
        ("DELIVERED", "state=301;status=签收;push=shutdown")
    assert "张三丰" not in orjson.dumps(event).decode()


@pytest.mark.parametrize(("param", "topic", "error", "reason"), [
    (_param(data=[_entry(statusCode="99")]), None, MappingError, "unmapped_status"),
    (_param(data=[_entry(statusCode=None, status="飞走了")], state=None), None, MappingError,
     "unmapped_status"),
    (_param(data=[_entry(statusCode=None, status=None)], state=None), None, MappingError,
     "unmapped_status"),
    (_param(data=[_entry(statusCode={"c": 1})]), None, MappingError, "unmapped_status"),
    (_param(data=[]), "abort", MappingError, "missing_field"),
    (_param(data=[_entry(ftime="0000-00-00 00:00:00", time=None)]), None, MappingError,
     "bad_timestamp"),
    (_param(data=[_entry(ftime="2025-01-03T08:04:25+08:00")]), None, MappingError,
     "bad_timestamp"),
    # China time 00:00:01 on 0001-01-01 is before year 1 in UTC.
    (_param(data=[_entry(ftime="0001-01-01 00:00:01")]), None, MappingError, "bad_timestamp"),
    (_param(nu=None), "polling", MappingError, "missing_field"),
    (_param(nu=1.5), "polling", MappingError, "bad_id"),
    (_param(com=None), None, MappingError, "missing_field"),
    (_param(data={"ftime": "2025-01-03 08:04:25"}), None, MappingError, "bad_shape"),
    ({"status": "polling", "lastResult": "SF1444739949795"}, "polling", MappingError,
     "bad_shape"),
    (PARAM, "paused", MappingError, "unknown_topic"),
    ("{not json", "polling", DecodeError, "not_json"),
    ("[1, 2]", "polling", DecodeError, "not_json"),
])
def test_bad_pushes_raise_reasoned_errors(param: dict[str, Any] | str, topic: str | None,
                                          error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        _push(param, topic)
    assert info.value.reason == reason


@pytest.mark.parametrize(("body", "error", "reason"), [
    (b"\xff\xfe", DecodeError, "not_json"),
    (b"sign=ABC", MappingError, "missing_field"),
    (b"", MappingError, "missing_field"),
])
def test_bad_form_bodies(body: bytes, error: type, reason: str) -> None:
    with pytest.raises(error) as info:
        kuaidi100.normalize(_raw(RawRecord("k", "polling", body)), CTX)
    assert info.value.reason == reason


def _walk(steps: int = 900) -> Iterator[tuple[lifecycle.SimOrder, str, datetime]]:
    ticks = (datetime(2026, 6, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(10**6))
    sim = lifecycle.Simulator(seed=5, concurrent=25, clock=lambda: next(ticks))
    return ((order, event, order.updated) for order, event in islice(sim, steps))


_EVENT_STATUS = {"shipped": "SHIPPED", "in_transit": "IN_TRANSIT", "delivered": "DELIVERED"}


def test_sandbox_pushes_of_both_code_sets_normalize() -> None:
    switch = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    sim = Kuaidi100WebhookSim({**CONFIG, "code_switch_at": switch.isoformat()})
    source, raw_codec = Kuaidi100Webhook(CONFIG), codec("RawEvent")
    states: dict[str, set[str]] = {}
    for order, event, at in _walk():
        for delivery in sim.deliveries(order, event, at):
            [record] = source.records(delivery.headers, delivery.body)
            raw = raw_codec.decode(raw_codec.encode(_raw(record)))  # as the pipeline sees it
            [normalized] = kuaidi100.normalize(raw, CTX)
            _roundtrip(normalized)
            assert normalized["order_id"] == f"kuaidi100:{order.tracking_no}"
            assert normalized["status"] == _EVENT_STATUS[event]
            assert normalized["event_time"] == int(at.timestamp()) * 1000
            assert normalized["source_tz"] == "Asia/Shanghai"
            state = normalized["raw_status"].split(";")[0].removeprefix("state=")
            states.setdefault(normalized["status"], set()).add(state)
    assert states == {"SHIPPED": {"1", "103"}, "IN_TRANSIT": {"0", "1002"},
                      "DELIVERED": {"3", "301"}}


# --- mutated real samples --------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "103", "签收", "2025-01-03 08:04:25", "0000-00-00 00:00:00",
                       "9999-12-31 23:59:59", "0001-01-01 00:00:01", "shutdown"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
_PARAM = orjson.loads(PARAM)
_TOP = list(_PARAM)
_RESULT = list(_PARAM["lastResult"])
_ENTRY = list(_PARAM["lastResult"]["data"][0])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(_TOP), _json, max_size=2),
       st.dictionaries(st.sampled_from(_RESULT), _json, max_size=3),
       st.dictionaries(st.tuples(st.integers(0, 1), st.sampled_from(_ENTRY)), _json,
                       max_size=4),
       st.sampled_from(sorted(kuaidi100.PUSH_STATUSES)))
def test_mutated_pushes_normalize_or_raise_input_errors(
        top: dict[str, Any], result: dict[str, Any], entries: dict[tuple[int, str], Any],
        topic: str) -> None:
    param = copy.deepcopy(_PARAM)
    for (index, key), value in entries.items():
        param["lastResult"]["data"][index][key] = value
    param["lastResult"].update(result)
    param.update(top)
    try:
        events = _push(param, topic)
    except InputError:
        return
    for event in events:
        assert _roundtrip(event)["order_id"].startswith("kuaidi100:")
