from __future__ import annotations

import json
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from orderpulse.avro import codec
from orderpulse.catalog import Catalog
from orderpulse.streams import allocation, inventory
from orderpulse.streams.allocation import AllocOut
from orderpulse.streams.lifecycle import RANK
from orderpulse.streams.orders import StockRules

T0 = 1_794_409_200_000
SEC = 1_000
HOLD = 45 * 60 * SEC
RESEND = 30 * SEC
CATALOG = Catalog.load()
WAREHOUSES = [w.id for w in CATALOG.warehouses]
TEE, CAP, MUG, SOCKS = "TEE-BLK-M", "CAP-RED", "MUG-LOGO", "SOCKS-3PK"
SHANGHAI = "上海市"


class Shop:
    """Both sides in memory: the stock table, the orders' records, and the topics between.

    Commands wait in one queue per SKU (one partition: their order is kept); replies
    wait in one list and may be taken in any order. Nothing is dropped.
    """

    def __init__(self, rules: StockRules | None = None) -> None:
        self.rules = rules or StockRules(CATALOG, hold_ms=HOLD, resend_ms=RESEND)
        self.now = T0
        self.table: dict[str, Any] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.replies: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []  # every command ever sent (for copies)
        self.answered: list[dict[str, Any]] = []  # every reply ever delivered (for copies)
        self.events: list[dict[str, Any]] = []  # inventory.events from the stock side
        self.order_events: list[dict[str, Any]] = []
        self.alerts: list[tuple[str, str]] = []

    # --- the stock side
    def get(self, key: str) -> dict[str, Any] | None:
        value = self.table.get(key)
        return json.loads(json.dumps(value)) if value is not None else None

    def write(self, out: inventory.StockOut, upto: int | None = None) -> None:
        for key, value in out.writes[:upto]:
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = json.loads(json.dumps(value))

    def send_stock(self, out: inventory.StockOut) -> None:
        for ev in out.events:
            codec("InventoryEvent").encode(ev)
        self.events += out.events
        for _part, reply in out.replies:
            codec("InventoryReply").encode(reply)
            self.replies.append(reply)

    def deliver_command(self, sku: str, crash_after: int | None = None) -> inventory.StockOut:
        cmd = self.commands[sku][0]
        out = inventory.handle(self.get, cmd, self.now)
        if crash_after is not None:
            # The worker dies after some writes: nothing was sent, the offset did not
            # move, so the same command comes again.
            self.write(out, crash_after)
            out = inventory.handle(self.get, cmd, self.now)
        self.commands[sku].pop(0)
        self.write(out)
        self.send_stock(out)
        return out

    def expire_all(self, crash_after: int | None = None) -> None:
        """The sweep: one scan for the open holds, then each SKU's due ones expire."""
        holds = inventory.holds_by_sku(self.table.items())
        for sku in self.levels():
            due = inventory.due(holds.get(sku, {}), self.now)
            out = inventory.expire(self.get, sku, due, self.now)
            if crash_after is not None and out.writes:
                # The worker dies mid-sweep; the sweep command comes again.
                self.write(out, crash_after % len(out.writes))
                self.expire_all()
                return
            self.write(out)
            self.send_stock(out)

    def levels(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.table.items() if inventory.is_level(k)}

    def holds(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Open reservations by SKU and reservation id."""
        return inventory.holds_by_sku(self.table.items())

    def row(self, sku: str, wh: str) -> list[int]:
        return self.table[sku]["wh"].get(wh, [0, 0, 0])

    def count(self, sku: str, wh: str, qty: int) -> None:
        cmd = {"kind": "ADJUST", "command_id": f"count/{sku}/{wh}/{self.now}/{qty}", "sku": sku,
               "reservation_id": None, "order_id": None, "quantity": qty, "warehouses": [wh],
               "adjust_mode": "SET", "expires_at": None, "reply_partition": -1,
               "reason": "cycle count", "at": self.now}
        self.enqueue([cmd])

    # --- the order side
    def ctx(self) -> allocation.Ctx:
        return self.rules.ctx(self.now, 0)

    def enqueue(self, commands: list[dict[str, Any]]) -> None:
        for cmd in commands:
            codec("InventoryCommand").encode(cmd)
            self.commands.setdefault(cmd["sku"], []).append(cmd)
            self.sent.append(cmd)

    def take(self, order_id: str, out: AllocOut) -> AllocOut:
        """What the order step does with an allocation step (``orders._stock_outputs``)."""
        if out.changed:
            self.orders[order_id]["alloc"] = out.alloc
        self.enqueue(out.commands)
        self.order_events += out.events
        if out.alert:
            self.alerts.append((order_id, out.alert))
        return out

    def place(self, order_id: str, lines: list[tuple[str, int]], province: str | None = SHANGHAI,
              components: dict[int, list[tuple[str, int]]] | None = None) -> AllocOut:
        self.orders[order_id] = {"order_id": order_id, "channel": "ownsite",
                                 "status": "PENDING_PAYMENT", "history": []}
        event = {"event_id": f"{order_id}/created", "event_type": "CREATED",
                 "receiver": {"province": province}, "refund": None,
                 "lines": [{"line_id": str(n), "sku": sku, "quantity": qty,
                            "components": [{"sku": s, "quantity": q}
                                           for s, q in (components or {}).get(n, [])]}
                           for n, (sku, qty) in enumerate(lines, start=1)]}
        return self.settle(order_id, event)

    def move(self, order_id: str, status: str, event: dict[str, Any] | None = None) -> AllocOut:
        self.orders[order_id]["status"] = status
        return self.settle(order_id, event or {"event_id": f"{order_id}/{status}/{self.now}",
                                               "event_type": status, "refund": None})

    def settle(self, order_id: str, event: dict[str, Any] | None) -> AllocOut:
        record = self.orders[order_id]
        return self.take(order_id, allocation.settle(record.get("alloc"), record, event,
                                                     RANK[record["status"]], CATALOG, self.ctx()))

    def returned(self, order_id: str, refund_id: str,
                 lines: list[tuple[str, int]] | None) -> AllocOut:
        refund = {"refund_id": refund_id, "status": "RETURN_RECEIVED",
                  "lines": [{"line_id": i, "quantity": q} for i, q in lines or []]}
        return self.settle(order_id, {"event_id": f"{order_id}/return/{refund_id}",
                                      "event_type": "RETURN_RECEIVED", "refund": refund})

    def deliver_reply(self, index: int = 0) -> AllocOut:
        reply = self.replies.pop(index)
        self.answered.append(reply)
        record = self.orders.get(reply["order_id"]) or {"order_id": reply["order_id"],
                                                        "status": "CANCELLED"}
        out = allocation.on_reply(record.get("alloc"), record, reply, RANK[record["status"]],
                                  CATALOG, self.ctx())
        if reply["order_id"] not in self.orders:
            self.enqueue(out.commands)
            return out
        return self.take(reply["order_id"], out)

    def resend(self) -> None:
        for order_id, record in self.orders.items():
            if record.get("alloc"):
                self.take(order_id, allocation.resend(record["alloc"], order_id, self.ctx(),
                                                      self.rules.resend_ms))

    def pump(self, limit: int = 10_000) -> None:
        """Deliver everything: each SKU's next command, then the replies, until quiet."""
        for _ in range(limit):
            if not self.replies and not any(self.commands.values()):
                return
            for sku in sorted(self.commands):
                if self.commands[sku]:
                    self.deliver_command(sku)
            while self.replies:
                self.deliver_reply()
        raise AssertionError("the two sides never went quiet")

    def alloc(self, order_id: str) -> dict[str, Any]:
        return self.orders[order_id]["alloc"]


def stocked(counts: dict[tuple[str, str], int], **rules: Any) -> Shop:
    shop = Shop(StockRules(CATALOG, hold_ms=HOLD, resend_ms=RESEND, **rules))
    for (sku, wh), qty in counts.items():
        shop.count(sku, wh, qty)
    shop.pump()
    return shop


def reserved(shop: Shop, *skus: str) -> int:
    return sum(shop.row(sku, wh)[inventory.RESERVED] for sku in skus for wh in WAREHOUSES
               if sku in shop.table)


# --- reserving -------------------------------------------------------------------------------

def test_a_single_line_order_reserves_in_one_round_over_the_ranked_warehouses() -> None:
    shop = stocked({(TEE, "WH-SH"): 1, (TEE, "WH-GZ"): 5})
    out = shop.place("o1", [(TEE, 2)])
    [cmd] = out.commands
    assert (cmd["kind"], cmd["sku"], cmd["quantity"], cmd["warehouses"]) == \
        ("RESERVE", TEE, 2, ["WH-SH", "WH-GZ", "WH-CD"])
    assert cmd["expires_at"] == T0 + HOLD and cmd["reason"] == "final_round"
    assert cmd["reservation_id"] == "o1#0#TEE-BLK-M"
    shop.pump()
    alloc = shop.alloc("o1")
    assert (alloc["status"], alloc["warehouse"]) == ("RESERVED", "WH-GZ")
    assert alloc["reason"] == f"nearest to {SHANGHAI}; one warehouse for the order"
    assert [e["kind"] for e in shop.order_events] == ["ALLOCATED"]
    assert shop.row(TEE, "WH-GZ") == [5, 2, 0]


def test_an_order_prefers_one_warehouse_for_every_line() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-GZ"): 5, (TEE, "WH-GZ"): 5})
    out = shop.place("o1", [(TEE, 1), (CAP, 1)])
    assert [c["warehouses"] for c in out.commands] == [["WH-SH"], ["WH-SH"]]
    assert {c["reason"] for c in out.commands} == {"preference_round"}
    shop.pump()
    alloc = shop.alloc("o1")
    assert (alloc["status"], alloc["warehouse"], alloc["attempt"]) == ("RESERVED", "WH-GZ", 1)
    assert reserved(shop, TEE, CAP) == 2 and shop.row(TEE, "WH-SH") == [5, 0, 0]


def test_lines_no_single_warehouse_holds_end_split_with_the_reason() -> None:
    shop = stocked({(TEE, "WH-GZ"): 5, (CAP, "WH-SH"): 5})
    shop.place("o1", [(TEE, 3), (CAP, 1)])
    shop.pump()
    alloc = shop.alloc("o1")
    assert alloc["status"] == "RESERVED" and alloc["warehouse"] == "WH-GZ,WH-SH"
    assert alloc["reason"].endswith("; split: no single warehouse had every line")
    assert alloc["attempt"] == len(alloc["rounds"]) - 1 == 3
    # Each preference round's partial hold was given back before the next round.
    assert shop.row(TEE, "WH-GZ") == [5, 3, 0] and shop.row(CAP, "WH-SH") == [5, 1, 0]
    refusals = {e["reason"] for e in shop.events if e["kind"] == "RESERVE_REJECTED"}
    assert refusals == {inventory.NOT_IN_PREFERRED}
    [allocated] = shop.order_events
    assert allocated["kind"] == "ALLOCATED" and allocated["warehouse"] == "WH-GZ,WH-SH"


def test_a_bundle_reserves_its_components() -> None:
    shop = stocked({(MUG, "WH-SH"): 5, (SOCKS, "WH-SH"): 5})
    out = shop.place("o1", [("GIFT-SET-1", 2)])
    assert sorted((c["sku"], c["quantity"]) for c in out.commands) == [(MUG, 2), (SOCKS, 4)]
    shop.pump()
    assert shop.alloc("o1")["status"] == "RESERVED"


def _out_of_stock(policy: str) -> Shop:
    shop = stocked({(TEE, "WH-SH"): 5, (TEE, "WH-GZ"): 5, (CAP, "WH-CD"): 1},
                   out_of_stock=policy)
    shop.place("o1", [(TEE, 2), (CAP, 2)])
    shop.pump()
    return shop


def test_a_line_no_round_can_fill_ends_out_of_stock_holding_nothing() -> None:
    shop = _out_of_stock("reject")
    alloc = shop.alloc("o1")
    assert alloc["status"] == "OUT_OF_STOCK" and shop.alerts == [("o1", "OUT_OF_STOCK")]
    [verdict] = shop.order_events
    assert (verdict["kind"], verdict["sku"], verdict["reason"]) == \
        ("OUT_OF_STOCK", CAP, "insufficient_stock")
    assert reserved(shop, TEE, CAP) == 0
    assert shop.holds() == {}
    assert any(e["kind"] == "RESERVE_REJECTED" and e["reason"] == "insufficient_stock"
               for e in shop.events)  # the final round's refusal is an oversell prevented


def test_out_of_stock_can_be_a_backorder() -> None:
    shop = _out_of_stock("backorder")
    assert shop.alloc("o1")["status"] == "BACKORDERED"
    assert shop.alerts == [("o1", "BACKORDERED")] and reserved(shop, TEE, CAP) == 0


# --- the order moves -------------------------------------------------------------------------

def test_cancel_while_pending_releases_every_hold() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-SH"): 5})
    shop.place("o1", [(TEE, 2), (CAP, 1)])
    out = shop.move("o1", "CANCELLED")  # before any answer
    assert [c["kind"] for c in out.commands] == ["RELEASE", "RELEASE"]
    assert shop.alloc("o1")["status"] == "RELEASING"
    shop.pump()
    assert shop.alloc("o1")["status"] == "RELEASED" and reserved(shop, TEE, CAP) == 0


def test_cancel_while_reserved_releases() -> None:
    shop = stocked({(TEE, "WH-SH"): 5})
    shop.place("o1", [(TEE, 2)])
    shop.pump()
    shop.move("o1", "CANCELLED")
    shop.pump()
    assert shop.alloc("o1")["status"] == "RELEASED" and shop.row(TEE, "WH-SH") == [5, 0, 0]


def test_payment_commits_the_holds() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-SH"): 5})
    shop.place("o1", [(TEE, 2), (CAP, 1)])
    shop.pump()
    out = shop.move("o1", "PAID")
    assert {(c["kind"], tuple(c["warehouses"])) for c in out.commands} == {("COMMIT", ("WH-SH",))}
    shop.pump()
    assert shop.alloc("o1")["status"] == "COMMITTED"
    assert shop.row(TEE, "WH-SH") == [3, 0, 0] and shop.row(CAP, "WH-SH") == [4, 0, 0]


def test_paid_before_the_answers_commits_once_reserved() -> None:
    shop = stocked({(TEE, "WH-SH"): 5})
    shop.place("o1", [(TEE, 2)])
    assert shop.move("o1", "PAID").commands == []
    shop.pump()
    assert shop.alloc("o1")["status"] == "COMMITTED" and shop.row(TEE, "WH-SH") == [3, 0, 0]


def _committed(shop: Shop, order_id: str, lines: list[tuple[str, int]]) -> None:
    shop.place(order_id, lines)
    shop.move(order_id, "PAID")
    shop.pump()
    assert shop.alloc(order_id)["status"] == "COMMITTED"


def test_cancel_after_commit_before_shipping_restores_everything() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-SH"): 5})
    _committed(shop, "o1", [(TEE, 2), (CAP, 1)])
    out = shop.move("o1", "CANCELLED")
    assert {(c["kind"], c["reason"]) for c in out.commands} == \
        {("RESTORE", "cancelled_before_shipping")}
    shop.pump()
    assert shop.alloc("o1")["status"] == "RESTORED"
    assert shop.row(TEE, "WH-SH") == [5, 0, 0] and shop.row(CAP, "WH-SH") == [5, 0, 0]
    assert shop.move("o1", "CANCELLED").commands == []  # a repeated cancel restores nothing


def test_cancel_after_shipping_waits_for_the_return() -> None:
    shop = stocked({(TEE, "WH-SH"): 5})
    _committed(shop, "o1", [(TEE, 2)])
    shop.move("o1", "SHIPPED")
    assert shop.move("o1", "CANCELLED").commands == []
    assert shop.row(TEE, "WH-SH") == [3, 0, 0]


def test_a_return_restores_only_the_returned_lines() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (MUG, "WH-SH"): 5, (SOCKS, "WH-SH"): 9})
    _committed(shop, "o1", [("GIFT-SET-1", 2), (TEE, 3)])
    shop.move("o1", "SHIPPED")
    assert shop.row(SOCKS, "WH-SH") == [5, 0, 0]
    out = shop.returned("o1", "refund-1", [("1", 1)])  # one gift set of two
    assert sorted((c["sku"], c["quantity"]) for c in out.commands) == [(MUG, 1), (SOCKS, 2)]
    shop.pump()
    assert shop.row(MUG, "WH-SH") == [4, 0, 0] and shop.row(SOCKS, "WH-SH") == [7, 0, 0]
    assert shop.row(TEE, "WH-SH") == [2, 0, 0]
    assert shop.alloc("o1")["status"] == "COMMITTED"  # units are still out
    assert shop.returned("o1", "refund-1", [("1", 1)]).commands == []  # the same refund again
    shop.returned("o1", "refund-2", None)  # the rest comes back
    shop.pump()
    assert shop.row(TEE, "WH-SH") == [5, 0, 0] and shop.row(SOCKS, "WH-SH") == [9, 0, 0]
    assert shop.alloc("o1")["status"] == "RESTORED"


def test_paid_after_the_hold_expired_and_the_stock_went_is_flagged() -> None:
    shop = stocked({(TEE, "WH-SH"): 2, (CAP, "WH-SH"): 2})
    shop.place("o1", [(TEE, 2), (CAP, 1)])
    shop.pump()
    shop.now += HOLD
    shop.expire_all()
    shop.place("o2", [(TEE, 2)])
    shop.pump()
    shop.move("o1", "PAID")
    shop.pump()
    alloc = shop.alloc("o1")
    assert alloc["status"] == "COMMIT_FAILED" and ("o1", "PAID_WITHOUT_STOCK") in shop.alerts
    assert [e["kind"] for e in shop.order_events if e["order_id"] == "o1"][-1] == \
        "COMMIT_REJECTED"
    assert shop.row(TEE, "WH-SH") == [2, 2, 0]  # o2's hold untouched, never negative
    assert shop.row(CAP, "WH-SH") == [1, 0, 0]  # recommitted


def test_cancelling_a_paid_order_that_found_no_stock_gives_back_what_it_took() -> None:
    shop = stocked({(TEE, "WH-SH"): 2, (CAP, "WH-SH"): 2})
    shop.place("o1", [(TEE, 2), (CAP, 1)])
    shop.pump()
    shop.now += HOLD
    shop.expire_all()
    shop.place("o2", [(TEE, 2)])
    shop.move("o1", "PAID")
    shop.pump()
    assert shop.alloc("o1")["status"] == "COMMIT_FAILED"
    shop.move("o1", "CANCELLED")  # the merchant refunds the order it cannot fill
    shop.pump()
    assert shop.row(CAP, "WH-SH") == [2, 0, 0]
    assert shop.row(TEE, "WH-SH") == [2, 2, 0]


# --- answers and resends ---------------------------------------------------------------------

def test_an_ok_answer_for_a_reservation_the_order_does_not_hold_is_released() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-GZ"): 5})
    shop.place("o1", [(TEE, 1), (CAP, 1)])
    shop.pump()
    assert shop.alloc("o1")["attempt"] == 3
    stale = {"kind": "RESERVE", "order_id": "o1", "reservation_id": "o1#0#TEE-BLK-M",
             "sku": TEE, "quantity": 1, "ok": True, "warehouse": "WH-SH", "reason": "reserved",
             "at": T0}
    shop.replies.append(stale)
    out = shop.deliver_reply()
    [cmd] = out.commands
    assert (cmd["kind"], cmd["reservation_id"], cmd["reason"]) == \
        ("RELEASE", "o1#0#TEE-BLK-M", "stale_reservation")
    assert not out.changed
    unknown = allocation.on_reply(None, {"order_id": "o9", "status": "CANCELLED"},
                                  {**stale, "order_id": "o9", "reservation_id": "o9#0#TEE"}, 8,
                                  CATALOG, shop.ctx())
    assert [c["kind"] for c in unknown.commands] == ["RELEASE"]
    refused = {**stale, "ok": False}
    assert allocation.on_reply(shop.alloc("o1"), shop.orders["o1"], refused, 0, CATALOG,
                               shop.ctx()).commands == []


def test_a_repeated_answer_is_taken_once() -> None:
    shop = stocked({(TEE, "WH-SH"): 5})
    shop.place("o1", [(TEE, 1)])
    shop.deliver_command(TEE)
    [reply] = shop.replies
    shop.deliver_reply()
    shop.replies.append(dict(reply))
    out = shop.deliver_reply()
    assert not out.changed and out.commands == [] and out.events == []


def test_unanswered_commands_are_resent_after_the_delay_only() -> None:
    shop = stocked({(TEE, "WH-SH"): 5, (CAP, "WH-SH"): 5})
    first = shop.place("o1", [(TEE, 1), (CAP, 1)]).commands
    alloc = shop.alloc("o1")
    shop.now += RESEND - 1
    assert allocation.resend(alloc, "o1", shop.ctx(), RESEND).commands == []
    shop.deliver_command(TEE)
    shop.deliver_reply()  # TEE answered, CAP not
    shop.now += 1
    out = allocation.resend(shop.alloc("o1"), "o1", shop.ctx(), RESEND)
    [again] = out.commands
    original = next(c for c in first if c["sku"] == CAP)
    assert {k: v for k, v in again.items() if k not in ("at", "expires_at")} == \
        {k: v for k, v in original.items() if k not in ("at", "expires_at")}
    assert out.alloc["since"] == shop.now  # the delay starts again
    assert allocation.resend(out.alloc, "o1", shop.ctx(), RESEND).commands == []


def test_unanswered_restores_are_resent() -> None:
    shop = stocked({(TEE, "WH-SH"): 5})
    _committed(shop, "o1", [(TEE, 2)])
    [restore] = shop.move("o1", "CANCELLED").commands
    shop.now += RESEND
    [again] = allocation.resend(shop.alloc("o1"), "o1", shop.ctx(), RESEND).commands
    assert (again["kind"], again["command_id"], again["quantity"]) == \
        ("RESTORE", restore["command_id"], 2)
    shop.enqueue([again])
    shop.pump()
    assert shop.row(TEE, "WH-SH") == [5, 0, 0]  # restored once


# --- the whole system, in any order --------------------------------------------------------

SKUS = [TEE, CAP, MUG]
FINAL = ("COMMITTED", "RELEASED", "EXPIRED", "RESTORED")


class Pipeline(RuleBasedStateMachine):
    """Orders and stock talking through topics that reorder, repeat and crash."""

    def __init__(self) -> None:
        super().__init__()
        self.shop = Shop()
        self.n = 0
        self.ever_reserved: set[str] = set()
        self.oversold: set[tuple[str, str]] = set()  # rows short, with their OVERSOLD sent
        self.checked = 0  # events looked at so far

    def tick(self) -> None:
        self.n += 1
        self.shop.now += SEC

    def orders_in(self, *statuses: str) -> list[str]:
        return sorted(o for o, r in self.shop.orders.items() if r["status"] in statuses)

    @initialize(counts=st.lists(st.integers(0, 6), min_size=9, max_size=9))
    def opening_stock(self, counts: list[int]) -> None:
        for n, qty in enumerate(counts):
            self.shop.count(SKUS[n // 3], WAREHOUSES[n % 3], qty)
        self.shop.pump()

    @rule(sku=st.sampled_from(SKUS), wh=st.sampled_from(WAREHOUSES),
          mode=st.sampled_from(["SET", "DELTA", "SAFETY"]), qty=st.integers(-2, 4))
    def adjust(self, sku: str, wh: str, mode: str, qty: int) -> None:
        self.tick()
        qty = qty if mode == "DELTA" else abs(qty)
        self.shop.enqueue([{"kind": "ADJUST", "command_id": f"adj-{self.n}", "sku": sku,
                            "reservation_id": None, "order_id": None, "quantity": qty,
                            "warehouses": [wh], "adjust_mode": mode, "expires_at": None,
                            "reply_partition": -1, "reason": "wms", "at": self.shop.now}])

    @rule(lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1,
                         max_size=3),
          province=st.sampled_from([SHANGHAI, "广东省", "四川省", "北京市"]))
    def create_order(self, lines: list[tuple[str, int]], province: str) -> None:
        self.tick()
        self.shop.place(f"o{self.n}", lines, province)

    @precondition(lambda self: self.orders_in("PENDING_PAYMENT"))
    @rule(i=st.integers(0, 99))
    def pay(self, i: int) -> None:
        self.tick()
        orders = self.orders_in("PENDING_PAYMENT")
        self.shop.move(orders[i % len(orders)], "PAID")

    @precondition(lambda self: self.orders_in("PAID"))
    @rule(i=st.integers(0, 99))
    def ship(self, i: int) -> None:
        self.tick()
        orders = self.orders_in("PAID")
        self.shop.move(orders[i % len(orders)], "SHIPPED")

    @precondition(lambda self: self.orders_in("PENDING_PAYMENT", "PAID", "SHIPPED"))
    @rule(i=st.integers(0, 99))
    def cancel(self, i: int) -> None:
        self.tick()
        orders = self.orders_in("PENDING_PAYMENT", "PAID", "SHIPPED")
        self.shop.move(orders[i % len(orders)], "CANCELLED")

    @precondition(lambda self: [o for o in self.orders_in("SHIPPED", "CANCELLED")
                                if (self.shop.orders[o].get("alloc") or {}).get("shipped")])
    @rule(i=st.integers(0, 99), returned=st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)),
                                                  max_size=3))
    def return_received(self, i: int, returned: list[tuple[int, int]]) -> None:
        self.tick()
        orders = [o for o in self.orders_in("SHIPPED", "CANCELLED")
                  if (self.shop.orders[o].get("alloc") or {}).get("shipped")]
        lines = [(str(n), q) for n, q in returned]  # line ids the order may not have: ignored
        self.shop.returned(orders[i % len(orders)], f"refund-{self.n}", lines or None)

    @rule()
    def expire(self) -> None:
        self.shop.now += HOLD + SEC
        self.shop.expire_all()

    @rule(cut=st.integers(0, 99))
    def crash_in_sweep(self, cut: int) -> None:
        self.shop.now += HOLD + SEC
        self.shop.expire_all(crash_after=cut)

    @rule()
    def resend(self) -> None:
        self.shop.now += RESEND
        self.shop.resend()

    @precondition(lambda self: any(self.shop.commands.values()))
    @rule(i=st.integers(0, 99))
    def deliver_command(self, i: int) -> None:
        skus = sorted(s for s, q in self.shop.commands.items() if q)
        self.shop.deliver_command(skus[i % len(skus)])

    @precondition(lambda self: self.shop.replies)
    @rule(i=st.integers(0, 99))
    def deliver_reply(self, i: int) -> None:
        self.shop.deliver_reply(i % len(self.shop.replies))

    @rule()
    def catch_up(self) -> None:
        """The topics drain (the usual case), so orders reach their later states."""
        self.shop.pump()

    @precondition(lambda self: self.shop.sent)
    @rule(i=st.integers(0, 999))
    def duplicate_command(self, i: int) -> None:
        cmd = self.shop.sent[i % len(self.shop.sent)]
        self.shop.commands[cmd["sku"]].append(dict(cmd))  # a copy, later, same partition

    @precondition(lambda self: self.shop.answered)
    @rule(i=st.integers(0, 999))
    def duplicate_reply(self, i: int) -> None:
        self.shop.replies.append(dict(self.shop.answered[i % len(self.shop.answered)]))

    @precondition(lambda self: any(self.shop.commands.values()))
    @rule(i=st.integers(0, 99), cut=st.integers(0, 9))
    def crash(self, i: int, cut: int) -> None:
        skus = sorted(s for s, q in self.shop.commands.items() if q)
        sku = skus[i % len(skus)]
        writes = len(inventory.handle(self.shop.get, self.shop.commands[sku][0],
                                      self.shop.now).writes)
        self.shop.deliver_command(sku, crash_after=cut % writes if writes else 0)

    # --- invariants
    def on_hand_from_events(self) -> dict[tuple[str, str], int]:
        on_hand: dict[tuple[str, str], int] = {}
        ids: set[str] = set()
        for ev in self.shop.events:
            if ev["event_id"] in ids:
                continue  # a copy (same id): the ledger keeps one
            ids.add(ev["event_id"])
            key = (ev["sku"], ev["warehouse"])
            if ev["kind"] == "ADJUSTED":
                mode = ev["reason"].split(":")[0]
                if mode == "SET":
                    on_hand[key] = ev["quantity"]
                elif mode == "DELTA":
                    on_hand[key] = on_hand.get(key, 0) + ev["quantity"]
            elif ev["kind"] == "COMMITTED":
                on_hand[key] = on_hand.get(key, 0) - ev["quantity"]
            elif ev["kind"] == "RESTORED":
                on_hand[key] = on_hand.get(key, 0) + ev["quantity"]
        return on_hand

    @invariant()
    def stock_holds_together(self) -> None:
        on_hand = self.on_hand_from_events()
        fresh, self.checked = self.shop.events[self.checked:], len(self.shop.events)
        self.oversold |= {(e["sku"], e["warehouse"]) for e in fresh if e["kind"] == "OVERSOLD"}
        self.ever_reserved |= {e["reservation_id"] for e in fresh if e["kind"] == "RESERVED"}
        holds = self.shop.holds()
        assert set(holds) <= set(self.shop.levels())  # no hold without its SKU's level
        for sku, level in self.shop.levels().items():
            mine = holds.get(sku, {})
            assert inventory.audit(level, mine.values()) == []
            held: dict[str, int] = {}
            for hold in mine.values():
                held[hold["wh"]] = held.get(hold["wh"], 0) + hold["qty"]
            self.ever_reserved |= set(mine)
            assert set(held) <= set(level["wh"])
            for wh, row in level["wh"].items():
                assert row[inventory.RESERVED] == held.get(wh, 0)
                assert row[inventory.ON_HAND] == on_hand.get((sku, wh), 0), (sku, wh)
                if inventory.available(row) >= 0:
                    self.oversold.discard((sku, wh))
                else:
                    assert (sku, wh) in self.oversold, f"{sku}@{wh} short, no OVERSOLD"
                    assert level["oversold"]

    def teardown(self) -> None:
        shop = self.shop
        shop.pump()
        # Quiet: whatever is still held belongs to an order that holds it.
        for holds in shop.holds().values():
            for rid, hold in holds.items():
                alloc = shop.orders[hold["order_id"]]["alloc"]
                assert alloc["status"] == "RESERVED" and alloc["res"][rid]["ok"], rid
        shop.now += HOLD + SEC
        shop.expire_all()
        shop.pump()
        self.stock_holds_together()
        assert shop.holds() == {}
        for level in shop.levels().values():
            assert all(row[inventory.RESERVED] == 0 for row in level["wh"].values())
        for rid in self.ever_reserved:
            ended = shop.table[f"R:{rid}"]
            # COMMIT_REJECTED: it expired first, then a late payment found no stock.
            assert ended["state"] in (*FINAL, "COMMIT_REJECTED"), (rid, ended)
        for order_id, record in shop.orders.items():
            alloc = record["alloc"]
            assert alloc["status"] not in allocation.WAITING, (order_id, alloc["status"])
        self.nothing_lost_for_cancelled_orders()

    def nothing_lost_for_cancelled_orders(self) -> None:
        net: dict[str, int] = {}
        ids: set[str] = set()
        for ev in self.shop.events:
            if ev["kind"] in ("COMMITTED", "RESTORED") and ev["event_id"] not in ids:
                ids.add(ev["event_id"])
                sign = -1 if ev["kind"] == "COMMITTED" else 1
                net[ev["reservation_id"]] = net.get(ev["reservation_id"], 0) + sign * ev["quantity"]
        assert all(n <= 0 for n in net.values())  # never more back than was taken
        for order_id, record in self.shop.orders.items():
            if record["status"] == "CANCELLED" and not record["alloc"]["shipped"]:
                taken = {r: n for r, n in net.items() if r.startswith(f"{order_id}#") and n}
                assert taken == {}, (order_id, record["alloc"]["status"], taken)


Pipeline.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_orders_and_stock_agree_whatever_the_delivery_order = Pipeline.TestCase


def test_a_store_sale_takes_the_stores_own_stock_and_unknown_stores_none() -> None:
    from orderpulse.catalog import Catalog
    from orderpulse.streams import allocation
    from orderpulse.streams.orders import StockRules

    catalog = Catalog.load()
    ctx = StockRules(catalog).ctx(1_000, 0)
    order = {"order_id": "pos:SH-001:R1", "channel": "pos", "status": "COMPLETED"}
    lines = [{"line_id": "1", "sku": "CAP-RED", "quantity": 1, "components": []}]
    sale = allocation.settle(None, order, {"channel": "pos", "shop_id": "SH-001",
                                           "lines": lines}, 7, catalog, ctx)
    assert [c["warehouses"] for c in sale.commands] == [["STORE-SH-001"]]
    assert sale.alloc["reason"] == "store sale at STORE-SH-001"
    elsewhere = allocation.settle(None, order, {"channel": "pos", "shop_id": "XX-9",
                                                "lines": lines}, 7, catalog, ctx)
    assert elsewhere.alloc is None and not elsewhere.commands
