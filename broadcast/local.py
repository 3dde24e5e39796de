"""Local node processes: start ``paxos node`` as a child, find free ports on loopback.

Also writes the cluster file of a local cluster, with a CURVE key for every node and an
admin client key (:func:`cluster_file`). Used by ``paxos cluster up`` and ``paxos demo``,
the chaos harness, the benchmarks and the tests; it needs no CLI framework.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from broadcast.keys import ensure_keypair
from broadcast.spec import PERMISSIONS, Cluster, ConfigError, parse_cluster


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
        cluster.argument(),  # the file if there is one: it pins the starting members
        "--data-dir",
        str(data_dir / f"node{node_id}"),
        "--log-level",
        log_level,
        *extra,
    ]
    if node_id not in cluster.starting:
        args.append("--join")  # a member added later (paxos member add)
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


#: The client key ``paxos cluster up`` creates, relative to its data directory.
ADMIN_KEY = Path("keys") / "admin.key"


def cluster_file(data_dir: Path, cluster: Cluster, *, secure: bool = True) -> Cluster:
    """The cluster ``paxos cluster up`` runs in ``data_dir``: on the first run, ``cluster``
    with a fresh random cluster id, written to ``data_dir/cluster.toml``; later, what
    that file says (it must list the same nodes). Bootstrapping creates the id; every
    node records it, so a node can never be started on another cluster's directory.

    With ``secure`` the file also names a CURVE key for every node (its key file is
    ``data_dir/node<i>/node.key``, created here) and an ``admin`` client key allowed to
    do everything (``data_dir/keys/admin.key``); a file written without keys gets them."""
    path = data_dir / "cluster.toml"
    if path.exists():
        recorded = parse_cluster(str(path))
        if recorded.starting != cluster.nodes:
            raise ConfigError(
                f"{data_dir} holds the cluster {recorded.spec()} (see {path}); use another "
                f"--data-dir for {cluster.spec()}"
            )
        if recorded.secure or not secure:
            return recorded
        cluster_id = recorded.cluster_id or uuid.uuid4().hex
    else:
        cluster_id = uuid.uuid4().hex
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f'cluster_id = "{cluster_id}"',
        "# The nodes the cluster started with (members added later join through the log).",
        f"genesis = {json.dumps(list(cluster.ids))}",
        "",
    ]
    if not secure:
        lines += ["[nodes]"] + [f'{i} = "{cluster.nodes[i]}"' for i in cluster.ids]
    else:
        for i in cluster.ids:
            keypair = ensure_keypair(data_dir / f"node{i}" / "node.key")
            lines += [
                f"[nodes.{i}]",
                f'address = "{cluster.nodes[i]}"',
                f'key = "{keypair.public_text}"',
                "",
            ]
        admin = ensure_keypair(data_dir / ADMIN_KEY)
        lines += [
            "[client]",
            "# The key paxos broadcast/subscribe/status use with this file.",
            f'key_file = "{ADMIN_KEY.as_posix()}"',
            "",
            "# Clients allowed in: a key, the session names it may use, what it may do.",
            "[clients.admin]",
            f'key = "{admin.public_text}"',
            'ids = ["*"]',
            f"allow = {json.dumps(list(PERMISSIONS))}",
        ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return parse_cluster(str(path))
