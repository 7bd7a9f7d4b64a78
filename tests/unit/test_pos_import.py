from orderpulse.connectors import pos_csv
from orderpulse.connectors.csv_import import plan

HEADER = ",".join(pos_csv.COLUMNS)
GOOD = [
    "SH-001,R1,sale,2026-11-11T20:15:03+08:00,CNY,TEE-BLK-M,2,59.00,0.00,alipay",
    "SH-001,R1,sale,2026-11-11T20:15:03+08:00,CNY,MUG-LOGO,1,29.90,5.00,alipay",
    "BJ-002,R9,return,2026-11-12T10:00:00+08:00,CNY,CAP-RED,1,39.90,,card",
]


def _file(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def test_good_receipts_become_one_record_each_with_their_original_lines() -> None:
    result = plan(_file(*GOOD), source_name="day.csv")
    assert [r.key for r in result.records] == ["SH-001:R1", "BJ-002:R9"]
    first = result.records[0]
    assert first.body.decode().splitlines() == [HEADER, GOOD[0], GOOD[1]]
    assert first.source_topic == "pos/sale" and first.content_type == "text/csv"
    assert [r.outcome for r in result.results] == ["accepted"] * 3
    assert [r.line for r in result.results] == [2, 3, 4]


def test_a_bad_row_rejects_its_whole_receipt_with_reasons() -> None:
    bad = "SH-001,R1,sale,2026-11-11 20:15:03,CNY,CAP-RED,1,39.90,0.00,alipay"
    result = plan(_file(GOOD[0], bad, GOOD[2]), source_name="day.csv")
    assert [r.key for r in result.records] == ["BJ-002:R9"]
    by_line = {r.line: r for r in result.results}
    assert by_line[3].outcome == "rejected" and "offset" in by_line[3].reason
    assert by_line[2].outcome == "rejected" and "another row" in by_line[2].reason
    assert by_line[4].outcome == "accepted"
    assert len(result.rejected) == 1


def test_import_ids_are_stable_so_reimport_deduplicates() -> None:
    a = plan(_file(*GOOD), source_name="a.csv")
    b = plan(_file(*GOOD), source_name="b.csv")
    assert [r.source_event_id for r in a.records] == [r.source_event_id for r in b.records]


def test_row_checks() -> None:
    values = dict(zip(pos_csv.COLUMNS, GOOD[0].split(","), strict=True))
    assert pos_csv.check_row(values) is None
    assert "quantity" in (pos_csv.check_row({**values, "quantity": "0"}) or "")
    assert "unit_price" in (pos_csv.check_row({**values, "unit_price": "1,5"}) or "")
    assert "event" in (pos_csv.check_row({**values, "event": "gift"}) or "")
    assert "currency" in (pos_csv.check_row({**values, "currency": "RMB1"}) or "")
