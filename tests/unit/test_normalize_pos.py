"""POS normalizer: receipts in the CSV format of ``connectors/pos_csv.py``, published
the way ``connectors/csv_import.py`` plans them (one record per receipt), field by
field; traps; the sandbox's store receipts; mutated receipts (hypothesis)."""

import csv
import io
import random
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orderpulse.avro import codec
from orderpulse.connectors import pos_csv
from orderpulse.connectors.base import RawRecord, raw_event
from orderpulse.connectors.csv_import import plan
from orderpulse.connectors.sandbox import lifecycle
from orderpulse.connectors.sandbox.pos import rows_for
from orderpulse.errors import DecodeError, InputError, MappingError
from orderpulse.streams.channels import pos
from orderpulse.streams.channels.common import Context

NOW = 1_794_409_700_000
CTX = Context(NOW, b"test-pii-key")
HEADER = ",".join(pos_csv.COLUMNS)
SALE = [
    "SH-001,R1,sale,2026-11-11T20:15:03+08:00,CNY,TEE-BLK-M,2,59.00,0.00,alipay",
    "SH-001,R1,sale,2026-11-11T20:15:03+08:00,CNY,MUG-LOGO,1,29.90,5.00,alipay",
]
RETURN = ["SH-001,R1,return,2026-11-12T10:00:00+08:00,CNY,MUG-LOGO,1,29.90,5.00,alipay"]


def _file(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def _raw(record: RawRecord, **extra: Any) -> dict[str, Any]:
    return {**raw_event("pos", "BATCH", record, received_at=1_794_409_600_000,
                        request_id=f"import:day.csv:{record.source_event_id}"), **extra}


def _records(*lines: str) -> list[RawRecord]:
    return plan(_file(*lines), source_name="day.csv").records


def _one(*lines: str, topic: str = "pos/sale") -> dict[str, Any]:
    [event] = pos.normalize(_raw(RawRecord("k", topic, _file(*lines))), CTX)
    return event


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def _roundtrip(event: dict[str, Any]) -> dict[str, Any]:
    out = codec("OrderEvent")
    return out.decode(out.encode(event))


def test_store_sale_field_by_field() -> None:
    [sale, _ret] = _records(*SALE, *RETURN)
    raw = _raw(sale)
    [event] = pos.normalize(raw, CTX)
    assert event["order_id"] == "pos:SH-001:R1"
    assert event["channel_order_id"] == "SH-001:R1"
    assert (event["channel"], event["shop_id"]) == ("pos", "SH-001")
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("COMPLETED", "COMPLETED", "NONE")
    assert event["raw_status"] == "sale;payment=alipay"
    # 20:15:03+08:00 -> 12:15:03Z
    assert (event["event_time"], event["source_tz"]) == (_ms(2026, 11, 11, 12, 15, 3), "+08:00")
    assert event["currency"] == "CNY"
    # 2 x 59.00 + 1 x 29.90 - 5.00 = 142.90
    assert (event["total_minor"], event["paid_minor"], event["discount_minor"],
            event["shipping_minor"], event["tax_minor"], event["refunded_minor"]) == \
        (14290, 14290, 500, 0, 0, 0)
    assert event["lines"] == [
        {"line_id": "TEE-BLK-M", "sku": "TEE-BLK-M", "quantity": 2, "unit_price_minor": 5900,
         "components": [], "refund_status": None},
        {"line_id": "MUG-LOGO", "sku": "MUG-LOGO", "quantity": 1, "unit_price_minor": 2990,
         "components": [], "refund_status": None},
    ]
    assert (event["buyer"], event["receiver"], event["buyer_ref"], event["refund"]) == \
        (None, None, None, None)
    assert (event["trace_id"], event["source_event_id"]) == \
        (raw["request_id"], sale.source_event_id)
    assert event["flags"] == []
    decoded = _roundtrip(event)
    assert decoded["event_time"] == datetime(2026, 11, 11, 12, 15, 3, tzinfo=UTC)


def test_store_return_refunds_its_lines_on_the_same_order() -> None:
    [sale, ret] = _records(*SALE, *RETURN)
    [event] = pos.normalize(_raw(ret), CTX)
    assert event["order_id"] == pos.normalize(_raw(sale), CTX)[0]["order_id"]
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        ("RETURN_RECEIVED", "COMPLETED", "PARTIAL")
    assert (event["total_minor"], event["paid_minor"], event["refunded_minor"],
            event["discount_minor"]) == (2490, 0, 2490, 500)
    assert event["refund"] == {
        "kind": "RETURN_AND_REFUND", "status": "REFUNDED", "amount_minor": 2490,
        "refund_id": "SH-001:R1:return",
        "lines": [{"line_id": "MUG-LOGO", "quantity": 1, "amount_minor": 2490}]}
    assert event["lines"][0]["refund_status"] == "return"
    assert event["event_time"] == _ms(2026, 11, 12, 2)
    _roundtrip(event)


def test_store_offset_is_kept_and_latest_row_time_wins() -> None:
    event = _one("NY-9,7,sale,2026-11-11T09:00:00-05:00,USD,CAP,1,10.00,,card",
                 "NY-9,7,sale,2026-11-11T09:00:02-05:00,USD,CAP,1,10.00,,card")
    assert (event["event_time"], event["source_tz"]) == (_ms(2026, 11, 11, 14, 0, 2), "-05:00")
    assert (event["total_minor"], event["discount_minor"]) == (2000, 0)  # empty discount = 0


def test_same_sku_twice_gets_distinct_line_ids_and_quoted_cells_parse() -> None:
    event = _one('SH-001,R2,sale,2026-11-11T20:15:03+08:00,CNY,"GIFT, SET",1,99.00,0.00,card',
                 'SH-001,R2,sale,2026-11-11T20:15:03+08:00,CNY,"GIFT, SET",2,99.00,0.00,card')
    assert [(ln["line_id"], ln["sku"], ln["quantity"]) for ln in event["lines"]] == \
        [("GIFT, SET", "GIFT, SET", 1), ("GIFT, SET#2", "GIFT, SET", 2)]
    assert event["total_minor"] == 29700


def test_money_follows_the_currency_exponent() -> None:
    event = _one("TK-1,9,sale,2026-11-11T20:15:03+09:00,JPY,TEA,3,1500,100,cash")
    assert (event["total_minor"], event["lines"][0]["unit_price_minor"]) == (4400, 1500)


def test_several_payments_are_kept_for_audit() -> None:
    event = _one(SALE[0], SALE[1].replace("alipay", "card"))
    assert event["raw_status"] == "sale;payment=alipay,card"


@pytest.mark.parametrize(("topic", "expected"), list(pos.TOPICS.items()))
def test_every_topic_maps(topic: str, expected: tuple[str, str, str, str]) -> None:
    word, event_type, status, refund = expected
    event = _one(SALE[0].replace(",sale,", f",{word},"), topic=topic)
    assert (event["event_type"], event["status"], event["refund_status"]) == \
        (event_type, status, refund)
    assert pos.ROW_EVENTS[word] == topic


@pytest.mark.parametrize(("lines", "topic", "error", "reason"), [
    ([SALE[0].replace(",sale,", ",gift,")], "pos/sale", MappingError, "unmapped_status"),
    ([RETURN[0]], "pos/sale", MappingError, "bad_shape"),  # rows disagree with the topic
    ([SALE[0], SALE[1].replace("SH-001,R1", "SH-001,R2")], "pos/sale", MappingError,
     "bad_shape"),
    ([SALE[0], SALE[1].replace("CNY", "USD")], "pos/sale", MappingError, "bad_currency"),
    ([SALE[0].replace("CNY", "RMB1")], "pos/sale", MappingError, "bad_currency"),
    ([SALE[0].replace(",2,59.00", ",0,59.00")], "pos/sale", MappingError, "bad_line"),
    ([SALE[0].replace(",2,59.00", ",1.5,59.00")], "pos/sale", MappingError, "bad_line"),
    ([SALE[0].replace("59.00", "59.001")], "pos/sale", MappingError, "bad_amount"),
    ([SALE[0].replace("59.00", '"59,00"')], "pos/sale", MappingError, "bad_amount"),
    ([SALE[0].replace("59.00", "9" * 30)], "pos/sale", MappingError, "bad_amount"),
    ([SALE[0].replace(",59.00,", ",,")], "pos/sale", MappingError, "missing_field"),
    ([SALE[0].replace("2026-11-11T20:15:03+08:00", "2026-11-11 20:15:03")], "pos/sale",
     MappingError, "bad_timestamp"),
    ([SALE[0].replace("2026-11-11T20:15:03+08:00", "9999-12-31T23:59:59-23:59")],
     "pos/sale", MappingError, "bad_timestamp"),  # after year 9999 in UTC: unreadable
    ([SALE[0].replace("59.00", "1E+999999")], "pos/sale", MappingError, "bad_amount"),
    ([SALE[0].replace("59.00", "sNaN")], "pos/sale", MappingError, "bad_amount"),
    ([SALE[0] + ",extra"], "pos/sale", MappingError, "bad_shape"),
    ([], "pos/sale", MappingError, "missing_field"),
])
def test_bad_receipts_raise_reasoned_errors(lines: list[str], topic: str, error: type,
                                            reason: str) -> None:
    with pytest.raises(error) as info:
        _one(*lines, topic=topic)
    assert info.value.reason == reason


@pytest.mark.parametrize("body", [b"\xff\xfe", b"store,receipt\nSH-001,R1\n", b"",
                                  b'"unterminated\n'])
def test_not_pos_csv(body: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        pos.normalize(_raw(RawRecord("k", "pos/sale", body)), CTX)
    assert info.value.reason == "not_csv"


def test_unknown_topic() -> None:
    with pytest.raises(MappingError) as info:
        _one(*SALE, topic="pos/void")
    assert info.value.reason == "unknown_topic"


def test_reimport_gives_the_same_event_id() -> None:
    [a] = _records(*SALE)
    [b] = plan(_file(*SALE), source_name="again.csv").records
    assert pos.normalize(_raw(a), CTX)[0]["event_id"] == \
        pos.normalize(_raw(b, request_id="other"), CTX)[0]["event_id"]


def _walk(steps: int = 1500) -> list[tuple[lifecycle.SimOrder, str]]:
    ticks = (datetime(2026, 11, 11, 12, 0, tzinfo=UTC) + timedelta(minutes=i)
             for i in range(10**6))
    sim = lifecycle.Simulator(seed=7, concurrent=30, clock=lambda: next(ticks))
    return list(islice(sim, steps))


def test_sandbox_store_receipts_normalize() -> None:
    raw_codec, seen = codec("RawEvent"), set()
    for order, event in _walk():
        rows = rows_for(order, event)
        if not rows:
            continue
        [record] = plan(pos_csv.render(rows).encode(), source_name="pos-0001.csv").records
        raw = raw_codec.decode(raw_codec.encode(_raw(record)))  # as the pipeline sees it
        [normalized] = pos.normalize(raw, CTX)
        _roundtrip(normalized)
        store = rows[0]["store_id"]
        assert normalized["order_id"] == f"pos:{store}:{store}-{order.number:08d}"
        assert normalized["source_tz"] == "+08:00"
        if event == "paid":
            assert normalized["event_type"] == "COMPLETED"
            assert normalized["total_minor"] == int(order.subtotal * 100)
            assert len(normalized["lines"]) == len(order.lines)
        else:
            assert normalized["event_type"] == "RETURN_RECEIVED"
            assert normalized["refunded_minor"] == int(order.refund_amount * 100)
            assert normalized["refund"]["lines"][0]["amount_minor"] == \
                int(order.refund_amount * 100)
        seen.add(normalized["event_type"])
    assert seen == {"COMPLETED", "RETURN_RECEIVED"}


# --- mutated real samples --------------------------------------------------------

_cell = (st.text(max_size=12)
         | st.integers(min_value=-(2**70), max_value=2**70).map(str)
         | st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str)
         | st.sampled_from(["", "sale", "return", "CNY", "JPY", "0", "1e999999", "sNaN",
                            "2026-11-11T20:15:03+08:00", "9999-12-31T23:59:59-23:59"]))
_ROWS = [dict(zip(pos_csv.COLUMNS, next(csv.reader([line])), strict=True))
         for line in SALE]


def _render(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(pos_csv.COLUMNS)
    writer.writerows([row[c] for c in pos_csv.COLUMNS] for row in rows)
    return out.getvalue().encode()


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(0, 1), st.sampled_from(pos_csv.COLUMNS)), _cell,
                       max_size=6),
       st.sampled_from(list(pos.ROW_EVENTS)), st.integers(0, 400), st.randoms())
def test_mutated_receipts_normalize_or_raise_input_errors(
        mutation: dict[tuple[int, str], str], word: str, cut: int, rnd: random.Random) -> None:
    rows = [{**row, "event": word} for row in _ROWS]
    topic = pos.ROW_EVENTS[word]
    for (index, column), value in mutation.items():
        rows[index][column] = value
    body = _render(rows)
    if rnd.random() < 0.2:  # a broken file as well: cut anywhere
        body = body[:cut]
    try:
        events = pos.normalize(_raw(RawRecord("k", topic, body)), CTX)
    except InputError:
        return
    for event in events:
        assert orjson.dumps(event) and _roundtrip(event)["order_id"].startswith("pos:")
