"""Snapshot files: a node's state covering every slot up to some slot, one file each.

The node saves a snapshot, and only once :meth:`SnapshotStore.save` has
returned does it compact the write-ahead log against it
(:meth:`~broadcast.wal.WriteAheadLog.compact`). The store does not know what
a blob means; it stores ``bytes`` with the slot and log index they cover and
gives the newest back, checked, when the node restarts.

On-disk format (all integers little-endian)::

    <directory>/snap-<slot, 20 digits>.snap     at most two: the newest and the one before
    file   = header, blob
    header = magic b"PAXOSSNP" | format version u32 | slot u64 | index u64
             | blob size u64 | blob CRC-32 u32 | header CRC-32 u32          (44 bytes)
             the header CRC (zlib.crc32) covers the 40 bytes before it

A snapshot is written to ``<name>.tmp``, fsynced, renamed to its name and the
directory fsynced, so a crash leaves the complete file or no file of that
name; a leftover ``.tmp`` is removed when a store is opened and never read.
Older files are deleted only after that.

:meth:`SnapshotStore.latest` checks the newest file in full and raises
:class:`SnapshotError` if it is damaged rather than fall back to the one
before: the log may already be compacted against the newest, so the older one
plus the log would silently miss slots. A person has to look.

One store per directory and process. :meth:`~SnapshotStore.save` may run on a
background thread while other threads call :meth:`~SnapshotStore.latest_meta`
and :meth:`~SnapshotStore.disk_bytes`; those wait at most for a rename and a
directory fsync, never for a blob being written.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from broadcast.logs import get_logger
from broadcast.wal import fsync_dir

__all__ = [
    "DEFAULT_SNAPSHOT_BYTES",
    "DEFAULT_SNAPSHOT_ENTRIES",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "SnapshotError",
    "SnapshotFile",
    "SnapshotStore",
    "snapshot_name",
]

MAGIC: Final = b"PAXOSSNP"
FORMAT_VERSION: Final = 1

_FIELDS: Final = struct.Struct("<8sIQQQI")  # magic, version, slot, index, blob size, blob CRC
_CRC: Final = struct.Struct("<I")
HEADER_SIZE: Final = _FIELDS.size + _CRC.size
_U64_LIMIT: Final = 1 << 64
_KEEP: Final = 2  # the newest snapshot and the one before it

_NAME_RE: Final = re.compile(r"snap-(\d{20})\.snap")
_TMP_RE: Final = re.compile(r"snap-\d{20}\.snap\.tmp")

_log = get_logger(__name__)


#: A node snapshots after this many deliveries, or this many bytes of delivered
#: payloads, whichever comes first (``paxos node --snapshot-entries/--snapshot-bytes``).
DEFAULT_SNAPSHOT_ENTRIES = 100_000
DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024

class SnapshotError(Exception):
    """A snapshot file is damaged or unreadable; ``path`` names it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot on disk: the slot and log index it covers, and its blob's size and CRC-32."""

    slot: int
    index: int
    size: int
    crc: int
    path: Path


def snapshot_name(slot: int) -> str:
    """File name of the snapshot that covers every slot up to ``slot``."""
    return f"snap-{slot:020d}.snap"


class SnapshotStore:
    """The snapshot files in one directory."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Open (creating if needed) ``directory``; remove temporary files a crash left.

        ``fsync=False`` skips all sync system calls (benchmarks only).
        """
        self._directory = Path(directory)
        self._fsync = fsync
        # Guards the directory's snapshot files: listing, renaming in, deleting, and
        # opening one to read. Never held while a blob is written or read.
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()  # one save at a time
        if not self._directory.is_dir():
            self._directory.mkdir(parents=True)
            if fsync:
                fsync_dir(self._directory.absolute().parent)
        for entry in os.scandir(self._directory):
            if _TMP_RE.fullmatch(entry.name):
                # A save that crashed before its rename: possibly torn, and never
                # made a snapshot (only renamed files count).
                os.unlink(entry.path)
                _log.warning("snapshot temporary file removed", path=entry.path)

    # ---------------------------------------------------------------- writing

    def save(self, slot: int, index: int, blob: bytes) -> SnapshotFile:
        """Write a snapshot covering every slot up to ``slot``; durable when this returns.

        If a snapshot of ``slot`` or a later one exists, nothing is written
        and the newest snapshot's meta is returned. Otherwise, once the new
        file is durable, all but it and the previous newest are deleted.
        ``OSError`` if writing fails (no file of that name is left then).
        """
        for name, value in (("slot", slot), ("index", index)):
            if not 0 <= value < _U64_LIMIT:
                raise ValueError(f"{name} {value} does not fit the u64 field")
        with self._save_lock:
            with self._lock:
                slots = self._slots()
                if slots and slot <= slots[-1]:
                    return self._read_meta(slots[-1])
            crc = zlib.crc32(blob)
            fields = _FIELDS.pack(MAGIC, FORMAT_VERSION, slot, index, len(blob), crc)
            header = fields + _CRC.pack(zlib.crc32(fields))
            final = self._path(slot)
            tmp = final.with_name(final.name + ".tmp")
            self._write_tmp(tmp, header, blob)
            with self._lock:
                os.replace(tmp, final)
                if self._fsync:
                    # Safety: the new name is durable before an older snapshot is
                    # deleted, and before the caller compacts the log against it.
                    fsync_dir(self._directory)
                # Only now: until the rename is durable the older files are all there is.
                for old in self._slots()[:-_KEEP]:
                    # A lost unlink (no directory fsync here) just leaves a file for
                    # the next save to delete.
                    os.unlink(self._path(old))
            return SnapshotFile(slot, index, len(blob), crc, final)

    def _write_tmp(self, tmp: Path, header: bytes, blob: bytes) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for part in (header, blob):
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
            if self._fsync:
                # Safety: the contents are durable before the name points at them, so
                # a crash cannot leave a named snapshot that is torn or empty.
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)

    # ---------------------------------------------------------------- reading

    def latest(self) -> tuple[SnapshotFile, bytes] | None:
        """The newest snapshot and its blob, checked in full; None if there is none.

        Raises :class:`SnapshotError` if the newest file is damaged (it does
        not fall back to an older one).
        """
        with self._lock:
            slots = self._slots()
            if not slots:
                return None
            path = self._path(slots[-1])
            # Opened under the lock: a concurrent save may delete the file later,
            # but the open file stays readable.
            file = _open(path)
        with file:
            meta = _check_header(path, slots[-1], file)
            blob = file.read(meta.size)
        if len(blob) != meta.size:  # shrank since the header was checked
            raise SnapshotError(path, f"blob truncated ({len(blob)} of {meta.size} bytes)")
        if zlib.crc32(blob) != meta.crc:
            raise SnapshotError(path, f"blob CRC mismatch (header says {meta.crc:#010x})")
        return meta, blob

    def latest_meta(self) -> SnapshotFile | None:
        """The newest snapshot's header, checked, and its length; the blob is not read."""
        with self._lock:
            slots = self._slots()
            if not slots:
                return None
            return self._read_meta(slots[-1])

    def disk_bytes(self) -> int:
        """Bytes in snapshot files (not counting a save's temporary file)."""
        with self._lock:
            return sum(self._path(slot).stat().st_size for slot in self._slots())

    # -------------------------------------------------------------- internals

    def _path(self, slot: int) -> Path:
        return self._directory / snapshot_name(slot)

    def _slots(self) -> list[int]:
        """Slots of the snapshot files present, ascending (caller holds the lock)."""
        return sorted(
            int(match.group(1))
            for name in os.listdir(self._directory)
            if (match := _NAME_RE.fullmatch(name)) is not None
        )

    def _read_meta(self, slot: int) -> SnapshotFile:
        path = self._path(slot)
        with _open(path) as file:
            return _check_header(path, slot, file)


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SnapshotError(path, f"cannot open: {exc}") from exc


def _check_header(path: Path, slot: int, file: BinaryIO) -> SnapshotFile:
    """Read and check the header of ``file`` (named for ``slot``), and the file's length."""
    header = file.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        raise SnapshotError(path, f"header truncated ({len(header)} of {HEADER_SIZE} bytes)")
    magic, version, stored_slot, index, size, crc = _FIELDS.unpack_from(header)
    if magic != MAGIC:
        raise SnapshotError(path, f"bad magic {magic!r}, expected {MAGIC!r}")
    (stored_crc,) = _CRC.unpack_from(header, _FIELDS.size)
    if zlib.crc32(header[: _FIELDS.size]) != stored_crc:
        raise SnapshotError(path, f"header CRC mismatch (stored {stored_crc:#010x})")
    if version != FORMAT_VERSION:
        raise SnapshotError(path, f"unsupported format version {version}")
    if stored_slot != slot:
        raise SnapshotError(path, f"header says slot {stored_slot}, name says {slot}")
    length = os.fstat(file.fileno()).st_size
    if length != HEADER_SIZE + size:
        raise SnapshotError(path, f"file has {length - HEADER_SIZE} blob bytes, header says {size}")
    return SnapshotFile(slot, index, size, crc, path)


