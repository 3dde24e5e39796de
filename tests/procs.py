"""Real node processes on loopback, for integration tests."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from broadcast.client import Client
from broadcast.local import free_base_port, spawn_node
from broadcast.spec import Cluster, local_cluster
from paxos.types import Command

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


class ProcessCluster:
    """``n`` separate ``paxos node`` processes with data and logs under ``tmp``."""

    def __init__(
        self,
        tmp: Path,
        n: int = 3,
        fsync: bool = True,
        host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.tmp = tmp
        self.fsync = fsync
        self.extra = extra
        self.cluster: Cluster = local_cluster(n, free_base_port(n), host)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for node in self.cluster.ids:
            self.start(node)

    def log_file(self, node: int) -> Path:
        return self.tmp / f"node{node}.log"

    def data_dir(self, node: int) -> Path:
        return self.tmp / f"node{node}"

    def start(self, node: int) -> None:
        self.procs[node] = spawn_node(
            node,
            self.cluster,
            self.tmp,
            fsync=self.fsync,
            log_file=self.log_file(node),
            extra=self.extra,
        )

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[node]
        proc.send_signal(sig)
        proc.wait(30)

    def leader(self, exclude: int = 0, deadline_s: float = 60.0) -> int:
        with Client(self.cluster) as client:
            def probe() -> int | None:
                leader = client.leader(timeout=0.3)
                return leader if leader not in (None, exclude) else None

            return wait_for("a leader", probe, deadline_s)

    def order(self, node: int, count: int, deadline_s: float = 120.0) -> list[Command]:
        """The first ``count`` commands ``node`` delivered, read through its stream."""
        out: list[Command] = []
        deadline = time.monotonic() + deadline_s
        with Client(self.cluster) as client:
            for delivery in client.subscribe(1, node=node, idle_timeout=5):
                assert delivery.index == len(out) + 1
                out.append(delivery.command)
                if len(out) >= count or time.monotonic() > deadline:
                    break
        return out

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
