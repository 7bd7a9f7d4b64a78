"""How ``orderpulse run`` configures each channel for the sandbox: which credential
keys get fresh random values, and where each pull channel's API is served."""

from __future__ import annotations

from orderpulse import names

#: Every credential key any channel's source reads; each gets a random value per run.
CREDENTIAL_KEYS = ("webhook_secret", "access_token", "app_key", "app_secret", "session",
                   "client_id", "client_secret", "consumer_key", "consumer_secret", "salt")

#: Non-secret settings per channel. The sandbox account quotas for USPS are above
#: USPS's default 60 requests/hour, as a merchant with this volume would negotiate.
SANDBOX_ENDPOINTS: dict[str, dict[str, str]] = {
    names.CHANNEL_SHOPIFY: {"shop_domain": "orderpulse-demo.myshopify.com"},
    names.CHANNEL_TAOBAO: {"shop_id": "tb-demo-shop"},
    names.CHANNEL_JD: {"shop_id": "10086"},
    # Pinduoduo asks clients to stay 3 minutes behind its clock; the sandbox's clock
    # is exact, so its pollers may follow closely.
    names.CHANNEL_PINDUODUO: {"shop_id": "pdd-demo-mall", "settle_s": "5"},
    names.CHANNEL_DOUYIN: {"shop_id": "4463798"},
    names.CHANNEL_YOUZAN: {"kdt_id": "55555"},
    names.CHANNEL_WOOCOMMERCE: {"site_url": "https://shop.example.com"},
    names.CHANNEL_USPS: {"sandbox_listing": "true", "rate_per_s": "50", "burst": "100",
                         "settle_s": "5", "overlap_s": "600"},
}

#: base_url = http://127.0.0.1:<port>/<channel> + this path.
SANDBOX_PATHS: dict[str, str] = {
    names.CHANNEL_SHOPIFY: "/admin/api/2025-10",
    names.CHANNEL_TAOBAO: "/router/rest",
    names.CHANNEL_JD: "/routerjson",
    names.CHANNEL_PINDUODUO: "/api/router",
}
