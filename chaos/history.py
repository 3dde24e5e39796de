"""The history recorder: every client operation, when it was invoked, when it completed, and how.

An operation's ``outcome`` is

* ``ok`` -- the cluster acknowledged it (for a broadcast: committed at ``index``);
* ``failed`` -- it certainly did not take effect (it never left the client);
* ``unknown`` -- the client gave up waiting: it may take effect, now or later, or never.

Times are ``time.monotonic_ns()`` of the one process that runs every client, so
they are comparable across clients. ``complete_ns`` of an ``unknown`` operation is
when the client gave up, which is *not* a bound on when it takes effect: checkers
treat it as open-ended.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal[
    "put", "delete", "get", "stale_get",
    # the coordination service's (``paxos chaos --service kv``, :mod:`chaos.kvload`)
    "cas", "eput", "lock", "fput", "unlock", "close",
]
Outcome = Literal["ok", "failed", "unknown"]
KINDS: tuple[Kind, ...] = (
    "put", "delete", "get", "stale_get", "cas", "eput", "lock", "fput", "unlock", "close",
)
OUTCOMES: tuple[Outcome, ...] = ("ok", "failed", "unknown")


class HistoryError(ValueError):
    """A history file (or a hand-made history) is malformed."""


@dataclass(slots=True)
class Op:
    """One client operation.

    ``put``/``delete``/``get`` are broadcasts of the key-value example's JSON
    commands (``payload``) in client session ``client`` with sequence number
    ``seq``; ``index`` is the index the cluster acknowledged. ``get`` is the
    linearizable read (ordered through the log); its ``value`` is filled in
    from the delivered order. ``stale_get`` is the explicitly stale local read:
    node ``node``'s state after its first ``index`` deliveries, no broadcast.

    Operations of the coordination service (``--service kv``) are calls of its
    client's API; ``calls`` lists every command the call sent through the log, as
    :mod:`chaos.kvload` traced it (payload, session key, seq, index, the result the
    client got), and ``extra`` what the API returned besides ``value`` (a version, a
    lock's token, a refusal's reason...).
    """

    id: int
    process: int
    kind: Kind
    key: str
    value: str | None
    invoke_ns: int
    payload: bytes | None = None
    client: str = ""
    seq: int = 0
    complete_ns: int | None = None
    outcome: Outcome | None = None
    index: int | None = None
    node: int | None = None
    error: str | None = None
    calls: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_broadcast(self) -> bool:
        return self.kind != "stale_get"

    def to_json(self) -> str:
        data = asdict(self)
        data["payload"] = self.payload.decode("utf-8", "surrogateescape") if self.payload else None
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> Op:
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise TypeError("not an object")
            payload = data.get("payload")
            data["payload"] = payload.encode("utf-8", "surrogateescape") if payload else None
            op = cls(**data)
        except (ValueError, TypeError) as exc:
            raise HistoryError(f"bad history line {line[:120]!r}: {exc}") from None
        if op.kind not in KINDS or (op.outcome is not None and op.outcome not in OUTCOMES):
            raise HistoryError(f"bad kind/outcome in history line {line[:120]!r}")
        return op


class History:
    """A thread-safe, append-only list of operations."""

    def __init__(self, ops: Iterable[Op] = ()) -> None:
        self._lock = threading.Lock()
        self._ops: list[Op] = list(ops)
        self._next_id = max((op.id for op in self._ops), default=0) + 1

    def invoke(
        self,
        process: int,
        kind: Kind,
        key: str,
        value: str | None = None,
        *,
        payload: bytes | None = None,
        client: str = "",
        seq: int = 0,
        node: int | None = None,
    ) -> Op:
        """Record that ``process`` starts an operation now; returns it for :meth:`complete`."""
        with self._lock:
            op = Op(
                self._next_id,
                process,
                kind,
                key,
                value,
                time.monotonic_ns(),
                payload=payload,
                client=client,
                seq=seq,
                node=node,
            )
            self._next_id += 1
            self._ops.append(op)
        return op

    def complete(
        self,
        op: Op,
        outcome: Outcome,
        *,
        index: int | None = None,
        value: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record that ``op`` ended now with ``outcome``."""
        now = time.monotonic_ns()
        with self._lock:
            op.complete_ns = now
            op.outcome = outcome
            op.index = index
            if value is not None:
                op.value = value
            op.error = error

    def ops(self) -> list[Op]:
        """A snapshot of every operation so far, in invocation order."""
        with self._lock:
            return list(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{kind: {outcome: n}}`` of the completed operations (``pending`` for the rest)."""
        out: dict[str, dict[str, int]] = {}
        for op in self.ops():
            per = out.setdefault(op.kind, {})
            name = op.outcome or "pending"
            per[name] = per.get(name, 0) + 1
        return out

    def save(self, path: Path) -> None:
        with path.open("w") as f:
            for op in self.ops():
                f.write(op.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        with path.open() as f:
            return cls(Op.from_json(line) for line in f if line.strip())
