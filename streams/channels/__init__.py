"""Per-channel normalizers: a channel's native payload to ``OrderEvent`` dicts.

Each channel module exposes ``normalize(raw, ctx) -> list[dict]`` where ``raw``
is a decoded ``RawEvent`` and ``ctx`` a ``common.Context``. It returns
``OrderEvent`` dicts built with ``common.build`` and raises ``InputError``
subclasses for bad input and nothing else. Status tables are module-level data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orderpulse import names
from orderpulse.errors import MappingError
from orderpulse.streams.channels import (
    douyin,
    jd,
    kuaidi100,
    ownsite,
    pinduoduo,
    pos,
    shopify,
    taobao,
    usps,
    woocommerce,
    youzan,
)

Normalizer = Callable[..., list[dict[str, Any]]]

NORMALIZERS: dict[str, Normalizer] = {
    names.CHANNEL_SHOPIFY: shopify.normalize,
    names.CHANNEL_WOOCOMMERCE: woocommerce.normalize,
    names.CHANNEL_TAOBAO: taobao.normalize,
    names.CHANNEL_JD: jd.normalize,
    names.CHANNEL_PINDUODUO: pinduoduo.normalize,
    names.CHANNEL_DOUYIN: douyin.normalize,
    names.CHANNEL_YOUZAN: youzan.normalize,
    names.CHANNEL_OWNSITE: ownsite.normalize,
    names.CHANNEL_POS: pos.normalize,
    names.CHANNEL_USPS: usps.normalize,
    names.CHANNEL_KUAIDI100: kuaidi100.normalize,
}


def normalizer_for(channel: str) -> Normalizer:
    try:
        return NORMALIZERS[channel]
    except KeyError:
        raise MappingError(f"no normalizer for channel {channel[:40]!r}",
                           reason="unknown_channel") from None
