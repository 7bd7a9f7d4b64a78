from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderpulse.errors import MappingError
from orderpulse.streams.money import exponent, to_minor
from orderpulse.streams.timeparse import parse_iso_with_offset


@pytest.mark.parametrize(("amount", "currency", "expected"), [
    ("199.00", "USD", 19900),
    ("0.1", "usd", 10),
    (199, "USD", 19900),
    ("1500", "JPY", 1500),
    ("1.234", "KWD", 1234),
    (Decimal("12.5"), "CNY", 1250),
    (None, "USD", 0),
    ("", "USD", 0),
])
def test_to_minor_is_exact(amount: object, currency: str, expected: int) -> None:
    assert to_minor(amount, currency, field="f") == expected


@pytest.mark.parametrize(("amount", "currency"), [
    ("1.005", "USD"), ("1.5", "JPY"), ("abc", "USD"), ("NaN", "USD"), (1.5, "USD"), (True, "USD"),
])
def test_to_minor_refuses_inexact_or_float(amount: object, currency: str) -> None:
    with pytest.raises(MappingError) as info:
        to_minor(amount, currency, field="total_price")
    assert info.value.reason == "bad_amount"


def test_bad_currency_code() -> None:
    with pytest.raises(MappingError) as info:
        exponent("US")
    assert info.value.reason == "bad_currency"


@given(st.integers(min_value=0, max_value=10**15))
def test_minor_units_round_trip_through_decimal_strings(cents: int) -> None:
    text = f"{Decimal(cents).scaleb(-2):.2f}"
    assert to_minor(text, "USD", field="f") == cents


def test_iso_offset_to_utc_ms_keeps_zone() -> None:
    ms, tz = parse_iso_with_offset("2026-11-11T10:00:00.123-05:00", field="t")
    assert ms == 1_794_409_200_123  # 2026-11-11T15:00:00.123Z
    assert tz == "-05:00"


def test_iso_utc_z() -> None:
    ms, tz = parse_iso_with_offset("2026-11-11T15:00:00Z", field="t")
    assert (ms, tz) == (1_794_409_200_000, "+00:00")


@pytest.mark.parametrize("value", ["2026-11-11 10:00:00", "not a time", "", None, 1234])
def test_naive_or_garbage_time_is_refused(value: object) -> None:
    with pytest.raises(MappingError) as info:
        parse_iso_with_offset(value, field="updated_at")
    assert info.value.reason == "bad_timestamp"


@pytest.mark.parametrize("amount", ["sNaN", "1E+999999", "1e-5000000000", "1e30", "-Infinity"])
def test_pathological_amounts_are_bad_input(amount: str) -> None:
    with pytest.raises(MappingError) as info:
        to_minor(amount, "USD", field="total")
    assert info.value.reason == "bad_amount"
