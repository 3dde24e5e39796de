"""A linearizability checker for a read/write register (Wing & Gong search, Lowe's memoisation).

This is the algorithm of Porcupine and Knossos' ``wgl``: walk the history's call and
return events in time order; at a call, try to linearize that operation now (the model
must allow it, and the pair (set of linearized operations, model state) must not have
been tried before); at a return of an operation not yet linearized, undo the last choice
and try the next. The history is linearizable iff every operation gets linearized.

A key-value store is a register per key, and linearizability is compositional
(P-compositionality): :mod:`chaos.checkers` splits a KV history per key and
checks each key here.

Operations whose outcome is unknown never returned: their return is at infinity, so they
may take effect at any time after their call, or (for writes) effectively never (placed
after everything else). Unknown reads carry no information and are dropped. An unknown
write whose value no read ever returned is dropped too: with or without it, the same
histories are linearizable (it can always be placed last).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

#: Search steps allowed per register before giving up with an "undecided" verdict.
DEFAULT_MAX_STEPS = 5_000_000


@dataclass(frozen=True, slots=True)
class RegisterOp:
    """One operation on a register. ``ret`` is None if it never returned (outcome unknown).

    A write stores ``value`` (None: a delete); a read returned ``value`` (None: nothing).
    ``id`` is the caller's, for reports.
    """

    id: int
    call: int
    ret: int | None
    write: bool
    value: str | None


@dataclass(frozen=True, slots=True)
class LinResult:
    """``ok`` is True (linearizable), False (not), or None (search budget exhausted)."""

    ok: bool | None
    ops: int
    steps: int
    seconds: float
    detail: str = ""


def check_register(
    ops: Sequence[RegisterOp],
    initial: str | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> LinResult:
    """Whether ``ops`` on one register (starting at ``initial``) are linearizable."""
    started = time.perf_counter()
    read_values = {op.value for op in ops if not op.write and op.ret is not None}
    kept = [
        op
        for op in ops
        if op.ret is not None or (op.write and op.value in read_values)
    ]
    n = len(kept)
    if n == 0:
        return LinResult(True, 0, 0, time.perf_counter() - started)
    for op in kept:
        if op.ret is not None and op.ret < op.call:
            return LinResult(
                False, n, 0, time.perf_counter() - started, f"op {op.id} returns before its call"
            )
    infinity = max(max(op.call for op in kept), max(op.ret or 0 for op in kept)) + 1

    # Events 1..2n in time order (calls before returns at equal times: such operations
    # overlap); 0 is the head of a doubly-linked list of the events still to place.
    events = sorted(
        [(op.call, 0, i) for i, op in enumerate(kept)]
        + [(infinity if op.ret is None else op.ret, 1, i) for i, op in enumerate(kept)]
    )
    size = 2 * n + 1
    nxt = list(range(1, size + 1))
    nxt[-1] = 0
    prv = list(range(-1, size - 1))
    is_call = [False] * size
    op_of = [0] * size
    match = [0] * size  # call event -> its return event
    call_event = [0] * n
    for position, (_, kind, i) in enumerate(events, start=1):
        op_of[position] = i
        if kind == 0:
            is_call[position] = True
            call_event[i] = position
        else:
            match[call_event[i]] = position

    def lift(e: int) -> None:
        nxt[prv[e]] = nxt[e]
        if nxt[e]:
            prv[nxt[e]] = prv[e]
        r = match[e]
        nxt[prv[r]] = nxt[r]
        if nxt[r]:
            prv[nxt[r]] = prv[r]

    def unlift(e: int) -> None:
        r = match[e]
        nxt[prv[r]] = r
        if nxt[r]:
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        if nxt[e]:
            prv[nxt[e]] = e

    state = initial
    linearized = 0
    stack: list[tuple[int, str | None]] = []  # (call event, state before it)
    cache: set[tuple[int, str | None]] = set()
    best_depth = -1
    best: tuple[int, str | None] = (0, initial)
    steps = 0
    entry = nxt[0]
    while nxt[0]:
        steps += 1
        if steps > max_steps:
            return LinResult(
                None,
                n,
                steps,
                time.perf_counter() - started,
                f"search budget of {max_steps} steps exhausted",
            )
        if is_call[entry]:
            op = kept[op_of[entry]]
            if op.write:
                allowed, new_state = True, op.value
            else:
                allowed, new_state = op.value == state, state
            if allowed:
                new_linearized = linearized | (1 << op_of[entry])
                key = (new_linearized, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized = new_linearized
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            # The return of an operation that is not linearized yet: it must have taken
            # effect before now, so the last choice was wrong. Undo it and try the next.
            if len(stack) > best_depth:
                best_depth = len(stack)
                best = (linearized, state)
            if not stack:
                break
            top, state = stack.pop()
            linearized &= ~(1 << op_of[top])
            unlift(top)
            entry = nxt[top]
    else:
        return LinResult(True, n, steps, time.perf_counter() - started)
    return LinResult(False, n, steps, time.perf_counter() - started, _explain(kept, best))


def _explain(kept: Sequence[RegisterOp], best: tuple[int, str | None]) -> str:
    """Describe the deepest partial linearization and the operation that could not follow it."""
    linearized, state = best
    pending = [
        op for i, op in enumerate(kept) if not linearized >> i & 1 and op.ret is not None
    ]
    stuck = min(pending, key=lambda op: op.ret or 0) if pending else None
    done = bin(linearized).count("1")
    if stuck is None:
        return f"no linearization ({done} of {len(kept)} operations placed)"
    what = f"write {stuck.value!r}" if stuck.write else f"read returning {stuck.value!r}"
    return (
        f"after the best partial linearization ({done} of {len(kept)} operations, register "
        f"= {state!r}) op {stuck.id} ({what}) cannot be placed before it returns"
    )
