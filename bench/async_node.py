"""The async-replication baseline: a leader that acknowledges without waiting for anyone.

Same transport (:class:`broadcast.transport.NodeTransport`), same framing
(:mod:`paxos.codec`), same client protocol (Submit / SubmitAck / SubmitRefused,
Fetch / Deliveries, Status) and the same kind of batching as the Multi-Paxos
node, so that the difference measured is the replication protocol.

The leader, each turn of its loop:

1. takes every Submit that arrived (drops repeats of a client's session:
   ``seq <= last seq``), assigns the next indexes;
2. packs the new commands into ``AsyncAppend`` frames of at most
   ``batch_max`` commands, appends them to its write-ahead log (one write, one
   fsync if enabled: group commit);
3. sends the frames to every follower (queued into ZeroMQ: no waiting for
   any acknowledgement); then
4. acknowledges the commands to their clients.

Followers append what they receive, in index order, to their own log and
apply it. A follower that sees a gap asks for the missing entries
(``AsyncNack``). Failover: the leader sends a heartbeat every
``heartbeat_ms``; a follower that hears nothing from the leader for
``takeover_ms + 50 ms * rank`` takes over with a higher epoch and its own log
as the truth (other followers cut their logs to it). Whatever the old leader
acknowledged but the new one never received is lost: that is what the
failover benchmark measures.

Security, as the real node: CURVE on every socket by default (the node's key in
``DATA_DIR/node.key``, the cluster file naming every node's key and the clients
allowed in; the ZAP gate of :class:`~broadcast.transport.NodeTransport` admits only
those keys), or ``--insecure`` (plaintext, anyone may connect). Unlike the real node
it checks no per-client permissions, and its ``Deliveries`` carry no ticket (no
reply budget): a subscriber's fetch is answered whatever it owes.

Bench-only simplifications: the log is kept in memory and written to the WAL
for the cost of it, but never read back (no restart recovery); a follower
cuts entries past a new leader's log only in memory.

Run one node: ``python -m bench.async_node --id 1 --cluster CLUSTER.toml --data-dir D``
(or ``--cluster 1=127.0.0.1:7101,... --insecure``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from broadcast.auth import Keyring
from broadcast.identity import cluster_id_bytes, derive_cluster_id
from broadcast.keys import load_keypair
from broadcast.protocol import (
    FETCH_MAX,
    Deliveries,
    Fetch,
    OpenSession,
    SessionOpened,
    Status,
    StatusRequest,
    Submit,
    SubmitAck,
    SubmitRefused,
    ack_runs,
)
from broadcast.spec import Cluster, ConfigError, parse_cluster
from broadcast.transport import NodeTransport, TransportError, node_id_of
from broadcast.wal import WalError, WriteAheadLog
from paxos.codec import NODE_ID, UINT, VALUE, CodecError, decode, encode, register
from paxos.types import Ballot, Command, Value

#: Node ids are below this; an epoch is ``round * EPOCH_NODES + leader id``.
EPOCH_NODES = 1024


@dataclass(frozen=True, slots=True)
class AsyncAppend:
    """Leader -> follower: commands at indexes ``first_index``, ``first_index + 1``, ..."""

    src: int
    epoch: int
    first_index: int
    commands: Value


@dataclass(frozen=True, slots=True)
class AsyncBeat:
    """Leader -> follower heartbeat: my log ends at ``last_index``."""

    src: int
    epoch: int
    last_index: int


@dataclass(frozen=True, slots=True)
class AsyncNack:
    """Follower -> leader: I have a gap; send me entries from ``next_index`` on."""

    src: int
    epoch: int
    next_index: int


# Type codes 240..242: far from the runtime's client protocol (64..) to leave it room.
register(240, AsyncAppend, (NODE_ID, UINT, UINT, VALUE))
register(241, AsyncBeat, (NODE_ID, UINT, UINT))
register(242, AsyncNack, (NODE_ID, UINT, UINT))




class AsyncNode:
    """One node of the async-replication baseline; :meth:`run` serves until :meth:`stop`."""

    def __init__(
        self,
        node_id: int,
        cluster: Cluster,
        data_dir: Path,
        *,
        fsync: bool,
        batch_max: int = 256,
        heartbeat_ms: int = 50,
        takeover_ms: int = 150,
        key_file: Path | None = None,
        insecure: bool = False,
    ) -> None:
        if node_id not in cluster.nodes or node_id >= EPOCH_NODES:
            raise ConfigError(f"node id {node_id} is not in the cluster ({cluster.spec()})")
        keyring: Keyring | None = None
        if not insecure:
            if not cluster.secure:
                raise ConfigError("the cluster names no CURVE keys: give a cluster file with "
                                  "keys, or run --insecure")
            keyring = Keyring.of(
                cluster, node_id, load_keypair(key_file or data_dir / "node.key")
            )
        self.node_id = node_id
        self.ids = cluster.ids
        self.fsync = fsync
        self.batch_max = batch_max
        self.heartbeat_s = heartbeat_ms / 1000.0
        rank = self.ids.index(node_id)
        self.takeover_s = (takeover_ms + 50 * rank) / 1000.0
        self.wal, _ = WriteAheadLog.open(data_dir / "wal", fsync=fsync)
        peers = {i: a for i, a in cluster.nodes.items() if i != node_id}
        try:
            self.transport = NodeTransport(
                node_id,
                cluster.nodes[node_id],
                peers,
                cluster_id=cluster_id_bytes(cluster.cluster_id or derive_cluster_id(cluster)),
                keyring=keyring,
            )
        except BaseException:
            self.wal.close()
            raise
        self.peers = tuple(sorted(peers))
        first = self.ids[0]  # the lowest id leads the first epoch: no election needed
        self.epoch = EPOCH_NODES + first
        self.synced_epoch = self.epoch
        self.leader = first
        self.log: list[Command] = []  # applied commands; log[i - 1] has index i
        self.last_seq: dict[str, int] = {}  # client -> last seq in the log (sessions)
        self.pending: list[tuple[bytes, Command]] = []  # leader: accepted this turn
        self.acks: dict[tuple[bytes, str], list[tuple[int, int]]] = {}
        self.incoming: list[tuple[bytes, AsyncAppend]] = []  # follower: frames this turn
        now = time.monotonic()
        self.last_heard = now
        self.heard = False
        self.next_beat = now
        self.last_nack = 0.0
        self.dropped = 0
        self._stop = False

    @property
    def is_leader(self) -> bool:
        return self.leader == self.node_id

    def stop(self) -> None:
        self._stop = True
        self.transport.wake()

    def run(self) -> None:
        try:
            while not self._stop:
                self._turn()
        finally:
            self.transport.close()
            self.wal.close()

    # ------------------------------------------------------------------ the loop

    def _turn(self) -> None:
        for identity, frame, _ in self.transport.poll(10):
            self._on_frame(identity, frame)
        if self.incoming:
            self._append_incoming()
        if self.heard:
            # Heard from the leader this turn: the silence counts from the end of the turn,
            # so a long turn (a big backlog to apply and write) never looks like a dead leader.
            self.heard = False
            self.last_heard = time.monotonic()
        if self.pending:
            self._replicate()
        if self.acks:
            self._send_acks()
        now = time.monotonic()
        if self.is_leader:
            if now >= self.next_beat:
                self._beat(now)
        elif now - self.last_heard > self.takeover_s:
            self._take_over(now)

    def _on_frame(self, identity: bytes, frame: bytes) -> None:
        try:
            msg = decode(frame)
        except CodecError:
            self.dropped += 1
            return
        if isinstance(msg, AsyncAppend | AsyncBeat | AsyncNack):
            # Only a node may replicate, and only under its own id.
            if node_id_of(identity) != msg.src:
                self.dropped += 1
                return
            if isinstance(msg, AsyncAppend):
                self._on_append(frame, msg)
            elif isinstance(msg, AsyncBeat):
                self._on_beat(msg)
            else:
                self._on_nack(msg)
        elif isinstance(msg, Submit):
            self._on_submit(identity, msg)
        elif isinstance(msg, Fetch):
            start = max(0, msg.from_index - 1)
            count = max(1, min(msg.max_count, FETCH_MAX))
            commands = tuple(self.log[start : start + count])
            reply = Deliveries(msg.from_index, commands, len(self.log))
            self.transport.reply(identity, encode(reply))
        elif isinstance(msg, StatusRequest):
            role = "leader" if self.is_leader else "follower"
            ballot = Ballot(self.epoch // EPOCH_NODES, self.epoch % EPOCH_NODES)
            n = len(self.log)
            status = Status(
                msg.nonce, self.node_id, role, ballot, self.leader, n, n, self.fsync,
                True, "", len(self.last_seq),
            )
            self.transport.reply(identity, encode(status))
        elif isinstance(msg, OpenSession):
            # The baseline keeps no session table in a log: the nonce makes the key unique.
            key = f"{msg.name[:180]}#{msg.nonce.hex()[:16]}"
            opened = SessionOpened(msg.nonce, key, "", 1 << 20, 1 << 20)
            self.transport.reply(identity, encode(opened))
        else:
            self.dropped += 1

    # ------------------------------------------------------------------ leader

    def _on_submit(self, identity: bytes, msg: Submit) -> None:
        if not msg.commands:
            return
        if not self.is_leader:
            first = msg.commands[0]
            refusal = SubmitRefused(first.client, first.seq, "not leader", self.leader)
            self.transport.reply(identity, encode(refusal))
            return
        last_seq = self.last_seq
        pending = self.pending
        for command in msg.commands:
            client = command.client
            if command.seq <= last_seq.get(client, 0):
                # A repeat (client retry): already in the log; 0 = index not kept.
                self.acks.setdefault((identity, client), []).append((command.seq, 0))
                continue
            # Gaps are accepted: a new leader may have lost a client's earlier commands,
            # and async replication carries on regardless.
            last_seq[client] = command.seq
            pending.append((identity, command))

    def _replicate(self) -> None:
        pending = self.pending
        self.pending = []
        first = len(self.log) + 1
        commands = [command for _, command in pending]
        frames = self._frames(first, commands)
        self.wal.append(frames)
        self.wal.sync()
        self.log.extend(commands)
        for peer in self.peers:
            # "Sent" = queued to ZeroMQ; a dropped frame shows up as a gap and is re-sent.
            self.transport.send_many(peer, frames)
        self.next_beat = time.monotonic() + self.heartbeat_s
        # Acknowledge now: the async baseline never waits for a follower.
        acks = self.acks
        index = first
        for identity, command in pending:
            acks.setdefault((identity, command.client), []).append((command.seq, index))
            index += 1

    def _send_acks(self) -> None:
        leader = self.leader
        for (identity, client), acks in self.acks.items():
            self.transport.reply(identity, encode(SubmitAck(client, ack_runs(acks), leader)))
        self.acks = {}

    def _beat(self, now: float) -> None:
        frame = encode(AsyncBeat(self.node_id, self.epoch, len(self.log)))
        for peer in self.peers:
            self.transport.send(peer, frame)
        self.next_beat = now + self.heartbeat_s

    def _on_nack(self, msg: AsyncNack) -> None:
        if not self.is_leader or msg.epoch != self.epoch or msg.src not in self.peers:
            return
        start = max(0, msg.next_index - 1)
        stop = min(len(self.log), start + 64 * self.batch_max)  # bounded work per nack
        frames = self._frames(start + 1, self.log[start:stop])
        if frames:
            self.transport.send_many(msg.src, frames)

    def _frames(self, first_index: int, commands: list[Command]) -> list[bytes]:
        """``commands`` (from ``first_index`` on) as AsyncAppend frames of <= batch_max each."""
        step, src, epoch = self.batch_max, self.node_id, self.epoch
        return [
            encode(AsyncAppend(src, epoch, first_index + i, tuple(commands[i : i + step])))
            for i in range(0, len(commands), step)
        ]

    def _take_over(self, now: float) -> None:
        self.epoch = (self.epoch // EPOCH_NODES + 1) * EPOCH_NODES + self.node_id
        self.synced_epoch = self.epoch
        self.leader = self.node_id
        self.last_heard = now
        self.incoming = []
        sys.stderr.write(f"async node {self.node_id}: took over at index {len(self.log)}\n")
        self._beat(now)

    # ------------------------------------------------------------------ follower

    def _heard(self, src: int, epoch: int) -> bool:
        """Whether a message of ``epoch`` from ``src`` comes from the current leader."""
        if epoch < self.epoch:
            return False  # a deposed leader
        if epoch > self.epoch:
            self.epoch = epoch
            self.leader = src
            self.incoming = []  # frames of an older epoch: never applied
        self.heard = True
        return True

    def _on_beat(self, msg: AsyncBeat) -> None:
        if not self._heard(msg.src, msg.epoch):
            return
        if self.synced_epoch < msg.epoch:
            self._adopt(msg.epoch, msg.last_index)
        if msg.last_index > len(self.log) + self._incoming_count():
            self._nack(len(self.log) + self._incoming_count() + 1)

    def _on_append(self, frame: bytes, msg: AsyncAppend) -> None:
        if not self._heard(msg.src, msg.epoch):
            return
        if self.synced_epoch < msg.epoch and msg.first_index <= len(self.log) + 1:
            self._adopt(msg.epoch, msg.first_index - 1)
        self.incoming.append((frame, msg))

    def _adopt(self, epoch: int, leader_length: int) -> None:
        """A new leader's log is the truth: cut ours to its length."""
        self.synced_epoch = epoch
        if leader_length < len(self.log):
            del self.log[leader_length:]
            self.last_seq = {}
            for command in self.log:
                self.last_seq[command.client] = command.seq

    def _incoming_count(self) -> int:
        return sum(len(m.commands) for _, m in self.incoming)

    def _nack(self, next_index: int) -> None:
        now = time.monotonic()
        if now - self.last_nack < 0.05:
            return  # one outstanding request at a time (roughly): no nack storms
        self.last_nack = now
        self.transport.send(self.leader, encode(AsyncNack(self.node_id, self.epoch, next_index)))

    def _append_incoming(self) -> None:
        incoming = self.incoming
        self.incoming = []
        frames: list[bytes] = []
        log = self.log
        last_seq = self.last_seq
        for frame, msg in incoming:
            n = len(log)
            if msg.epoch != self.epoch:
                continue
            if self.synced_epoch != self.epoch:
                self._nack(n + 1)  # not yet in step with this leader: ask from our end
                continue
            if msg.first_index > n + 1:
                self._nack(n + 1)  # a gap: in-order application only
                continue
            skip = n + 1 - msg.first_index  # already have these (a re-send)
            if skip >= len(msg.commands):
                continue
            commands = msg.commands[skip:] if skip else msg.commands
            frames.append(frame)
            log.extend(commands)
            for command in commands:
                last_seq[command.client] = command.seq
        if frames:
            self.wal.append(frames)
            self.wal.sync()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.async_node", description=__doc__)
    parser.add_argument("--id", type=int, required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--batch-max", type=int, default=256)
    parser.add_argument("--key", type=Path, default=None,
                        help="this node's key file (default: DATA_DIR/node.key)")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext, no authentication (benchmarks only)")
    args = parser.parse_args(argv)
    try:
        cluster = parse_cluster(args.cluster)
        node = AsyncNode(
            args.id, cluster, args.data_dir, fsync=not args.no_fsync, batch_max=args.batch_max,
            key_file=args.key, insecure=args.insecure,
        )
    except (ConfigError, TransportError, WalError, OSError) as exc:
        sys.stderr.write(f"async node: {exc}\n")
        return 2

    def stop(signum: int, frame: object) -> None:
        node.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    node.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
