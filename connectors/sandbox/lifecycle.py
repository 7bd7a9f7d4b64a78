"""Channel-neutral order lifecycles for the sandbox.

The simulator moves many orders at once through what happens to orders in
the field, and each channel's sandbox renders an order's state in that
channel's native format:

    created -> paid -> shipped -> in_transit -> delivered -> completed
    created -> cancelled                          (unpaid, closed by the buyer or timeout)
    paid -> cancelled                             (refunded before shipping)
    shipped|delivered -> refund_requested -> refunded           (refund only)
    delivered -> return_requested -> return_received -> refunded (return and refund)

Money is Decimal in the order's currency; times are aware UTC datetimes; ids
are strings (channels' 19-digit ids overflow doubles). Reproducible for a seed
and a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

# (sku, unit price) of the demo catalogue; bundles explode into components.
CATALOGUE: dict[str, Decimal] = {
    "TEE-BLK-M": Decimal("59.00"), "TEE-WHT-L": Decimal("59.00"), "HOODIE-GRY-M": Decimal("199.00"),
    "CAP-RED": Decimal("39.90"), "MUG-LOGO": Decimal("29.90"), "SOCKS-3PK": Decimal("25.00"),
}
BUNDLES: dict[str, tuple[Decimal, list[tuple[str, int]]]] = {
    "GIFT-SET-1": (Decimal("99.00"), [("MUG-LOGO", 1), ("SOCKS-3PK", 2)]),
}
CARRIERS = ("SF", "YTO", "ZTO", "USPS")
PROVINCES = ("广东省", "浙江省", "上海市", "北京市", "四川省")
SURNAMES = ("王", "李", "张", "刘", "陈")

#: Event names, the steps of the diagram above.
EVENTS = ("created", "paid", "shipped", "in_transit", "delivered", "completed", "cancelled",
          "refund_requested", "return_requested", "return_received", "refunded")


@dataclass
class SimLine:
    line_no: int
    sku: str
    quantity: int
    unit_price: Decimal
    components: list[tuple[str, int]] = field(default_factory=list)  # bundle contents

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass
class SimOrder:
    """One order's state; channel renderers read it, the simulator writes it."""

    number: int
    created: datetime
    lines: list[SimLine]
    buyer_name: str
    buyer_phone: str
    province: str
    address: str
    shipping_fee: Decimal = Decimal("0.00")
    discount: Decimal = Decimal("0.00")
    status: str = "created"  # the last lifecycle event applied (see EVENTS)
    updated: datetime = field(init=False)
    paid_at: datetime | None = None
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None
    completed_at: datetime | None = None
    cancelled_at: datetime | None = None
    carrier: str = ""
    tracking_no: str = ""
    refund_kind: str = ""  # "" | "refund_only" | "return_and_refund"
    refund_amount: Decimal = Decimal("0.00")
    refund_state: str = ""  # "" | "requested" | "returned" | "refunded"
    refund_line_no: int = 0
    history: list[tuple[datetime, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.updated = self.created

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0"))

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.shipping_fee - self.discount

    @property
    def is_paid(self) -> bool:
        return self.paid_at is not None

    def id19(self, base: int) -> str:
        """A 19-digit channel id for this order (beyond a double's 53 bits)."""
        return str(base + self.number)


def _transitions(order: SimOrder, rng: random.Random) -> list[tuple[str, float]]:
    """Possible next events with weights, from the order's current state."""
    s = order.status
    if s == "created":
        return [("paid", 0.88), ("cancelled", 0.12)]
    if s == "paid":
        return [("shipped", 0.95), ("cancelled", 0.05)]
    if s == "shipped":
        return [("in_transit", 0.97), ("refund_requested", 0.03)]
    if s == "in_transit":
        return [("delivered", 1.0)]
    if s == "delivered":
        return [("completed", 0.9), ("return_requested", 0.07), ("refund_requested", 0.03)]
    if s == "refund_requested":
        return [("refunded", 1.0)]
    if s == "return_requested":
        return [("return_received", 1.0)]
    if s == "return_received":
        return [("refunded", 1.0)]
    return []  # completed, cancelled, refunded: final


def apply(order: SimOrder, event: str, at: datetime, rng: random.Random) -> None:
    """Move ``order`` by ``event`` at time ``at`` (never backwards in time)."""
    at = max(at, order.updated)
    order.updated = at
    order.status = event
    order.history.append((at, event))
    if event == "paid":
        order.paid_at = at
    elif event == "shipped":
        order.shipped_at = at
        order.carrier = rng.choice(CARRIERS)
        order.tracking_no = (f"9400{rng.randrange(10**17, 10**18)}" if order.carrier == "USPS"
                             else f"{order.carrier}{rng.randrange(10**11, 10**12)}")
    elif event == "delivered":
        order.delivered_at = at
    elif event == "completed":
        order.completed_at = at
    elif event == "cancelled":
        order.cancelled_at = at
        if order.is_paid:
            order.refund_kind, order.refund_amount, order.refund_state = (
                "refund_only", order.total, "refunded")
    elif event in ("refund_requested", "return_requested"):
        line = rng.choice(order.lines)
        order.refund_kind = "refund_only" if event == "refund_requested" else "return_and_refund"
        order.refund_line_no, order.refund_amount = line.line_no, line.amount
        order.refund_state = "requested"
    elif event == "return_received":
        order.refund_state = "returned"
    elif event == "refunded":
        order.refund_state = "refunded"


def new_order(number: int, at: datetime, rng: random.Random) -> SimOrder:
    lines = []
    for line_no, sku in enumerate(rng.sample(sorted(CATALOGUE), rng.randint(1, 3)), start=1):
        lines.append(SimLine(line_no, sku, rng.randint(1, 3), CATALOGUE[sku]))
    if rng.random() < 0.1:
        price, parts = BUNDLES["GIFT-SET-1"]
        lines.append(SimLine(len(lines) + 1, "GIFT-SET-1", 1, price, list(parts)))
    province = rng.choice(PROVINCES)
    order = SimOrder(
        number=number, created=at, lines=lines,
        buyer_name=rng.choice(SURNAMES) + rng.choice("伟芳娜敏静丽强磊"),
        buyer_phone=f"1{rng.choice('3589')}{rng.randrange(10**8, 10**9)}",
        province=province, address=f"{province}某市某区某路{rng.randint(1, 999)}号",
        shipping_fee=rng.choice([Decimal("0.00"), Decimal("8.00"), Decimal("12.00")]),
        discount=rng.choice([Decimal("0.00"), Decimal("0.00"), Decimal("10.00")]),
    )
    order.history.append((at, "created"))
    return order


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Simulator:
    """Interleaves many orders' lifecycles; ``step()`` yields (order, event) pairs."""

    seed: int = 1
    concurrent: int = 50
    clock: Callable[[], datetime] = _utcnow
    rng: random.Random = field(init=False)
    active: list[SimOrder] = field(default_factory=list)
    created: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def step(self) -> tuple[SimOrder, str]:
        """Advance one order by one event (a new order's first event is ``created``)."""
        if len(self.active) < self.concurrent:
            self.created += 1
            order = new_order(self.created, self.clock(), self.rng)
            self.active.append(order)
            return order, "created"
        while True:
            order = self.rng.choice(self.active)
            choices = _transitions(order, self.rng)
            if not choices:
                self.active.remove(order)
                return self.step()
            events, weights = zip(*choices, strict=True)
            event = self.rng.choices(events, weights)[0]
            apply(order, event, self.clock(), self.rng)
            return order, event

    def __iter__(self) -> Iterator[tuple[SimOrder, str]]:
        while True:
            yield self.step()
