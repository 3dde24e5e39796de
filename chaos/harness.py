"""The chaos harness: a real cluster, client load, faults from outside, then the checkers.

One run:

1. sets up the network (:mod:`.network`: namespaces + iptables, or loopback) and moves
   this process to the clients' side of it;
2. starts one ``paxos node`` process per node (through :mod:`.nodeproc`, which records
   what each node made durable), and waits for a leader. Nodes and clients speak CURVE
   (``data/cluster.toml`` names every node's key; the harness's clients use the admin
   key) unless the run is ``insecure``;
3. starts the load: ``clients`` worker threads, each a sequential client of the
   key-value example (puts, deletes, linearizable reads through the log, and explicitly
   stale local reads), every operation recorded in the :class:`.History`; plus one
   follower per node that reads that node's delivery stream as it grows. With
   ``service="kv"`` the nodes run the coordination service instead, and the workers are
   its clients (:mod:`.kvload`: keys, sessions, ephemeral keys, locks and fenced
   writes), with watchers that follow what the service says changed;
4. injects faults for ``duration`` seconds, one at a time, each logged with timestamps
   (:meth:`ChaosRun._nemesis`);
5. heals everything, proves the cluster still makes progress, waits until every node
   has delivered the same log, and reads each node's whole log;
6. stops the nodes, removes the network (also on any error or signal), and runs the
   checkers (:mod:`.checkers`, or :mod:`.kvcheck` for the coordination service) on the
   history and the observed logs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broadcast.client import Client, ClusterUnavailable
from broadcast.errors import Compacted, Forbidden
from broadcast.keys import ensure_keypair
from broadcast.local import cluster_file
from broadcast.logs import get_logger
from broadcast.members_cli import add_to_file
from broadcast.node import NODE_KEY_FILE
from broadcast.protocol import Status
from broadcast.spec import Cluster, ConfigError, parse_cluster
from chaos.checkers import Verdict, build_order, check_all, parse_kv
from chaos.faults import FAULT_KINDS, NESTED_KINDS, FaultLog, power_loss, unsynced_bytes
from chaos.history import History, Op
from chaos.kvcheck import check_kv_all
from chaos.kvload import WATCHED, KvLoad, KvWorker, Watcher, probe
from chaos.linearizability import DEFAULT_MAX_STEPS
from chaos.network import (
    LoopbackNetwork,
    NetnsNetwork,
    Network,
    NetworkError,
    cleanup_stale,
    links_cut,
    netns_available,
)
from paxos.multi.membership import Op as MemberOp
from paxos.types import Command

log = get_logger("chaos")

PARTITIONS = ("leader-minority", "bridge", "halves", "isolate-one")
#: What the nodes replicate: the key-value example over the broadcast log (``broadcast``),
#: or the coordination service (``kv``: nodes run ``--service coord``).
SERVICES = ("broadcast", "kv")
#: How a node process is started (after the interpreter): the unmodified ``paxos node``
#: with durability marks. (Tests that plant bugs in nodes start them through their own.)
NODE_PROGRAM: tuple[str, ...] = ("-m", "chaos.nodeproc")
#: Spare node ids a run with the reconfigure fault sets aside for new members (unless
#: ``ChaosConfig.spares`` says how many).
DEFAULT_SPARES = 6


class HarnessError(RuntimeError):
    """The harness itself failed (setup, nodes that do not start): no verdict on the system."""


@dataclass(frozen=True)
class ChaosConfig:
    nodes: int = 3
    duration: float = 60.0
    faults: tuple[str, ...] = FAULT_KINDS
    clients: int = 6
    keys: int = 6
    seed: int | None = None
    network: str = "auto"  # auto | netns | loopback
    run_dir: Path | None = None
    keep: bool = False
    op_timeout: float = 5.0
    tick_ms: int = 10
    quiet_s: tuple[float, float] = (0.8, 2.0)
    hold_s: tuple[float, float] = (1.5, 4.0)
    down_s: tuple[float, float] = (0.3, 1.5)
    converge_timeout: float = 60.0
    max_steps: int = DEFAULT_MAX_STEPS
    powerloss_scope: str = "mixed"  # one | all | mixed (all nodes at once a quarter of the time)
    unsafe_no_fsync: bool = False  # nodes run --no-fsync: power loss must then lose data
    compose: bool = False  # during a partition, also kill, pause or power-cut a node
    tempo: float = 1.0  # scales quiet, hold and down times (0.3: faults come 3x as fast)
    # Small thresholds: nodes snapshot, compact and install snapshots many times per run.
    snapshot_entries: int = 200
    wal_segment_bytes: int = 64 * 1024
    insecure: bool = False  # nodes and clients without CURVE (no keys, no authentication)
    # Spare ids (above the starting nodes) the network gives an address to, for the new
    # members the reconfigure fault adds; None: DEFAULT_SPARES if it is on, else none.
    spares: int | None = None
    service: str = "broadcast"  # broadcast | kv (see SERVICES)
    # The coordination service's load (service="kv"): session leases, and how often a
    # lock holder pauses itself past its lease before it writes with its token.
    kv_ttl_ms: tuple[int, int] = (1500, 3000)
    kv_pause_chance: float = 0.25

    @property
    def spare_ids(self) -> int:
        if self.spares is not None:
            return self.spares
        return DEFAULT_SPARES if "reconfigure" in self.faults else 0


@dataclass
class Summary:
    config: dict[str, Any]
    network: str
    run_dir: str
    seconds: float
    operations: dict[str, int]
    per_kind: dict[str, dict[str, int]]
    faults: dict[str, int]
    verdicts: list[Verdict]
    checker_seconds: float
    ops_checked: int
    notes: list[str] = field(default_factory=list)
    #: The members at the end (voters, learners) and the replacements made (old, new).
    members: dict[str, Any] = field(default_factory=dict)
    #: The coordination service's figures (service="kv"): sessions, locks, fencing.
    kv: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok is True for v in self.verdicts)

    @property
    def violations(self) -> int:
        return sum(v.violation_count for v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "config": self.config,
            "network": self.network,
            "run_dir": self.run_dir,
            "seconds": round(self.seconds, 2),
            "operations": self.operations,
            "per_kind": self.per_kind,
            "faults": self.faults,
            "verdicts": [v.to_dict() for v in self.verdicts],
            "violations": self.violations,
            "checker_seconds": round(self.checker_seconds, 3),
            "ops_checked": self.ops_checked,
            "ops_checked_per_second": round(self.ops_checked / max(self.checker_seconds, 1e-9)),
            "members": self.members,
            "kv": self.kv,
            "notes": self.notes,
        }

    def render(self) -> Iterator[str]:
        c = self.config
        service = " running the coordination service" if c.get("service") == "kv" else ""
        yield (
            f"paxos chaos: {c['nodes']} nodes{service}, {self.network} network, "
            f"{c['duration']:.0f} s of "
            f"faults ({','.join(c['faults']) or 'none'}), seed {c['seed']}, "
            f"{self.seconds:.1f} s in all"
        )
        ops = self.operations
        yield (
            f"operations: {sum(ops.values())} (ok {ops.get('ok', 0)}, failed "
            f"{ops.get('failed', 0)}, unknown {ops.get('unknown', 0)})"
        )
        for kind, per in sorted(self.per_kind.items()):
            counts = ", ".join(f"{k} {v}" for k, v in sorted(per.items()))
            yield f"  {kind:<10} {counts}"
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        yield f"faults injected: {faults}"
        if self.kv:
            k = self.kv
            yield (
                f"sessions: {k['opened']} opened, {k['expired']} expired, {k['closed']} "
                f"closed; {k['sessions_lost']} clients saw theirs lost; "
                f"{k['ephemeral_puts']} ephemeral puts, {k['vanished']} keys vanished"
            )
            yield (
                f"locks: {k['granted']} grants ({k['told']} told to clients, "
                f"{k['waits_timed_out']} waits timed out, {k['pauses']} writes after a "
                f"holder paused); fenced writes {k['fenced_accepted']} accepted, "
                f"{k['fenced_refused_stale'] + k['fenced_refused_not_held']} refused "
                f"({k['fenced_refused_stale']} stale token, {k['fenced_refused_not_held']} "
                f"not held), {k['fenced_unknown']} unknown"
            )
            yield f"replayed {k['replayed']} log entries in {k['replay_seconds']:.2f} s"
        if self.members.get("replaced"):
            replaced = ", ".join(f"{old}->{new}" for old, new in self.members["replaced"])
            yield (
                f"members replaced: {replaced}; voters at the end "
                f"{','.join(map(str, self.members['voters']))}"
            )
        yield "checkers:"
        for v in self.verdicts:
            yield (
                f"  {v.name:<13} {v.label:<9} {v.checked:>7} checked "
                f"{v.seconds:7.3f} s  {v.notes}"
            )
            for message in v.violations:
                yield f"      - {message}"
            if v.violation_count > len(v.violations):
                yield f"      ... and {v.violation_count - len(v.violations)} more"
        rate = self.ops_checked / max(self.checker_seconds, 1e-9)
        yield (
            f"checked {self.ops_checked} operations in {self.checker_seconds:.2f} s "
            f"({rate:,.0f} operations/s)"
        )
        for note in self.notes:
            yield f"note: {note}"
        yield f"run directory: {self.run_dir}"
        yield "result: " + (
            "OK, no violations" if self.ok else f"FAILED ({self.violations} violations)"
        )


def kv_payload(op: str, key: str, value: str | None = None, tag: str = "") -> bytes:
    """A command of the key-value example (``examples/kv_store.py``), made unique by ``tag``."""
    body: dict[str, str] = {"op": op, "key": key}
    if value is not None:
        body["value"] = value
    if tag:
        body["id"] = tag  # ignored by the state machine; makes every payload unique
    return json.dumps(body, separators=(",", ":")).encode()


class NodeProc:
    """One node's process across its incarnations."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.incarnations = 0

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Follower(threading.Thread):
    """Follows one node's delivery stream; keeps what it delivered and a local KV state.

    A follower of a node removed from the cluster is retired (:meth:`retire`): it stops
    reading, and what it observed until then still counts. A follower of a member added
    during the run starts from a copy of another follower's state (``seed``): the new
    node's history begins with the snapshot it installed, and every node may have
    compacted the indexes before it away, so they could not be read again.

    ``sources`` says, when asked, the cluster as it is now and the members to read a gap
    from (see :meth:`_fill_gap`)."""

    def __init__(
        self,
        cluster: Cluster,
        node: int,
        stop: threading.Event,
        insecure: bool = False,
        seed: Follower | None = None,
        sources: Callable[[], tuple[Cluster, tuple[int, ...]]] | None = None,
    ) -> None:
        super().__init__(name=f"chaos-follow-{node}", daemon=True)
        self.cluster = cluster
        self.sources = sources or (lambda: (cluster, cluster.ids))
        self.insecure = insecure
        self.node = node
        self.stop = stop
        self.lock = threading.Lock()
        self.observed: dict[int, Command] = {}
        self.kv: dict[str, str | None] = {}
        self.applied = 0
        self.errors = 0
        self.skipped = 0
        self.retired = threading.Event()
        if seed is not None:
            with seed.lock:  # (not observed here: the state of the prefix, for stale reads)
                self.kv, self.applied = dict(seed.kv), seed.applied

    def retire(self) -> None:
        self.retired.set()

    def _done(self) -> bool:
        return self.stop.is_set() or self.retired.is_set()

    def read(self, key: str) -> tuple[str | None, int]:
        """A stale local read: the key's value in this node's state, and the prefix it reflects."""
        with self.lock:
            return self.kv.get(key), self.applied

    def run(self) -> None:
        with Client(self.cluster, insecure=self.insecure) as client:
            while not self._done():
                try:
                    stream = client.subscribe(self.applied + 1, node=self.node, idle_timeout=1.0)
                    for delivery in stream:
                        self._take(delivery.index, delivery.command)
                        if self._done():
                            break
                except Compacted as exc:
                    # The node came back by installing a peer's snapshot: its history starts
                    # there. The local state must still reflect every index up to where it
                    # reads (stale reads are judged against that prefix), so the gap is
                    # read from another member that holds it, then this node is followed again.
                    self.skipped += 1
                    try:
                        self._fill_gap(exc.earliest - 1)
                    except Exception as gap_exc:  # retried on the next round
                        self.errors += 1
                        log.warning("chaos.follower_error", node=self.node, error=repr(gap_exc))
                        self.stop.wait(0.5)
                except Exception as exc:  # keep following; the checkers judge what we saw
                    self.errors += 1
                    log.warning("chaos.follower_error", node=self.node, error=repr(exc)[:200])
                    self.stop.wait(0.5)

    def _fill_gap(self, last: int) -> None:
        """Apply indexes up to ``last`` read from another member (not recorded as observed
        here). Each member is asked in turn: one that is stopped (removed) or installed a
        snapshot past the gap is skipped, instead of holding the follower up."""
        cluster, nodes = self.sources()
        with Client(cluster, insecure=self.insecure) as reader:
            for source in nodes:
                if self.applied >= last or self._done():
                    return
                if source == self.node or source not in cluster.nodes:
                    continue
                try:
                    stream = reader.subscribe(self.applied + 1, node=source, idle_timeout=3.0)
                    for delivery in stream:
                        self._take(delivery.index, delivery.command, observed=False)
                        if delivery.index >= last or self._done():
                            break
                except Compacted:
                    continue
        if self.applied < last and not self._done():
            raise RuntimeError(f"no member served indexes {self.applied + 1}..{last}")

    def _take(self, index: int, command: Command, observed: bool = True) -> None:
        parsed = parse_kv(command.payload)
        with self.lock:
            if observed:
                self.observed[index] = command
            if parsed is not None and parsed[0] != "get":
                self.kv[parsed[1]] = parsed[2]
            self.applied = index


class Worker(threading.Thread):
    """A sequential KV client: one operation at a time, each recorded in the history."""

    def __init__(self, run: ChaosRun, process: int) -> None:
        super().__init__(name=f"chaos-client-{process}", daemon=True)
        self.run_ = run
        self.process = process
        self.rng = random.Random(f"{run.seed}-{process}")

    def run(self) -> None:
        r = self.run_
        client: Client | None = None
        seq = 0
        count = 0
        try:
            while not r.stop_clients.is_set():
                count += 1
                key = self.rng.choice(r.keys)
                draw = self.rng.random()
                if draw < 0.1:
                    follower = r.followers[self.rng.choice(r.members)]
                    op = r.history.invoke(self.process, "stale_get", key, node=follower.node)
                    seen, prefix = follower.read(key)
                    op.value = seen
                    r.history.complete(op, "ok", index=prefix)
                    continue
                if client is None:
                    client = r.client(timeout=r.config.op_timeout, retry_s=0.3)
                    seq = 0
                    try:
                        client.open_session()  # the key the history records
                    except Exception:
                        client.close()
                        client = None
                        continue
                tag = f"{self.process}-{count}"
                value: str | None = None
                if draw < 0.55:
                    kind, value = "put", f"v{tag}"
                elif draw < 0.96:
                    kind = "get"
                else:
                    kind = "delete"
                payload = kv_payload(kind, key, value, tag)
                seq += 1
                op = r.history.invoke(
                    self.process,
                    kind,  # type: ignore[arg-type]
                    key,
                    value,
                    payload=payload,
                    client=client.session or "",
                    seq=seq,
                )
                try:
                    committed = client.broadcast(payload)
                except Exception as exc:
                    # Timed out (or worse): it may still commit, now or later. A new session
                    # follows, since this one's later seqs would wait for this one forever.
                    r.history.complete(op, "unknown", error=repr(exc)[:200])
                    client.close()
                    client = None
                else:
                    op.client, op.seq = committed.client, committed.seq  # a reopened session
                    r.history.complete(op, "ok", index=committed.index)
        finally:
            if client is not None:
                client.close()


class ChaosRun:
    def __init__(self, config: ChaosConfig) -> None:
        if config.powerloss_scope not in ("one", "all", "mixed"):
            raise HarnessError(f"unknown power loss scope {config.powerloss_scope!r}")
        unknown = set(config.faults) - set(FAULT_KINDS)
        if unknown:
            raise HarnessError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        if config.spare_ids < 0:
            raise HarnessError("spares must be >= 0")
        if config.service not in SERVICES:
            raise HarnessError(f"unknown service {config.service!r}; known: {', '.join(SERVICES)}")
        self.config = config
        self.seed = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(10**9)
        )
        # The fault schedule (kinds, variants, timings) depends only on the seed: separate
        # generators take the draws whose number depends on what the cluster does.
        self.rng = random.Random(self.seed)
        self.disk_rng = random.Random(f"{self.seed}-disk")
        self.jitter = random.Random(f"{self.seed}-jitter")
        self.keys = [f"k{i}" for i in range(config.keys)]
        self.history = History()
        self.faults = FaultLog()
        self.stop_clients = threading.Event()
        self.stop_followers = threading.Event()
        self.procs: dict[int, NodeProc] = {}
        self.followers: dict[int, Follower] = {}
        self.workers: list[threading.Thread] = []
        self.watchers: list[Watcher] = []
        self.kv_load = KvLoad(
            keys=config.keys, ttl_ms=config.kv_ttl_ms, pause_chance=config.kv_pause_chance
        )
        self.notes: list[str] = []
        self.recovery = Verdict("recovery")
        self.final: dict[int, dict[int, Command]] = {}
        self._made_run_dir = config.run_dir is None
        self.run_dir = Path(
            config.run_dir or tempfile.mkdtemp(prefix="paxos-chaos-")
        ).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.network: Network = self._choose_network()
        plain = Cluster({i: self.network.address(i) for i in range(1, config.nodes + 1)})
        self.cluster = self._write_cluster(plain)
        self._status_client: Client | None = None
        # The members as the harness made them (voters, then learners on the way to a
        # vote): every node the harness runs, heals, targets and expects to converge.
        # Replaced in one assignment (workers read it). A removed node is stopped for good.
        self.voters: tuple[int, ...] = tuple(self.cluster.ids)
        self.learners: tuple[int, ...] = ()
        self.members: tuple[int, ...] = self.voters
        self.spares = list(
            range(config.nodes + 1, config.nodes + config.spare_ids + 1)
        )  # ids the network has an address for, never a member yet
        self.replaced: list[tuple[int, int]] = []
        self.membership = Verdict("membership")
        self.skipped_reconfigures = 0

    # ------------------------------------------------------------------ setup

    def _choose_network(self) -> Network:
        # The starting nodes and the spare ids new members will get (reconfigure fault).
        ids = list(range(1, self.config.nodes + self.config.spare_ids + 1))
        kind = self.config.network
        why = netns_available()
        if kind == "auto":
            kind = "netns" if why is None else "loopback"
            if why is not None:
                self.notes.append(f"network namespaces unavailable ({why}): loopback network")
        if kind == "netns":
            if why is not None:
                raise HarnessError(f"--network netns: {why}")
            return NetnsNetwork(ids)
        if kind == "loopback":
            from broadcast.local import free_base_port

            return LoopbackNetwork(ids, free_base_port(len(ids)))
        raise HarnessError(f"unknown network {kind!r} (auto, netns, loopback)")

    def _write_cluster(self, plain: Cluster) -> Cluster:
        """The cluster file (``data/cluster.toml``), which the nodes start from and the
        reconfigure fault adds new members to. With CURVE it names every node's key (in
        its data directory) and the admin client's key, the harness's (``data/keys``);
        ``insecure``: addresses only.

        A node's key is written (and synced) before the node first runs, so the node's
        own marks never cover it: it is marked durable here, or power loss would take it.
        """
        try:
            cluster = cluster_file(self.run_dir / "data", plain, secure=not self.config.insecure)
        except ConfigError as exc:
            raise HarnessError(str(exc)) from None
        if not self.config.insecure:
            for node in cluster.ids:
                self._mark_durable(node, self.data_dir(node) / NODE_KEY_FILE)
        return cluster

    def _mark_durable(self, node: int, path: Path) -> None:
        info = path.stat()
        with self.marks(node).open("a") as f:
            f.write(f"{path}\t{info.st_size}\t{info.st_dev}:{info.st_ino}\n")

    def client(self, **kwargs: Any) -> Client:
        """A client of the cluster: CURVE with the admin key, or plaintext (--insecure)."""
        return Client(self.cluster, insecure=self.config.insecure, **kwargs)

    def data_dir(self, node: int) -> Path:
        return self.run_dir / "data" / f"node{node}"

    def marks(self, node: int) -> Path:
        return self.run_dir / "data" / f"node{node}.marks"

    def spawn(self, node: int) -> None:
        np = self.procs.setdefault(node, NodeProc(node))
        self.data_dir(node).parent.mkdir(parents=True, exist_ok=True)
        args = [
            *self.network.spawn_prefix(node),
            sys.executable,
            *NODE_PROGRAM,
            str(self.marks(node)),
            "--",
            "--id",
            str(node),
            "--cluster",
            self.cluster.argument(),  # the file (keys and all), or the inline SPEC
            "--data-dir",
            str(self.data_dir(node)),
            "--tick-ms",
            str(self.config.tick_ms),
            "--log-level",
            "info",
            "--snapshot-entries",
            str(self.config.snapshot_entries),
        ]
        if node not in self.cluster.starting:
            args.append("--join")  # a member added later (the reconfigure fault)
        if self.config.service == "kv":
            args += ["--service", "coord"]
        if self.config.insecure:
            args.append("--insecure")
        if self.config.unsafe_no_fsync:
            # (one big segment, as before compaction existed: a torn unsynced segment that
            # is not the last is corruption, and the node would refuse to start rather
            # than show the lost writes this mode is there to show)
            args.append("--no-fsync")
        else:
            args += ["--wal-segment-bytes", str(self.config.wal_segment_bytes)]
        env = {**os.environ, "PAXOS_CHAOS_PARENT": str(os.getpid())}
        with (self.run_dir / f"node{node}.log").open("ab") as logfile:
            np.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, env=env
            )
        np.paused = False
        np.incarnations += 1

    def kill(self, node: int) -> None:
        np = self.procs[node]
        if np.proc is not None and np.proc.poll() is None:
            np.proc.kill()  # SIGKILL, also ends a stopped process
            np.proc.wait(30)
        np.paused = False

    def stop_node(self, node: int, timeout: float = 30.0) -> bool:
        """SIGTERM (a leader hands over first); SIGKILL if it has not exited in time.
        True if it stopped by itself."""
        np = self.procs[node]
        proc = np.proc
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        np.paused = False
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return False

    def signal_node(self, node: int, sig: signal.Signals) -> None:
        np = self.procs[node]
        if np.proc is not None and np.proc.poll() is None:
            np.proc.send_signal(sig)
        np.paused = sig == signal.SIGSTOP

    # ------------------------------------------------------------------ status

    @property
    def status_client(self) -> Client:
        if self._status_client is None:
            self._status_client = self.client()
        return self._status_client

    def statuses(self, timeout: float = 0.3, nodes: list[int] | None = None) -> dict[int, Status]:
        """What each member that runs says (default: every current member)."""
        out = {}
        for node in nodes or list(self.members):
            np = self.procs.get(node)
            if np is None or not np.up or np.paused:
                continue
            status = self.status_client.status(node, timeout)
            if status is not None:
                out[node] = status
        return out

    def leader(self) -> int | None:
        """The member that says it leads with the highest ballot (None if none answers so)."""
        leaders = [s for s in self.statuses().values() if s.role == "leader"]
        if not leaders:
            return None
        return max(leaders, key=lambda s: tuple(s.ballot)).node

    def wait_for(self, what: str, probe: Callable[[], Any], deadline_s: float) -> Any:
        deadline = time.monotonic() + deadline_s
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() > deadline:
                return None
            self.stop_followers.wait(0.2)

    # ------------------------------------------------------------------ the run

    def execute(self) -> Summary:
        started = time.monotonic()
        removed = cleanup_stale()
        if removed:
            self.notes.append(f"removed stale namespaces of a dead harness: {removed}")
        log.info("chaos.start", seed=self.seed, run_dir=str(self.run_dir))
        try:
            self.network.setup()
            self.network.enter_client_side()
            for node in self.members:
                self.spawn(node)
            if self.wait_for("a leader", self.leader, 60.0) is None:
                raise HarnessError("no leader was elected within 60 s of starting the cluster")
            self.faults.record(
                "start", "info", leader=self.leader(), members=list(self.members),
                spares=list(self.spares),
            )
            for node in self.members:
                self._follow(node)
            clients = range(1, self.config.clients + 1)
            if self.config.service == "kv":
                self.watchers = [Watcher(self, prefix) for prefix in WATCHED]
                for watcher in self.watchers:
                    watcher.start()
                self.workers = [KvWorker(self, p, self.kv_load) for p in clients]
            else:
                self.workers = [Worker(self, p) for p in clients]
            for worker in self.workers:
                worker.start()
            self._nemesis()
            self._heal_all()
            self._recover()
            self._check_membership()
        finally:
            self._shutdown()
        return self._check(time.monotonic() - started)

    def _follow(self, node: int, seed: Follower | None = None) -> None:
        follower = Follower(
            self.cluster,
            node,
            self.stop_followers,
            self.config.insecure,
            seed=seed,
            sources=lambda: (self.cluster, self.members),
        )
        self.followers[node] = follower
        follower.start()

    def _nemesis(self) -> None:
        cfg = self.config
        kinds = list(cfg.faults)
        if "partition" in kinds and not self.network.supports_partitions:
            kinds.remove("partition")
            self.notes.append(f"partition faults skipped: the {self.network.kind} network")
        end = time.monotonic() + cfg.duration
        bag: list[str] = []
        partitions: list[str] = []
        while True:
            self.stop_followers.wait(self.rng.uniform(*cfg.quiet_s) * cfg.tempo)
            if time.monotonic() >= end or not kinds:
                if not kinds:
                    self.stop_followers.wait(max(0.0, end - time.monotonic()))
                return
            if not bag:  # every kind comes up once per round, in random order
                bag = kinds[:]
                self.rng.shuffle(bag)
            kind = bag.pop()
            if kind == "kill":
                self._fault_kill()
            elif kind == "powerloss":
                self._fault_powerloss()
            elif kind == "pause":
                self._fault_pause()
            elif kind == "reconfigure":
                self._fault_reconfigure()
            else:
                if not partitions:
                    partitions = list(PARTITIONS)
                    self.rng.shuffle(partitions)
                inner = [k for k in kinds if k in NESTED_KINDS]
                nested = self.rng.choice(inner) if inner else None
                self._fault_partition(partitions.pop(), nested if cfg.compose else None)

    def _target(self, leader_bias: float) -> tuple[int, int | None]:
        draw, anyone = self.rng.random(), self.rng.choice(self.members)
        leader = self.leader()
        if leader is not None and draw < leader_bias:
            return leader, leader
        return anyone, leader

    def _down(self) -> None:
        self.stop_followers.wait(self.rng.uniform(*self.config.down_s) * self.config.tempo)

    def _hold(self) -> None:
        self.stop_followers.wait(self.rng.uniform(*self.config.hold_s) * self.config.tempo)

    def _fault_kill(self) -> None:
        node, leader = self._target(0.5)
        self.faults.record("kill", "start", node=node, leader=leader, signal="SIGKILL")
        self.kill(node)
        self._down()
        self.spawn(node)
        self.faults.record("kill", "end", node=node, restarted=True)

    def _fault_powerloss(self) -> None:
        scope = self.config.powerloss_scope
        everyone = self.rng.random() < 0.25
        if scope == "all" or (scope == "mixed" and everyone):
            nodes, leader = list(self.members), self.leader()
            scope = "all"
        else:
            node, leader = self._target(0.5)
            nodes, scope = [node], "one"
        self.faults.record("powerloss", "start", nodes=nodes, scope=scope, leader=leader)
        if scope == "one":
            self._catch_unsynced(nodes[0])
        for node in nodes:
            self.kill(node)
        lost: dict[str, Any] = {}
        for node in nodes:
            cuts = power_loss(self.data_dir(node), self.marks(node), self.disk_rng)
            lost[str(node)] = [c.to_dict() for c in cuts]
        self.faults.record(
            "powerloss",
            "discarded",
            nodes=nodes,
            unsynced_bytes_lost=sum(
                c["size"] - c["kept"] + c["zeroed"] for cs in lost.values() for c in cs
            ),
            files=lost,
        )
        self._down()
        for node in nodes:
            self.spawn(node)
        self.faults.record("powerloss", "end", nodes=nodes, restarted=True)

    def _catch_unsynced(self, node: int, attempts: int = 30) -> None:
        """Leave ``node`` stopped at a moment when it has written but not yet synced data
        (if that happens within a few tries), so the power cut has something to take."""
        for _ in range(attempts):
            self.signal_node(node, signal.SIGSTOP)
            if unsynced_bytes(self.data_dir(node), self.marks(node)) > 0:
                return
            self.signal_node(node, signal.SIGCONT)
            time.sleep(self.jitter.uniform(0.001, 0.01))  # let it run a little, then look again

    def _fault_pause(self) -> None:
        node, leader = self._target(0.7)
        self.faults.record("pause", "start", node=node, leader=leader, signal="SIGSTOP")
        self.signal_node(node, signal.SIGSTOP)
        self._hold()
        self.signal_node(node, signal.SIGCONT)
        # What does it believe the moment it wakes up? (A paused leader often still thinks
        # it leads; it must not get anything committed on the strength of that belief.)
        woke = self.status_client.status(node, 0.5)
        self.faults.record(
            "pause",
            "end",
            node=node,
            signal="SIGCONT",
            woke_as=woke.role if woke else None,
            woke_ballot=list(woke.ballot) if woke else None,
        )

    def _fault_reconfigure(self) -> None:
        """Replace one member (the leader half the time) by a new node with a new id, the
        way an operator replaces a machine: add the new one as a learner, start it,
        promote it once it caught up, remove the old one, stop the old process."""
        if not self.spares:
            self.faults.record(
                "reconfigure", "skipped", reason="no spare id left", members=list(self.members)
            )
            self.skipped_reconfigures += 1
            return
        old, leader = self._target(0.5)
        new = self.spares.pop(0)  # never handed out again, whatever happens below
        self.faults.record(
            "reconfigure", "start", old=old, new=new, leader=leader, members=list(self.members)
        )
        try:
            self._replace(old, new)
        except (ClusterUnavailable, ValueError, Forbidden, ConfigError, OSError) as exc:
            # Faults come one at a time and each ends with its node running again: a
            # change that cannot complete within minutes is a failure of the system.
            self.membership.violate(f"replacing node {old} by node {new}: {exc!r}"[:300])
            self.faults.record(
                "reconfigure", "end", old=old, new=new, failed=repr(exc)[:300],
                voters=list(self.voters), learners=list(self.learners),
            )
            return
        self.replaced.append((old, new))
        self.faults.record(
            "reconfigure", "end", old=old, new=new, leader=self.leader(),
            voters=list(self.voters), learners=list(self.learners),
        )

    def _replace(self, old: int, new: int) -> None:
        address = self.network.address(new)
        key = ""
        if not self.config.insecure:
            path = self.data_dir(new) / NODE_KEY_FILE
            key = ensure_keypair(path).public_text
            self._mark_durable(new, path)  # written and synced before the node runs
        with self.client() as admin:
            admin.change_members(MemberOp.ADD_LEARNER, new, address, key, timeout=60.0)
        self.faults.record("reconfigure", "learner", new=new, address=address)
        # (the file, for ``paxos node`` to start it and for clients made from now on)
        add_to_file(self.cluster, new, address, key)
        assert self.cluster.path is not None
        self._set_cluster(parse_cluster(str(self.cluster.path)))
        self.spawn(new)
        # (before it is a member: workers pick followers of members)
        self._follow(new, seed=max(
            (self.followers[n] for n in self.members), key=lambda f: f.applied
        ))
        self.learners = (*self.learners, new)
        self.members = (*self.voters, *self.learners)
        with self.client() as admin:
            # (the learner first catches up, by a snapshot install most of the time)
            admin.change_members(MemberOp.PROMOTE, new, timeout=120.0)
            self.learners = tuple(n for n in self.learners if n != new)
            self.voters = (*self.voters, new)
            self.faults.record("reconfigure", "promoted", new=new)
            admin.change_members(MemberOp.REMOVE, old, timeout=60.0)
        self.voters = tuple(n for n in self.voters if n != old)
        self.learners = tuple(n for n in self.learners if n != old)
        self.members = (*self.voters, *self.learners)
        self.faults.record("reconfigure", "removed", old=old)
        # A removed leader hands over once its removal is in effect; a SIGTERM would
        # make it hand over too, but the planned way is to wait for it.
        handed = self.wait_for("another leader", self.leader, 30.0)
        stopped = self.stop_node(old)
        self.followers[old].retire()
        self.faults.record(
            "reconfigure", "stopped", old=old, leader=handed, signal="SIGTERM",
            exited=stopped,
        )
        if not stopped:
            self.notes.append(f"removed node {old} did not exit within 30 s of SIGTERM")

    def _set_cluster(self, cluster: Cluster) -> None:
        self.cluster = cluster
        if self._status_client is not None:  # (it knows only the nodes it was made with)
            self._status_client.close()
            self._status_client = None

    def _inject(self, kind: str) -> None:
        {"kill": self._fault_kill, "powerloss": self._fault_powerloss,
         "pause": self._fault_pause}[kind]()

    def _fault_partition(self, variant: str, nested: str | None = None) -> None:
        ids = list(self.members)
        leader = self.leader()
        self.rng.shuffle(ids)
        if variant == "leader-minority":
            # The leader with a minority (alone in a 3-node cluster): it must stop committing.
            head = leader if leader is not None else ids[0]
            others = [i for i in ids if i != head]
            minority = [head, *others[: (len(ids) - 1) // 2 - 1]]
            groups = [minority, [i for i in ids if i not in minority]]
            links = links_cut(groups, ids)
        elif variant == "bridge":
            # Two sides that cannot talk, and one node that talks to both.
            bridge, rest = ids[0], ids[1:]
            half = len(rest) // 2
            groups = [rest[:half], [bridge], rest[half:]]
            links = links_cut([rest[:half], rest[half:]], rest)
        elif variant == "halves":
            half = len(ids) // 2
            groups = [ids[:half], ids[half:]]
            links = links_cut(groups, ids)
        else:  # isolate-one
            groups = [[ids[0]], ids[1:]]
            links = links_cut(groups, ids)
        self.faults.record(
            "partition",
            "start",
            variant=variant,
            groups=[sorted(g) for g in groups],
            links_cut=sorted(sorted(pair) for pair in links),
            leader=leader,
        )
        self.network.cut(links)
        if nested is not None:
            # Composed faults: a node crashes, pauses or loses power while the network is cut.
            self._hold()
            self._inject(nested)
        self._hold()
        self.network.heal()
        self.faults.record("partition", "end", variant=variant, healed=True)

    def _heal_all(self) -> None:
        """Every link restored, every member running (a removed node stays stopped)."""
        self.network.heal()
        for node in self.members:
            np = self.procs[node]
            if np.paused:
                self.signal_node(node, signal.SIGCONT)
            if not np.up:
                self.spawn(node)
        self.faults.record("heal", "info", leader=self.leader())

    def _recover(self) -> None:
        """After the faults: progress, then one log on every member, read in full."""
        started = time.monotonic()
        if self.config.service == "kv":
            error = probe(self.history, self.cluster, self.config.insecure, 30.0)
            if error is not None:
                self.recovery.violate(f"no put committed within 30 s of healing: {error}")
        else:
            self._probe()
        self.stop_clients.set()
        for worker in self.workers:
            worker.join(self.config.op_timeout * 3 + 10)
        # Converged: every member up, answering, with one delivered length, twice in a row
        # (removed nodes are stopped: what their followers saw before still counts).
        last: int | None = None

        def converged() -> int | None:
            nonlocal last
            statuses = self.statuses(timeout=1.0)
            lengths = {s.delivered for s in statuses.values()}
            if len(statuses) == len(self.members) and len(lengths) == 1:
                (length,) = lengths
                if length == last:
                    return length
                last = length
            else:
                last = None
            return None

        target = self.wait_for("convergence", converged, self.config.converge_timeout)
        if target is None:
            statuses = self.statuses(timeout=1.0)
            self.recovery.violate(
                f"nodes did not converge within {self.config.converge_timeout:.0f} s: "
                + ", ".join(f"node {n}: delivered {s.delivered}" for n, s in statuses.items())
            )
            return
        caught_up = self.wait_for(
            "followers",
            lambda: all(self.followers[n].applied >= target for n in self.members),
            self.config.converge_timeout,
        )
        if caught_up is None:
            behind = ", ".join(
                f"node {n} at {self.followers[n].applied}"
                for n in self.members
                if self.followers[n].applied < target
            )
            self.notes.append(f"followers did not reach the final index {target}: {behind}")
        if self.watchers and self.wait_for(
            "watchers",
            lambda: all(w.done_through() >= target for w in self.watchers),
            self.config.converge_timeout,
        ) is None:
            self.notes.append(f"watchers did not reach the final index {target}: " + ", ".join(
                f"{w.prefix!r} at {w.done_through()}" for w in self.watchers))
        for node in self.members:
            final = self.final[node] = self._read_log(node, target)
            # A node that installed a snapshot serves its history from there on; what it
            # serves must reach the end without a hole.
            first = min(final, default=1)
            if len(final) < target - first + 1 or max(final, default=0) < target:
                self.recovery.violate(
                    f"node {node} served {len(final)} of its {target - first + 1} "
                    f"deliveries from index {first}"
                )
            if first > 1:
                self.notes.append(f"node {node} retains its history from index {first}")
        self.recovery.checked = target
        self.recovery.notes = (
            f"all {len(self.members)} nodes delivered {target} commands; "
            f"converged {time.monotonic() - started:.1f} s after healing"
        )

    def _probe(self) -> None:
        """A broadcast after healing: the proof that the cluster makes progress."""
        probe = self.history.invoke(0, "put", "probe", "final", payload=kv_payload(
            "put", "probe", "final", "probe"))
        try:
            with self.client(timeout=30.0) as client:
                probe.client = client.open_session()
                probe.seq = 1
                committed = client.broadcast(probe.payload or b"")
            self.history.complete(probe, "ok", index=committed.index)
        except Exception as exc:
            self.history.complete(probe, "unknown", error=repr(exc)[:200])
            self.recovery.violate(f"no broadcast committed within 30 s of healing: {exc!r}")

    def _check_membership(self) -> None:
        """The cluster's membership is the one the harness made: every change it asked
        for applied, and no other (a replacement that never promoted its new node, or
        never removed the old one, fails here even if the cluster still runs)."""
        v = self.membership
        v.checked = 3 * len(self.replaced)  # add, promote, remove each
        with self.client() as client:
            got = self.wait_for("the members", lambda: client.members(timeout=1.0), 30.0)
        if got is None:
            v.violate("no member answered with the membership within 30 s")
            return
        want_voters, want_learners = sorted(self.voters), sorted(self.learners)
        if sorted(got.voters) != want_voters or sorted(got.learners) != want_learners:
            v.violate(
                f"the cluster's voters {sorted(got.voters)} and learners "
                f"{sorted(got.learners)} (epoch {got.epoch}) are not the harness's "
                f"{want_voters} and {want_learners}"
            )
        replaced = ", ".join(f"{old}->{new}" for old, new in self.replaced) or "none"
        v.notes = (
            f"voters {','.join(map(str, got.voters))} at epoch {got.epoch}; "
            f"replacements: {replaced}"
        )

    def _read_log(self, node: int, length: int) -> dict[int, Command]:
        out: dict[int, Command] = {}
        start = 1
        with self.client() as client:
            try:
                next(client.subscribe(1, node=node, idle_timeout=10.0))
            except Compacted as exc:
                start = exc.earliest
            except StopIteration:
                pass
            for delivery in client.subscribe(start, node=node, idle_timeout=10.0):
                out[delivery.index] = delivery.command
                if delivery.index >= length:
                    break
        return out

    def _shutdown(self) -> None:
        self.stop_clients.set()
        self.stop_followers.set()
        for follower in self.followers.values():
            follower.join(10)
        for watcher in self.watchers:
            watcher.join(10)
        for np in self.procs.values():
            proc = np.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        for np in self.procs.values():
            if np.proc is None:
                continue
            try:
                np.proc.wait(10)
            except subprocess.TimeoutExpired:
                np.proc.kill()
                np.proc.wait(10)
        if self._status_client is not None:
            self._status_client.close()
        try:
            self.network.teardown()
        except NetworkError as exc:
            log.warning("chaos.teardown_failed", error=str(exc))

    # ------------------------------------------------------------------ verdicts

    def observations(self) -> dict[str, dict[int, Command]]:
        obs: dict[str, dict[int, Command]] = {}
        for node, follower in self.followers.items():
            with follower.lock:
                obs[f"node{node}/stream"] = dict(follower.observed)
        for node, entries in self.final.items():
            obs[f"node{node}/final"] = entries
        return obs

    def _check(self, seconds: float) -> Summary:
        ops = self.history.ops()
        observations = self.observations()
        watches = [w.to_json() for w in self.watchers]
        started = time.perf_counter()
        figures: dict[str, Any] = {}
        if self.config.service == "kv":
            verdicts, figures = check_kv_all(ops, observations, watches, self.config.max_steps)
        else:
            verdicts = check_all(ops, observations, self.config.max_steps)
        checker_seconds = time.perf_counter() - started
        verdicts.append(self.recovery)
        verdicts.append(self.membership)
        if self.skipped_reconfigures:
            self.notes.append(
                f"{self.skipped_reconfigures} reconfigure fault(s) skipped: no spare id left "
                f"(--spares {self.config.spare_ids})"
            )
        outcomes: dict[str, int] = {}
        for op in ops:
            outcomes[op.outcome or "pending"] = outcomes.get(op.outcome or "pending", 0) + 1
        cfg = self.config
        summary = Summary(
            config={
                "nodes": cfg.nodes,
                "duration": cfg.duration,
                "faults": list(cfg.faults),
                "clients": cfg.clients,
                "keys": cfg.keys,
                "seed": self.seed,
                "op_timeout": cfg.op_timeout,
                "powerloss_scope": cfg.powerloss_scope,
                "unsafe_no_fsync": cfg.unsafe_no_fsync,
                "compose": cfg.compose,
                "tempo": cfg.tempo,
                "snapshot_entries": cfg.snapshot_entries,
                "insecure": cfg.insecure,
                "spares": cfg.spare_ids,
                "service": cfg.service,
            },
            network=self.network.kind,
            run_dir=str(self.run_dir),
            seconds=seconds,
            operations=outcomes,
            per_kind=self.history.counts(),
            faults=self.faults.counts(),
            verdicts=verdicts,
            checker_seconds=checker_seconds,
            ops_checked=len(ops),
            notes=self.notes,
            members={
                "voters": list(self.voters),
                "learners": list(self.learners),
                "replaced": [list(pair) for pair in self.replaced],
                "spares_left": list(self.spares),
            },
            kv=figures,
        )
        self.save(summary, observations, watches)
        return summary

    def save(
        self,
        summary: Summary,
        observations: dict[str, dict[int, Command]],
        watches: list[dict[str, Any]] | None = None,
    ) -> None:
        self.history.save(self.run_dir / "history.jsonl")
        self.faults.save(self.run_dir / "faults.jsonl")
        save_observations(self.run_dir / "observations.jsonl", observations)
        if watches:
            with (self.run_dir / "watches.jsonl").open("w") as f:
                for watch in watches:
                    f.write(json.dumps(watch) + "\n")
        (self.run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))

    def cleanup(self, summary: Summary) -> None:
        """Remove the run directory if it was ours, the run passed, and it is not to be kept."""
        if summary.ok and self._made_run_dir and not self.config.keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _command_json(c: Command) -> dict[str, Any]:
    payload = c.payload.decode("utf-8", "surrogateescape")
    return {"client": c.client, "seq": c.seq, "payload": payload}


def _command(row: dict[str, Any]) -> Command:
    return Command(str(row["client"]), int(row["seq"]), str(row["payload"]).encode(
        "utf-8", "surrogateescape"))


def save_observations(path: Path, observations: Mapping[str, Mapping[int, Command]]) -> None:
    """Write observations compactly: the merged order once, then per source the index
    ranges it observed and any command where it differs from the merged order."""
    order = build_order(observations)
    with path.open("w") as f:
        for index, command in enumerate(order.commands, start=1):
            if command is not None:
                f.write(json.dumps({"order": index, **_command_json(command)}) + "\n")
        for source, entries in sorted(observations.items()):
            ranges: list[list[int]] = []
            for index in sorted(entries):
                if ranges and ranges[-1][1] == index - 1:
                    ranges[-1][1] = index
                else:
                    ranges.append([index, index])
            f.write(json.dumps({"source": source, "ranges": ranges}) + "\n")
            for index, command in entries.items():
                if not 1 <= index <= len(order.commands) or order.commands[index - 1] != command:
                    row = {"source": source, "index": index, **_command_json(command)}
                    f.write(json.dumps(row) + "\n")


def load_observations(path: Path) -> dict[str, dict[int, Command]]:
    merged: dict[int, Command] = {}
    observations: dict[str, dict[int, Command]] = {}
    with path.open() as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "order" in row:
                merged[int(row["order"])] = _command(row)
            elif "ranges" in row:
                observed = observations.setdefault(str(row["source"]), {})
                for lo, hi in row["ranges"]:
                    for index in range(int(lo), int(hi) + 1):
                        if index in merged:
                            observed[index] = merged[index]
            else:
                observations.setdefault(str(row["source"]), {})[int(row["index"])] = _command(row)
    return observations


def load_run(run_dir: Path) -> tuple[list[Op], dict[str, dict[int, Command]]]:
    """The history and observations a run saved, for checking again offline."""
    ops = History.load(run_dir / "history.jsonl").ops()
    return ops, load_observations(run_dir / "observations.jsonl")


def load_watches(run_dir: Path) -> list[dict[str, Any]]:
    """What a kv run's watchers saw (none for another run)."""
    path = run_dir / "watches.jsonl"
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def run_service(run_dir: Path) -> str:
    """The service a saved run tested (its summary says; older runs: broadcast)."""
    try:
        config = json.loads((run_dir / "summary.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return "broadcast"
    return str(config.get("service", "broadcast"))


def print_lines(lines: Iterator[str], out: TextIO) -> None:
    for line in lines:
        out.write(line + "\n")
    out.flush()
