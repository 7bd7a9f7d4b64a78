"""Available-to-promise stock, one SKU at a time. Pure.

The stock agent holds one Faust table (``stock``) written in the SKU's
partition of ``inventory.commands``; every command for a SKU passes through
that one partition, so check-and-reserve is serialized without locks. Keys:

- ``<sku>``: the level entry, ``{"sku", "seq", "wh": {warehouse: [on_hand,
  reserved, safety]}, "oversold": bool, "last": [[key, record | None], ...]}``.
  Its size does not depend on how many reservations are open: Faust sends the
  whole entry to the changelog on every write, and a flash sale's SKU holds
  thousands (inside the entry, at about 67 bytes each, 15,000 would pass the
  producer's 1 MB request limit).
- ``O:<reservation_id>``: an open reservation, ``{"order_id", "sku", "wh",
  "qty", "expires_at", "seq"}``; its units are in its row's ``reserved``.
- ``R:<reservation_id>``: a reservation that ended (committed, released,
  expired, restored, commit rejected) or was refused: what answers a
  re-delivered command.
- ``A:<adjustment_id>``: an applied warehouse adjustment (applied once).

A change that touches the level and side records writes the level first,
carrying the side records in ``last`` (``[key, None]``: delete the key), then
the side records; ``repair`` completes what the level carries but the table
lacks (a record missing or older, a deleted key still there). Changelog writes
keep their order within a partition, so after a crash either all are there, or
the level and some of its side records (and repair completes them), or none
(and the re-delivered command applies it): never applied twice.

The table (Faust's producer, to the changelog) and the ledger, replies and levels
(the output producer) are written by two producers, so at a crash either can be
ahead of the other. A re-delivered command that finds its own change in effect
therefore sends that change's ledger event again, with the same ``event_id``
(``<command_id>/<kind>``) and the levels as they are now; the ledger is keyed by
event id downstream, so a copy collapses. What an event needs that the command
does not carry (a refusal's reason, how a commit was made, whether an adjustment
oversold) is kept on the ``R:``/``A:`` record.

Every function takes ``get`` (the table lookup) and returns what to write and
send; the agent does the I/O. The sweep, which scans its partition's entries
anyway, finds the open reservations for ``expire`` and ``audit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from orderpulse.errors import InputError

Get = Callable[[str], dict[str, Any] | None]
Write = tuple[str, dict[str, Any] | None]  # (key, value); None deletes the key
SIDE = ("O:", "R:", "A:")  # key prefixes of the records next to the levels
ON_HAND, RESERVED, SAFETY = 0, 1, 2
NOT_IN_PREFERRED = "not_in_preferred_warehouse"
TERMINAL = frozenset({"COMMITTED", "RELEASED", "EXPIRED", "RESTORED", "COMMIT_REJECTED",
                      "RESERVE_REJECTED"})


@dataclass
class StockOut:
    """What one command did: table writes (in order; None deletes), records to send."""

    writes: list[Write] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # InventoryEvent
    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (partition, reply)
    level: dict[str, Any] | None = None  # StockLevel to publish
    violations: list[str] = field(default_factory=list)  # audit failures (sweep)


def available(row: list[int]) -> int:
    return row[ON_HAND] - row[RESERVED] - row[SAFETY]


def is_level(key: str) -> bool:
    """Whether a ``stock`` key is a SKU's level entry (not a side record)."""
    return key[:2] not in SIDE


def new_level(sku: str) -> dict[str, Any]:
    return {"sku": sku, "seq": 0, "wh": {}, "oversold": False, "last": []}


def repair(get: Get, level: dict[str, Any] | None) -> list[Write]:
    """Side writes the level carries but the table lacks (a crash between the writes)."""
    if not level:
        return []
    missing: list[Write] = []
    for key, record in level.get("last", []):
        have = get(key)
        if record is None:
            if have is not None:
                missing.append((key, None))
        elif have is None or have.get("seq", -1) < record["seq"]:
            missing.append((key, record))
    return missing


def stock_level(level: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The ``StockLevel`` record of a level entry (the channel-facing figure)."""
    rows = [{"warehouse": w, "on_hand": r[ON_HAND], "reserved": r[RESERVED],
             "safety": r[SAFETY], "available": available(r)}
            for w, r in sorted(level["wh"].items())]
    return {"sku": level["sku"], "available_to_sell": sum(max(r["available"], 0) for r in rows),
            "warehouses": rows, "version": level["seq"], "at": now_ms}


def _event(kind: str, cmd: dict[str, Any], level: dict[str, Any], wh: str | None, qty: int,
           reason: str, now_ms: int, reservation_id: str | None = None,
           order_id: str | None = None) -> dict[str, Any]:
    row = level["wh"].get(wh, [0, 0, 0]) if wh else [0, 0, 0]
    return {"kind": kind, "event_id": f"{cmd['command_id']}/{kind}", "sku": level["sku"],
            "warehouse": wh, "reservation_id": reservation_id or cmd.get("reservation_id"),
            "order_id": order_id or cmd.get("order_id"), "quantity": qty,
            "on_hand": row[ON_HAND], "reserved": row[RESERVED], "safety": row[SAFETY],
            "available": available(row), "reason": reason, "at": now_ms}


def _reply(cmd: dict[str, Any], ok: bool, reason: str, wh: str | None, now_ms: int,
           qty: int | None = None) -> list[tuple[int, dict[str, Any]]]:
    if cmd.get("reply_partition", -1) < 0 or not cmd.get("order_id"):
        return []
    return [(cmd["reply_partition"], {
        "kind": cmd["kind"], "order_id": cmd["order_id"], "reservation_id": cmd["reservation_id"],
        "sku": cmd["sku"], "quantity": cmd["quantity"] if qty is None else qty, "ok": ok,
        "warehouse": wh, "reason": reason, "at": now_ms})]


def _bump(level: dict[str, Any], side: list[Write]) -> StockOut:
    """Level first (carrying the side writes), then the side writes."""
    level["seq"] += 1
    stamped = [(key, None if record is None else {**record, "seq": level["seq"]})
               for key, record in side]
    level["last"] = [[key, record] for key, record in stamped]
    return StockOut(writes=[(level["sku"], level), *stamped])


def _copy(level: dict[str, Any]) -> dict[str, Any]:
    return {**level, "wh": {w: list(r) for w, r in level["wh"].items()},
            "last": list(level.get("last", []))}


def _close(res_id: str, ended: dict[str, Any]) -> list[Write]:
    """An open reservation ends: its ``R:`` record, then its ``O:`` key goes."""
    return [(f"R:{res_id}", ended), (f"O:{res_id}", None)]


def _ended(res_id: str, state: str, order_id: str, sku: str, wh: str, qty: int, now_ms: int,
           restored: int = 0) -> dict[str, Any]:
    return {"state": state, "reservation_id": res_id, "order_id": order_id, "sku": sku,
            "wh": wh, "qty": qty, "restored": restored, "at": now_ms}


def as_command(decoded: dict[str, Any]) -> dict[str, Any]:
    """A decoded ``InventoryCommand`` with its times as epoch ms (Avro gives datetimes);
    one the schema admits but no handler can apply is bad input."""
    if decoded["kind"] == "ADJUST" and not decoded.get("warehouses"):
        raise InputError("ADJUST names no warehouse", reason="missing_field")
    return {**decoded, **{k: _epoch_ms(decoded.get(k)) for k in ("at", "expires_at")}}


def _epoch_ms(value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def handle(get: Get, cmd: dict[str, Any], now_ms: int) -> StockOut:
    """Apply one command for ``cmd["sku"]``; idempotent under re-delivery."""
    fixes = repair(get, get(cmd["sku"]))
    out = _HANDLERS[cmd["kind"]](get, fixes, cmd, now_ms)
    out.writes[:0] = fixes
    return out


def _level_of(get: Get, fixes: list[Write], sku: str) -> dict[str, Any]:
    level = get(sku)
    return _copy(level) if level else new_level(sku)


def _side(get: Get, fixes: list[Write], key: str) -> dict[str, Any] | None:
    """A side record as it is once ``fixes`` are written (None: absent or being deleted)."""
    for k, record in fixes:
        if k == key:
            return record
    return get(key)


def _reserve(get: Get, fixes: list, cmd: dict[str, Any], now_ms: int) -> StockOut:
    level, res_id, qty = _level_of(get, fixes, cmd["sku"]), cmd["reservation_id"], cmd["quantity"]
    hold = _side(get, fixes, f"O:{res_id}")
    if hold is not None:
        return StockOut(replies=_reply(cmd, True, "already_reserved", hold["wh"], now_ms),
                        events=[_event("RESERVED", cmd, level, hold["wh"], hold["qty"], "",
                                       now_ms)])
    ended = _side(get, fixes, f"R:{res_id}")
    if ended is not None:
        ok = ended["state"] in ("COMMITTED", "RESTORED")
        out = StockOut(replies=_reply(cmd, ok, f"already_{ended['state'].lower()}",
                                      ended["wh"], now_ms))
        if ended["state"] == "RESERVE_REJECTED" and "reason" in ended:
            out.events.append(_event("RESERVE_REJECTED", cmd, level, ended.get("first"),
                                     ended["qty"], ended["reason"], now_ms))
        return out
    for wh in cmd["warehouses"] or sorted(level["wh"]):
        row = level["wh"].get(wh)
        if row is not None and available(row) >= qty:
            row[RESERVED] += qty
            hold = {"order_id": cmd["order_id"], "sku": cmd["sku"], "wh": wh, "qty": qty,
                    "expires_at": cmd["expires_at"] or 0}
            out = _bump(level, [(f"O:{res_id}", hold)])
            out.events.append(_event("RESERVED", cmd, level, wh, qty, "", now_ms))
            out.replies = _reply(cmd, True, "reserved", wh, now_ms)
            out.level = stock_level(level, now_ms)
            return out
    reason = "insufficient_stock" if level["wh"] else "unknown_sku"
    if cmd.get("reason") == "preference_round":
        reason = NOT_IN_PREFERRED  # later rounds try elsewhere: not an oversell attempt
    first = (cmd["warehouses"] or sorted(level["wh"]) or [None])[0]
    # The refusal is recorded like any answer: a copy of this command that comes
    # after stock arrived (a resend, a retry) must not reserve units the order has
    # already counted as refused; nobody would own them until the hold expired.
    record = {**_ended(res_id, "RESERVE_REJECTED", cmd["order_id"] or "", cmd["sku"], "", qty,
                       now_ms), "reason": reason, "first": first, "seq": level["seq"]}
    return StockOut(writes=[(f"R:{res_id}", record)],
                    events=[_event("RESERVE_REJECTED", cmd, level, first, qty, reason, now_ms)],
                    replies=_reply(cmd, False, reason, None, now_ms))


def _commit(get: Get, fixes: list, cmd: dict[str, Any], now_ms: int) -> StockOut:
    level, res_id = _level_of(get, fixes, cmd["sku"]), cmd["reservation_id"]
    hold = _side(get, fixes, f"O:{res_id}")
    if hold is not None:
        wh, qty = hold["wh"], hold["qty"]
        row = level["wh"][wh]
        row[RESERVED] -= qty
        row[ON_HAND] -= qty
        out = _bump(level, _close(res_id, _ended(res_id, "COMMITTED", hold["order_id"],
                                                 cmd["sku"], wh, qty, now_ms)))
        out.events.append(_event("COMMITTED", cmd, level, wh, qty, "", now_ms))
        out.replies = _reply(cmd, True, "committed", wh, now_ms, qty)
        out.level = stock_level(level, now_ms)
        return out
    ended = _side(get, fixes, f"R:{res_id}")
    if ended is not None and ended["state"] in ("COMMITTED", "RESTORED", "COMMIT_REJECTED"):
        ok = ended["state"] != "COMMIT_REJECTED"
        out = StockOut(replies=_reply(cmd, ok, f"already_{ended['state'].lower()}",
                                      ended["wh"], now_ms, ended["qty"]))
        if ok:  # committed (restored since, or not): the commit's own event
            out.events.append(_event("COMMITTED", cmd, level, ended["wh"], ended["qty"],
                                     ended.get("how", ""), now_ms))
        else:
            out.events.append(_event("COMMIT_REJECTED", cmd, level, ended["wh"] or None,
                                     ended["qty"], "reservation_expired_no_stock", now_ms))
        return out
    # Paid after the reservation expired (or was released): the stock is
    # re-checked, and a payment without stock is flagged, never oversold.
    qty = ended["qty"] if ended and ended["qty"] else cmd["quantity"]
    prefer = [ended["wh"]] if ended and ended["wh"] else []
    for wh in [*prefer, *(w for w in cmd["warehouses"] or sorted(level["wh"]) if w not in prefer)]:
        row = level["wh"].get(wh)
        if row is not None and available(row) >= qty:
            row[ON_HAND] -= qty
            record = {**_ended(res_id, "COMMITTED", cmd["order_id"], cmd["sku"], wh, qty,
                               now_ms), "how": "recommitted_after_expiry"}
            out = _bump(level, [(f"R:{res_id}", record)])
            out.events.append(_event("COMMITTED", cmd, level, wh, qty,
                                     "recommitted_after_expiry", now_ms))
            out.replies = _reply(cmd, True, "recommitted_after_expiry", wh, now_ms, qty)
            out.level = stock_level(level, now_ms)
            return out
    wh = prefer[0] if prefer else None
    record = _ended(res_id, "COMMIT_REJECTED", cmd["order_id"], cmd["sku"], wh or "", qty, now_ms)
    record["seq"] = level["seq"]
    return StockOut(writes=[(f"R:{res_id}", record)],
                    events=[_event("COMMIT_REJECTED", cmd, level, wh, qty,
                                   "reservation_expired_no_stock", now_ms)],
                    replies=_reply(cmd, False, "reservation_expired_no_stock", wh, now_ms, qty))


def _release(get: Get, fixes: list, cmd: dict[str, Any], now_ms: int) -> StockOut:
    level, res_id = _level_of(get, fixes, cmd["sku"]), cmd["reservation_id"]
    hold = _side(get, fixes, f"O:{res_id}")
    if hold is not None:
        wh, qty = hold["wh"], hold["qty"]
        level["wh"][wh][RESERVED] -= qty
        out = _bump(level, _close(res_id, _ended(res_id, "RELEASED", hold["order_id"],
                                                 cmd["sku"], wh, qty, now_ms)))
        out.events.append(_event("RELEASED", cmd, level, wh, qty, cmd.get("reason", ""), now_ms))
        out.replies = _reply(cmd, True, "released", wh, now_ms, qty)
        out.level = stock_level(level, now_ms)
        return out
    ended = _side(get, fixes, f"R:{res_id}")
    if ended is not None:
        out = StockOut(replies=_reply(cmd, True, f"already_{ended['state'].lower()}",
                                      ended["wh"], now_ms, 0))
        if ended["state"] == "RELEASED" and ended["qty"]:  # not the marker below
            out.events.append(_event("RELEASED", cmd, level, ended["wh"], ended["qty"],
                                     cmd.get("reason", ""), now_ms))
        return out
    # Released before it was reserved (never, in order; after a crash, maybe):
    # a marker makes the late reservation answer "already released".
    record = _ended(res_id, "RELEASED", cmd["order_id"] or "", cmd["sku"], "", 0, now_ms)
    record["seq"] = level["seq"]
    return StockOut(writes=[(f"R:{res_id}", record)],
                    replies=_reply(cmd, True, "released_unknown", None, now_ms, 0))


def _restore(get: Get, fixes: list, cmd: dict[str, Any], now_ms: int) -> StockOut:
    level, res_id = _level_of(get, fixes, cmd["sku"]), cmd["reservation_id"]
    ended = _side(get, fixes, f"R:{res_id}")
    done_key = f"A:{cmd['command_id']}"
    if ended is None or ended["state"] not in ("COMMITTED", "RESTORED"):
        state = "open" if _side(get, fixes, f"O:{res_id}") is not None \
            else (ended or {}).get("state", "unknown")
        return StockOut(replies=_reply(cmd, False, f"not_committed_{state.lower()}",
                                       None, now_ms, 0))
    done = _side(get, fixes, done_key)
    if done is not None:
        return StockOut(replies=_reply(cmd, True, "already_restored", ended["wh"], now_ms, 0),
                        events=[_event("RESTORED", cmd, level, ended["wh"], done.get("qty", 0),
                                       cmd.get("reason", ""), now_ms)])
    qty = min(cmd["quantity"], ended["qty"] - ended.get("restored", 0))
    wh = ended["wh"]
    level["wh"].setdefault(wh, [0, 0, 0])[ON_HAND] += qty
    restored = ended.get("restored", 0) + qty
    record = _ended(res_id, "RESTORED" if restored >= ended["qty"] else "COMMITTED",
                    ended["order_id"], cmd["sku"], wh, ended["qty"], now_ms, restored)
    # The marker keeps the quantity: the event a crash loses is rebuilt from it.
    out = _bump(level, [(f"R:{res_id}", record), (done_key, {"at": now_ms, "qty": qty})])
    out.events.append(_event("RESTORED", cmd, level, wh, qty, cmd.get("reason", ""), now_ms))
    out.replies = _reply(cmd, True, "restored", wh, now_ms, qty)
    out.level = stock_level(level, now_ms)
    return out


def _adjust(get: Get, fixes: list, cmd: dict[str, Any], now_ms: int) -> StockOut:
    level, key = _level_of(get, fixes, cmd["sku"]), f"A:{cmd['command_id']}"
    wh = cmd["warehouses"][0]
    done = _side(get, fixes, key)
    if done is not None:  # applied once; its events again (see the module docstring)
        return StockOut(events=_adjusted(cmd, level, wh, done.get("oversold", 0), now_ms))
    row = level["wh"].setdefault(wh, [0, 0, 0])
    before = available(row)
    mode, qty = cmd["adjust_mode"], cmd["quantity"]
    if mode == "SET":
        row[ON_HAND] = qty
    elif mode == "DELTA":
        row[ON_HAND] += qty
    else:
        row[SAFETY] = qty
    # A count below what is promised: the only way available goes negative, and
    # it is recorded as an oversell, never silent. Per row that goes below zero,
    # not per flag: the SKU's flag outlives an oversell that a release or an
    # expiry ended, and the next one would pass unrecorded.
    oversold = -available(row) if available(row) < 0 <= before else 0
    out = _bump(level, [(key, {"at": now_ms, "oversold": oversold})])
    out.events = _adjusted(cmd, level, wh, oversold, now_ms)
    level["oversold"] = any(available(r) < 0 for r in level["wh"].values())
    out.level = stock_level(level, now_ms)
    return out


def _adjusted(cmd: dict[str, Any], level: dict[str, Any], wh: str, oversold: int,
              now_ms: int) -> list[dict[str, Any]]:
    events = [_event("ADJUSTED", cmd, level, wh, cmd["quantity"],
                     f"{cmd['adjust_mode']}:{cmd.get('reason', '')}", now_ms)]
    if oversold:
        events.append(_event("OVERSOLD", cmd, level, wh, oversold,
                             "adjustment_below_reserved", now_ms))
    return events


_HANDLERS: dict[str, Callable[[Get, list, dict[str, Any], int], StockOut]] = {
    "RESERVE": _reserve, "COMMIT": _commit, "RELEASE": _release, "RESTORE": _restore,
    "ADJUST": _adjust,
}


def holds_by_sku(entries: Iterable[tuple[str, dict[str, Any] | None]]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """The open reservations among table entries: ``{sku: {reservation_id: hold}}``."""
    holds: dict[str, dict[str, dict[str, Any]]] = {}
    for key, value in entries:
        if key[:2] == "O:" and value:
            holds.setdefault(value["sku"], {})[key[2:]] = value
    return holds


def due(holds: dict[str, dict[str, Any]], now_ms: int) -> list[str]:
    """The reservations among ``holds`` past their expiry (0: none)."""
    return [rid for rid, hold in holds.items()
            if hold["expires_at"] and hold["expires_at"] <= now_ms]


def after(holds: dict[str, dict[str, Any]], writes: Iterable[Write]) -> dict[str, dict[str, Any]]:
    """One SKU's ``holds`` once ``writes`` (that SKU's) are in the table."""
    holds = dict(holds)
    for key, value in writes:
        if key[:2] == "O:":
            if value is None:
                holds.pop(key[2:], None)
            else:
                holds[key[2:]] = value
    return holds


def expire(get: Get, sku: str, due_ids: Iterable[str], now_ms: int) -> StockOut:
    """Release the SKU's reservations among ``due_ids`` that are open and past expiry.

    The caller finds the ids (the sweep scans its partition); each is looked up
    again here. One level write per reservation, with its ``R:`` record and the
    deletion of its ``O:`` key: a flash sale's holds expire together, and one
    ``last`` carrying them all would be as large as the old level entry.
    """
    fixes = repair(get, get(sku))
    level = _level_of(get, fixes, sku)
    out = StockOut(writes=list(fixes))
    holds = {rid: hold for rid in due_ids
             if (hold := _side(get, fixes, f"O:{rid}")) is not None and hold["sku"] == sku
             and hold["expires_at"] and hold["expires_at"] <= now_ms}
    for rid, hold in sorted(holds.items(), key=lambda item: (item[1]["expires_at"], item[0])):
        level = _copy(level)  # the previous write keeps its own copy
        wh, qty = hold["wh"], hold["qty"]
        level["wh"][wh][RESERVED] -= qty
        out.writes += _bump(level, _close(rid, _ended(rid, "EXPIRED", hold["order_id"], sku, wh,
                                                      qty, now_ms))).writes
        cmd = {"command_id": f"{rid}/EXPIRE", "reservation_id": rid,
               "order_id": hold["order_id"]}
        out.events.append(_event("EXPIRED", cmd, level, wh, qty, "hold_expired", now_ms))
    if holds:
        out.level = stock_level(level, now_ms)
    return out


def audit(level: dict[str, Any], holds: Iterable[dict[str, Any]]) -> list[str]:
    """The invariants one level entry and its SKU's open reservations must hold."""
    problems = []
    held: dict[str, int] = {}
    for hold in holds:
        held[hold["wh"]] = held.get(hold["wh"], 0) + hold["qty"]
    for wh in sorted(set(level["wh"]) | set(held)):
        row = level["wh"].get(wh, [0, 0, 0])
        if row[RESERVED] != held.get(wh, 0):
            problems.append(f"{level['sku']}@{wh}: reserved {row[RESERVED]} != open "
                            f"reservations {held.get(wh, 0)}")
        if available(row) < 0 and not level["oversold"]:
            problems.append(f"{level['sku']}@{wh}: available {available(row)} without an "
                            "oversell record")
    return problems


def prune(entries: Iterable[tuple[str, dict[str, Any]]], now_ms: int,
          retention_ms: int) -> list[str]:
    """Ended reservations and applied adjustments older than the retention: keys to delete.

    Never an open reservation (``O:``): it ends by commit, release or expiry.
    """
    return [key for key, value in entries
            if key[:2] in ("R:", "A:") and value and value["at"] < now_ms - retention_ms]
