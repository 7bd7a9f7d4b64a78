"""The channel sandbox: plays each channel over its real protocol on loopback.

``WEBHOOK_SIMS`` and ``POLL_SIMS`` list each channel's simulator by name,
like ``connectors.channels`` lists the connectors they talk to.
"""

from __future__ import annotations

from orderpulse.connectors.sandbox import (
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
from orderpulse.connectors.sandbox.base import PollChannelSim, WebhookChannelSim

WEBHOOK_SIMS: dict[str, type[WebhookChannelSim]] = {
    shopify.CHANNEL: shopify.ShopifyWebhookSim,
    woocommerce.CHANNEL: woocommerce.WooCommerceWebhookSim,
    douyin.CHANNEL: douyin.DouyinWebhookSim,
    youzan.CHANNEL: youzan.YouzanWebhookSim,
    ownsite.CHANNEL: ownsite.OwnsiteWebhookSim,
    kuaidi100.CHANNEL: kuaidi100.Kuaidi100WebhookSim,
}

POLL_SIMS: dict[str, type[PollChannelSim]] = {
    taobao.CHANNEL: taobao.TaobaoPollSim,
    jd.CHANNEL: jd.JdPollSim,
    pinduoduo.CHANNEL: pinduoduo.PinduoduoPollSim,
    usps.CHANNEL: usps.UspsPollSim,
}
