"""An order's stock, decided all or nothing. Pure; lives on the order's record.

The order step keeps ``record["alloc"]`` next to the lifecycle, in the order's
partition. It asks each SKU's partition for a reservation (``RESERVE``,
keyed by SKU, so checks are serialized per SKU) and collects the answers
(``inventory.replies``, sent back to this partition):

    (none) -> PENDING -> RESERVED -> COMMITTING -> COMMITTED (-> restores)
                 |           \\-> RELEASING -> RELEASED         (cancelled)
                 |-> next round (another warehouse, then split)
                 \\-> OUT_OF_STOCK | BACKORDERED                 (every round failed)
    COMMITTING -> COMMIT_FAILED   (paid after the hold expired, stock gone: flagged)

A round reserves every SKU in one warehouse (preferring a single warehouse
for the order, in the routing policy's order); when no warehouse has every
line, a last round lets each line take the first warehouse with stock. A
round with any refusal releases what it got before the next one, so no
partial reservation outlives the decision. An answer for a reservation the
order no longer holds (a stale round, a replay) is released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orderpulse.catalog import Catalog

PREFERENCE_ROUND = "preference_round"
WAITING = {"PENDING": "RESERVE", "COMMITTING": "COMMIT", "RELEASING": "RELEASE"}
PAID_RANK = 1  # lifecycle RANK of PAID
SHIPPED_RANK = 4


@dataclass
class AllocOut:
    alloc: dict[str, Any] | None
    commands: list[dict[str, Any]] = field(default_factory=list)  # InventoryCommand
    events: list[dict[str, Any]] = field(default_factory=list)  # order-level InventoryEvent
    alert: str | None = None  # OUT_OF_STOCK, BACKORDERED or PAID_WITHOUT_STOCK
    changed: bool = False


@dataclass(frozen=True)
class Ctx:
    """What the decisions need besides the record."""

    now_ms: int
    partition: int
    hold_ms: int
    policy: str = "nearest"
    out_of_stock: str = "reject"


def _command(kind: str, res_id: str, order_id: str, sku: str, qty: int, ctx: Ctx,
             warehouses: list[str] | None = None, reason: str = "",
             command_id: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "command_id": command_id or f"{res_id}/{kind}", "sku": sku,
            "reservation_id": res_id, "order_id": order_id, "quantity": qty,
            "warehouses": warehouses or [], "adjust_mode": None,
            "expires_at": ctx.now_ms + ctx.hold_ms if kind == "RESERVE" else None,
            "reply_partition": ctx.partition, "reason": reason, "at": ctx.now_ms}


def _items(units: list[list[Any]]) -> dict[str, int]:
    items: dict[str, int] = {}
    for _line, sku, qty, _per in units:
        items[sku] = items.get(sku, 0) + qty
    return dict(sorted(items.items()))


def start(order_id: str, lines: list[dict[str, Any]], province: str | None, catalog: Catalog,
          ctx: Ctx, store: str | None = None) -> AllocOut:
    """First sight of an order's lines: plan the rounds and send the first one."""
    units = []
    for line in lines:
        for line_id, sku, qty in catalog.explode([line]):
            units.append([line_id, sku, qty, qty // max(int(line["quantity"]), 1)])
    units = [u for u in units if u[2] > 0]
    if not units:
        return AllocOut(None)
    # A store sale takes the store's own stock; online orders are routed.
    ranked, reason = ([store], f"store sale at {store}") if store else \
        catalog.route(province, ctx.policy)
    items = _items(units)
    rounds = [ranked] if len(items) == 1 or len(ranked) <= 1 else \
        [[w] for w in ranked] + [ranked]
    alloc = {"status": "PENDING", "attempt": -1, "rounds": rounds, "reason": reason,
             "warehouse": None, "units": units, "res": {}, "restores": {}, "since": ctx.now_ms,
             "shipped": False}
    return _round(alloc, order_id, 0, ctx)


def _round(alloc: dict[str, Any], order_id: str, attempt: int, ctx: Ctx) -> AllocOut:
    warehouses = alloc["rounds"][attempt]
    res = {f"{order_id}#{attempt}#{sku}": {"sku": sku, "qty": qty, "phase": "RESERVE",
                                            "ok": None, "wh": None}
           for sku, qty in _items(alloc["units"]).items()}
    alloc = {**alloc, "status": "PENDING", "attempt": attempt, "res": res, "since": ctx.now_ms}
    return AllocOut(alloc, [_command("RESERVE", rid, order_id, r["sku"], r["qty"], ctx,
                                     warehouses, _reason(alloc, "RESERVE"))
                            for rid, r in res.items()], changed=True)


def _reason(alloc: dict[str, Any], phase: str) -> str:
    """Why a phase's commands are sent; a resend says it again, word for word."""
    if phase == "RESERVE":
        # A refusal in a preference round is not an oversell attempt: later rounds
        # still try other warehouses. The stock side labels it so.
        last = alloc["attempt"] == len(alloc["rounds"]) - 1
        return "final_round" if last else PREFERENCE_ROUND
    return {"COMMIT": "order_paid", "RELEASE": "order_cancelled"}[phase]


def _phase(alloc: dict[str, Any], order_id: str, status: str, phase: str, ctx: Ctx,
           reason: str = "") -> AllocOut:
    res = {rid: {**r, "phase": phase, "ok": None} for rid, r in alloc["res"].items()}
    alloc = {**alloc, "status": status, "res": res, "since": ctx.now_ms}
    return AllocOut(alloc, [_command(phase, rid, order_id, r["sku"], r["qty"], ctx,
                                     [r["wh"]] if r["wh"] else [], reason)
                            for rid, r in res.items()], changed=True)


def settle(alloc: dict[str, Any] | None, order: dict[str, Any], event: dict[str, Any] | None,
           rank: int, catalog: Catalog, ctx: Ctx) -> AllocOut:
    """The order moved (or an answer completed a phase): what stock must follow."""
    order_id, status = order["order_id"], order["status"]
    if alloc is None:
        if status == "CANCELLED" or event is None or not event.get("lines"):
            return AllocOut(None)
        province = (event.get("receiver") or {}).get("province")
        store = None
        if event.get("channel") == "pos":
            store = catalog.store_warehouse(event.get("shop_id", ""))
            if store is None:
                return AllocOut(None)  # a store whose stock the POS keeps itself
        return start(order_id, event["lines"], province, catalog, ctx, store)
    out = AllocOut(alloc)
    if rank >= SHIPPED_RANK and status != "CANCELLED" and not alloc["shipped"]:
        alloc = {**alloc, "shipped": True}
        out = AllocOut(alloc, changed=True)
    state = alloc["status"]
    if state in ("PENDING", "RESERVED") and status == "CANCELLED":
        return _merge(out, _phase(alloc, order_id, "RELEASING", "RELEASE", ctx, "order_cancelled"))
    if state == "RESERVED" and rank >= PAID_RANK:
        return _merge(out, _phase(alloc, order_id, "COMMITTING", "COMMIT", ctx, "order_paid"))
    # COMMIT_FAILED too: the lines that were committed are stock taken all the same.
    taken = state in ("COMMITTED", "COMMIT_FAILED")
    if taken and status == "CANCELLED" and not alloc["shipped"]:
        return _merge(out, _restore(alloc, order_id, None, "cancelled_before_shipping",
                                    f"{order_id}/cancel", ctx))
    if taken and event is not None and _return_received(event):
        refund = event.get("refund") or {}
        ref = refund.get("refund_id") or event["event_id"]
        return _merge(out, _restore(alloc, order_id, refund.get("lines") or None,
                                    "return_received", ref, ctx))
    return out


def _return_received(event: dict[str, Any]) -> bool:
    refund = event.get("refund") or {}
    return event["event_type"] == "RETURN_RECEIVED" or refund.get("status") == "RETURN_RECEIVED"


def _restore(alloc: dict[str, Any], order_id: str, refund_lines: list[dict[str, Any]] | None,
             reason: str, ref: str, ctx: Ctx) -> AllocOut:
    """Stock back on hand: every unit, or the returned lines' units."""
    if refund_lines:
        returned = {rl["line_id"]: int(rl["quantity"]) for rl in refund_lines}
        wanted: dict[str, int] = {}
        for line_id, sku, _qty, per in alloc["units"]:
            if line_id in returned:
                wanted[sku] = wanted.get(sku, 0) + returned[line_id] * max(per, 1)
    else:
        wanted = _items(alloc["units"])
    restores, commands = dict(alloc["restores"]), []
    for rid, r in alloc["res"].items():
        qty = wanted.get(r["sku"], 0)
        cid = f"{rid}/RESTORE/{ref}"
        if qty <= 0 or cid in restores or not r["ok"]:  # a refused commit took nothing
            continue
        restores[cid] = {"res_id": rid, "sku": r["sku"], "qty": qty, "ok": None}
        commands.append(_command("RESTORE", rid, order_id, r["sku"], qty, ctx, [], reason, cid))
    if not commands:
        return AllocOut(alloc)
    return AllocOut({**alloc, "restores": restores, "since": ctx.now_ms}, commands, changed=True)


def _merge(first: AllocOut, second: AllocOut) -> AllocOut:
    return AllocOut(second.alloc, first.commands + second.commands, first.events + second.events,
                    second.alert or first.alert, first.changed or second.changed)


def on_reply(alloc: dict[str, Any] | None, order: dict[str, Any], reply: dict[str, Any],
             rank: int, catalog: Catalog, ctx: Ctx) -> AllocOut:
    """One SKU partition's answer."""
    order_id, rid, kind = order["order_id"], reply["reservation_id"], reply["kind"]
    if kind == "RESTORE":
        return _restore_answer(alloc, reply)
    current = (alloc or {}).get("res", {}).get(rid)
    if current is None or current["phase"] != kind:
        # A reservation this order does not hold (a stale round, a replay): give it back.
        if kind == "RESERVE" and reply["ok"] and current is None:
            return AllocOut(alloc, [_command("RELEASE", rid, order_id, reply["sku"],
                                             reply["quantity"], ctx, [], "stale_reservation")])
        return AllocOut(alloc)
    if current["ok"] is not None or alloc is None:
        return AllocOut(alloc)
    res = {**alloc["res"], rid: {**current, "ok": reply["ok"],
                                 "wh": reply["warehouse"] or current["wh"],
                                 "why": reply["reason"]}}
    alloc = {**alloc, "res": res}
    if any(r["ok"] is None for r in res.values()):
        return AllocOut(alloc, changed=True)
    return _complete(alloc, order, rank, catalog, ctx)


def _restore_answer(alloc: dict[str, Any] | None, reply: dict[str, Any]) -> AllocOut:
    if alloc is None:
        return AllocOut(None)
    restores = dict(alloc["restores"])
    for cid, r in restores.items():
        if r["res_id"] == reply["reservation_id"] and r["ok"] is None:
            restores[cid] = {**r, "ok": reply["ok"]}
            alloc = {**alloc, "restores": restores}
            if all(x["ok"] is not None for x in restores.values()) and all(
                    _restored_all(alloc)):
                alloc["status"] = "RESTORED"
            return AllocOut(alloc, changed=True)
    return AllocOut(alloc)


def _restored_all(alloc: dict[str, Any]) -> list[bool]:
    done: dict[str, int] = {}
    for r in alloc["restores"].values():
        if r["ok"]:
            done[r["sku"]] = done.get(r["sku"], 0) + r["qty"]
    return [done.get(sku, 0) >= qty for sku, qty in _items(alloc["units"]).items()]


def _complete(alloc: dict[str, Any], order: dict[str, Any], rank: int, catalog: Catalog,
              ctx: Ctx) -> AllocOut:
    """Every answer of the phase is in: decide."""
    order_id, res = order["order_id"], alloc["res"]
    phase = WAITING[alloc["status"]]
    if phase == "RELEASE":
        return AllocOut({**alloc, "status": "RELEASED"}, changed=True)
    if phase == "COMMIT":
        if all(r["ok"] for r in res.values()):
            done = AllocOut({**alloc, "status": "COMMITTED"}, changed=True)
            return _merge(done, settle(done.alloc, order, None, rank, catalog, ctx))
        failed = sorted(r["sku"] for r in res.values() if not r["ok"])
        return AllocOut({**alloc, "status": "COMMIT_FAILED"},
                        events=[_order_event("COMMIT_REJECTED", order_id, failed, alloc,
                                             "paid_after_hold_expired_stock_gone", ctx)],
                        alert="PAID_WITHOUT_STOCK", changed=True)
    if all(r["ok"] for r in res.values()):
        whs = sorted({r["wh"] for r in res.values()})
        split = len(alloc["rounds"]) > 1 and alloc["attempt"] == len(alloc["rounds"]) - 1 \
            and len(whs) > 1
        reason = alloc["reason"] + ("; split: no single warehouse had every line" if split
                                    else "; one warehouse for the order")
        done = AllocOut({**alloc, "status": "RESERVED", "warehouse": ",".join(whs),
                         "reason": reason},
                        events=[_order_event("ALLOCATED", order_id, list(_items(alloc["units"])),
                                             {**alloc, "warehouse": ",".join(whs)}, reason, ctx)],
                        changed=True)
        return _merge(done, settle(done.alloc, order, None, rank, catalog, ctx))
    # A refusal: give back what this round got, then the next round or the verdict.
    got = [_command("RELEASE", rid, order_id, r["sku"], r["qty"], ctx, [], "round_failed")
           for rid, r in res.items() if r["ok"]]
    if alloc["attempt"] + 1 < len(alloc["rounds"]) and order["status"] != "CANCELLED":
        nxt = _round(alloc, order_id, alloc["attempt"] + 1, ctx)
        return AllocOut(nxt.alloc, got + nxt.commands, changed=True)
    verdict = "BACKORDERED" if ctx.out_of_stock == "backorder" else "OUT_OF_STOCK"
    short = sorted(r["sku"] for r in res.values() if not r["ok"])
    if order["status"] == "CANCELLED":
        return AllocOut({**alloc, "status": "RELEASED"}, got, changed=True)
    return AllocOut({**alloc, "status": verdict}, got,
                    [_order_event(verdict, order_id, short, alloc, "insufficient_stock", ctx)],
                    alert=verdict, changed=True)


def _order_event(kind: str, order_id: str, skus: list[str], alloc: dict[str, Any], reason: str,
                 ctx: Ctx) -> dict[str, Any]:
    return {"kind": kind, "event_id": f"{order_id}#{alloc['attempt']}/{kind}",
            "sku": ",".join(skus), "warehouse": alloc.get("warehouse"), "reservation_id": None,
            "order_id": order_id, "quantity": sum(_items(alloc["units"]).values()),
            "on_hand": 0, "reserved": 0, "safety": 0, "available": 0, "reason": reason,
            "at": ctx.now_ms}


def resend(alloc: dict[str, Any] | None, order_id: str, ctx: Ctx,
           after_ms: int) -> AllocOut:
    """Commands still unanswered after ``after_ms``: send them again (idempotent)."""
    if alloc is None or ctx.now_ms - alloc["since"] < after_ms:
        return AllocOut(alloc)
    commands = []
    if alloc["status"] in WAITING:
        warehouses = alloc["rounds"][alloc["attempt"]]
        for rid, r in alloc["res"].items():
            if r["ok"] is None:
                whs = warehouses if r["phase"] == "RESERVE" else ([r["wh"]] if r["wh"] else [])
                commands.append(_command(r["phase"], rid, order_id, r["sku"], r["qty"], ctx,
                                         whs, _reason(alloc, r["phase"])))
    for cid, r in alloc["restores"].items():
        if r["ok"] is None:
            commands.append(_command("RESTORE", r["res_id"], order_id, r["sku"], r["qty"], ctx,
                                     [], "resend", cid))
    if not commands:
        return AllocOut(alloc)
    return AllocOut({**alloc, "since": ctx.now_ms}, commands, changed=True)
