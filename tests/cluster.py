"""An in-memory cluster of replicas for scenario tests (h11's ConnectionPair, for Paxos).

Messages are delivered in FIFO order unless a test drops or holds them; records
are "persisted" by appending to a per-node list before messages are queued.
"""

from __future__ import annotations

import random
from collections import deque

from paxos.messages import Message
from paxos.multi.config import ReplicaConfig
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica
from paxos.multi.sessions import open_command
from paxos.records import Record
from paxos.types import Command, Delivery


class Cluster:
    def __init__(self, n: int = 3, seed: int = 1, **config: int) -> None:
        self.config = ReplicaConfig(nodes=tuple(range(1, n + 1)), **config)
        self.rng = random.Random(seed)
        self.disks: dict[int, list[Record]] = {i: [] for i in self.config.nodes}
        self.replicas: dict[int, Replica] = {
            i: Replica(i, self.config, random.Random(seed * 100 + i)) for i in self.config.nodes
        }
        self.inbox: deque[tuple[int, Message]] = deque()
        self.delivered: dict[int, list[Delivery]] = {i: [] for i in self.config.nodes}
        self.down: set[int] = set()
        self.cut: set[tuple[int, int]] = set()  # (src, dst) links that drop everything

    def apply(self, node: int, ready: Ready) -> None:
        self.disks[node].extend(ready.records)
        for dst, msg in ready.eager + ready.messages:
            if (node, dst) not in self.cut:
                self.inbox.append((dst, msg))
        self.delivered[node].extend(ready.deliveries)

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.inbox:
                return
            dst, msg = self.inbox.popleft()
            if dst in self.down:
                continue
            self.apply(dst, self.replicas[dst].step(msg))
        raise AssertionError("message storm: inbox never drained")

    def tick(self, ticks: int = 1) -> None:
        for _ in range(ticks):
            for node, replica in self.replicas.items():
                if node not in self.down:
                    self.apply(node, replica.tick())
            self.deliver_all()

    def propose(self, node: int, *commands: Command) -> None:
        self.apply(node, self.replicas[node].propose(commands))
        self.deliver_all()

    def open_session(self, name: str = "c", node: int | None = None, ticks: int = 20) -> str:
        """Open a session through the log (at ``node``, default the leader); its key."""
        node = node if node is not None else self.elect()
        nonce = self.rng.randbytes(16)
        self.propose(node, open_command(name, nonce))
        for _ in range(ticks):
            key = self.replicas[node].session_key(name, nonce)
            if key is not None:
                return key
            self.tick()
        raise AssertionError(f"session {name} not opened within {ticks} ticks")

    def leader(self) -> int | None:
        leaders = [i for i, r in self.replicas.items() if r.is_leader and i not in self.down]
        return leaders[0] if len(leaders) == 1 else None

    def elect(self, max_ticks: int = 500) -> int:
        for _ in range(max_ticks):
            self.tick()
            leader = self.leader()
            if leader is not None:
                return leader
        raise AssertionError("no leader elected")

    def crash(self, node: int) -> None:
        self.down.add(node)

    def restart(self, node: int, seed: int = 7) -> None:
        self.down.discard(node)
        self.replicas[node] = Replica(
            node, self.config, random.Random(seed), records=list(self.disks[node])
        )
        self.delivered[node] = []

    def payloads(self, node: int) -> list[bytes]:
        return [d.command.payload for d in self.delivered[node]]
