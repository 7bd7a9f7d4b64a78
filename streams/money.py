"""Exact money: channel amounts (strings, numbers, fen integers) to integer minor units.

Never float. A value with more decimals than the currency has is bad input,
not something to round silently.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from orderpulse.errors import MappingError

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
    scaled = value.scaleb(exponent(currency))
    if not value.is_finite() or scaled != scaled.to_integral_value():
        raise MappingError(f"{field}: {amount!s} has more decimals than {currency} allows",
                           reason="bad_amount")
    return int(scaled)
