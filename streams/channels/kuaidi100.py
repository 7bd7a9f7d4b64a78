"""Kuaidi100 (快递100) subscription pushes to ``OrderEvent`` (a shipment event, ``CARRIER_SCAN``).

The connector (``connectors/channels/kuaidi100.py``) publishes each push as one
record: the original form body (``sign=..&param=<JSON>``), ``source_topic`` the
push ``status``. Facts this relies on (Kuaidi100 API docs, apifox project 514987;
SDK kuaidi100-api/java-demo; research notes; the state table as listed alike by
several Kuaidi100 client codebases):

- ``param.status``: ``polling`` (monitoring), ``shutdown`` (signed for, last push),
  ``abort`` (monitoring stopped: nothing in 3 days or no change in 60 days),
  ``updateall`` (full re-push): every one carries ``lastResult``;
- ``lastResult``: ``nu`` (tracking number), ``com`` (Kuaidi100 company code, e.g.
  ``shunfeng``), ``state`` (the parcel's current state code), ``data[]``: the full
  history, newest first (a snapshot, not a delta). One push -> one event, for the
  newest entry (greatest ``ftime``; ties keep the documented order), so a replayed
  snapshot repeats the same event. A push with no entry has no scan to report and is
  refused (``missing_field``), to be seen in the dead letters, not dropped;
- the state of that entry: its ``statusCode``, else ``lastResult.state``, else its
  ``status`` word. Codes come in two sets that map to the same statuses: the base
  set (0 在途, 1 揽收, 2 疑难, 3 签收, 4 退签, 5 派件, 6 退回, 7 转投, 8 清关,
  14 拒签) and the advanced one (``resultv2=4``; the sandbox switches to it midway:
  101/102 before pickup, 103 揽收, 1001-1003 在途, 501 投柜或驿站, 301-304 签收,
  401 已销单, 201-210 疑难, 10-13 清关). Before pickup is PACKING, picked up
  SHIPPED, signed for DELIVERED, every other state IN_TRANSIT; problem states
  (疑难, 退签, 退回, 拒签, 已销单, customs trouble) stay IN_TRANSIT with the code
  and word in ``raw_status`` (``"state=206;status=无法联系;push=polling"``). A code
  or word nobody listed is ``unmapped_status``;
- time: ``ftime`` (``time`` when missing), ``yyyy-MM-dd HH:mm:ss`` in China time
  without offset: Asia/Shanghai, fixed +08:00 (no daylight saving);
- ids: ``order_id`` = ``kuaidi100:<nu>``, ``tracking_no`` = ``nu``, ``carrier`` = ``com``;
- money: a scan has none: ``currency`` CNY and every amount 0;
- PII: ``context`` may name who signed (签收人); it is never copied.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from orderpulse import names
from orderpulse.errors import DecodeError, MappingError
from orderpulse.streams.channels.common import (
    Context,
    build,
    id_string,
    items,
    loads_object,
    lookup,
    obj,
    require,
)
from orderpulse.streams.timeparse import is_not_set, parse_china_naive

CHANNEL = names.CHANNEL_KUAIDI100
CURRENCY = "CNY"  # a scan carries no money; the amounts are 0

# param.status (the record's source_topic): all carry a snapshot of the parcel.
PUSH_STATUSES = frozenset({"polling", "shutdown", "abort", "updateall"})

_PROBLEMS = ("2", "201", "202", "203", "204", "205", "206", "207", "208", "209", "210")

# State code (base and advanced sets) -> lifecycle status of the shipment.
STATE_CODES: dict[str, str] = {
    **dict.fromkeys(("101", "102"), "PACKING"),  # 已下单, 待揽收: not collected yet
    **dict.fromkeys(("1", "103"), "SHIPPED"),  # 揽收, 已揽收
    **dict.fromkeys(("0", "1001", "1002", "1003"), "IN_TRANSIT"),  # 在途 and its sub-states
    **dict.fromkeys(("5", "501"), "IN_TRANSIT"),  # 派件, 投柜或驿站 (not signed for yet)
    **dict.fromkeys(("3", "301", "302", "303", "304"), "DELIVERED"),  # 签收 and sub-states
    **dict.fromkeys(("7",), "IN_TRANSIT"),  # 转投: handed to another carrier
    **dict.fromkeys(("8", "10", "11", "12", "13"), "IN_TRANSIT"),  # 清关 and sub-states
    # Problems keep IN_TRANSIT; raw_status says which.
    **dict.fromkeys(_PROBLEMS, "IN_TRANSIT"),  # 疑难 and its sub-states
    **dict.fromkeys(("4", "401", "6", "14"), "IN_TRANSIT"),  # 退签, 已销单, 退回, 拒签
}

# State word (an entry's ``status``) -> lifecycle status: the same table by name,
# for entries without a code.
STATE_WORDS: dict[str, str] = {
    **dict.fromkeys(("已下单", "待揽收"), "PACKING"),
    **dict.fromkeys(("揽收", "已揽收"), "SHIPPED"),
    **dict.fromkeys(("在途", "到达派件城市", "干线", "转递", "派件", "投柜或驿站", "转投",
                     "清关", "待清关", "清关中", "已清关", "清关异常"), "IN_TRANSIT"),
    **dict.fromkeys(("签收", "本人签收", "派件异常后签收", "代签", "投柜或站签收"), "DELIVERED"),
    **dict.fromkeys(("疑难", "超时未签收", "超时未更新", "拒收", "派件异常", "柜或驿站超时未取",
                     "无法联系", "超区", "滞留", "破损", "销单", "退签", "已销单", "退回", "拒签"),
                    "IN_TRANSIT"),
}


def param_of(body: bytes) -> dict[str, Any]:
    """The push's ``param`` JSON object from the form body."""
    try:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise DecodeError(f"expected a UTF-8 form body, got {len(body)} bytes that are not",
                          reason="not_json") from exc
    param = form.get("param")
    if not param:
        raise MappingError("missing required form field 'param'", reason="missing_field")
    return loads_object(param.encode(), "the param JSON object")


def _code(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MappingError("state code: expected a code", reason="unmapped_status")
    return str(value).strip()


def _china_time(value: Any, field: str) -> tuple[int, str]:
    try:
        return parse_china_naive(value, field=field)
    except OverflowError as exc:  # 0001-01-01 00:00:01 China time is before year 1 UTC
        raise MappingError(f"{field}: timestamp out of range", reason="bad_timestamp") from exc


def newest(data: list[Any]) -> tuple[dict[str, Any], int, str]:
    """(entry, UTC ms, zone) of the newest history entry (greatest ftime)."""
    best: tuple[dict[str, Any], int, str] | None = None
    for item in data:
        entry = obj(item, "lastResult.data[]")
        field = "ftime" if not is_not_set(entry.get("ftime")) else "time"
        at, zone = _china_time(entry.get(field), f"lastResult.data.{field}")
        if best is None or at > best[1]:
            best = (entry, at, zone)
    if best is None:
        raise MappingError("lastResult.data has no scan", reason="missing_field")
    return best


def map_state(entry: dict[str, Any], result: dict[str, Any]) -> tuple[str, str]:
    """(status, raw state words) of a history entry; raises on unknown values."""
    code = _code(entry.get("statusCode")) or _code(result.get("state"))
    word = entry.get("status")
    word = word.strip() if isinstance(word, str) and word.strip() else None
    if code is not None:
        status = lookup(STATE_CODES, code, field="Kuaidi100 state")
    else:
        status = lookup(STATE_WORDS, word, field="Kuaidi100 status word")
    return status, f"state={code or ''};status={word or ''}"


def normalize(raw: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One Kuaidi100 push -> one ``OrderEvent`` dict for its newest scan."""
    topic = raw["source_topic"]
    if topic not in PUSH_STATUSES:
        raise MappingError(f"unsupported Kuaidi100 push status {topic[:40]!r}",
                           reason="unknown_topic")
    param = param_of(raw["body"])
    result = obj(require(param, "lastResult"), "lastResult")
    number = id_string(require(result, "nu"), "lastResult.nu")
    carrier = id_string(require(result, "com"), "lastResult.com")
    entry, at, source_tz = newest(items(require(result, "data"), "lastResult.data"))
    status, words = map_state(entry, result)
    return [build(
        raw, ctx, channel=CHANNEL, channel_order_id=number, event_type="CARRIER_SCAN",
        status=status, raw_status=f"{words};push={topic}", event_time=at,
        source_tz=source_tz, currency=CURRENCY, total_minor=0, carrier=carrier,
        tracking_no=number, discriminator=words,
    )]
