# ruff: noqa: E501, E701
"""A hand-driven cluster of real replicas: the test decides which message arrives when.

Used by regression tests that replay interleavings the simulator had not found.
Every Ready goes through the runtime's ReadyDriver (one Ready per turn).
"""
import random

from paxos import messages as M  # re-exported for the scenarios
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.replica import Replica, Role
from paxos.types import Command

__all__ = ["C", "Cluster", "M", "Role"]


class Cluster:
    def __init__(self, n, **cfg):
        self.ids = tuple(range(1, n + 1))
        self.cfg = ReplicaConfig(nodes=self.ids, **cfg)
        self.disk = {i: [] for i in self.ids}
        self.r = {i: Replica(i, self.cfg, random.Random(i)) for i in self.ids}
        self.bag = []   # (src, dst, msg) in flight
        self.chosen_log = {}  # slot -> (value, node)
        self.violations = []
        self.delivered = {i: [] for i in self.ids}
    def handle(self, i, ready):
        world = _World(self, i)
        driver = ReadyDriver(world, world, world)
        driver.take(ready)
        driver.flush()
    def tick(self, nodes=None, n=1):
        for _ in range(n):
            for i in (nodes or self.ids):
                self.handle(i, self.r[i].tick())
    def propose(self, i, cmds):
        self.handle(i, self.r[i].propose(cmds))
    def deliver(self, pred=lambda s, d, m: True, keep_rest=True):
        """Deliver every in-flight message matching pred (once); others stay (or are dropped)."""
        bag, self.bag = self.bag, []
        rest = []
        for s, d, m in bag:
            if pred(s, d, m):
                self.handle(d, self.r[d].step(m))
            else:
                rest.append((s, d, m))
        if keep_rest:
            self.bag = rest + self.bag
    def drop(self, pred):
        self.bag = [x for x in self.bag if not pred(*x)]
    def run(self, nodes, ticks):
        """Tick only `nodes`, deliver only messages among them, drop messages touching others."""
        ns = set(nodes)
        for _ in range(ticks):
            self.tick(nodes)
            self.deliver(lambda s, d, m: s in ns and d in ns, keep_rest=False)
    def crash(self, i):
        self.r[i] = Replica(i, self.cfg, random.Random(100 + i), list(self.disk[i]))
        self.bag = [x for x in self.bag if x[1] != i]
    def leader(self, nodes=None):
        ls = [i for i in (nodes or self.ids) if self.r[i].role is Role.LEADER]
        return ls

def C(client, seq, payload=b"x"):
    return Command(client, seq, payload)


class _World:
    """Node i's storage (durable at once), outbox (the bag) and applier (the checks)."""
    def __init__(self, c, i): self.c, self.i = c, i
    def append(self, records): self.c.disk[self.i].extend(records)
    def sync(self): pass
    def save_snapshot(self, snapshot): raise AssertionError("no snapshots in this world")
    def send(self, messages):
        for dst, m in messages: self.c.bag.append((self.i, dst, m))
    def apply(self, ready):
        for slot, v in ready.chosen:
            prev = self.c.chosen_log.setdefault(slot, (v, self.i))
            if prev[0] != v:
                self.c.violations.append(f"AGREEMENT: slot {slot} chosen {prev[0]} on node {prev[1]} but {v} on node {self.i}")
        self.c.delivered[self.i].extend(ready.deliveries)
