"""Snapshots: a replica's whole applied state at one slot, as one checksummed blob.

A snapshot at slot ``F`` stands for every slot ``<= F``: once it is durable, the
chosen values and accepted records of those slots are no longer needed (the
log is compacted up to a floor ``<= F``), and a replica whose next needed slot
is at or below a peer's floor installs that peer's snapshot instead of
catching up slot by slot.

What it holds (the blob is msgpack, built and read only here):

* ``slot`` and ``index``: the last applied slot and the last delivered index;
* the replicated session table (:meth:`paxos.multi.sessions.Sessions.export`):
  always, so exactly-once survives compaction even for users without a state
  machine;
* ``app``: the application state machine's own bytes (``b""`` without one),
  opaque here.

* the memberships governing the slots after ``slot`` (format 2; see
  :mod:`paxos.multi.membership`): the ones chosen at or before ``slot``, each with
  the first slot it governs. A format-1 blob predates membership changes: its
  cluster still has the membership it started with.

Cluster identity lives in the node's data directory and is checked before a
snapshot is read.

The checksum (CRC-32 of the blob) travels with every install chunk and is
checked before a received snapshot is installed; snapshot files carry it too.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import msgpack

from paxos.multi.membership import Membership, export_configs, restore_configs
from paxos.multi.sessions import Sessions

#: Bumped when the blob layout changes; a blob of another format is refused.
SNAPSHOT_FORMAT = 2
#: Formats still read (1: before membership changes).
_READABLE = (1, 2)


class SnapshotFormatError(ValueError):
    """A blob that is not a snapshot of this format (corrupt, forged or foreign)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A replica's state after applying every slot ``<= slot`` (``index`` deliveries)."""

    slot: int
    index: int
    crc: int
    blob: bytes

    @property
    def size(self) -> int:
        return len(self.blob)


@dataclass(frozen=True, slots=True)
class SnapshotState:
    """A decoded snapshot: what a replica and its application restore from."""

    slot: int
    index: int
    sessions: Sessions
    app: bytes
    #: (first slot governed, membership), ascending; None: a format-1 snapshot (the
    #: cluster's starting membership governs).
    configs: list[tuple[int, Membership]] | None = None


def build_snapshot(
    slot: int,
    index: int,
    sessions: Sessions,
    app: bytes,
    configs: list[tuple[int, Membership]] | None = None,
) -> Snapshot:
    """The snapshot of a replica that applied every slot ``<= slot``; ``configs``: the
    memberships governing the slots after it."""
    if configs is None:
        blob = msgpack.packb([1, slot, index, sessions.export(), app])
    else:
        blob = msgpack.packb(
            [SNAPSHOT_FORMAT, slot, index, sessions.export(), app, export_configs(configs)]
        )
    return Snapshot(slot, index, zlib.crc32(blob), blob)


def read_snapshot(blob: bytes, max_sessions: int, window: int) -> SnapshotState:
    """Decode a blob :func:`build_snapshot` made. Raises :class:`SnapshotFormatError`."""
    try:
        fmt, slot, index, sessions, app, *rest = msgpack.unpackb(blob, use_list=True, raw=False)
    except Exception as exc:  # msgpack raises several types; all mean "not a snapshot"
        raise SnapshotFormatError(f"not a snapshot: {type(exc).__name__}") from None
    if fmt not in _READABLE or len(rest) != (1 if fmt == 2 else 0):
        raise SnapshotFormatError(f"snapshot format {fmt!r}, expected {SNAPSHOT_FORMAT}")
    configs = None
    if rest:
        try:
            configs = restore_configs(rest[0])
        except ValueError as exc:
            raise SnapshotFormatError(str(exc)) from None
    if type(slot) is not int or type(index) is not int or slot < 0 or index < 0:
        raise SnapshotFormatError("bad snapshot slot or index")
    if not isinstance(app, bytes):
        raise SnapshotFormatError("bad application state")
    try:
        table = Sessions.restore(sessions, max_sessions, window)
    except ValueError as exc:
        raise SnapshotFormatError(str(exc)) from None
    return SnapshotState(slot, index, table, app, configs)


def verify(snapshot: Snapshot) -> bool:
    """Does the blob match its checksum?"""
    return zlib.crc32(snapshot.blob) == snapshot.crc
