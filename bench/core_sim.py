"""How fast is the protocol core alone? Commands committed per CPU-second.

Three replicas wired together in memory (no codec, no sockets, no disk), no
faults: the leader gets commands in batches, everything is delivered on all
three replicas. Every Ready goes through the runtime's ReadyDriver, as in
production. This bounds what any runtime around the core can do on one core.

    python -m bench.core_sim [--commands 1000000] [--batch 256] [--window 16]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque
from collections.abc import Sequence

from paxos.messages import Message
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica
from paxos.multi.sessions import open_command
from paxos.types import Command


def run(commands: int, batch: int, window: int, payload: int = 100) -> dict[str, float]:
    config = ReplicaConfig(
        nodes=(1, 2, 3), batch_max=batch, window=window, alpha=max(16, window)
    )
    replicas = {i: Replica(i, config, random.Random(i)) for i in config.nodes}
    inbox: deque[tuple[int, Message]] = deque()
    delivered = dict.fromkeys(config.nodes, 0)

    class World:
        """One replica's storage (discarded), outbox (the shared inbox) and applier."""

        def __init__(self, node: int) -> None:
            self.node = node

        def append(self, records: Sequence[object]) -> None:
            pass

        def sync(self) -> None:
            pass

        def save_snapshot(self, snapshot: object) -> None:
            raise AssertionError("the core benchmark never compacts")

        def send(self, messages: Sequence[tuple[int, Message]]) -> None:
            inbox.extend(messages)

        def apply(self, ready: Ready) -> None:
            delivered[self.node] += len(ready.deliveries)

    drivers = {i: ReadyDriver(World(i), World(i), World(i)) for i in config.nodes}

    def apply(node: int, ready: Ready) -> None:
        driver = drivers[node]
        driver.take(ready)
        driver.flush()

    def drain() -> None:
        while inbox:
            dst, msg = inbox.popleft()
            apply(dst, replicas[dst].step(msg))

    while not any(r.is_leader for r in replicas.values()):
        for node, replica in replicas.items():
            apply(node, replica.tick())
        drain()
    leader = next(i for i, r in replicas.items() if r.is_leader)
    nonce = b"bench-session-01"
    apply(leader, replicas[leader].propose([open_command("bench", nonce)]))
    drain()
    key = replicas[leader].session_key("bench", nonce)
    assert key is not None
    body = b"x" * payload
    offered = [Command(key, seq, body) for seq in range(1, commands + 1)]

    start_cpu, start_wall = time.process_time(), time.perf_counter()
    for i in range(0, commands, batch * window):
        apply(leader, replicas[leader].propose(offered[i : i + batch * window]))
        drain()
    while min(delivered.values()) < commands:
        for node, replica in replicas.items():
            apply(node, replica.tick())
        drain()
    cpu = time.process_time() - start_cpu
    wall = time.perf_counter() - start_wall
    return {
        "commands": commands,
        "batch": batch,
        "window": window,
        "cpu_s": round(cpu, 3),
        "commands_per_cpu_s": round(commands / cpu),
        "wall_s": round(wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(run(args.commands, args.batch, args.window)))


if __name__ == "__main__":
    main()
