"""Checkers of a coordination-service run (``paxos chaos --service kv``).

They read what the run observed at its edges:

* the history: every API operation of every client, with the commands its client sent
  through the log and the results it got back (traced by :mod:`chaos.kvload`);
* the observations: every node's deliveries, merged into the one agreed order
  (:func:`chaos.checkers.build_order`, which the ``agreement`` verdict judges);
* the service's own reports of what changed under the watched prefixes (watches).

The agreed order is **replayed** through a fresh
:class:`~paxos.coord.machine.CoordMachine`, the deterministic machine every node runs:
its result at an index is the one result every correct replica gives there, whatever
the faults did. The verdicts:

``at-most-once``
    no (session, seq) is in the order twice, no two calls name one index, and no
    operation's command took effect twice (a client that resends a command as a new
    one after a timeout applies it twice);
``results``
    every result a client got is the replay's result at the index its call committed at:
    the command there is the call's own (same session, seq and payload), the result
    names that index, and ok, reason, session, version, value and token are the replay's;
``real-time``
    an operation that returned before another was invoked has its commands ordered
    before the other's;
``linearizable``
    the plain keys and the keys locks guard, as registers, from the values the clients
    observed only (put, fenced put and an ok compare-and-set write; delete writes
    nothing; get reads, and so does a delete that found nothing; unknown outcomes may
    take effect at any time after their call, or never), by
    :func:`~chaos.linearizability.check_register`;
``stale-reads``
    a stale read (one replica's state) returned a value some write wrote, at the
    version it says;
``locks``
    every fenced write the service accepted carried the token of the lock as it stood at
    the write's index (and none was refused that did); a client told it holds a lock
    with token ``t`` was granted that lock at index ``t`` in the log; a lock never has two
    holders; the service's own reports of grants and releases are the replay's;
``ephemerals``
    an ephemeral key vanishes exactly at the index where the log ends its owner's session
    (expiry or close), no sooner, no later, and the service's own reports of its changes
    are the replay's.

Like :mod:`chaos.checkers`, none raises on bad input: a malformed record is a violation
of the verdict that reads it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.checkers import Order, Verdict, build_order, check_agreement, check_fifo
from chaos.history import Op
from chaos.kvload import EPHEMERAL_PREFIX, LOCK_PREFIX, PROBE_KEY, WATCHED
from chaos.linearizability import DEFAULT_MAX_STEPS, RegisterOp, check_register
from paxos.coord.commands import CoordCommand, CoordDecodeError, Delete, Put, decode
from paxos.coord.machine import (
    CLOSED,
    DELETE,
    EXPIRED,
    GRANT,
    OPENED,
    PUT,
    RELEASE,
    VANISH,
    Change,
    CoordMachine,
    Result,
)
from paxos.types import Command, Delivery

Observations = Mapping[str, Mapping[int, Command]]
#: A watcher's report: {"prefix", "changes": [[index, kind, key, session, version, value
#: hex]], "gaps": [[since, earliest]], "through": last index read, "full": bool}.
Watch = Mapping[str, Any]


@dataclass(slots=True)
class Call:
    """One command an operation sent, as its client traced it."""

    op: Op
    payload: bytes
    client: str
    seq: int
    index: int | None  # where it committed (None: not known to the client)
    answered: bool  # a result came back (``result`` None: the node no longer knew it)
    result: dict[str, Any] | None

    @property
    def command(self) -> CoordCommand | None:
        try:
            return decode(self.payload)
        except CoordDecodeError:
            return None


def calls_of(op: Op) -> list[Call]:
    """The calls an operation traced; raises ValueError/TypeError/KeyError on a bad record."""
    out = []
    for c in op.calls or ():
        index = c.get("index")
        if c.get("result") is not None and not isinstance(c["result"], dict):
            raise TypeError("a result is an object")
        out.append(Call(
            op, bytes.fromhex(c["payload"]), str(c["client"]), int(c["seq"]),
            None if index is None else int(index), "result" in c, c.get("result"),
        ))
    return out


def result_dict(r: Result | BaseException) -> dict[str, Any]:
    """A replayed result, shaped as the client records it (a replica whose apply raised
    answers as :func:`broadcast.kv.wire.encode_result` does)."""
    if isinstance(r, BaseException):
        reason = f"error: {type(r).__name__}"[:200]
        return {"index": 0, "ok": False, "reason": reason, "session": 0, "version": 0,
                "value": None, "token": 0}
    return {
        "index": r.index, "ok": r.ok, "reason": r.reason, "session": r.session,
        "version": r.version, "value": None if r.value is None else r.value.hex(),
        "token": r.token,
    }


def show_command(payload: bytes) -> str:
    try:
        text = repr(decode(payload))
    except CoordDecodeError:
        text = repr(payload[:40])
    return text if len(text) <= 120 else text[:117] + "..."


def show_result(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "no result"
    if "undecodable" in row:
        return f"undecodable result {row['undecodable'][:40]}"
    parts = [f"ok={row.get('ok')}"]
    if row.get("reason"):
        parts.append(f"reason={row.get('reason')!r}")
    for name in ("session", "version", "token"):
        if row.get(name):
            parts.append(f"{name}={row.get(name)}")
    if row.get("value") is not None:
        parts.append(f"value={bytes.fromhex(row['value'])[:30]!r}")
    parts.append(f"index={row.get('index')}")
    return "{" + ", ".join(parts) + "}"


def show_op(op: Op) -> str:
    key = f" {op.key!r}" if op.key else ""
    return f"op {op.id} ({op.kind}{key} by {op.client})"


# ---------------------------------------------------------------------- the replay


@dataclass(slots=True)
class Replay:
    """The agreed order, applied to a fresh machine."""

    end: int = 0  # the last index applied (the order's end, or before its first hole)
    hole: int | None = None  # the first index nobody observed (the replay stops there)
    results: dict[int, Result | BaseException] = field(default_factory=dict)  # wanted only
    #: Fenced writes: index -> (holder, token) of the fence's lock just before it, or None.
    fences: dict[int, tuple[int, int] | None] = field(default_factory=dict)
    #: Session changes, and changes of keys and locks under the watched prefixes.
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0


def replay(order: Order, wanted: Iterable[int]) -> Replay:
    started = time.perf_counter()
    want = set(wanted)
    out = Replay()
    machine = CoordMachine()
    for index, command in enumerate(order.commands, start=1):
        if command is None:
            out.hole = index
            break
        try:
            decoded: CoordCommand | None = decode(command.payload)
        except CoordDecodeError:
            decoded = None
        if isinstance(decoded, Put | Delete) and decoded.fence is not None:
            info = machine.lock(decoded.fence[0])
            out.fences[index] = None if info is None or not info.holder else (
                info.holder, info.token)
        result: Result | BaseException
        try:
            result = machine.apply(Delivery(index, 0, command))
        except Exception as exc:  # a node's apply would have failed alike: its result
            result = exc
        if index in want:
            out.results[index] = result
        if isinstance(result, Result):
            for change in result.changes:
                if not change.key or change.key.startswith(WATCHED):
                    out.changes.append(change)
        out.end = index
    out.seconds = time.perf_counter() - started
    return out


# ---------------------------------------------------------------------- the checks


def check_at_most_once(ops: Sequence[Op], calls: Sequence[Call], order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("at-most-once", checked=len(order.commands))
    where: dict[tuple[str, int], int] = {}
    for index, command in enumerate(order.commands, start=1):
        if command is None:
            continue
        key = (command.client, command.seq)
        if key in where:
            verdict.violate(
                f"{command.client}#{command.seq} is in the order twice, at {where[key]} "
                f"and {index}"
            )
        else:
            where[key] = index
    claimed: dict[int, Call] = {}
    for call in calls:
        if call.index is None:
            continue
        other = claimed.get(call.index)
        if other is not None and other is not call:
            verdict.violate(
                f"{show_op(call.op)} and {show_op(other.op)} both committed at index "
                f"{call.index}"
            )
        claimed[call.index] = call
    per_op: dict[int, list[Call]] = {}
    for call in calls:
        per_op.setdefault(call.op.id, []).append(call)
    twice = 0
    for op_calls in per_op.values():
        verdict.checked += 1
        applied: dict[bytes, set[int]] = {}
        for call in op_calls:
            # Not known to the client: where its (session, seq) landed, if anywhere.
            index = call.index or where.get((call.client, call.seq), 0)
            command = order.commands[index - 1] if 1 <= index <= len(order.commands) else None
            if command is None or command.payload != call.payload:
                continue
            applied.setdefault(call.payload, set()).add(index)
        for payload, indexes in applied.items():
            if len(indexes) > 1:
                twice += 1
                op = op_calls[0].op
                verdict.violate(
                    f"{show_op(op)}: its command {show_command(payload)} took effect "
                    f"{len(indexes)} times, at indexes {sorted(indexes)} (sent as "
                    + ", ".join(f"{c.client}#{c.seq}" for c in op_calls
                                if c.payload == payload) + ")"
                )
    verdict.notes = f"{len(where)} commands in the order; {twice} applied more than once"
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_results(calls: Sequence[Call], order: Order, rp: Replay) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("results")
    owner: dict[int, Call] = {c.index: c for c in calls if c.index is not None}
    beyond = 0
    for call in calls:
        index = call.index
        if index is None:
            continue
        if index > rp.end:
            beyond += 1
            continue
        verdict.checked += 1
        if index < 1:
            verdict.violate(f"{show_op(call.op)} was acknowledged at index {index}")
            continue
        command = order.commands[index - 1]
        assert command is not None  # (the replay stops at the first hole)
        if (command.client, command.seq, command.payload) != (
            call.client, call.seq, call.payload
        ):
            verdict.violate(
                f"{show_op(call.op)} was acknowledged at index {index} as {call.client}#"
                f"{call.seq} {show_command(call.payload)}, but index {index} holds "
                f"{command.client}#{command.seq} {show_command(command.payload)}"
            )
            continue
        if not call.answered or call.result is None:
            continue  # committed; its result unknown to the client (nothing to compare)
        got = call.result
        named = got.get("index")
        if named != index:
            there = order.commands[named - 1] if isinstance(named, int) and (
                1 <= named <= len(order.commands)) else None
            whose = owner.get(named) if isinstance(named, int) else None
            what = "" if there is None else (
                f", which holds {there.client}#{there.seq} {show_command(there.payload)}"
                + (f" ({show_op(whose.op)})" if whose is not None else "")
            )
            verdict.violate(
                f"{show_op(call.op)} committed {show_command(call.payload)} at index "
                f"{index}, but the result it got, {show_result(got)}, names index "
                f"{named}{what}: another command's result"
            )
            continue
        want = result_dict(rp.results[index])
        if {k: got.get(k) for k in want} != want:
            verdict.violate(
                f"{show_op(call.op)} got {show_result(got)} for "
                f"{show_command(call.payload)} at index {index}; the log gives "
                f"{show_result(want)}"
            )
    verdict.notes = f"results of {verdict.checked} calls compared with the replay"
    if beyond:
        verdict.notes += f"; {beyond} beyond index {rp.end} not checked"
        if verdict.ok:
            verdict.ok = None
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_real_time(ops: Sequence[Op], calls: Sequence[Call]) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("real-time")
    span: dict[int, tuple[int, int, Op]] = {}
    for call in calls:
        if call.index is None:
            continue
        lo, hi, op = span.get(call.op.id, (call.index, call.index, call.op))
        span[call.op.id] = (min(lo, call.index), max(hi, call.index), op)
    done = sorted(
        (op.complete_ns, hi, op) for lo, hi, op in span.values()
        if op.outcome == "ok" and op.complete_ns is not None
    )
    completes = [t for t, _, _ in done]
    best: list[tuple[int, Op]] = []  # prefix maximum of the last index, and its op
    for _, hi, op in done:
        best.append((hi, op) if not best or hi > best[-1][0] else best[-1])
    for lo, _, op in span.values():
        verdict.checked += 1
        before = bisect.bisect_left(completes, op.invoke_ns)  # completed strictly earlier
        if before and best[before - 1][0] > lo:
            highest, culprit = best[before - 1]
            verdict.violate(
                f"{show_op(culprit)} returned before {show_op(op)} was invoked, yet its "
                f"command at index {highest} is ordered after the other's at {lo}"
            )
    verdict.seconds = time.perf_counter() - started
    return verdict


def register_ops(ops: Sequence[Op]) -> dict[str, list[RegisterOp]]:
    """Per plain or guarded key, the operations as register reads and writes, from what
    the clients observed only."""
    per_key: dict[str, list[RegisterOp]] = {}
    for op in ops:
        if op.kind not in ("put", "fput", "get", "delete", "cas") or op.outcome not in (
            "ok", "unknown"
        ):
            continue
        if op.key.startswith(EPHEMERAL_PREFIX):
            continue  # (they vanish with their sessions: the ephemerals verdict's)
        ok = op.outcome == "ok"
        ret = op.complete_ns if ok else None
        refused = "refused" in op.extra or "lost" in op.extra or "waited" in op.extra
        item: RegisterOp | None = None
        if op.kind in ("put", "fput"):
            if not (ok and refused):
                item = RegisterOp(op.id, op.invoke_ns, ret, True, op.value)
        elif op.kind == "get":
            if ok and not refused:
                item = RegisterOp(op.id, op.invoke_ns, ret, False, op.value)
        elif op.kind == "delete":
            if not ok:
                item = RegisterOp(op.id, op.invoke_ns, None, True, None)
            elif op.extra.get("deleted") is True:
                item = RegisterOp(op.id, op.invoke_ns, ret, True, None)
            elif op.extra.get("deleted") is False:
                item = RegisterOp(op.id, op.invoke_ns, ret, False, None)  # found nothing
        elif not ok or op.extra.get("swapped") is True:  # cas
            item = RegisterOp(op.id, op.invoke_ns, ret, True, op.value)
        if item is not None:
            per_key.setdefault(op.key, []).append(item)
    return per_key


def check_linearizable(ops: Sequence[Op], max_steps: int = DEFAULT_MAX_STEPS) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("linearizable")
    undecided = []
    per_key = register_ops(ops)
    for key, items in sorted(per_key.items()):
        verdict.checked += len(items)
        result = check_register(items, None, max_steps)
        if result.ok is False:
            verdict.violate(f"key {key!r}: not linearizable: {result.detail}")
        elif result.ok is None:
            undecided.append(key)
    if undecided and verdict.ok:
        verdict.ok = None
    verdict.notes = f"{len(per_key)} keys"
    if undecided:
        verdict.notes += f"; undecided: {', '.join(undecided)}"
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_stale_reads(ops: Sequence[Op], order: Order, rp: Replay) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("stale-reads")
    for op in ops:
        if op.kind != "stale_get" or op.outcome != "ok":
            continue
        version = op.extra.get("version")
        if not isinstance(version, int) or version == 0 or version > rp.end:
            continue  # absent (as at the start), or beyond what was replayed
        verdict.checked += 1
        command = order.commands[version - 1]
        written = rp.results.get(version)
        try:
            decoded = decode(command.payload) if command is not None else None
        except CoordDecodeError:
            decoded = None
        value = getattr(decoded, "value", None)
        if (
            not isinstance(written, Result) or not written.ok or getattr(decoded, "key", None)
            != op.key or not isinstance(value, bytes)
            or value.decode("utf-8", "replace") != op.value
        ):
            verdict.violate(
                f"{show_op(op)}: a stale read returned {op.value!r} at version {version}, "
                f"but index {version} holds "
                + ("nothing" if command is None else show_command(command.payload))
            )
    verdict.notes = "values and versions some write wrote (stale by design)"
    verdict.seconds = time.perf_counter() - started
    return verdict


def compare_watch(verdict: Verdict, watch: Watch, changes: Sequence[Change], end: int) -> int:
    """The service's report of the changes under a prefix against the replay's; the
    number of changes compared."""
    try:
        prefix = str(watch["prefix"])
        through = min(int(watch["through"]), end)
        gaps = [(int(a), int(b)) for a, b in watch.get("gaps", ())]
        got = [
            (int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), r[5])
            for r in watch["changes"] if int(r[0]) <= through
        ]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        verdict.violate(f"a malformed watch record: {exc!r}"[:200])
        return 0
    want = [
        (c.index, c.kind, c.key, c.session, c.version,
         None if c.value is None else c.value.hex())
        for c in changes
        if c.key.startswith(prefix) and c.index <= through
        and not any(a <= c.index < b for a, b in gaps)
    ]
    if got != want:
        k = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                 min(len(got), len(want)))
        service = got[k] if k < len(got) else "nothing"
        log = want[k] if k < len(want) else "nothing"
        verdict.violate(
            f"the service reported {len(got)} changes under {prefix!r} through index "
            f"{through}, the log {len(want)}; first difference (#{k}): service {service}, "
            f"log {log}"
        )
    else:
        verdict.notes += (
            f"; the service's {len(got)} changes under {prefix!r} to index {through} "
            "are the log's"
        )
    if gaps:
        verdict.notes += f" ({len(gaps)} ranges compacted before they were read)"
    if watch.get("full"):
        verdict.notes += f"; the watch of {prefix!r} stopped recording (full)"
    return len(want)


def check_locks(
    ops: Sequence[Op], calls: Sequence[Call], rp: Replay, watches: Sequence[Watch]
) -> tuple[Verdict, dict[str, int]]:
    started = time.perf_counter()
    verdict = Verdict("locks")
    stats = {"granted": 0, "told": 0, "waits_timed_out": 0, "pauses": 0,
             "fenced_accepted": 0, "fenced_refused_stale": 0, "fenced_refused_not_held": 0,
             "fenced_unknown": 0}
    # The log's grants, and an independent account of who holds what.
    grants: dict[tuple[str, int], int] = {}
    holders: dict[str, tuple[int, int]] = {}
    for c in rp.changes:
        if not c.key.startswith(LOCK_PREFIX):
            continue
        if c.kind == RELEASE:
            holders.pop(c.key, None)
        elif c.kind == GRANT:
            stats["granted"] += 1
            grants[(c.key, c.index)] = c.session
            holder = holders.get(c.key)
            if holder is not None:
                verdict.violate(
                    f"lock {c.key!r} granted to session {c.session} at index {c.index} while "
                    f"session {holder[0]} held it (token {holder[1]})"
                )
            holders[c.key] = (c.session, c.version)
    for op in ops:
        if op.kind == "lock" and op.extra.get("waited"):
            stats["waits_timed_out"] += 1
        if op.kind == "fput" and op.extra.get("paused_s"):
            stats["pauses"] += 1
        if op.kind != "lock" or op.outcome != "ok" or "token" not in op.extra:
            continue
        stats["told"] += 1
        told, session = op.extra.get("token"), op.extra.get("session")
        if not isinstance(told, int) or told > rp.end:
            continue
        token = told
        verdict.checked += 1
        granted = grants.get((op.key, token))
        if granted != session:
            verdict.violate(
                f"{show_op(op)}: the client was told session {session} holds {op.key!r} "
                f"with token {token}, but "
                + (f"the log granted it at index {token} to session {granted}"
                   if granted is not None else f"the log granted no lock at index {token}")
            )
    for call in calls:
        command = call.command
        if not isinstance(command, Put | Delete) or command.fence is None:
            continue
        name, token = command.fence
        if not call.answered or call.result is None or call.index is None:
            stats["fenced_unknown"] += 1
            continue
        if call.index > rp.end:
            continue
        verdict.checked += 1
        state = rp.fences.get(call.index)
        held = state is not None and state[1] == token
        where = (
            f"lock {name!r} was not held there" if state is None else
            f"lock {name!r} was held by session {state[0]} with token {state[1]} there"
        )
        reason = str(call.result.get("reason", ""))
        if call.result.get("ok") is True:
            stats["fenced_accepted"] += 1
            if not held:
                verdict.violate(
                    f"{show_op(call.op)}: the service accepted {show_command(call.payload)} "
                    f"at index {call.index} with token {token}, but {where}"
                )
        elif reason.startswith("fence"):
            stats["fenced_refused_stale" if "stale" in reason else "fenced_refused_not_held"] += 1
            if held:
                verdict.violate(
                    f"{show_op(call.op)}: the service refused {show_command(call.payload)} at "
                    f"index {call.index} ({reason}), but {where}"
                )
    for watch in watches:
        if str(watch.get("prefix", "")).startswith(LOCK_PREFIX):
            verdict.checked += compare_watch(verdict, watch, rp.changes, rp.end)
    verdict.notes = (
        f"{stats['granted']} grants ({stats['told']} told to clients, "
        f"{stats['waits_timed_out']} waits timed out); fenced writes: "
        f"{stats['fenced_accepted']} accepted, {stats['fenced_refused_stale']} refused "
        f"(stale token), {stats['fenced_refused_not_held']} refused (not held); "
        f"{stats['pauses']} writes after a holder's pause" + verdict.notes
    )
    verdict.seconds = time.perf_counter() - started
    return verdict, stats


def check_ephemerals(
    ops: Sequence[Op], rp: Replay, watches: Sequence[Watch]
) -> tuple[Verdict, dict[str, int]]:
    started = time.perf_counter()
    verdict = Verdict("ephemerals")
    stats = {"opened": 0, "expired": 0, "closed": 0, "vanished": 0, "ephemeral_puts": 0,
             "sessions_lost": len({op.client for op in ops if op.extra.get("lost")})}
    stats["ephemeral_puts"] = sum(
        1 for op in ops if op.kind == "eput" and op.outcome == "ok"
        and not {"refused", "lost"} & set(op.extra)
    )
    owned: dict[str, int] = {}  # ephemeral key -> its owner session
    by_index: dict[int, list[Change]] = {}
    for c in rp.changes:
        by_index.setdefault(c.index, []).append(c)
    for index, changes in by_index.items():
        ended = {c.session for c in changes if c.kind in (EXPIRED, CLOSED)}
        for c in changes:
            if c.kind == OPENED:
                stats["opened"] += 1
            elif c.kind == EXPIRED:
                stats["expired"] += 1
            elif c.kind == CLOSED:
                stats["closed"] += 1
        expected = {(k, s) for k, s in owned.items() if s in ended}
        vanished = {(c.key, c.session) for c in changes if c.kind == VANISH}
        stats["vanished"] += len(vanished)
        verdict.checked += len(ended) + len(vanished)
        for key, session in sorted(expected - vanished):
            verdict.violate(
                f"ephemeral key {key!r} of session {session} did not vanish when the session "
                f"ended at index {index}"
            )
        for key, session in sorted(vanished - expected):
            why = (f"owned by session {owned[key]}" if key in owned else "not ephemeral")
            verdict.violate(
                f"key {key!r} vanished at index {index} with session {session}, but it was "
                f"{why}" + ("" if session in ended else f" and session {session} did not end")
            )
        for c in changes:
            if not c.key.startswith(EPHEMERAL_PREFIX):
                continue
            if c.kind == PUT:
                if c.session:
                    owned[c.key] = c.session
                else:
                    owned.pop(c.key, None)
            elif c.kind in (DELETE, VANISH):
                owned.pop(c.key, None)
    for watch in watches:
        if str(watch.get("prefix", "")).startswith(EPHEMERAL_PREFIX):
            verdict.checked += compare_watch(verdict, watch, rp.changes, rp.end)
    verdict.notes = (
        f"{stats['opened']} sessions opened, {stats['expired']} expired, {stats['closed']} "
        f"closed ({stats['sessions_lost']} clients saw theirs lost); "
        f"{stats['ephemeral_puts']} ephemeral puts, {stats['vanished']} keys vanished"
        + verdict.notes
    )
    verdict.seconds = time.perf_counter() - started
    return verdict, stats


def check_kv_all(
    ops: Sequence[Op],
    observations: Observations,
    watches: Sequence[Watch] = (),
    max_steps: int = DEFAULT_MAX_STEPS,
) -> tuple[list[Verdict], dict[str, Any]]:
    """Every checker of a kv run; the verdicts and the run's figures."""
    started = time.perf_counter()
    order = build_order(observations)
    calls: list[Call] = []
    malformed = Verdict("results")
    for op in ops:
        try:
            calls.extend(calls_of(op))
        except (KeyError, TypeError, ValueError) as exc:
            malformed.violate(f"{show_op(op)}: a malformed call record: {exc!r}"[:200])
    wanted = {c.index for c in calls if c.index is not None}
    wanted |= {
        op.extra["version"] for op in ops
        if op.kind == "stale_get" and isinstance(op.extra.get("version"), int)
    }
    rp = replay(order, wanted)
    results = check_results(calls, order, rp)
    results.seconds += rp.seconds
    for message in malformed.violations:
        results.violate(message)
    locks, lock_stats = check_locks(ops, calls, rp, watches)
    ephemerals, session_stats = check_ephemerals(ops, rp, watches)
    verdicts = [
        check_agreement(order),
        check_fifo(ops, order),
        check_at_most_once(ops, calls, order),
        results,
        check_real_time(ops, calls),
        check_linearizable([op for op in ops if op.key != PROBE_KEY], max_steps),
        check_stale_reads(ops, order, rp),
        locks,
        ephemerals,
    ]
    if rp.hole is not None:
        for v in (results, verdicts[6], locks, ephemerals):
            v.notes += f"; the order has a hole at index {rp.hole}: replayed to {rp.end}"
            if v.ok:
                v.ok = None
    verdicts[0].seconds += time.perf_counter() - started - sum(v.seconds for v in verdicts)
    figures = {
        "replayed": rp.end,
        "replay_seconds": round(rp.seconds, 3),
        "calls": len(calls),
        **session_stats,
        **lock_stats,
    }
    return verdicts, figures
