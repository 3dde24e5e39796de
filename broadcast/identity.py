"""Which cluster and which member a data directory belongs to.

A node's data directory holds its promises and accepted values. Started with
another cluster's directory, a node would vote with that cluster's history;
started with a SPEC that lists fewer members than it was created with, it could
form a "majority" alone and acknowledge writes the real majority overwrites.
So the first start of a node records, in ``identity.json`` next to its log:

* the **cluster id** (given by the operator, read from the SPEC file, or derived
  from the SPEC's members when neither says: see :func:`derive_cluster_id`);
* its **node id** and the **membership** it was started with (ids and addresses);
* the cluster's **payload limit** (the same on every member: it decides what
  enters the log).

Every later start compares what it is given with what was recorded and
refuses any difference with a one-line :class:`~broadcast.spec.ConfigError`.
The file is written atomically (temporary file, fsync, rename, fsync of the
directory) *before* the log is created, so a directory with a log always has
its identity. A directory that has a log but no identity (written by an older
version, or tampered with) is refused as well: nothing says where it is from.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadcast.spec import Cluster, ConfigError
from broadcast.wal import HEADER_SIZE

IDENTITY_FILE = "identity.json"
#: Version of the identity file's layout.
IDENTITY_FORMAT = 1


def derive_cluster_id(cluster: Cluster) -> str:
    """The cluster id a SPEC implies when nobody chose one: a digest of its members.

    Two clusters with different members never share it. Two clusters started
    from the *same* SPEC do; give them ids of their own (``--cluster-id``, or
    ``cluster_id`` in a SPEC file as ``paxos cluster up`` writes) to tell them apart.
    """
    text = ",".join(f"{i}={cluster.nodes[i]}" for i in cluster.starting_ids)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cluster_id_bytes(cluster_id: str) -> bytes:
    """The 16 bytes that stand for ``cluster_id`` on the wire."""
    try:
        raw = bytes.fromhex(cluster_id)
    except ValueError:
        raw = b""
    if len(raw) == 16:
        return raw
    return hashlib.blake2b(cluster_id.encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Identity:
    """What a data directory records about the node that owns it."""

    cluster_id: str
    node_id: int
    members: dict[int, str]
    max_payload_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": IDENTITY_FORMAT,
            "cluster_id": self.cluster_id,
            "node_id": self.node_id,
            "members": {str(i): a for i, a in sorted(self.members.items())},
            "max_payload_bytes": self.max_payload_bytes,
        }

    @classmethod
    def from_json(cls, data: object, where: Path) -> Identity:
        try:
            assert isinstance(data, dict) and data.get("format") == IDENTITY_FORMAT
            cluster_id = data["cluster_id"]
            node_id = data["node_id"]
            members = {int(k): v for k, v in data["members"].items()}
            max_payload = data["max_payload_bytes"]
            assert isinstance(cluster_id, str) and cluster_id
            # (a node added later is not one of the starting members)
            assert type(node_id) is int and node_id > 0
            assert all(isinstance(v, str) for v in members.values())
            assert type(max_payload) is int and max_payload > 0
        except (AssertionError, KeyError, AttributeError, TypeError, ValueError):
            raise ConfigError(f"{where} is damaged or not an identity file") from None
        return cls(cluster_id, node_id, members, max_payload)


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either nothing or all of it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _has_log(wal_dir: Path) -> bool:
    """Whether ``wal_dir`` holds any record (a header-only first segment holds none)."""
    if not wal_dir.is_dir():
        return False
    names = {p.name for p in wal_dir.iterdir()}
    if "FLOOR" in names or any(wal_dir.parent.glob("snapshots/snap-*.snap")):
        return True  # compacted: its history is in a snapshot
    segments = sorted(p for p in wal_dir.iterdir() if p.name.startswith("wal-"))
    return len(segments) > 1 or any(p.stat().st_size > HEADER_SIZE for p in segments)


def establish(
    data_dir: Path,
    node_id: int,
    cluster: Cluster,
    *,
    cluster_id: str | None,
    max_payload_bytes: int | None,
    default_max_payload_bytes: int,
) -> Identity:
    """Check ``data_dir``'s recorded identity against what this start is given, or
    record it on the first start. Raises :class:`ConfigError` (one line) on any
    mismatch. ``cluster_id`` (explicit, or the SPEC file's) and ``max_payload_bytes``
    may be None: then what is recorded holds (on a first start, the SPEC's derived
    id and the default limit)."""
    wanted_id = cluster_id if cluster_id is not None else cluster.cluster_id
    path = data_dir / IDENTITY_FILE
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the node's identity ({exc})") from None
        recorded = Identity.from_json(data, path)
        _check(recorded, node_id, cluster, wanted_id, max_payload_bytes, path)
        return recorded
    if _has_log(data_dir / "wal"):
        raise ConfigError(
            f"{data_dir} holds a log but no {IDENTITY_FILE}: it was not created by this "
            f"version, or the file was removed; refusing to guess which cluster it is from"
        )
    identity = Identity(
        cluster_id=wanted_id or derive_cluster_id(cluster),
        node_id=node_id,
        members=dict(cluster.starting),
        max_payload_bytes=max_payload_bytes or default_max_payload_bytes,
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, json.dumps(identity.to_json(), indent=2) + "\n")
    return identity


def _check(
    recorded: Identity,
    node_id: int,
    cluster: Cluster,
    cluster_id: str | None,
    max_payload_bytes: int | None,
    path: Path,
) -> None:
    if cluster_id is not None and cluster_id != recorded.cluster_id:
        raise ConfigError(
            f"{path.parent} belongs to cluster {recorded.cluster_id}, not {cluster_id}"
        )
    if node_id != recorded.node_id:
        raise ConfigError(
            f"{path.parent} belongs to node {recorded.node_id} of cluster "
            f"{recorded.cluster_id}, not to node {node_id}"
        )
    if cluster.starting != recorded.members:
        # Safety: every node interprets the log from the same starting membership (a
        # node that counted a majority of fewer members could commit alone what the
        # real majority overwrites), and never votes in another cluster's log.
        given = ",".join(f"{i}={cluster.nodes[i]}" for i in cluster.starting_ids)
        had = ",".join(f"{i}={recorded.members[i]}" for i in sorted(recorded.members))
        raise ConfigError(
            f"{path.parent} was started with the members {had}; this SPEC says {given}"
        )
    if max_payload_bytes is not None and max_payload_bytes != recorded.max_payload_bytes:
        raise ConfigError(
            f"{path.parent} records a payload limit of {recorded.max_payload_bytes} bytes "
            f"for cluster {recorded.cluster_id}; it cannot change to {max_payload_bytes}"
        )
