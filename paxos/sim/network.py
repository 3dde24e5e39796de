"""A virtual network: lossy, duplicating, reordering and partitionable, all driven by one seed.

Messages in flight sit in a priority queue keyed by ``(delivery tick, send
sequence number)``: the sequence number makes the order total, so two messages
due in the same tick always come out in the order they were sent, and the
payloads themselves are never compared. Reordering comes only from random
delays.

Endpoints are node ids (``int``) and client ids (``str``); client traffic goes
through the same faults as traffic between nodes.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

from paxos.messages import Message
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


class Network:
    """The virtual network of one run. The runner sets :attr:`now` every tick."""

    def __init__(
        self,
        rng: random.Random,
        rates: FaultRates,
        nodes: Sequence[int],
        clients: Sequence[str],
        trace: list[str] | None = None,
    ) -> None:
        self.rng = rng
        self.rates = rates
        self.nodes = tuple(nodes)
        self.clients = tuple(clients)
        self.now = 0
        self.trace = trace
        self._queue: list[_InFlight] = []
        self._seq = 0
        #: Active symmetric partition: endpoint -> side, until a tick. Empty when healed.
        self._side: dict[Address, int] = {}
        self._partition_until = 0
        #: Active one-directional cuts: (src, dst) -> until tick. Insertion-ordered.
        self._cuts: dict[tuple[Address, Address], int] = {}
        self.sent = 0
        self.dropped = 0

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
        copies = 2 if rates.duplication and rng.random() < rates.duplication else 1
        low = rates.delay_min_ticks
        spread = rates.delay_max_ticks - low + 1
        for _ in range(copies):
            delay = low + int(rng.random() * spread)  # uniform in [min, max], cheaper than randint
            self._seq += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, src, dst, payload))
            if self.trace is not None:
                self.trace.append(f"{self.now} send {src}->{dst} @{self.now + delay} {payload!r}")

    def due(self) -> list[tuple[Address, Address, Payload]]:
        """Pop every message due at or before :attr:`now`, in (tick, send order)."""
        queue = self._queue
        now = self.now
        out: list[tuple[Address, Address, Payload]] = []
        while queue and queue[0][0] <= now:
            _, _, src, dst, payload = heapq.heappop(queue)
            # A partition that started while the message was on the wire eats it too.
            if self._blocked(src, dst):
                self._drop(src, dst, payload, "cut")
                continue
            out.append((src, dst, payload))
        return out

    def in_flight(self) -> int:
        return len(self._queue)

    def _blocked(self, src: Address, dst: Address) -> bool:
        side = self._side
        if side and side.get(src, 0) != side.get(dst, 0):
            return True
        return bool(self._cuts) and (src, dst) in self._cuts

    def _drop(self, src: Address, dst: Address, payload: Payload, why: str) -> None:
        self.dropped += 1
        if self.trace is not None:
            self.trace.append(f"{self.now} {why} {src}->{dst} {payload!r}")

    # ------------------------------------------------------------------ faults

    def update_faults(self) -> None:
        """Once per fault-phase tick: end expired partitions and cuts, maybe start new ones."""
        rates = self.rates
        rng = self.rng
        now = self.now
        if self._side and now >= self._partition_until:
            self._side = {}
            self._log("partition healed")
        if self._cuts:
            for link in [link for link, until in self._cuts.items() if now >= until]:
                del self._cuts[link]
                self._log(f"link {link[0]}->{link[1]} restored")
        if rates.partition_rate and not self._side and rng.random() < rates.partition_rate:
            self._start_partition(rng.randint(1, max(1, rates.partition_max_ticks)))
        if rates.link_cut_rate and rng.random() < rates.link_cut_rate and len(self.nodes) > 1:
            src, dst = rng.sample(self.nodes, 2)
            self._cuts[(src, dst)] = now + rng.randint(1, max(1, rates.link_cut_max_ticks))
            self._log(f"link {src}->{dst} cut until {self._cuts[(src, dst)]}")

    def _start_partition(self, duration: int) -> None:
        """Split the nodes into two non-empty sides at random; each client joins a random side."""
        if len(self.nodes) < 2:
            return
        rng = self.rng
        order = list(self.nodes)
        rng.shuffle(order)
        cut = rng.randint(1, len(order) - 1)
        side: dict[Address, int] = {}
        for i, node in enumerate(order):
            side[node] = 0 if i < cut else 1
        for client in self.clients:
            side[client] = rng.randint(0, 1)
        self._side = side
        self._partition_until = self.now + duration
        if self.trace is not None:
            a = sorted(n for n in self.nodes if side[n] == 0)
            b = sorted(n for n in self.nodes if side[n] == 1)
            self._log(f"partition {a} | {b} until {self._partition_until}")

    def heal(self) -> None:
        """Enter the heal phase: every link up, no loss or duplication, small delays.
        Messages already in flight still arrive."""
        self._side = {}
        self._cuts = {}
        self.rates = PERFECT
        self._log("network healed")

    def _log(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.now} net {text}")
