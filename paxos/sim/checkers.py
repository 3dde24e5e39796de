"""Checkers: independent judges of a simulated run, fed observations as they happen.

Each checker watches one property of FIFO total-order broadcast and records a
:class:`Violation` when it sees it broken. Checkers never raise and never look
inside a replica: they only see what the simulator observed at the edges

* ``on_issue``: a client issued a command (the only legitimate commands);
* ``on_incarnation``: a node (re)started; its deliveries start again at index 1;
* ``on_chosen``: a node learned that a slot holds a value;
* ``on_delivery``: a node delivered a command at an index;
* ``on_ack``: a client learned its command was delivered at an index;
* ``on_session_opened`` / ``on_session_ended``: a node applied the open or the
  end of a session (system commands in the log);
* ``on_open_reply``: a client was told the key of the session it asked for;
* ``on_close_sent``: a client closed its session;
* ``on_abandon``: a client gave up an unacknowledged command because its
  session ended (it may or may not have been delivered before the end);
* ``on_config``: a node applied a membership change chosen at a slot, which
  governs the slots from a later one;
* ``on_governed``: the membership epoch a node took to govern a slot (a leader
  counting a quorum there, any node delivering it);
* ``on_coord`` / ``on_coord_restore``: what a node's coordination state machine
  returned for the command at an index and its state digest after it; the digest of
  the state it restored from a snapshot;
* ``finish``: the run is over; these nodes are up.

A node incarnation is identified by ``(node, incarnation)``; only the latest
incarnation of a node is tracked (an older one can never deliver again).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from paxos.coord.commands import CoordDecodeError, Expire
from paxos.coord.commands import decode as decode_coord
from paxos.coord.machine import CLOSED, EXPIRED, OPENED, Result
from paxos.multi.membership import Membership
from paxos.types import Command, Delivery, Value

#: How many violations one checker keeps (it still counts the rest).
MAX_KEPT = 20

_Key = tuple[str, int]  # (client, seq)


def _cmd(command: Command) -> str:
    return f"{command.client}#{command.seq}"


def _value(value: Value) -> str:
    if not value:
        return "NOOP"
    return "[" + ", ".join(_cmd(c) for c in value) + "]"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken property: which checker saw it, when, and what."""

    checker: str
    tick: int
    message: str

    def __str__(self) -> str:
        return f"[{self.checker}] tick {self.tick}: {self.message}"


class Checker:
    """Base class: every observation is ignored unless a subclass overrides it."""

    name = "checker"
    #: Liveness failures are reported apart from safety violations.
    liveness = False

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.count = 0

    def report(self, tick: int, message: str) -> None:
        self.count += 1
        if len(self.violations) < MAX_KEPT:
            self.violations.append(Violation(self.name, tick, message))

    def on_issue(self, command: Command, tick: int) -> None:
        pass

    def on_incarnation(self, node: int, incarnation: int, tick: int) -> None:
        pass

    def on_chosen(self, node: int, incarnation: int, slot: int, value: Value, tick: int) -> None:
        pass

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        pass

    def on_restore(
        self,
        node: int,
        incarnation: int,
        index: int,
        digest: int,
        sessions: dict[str, int],
        tick: int,
    ) -> None:
        """``node`` took a snapshot's state (at a restart, or installing one from a
        peer): its deliveries go on after ``index``; ``digest`` is its application's
        restored state; ``sessions``: its live sessions and their last seqs."""

    def on_state(self, node: int, incarnation: int, index: int, digest: int, tick: int) -> None:
        """``node``'s application state after applying delivery ``index``."""

    def bind_order(self, order: TotalOrder) -> None:
        """Called once with the run's TotalOrder checker (for the global order)."""

    def on_ack(self, client: str, seq: int, index: int, tick: int) -> None:
        pass

    def on_session_opened(
        self, node: int, incarnation: int, name: str, nonce: bytes, key: str, tick: int
    ) -> None:
        pass

    def on_session_ended(
        self, node: int, incarnation: int, key: str, last_seq: int, reason: str, tick: int
    ) -> None:
        pass

    def on_open_reply(self, client: str, nonce: bytes, key: str, tick: int) -> None:
        pass

    def on_close_sent(self, client: str, key: str, tick: int) -> None:
        pass

    def on_abandon(self, key: str, seq: int, tick: int) -> None:
        pass

    def on_config(
        self, node: int, chosen_slot: int, start: int, members: Membership, tick: int
    ) -> None:
        pass

    def on_governed(self, node: int, slot: int, epoch: int, tick: int) -> None:
        pass

    def on_coord(
        self, node: int, incarnation: int, delivery: Delivery, result: Result, digest: int,
        tick: int,
    ) -> None:
        """``node``'s coordination machine returned ``result`` for ``delivery``;
        ``digest`` is its state after it."""

    def on_coord_restore(
        self, node: int, incarnation: int, index: int, digest: int, tick: int
    ) -> None:
        """``node``'s coordination machine took a snapshot's state at ``index``."""

    def finish(self, tick: int, live_nodes: Sequence[int]) -> None:
        pass


class Agreement(Checker):
    """No slot is chosen with two different values, across all nodes and incarnations."""

    name = "agreement"

    def __init__(self) -> None:
        super().__init__()
        self._chosen: dict[int, tuple[Value, int, int]] = {}

    def on_chosen(self, node: int, incarnation: int, slot: int, value: Value, tick: int) -> None:
        seen = self._chosen.get(slot)
        if seen is None:
            self._chosen[slot] = (value, node, incarnation)
        elif seen[0] != value:
            first, n, i = seen
            self.report(
                tick,
                f"slot {slot} chosen as {_value(first)} on node {n} (incarnation {i}) "
                f"but as {_value(value)} on node {node} (incarnation {incarnation})",
            )


class ConfigAgreement(Checker):
    """The membership governing each slot is the same on every replica: every node
    that counted a quorum in a slot (leading) or delivered it took the same epoch to
    govern it, and every epoch is the same membership from the same slot on, chosen at
    the same slot, everywhere."""

    name = "config-agreement"

    def __init__(self) -> None:
        super().__init__()
        self._epoch: dict[int, tuple[int, int]] = {}  # slot -> (epoch, first node seen)
        self._configs: dict[int, tuple[int, int, Membership, int]] = {}

    def on_config(
        self, node: int, chosen_slot: int, start: int, members: Membership, tick: int
    ) -> None:
        seen = self._configs.setdefault(members.epoch, (chosen_slot, start, members, node))
        if seen[:3] != (chosen_slot, start, members):
            self.report(
                tick,
                f"epoch {members.epoch}: node {seen[3]} applied {seen[2]} chosen at slot "
                f"{seen[0]} from slot {seen[1]}; node {node} {members} chosen at slot "
                f"{chosen_slot} from slot {start}",
            )

    def on_governed(self, node: int, slot: int, epoch: int, tick: int) -> None:
        seen = self._epoch.setdefault(slot, (epoch, node))
        if seen[0] != epoch:
            self.report(
                tick,
                f"slot {slot} governed by epoch {seen[0]} at node {seen[1]} and by epoch "
                f"{epoch} at node {node}",
            )


class _PerIncarnation(Checker):
    """Helper: keeps one state object per node, reset when the node's incarnation changes."""

    def __init__(self) -> None:
        super().__init__()
        self._incarnation: dict[int, int] = {}

    def _fresh(self, node: int, incarnation: int) -> bool:
        """True (and remembers the incarnation) if this is a new incarnation of ``node``."""
        if self._incarnation.get(node) == incarnation:
            return False
        self._incarnation[node] = incarnation
        return True

    def on_incarnation(self, node: int, incarnation: int, tick: int) -> None:
        if self._fresh(node, incarnation):
            self._reset(node)

    def _reset(self, node: int) -> None:
        raise NotImplementedError


class Integrity(_PerIncarnation):
    """No incarnation delivers a (client, seq) twice, or two commands at one index."""

    name = "integrity"

    def __init__(self) -> None:
        super().__init__()
        self._commands: dict[int, set[_Key]] = {}
        self._indexes: dict[int, set[int]] = {}

    def _reset(self, node: int) -> None:
        self._commands[node] = set()
        self._indexes[node] = set()

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        if self._fresh(node, incarnation):
            self._reset(node)
        command = delivery.command
        key = (command.client, command.seq)
        commands = self._commands[node]
        if key in commands:
            self.report(
                tick, f"node {node} (incarnation {incarnation}) delivered {_cmd(command)} twice"
            )
        commands.add(key)
        indexes = self._indexes[node]
        if delivery.index in indexes:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) delivered index {delivery.index} twice",
            )
        indexes.add(delivery.index)

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        # What came before the snapshot is TotalOrder's to check (the positions go on).
        self._fresh(node, incarnation)
        self._reset(node)


class Validity(Checker):
    """Every chosen or delivered command is one a client issued, payload and all."""

    name = "validity"

    def __init__(self) -> None:
        super().__init__()
        self._issued: dict[_Key, bytes] = {}

    def on_issue(self, command: Command, tick: int) -> None:
        self._issued[(command.client, command.seq)] = command.payload

    def _check(self, command: Command, where: str, tick: int) -> None:
        payload = self._issued.get((command.client, command.seq))
        if payload is None:
            self.report(tick, f"{where}: {_cmd(command)} was never issued by a client")
        elif payload != command.payload:
            self.report(tick, f"{where}: {_cmd(command)} has a payload its client never sent")

    def on_chosen(self, node: int, incarnation: int, slot: int, value: Value, tick: int) -> None:
        for command in value:
            if command.seq:  # system commands (seq 0) are the Sessions checker's business
                self._check(command, f"slot {slot} on node {node}", tick)

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        self._check(delivery.command, f"index {delivery.index} on node {node}", tick)


class TotalOrder(_PerIncarnation):
    """Every incarnation's delivery sequence is a prefix of one global order, and each
    delivery's ``index`` is its position in that sequence (1, 2, 3, ...)."""

    name = "total-order"

    def __init__(self) -> None:
        super().__init__()
        #: The global order: position i-1 holds (slot, command) of index i.
        self.order: list[tuple[int, Command]] = []
        self._count: dict[int, int] = {}
        self._diverged: set[int] = set()

    def _reset(self, node: int) -> None:
        self._count[node] = 0
        self._diverged.discard(node)

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        if self._fresh(node, incarnation):
            self._reset(node)
        position = self._count[node] + 1
        self._count[node] = position
        where = f"node {node} (incarnation {incarnation})"
        if delivery.index != position:
            self.report(
                tick,
                f"{where} delivered {_cmd(delivery.command)} as index {delivery.index} "
                f"but it is its delivery number {position}",
            )
        if node in self._diverged:
            return  # reported once; everything after a divergence differs too
        entry = (delivery.slot, delivery.command)
        order = self.order
        if position <= len(order):
            slot, command = order[position - 1]
            if (slot, command) != entry:
                self._diverged.add(node)
                self.report(
                    tick,
                    f"{where} delivered {_cmd(delivery.command)} (slot {delivery.slot}) at "
                    f"position {position}, where another delivered {_cmd(command)} (slot {slot})",
                )
        else:
            order.append(entry)  # position == len(order) + 1: all before it matched

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        if self._fresh(node, incarnation):
            self._reset(node)
        if index > len(self.order):
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) restored a state at index {index}, "
                f"beyond anything delivered ({len(self.order)})",
            )
        self._count[node] = index  # its next delivery must be index + 1
        self._diverged.discard(node)

    def last_seqs(self, index: int) -> dict[str, int]:
        """Each client's last seq among the first ``index`` deliveries of the order."""
        last: dict[str, int] = {}
        for _, command in self.order[:index]:
            last[command.client] = command.seq
        return last


class FifoOrder(_PerIncarnation):
    """Each client's commands are delivered as seq 1, 2, 3, ... with no gap or repeat.

    Checked per incarnation; with :class:`TotalOrder` this holds for the global order.
    """

    name = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[int, dict[str, int]] = {}

    def _reset(self, node: int) -> None:
        self._last[node] = {}

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        if self._fresh(node, incarnation):
            self._reset(node)
        last = self._last[node]
        command = delivery.command
        previous = last.get(command.client, 0)
        if command.seq != previous + 1:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) delivered {_cmd(command)} "
                f"right after {command.client}#{previous}",
            )
        last[command.client] = command.seq

    def bind_order(self, order: TotalOrder) -> None:
        self._order = order

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        self._fresh(node, incarnation)
        order = getattr(self, "_order", None)
        expected = order.last_seqs(index) if order is not None else {}
        self._last[node] = dict(expected)
        for key, last in sessions.items():
            # The restored session table must say where each live session stands.
            if last != expected.get(key, 0):
                self.report(
                    tick,
                    f"node {node} (incarnation {incarnation}) restored session {key} at seq "
                    f"{last}, but the order up to index {index} has it at "
                    f"{expected.get(key, 0)}",
                )


class AckedDelivered(Checker):
    """Every acknowledged command is in the global order at the index its client was told.

    Index 0 means "delivered, index forgotten": then it only has to be in the order.
    """

    name = "acked-delivered"

    def __init__(self) -> None:
        super().__init__()
        self._at_index: dict[int, _Key] = {}
        self._index_of: dict[_Key, int] = {}
        self._acks: list[tuple[str, int, int, int]] = []

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        key = (delivery.command.client, delivery.command.seq)
        self._at_index.setdefault(delivery.index, key)
        self._index_of.setdefault(key, delivery.index)

    def on_ack(self, client: str, seq: int, index: int, tick: int) -> None:
        self._acks.append((client, seq, index, tick))

    def finish(self, tick: int, live_nodes: Sequence[int]) -> None:
        told: dict[_Key, int] = {}
        for client, seq, index, ack_tick in self._acks:
            key = (client, seq)
            name = f"{client}#{seq}"
            if index > 0:
                previous = told.setdefault(key, index)
                if previous != index:
                    self.report(ack_tick, f"{name} acknowledged at index {previous} and {index}")
                at = self._at_index.get(index)
                if at != key:
                    where = "nothing" if at is None else f"{at[0]}#{at[1]}"
                    self.report(
                        ack_tick, f"{name} acknowledged at index {index}, but {where} is there"
                    )
            elif key not in self._index_of:
                self.report(ack_tick, f"{name} acknowledged but never delivered anywhere")


class Liveness(Checker):
    """At the end of the heal phase, every client has every issued command acknowledged
    and every live node (in its current incarnation) delivered every issued command."""

    name = "liveness"
    liveness = True

    def __init__(self) -> None:
        super().__init__()
        self._issued: dict[_Key, None] = {}
        self._acked: set[_Key] = set()
        self._delivered: dict[int, set[_Key]] = {}
        self._incarnation: dict[int, int] = {}

    def on_issue(self, command: Command, tick: int) -> None:
        self._issued[(command.client, command.seq)] = None

    def on_abandon(self, key: str, seq: int, tick: int) -> None:
        # Its session ended first: nobody waits for it any more (whether it was
        # delivered before the end is for the order checkers to agree on).
        self._issued.pop((key, seq), None)
        for delivered in self._delivered.values():
            delivered.discard((key, seq))

    def on_incarnation(self, node: int, incarnation: int, tick: int) -> None:
        if self._incarnation.get(node) != incarnation:
            self._incarnation[node] = incarnation
            self._delivered[node] = set()

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        self.on_incarnation(node, incarnation, tick)
        key = (delivery.command.client, delivery.command.seq)
        if key in self._issued:  # anything else is Validity's business
            self._delivered[node].add(key)

    def on_ack(self, client: str, seq: int, index: int, tick: int) -> None:
        key = (client, seq)
        if key in self._issued:
            self._acked.add(key)

    def bind_order(self, order: TotalOrder) -> None:
        self._order = order

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        self.on_incarnation(node, incarnation, tick)
        order = getattr(self, "_order", None)
        if order is None:
            return
        delivered = self._delivered[node]
        issued = self._issued
        for _, command in order.order[:index]:  # in the restored state: delivered
            key = (command.client, command.seq)
            if key in issued:
                delivered.add(key)

    def satisfied(self, live_nodes: Iterable[int]) -> bool:
        """Cheap test, for the runner's loop: is there nothing left to wait for?"""
        n = len(self._issued)
        if len(self._acked) != n:
            return False
        empty: set[_Key] = set()
        return all(len(self._delivered.get(node, empty)) == n for node in live_nodes)

    def finish(self, tick: int, live_nodes: Sequence[int]) -> None:
        unacked = [k for k in self._issued if k not in self._acked]
        if unacked:
            self.report(tick, f"{len(unacked)} issued commands never acknowledged {_keys(unacked)}")
        empty: set[_Key] = set()
        for node in live_nodes:
            delivered = self._delivered.get(node, empty)
            missing = [k for k in self._issued if k not in delivered]
            if missing:
                self.report(
                    tick,
                    f"node {node} has not delivered {len(missing)} of {len(self._issued)} "
                    f"issued commands {_keys(missing)}",
                )


def _keys(keys: Sequence[_Key], limit: int = 5) -> str:
    shown = ", ".join(f"{c}#{s}" for c, s in keys[:limit])
    return f"({shown}{', ...' if len(keys) > limit else ''})"


class SessionRules(Checker):
    """Sessions are opened and ended through the log, identically everywhere:

    * a session key always names the same open request ``(name, nonce)``, on every
      node (the table is replicated state), and is given to one client only: two
      clients never share a session, even when they share a name;
    * every node ends a session at the same seq;
    * a node delivers a command only of a session it opened (in this incarnation),
      and never a seq above the one its session ended at.
    """

    name = "sessions"

    def __init__(self) -> None:
        super().__init__()
        self._opened_as: dict[str, tuple[str, bytes]] = {}
        self._owner: dict[str, str] = {}
        self._ended_at: dict[str, int] = {}
        self._node_opened: dict[tuple[int, int], set[str]] = {}
        self._node_ended: dict[tuple[int, int], dict[str, int]] = {}

    def on_session_opened(
        self, node: int, incarnation: int, name: str, nonce: bytes, key: str, tick: int
    ) -> None:
        first = self._opened_as.setdefault(key, (name, nonce))
        if first != (name, nonce):
            self.report(tick, f"node {node} opened {key} for another request than others did")
        self._node_opened.setdefault((node, incarnation), set()).add(key)

    def on_session_ended(
        self, node: int, incarnation: int, key: str, last_seq: int, reason: str, tick: int
    ) -> None:
        first = self._ended_at.setdefault(key, last_seq)
        if first != last_seq:
            self.report(tick, f"node {node} ended {key} at seq {last_seq}, others at {first}")
        if key not in self._node_opened.get((node, incarnation), ()):
            self.report(tick, f"node {node} ended {key}, which it never opened")
        self._node_ended.setdefault((node, incarnation), {})[key] = last_seq

    def on_open_reply(self, client: str, nonce: bytes, key: str, tick: int) -> None:
        owner = self._owner.setdefault(key, client)
        if owner != client:
            self.report(tick, f"session {key} was given to two clients, {owner} and {client}")
        opened = self._opened_as.get(key)
        if opened is not None and opened[1] != nonce:
            self.report(tick, f"{client} was told {key} for a request that did not open it")

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        # Sessions opened before the snapshot are in it (FifoOrder checks where they stand).
        self._node_opened.setdefault((node, incarnation), set()).update(sessions)

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        command = delivery.command
        key = command.client
        where = (node, incarnation)
        if key not in self._node_opened.get(where, ()):
            self.report(
                tick, f"node {node} delivered {_cmd(command)} of a session it never opened"
            )
            return
        ended = self._node_ended.get(where)
        if ended is not None and key in ended and command.seq > ended[key]:
            self.report(
                tick,
                f"node {node} delivered {_cmd(command)} after its session ended at "
                f"seq {ended[key]}",
            )


class StateMachineChecker(Checker):
    """Every replica's application has the same state after the same index, and a
    restored state is the state replicas had at its index."""

    name = "state"

    def __init__(self) -> None:
        super().__init__()
        self._digest: dict[int, int] = {0: 0}

    def on_state(self, node: int, incarnation: int, index: int, digest: int, tick: int) -> None:
        first = self._digest.setdefault(index, digest)
        if first != digest:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) has state {digest:08x} after index "
                f"{index}, others {first:08x}",
            )
            self._digest[index] = digest  # reported once per divergence point

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        first = self._digest.get(index)
        if first is None:
            self.report(tick, f"node {node} restored a state at index {index} nobody reached")
        elif first != digest:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) restored state {digest:08x} at index "
                f"{index}, where replicas had {first:08x}",
            )


class CoordAgreement(Checker):
    """Every replica's coordination machine returns the same result at the same index,
    changes and all (so replicas agree on which sessions expired at which index, which
    ephemeral keys vanished then, which locks were granted with which tokens), and has
    the same state after it; a state restored from a snapshot is the state replicas
    had at its index.

    And the lease rule, judged on the global order apart from any machine: an
    ``Expire(session, last)`` takes effect iff the session is live and the last
    command that named it (its open, a renewal, any use) is at ``last``.
    """

    name = "coord"

    def __init__(self) -> None:
        super().__init__()
        #: index -> (payload, result, state digest, node that was first).
        self._at: dict[int, tuple[bytes, Result, int, int]] = {}
        #: Indexes already reported (a divergence is reported once).
        self._reported: set[int] = set()
        #: The lease rule: the next index to judge, and each live session's last use.
        self._next = 1
        self._last_use: dict[int, int] = {}

    def on_coord(
        self, node: int, incarnation: int, delivery: Delivery, result: Result, digest: int,
        tick: int,
    ) -> None:
        index = delivery.index
        first = self._at.setdefault(index, (delivery.command.payload, result, digest, node))
        if index == self._next:
            self._judge(tick)
        if (first[1] == result and first[2] == digest) or index in self._reported:
            return
        self._reported.add(index)
        where = f"node {node} (incarnation {incarnation})"
        if first[1] != result:
            self.report(
                tick,
                f"at index {index} {where}: {_result(result)}; node {first[3]}: "
                f"{_result(first[1])}",
            )
        else:
            self.report(
                tick,
                f"{where} has coordination state {digest:08x} after index {index}, node "
                f"{first[3]} {first[2]:08x}",
            )

    def _judge(self, tick: int) -> None:
        """The lease rule over the indexes known from ``_next`` on, in order."""
        at, last_use = self._at, self._last_use
        while self._next in at:
            index = self._next
            self._next += 1
            payload, result, _, node = at[index]
            try:
                command = decode_coord(payload)
            except CoordDecodeError:
                continue
            session = getattr(command, "session", 0) or getattr(command, "ephemeral", 0)
            if isinstance(command, Expire) and session in last_use:
                active = last_use[session]
                if result.ok != (active == command.last):
                    self.report(
                        tick,
                        f"Expire(session {session}, last {command.last}) at index {index} "
                        f"{'took effect' if result.ok else 'was refused'} (node {node}), "
                        f"but the session was last used at index {active}",
                    )
            elif session in last_use:
                last_use[session] = index  # any use of a live session is activity
            for change in result.changes:
                if change.kind == OPENED:
                    last_use[change.session] = index
                elif change.kind in (EXPIRED, CLOSED):
                    last_use.pop(change.session, None)

    def on_coord_restore(
        self, node: int, incarnation: int, index: int, digest: int, tick: int
    ) -> None:
        first = self._at.get(index)
        if first is not None and first[2] != digest:
            self.report(
                tick,
                f"node {node} (incarnation {incarnation}) restored coordination state "
                f"{digest:08x} at index {index}, where replicas had {first[2]:08x}",
            )


def _result(result: Result) -> str:
    """A coordination result, in short: outcome and changes."""
    text = "ok" if result.ok else f"refused ({result.reason})"
    if result.token:
        text += f" token {result.token}"
    changes = [
        f"{c.kind} {c.key or ''}{'@' if c.key else ''}s{c.session}"
        + (f" #{c.version}" if c.kind in ("grant", "release") else "")
        for c in result.changes
    ]
    return text + (f" [{', '.join(changes)}]" if changes else "")


def default_checkers() -> list[Checker]:
    from paxos.sim.invariants import Invariants

    return [
        Invariants(),
        Agreement(),
        ConfigAgreement(),
        Integrity(),
        Validity(),
        TotalOrder(),
        FifoOrder(),
        AckedDelivered(),
        SessionRules(),
        StateMachineChecker(),
        CoordAgreement(),
        Liveness(),
    ]


class Checkers:
    """Feeds every observation to each checker (only to those that override the hook)."""

    def __init__(self, checkers: Iterable[Checker] | None = None) -> None:
        self.checkers: list[Checker] = (
            list(checkers) if checkers is not None else default_checkers()
        )
        base = Checker
        cs = self.checkers
        self._issue = [c.on_issue for c in cs if type(c).on_issue is not base.on_issue]
        self._incarnation = [
            c.on_incarnation for c in cs if type(c).on_incarnation is not base.on_incarnation
        ]
        self._chosen = [c.on_chosen for c in cs if type(c).on_chosen is not base.on_chosen]
        self._delivery = [c.on_delivery for c in cs if type(c).on_delivery is not base.on_delivery]
        self._ack = [c.on_ack for c in cs if type(c).on_ack is not base.on_ack]
        self._restore = [c.on_restore for c in cs if type(c).on_restore is not base.on_restore]
        self._state = [c.on_state for c in cs if type(c).on_state is not base.on_state]
        self._config = [c.on_config for c in cs if type(c).on_config is not base.on_config]
        self._governed = [
            c.on_governed for c in cs if type(c).on_governed is not base.on_governed
        ]
        self._coord = [c.on_coord for c in cs if type(c).on_coord is not base.on_coord]
        self._coord_restore = [
            c.on_coord_restore for c in cs
            if type(c).on_coord_restore is not base.on_coord_restore
        ]
        order = next((c for c in cs if isinstance(c, TotalOrder)), None)
        if order is not None:
            for c in cs:
                c.bind_order(order)
        self._session_hooks = [
            c for c in cs
            if any(
                getattr(type(c), hook) is not getattr(base, hook)
                for hook in (
                    "on_session_opened",
                    "on_session_ended",
                    "on_open_reply",
                    "on_close_sent",
                    "on_abandon",
                )
            )
        ]

    def on_issue(self, command: Command, tick: int) -> None:
        for hook in self._issue:
            hook(command, tick)

    def on_incarnation(self, node: int, incarnation: int, tick: int) -> None:
        for hook in self._incarnation:
            hook(node, incarnation, tick)

    def on_chosen(self, node: int, incarnation: int, slot: int, value: Value, tick: int) -> None:
        for hook in self._chosen:
            hook(node, incarnation, slot, value, tick)

    def on_delivery(self, node: int, incarnation: int, delivery: Delivery, tick: int) -> None:
        for hook in self._delivery:
            hook(node, incarnation, delivery, tick)

    def on_ack(self, client: str, seq: int, index: int, tick: int) -> None:
        for hook in self._ack:
            hook(client, seq, index, tick)

    def on_restore(
        self, node: int, incarnation: int, index: int, digest: int,
        sessions: dict[str, int], tick: int,
    ) -> None:
        for hook in self._restore:
            hook(node, incarnation, index, digest, sessions, tick)

    @property
    def wants_state(self) -> bool:
        return bool(self._state)

    def on_state(self, node: int, incarnation: int, index: int, digest: int, tick: int) -> None:
        for hook in self._state:
            hook(node, incarnation, index, digest, tick)

    def on_session_opened(
        self, node: int, incarnation: int, name: str, nonce: bytes, key: str, tick: int
    ) -> None:
        for checker in self._session_hooks:
            checker.on_session_opened(node, incarnation, name, nonce, key, tick)

    def on_session_ended(
        self, node: int, incarnation: int, key: str, last_seq: int, reason: str, tick: int
    ) -> None:
        for checker in self._session_hooks:
            checker.on_session_ended(node, incarnation, key, last_seq, reason, tick)

    def on_open_reply(self, client: str, nonce: bytes, key: str, tick: int) -> None:
        for checker in self._session_hooks:
            checker.on_open_reply(client, nonce, key, tick)

    def on_close_sent(self, client: str, key: str, tick: int) -> None:
        for checker in self._session_hooks:
            checker.on_close_sent(client, key, tick)

    def on_abandon(self, key: str, seq: int, tick: int) -> None:
        for checker in self._session_hooks:
            checker.on_abandon(key, seq, tick)

    def on_config(
        self, node: int, chosen_slot: int, start: int, members: Membership, tick: int
    ) -> None:
        for hook in self._config:
            hook(node, chosen_slot, start, members, tick)

    def on_governed(self, node: int, slot: int, epoch: int, tick: int) -> None:
        for hook in self._governed:
            hook(node, slot, epoch, tick)

    @property
    def wants_coord(self) -> bool:
        return bool(self._coord)

    def on_coord(
        self, node: int, incarnation: int, delivery: Delivery, result: Result, digest: int,
        tick: int,
    ) -> None:
        for hook in self._coord:
            hook(node, incarnation, delivery, result, digest, tick)

    def on_coord_restore(
        self, node: int, incarnation: int, index: int, digest: int, tick: int
    ) -> None:
        for hook in self._coord_restore:
            hook(node, incarnation, index, digest, tick)

    def finish(self, tick: int, live_nodes: Sequence[int]) -> None:
        for checker in self.checkers:
            checker.finish(tick, live_nodes)

    @property
    def violations(self) -> list[Violation]:
        """Safety violations kept by every safety checker, in checker order."""
        return [v for c in self.checkers if not c.liveness for v in c.violations]

    @property
    def liveness_failures(self) -> list[Violation]:
        return [v for c in self.checkers if c.liveness for v in c.violations]

    @property
    def violation_count(self) -> int:
        return sum(c.count for c in self.checkers if not c.liveness)

    @property
    def liveness_count(self) -> int:
        return sum(c.count for c in self.checkers if c.liveness)
