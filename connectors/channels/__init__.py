"""The channel sources, by channel name. A channel appears here once per delivery
mode it supports; ``connectors.base`` says what each kind must provide."""

from __future__ import annotations

from collections.abc import Mapping

from orderpulse.connectors.base import PollSource, WebhookSource
from orderpulse.connectors.channels import (
    douyin,
    jd,
    kuaidi100,
    ownsite,
    pinduoduo,
    shopify,
    taobao,
    usps,
    woocommerce,
    youzan,
)

WEBHOOK_SOURCES: dict[str, type[WebhookSource]] = {
    shopify.CHANNEL: shopify.ShopifyWebhook,
    woocommerce.CHANNEL: woocommerce.WooCommerceWebhook,
    douyin.CHANNEL: douyin.DouyinWebhook,
    youzan.CHANNEL: youzan.YouzanWebhook,
    ownsite.CHANNEL: ownsite.OwnsiteWebhook,
    kuaidi100.CHANNEL: kuaidi100.Kuaidi100Webhook,
}

POLL_SOURCES: dict[str, type[PollSource]] = {
    taobao.CHANNEL: taobao.TaobaoPoll,
    jd.CHANNEL: jd.JdPoll,
    pinduoduo.CHANNEL: pinduoduo.PinduoduoPoll,
    youzan.CHANNEL: youzan.YouzanPoll,
    shopify.CHANNEL: shopify.ShopifyPoll,
    woocommerce.CHANNEL: woocommerce.WooCommercePoll,
    usps.CHANNEL: usps.UspsPoll,
}


def webhook_sources(channels: Mapping[str, Mapping[str, str]]) -> dict[str, WebhookSource]:
    """The webhook sources of every configured channel that pushes."""
    return {name: cls(channels[name]) for name, cls in WEBHOOK_SOURCES.items() if name in channels}


def poll_sources(channels: Mapping[str, Mapping[str, str]]) -> list[PollSource]:
    """The poll sources of configured channels: always for pull-only channels; for
    channels that also push (Shopify, WooCommerce, Youzan), only when asked
    (``"poll": "true"``), as a fallback."""
    return [cls(channels[name]) for name, cls in POLL_SOURCES.items()
            if name in channels and (name not in WEBHOOK_SOURCES
                                     or channels[name].get("poll", "") in ("1", "true", "yes"))]
