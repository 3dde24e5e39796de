"""Real node processes on loopback, for integration tests."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import runtime_mutants
import zmq

from broadcast.auth import Keyring
from broadcast.client import Client
from broadcast.keys import Keypair, load_keypair
from broadcast.local import cluster_file, free_base_port, spawn_node
from broadcast.spec import Cluster, local_cluster
from broadcast.transport import ClientTransport
from chaos.faults import Truncation, power_loss
from paxos.types import Command

#: The instrumented node entry point (fsync marks, crash points, planted bugs).
MUTANT_NODE = Path(__file__).with_name("mutant_node.py")

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], deadline_s: float = 60.0) -> T:
    """Poll ``probe`` until it returns something other than None/False, or fail."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(0.02)  # between looks: a probe that does not block must not spin a core


def secure_cluster(tmp: Path, n: int = 3, host: str = "127.0.0.1") -> Cluster:
    """A CURVE cluster of ``n`` nodes on free ports, its keys and ``cluster.toml`` written
    into ``tmp`` (:func:`broadcast.local.cluster_file`): node ``i`` finds its key in its
    data directory if that is ``tmp / f"node{i}"``, and ``Client(cluster)`` (or the file,
    ``cluster.argument()``) talks with the admin key, which may do everything."""
    return cluster_file(tmp, local_cluster(n, free_base_port(n), host))


def grant_toml(name: str, key: Keypair, ids: list[str], allow: list[str]) -> str:
    """A ``[clients.NAME]`` table to append to a cluster file (nodes read it at start)."""
    return (
        f'\n[clients.{name}]\nkey = "{key.public_text}"\nids = {json.dumps(ids)}\n'
        f"allow = {json.dumps(allow)}\n"
    )


def client_transport(
    cluster: Cluster, nodes: Iterable[int] | None = None, **kwargs: Any
) -> ClientTransport:
    """A bare client transport to ``nodes`` of ``cluster`` (default: all), for tests that
    speak the protocol by hand: CURVE with the cluster file's client key if the cluster
    is secure, plaintext otherwise."""
    endpoints = {i: cluster.endpoint(i) for i in (cluster.ids if nodes is None else nodes)}
    if not cluster.secure:
        return ClientTransport(endpoints, **kwargs)
    assert cluster.client_key is not None, "a secure cluster file names the client's key"
    return ClientTransport(
        endpoints,
        keypair=load_keypair(cluster.client_key),
        server_keys={i: key.encode() for i, key in cluster.keys.items()},
        **kwargs,
    )


class _LosesEverythingUnsynced(random.Random):
    """For :func:`chaos.faults.power_loss`: of the bytes past a file's last sync, keep none
    (one of the outcomes a power cut may have, and the one that shows lost vows)."""

    def random(self) -> float:
        return 0.0


class ProcessCluster:
    """``n`` separate ``paxos node`` processes with data and logs under ``tmp``.

    ``power_cuts=True`` runs every node under fsync marks with a crash point (see
    ``tests/mutant_node.py``), for :meth:`arm_crash` and :meth:`power_loss`. A runtime
    mutant planted by the test (:func:`runtime_mutants.planted`) is planted in every
    node started. ``start`` names the nodes started at once (default: all).
    """

    def __init__(
        self,
        tmp: Path,
        n: int = 3,
        fsync: bool = True,
        host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
        *,
        power_cuts: bool = False,
        start: Iterable[int] | None = None,
        crash_steps: dict[int, str] | None = None,
        insecure: bool = False,
        metrics_base_port: int | None = None,
    ) -> None:
        self.tmp = tmp
        #: Node i serves metrics, health and events on 127.0.0.1:(metrics_base_port + i).
        self.metrics_base_port = metrics_base_port
        #: False (the default): CURVE, with keys written by cluster_file into ``tmp``.
        self.insecure = insecure
        #: node -> the step of its first snapshot-then-compact it dies at (power_cuts only)
        self.crash_steps = dict(crash_steps or {})
        self.fsync = fsync
        self.extra = extra
        self.power_cuts = power_cuts
        plain = local_cluster(n, free_base_port(n), host)
        self.cluster: Cluster = cluster_file(tmp, plain, secure=not insecure)
        if power_cuts and not insecure:
            # cluster_file synced each node's key before the node first ran: durable, so a
            # power cut must not take it (the node's own marks cover only what it wrote).
            for node in self.cluster.ids:
                key = self.data_dir(node) / "node.key"
                info = key.stat()
                with self.marks(node).open("a") as f:
                    f.write(f"{key}\t{info.st_size}\t{info.st_dev}:{info.st_ino}\n")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for node in self.cluster.ids if start is None else start:
            self.start(node)

    def log_file(self, node: int) -> Path:
        return self.tmp / f"node{node}.log"

    def data_dir(self, node: int) -> Path:
        return self.tmp / f"node{node}"

    def marks(self, node: int) -> Path:
        return self.tmp / f"node{node}.marks"

    def keyring(self, node: int) -> Keyring | None:
        """What a transport playing ``node`` needs to be let in as that member (its key
        from ``cluster_file``); None for an insecure cluster."""
        if self.insecure:
            return None
        return Keyring.of(self.cluster, node, load_keypair(self.data_dir(node) / "node.key"))

    def raw_socket(
        self, ctx: zmq.Context[zmq.Socket[bytes]], node: int, identity: bytes | None = None
    ) -> zmq.Socket[bytes]:
        """A bare DEALER to ``node`` for sending it anything (LINGER 0; frames wait for the
        connection). With CURVE it holds the admin client's key: what it sends reaches
        the node as an authorised client's, however malformed."""
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        if not self.insecure:
            assert self.cluster.client_key is not None
            keypair = load_keypair(self.cluster.client_key)
            sock.curve_publickey = keypair.public
            sock.curve_secretkey = keypair.secret
            sock.curve_serverkey = self.cluster.keys[node].encode()
        sock.connect(self.cluster.endpoint(node))
        return sock

    def crash_arm(self, node: int) -> Path:
        return self.tmp / f"node{node}.crash"

    def metrics_url(self, node: int, path: str = "/metrics") -> str:
        assert self.metrics_base_port is not None
        return f"http://127.0.0.1:{self.metrics_base_port + node}{path}"

    def start(self, node: int) -> None:
        extra = self.extra
        if self.metrics_base_port is not None:
            extra = (*extra, "--metrics", f"127.0.0.1:{self.metrics_base_port + node}")
        if not self.power_cuts and runtime_mutants.ENV not in os.environ:
            self.procs[node] = spawn_node(
                node,
                self.cluster,
                self.tmp,
                fsync=self.fsync,
                log_file=self.log_file(node),
                extra=extra,
                insecure=self.insecure,
            )
            return
        args = [sys.executable, str(MUTANT_NODE), "--id", str(node), "--cluster",
                self.cluster.spec() if self.insecure else self.cluster.argument(),
                "--data-dir", str(self.data_dir(node)), *extra]
        if node not in self.cluster.starting:
            args.append("--join")
        if not self.fsync:
            args.append("--no-fsync")
        if self.insecure:
            # (an inline SPEC carries no cluster id: the file's, as spawn_node passes it)
            args.append("--insecure")
            if self.cluster.cluster_id is not None:
                args += ["--cluster-id", self.cluster.cluster_id]
        env = {**os.environ, "PAXOS_CHAOS_PARENT": str(os.getpid())}
        if self.power_cuts:
            env["PAXOS_TEST_MARKS"] = str(self.marks(node))
            env["PAXOS_TEST_CRASH_ARM"] = str(self.crash_arm(node))
            step = self.crash_steps.pop(node, None)  # the first start only
            if step is not None:
                env["PAXOS_TEST_CRASH_STEP"] = step
        with self.log_file(node).open("ab") as log:
            self.procs[node] = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stderr=log, env=env
            )

    def arm_crash(self, node: int, marker: bytes) -> None:
        """From now on, ``node`` loses power in the middle of the first sync that would make
        a record holding ``marker`` durable (``power_cuts=True`` only)."""
        assert self.power_cuts
        self.crash_arm(node).write_bytes(marker)

    def power_loss(self, node: int) -> list[Truncation]:
        """Cut ``node``'s power: SIGKILL (if it still runs), then every byte it wrote and
        had not synced is lost (``power_cuts=True`` only). The crash point is disarmed."""
        assert self.power_cuts
        if self.procs[node].poll() is None:
            self.kill(node)
        self.crash_arm(node).unlink(missing_ok=True)
        return power_loss(self.data_dir(node), self.marks(node), _LosesEverythingUnsynced())

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[node]
        proc.send_signal(sig)
        proc.wait(30)

    def client(self, **kwargs: Any) -> Client:
        """A client of this cluster (CURVE with the admin key unless ``insecure``)."""
        return Client(self.cluster, insecure=self.insecure, **kwargs)

    def leader(self, exclude: int = 0, deadline_s: float = 60.0) -> int:
        with self.client() as client:
            def probe() -> int | None:
                leader = client.leader(timeout=0.3)
                return leader if leader not in (None, exclude) else None

            return wait_for("a leader", probe, deadline_s)

    def order(self, node: int, count: int, deadline_s: float = 120.0) -> list[Command]:
        """The first ``count`` commands ``node`` delivered, read through its stream."""
        out: list[Command] = []
        deadline = time.monotonic() + deadline_s
        with self.client() as client:
            for delivery in client.subscribe(1, node=node, idle_timeout=5):
                assert delivery.index == len(out) + 1
                out.append(delivery.command)
                if len(out) >= count or time.monotonic() > deadline:
                    break
        return out

    def alive(self, node: int) -> bool:
        return self.procs[node].poll() is None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set size (``VmRSS``) or its peak (``VmHWM``), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")
