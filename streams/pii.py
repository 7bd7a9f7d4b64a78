"""PII protection for normalized events: masks that keep a few characters for
people, keyed hashes for joins, and channel ciphertext passed through opaque.

Nothing here logs; the outputs are what may leave the normalizer.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_DIGITS = re.compile(r"\D+")
# Channel ciphertext markers (Pinduoduo ~...~, JD $...$ / ~...~): never unmasked.
_CIPHER = re.compile(r"^[~$].*[~$]\d*[~$]?$")


def is_ciphertext(value: str) -> bool:
    return bool(_CIPHER.match(value.strip()))


def digits(phone: str) -> str:
    return _DIGITS.sub("", phone)


def mask_phone(phone: str | None) -> str | None:
    """Keep the first 3 and last 4 digits: ``138****5678``."""
    if not phone or is_ciphertext(phone):
        return None
    d = digits(phone)
    if len(d) < 8:
        return "*" * len(d) if d else None
    return f"{d[:3]}{'*' * (len(d) - 7)}{d[-4:]}"


def phone_hash(key: bytes, phone: str | None) -> str | None:
    """HMAC-SHA256 of the phone's last 11 digits (country prefixes vary by channel)."""
    if not phone or is_ciphertext(phone):
        return None
    d = digits(phone)
    return hmac.new(key, d[-11:].encode(), hashlib.sha256).hexdigest() if d else None


def mask_name(name: str | None) -> str | None:
    """Keep the first character: ``王**`` / ``J***``."""
    if not name or is_ciphertext(name):
        return None
    name = name.strip()
    return name[0] + "*" * max(len(name) - 1, 1) if name else None


def mask_address(address: str | None) -> str | None:
    """Keep the first 6 characters (province/city level), mask the rest."""
    if not address or is_ciphertext(address):
        return None
    address = address.strip()
    return address[:6] + "*" * min(max(len(address) - 6, 0), 12)


def keyed_ref(key: bytes, *parts: str) -> str:
    """A keyed, stable reference for joins (buyer ids, emails): never reversible."""
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()[:32]


def party(key: bytes, *, name: str | None = None, phone: str | None = None,
          address: str | None = None, province: str | None = None, city: str | None = None,
          ciphertext: str | None = None) -> dict[str, str | None]:
    """An Avro ``Party`` from clear or encrypted channel fields."""
    cipher = ciphertext or next((v for v in (name, phone, address) if v and is_ciphertext(v)),
                                None)
    return {"name_masked": mask_name(name), "phone_masked": mask_phone(phone),
            "phone_hash": phone_hash(key, phone), "address_masked": mask_address(address),
            "province": province or None, "city": city or None, "ciphertext": cipher}
