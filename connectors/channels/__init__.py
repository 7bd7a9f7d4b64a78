"""The channel sources, by channel name. A channel appears here once per delivery
mode it supports; ``connectors.base`` says what each kind must provide."""

from __future__ import annotations

from collections.abc import Mapping

from orderpulse.connectors.base import PollSource, WebhookSource
from orderpulse.connectors.channels import shopify

WEBHOOK_SOURCES: dict[str, type[WebhookSource]] = {
    shopify.CHANNEL: shopify.ShopifyWebhook,
}

POLL_SOURCES: dict[str, type[PollSource]] = {
    shopify.CHANNEL: shopify.ShopifyPoll,
}


def webhook_sources(channels: Mapping[str, Mapping[str, str]]) -> dict[str, WebhookSource]:
    """The webhook sources of every configured channel that pushes."""
    return {name: cls(channels[name]) for name, cls in WEBHOOK_SOURCES.items() if name in channels}


def poll_sources(channels: Mapping[str, Mapping[str, str]]) -> list[PollSource]:
    """The poll sources of configured channels: always for pull-only channels; for
    channels that also push (Shopify), only when asked (``"poll": "true"``)."""
    return [cls(channels[name]) for name, cls in POLL_SOURCES.items()
            if name in channels and (name not in WEBHOOK_SOURCES
                                     or channels[name].get("poll", "") in ("1", "true", "yes"))]
