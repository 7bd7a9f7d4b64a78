"""The sandbox against the connectors: every channel's simulated traffic is what
its connector accepts, and forged traffic is what it rejects."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest

from orderpulse.connectors.channels import WEBHOOK_SOURCES
from orderpulse.connectors.sandbox import WEBHOOK_SIMS
from orderpulse.connectors.sandbox.config import CREDENTIAL_KEYS, SANDBOX_ENDPOINTS
from orderpulse.connectors.sandbox.driver import NO_FAULTS, Faults, Sandbox
from orderpulse.connectors.sandbox.lifecycle import EVENTS, Simulator
from orderpulse.errors import SignatureError

T0 = datetime(2026, 11, 11, 12, tzinfo=UTC)


def _clock() -> datetime:
    _clock.now += timedelta(seconds=1)  # type: ignore[attr-defined]
    return _clock.now  # type: ignore[attr-defined,no-any-return]


_clock.now = T0  # type: ignore[attr-defined]


def _config(channel: str) -> dict[str, str]:
    rng = random.Random(channel)
    return {**{k: f"{k}-{rng.randrange(10**9)}" for k in CREDENTIAL_KEYS},
            **SANDBOX_ENDPOINTS.get(channel, {})}


def test_simulator_is_reproducible_and_walks_the_lifecycle() -> None:
    def run() -> list[tuple[int, str]]:
        sim = Simulator(seed=3, clock=lambda: T0)
        return [(o.number, e) for o, e in islice(sim, 3000)]

    steps = run()
    assert steps == run()
    seen = {e for _, e in steps}
    assert seen == set(EVENTS)
    by_order: dict[int, list[str]] = {}
    for number, event in steps:
        by_order.setdefault(number, []).append(event)
    for events in by_order.values():
        assert events[0] == "created"
        if "shipped" in events:
            assert events.index("paid") < events.index("shipped")


@pytest.mark.parametrize("channel", sorted(WEBHOOK_SIMS))
def test_every_simulated_delivery_verifies_and_forged_ones_do_not(channel: str) -> None:
    config = _config(channel)
    sim, source = WEBHOOK_SIMS[channel](config), WEBHOOK_SOURCES[channel](config)
    now_ms = int(T0.timestamp() * 1000)
    simulator = Simulator(seed=11, clock=lambda: T0)
    checked = 0
    for order, event in islice(simulator, 1500):
        order.carrier = order.carrier or "SF"
        for delivery in sim.deliveries(order, event, T0):
            source.verify(delivery.headers, delivery.body, now_ms)
            records = source.records(delivery.headers, delivery.body)
            assert records and all(r.key for r in records)
            checked += 1
            if checked % 50 == 1:
                forged = sim.forge(delivery)
                with pytest.raises(SignatureError):
                    source.verify(forged.headers, forged.body, now_ms)
    assert checked > 20


def test_sandbox_routes_orders_to_channels_and_carriers() -> None:
    channels = {ch: _config(ch) for ch in [*WEBHOOK_SIMS, "taobao", "jd", "pinduoduo", "usps"]}
    sandbox = Sandbox(channels, seed=2, faults=NO_FAULTS)
    pushed: dict[str, int] = {}
    for _ in range(4000):
        order, event = sandbox.sim.step()
        for d in sandbox.emit(order, event, T0):
            pushed[d.channel] = pushed.get(d.channel, 0) + 1
    assert set(pushed) >= {"shopify", "douyin", "youzan", "woocommerce", "ownsite", "kuaidi100"}
    assert set(sandbox.stats.polled_updates) >= {"taobao", "jd", "pinduoduo", "usps"}


def test_faults_duplicate_delay_forge_and_break() -> None:
    channels = {"shopify": _config("shopify")}
    sandbox = Sandbox(channels, seed=4, faults=Faults(duplicate=0.2, late=0.2, broken_body=0.1,
                                                       forged=0.1))
    source = WEBHOOK_SOURCES["shopify"](channels["shopify"])
    out = []
    for _ in range(2000):
        order, event = sandbox.sim.step()
        out += sandbox.with_faults(sandbox.emit(order, event, T0))
    ids = [d.delivery_id for _, d in out]
    assert len(ids) > len(set(ids)), "no duplicate deliveries"
    assert any(delay > 0 for delay, _ in out), "no late deliveries"
    forged = broken = 0
    for _, d in out:
        try:
            source.verify(d.headers, d.body, int(T0.timestamp() * 1000))
        except SignatureError:
            forged += 1
            continue
        broken += not d.body.rstrip().endswith(b"}")
    assert forged > 0 and broken > 0
