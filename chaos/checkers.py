"""Checkers for a chaos run: total-order broadcast properties and key-value linearizability.

Inputs are what the run observed at its edges, never a node's internals:

* the :class:`~chaos.history.History` of client operations;
* **observations**: for each source (``"node2/stream"``: node 2's delivery stream as
  followed during the run; ``"node2/final"``: its whole log read at the end) the command
  it delivered at each index.

From the observations the checkers build the one order every node must agree on and
judge it:

``agreement``
    every source's deliveries are a prefix of one order (same command at each index);
``integrity``
    no command is delivered twice (same payload or same (client, seq)), and every
    delivered command was broadcast by some client operation;
``acknowledged``
    every ``ok`` broadcast is in the order, at the index it was acknowledged with; no
    ``failed`` broadcast is;
``fifo``
    each client session's commands are delivered as seq 1, 2, 3, ... (no gap, no
    reorder), i.e. in the order the client sent them;
``real-time``
    a broadcast that completed before another began is ordered first;
``linearizable``
    the key-value example's reads and writes (reads ordered through the log) are
    linearizable, per key, by :func:`~chaos.linearizability.check_register`;
``stale-reads``
    explicitly stale local reads returned the state of some prefix of the order: the
    prefix they say they read (weaker than linearizable, by design).

Each checker gives a :class:`Verdict`; none raises on bad input.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos.history import Op
from chaos.linearizability import DEFAULT_MAX_STEPS, RegisterOp, check_register
from paxos.types import Command

#: Violations kept (and shown) per checker; the rest are only counted.
MAX_SHOWN = 10

Observations = Mapping[str, Mapping[int, Command]]
Writes = dict[str, list[tuple[int, str | None]]]


@dataclass(slots=True)
class Verdict:
    """One checker's judgement. ``ok`` is None when it could not decide."""

    name: str
    ok: bool | None = True
    checked: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    notes: str = ""

    def violate(self, message: str) -> None:
        self.ok = False
        self.violation_count += 1
        if len(self.violations) < MAX_SHOWN:
            self.violations.append(message)

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "UNDECIDED"}[self.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.label,
            "checked": self.checked,
            "seconds": round(self.seconds, 4),
            "violation_count": self.violation_count,
            "violations": self.violations,
            "notes": self.notes,
        }


@dataclass(slots=True)
class Order:
    """The one order built from the observations: ``commands[i - 1]`` is at index ``i``."""

    commands: list[Command | None]
    conflicts: list[str]
    sources: int
    _positions: dict[bytes, list[int]] | None = None
    _kv: tuple[dict[bytes, str | None], Writes] | None = None

    def positions(self) -> dict[bytes, list[int]]:
        """Payload -> every index it is delivered at (more than one: a duplicate)."""
        if self._positions is None:
            out: dict[bytes, list[int]] = {}
            for index, command in enumerate(self.commands, start=1):
                if command is not None:
                    out.setdefault(command.payload, []).append(index)
            self._positions = out
        return self._positions


def _show(command: Command | None) -> str:
    if command is None:
        return "nothing"
    payload = command.payload[:60].decode("utf-8", "replace")
    return f"{command.client}#{command.seq} {payload!r}"


def build_order(observations: Observations) -> Order:
    """Merge every source's deliveries into one order, noting every disagreement."""
    length = max((max(per, default=0) for per in observations.values()), default=0)
    commands: list[Command | None] = [None] * length
    first_source: list[str] = [""] * length
    conflicts: list[str] = []
    for source in sorted(observations):
        for index, command in observations[source].items():
            if index < 1:
                conflicts.append(f"{source} delivered at index {index}")
                continue
            seen = commands[index - 1]
            if seen is None:
                commands[index - 1] = command
                first_source[index - 1] = source
            elif seen is not command and seen != command:
                conflicts.append(
                    f"index {index}: {first_source[index - 1]} delivered {_show(seen)}, "
                    f"{source} delivered {_show(command)}"
                )
    return Order(commands, conflicts, len(observations))


def check_agreement(order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("agreement", checked=len(order.commands))
    for conflict in order.conflicts:
        verdict.violate(conflict)
    holes = [i for i, c in enumerate(order.commands, start=1) if c is None]
    if holes:
        # Not a safety violation by itself (nobody reported those indexes), but the other
        # checkers cannot vouch for what is there.
        verdict.notes = f"{len(holes)} indexes never observed (first {holes[0]})"
    verdict.notes = verdict.notes or f"{order.sources} sources, {len(order.commands)} indexes"
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_integrity(ops: Sequence[Op], order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("integrity", checked=len(order.commands))
    issued = {op.payload for op in ops if op.is_broadcast and op.payload is not None}
    by_session: dict[tuple[str, int], int] = {}
    for payload, indexes in order.positions().items():
        if len(indexes) > 1:
            verdict.violate(f"payload {payload[:60]!r} delivered {len(indexes)} times: {indexes}")
        if payload not in issued:
            verdict.violate(f"index {indexes[0]}: payload {payload[:60]!r} was never broadcast")
    for index, command in enumerate(order.commands, start=1):
        if command is None:
            continue
        key = (command.client, command.seq)
        earlier = by_session.get(key)
        if earlier is not None:
            verdict.violate(f"{command.client}#{command.seq} delivered at {earlier} and {index}")
        else:
            by_session[key] = index
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_acknowledged(ops: Sequence[Op], order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("acknowledged")
    positions = order.positions()
    lost = 0
    for op in ops:
        if not op.is_broadcast or op.payload is None:
            continue
        verdict.checked += 1
        where = positions.get(op.payload)
        if op.outcome == "ok":
            if not where:
                lost += 1
                verdict.violate(
                    f"op {op.id} ({op.kind} {op.key}, {op.client}#{op.seq}) was acknowledged "
                    f"at index {op.index} but is not in the order (lost)"
                )
            elif op.index and op.index not in where:
                verdict.violate(
                    f"op {op.id} ({op.client}#{op.seq}) acknowledged at index {op.index} "
                    f"but delivered at {where}"
                )
        elif op.outcome == "failed" and where:
            verdict.violate(f"op {op.id} failed but is delivered at {where}")
    unknown = [op for op in ops if op.is_broadcast and op.outcome == "unknown"]
    committed = sum(1 for op in unknown if op.payload in positions)
    verdict.notes = f"{committed} of {len(unknown)} unknown broadcasts were committed"
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_fifo(ops: Sequence[Op], order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("fifo")
    last: dict[str, tuple[int, int]] = {}  # client -> (seq, index) last delivered
    for index, command in enumerate(order.commands, start=1):
        if command is None:
            continue
        verdict.checked += 1
        seq, at = last.get(command.client, (0, 0))
        if command.seq != seq + 1:
            what = "a gap" if command.seq > seq + 1 else "out of order"
            verdict.violate(
                f"{command.client}: seq {command.seq} delivered at index {index} after seq "
                f"{seq} (index {at}): {what}"
            )
        if command.seq > seq:
            last[command.client] = (command.seq, index)
    # The client side: a session's operations, in the order it invoked them, must be
    # ordered the same way wherever both were delivered.
    positions = order.positions()
    per_client: dict[str, list[Op]] = {}
    for op in ops:
        if op.is_broadcast and op.client and op.payload is not None:
            per_client.setdefault(op.client, []).append(op)
    for client, session in per_client.items():
        session.sort(key=lambda op: (op.invoke_ns, op.seq))
        previous: tuple[Op, int] | None = None
        for op in session:
            where = positions.get(op.payload or b"")
            if not where:
                continue
            if previous is not None and where[0] < previous[1]:
                verdict.violate(
                    f"{client}: op {op.id} (invoked after op {previous[0].id}) delivered at "
                    f"{where[0]}, before it (at {previous[1]})"
                )
            previous = (op, where[0])
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_real_time(ops: Sequence[Op], order: Order) -> Verdict:
    started = time.perf_counter()
    verdict = Verdict("real-time")
    positions = order.positions()
    placed: list[tuple[Op, int]] = []
    for op in ops:
        if op.is_broadcast and op.payload is not None:
            where = positions.get(op.payload)
            if where:
                placed.append((op, where[0]))
    done = sorted(
        ((op.complete_ns, index, op) for op, index in placed
         if op.outcome == "ok" and op.complete_ns is not None),
        key=lambda t: t[0],
    )
    completes = [t[0] for t in done]
    best: list[tuple[int, Op | None]] = []  # prefix maximum of index, and its op
    running: tuple[int, Op | None] = (0, None)
    for _, index, op in done:
        if index > running[0]:
            running = (index, op)
        best.append(running)
    for op, index in placed:
        verdict.checked += 1
        before = bisect.bisect_left(completes, op.invoke_ns)  # completed strictly earlier
        if before == 0:
            continue
        highest, culprit = best[before - 1]
        if highest > index and culprit is not None:
            verdict.violate(
                f"op {culprit.id} ({culprit.client}#{culprit.seq}) completed before op {op.id} "
                f"({op.client}#{op.seq}) was invoked, yet is ordered after it "
                f"(index {highest} > {index})"
            )
    verdict.seconds = time.perf_counter() - started
    return verdict


# ---------------------------------------------------------------------- key-value


def parse_kv(payload: bytes) -> tuple[str, str, str | None] | None:
    """``(op, key, value)`` of a key-value example command, or None if it is not one."""
    try:
        command = json.loads(payload)
        op, key = command["op"], str(command["key"])
    except (ValueError, KeyError, TypeError):
        return None
    if op == "put":
        return op, key, str(command.get("value", ""))
    if op in ("delete", "get"):
        return op, key, None
    return None


def kv_states(order: Order) -> tuple[dict[bytes, str | None], Writes]:
    """Replay the order through the key-value state machine.

    Returns what each ``get`` (by payload) read -- the value just before its index --
    and, per key, its writes as ``(index, value)`` in order.
    """
    if order._kv is None:
        order._kv = _replay(order)
    return order._kv


def _replay(order: Order) -> tuple[dict[bytes, str | None], Writes]:
    data: dict[str, str | None] = {}
    reads: dict[bytes, str | None] = {}
    writes: Writes = {}
    for index, command in enumerate(order.commands, start=1):
        if command is None:
            continue
        parsed = parse_kv(command.payload)
        if parsed is None:
            continue
        op, key, value = parsed
        if op == "get":
            reads.setdefault(command.payload, data.get(key))
        else:
            data[key] = value
            writes.setdefault(key, []).append((index, value))
    return reads, writes


def resolve_reads(ops: Iterable[Op], order: Order) -> set[int]:
    """Fill in each linearizable read's value from the order; returns the ids of the
    ``ok`` reads that are not in the order (whose value is therefore unknown).

    The cluster tells a remote client only the index of its read; what the read
    returns is the state machine's state just before that index, which the
    delivered order determines (every node applies the same order).
    """
    reads, _ = kv_states(order)
    unresolved: set[int] = set()
    for op in ops:
        if op.kind == "get" and op.payload is not None:
            if op.payload in reads:
                op.value = reads[op.payload]
            elif op.outcome == "ok":
                unresolved.add(op.id)
    return unresolved


def check_linearizable(
    ops: Sequence[Op],
    max_steps: int = DEFAULT_MAX_STEPS,
    unresolved: Iterable[int] = (),
) -> Verdict:
    """Linearizability of the KV operations (not stale reads), checked per key.

    Reads are judged by their ``value`` (see :func:`resolve_reads`); reads listed in
    ``unresolved`` (not in the order: their value is unknown) are skipped, and
    ``acknowledged`` reports them.
    """
    skip = set(unresolved)
    started = time.perf_counter()
    verdict = Verdict("linearizable")
    per_key: dict[str, list[RegisterOp]] = {}
    skipped = 0
    for op in ops:
        if op.kind == "stale_get" or op.outcome in (None, "failed"):
            continue
        ret = op.complete_ns if op.outcome == "ok" else None
        if op.kind == "get":
            if op.outcome != "ok":
                continue
            if op.id in skip:
                skipped += 1
                continue
            per_key.setdefault(op.key, []).append(
                RegisterOp(op.id, op.invoke_ns, ret, False, op.value)
            )
        else:
            value = op.value if op.kind == "put" else None
            per_key.setdefault(op.key, []).append(
                RegisterOp(op.id, op.invoke_ns, ret, True, value)
            )
    steps = 0
    for key in sorted(per_key):
        result = check_register(per_key[key], None, max_steps)
        verdict.checked += result.ops
        steps += result.steps
        if result.ok is False:
            verdict.violate(f"key {key!r}: {result.detail}")
        elif result.ok is None and verdict.ok is not False:
            verdict.ok = None
            verdict.violations.append(f"key {key!r}: {result.detail}")
    verdict.notes = f"{len(per_key)} keys, {steps} search steps"
    if skipped:
        verdict.notes += f", {skipped} reads without a known value skipped"
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_stale_reads(ops: Sequence[Op], order: Order) -> Verdict:
    """Each stale read returned the key's value after the prefix it says it read."""
    started = time.perf_counter()
    verdict = Verdict("stale-reads")
    _, writes = kv_states(order)
    indexes = {key: [i for i, _ in w] for key, w in writes.items()}
    positions = order.positions()
    # Per key, acknowledged writes by completion time, with the running maximum of their
    # index: a stale read that missed one completed before it began was really stale.
    done: dict[str, list[tuple[int, int]]] = {}
    for op in ops:
        if op.kind in ("put", "delete") and op.outcome == "ok" and op.complete_ns is not None:
            where = positions.get(op.payload or b"")
            if where:
                done.setdefault(op.key, []).append((op.complete_ns, where[0]))
    running: dict[str, tuple[list[int], list[int]]] = {}
    for key, items in done.items():
        items.sort()
        highest, maxima = 0, []
        for _, index in items:
            highest = max(highest, index)
            maxima.append(highest)
        running[key] = ([t for t, _ in items], maxima)
    really_stale = 0
    for op in ops:
        if op.kind != "stale_get" or op.outcome != "ok" or op.index is None:
            continue
        verdict.checked += 1
        history = writes.get(op.key, [])
        at = bisect.bisect_right(indexes.get(op.key, []), op.index)
        expected = history[at - 1][1] if at else None
        if op.value != expected:
            verdict.violate(
                f"op {op.id}: stale read of {op.key!r} at node {op.node} prefix {op.index} "
                f"returned {op.value!r}, the order has {expected!r} there"
            )
        times, maxima = running.get(op.key, ([], []))
        before = bisect.bisect_left(times, op.invoke_ns)
        if before and maxima[before - 1] > op.index:
            really_stale += 1
    verdict.notes = (
        f"{really_stale} of {verdict.checked} missed a write acknowledged before they began "
        "(allowed: stale by design)"
    )
    verdict.seconds = time.perf_counter() - started
    return verdict


def check_all(
    ops: Sequence[Op], observations: Observations, max_steps: int = DEFAULT_MAX_STEPS
) -> list[Verdict]:
    """Every checker on one run; resolves linearizable reads' values from the order first."""
    started = time.perf_counter()
    order = build_order(observations)
    unresolved = resolve_reads(ops, order)
    verdicts = [
        check_agreement(order),
        check_integrity(ops, order),
        check_acknowledged(ops, order),
        check_fifo(ops, order),
        check_real_time(ops, order),
        check_linearizable(ops, max_steps, unresolved),
        check_stale_reads(ops, order),
    ]
    verdicts[0].seconds += time.perf_counter() - started - sum(v.seconds for v in verdicts)
    return verdicts
