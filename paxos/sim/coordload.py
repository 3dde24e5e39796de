"""The coordination workload: simulated clients use the coordination service's recipes.

Some of the commands the clients issue (a share drawn per run) are coordination
commands instead of opaque payloads: each client opens a coordination session
(its id is the index its acknowledgement names), renews it now and then, puts
ephemeral and persistent keys (some fenced with a lock token), takes and releases
locks, campaigns for leader, enters barriers and closes its session.

**Expiries.** A runtime proposes ``Expire(session, last)`` when its lease timer says
a session lapsed, with the last index it saw the session renewed; the log decides.
Here, at random moments, a client carries such a proposal made from the view of a
node (the one that believes it leads, if any: a node's applied state, possibly
behind the cluster): mostly for the idlest session with the last index that node
has, sometimes with an older one or for a session gone already. Those, and the
ones overtaken by a renewal while in flight, must be no-ops everywhere.

Views are read through the machines' query methods only, as a runtime would.
Everything random comes from the plan's own rng: the rest of a run draws the same
numbers with or without it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from paxos.coord.commands import (
    Acquire,
    Campaign,
    Cas,
    Close,
    CoordCommand,
    Delete,
    Enter,
    Expire,
    Get,
    Open,
    Put,
    Release,
    Renew,
    Resign,
    encode,
)
from paxos.coord.machine import CoordLimits, CoordMachine


class _Viewable(Protocol):
    """A node as the plan sees it (paxos.sim.node.NodeDriver)."""

    node_id: int

    @property
    def up(self) -> bool: ...

    @property
    def coord_view(self) -> CoordMachine | None: ...

    @property
    def leads(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CoordPlan:
    """How much one run uses the coordination service (drawn from its seed)."""

    #: Share of the clients' commands that are coordination commands.
    share: float
    keys: int
    locks: int
    #: Chance that a coordination command is an expiry proposal.
    expire_rate: float
    limits: CoordLimits

    @classmethod
    def draw(cls, rng: random.Random) -> CoordPlan:
        small = rng.random() < 0.4
        limits = CoordLimits(
            max_value_bytes=64,
            quota_bytes=rng.randint(200, 800) if small else 1 << 20,
            max_sessions=rng.randint(2, 6) if small else 4096,
            max_waiters=rng.randint(1, 3) if small else 64,
            max_changes=rng.choice((4, 16, 64)),
            max_change_bytes=rng.choice((512, 4096)),
        )
        return cls(
            share=rng.uniform(0.2, 0.7),
            keys=rng.randint(2, 8),
            locks=rng.randint(1, 3),
            expire_rate=rng.uniform(0.03, 0.15),
            limits=limits,
        )

    def describe(self) -> str:
        return (
            f"share={self.share:.2f} keys={self.keys} locks={self.locks} "
            f"expire={self.expire_rate:.2f}"
        )


class CoordLoad:
    """Makes the clients' coordination commands and learns from their acknowledgements."""

    def __init__(self, plan: CoordPlan, rng: random.Random, nodes: Sequence[_Viewable]) -> None:
        self.plan = plan
        self.rng = rng
        #: The run's nodes (the list grows as the operator adds some).
        self.nodes = nodes
        #: Client -> its coordination session (the index of its open), once acknowledged.
        self.session_of: dict[str, int] = {}
        #: Sessions ever opened, in order (stale expiries pick from them).
        self.opened: list[int] = []
        # (key, seq) of a client's open in flight -> the client, and back.
        self._opening: dict[tuple[str, int], str] = {}
        self._opens: dict[str, tuple[str, int]] = {}
        self.expiries = 0

    def _view(self) -> CoordMachine | None:
        """The machine of the node that believes it leads (a runtime whose lease timers
        run), else of a random up node; None if no node is up."""
        up = [n for n in self.nodes if n.up and n.coord_view is not None]
        if not up:
            return None
        leading = [n for n in up if n.leads]
        return (leading[0] if leading else self.rng.choice(up)).coord_view

    def payload(self, client: str, key: str, seq: int) -> bytes | None:
        """The payload of ``client``'s command ``(key, seq)``: a coordination command,
        or None (the client's own opaque payload)."""
        rng = self.rng
        if rng.random() >= self.plan.share:
            return None
        command = self._command(client, key, seq)
        return encode(command) if command is not None else None

    def _command(self, client: str, key: str, seq: int) -> CoordCommand | None:
        rng, plan = self.rng, self.plan
        view = self._view()
        if view is not None and rng.random() < plan.expire_rate:
            expiry = self._expiry(view)
            if expiry is not None:
                self.expiries += 1
                return expiry
        session = self.session_of.get(client)
        if (
            session is not None
            and view is not None
            and view.index > session
            and view.session(session) is None
        ):
            session = None  # it ended, as far as that node knows
        k = f"k/{rng.randrange(plan.keys)}"
        if session is None:
            if client in self._opens:
                return Get(k)  # its open is on the way
            self._opening[(key, seq)] = client
            self._opens[client] = (key, seq)
            return Open(client, rng.choice((100, 1000, 5000)))
        lock = f"lock/{rng.randrange(plan.locks)}"
        value = f"{client}:{seq}".encode()
        op = rng.randrange(14)
        if op == 0:
            return Renew(session)
        if op in (1, 13):
            return Put(k, value, ephemeral=session)
        if op == 2:
            return Put(k, value, fence=(lock, self._token(view, lock, session)))
        if op == 3:
            return Delete(k, fence=(lock, self._token(view, lock, session)) if seq % 2 else None)
        if op == 4:
            version = 0
            if view is not None:
                entry = view.read(k)
                version = entry[1] if entry is not None else 0
            return Cas(k, version, value)
        if op == 5:
            return Get(k)
        if op in (6, 7):
            return Acquire(lock, session)
        if op == 8:
            return Release(lock, session, self._token(view, lock, session))
        if op == 9:
            return Campaign("leader", session, client.encode())
        if op == 10:
            return Resign("leader", session)
        if op == 11:
            return Enter(f"barrier/{rng.randrange(2)}", session, rng.randint(1, 3))
        if rng.random() < 0.3:
            del self.session_of[client]
            return Close(session)
        return Renew(session)

    def _token(self, view: CoordMachine | None, lock: str, session: int) -> int:
        """The token ``session`` would fence with: the grant it holds as far as the view
        knows, or (a holder that lost it, paused) the lock's current or an older one."""
        info = view.lock(lock) if view is not None else None
        if info is None:
            return self.rng.randint(0, 5)
        if info.holder == session or self.rng.random() < 0.3:
            return info.token
        return max(0, info.token - self.rng.randint(1, 20))

    def _expiry(self, view: CoordMachine) -> Expire | None:
        rng = self.rng
        sessions = view.sessions()
        roll = rng.random()
        if not sessions or roll < 0.1:
            if not self.opened:
                return None
            # Long gone, or never seen by this node: a no-op.
            return Expire(rng.choice(self.opened), rng.randint(0, view.index))
        # Mostly the idlest (its timer fires first).
        idlest = min(sessions, key=lambda s: s.last) if roll < 0.6 else rng.choice(sessions)
        if roll < 0.85:
            return Expire(idlest.id, idlest.last)
        return Expire(idlest.id, max(0, idlest.last - rng.randint(1, 5)))  # stale

    def acked(self, client: str, key: str, seq: int, index: int) -> None:
        """``client`` learned that its command ``(key, seq)`` is at ``index``."""
        opener = self._opening.pop((key, seq), None)
        if opener is not None:
            del self._opens[opener]
            self.session_of[opener] = index
            self.opened.append(index)

    def abandoned(self, key: str, seq: int) -> None:
        """``(key, seq)`` will never be acknowledged (its broadcast session ended)."""
        opener = self._opening.pop((key, seq), None)
        if opener is not None:
            del self._opens[opener]
