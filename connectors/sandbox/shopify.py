"""Shopify, played locally: realistic order lifecycles as signed ``orders/*`` webhooks.

Bodies follow the REST Admin API Order resource; deliveries carry Shopify's
headers and HMAC, and are retried on non-2xx answers the way Shopify does
(same webhook id, same body). Faults are injected at configured rates.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import aiohttp
import orjson

from orderpulse.connectors.channels.shopify import sign

SHOP = "orderpulse-demo.myshopify.com"
SHOP_TZ = timezone(timedelta(hours=-5))
# 19-digit ids: beyond a double's 53-bit mantissa, as real channel ids can be.
ID_BASE = 7_100_000_000_000_000_000
SKUS = [("TEE-BLK-M", Decimal("19.90")), ("TEE-WHT-L", Decimal("19.90")),
        ("HOODIE-GRY-M", Decimal("49.00")), ("CAP-RED", Decimal("12.50")),
        ("MUG-LOGO", Decimal("9.99")), ("SOCKS-3PK", Decimal("14.00"))]


@dataclass(frozen=True)
class Faults:
    duplicate: float = 0.02    # a delivery re-sent as a retry (same webhook id and body)
    not_json: float = 0.003
    missing_id: float = 0.003
    unknown_status: float = 0.003
    bad_signature: float = 0.003
    cancel: float = 0.1        # orders cancelled before payment


@dataclass(frozen=True)
class Delivery:
    topic: str
    body: bytes
    webhook_id: str
    kind: str = "valid"        # valid | duplicate | not_json | missing_id | unknown_status
    bad_signature: bool = False


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ts(at: datetime) -> str:
    return at.astimezone(SHOP_TZ).isoformat(timespec="seconds")


@dataclass
class Order:
    """One order's state, from which each webhook body is rendered."""

    number: int
    created: datetime
    lines: list[tuple[int, str, int, Decimal]]
    updated: datetime = field(init=False)
    financial: str = "pending"
    fulfillment: str | None = None
    cancelled_at: datetime | None = None

    def __post_init__(self) -> None:
        self.updated = self.created

    @property
    def id(self) -> int:
        return ID_BASE + self.number

    def body(self) -> dict[str, object]:
        subtotal = sum((price * qty for _, _, qty, price in self.lines), Decimal(0))
        shipping = Decimal("5.00")
        total = subtotal + shipping
        paid = self.financial in ("paid", "partially_refunded", "refunded")
        return {
            "id": self.id,
            "admin_graphql_api_id": f"gid://shopify/Order/{self.id}",
            "name": f"#{1000 + self.number}",
            "order_number": 1000 + self.number,
            "email": f"buyer{self.number}@example.com",
            "phone": f"+1415555{self.number % 10000:04d}",
            "created_at": _ts(self.created),
            "updated_at": _ts(self.updated),
            "processed_at": _ts(self.created),
            "cancelled_at": _ts(self.cancelled_at) if self.cancelled_at else None,
            "cancel_reason": "customer" if self.cancelled_at else None,
            "closed_at": None,
            "currency": "USD",
            "presentment_currency": "USD",
            "financial_status": self.financial,
            "fulfillment_status": self.fulfillment,
            "subtotal_price": _money(subtotal),
            "total_price": _money(total),
            "total_tax": "0.00",
            "total_discounts": "0.00",
            "total_outstanding": "0.00" if paid else _money(total),
            "total_shipping_price_set": {
                "shop_money": {"amount": _money(shipping), "currency_code": "USD"},
                "presentment_money": {"amount": _money(shipping), "currency_code": "USD"},
            },
            "line_items": [
                {"id": ID_BASE + self.number * 10 + i, "variant_id": 4_000_000 + i,
                 "product_id": 3_000_000 + i, "sku": sku, "title": sku.title(),
                 "quantity": qty, "price": _money(price), "grams": 200}
                for i, (_, sku, qty, price) in enumerate(self.lines)
            ],
            "customer": {"id": 6_000_000 + self.number, "email": f"buyer{self.number}@example.com",
                         "first_name": "Ada", "last_name": f"Buyer{self.number}",
                         "phone": f"+1415555{self.number % 10000:04d}"},
            "shipping_address": {"first_name": "Ada", "last_name": f"Buyer{self.number}",
                                 "address1": f"{self.number} Market St", "city": "San Francisco",
                                 "province_code": "CA", "country_code": "US", "zip": "94103"},
            "refunds": [],
        }


def lifecycle(order: Order, rng: random.Random, faults: Faults) -> Iterator[tuple[str, Order]]:
    """The order's webhooks in the order Shopify sends them."""
    yield "orders/create", order
    if rng.random() < faults.cancel:
        order.financial, order.cancelled_at = "voided", order.updated
        yield "orders/cancelled", order
        return
    order.financial = "paid"
    yield "orders/paid", order
    order.fulfillment = "fulfilled"
    yield "orders/fulfilled", order


def _corrupt(body: dict[str, object], rng: random.Random, faults: Faults) -> tuple[bytes, str]:
    roll = rng.random()
    if roll < faults.not_json:
        return b'{"id": ' + str(body["id"]).encode() + b', "total_price": "1', "not_json"
    roll -= faults.not_json
    if roll < faults.missing_id:
        return orjson.dumps({k: v for k, v in body.items() if k != "id"}), "missing_id"
    roll -= faults.missing_id
    if roll < faults.unknown_status:
        return orjson.dumps({**body, "financial_status": "on_hold_for_review"}), "unknown_status"
    return orjson.dumps(body), "valid"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def deliveries(seed: int, faults: Faults, *, clock: Callable[[], datetime] = _utcnow,
               concurrent_orders: int = 50) -> Iterator[Delivery]:
    """An endless stream of deliveries across interleaved orders.

    Reproducible for a seed and a clock. Each event happens when it is sent
    (the sandbox compresses an order's hours into seconds).
    """
    rng = random.Random(seed)
    active: list[Iterator[tuple[str, Order]]] = []
    number = 0
    while True:
        while len(active) < concurrent_orders:
            number += 1
            lines = [(0, sku, rng.randint(1, 3), price)
                     for sku, price in rng.sample(SKUS, rng.randint(1, 3))]
            active.append(lifecycle(Order(number, clock(), lines), rng, faults))
        pick = rng.randrange(len(active))
        step = next(active[pick], None)
        if step is None:
            active.pop(pick)
            continue
        topic, order = step
        # Whole milliseconds, as Shopify renders whole seconds: keeps times exact.
        order.updated = max(order.updated, clock().replace(microsecond=0))
        if order.cancelled_at is not None:
            order.cancelled_at = order.updated
        body, kind = _corrupt(order.body(), rng, faults)
        delivery = Delivery(topic, body, str(uuid.UUID(int=rng.getrandbits(128))), kind,
                            bad_signature=rng.random() < faults.bad_signature)
        yield delivery
        if kind == "valid" and not delivery.bad_signature and rng.random() < faults.duplicate:
            yield Delivery(topic, body, delivery.webhook_id, "duplicate")


def headers(delivery: Delivery, secret: bytes) -> dict[str, str]:
    signature = sign(secret, delivery.body)
    if delivery.bad_signature:
        signature = sign(b"not-the-secret", delivery.body)
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": delivery.topic,
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Webhook-Id": delivery.webhook_id,
        "X-Shopify-API-Version": "2025-10",
        "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
    }


@dataclass
class SendStats:
    sent: int = 0
    acknowledged: int = 0
    rejected: int = 0
    retried: int = 0
    failed: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


async def post(session: aiohttp.ClientSession, url: str, delivery: Delivery, secret: bytes,
               stats: SendStats, attempts: int = 6) -> int:
    """Deliver like Shopify: retry on 5xx and timeouts with backoff; 401 is final."""
    stats.sent += 1
    stats.by_kind[delivery.kind] = stats.by_kind.get(delivery.kind, 0) + 1
    status, delay = 0, 0.2
    for _ in range(attempts):
        try:
            async with session.post(url, data=delivery.body,
                                    headers=headers(delivery, secret)) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if 200 <= status < 300:
            stats.acknowledged += 1
            return status
        if status == 401:
            stats.rejected += 1
            return status
        stats.retried += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
    stats.failed += 1
    return status


async def drive(url: str, secret: bytes, *, rate: float, duration_s: float | None,
                max_deliveries: int | None = None, seed: int = 1,
                faults: Faults | None = None, stop: asyncio.Event | None = None) -> SendStats:
    """Send deliveries at ``rate`` per second until the duration, count or ``stop``."""
    stats = SendStats()
    stream = deliveries(seed, faults or Faults())
    loop = asyncio.get_running_loop()
    started = loop.time()
    inflight: set[asyncio.Task[int]] = set()
    limit = asyncio.Semaphore(200)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(delivery: Delivery) -> int:
            async with limit:
                return await post(session, url, delivery, secret, stats)

        n = 0
        while (max_deliveries is None or n < max_deliveries) and not (stop and stop.is_set()):
            if duration_s is not None and loop.time() - started >= duration_s:
                break
            due = started + n / rate
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            task = asyncio.create_task(one(next(stream)))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            n += 1
        if inflight:
            await asyncio.gather(*inflight)
    return stats
