"""PySyncObj (Raft) as an external peer: a replicated counter behind the runtime's client protocol.

Each process runs one ``SyncObj`` member (its own Raft TCP port, its own tick
thread, as PySyncObj is meant to be used) plus a ZeroMQ ROUTER speaking the
same client protocol as the Multi-Paxos node, so the same load client drives
it. Every command of a ``Submit`` becomes one call of the replicated method
``incr(payload)`` (the counter counts commands and payload bytes); the
``SubmitAck`` is sent when PySyncObj's callback reports the command applied.
Non-leaders forward commands to the leader (PySyncObj does that itself).

Plaintext only: PySyncObj's Raft traffic is its own unencrypted TCP, so its
client side speaks ZeroMQ's NULL mechanism too (as ``paxos node --insecure``).

``--journal``: PySyncObj's file journal (an mmap; PySyncObj has no per-entry
fsync, so this is its most durable setting, not an fsync'd log).

Needs the ``bench`` extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import signal
import sys
from pathlib import Path
from typing import Any

from broadcast.identity import cluster_id_bytes, derive_cluster_id
from broadcast.protocol import (
    OpenSession,
    SessionOpened,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
    ack_runs,
)
from broadcast.spec import ConfigError, parse_cluster
from broadcast.transport import NodeTransport, TransportError
from paxos.codec import CodecError, decode, encode
from paxos.types import Ballot


def _load_pysyncobj() -> Any:
    try:
        return importlib.import_module("pysyncobj")
    except ImportError:
        return None


def _counter_class(pso: Any) -> Any:
    """The replicated counter, built at run time (pysyncobj is an optional dependency)."""

    class Counter(pso.SyncObj):  # type: ignore[misc]
        def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
            super().__init__(self_addr, partners, conf)
            self.count = 0
            self.bytes = 0

        @pso.replicated  # type: ignore[untyped-decorator]
        def incr(self, payload: bytes) -> int:
            self.count += 1
            self.bytes += len(payload)
            return self.count

    return Counter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pso_node", description=__doc__)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", required=True, help="client-facing ZeroMQ addresses")
    parser.add_argument("--raft", required=True, help="host:port,... Raft addresses in id order")
    parser.add_argument("--journal", type=Path, default=None)
    parser.add_argument("--append-period", type=float, default=None,
                        help="appendEntriesPeriod in s (PySyncObj default 0.1)")
    parser.add_argument("--no-batch", action="store_true",
                        help="appendEntriesUseBatch=False (one AppendEntries per command)")
    args = parser.parse_args(argv)
    pso = _load_pysyncobj()
    if pso is None:
        sys.stderr.write("pysyncobj is not installed: pip install -e '.[bench]'\n")
        return 2
    try:
        cluster = parse_cluster(args.cluster)
        raft = dict(zip(cluster.ids, args.raft.split(","), strict=True))
        transport = NodeTransport(
            args.id, cluster.nodes[args.id], cluster_id=cluster_id_bytes(derive_cluster_id(cluster))
        )
    except (ConfigError, TransportError, ValueError, KeyError) as exc:
        sys.stderr.write(f"pso node: {exc}\n")
        return 2
    node_of = {address: node for node, address in raft.items()}
    extra: dict[str, Any] = {}
    if args.append_period is not None:
        extra["appendEntriesPeriod"] = args.append_period
    if args.no_batch:
        extra["appendEntriesUseBatch"] = False
    conf = pso.SyncObjConf(
        autoTick=True,
        journalFile=str(args.journal) if args.journal else None,
        dynamicMembershipChange=False,
        **extra,
    )
    me = raft[args.id]
    counter = _counter_class(pso)(me, [a for a in raft.values() if a != me], conf)
    done: collections.deque[tuple[bytes, str, int, int | None]] = collections.deque()
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        transport.wake()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def callback_for(identity: bytes, client: str, seq: int) -> Any:
        def callback(result: Any, error: Any) -> None:
            # Called from PySyncObj's tick thread: hand over to the loop thread.
            ok = error == pso.FAIL_REASON.SUCCESS
            done.append((identity, client, seq, result if ok else None))
            transport.wake()

        return callback

    def leader_id() -> int:
        leader = counter._getLeader()
        return node_of.get(getattr(leader, "address", None), 0) if leader is not None else 0

    try:
        while not stopping:
            for identity, frame, _ in transport.poll(0 if done else 10):
                try:
                    msg = decode(frame)
                except CodecError:
                    continue
                if isinstance(msg, Submit):
                    for command in msg.commands:
                        counter.incr(
                            command.payload,
                            callback=callback_for(identity, command.client, command.seq),
                        )
                elif isinstance(msg, StatusRequest):
                    role = "leader" if counter._isLeader() else "follower"
                    lead = leader_id()
                    status = Status(
                        msg.nonce, args.id, role, Ballot(0, lead or 1), lead,
                        counter.count, counter.count, args.journal is not None,
                        lead is not None, "", 0,
                    )
                    transport.reply(identity, encode(status))
                elif isinstance(msg, OpenSession):
                    # No session table here: the nonce makes the key unique.
                    key = f"{msg.name[:180]}#{msg.nonce.hex()[:16]}"
                    opened = SessionOpened(msg.nonce, key, "", 1 << 20, 1 << 20)
                    transport.reply(identity, encode(opened))
            if done:
                acks: dict[tuple[bytes, str], list[tuple[int, int]]] = {}
                refused: dict[tuple[bytes, str], int] = {}
                while done:
                    identity, client, seq, result = done.popleft()
                    if result is None:
                        first = refused.get((identity, client))
                        refused[(identity, client)] = seq if first is None else min(first, seq)
                    else:
                        acks.setdefault((identity, client), []).append((seq, int(result)))
                lead = leader_id()
                for (identity, client), pairs in acks.items():
                    transport.reply(identity, encode(SubmitAck(client, ack_runs(pairs), lead)))
                for (identity, client), seq in refused.items():
                    reply = SubmitRefused(client, seq, "failed", lead)
                    transport.reply(identity, encode(reply))
    finally:
        counter.destroy()
        transport.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
