"""Clusters of real node processes on 127.0.0.1, for any of the three systems.

By default a Multi-Paxos or async cluster runs as deployed: with CURVE on every socket.
Its cluster file (``workdir/cluster.toml``, :func:`broadcast.local.cluster_file`) names
every node's key (``workdir/node<i>/node.key``) and an ``admin`` client key
(``workdir/keys/admin.key``), which the load clients and the status probe use.
``secure=False`` runs the nodes ``--insecure`` (plaintext, no authentication): the
comparison point for what CURVE costs. PySyncObj always runs plaintext (its Raft
traffic is its own, unencrypted TCP), so its client side does too.

Every node runs in its own session (process group), so it can be killed with
all it started; :func:`kill_all` (registered with :mod:`atexit` by the CLI)
ends every process this module started that is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from broadcast.keys import load_keypair
from broadcast.local import cluster_file, free_base_port
from broadcast.protocol import FETCH_MAX, Deliveries, Fetch, Status, StatusRequest
from broadcast.spec import Cluster, ConfigError, local_cluster
from broadcast.transport import ClientTransport, TransportConfig
from paxos.codec import CodecError, decode, encode
from paxos.types import Command

SYSTEMS = ("paxos", "async", "pysyncobj", "pysyncobj-tuned")
#: The systems that speak CURVE (the others are always plaintext).
SECURE_SYSTEMS = ("paxos", "async")

#: ``pysyncobj-tuned``: PySyncObj replicating every 10 ms instead of its default 100 ms
#: (``appendEntriesPeriod``), which is faster and lower-latency under this load.
PSO_TUNED_ARGS = ("--append-period", "0.01")
REPO = Path(__file__).resolve().parent.parent

#: Extra ``bench.pso_node`` options (PySyncObj tuning), see bench/README.md.
PSO_ARGS: list[str] = []

_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ClusterError(RuntimeError):
    """A cluster did not come up, or a node died unexpectedly."""


def kill_all() -> None:
    """SIGKILL every process group this module started that is still alive."""
    for proc in list(_LIVE.values()):
        _kill_group(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    _LIVE.clear()


def track(proc: subprocess.Popen[bytes]) -> None:
    """Have :func:`kill_all` end ``proc`` (started with ``start_new_session=True``)."""
    _LIVE[proc.pid] = proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM ``proc``'s group, SIGKILL it after ``timeout``; forget it."""
    _kill_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGKILL)
        proc.wait(10)
    _LIVE.pop(proc.pid, None)


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the node is its own session leader: pgid == pid


def client_transport(
    cluster: Cluster, identity: bytes | None = None, config: TransportConfig | None = None
) -> ClientTransport:
    """A client transport to every node of ``cluster``: CURVE with the cluster file's
    client key (``[client] key_file``, the admin key) if the cluster is secure, else
    plaintext."""
    nodes = {i: cluster.endpoint(i) for i in cluster.ids}
    if not cluster.secure:
        return ClientTransport(nodes, identity=identity, config=config)
    if cluster.client_key is None:
        raise ConfigError(f"{cluster.path}: no [client] key_file")
    return ClientTransport(
        nodes,
        identity=identity,
        config=config,
        keypair=load_keypair(cluster.client_key),
        server_keys={i: k.encode() for i, k in cluster.keys.items()},
    )


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU seconds of a process so far (Linux /proc), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
    try:
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime
    except (IndexError, ValueError):
        return None


def host_cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks) - idle) / _CLK_TCK, sum(ticks) / _CLK_TCK


class BenchCluster:
    """``nodes`` node processes of ``system`` with data and logs under ``workdir``."""

    def __init__(
        self,
        system: str,
        nodes: int,
        fsync: bool,
        workdir: Path,
        log_level: str = "warning",
        cprofile_dir: Path | None = None,
        *,
        secure: bool = True,
        metrics_base_port: int | None = None,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}; expected one of {SYSTEMS}")
        self.system = system
        #: CURVE on every socket (PySyncObj: never).
        self.secure = secure and system in SECURE_SYSTEMS
        self.log_level = log_level
        self.cprofile_dir = cprofile_dir
        self.n = nodes
        #: paxos nodes: node i serves /metrics on 127.0.0.1:(metrics_base_port + i).
        self.metrics_base_port = metrics_base_port
        self.fsync = fsync
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        base = free_base_port(2 * nodes)
        self.cluster: Cluster = local_cluster(nodes, base)
        if self.secure:
            # Keys for every node (in its data directory) and the admin client key.
            self.cluster = cluster_file(workdir, self.cluster, secure=True)
        self.raft = ",".join(f"127.0.0.1:{base + nodes + i}" for i in self.cluster.ids)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._probe: ClientTransport | None = None
        self._nonce = 0
        #: Per node: the ticket of the last Deliveries the probe read (echoed in its Fetch).
        self._tickets: dict[int, int] = {}

    @property
    def spec(self) -> str:
        """What to pass as ``--cluster``: the cluster file if secure, else the inline spec."""
        return self.cluster.argument() if self.secure else self.cluster.spec()

    def command(self, node: int) -> list[str]:
        data = self.workdir / f"node{node}"
        python = [sys.executable]
        if self.cprofile_dir is not None:
            # Profile the whole process; cProfile writes the file when the node exits (SIGTERM).
            python += ["-m", "cProfile", "-o", str(self.cprofile_dir / f"node{node}.prof")]
        if self.system in SECURE_SYSTEMS:
            if self.system == "paxos":
                args = [*python, "-m", "broadcast", "node", "--id", str(node), "--cluster",
                        self.spec, "--data-dir", str(data), "--log-level", self.log_level]
            else:
                args = [*python, "-m", "bench.async_node", "--id", str(node),
                        "--cluster", self.spec, "--data-dir", str(data)]
            if not self.secure:
                args.append("--insecure")
            if self.metrics_base_port is not None and self.system == "paxos":
                args += ["--metrics", f"127.0.0.1:{self.metrics_base_port + node}"]
            return args if self.fsync else [*args, "--no-fsync"]
        args = [*python, "-m", "bench.pso_node", "--id", str(node),
                "--cluster", self.spec, "--raft", self.raft, *PSO_ARGS]
        if self.system == "pysyncobj-tuned":
            args += PSO_TUNED_ARGS
        return [*args, "--journal", str(data) + ".journal"] if self.fsync else args

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        for node in self.cluster.ids:
            self.start_node(node, env)

    def start_node(self, node: int, env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"node{node}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                self.command(node),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
                env=env,
                start_new_session=True,  # own process group: killpg reaches all of it
            )
        finally:
            log.close()
        self.procs[node] = proc
        track(proc)

    def pids(self) -> dict[int, int]:
        return {node: p.pid for node, p in self.procs.items() if p.poll() is None}

    def cpu(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for node, pid in self.pids().items():
            seconds = cpu_seconds(pid)
            if seconds is not None:
                out[node] = seconds
        return out

    def check_alive(self, expected_dead: tuple[int, ...] = ()) -> None:
        for node, proc in self.procs.items():
            if node not in expected_dead and proc.poll() is not None:
                tail = self.log_tail(node)
                raise ClusterError(f"{self.system} node {node} exited ({proc.returncode}): {tail}")

    def log_tail(self, node: int, chars: int = 600) -> str:
        try:
            return (self.workdir / f"node{node}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self, node: int, sig: int = signal.SIGKILL) -> float:
        """Signal ``node``'s process group; returns the monotonic time of the kill."""
        proc = self.procs[node]
        when = time.monotonic()
        _kill_group(proc, sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(10)
        _LIVE.pop(proc.pid, None)
        return when

    def stop(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        for proc in self.procs.values():
            _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait(10)
            _LIVE.pop(proc.pid, None)

    def __enter__(self) -> BenchCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ probing

    def _transport(self) -> ClientTransport:
        if self._probe is None:
            identity = b"c:bench-probe-" + uuid.uuid4().hex[:12].encode()
            self._probe = client_transport(self.cluster, identity)
            self._tickets = {}
        return self._probe

    def _ask(self, node: int, request: object, timeout: float) -> object | None:
        transport = self._transport()
        transport.send(node, encode(request))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sender, frame in transport.poll(20):
                try:
                    msg = decode(frame)
                except CodecError:
                    continue
                if isinstance(msg, Deliveries) and msg.ticket:
                    # Read: the next Fetch shows it, so the node keeps answering us (its
                    # reply budget, see broadcast.protocol.Fetch).
                    self._tickets[sender] = msg.ticket
                if sender == node and _answers(request, msg):
                    return msg
        return None

    def status(self, node: int, timeout: float = 0.5) -> Status | None:
        self._nonce += 1
        msg = self._ask(node, StatusRequest(self._nonce), timeout)
        return msg if isinstance(msg, Status) else None

    def wait_leader(self, deadline_s: float = 30.0, exclude: tuple[int, ...] = ()) -> int:
        """The leader, once every live node names the same one and it says it leads."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            self.check_alive(exclude)
            live = [i for i in self.cluster.ids if i not in exclude]
            statuses = [self.status(i, 0.3) for i in live]
            if all(s is not None for s in statuses):
                leaders = {s.leader for s in statuses if s is not None}
                if len(leaders) == 1:
                    leader = leaders.pop()
                    lead_status = statuses[live.index(leader)] if leader in live else None
                    if lead_status is not None and lead_status.role == "leader":
                        return leader
            time.sleep(0.05)  # a probe interval, not a wait-and-hope: we loop on the condition
        raise ClusterError(f"{self.system}: no agreed leader after {deadline_s:.0f}s")

    def wait_quiet(self, nodes: list[int], deadline_s: float = 10.0) -> None:
        """Wait until the delivered counts of ``nodes`` stop changing (and agree), or time out."""
        deadline = time.monotonic() + deadline_s
        last: tuple[int, ...] | None = None
        while time.monotonic() < deadline:
            statuses = [self.status(i, 0.5) for i in nodes]
            counts = tuple(s.delivered if s is not None else -1 for s in statuses)
            if counts == last and len(set(counts)) == 1:
                return
            last = counts
            time.sleep(0.2)  # sampling interval of the condition above

    def read_order(self, node: int, deadline_s: float = 60.0) -> list[Command] | None:
        """Everything ``node`` has delivered, in order, or None if it stops answering."""
        out: list[Command] = []
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            ticket = self._tickets.get(node, 0)
            msg = self._ask(node, Fetch(len(out) + 1, FETCH_MAX, 0, ticket), 2.0)
            if not isinstance(msg, Deliveries):
                return None
            out.extend(msg.commands)
            if not msg.commands or len(out) >= msg.delivered:
                return out
        return None


def _answers(request: object, reply: object) -> bool:
    if isinstance(request, StatusRequest):
        return isinstance(reply, Status) and reply.nonce == request.nonce
    if isinstance(request, Fetch):
        return isinstance(reply, Deliveries) and reply.first_index == request.from_index
    return False
