"""Local node processes: start ``paxos node`` as a child, find free ports on loopback.

Used by ``paxos cluster up`` and ``paxos demo``, the chaos harness, the benchmarks and
the tests; it depends on nothing but the standard library and the cluster SPEC, so
none of them needs the CLI framework for it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from broadcast.spec import Cluster, ConfigError


def spawn_node(
    node_id: int,
    cluster: Cluster,
    data_dir: Path,
    *,
    fsync: bool = True,
    log_level: str = "info",
    log_file: Path | None = None,
    extra: tuple[str, ...] = (),
    insecure: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``paxos node`` as a child process (its stderr to ``log_file`` if given).

    The node speaks CURVE with the key in its data directory (``node.key``), unless
    ``insecure``; a cluster without keys can only run insecure."""
    if not insecure and not cluster.secure:
        raise ConfigError("the cluster names no CURVE keys: write a cluster file with keys")
    args = [
        sys.executable,
        "-m",
        "broadcast",
        "node",
        "--id",
        str(node_id),
        "--cluster",
        cluster.spec() if insecure else cluster.argument(),
        "--data-dir",
        str(data_dir / f"node{node_id}"),
        "--log-level",
        log_level,
        *extra,
    ]
    if not fsync:
        args.append("--no-fsync")
    if insecure:
        args.append("--insecure")
    if cluster.cluster_id is not None:
        args += ["--cluster-id", cluster.cluster_id]
    stderr: Any = None
    if log_file is not None:
        stderr = open(log_file, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=stderr)


def free_base_port(nodes: int, start: int = 17000, stop: int = 60000) -> int:
    """A base port such that base+1 .. base+nodes are free on 127.0.0.1 right now."""
    pid_offset = (os.getpid() * 37) % 20000
    for base in range(start + pid_offset, stop, nodes + 1):
        ok = True
        for port in range(base + 1, base + nodes + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise ConfigError("no free ports on 127.0.0.1")
