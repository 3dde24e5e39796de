"""A virtual network: lossy, duplicating, reordering and partitionable, all driven by one seed.

Messages in flight sit in a priority queue keyed by ``(delivery tick, send
sequence number)``: the sequence number makes the order total, so two messages
due in the same tick always come out in the order they were sent, and the
payloads themselves are never compared. Reordering comes only from random
delays.

Endpoints are node ids (``int``) and client ids (``str``); client traffic goes
through the same faults as traffic between nodes.

Besides loss, duplication and short delays, the faults that make messages old and
leaders stale: long-tail delays (a message arrives after several leader changes),
replays of messages sent long ago, bursts that drop every message of one type,
and partial partitions that leave one node (the leader, mostly) talking to a
minority only, one-way or both ways.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

from paxos import messages as wire
from paxos.messages import Message
from paxos.sim.events import EventLog
from paxos.sim.faults import PERFECT, FaultRates
from paxos.types import Command

#: A network endpoint: a node id or a client id.
Address = int | str


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client asks a node to broadcast ``commands`` (its unacknowledged ones, in seq order).

    ``client`` is the client's network address; the commands carry its session key.
    """

    client: str
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class ClientReply:
    """Node ``src`` delivered commands of session ``key``: ``acks`` holds ``(seq, index)``
    pairs (index 0: delivered, index forgotten). ``leader`` is the node ``src`` believes
    leads."""

    src: int
    key: str
    acks: tuple[tuple[int, int], ...]
    leader: int | None


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """A client at address ``client`` asks for a session named ``name`` (``nonce``: unique
    per request, the same on retries)."""

    client: str
    name: str
    nonce: bytes


@dataclass(frozen=True, slots=True)
class OpenReply:
    """Node ``src`` applied the open ``nonce``: the session's key is ``key``."""

    src: int
    nonce: bytes
    key: str


@dataclass(frozen=True, slots=True)
class CloseRequest:
    """A client ends its session ``key`` (no answer)."""

    client: str
    key: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Node ``src`` has applied the end of session ``key`` (its last delivered seq was
    ``last_seq``; None if the node no longer remembers): its other commands are never
    delivered."""

    src: int
    key: str
    last_seq: int | None


#: What travels on the virtual network.
Payload = (
    Message | ClientRequest | ClientReply | OpenRequest | OpenReply | CloseRequest | SessionEnded
)

# One message in flight: (delivery tick, send sequence number, src, dst, payload).
_InFlight = tuple[int, int, Address, Address, Payload]

#: The contract's name of each reason a message is dropped.
_DROP_WHY = {"cut": "partition", "lost": "loss", "burst": "burst"}
#: The side of a bridge node in a partition: it talks to both sides.
_BRIDGE = -1
#: How many past messages a replay is drawn from.
_REPLAY_WINDOW = 512
#: The message types a burst may drop.
_BURST_TYPES: tuple[type, ...] = (
    wire.Prepare,
    wire.Promise,
    wire.Accept,
    wire.Accepted,
    wire.Nack,
    wire.Commit,
    wire.Heartbeat,
    wire.HeartbeatReply,
    wire.PreVote,
    wire.PreVoteReply,
    wire.CatchupRequest,
    wire.CatchupReply,
    wire.Forward,
)


class Network:
    """The virtual network of one run. The runner sets :attr:`now` every tick."""

    def __init__(
        self,
        rng: random.Random,
        rates: FaultRates,
        nodes: Sequence[int],
        clients: Sequence[str],
        trace: list[str] | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.rng = rng
        self.rates = rates
        self.nodes = tuple(nodes)
        self.clients = tuple(clients)
        self.now = 0
        self.trace = trace
        self.events = events
        self._queue: list[_InFlight] = []
        self._seq = 0
        #: Active symmetric partition: endpoint -> side, until a tick. Empty when healed.
        self._side: dict[Address, int] = {}
        self._partition_until = 0
        #: Active one-directional cuts: (src, dst) -> until tick. Insertion-ordered.
        self._cuts: dict[tuple[Address, Address], int] = {}
        #: The last messages sent, for replays (a ring).
        self._past: list[tuple[Address, Address, Payload]] = []
        self._past_next = 0
        #: Selective drops (a burst): message types dropped on some directed links until
        #: a tick, like a flaky middlebox. Empty when none is active.
        self._burst_types: frozenset[type] = frozenset()
        self._burst_links: frozenset[tuple[Address, Address]] = frozenset()
        self._burst_until = 0
        self.sent = 0
        self.dropped = 0
        self.replayed = 0

    def add_node(self, node: int) -> None:
        """A node joins the network (a new member); partitions put it on side 0."""
        if node not in self.nodes:
            self.nodes = (*self.nodes, node)

    # ------------------------------------------------------------------ sending

    def send(self, src: Address, dst: Address, payload: Payload) -> None:
        """Put ``payload`` on the wire; it may be lost, duplicated or delayed."""
        self.sent += 1
        rates = self.rates
        rng = self.rng
        if self._blocked(src, dst):
            self._drop(src, dst, payload, "cut")
            return
        if rates.loss and rng.random() < rates.loss:
            self._drop(src, dst, payload, "lost")
            return
        if (
            self._burst_types
            and type(payload) in self._burst_types
            and (src, dst) in self._burst_links
        ):
            self._drop(src, dst, payload, "burst")
            return
        if rates.replay_rate:
            past = self._past
            if len(past) < _REPLAY_WINDOW:
                past.append((src, dst, payload))
            else:
                past[self._past_next] = (src, dst, payload)
                self._past_next = (self._past_next + 1) % _REPLAY_WINDOW
        copies = 2 if rates.duplication and rng.random() < rates.duplication else 1
        low = rates.delay_min_ticks
        spread = rates.delay_max_ticks - low + 1
        for _ in range(copies):
            delay = low + int(rng.random() * spread)  # uniform in [min, max], cheaper than randint
            if rates.tail and rng.random() < rates.tail:
                # The long tail: delivered after leaders have come and gone.
                longest = max(rates.delay_max_ticks, rates.tail_max_ticks)
                delay = rng.randint(rates.delay_max_ticks, longest)
            self._seq += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, src, dst, payload))
            if self.trace is not None:
                self.trace.append(f"{self.now} send {src}->{dst} @{self.now + delay} {payload!r}")
            if self.events is not None:
                self.events.message(self.now, src, dst, payload, self.now + delay, self._seq)

    def due(self) -> list[tuple[Address, Address, Payload]]:
        """Pop every message due at or before :attr:`now`, in (tick, send order)."""
        queue = self._queue
        now = self.now
        out: list[tuple[Address, Address, Payload]] = []
        while queue and queue[0][0] <= now:
            _, seq, src, dst, payload = heapq.heappop(queue)
            # A partition that started while the message was on the wire eats it too.
            if self._blocked(src, dst):
                self._drop(src, dst, payload, "cut", seq)
                continue
            out.append((src, dst, payload))
        return out

    def in_flight(self) -> int:
        return len(self._queue)

    def _blocked(self, src: Address, dst: Address) -> bool:
        side = self._side
        if side:
            a, b = side.get(src, 0), side.get(dst, 0)
            if a != b and a != _BRIDGE and b != _BRIDGE:
                return True
        return bool(self._cuts) and (src, dst) in self._cuts

    def _drop(
        self, src: Address, dst: Address, payload: Payload, why: str, seq: int | None = None
    ) -> None:
        self.dropped += 1
        if self.trace is not None:
            self.trace.append(f"{self.now} {why} {src}->{dst} {payload!r}")
        events = self.events
        if events is not None:
            if seq is None:  # dropped as it was sent: a send that never arrives
                events.message(self.now, src, dst, payload, None, None)
            events.drop(self.now, src, dst, payload, _DROP_WHY[why], seq)

    # ------------------------------------------------------------------ faults

    def update_faults(self, leader: int | None = None) -> None:
        """Once per fault-phase tick: end expired partitions and cuts, maybe start new ones.

        ``leader`` (a node that believes it leads, if any) is the usual victim of a
        partial partition.
        """
        rates = self.rates
        rng = self.rng
        now = self.now
        if self._burst_types and now >= self._burst_until:
            self._log("selective drops over")
            self._burst_types = frozenset()
            if self.events is not None:
                self.events.emit(now, "burst", types=[], links=[], until=now)
        if rates.burst_rate and not self._burst_types and rng.random() < rates.burst_rate:
            self._start_burst(rng.randint(1, max(1, rates.burst_max_ticks)))
        if rates.replay_rate and self._past and rng.random() < rates.replay_rate:
            src, dst, payload = rng.choice(self._past)
            self.replayed += 1
            self._seq += 1
            heapq.heappush(self._queue, (now + 1, self._seq, src, dst, payload))
            if self.trace is not None:
                self.trace.append(f"{now} replay {src}->{dst} {payload!r}")
            if self.events is not None:
                self.events.message(now, src, dst, payload, now + 1, self._seq, replay=True)
        if rates.partial_rate and len(self.nodes) > 2 and rng.random() < rates.partial_rate:
            self._start_partial(leader, rng.randint(1, max(1, rates.partial_max_ticks)))
        if self._side and now >= self._partition_until:
            self._side = {}
            self._log("partition healed")
            if self.events is not None:
                self.events.emit(now, "heal")
        if self._cuts:
            for link in [link for link, until in self._cuts.items() if now >= until]:
                del self._cuts[link]
                self._log(f"link {link[0]}->{link[1]} restored")
                if self.events is not None:
                    self.events.emit(now, "uncut", src=link[0], dst=link[1])
        if rates.partition_rate and not self._side and rng.random() < rates.partition_rate:
            self._start_partition(rng.randint(1, max(1, rates.partition_max_ticks)))
        if rates.link_cut_rate and rng.random() < rates.link_cut_rate and len(self.nodes) > 1:
            src, dst = rng.sample(self.nodes, 2)
            until = now + rng.randint(1, max(1, rates.link_cut_max_ticks))
            self._cut((src, dst), until)
            self._log(f"link {src}->{dst} cut until {self._cuts[(src, dst)]}")

    def _start_burst(self, duration: int) -> None:
        """Drop some message types on some links for a while: everywhere, into one node,
        out of one node, or on one link. A follower that misses a new leader's Prepares
        and Accepts but hears its heartbeats keeps its old promise; a deposed leader that
        gets catch-up replies but no heartbeat from the new majority goes on leading."""
        rng = self.rng
        types = frozenset(t for t in _BURST_TYPES if rng.random() < 0.3)
        if not types:
            types = frozenset((rng.choice(_BURST_TYPES),))
        nodes = self.nodes
        links = [(a, b) for a in nodes for b in nodes if a != b]
        where = rng.random()
        victim = rng.choice(nodes)
        if where < 0.2:
            chosen = links
        elif where < 0.5:
            chosen = [(a, b) for a, b in links if b == victim]
        elif where < 0.8:
            chosen = [(a, b) for a, b in links if a == victim]
        else:
            chosen = [rng.choice(links)] if links else []
        self._burst_types = types
        self._burst_links = frozenset(chosen)
        self._burst_until = self.now + duration
        if self.trace is not None:
            names = ",".join(sorted(t.__name__ for t in types))
            self._log(f"drops {names} on {sorted(chosen)} until {self._burst_until}")
        self._burst_event()

    def _burst_event(self) -> None:
        if self.events is not None:
            self.events.emit(
                self.now,
                "burst",
                types=sorted(t.__name__ for t in self._burst_types),
                links=[[a, b] for a, b in sorted(self._burst_links)],
                until=self._burst_until,
            )

    def _cut(self, link: tuple[Address, Address], until: int) -> None:
        """Cut ``link`` until ``until`` (never shortening a longer cut already there: an
        isolated node stays isolated whatever other faults come and go)."""
        self._cuts[link] = max(until, self._cuts.get(link, 0))
        if self.events is not None:
            self.events.emit(self.now, "cut", src=link[0], dst=link[1], until=self._cuts[link])

    def isolate(self, node: int, duration: int) -> None:
        """Cut every link between ``node`` and the other nodes, both ways, for
        ``duration`` ticks: it falls behind while the others go on (and compact)."""
        until = self.now + duration
        for other in self.nodes:
            if other != node:
                for link in ((node, other), (other, node)):
                    self._cut(link, until)
        self._log(f"node {node} isolated until {until}")

    def stale_leader(self, victim: int, duration: int) -> None:
        """Isolate ``victim`` (a leader) from all but one loyal follower for ``duration``; the
        follower hears the others only partly (their Prepares and Accepts are lost). The
        others elect a new leader; the old one goes on leading its follower, which hears
        what the new leader chooses and tells the old one (a deposed leader talking to a
        minority while catch-up flows from the new majority)."""
        others = [n for n in self.nodes if n != victim]
        if len(others) < 2:
            return
        rng = self.rng
        keep = rng.choice(others) if len(self.nodes) >= 5 else None
        until = self.now + duration
        for other in others:
            if other != keep:
                self._cut((victim, other), until)
                self._cut((other, victim), until)
        if keep is not None:
            self._burst_types = frozenset((wire.Prepare, wire.Accept))
            self._burst_links = frozenset((o, keep) for o in others if o != keep)
            self._burst_until = until
            self._burst_event()
        self._log(f"stale leader: node {victim} keeps only {keep} until {until}")

    def _start_partial(self, leader: int | None, duration: int) -> None:
        """Cut one node (the leader, mostly) off from all but a minority of the others,
        both ways or one way: it may stay leader of a minority, or keep being heard by
        some while it hears none."""
        rng = self.rng
        victim = leader if leader is not None and rng.random() < 0.7 else rng.choice(self.nodes)
        others = [n for n in self.nodes if n != victim]
        rng.shuffle(others)
        majority = len(self.nodes) // 2 + 1
        keep = set(others[: rng.randint(0, majority - 2)])
        until = self.now + duration
        both_ways = rng.random() < 0.7
        for other in others:
            if other in keep:
                continue
            if both_ways or rng.random() < 0.5:
                self._cut((victim, other), until)
            if both_ways or (victim, other) not in self._cuts:
                self._cut((other, victim), until)
        self._log(f"partial partition: node {victim} keeps only {sorted(keep)} until {until}")
        if keep and not self._burst_types and rng.random() < 0.5:
            # The minority the victim keeps hears the rest only partly: their Prepares
            # and Accepts are lost, their heartbeats and catch-up replies get through. It
            # follows a new leader without promising it, and tells the old one what the
            # new one chose.
            self._burst_types = frozenset((wire.Prepare, wire.Accept))
            self._burst_links = frozenset(
                (other, kept) for kept in keep for other in others if other not in keep
            )
            self._burst_until = until
            self._burst_event()
            self._log(f"... and {sorted(keep)} miss the others' Prepares and Accepts")

    def _start_partition(self, duration: int) -> None:
        """Split the nodes into two non-empty sides at random; each client joins a random side.

        Sometimes one node is a bridge that talks to both sides (Jepsen's "bridge"): a
        leader on the smaller side can then hear of the other side's choices through it.
        """
        if len(self.nodes) < 2:
            return
        rng = self.rng
        order = list(self.nodes)
        rng.shuffle(order)
        side: dict[Address, int] = {}
        if len(order) >= 3 and rng.random() < 0.3:
            side[order.pop()] = _BRIDGE
        cut = rng.randint(1, len(order) - 1)
        for i, node in enumerate(order):
            side[node] = 0 if i < cut else 1
        for client in self.clients:
            side[client] = rng.randint(0, 1)
        self._side = side
        self._partition_until = self.now + duration
        if self.trace is not None:
            a = sorted(n for n in self.nodes if side[n] == 0)
            b = sorted(n for n in self.nodes if side[n] == 1)
            bridge = sorted(n for n in self.nodes if side[n] == _BRIDGE)
            self._log(f"partition {a} | {b} bridge {bridge} until {self._partition_until}")
        if self.events is not None:
            groups = [sorted(n for n in self.nodes if side[n] == s) for s in (0, 1)]
            bridge = sorted(n for n in self.nodes if side[n] == _BRIDGE)
            self.events.emit(
                self.now, "partition", groups=groups, bridge=bridge, until=self._partition_until
            )

    def heal(self) -> None:
        """Enter the heal phase: every link up, no loss or duplication, small delays.
        Messages already in flight still arrive."""
        events = self.events
        if events is not None:
            if self._side:
                events.emit(self.now, "heal")
            for src, dst in self._cuts:
                events.emit(self.now, "uncut", src=src, dst=dst)
            if self._burst_types:
                events.emit(self.now, "burst", types=[], links=[], until=self.now)
        self._side = {}
        self._cuts = {}
        self._burst_types = frozenset()
        self.rates = PERFECT
        self._log("network healed")

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now} net {text}")
