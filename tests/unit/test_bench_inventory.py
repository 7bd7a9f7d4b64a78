"""The inventory benchmark's scenarios: what the stock model says they produce is
what the benchmark counts (one ledger event per command, of the expected kinds)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from orderpulse.avro import codec
from orderpulse.bench_inventory import (
    HOT_SKU,
    MAX_COMMANDS,
    Scenario,
    hot_sku,
    ledger_rate,
    mixed,
    wide,
)
from orderpulse.streams import inventory

T0 = 1_794_409_200_000
SHAPE = {"now_ms": T0, "hold_ms": 45 * 60_000, "partitions": 4}


def run_model(scenario: Scenario, writes: list[int] | None = None
              ) -> tuple[dict[str, Any], dict[str, int], int]:
    """Apply the commands in order as the agent would: (table, events by kind, replies).

    ``writes`` collects the JSON size of every value written (what the changelog gets).
    """
    table: dict[str, Any] = {}
    kinds: dict[str, int] = {}
    replies = 0
    command = codec("InventoryCommand")
    for cmd in scenario.commands:
        out = inventory.handle(table.get, inventory.as_command(command.decode(
            command.encode(cmd))), T0)
        for key, value in out.writes:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
            if writes is not None:
                writes.append(len(json.dumps(value).encode()))
        assert len(out.events) == 1, (cmd, out.events)
        kinds[out.events[0]["kind"]] = kinds.get(out.events[0]["kind"], 0) + 1
        replies += len(out.replies)
    return table, kinds, replies


@pytest.mark.parametrize("build", [hot_sku, wide, mixed])
@pytest.mark.parametrize("n", [1, 7, 40])
def test_the_model_produces_exactly_the_counted_events(build: Any, n: int) -> None:
    scenario = build(n, **SHAPE)
    _table, kinds, replies = run_model(scenario)
    assert kinds == {k: v for k, v in scenario.expect.items() if v}
    assert replies == sum(c["kind"] != "ADJUST" for c in scenario.commands)


def test_hot_sku_runs_both_paths_of_the_race() -> None:
    scenario = hot_sku(10, **SHAPE)
    assert {c["sku"] for c in scenario.commands} == {HOT_SKU}
    assert scenario.expect == {"ADJUSTED": 1, "RESERVED": 5, "RESERVE_REJECTED": 5}
    orders = [c["order_id"] for c in scenario.commands if c["kind"] == "RESERVE"]
    assert len(set(orders)) == 10
    assert {c["reply_partition"] for c in scenario.commands[1:]} == {0, 1, 2, 3}


def test_mixed_follows_every_reservation_after_it() -> None:
    scenario = mixed(20, **SHAPE)
    seen: set[str] = set()
    for cmd in scenario.commands:
        if cmd["kind"] == "RESERVE":
            seen.add(cmd["reservation_id"])
        elif cmd["kind"] in ("COMMIT", "RELEASE"):
            assert cmd["reservation_id"] in seen
    assert scenario.expect["COMMITTED"] + scenario.expect["RELEASED"] == 10


def test_the_hot_skus_changelog_records_do_not_grow_with_its_open_holds() -> None:
    # Faust sends a written value whole to the changelog, and its producer refuses
    # a request over 1 MB; the level entry once carried every open hold (333 KB at
    # 5,000). Now each write stays small, however many holds the SKU has.
    small: list[int] = []
    run_model(hot_sku(40, **SHAPE), small)
    large: list[int] = []
    table, _kinds, _replies = run_model(hot_sku(MAX_COMMANDS, **SHAPE), large)
    assert len(table) == 2 + MAX_COMMANDS  # level, seed, a hold or a refusal per order
    assert max(large) < 1024 and max(large) - max(small) < 16  # only the ids' digits
    assert len(json.dumps(table[HOT_SKU]).encode()) < 1024


def test_the_rate_runs_from_the_first_ledger_stamp_to_the_last() -> None:
    assert ledger_rate([T0 + 2000, T0, T0 + 500]) == 1.0  # two more events in 2 s
    assert math.isnan(ledger_rate([T0]))
