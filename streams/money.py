"""Exact money: channel amounts (strings, numbers, fen integers) to integer minor units.

Never float. A value with more decimals than the currency has is bad input,
not something to round silently.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from orderpulse.errors import MappingError

# Amounts beyond 10^17 minor units (10^15 in major units) are not orders;
# the bound also keeps every value inside Avro's long.
_MAX_MINOR = 10**17
_MAX_DIGITS = 18

# ISO 4217 minor-unit exponents that differ from 2 (the default).
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
         "VND", "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}


def exponent(currency: str) -> int:
    """Minor-unit exponent of an ISO 4217 currency code."""
    code = currency.upper()
    if len(code) != 3 or not code.isalpha():
        raise MappingError(f"expected an ISO 4217 currency code, got {currency!r}",
                           reason="bad_currency")
    return _EXPONENTS.get(code, 2)


def to_minor(amount: object, currency: str, *, field: str) -> int:
    """Convert a major-unit amount (``"199.00"``, ``199``, ``"0.5"``) to minor units."""
    if amount is None or amount == "":
        return 0
    if isinstance(amount, bool) or not isinstance(amount, (str, int, Decimal)):
        # floats are refused on purpose: the JSON decoder is told to parse
        # numbers as Decimal, so a float here means a caller bypassed it.
        raise MappingError(f"{field}: expected a decimal string or integer, got "
                           f"{type(amount).__name__}", reason="bad_amount")
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as exc:
        raise MappingError(f"{field}: expected a decimal amount, got {str(amount)[:40]!r}",
                           reason="bad_amount") from exc
    # Finite and of a plausible size before any arithmetic: "sNaN", "1E+999999" or
    # "1e-5000000000" must be bad input, not a Decimal trap or a silent zero.
    if not value.is_finite() or not -_MAX_DIGITS <= value.adjusted() <= _MAX_DIGITS:
        raise MappingError(f"{field}: {str(amount)[:40]!r} is not a usable amount",
                           reason="bad_amount")
    scaled = value.scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise MappingError(f"{field}: {str(amount)[:40]} has more decimals than {currency} "
                           f"allows", reason="bad_amount")
    if abs(scaled) > _MAX_MINOR:
        raise MappingError(f"{field}: {str(amount)[:40]} is out of range", reason="bad_amount")
    return int(scaled)
