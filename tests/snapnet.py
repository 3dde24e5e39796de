"""Hand-driven replicas with a disk that holds records and a snapshot (for the review
findings of tests/test_review_snapshots.py): a bag of messages the test delivers or drops."""

from __future__ import annotations

import random

from paxos import messages as M
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.replica import Replica, Role
from paxos.types import Command

__all__ = ["C", "M", "Net", "Role"]


def C(client, seq, payload=b"x"):
    return Command(client, seq, payload)


class Net:
    def __init__(self, n, **cfg):
        self.ids = tuple(range(1, n + 1))
        self.cfg = ReplicaConfig(nodes=self.ids, **cfg)
        self.records = {i: [] for i in self.ids}
        self.snap = {i: None for i in self.ids}
        self.r = {i: Replica(i, self.cfg, random.Random(i)) for i in self.ids}
        self.bag = []
        self.chosen = {}
        self.violations = []
        self.delivered = {i: [] for i in self.ids}
        self.installs = {i: 0 for i in self.ids}
        self.down = set()

    def handle(self, i, ready):
        w = _World(self, i)
        d = ReadyDriver(w, w, w)
        d.take(ready)
        d.flush()

    def tick(self, nodes=None):
        for i in nodes or self.ids:
            if i not in self.down:
                self.handle(i, self.r[i].tick())

    def step(self, d, m):
        if d not in self.down:
            self.handle(d, self.r[d].step(m))

    def run(self, nodes, ticks, each=None):
        """Tick `nodes`; deliver messages among them; drop the rest."""
        ns = set(nodes)
        for _ in range(ticks):
            self.tick(nodes)
            bag, self.bag = self.bag, []
            for s, d, m in bag:
                if s in ns and d in ns:
                    self.step(d, m)
            if each:
                each()

    def snapshot(self, i, app=b""):
        r = self.r[i]
        s = r.take_snapshot(app)
        self.snap[i] = s
        self.handle(i, r.compacted(s))
        return s

    def restart(self, i):
        records = list(self.records[i])
        self.r[i] = Replica(i, self.cfg, random.Random(100 + i), records, self.snap[i])

    def leaders(self, nodes=None):
        return [i for i in (nodes or self.ids) if self.r[i].role is Role.LEADER]


class _World:
    def __init__(self, c, i):
        self.c, self.i = c, i

    def append(self, records):
        self.c.records[self.i].extend(records)

    def sync(self):
        pass

    def save_snapshot(self, s):
        self.c.snap[self.i] = s
        self.c.installs[self.i] += 1

    def send(self, messages):
        for dst, m in messages:
            self.c.bag.append((self.i, dst, m))

    def apply(self, ready):
        for slot, v in ready.chosen:
            prev = self.c.chosen.setdefault(slot, (v, self.i))
            if prev[0] != v:
                self.c.violations.append(f"slot {slot}: {prev} vs {v} on {self.i}")
        self.c.delivered[self.i].extend(ready.deliveries)
