"""Durable write-ahead log: append-only segment files of CRC-framed, opaque records.

The node persists each :class:`~paxos.multi.ready.Ready`'s records here and
calls :meth:`WriteAheadLog.sync` before it sends the Ready's messages. The log
does not know what a record means; it stores ``bytes`` and gives them back, in
write order, when the node restarts.

On-disk format (all integers little-endian)::

    <directory>/wal-00000001.log, wal-00000002.log, ...   numbered from 1, no gaps
    <directory>/FLOOR        only once compacted: the segments run from FLOOR on, no gaps
    segment = header, record*
    header  = magic b"PAXOSWAL" | format version u32 | segment number u32   (16 bytes)
    record  = payload length u32 | CRC-32 u32 | payload
              the CRC (zlib.crc32) covers the 4 length bytes, then the payload,
              so a zero-filled region never reads as a valid record
    FLOOR   = magic b"PAXOSFLR" | format version u32 | floor u32 | CRC-32 u32   (20 bytes)
              the CRC covers the 16 bytes before it

A batch passed to one :meth:`~WriteAheadLog.append` goes to disk with one
``os.write`` and never straddles two segments. A new segment is started when
the batch would take the current one past ``segment_bytes`` (a single batch
larger than that gets a segment of its own, oversized).

Recovery (:meth:`WriteAheadLog.open`) reads every segment and distinguishes two
kinds of damage:

* a **torn tail** -- the last record of the last segment is incomplete or fails
  its CRC and no valid record follows it -- is what a crash during an unsynced
  write leaves behind. The segment is truncated after the last good record (and
  the truncation logged); those records were never acknowledged as durable.
* anything else -- a bad record followed by valid ones, any bad record in an
  earlier segment, a bad segment header, a missing segment -- means data that
  *was* synced has been damaged. That raises :class:`WalCorruptionError`:
  silently dropping a synced promise or accept could break Paxos safety, so a
  person has to look.

A last segment that holds nothing but a partial (or zero-filled) header is a
crash in the middle of starting a segment; its header is rewritten.

Compaction (:meth:`WriteAheadLog.compact`) deletes the segments numbered below
a *floor* once their records are covered by something else (a snapshot made
durable *before* the call). It first replaces ``FLOOR`` atomically (temporary
file ``FLOOR.tmp``, fsync, rename, fsync of the directory), then unlinks the
old segments in ascending order, then fsyncs the directory. Recovery deletes
any segment still below the floor (a crash after the rename) and a leftover
``FLOOR.tmp``, and from the floor on applies the rules above: the floor
segment must exist and no segment after it may be missing. A damaged
``FLOOR`` raises :class:`WalCorruptionError`.

The log is single-threaded and single-process: a directory is ``flock``-ed
while open, and a second :meth:`~WriteAheadLog.open` of it fails.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, NoReturn

from broadcast.logs import get_logger

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FLOOR_FILE",
    "FORMAT_VERSION",
    "FRAME_OVERHEAD",
    "HEADER_SIZE",
    "MAGIC",
    "WalCorruptionError",
    "WalError",
    "WalStats",
    "WriteAheadLog",
    "fsync_dir",
    "segment_name",
]

MAGIC: Final = b"PAXOSWAL"
FORMAT_VERSION: Final = 1
FLOOR_FILE: Final = "FLOOR"
_FLOOR_TMP: Final = FLOOR_FILE + ".tmp"
_FLOOR_MAGIC: Final = b"PAXOSFLR"
DEFAULT_SEGMENT_BYTES: Final = 64 * 1024 * 1024

_HEADER: Final = struct.Struct("<8sII")  # magic, format version, segment number
_FRAME: Final = struct.Struct("<II")  # payload length, CRC-32 over length bytes + payload
_LENGTH: Final = struct.Struct("<I")
_FLOOR_BODY: Final = struct.Struct("<8sII")  # magic, format version, floor
_FLOOR: Final = struct.Struct("<8sIII")  # the body, then the CRC-32 of the body
HEADER_SIZE: Final = _HEADER.size
FRAME_OVERHEAD: Final = _FRAME.size
_MAX_RECORD_BYTES: Final = 0xFFFF_FFFF

_SEGMENT_RE: Final = re.compile(r"wal-(\d{8})\.log")
_NONZERO_RE: Final = re.compile(rb"[^\x00]")

_log = get_logger(__name__)


class WalError(Exception):
    """The log cannot be used: it is closed, locked by someone else, or an I/O call failed."""


class WalCorruptionError(WalError):
    """Synced data on disk is damaged; ``path`` and byte ``offset`` say where."""

    def __init__(self, path: str, offset: int, detail: str) -> None:
        super().__init__(f"{path}: corrupt at byte offset {offset}: {detail}")
        self.path = path
        self.offset = offset


@dataclass(frozen=True, slots=True)
class WalStats:
    """Counters since :meth:`WriteAheadLog.open`, for metrics."""

    records_appended: int
    bytes_appended: int  # framed bytes written, overhead included
    syncs: int  # times everything appended so far was made durable (sync() and rollovers)
    records_since_sync: int
    bytes_since_sync: int
    segment: int  # number of the segment being appended to
    recovered_records: int
    truncated_bytes: int  # torn tail dropped at open


def segment_name(number: int) -> str:
    """File name of segment ``number`` (1-based)."""
    return f"wal-{number:08d}.log"


def _header(number: int) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT_VERSION, number)


class WriteAheadLog:
    """An open log. Create it with :meth:`open`; not thread-safe.

    Typical use, once per Ready::

        wal.append([encode(r) for r in ready.records])
        wal.sync()          # group commit: one fdatasync for the whole batch
        send(ready.messages)

    Any I/O error while appending or syncing poisons the log: that call and
    every later one raise :class:`WalError`. The owner should stop and
    restart from :meth:`open`, which re-reads what actually reached the disk.
    """

    def __init__(
        self,
        directory: str,
        dir_fd: int,
        fd: int,
        segment: int,
        size: int,
        *,
        fsync: bool,
        segment_bytes: int,
        recovered_records: int,
        truncated_bytes: int,
        floor: int,
        recovered_segments: list[tuple[int, int]],
    ) -> None:
        """Internal: use :meth:`open`."""
        self._directory = directory
        self._dir_fd = dir_fd
        self._fd = fd
        self._segment = segment
        self._path = os.path.join(directory, segment_name(segment))
        self._size = size  # bytes in the current segment, header included
        self._synced_size = size  # prefix of the current segment covered by the last sync
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._closed = False
        self._failure: OSError | None = None
        self._records_appended = 0
        self._bytes_appended = 0
        #: Segment rolls put off because no file could be opened (see _roll).
        self.rolls_deferred = 0
        self._syncs = 0
        self._records_since_sync = 0
        self._recovered_records = recovered_records
        self._truncated_bytes = truncated_bytes
        # Segments numbered below it were deleted on purpose; recovery and compact()
        # keep it the lowest segment on disk.
        self._floor = floor
        #: ``(segment number, records recovered from it)`` for every segment read at
        #: :meth:`open`, ascending; the counts add up to the records it returned, in order.
        self.recovered_segments = recovered_segments

    # ------------------------------------------------------------------ open

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> tuple[WriteAheadLog, list[bytes]]:
        """Open (creating if needed) the log in ``directory`` and recover it.

        Returns the log, positioned to append after the last good record, and
        every record in write order. ``fsync=False`` skips all sync system
        calls (benchmarks only: nothing is crash-safe then).

        Raises :class:`WalCorruptionError` if synced data is damaged,
        :class:`WalError` if another open log holds the directory, and
        ``OSError`` if the directory cannot be read or written.
        """
        if segment_bytes <= HEADER_SIZE:
            raise ValueError(f"segment_bytes must exceed the {HEADER_SIZE}-byte header")
        path = os.fspath(directory)
        if not os.path.isdir(path):
            os.makedirs(path)
            if fsync:
                fsync_dir(os.path.dirname(os.path.abspath(path)))
        dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                # Safety: two writers interleaving frames in one log would corrupt it.
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WalError(f"{path}: already opened by another WriteAheadLog") from None
            if not fsync:
                _log.warning(
                    "WAL FSYNC DISABLED: records are NOT durable, a crash can lose "
                    "acknowledged promises and accepts. Use only for benchmarks.",
                    directory=path,
                )
            found = _recover(path, dir_fd, fsync)
        except BaseException:
            os.close(dir_fd)
            raise
        wal = cls(
            path,
            dir_fd,
            found.fd,
            found.segment,
            found.size,
            fsync=fsync,
            segment_bytes=segment_bytes,
            recovered_records=len(found.records),
            truncated_bytes=found.truncated,
            floor=found.floor,
            recovered_segments=found.per_segment,
        )
        return wal, found.records

    # ---------------------------------------------------------------- writing

    def append(self, records: Sequence[bytes]) -> None:
        """Write ``records`` (in order) to the log with one system call.

        They reach the OS at once but are durable only after :meth:`sync`.
        A record that is not bytes-like raises ``TypeError`` and nothing of
        the batch is written.
        """
        self._check_usable()
        if not records:
            return
        parts: list[bytes] = []
        add = parts.append
        pack_frame = _FRAME.pack
        pack_length = _LENGTH.pack
        crc32 = zlib.crc32
        for record in records:
            length = len(record)
            if length > _MAX_RECORD_BYTES:
                raise ValueError(f"record of {length} bytes exceeds the u32 length field")
            add(pack_frame(length, crc32(record, crc32(pack_length(length)))))
            add(record)
        batch = b"".join(parts)
        if self._size > HEADER_SIZE and self._size + len(batch) > self._segment_bytes:
            self._roll()
        self._write(batch)
        self._size += len(batch)
        self._records_appended += len(records)
        self._records_since_sync += len(records)
        self._bytes_appended += len(batch)

    def sync(self) -> None:
        """Make every record appended so far durable (one ``fdatasync``; a no-op if none is new)."""
        self._check_usable()
        if self._synced_size == self._size:
            return
        if self._fsync:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                # Safety: after a failed fdatasync the kernel may have dropped the dirty
                # pages, and a retry could then "succeed" without them ever reaching the
                # disk. Never retry: poison the log so the owner restarts and re-reads it.
                self._fail(exc)
        self._synced_size = self._size
        self._records_since_sync = 0
        self._syncs += 1

    def compact(self, keep_from: int) -> int:
        """Delete every segment numbered below ``keep_from``; return how many were deleted.

        The caller must first have made whatever replaces their records (a
        snapshot) durable: from this call on they are gone. ``keep_from`` at
        or below :attr:`floor` is a no-op; above :attr:`current_segment` it
        raises ``ValueError`` (the segment being appended to is never deleted).
        An I/O error poisons the log like one in :meth:`append`.
        """
        self._check_usable()
        if keep_from <= self._floor:
            return 0
        if keep_from > self._segment:
            # Safety: the active segment is where the next appends go; deleting it
            # would lose them, and a floor above the last segment leaves recovery
            # with no segment to start from (reported as lost).
            raise ValueError(f"keep_from {keep_from} is beyond the current segment {self._segment}")
        try:
            # Safety: FLOOR is durable before the first unlink. A crash after an unlink
            # without it would leave a log that does not start at 1 (or at the old
            # floor), which recovery must report as lost segments.
            _write_floor(self._directory, self._dir_fd, keep_from, self._fsync)
            old_floor, self._floor = self._floor, keep_from
            deleted = 0
            # Ascending, so that whatever a crash leaves below the floor is again a
            # contiguous run (recovery deletes it either way).
            for number in range(old_floor, keep_from):
                try:
                    os.unlink(os.path.join(self._directory, segment_name(number)))
                except FileNotFoundError:
                    continue
                deleted += 1
            if self._fsync:
                os.fsync(self._dir_fd)  # makes the unlinks durable (they are redone if lost)
        except OSError as exc:
            self._fail(exc)
        _log.info("wal compacted", directory=self._directory, floor=keep_from, deleted=deleted)
        return deleted

    def close(self) -> None:
        """Close the files and release the directory lock. Does NOT sync; idempotent."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        os.close(self._dir_fd)  # releases the flock

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------- inspection

    @property
    def current_segment(self) -> int:
        """Number of the segment being appended to.

        A batch never straddles two segments, so right after :meth:`append` it
        is the one that batch went to; the next batch goes to it too unless it
        would overflow it (then to the next one).
        """
        return self._segment

    @property
    def first_segment(self) -> int:
        """Lowest segment number on disk (always :attr:`floor`: nothing below it is kept)."""
        return self._floor

    @property
    def floor(self) -> int:
        """Segments numbered below it were deleted by :meth:`compact` (1 if never compacted)."""
        return self._floor

    @property
    def records_since_sync(self) -> int:
        """Records appended but not yet covered by a sync."""
        return self._records_since_sync

    def disk_bytes(self) -> int:
        """Bytes the log's segment files take on disk now."""
        total = 0
        with os.scandir(self._directory) as entries:
            for entry in entries:
                if _SEGMENT_RE.fullmatch(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    @property
    def stats(self) -> WalStats:
        """A snapshot of the counters."""
        return WalStats(
            records_appended=self._records_appended,
            bytes_appended=self._bytes_appended,
            syncs=self._syncs,
            records_since_sync=self._records_since_sync,
            bytes_since_sync=self._size - self._synced_size,
            segment=self._segment,
            recovered_records=self._recovered_records,
            truncated_bytes=self._truncated_bytes,
        )

    def durable_position(self) -> tuple[str, int]:
        """``(segment path, offset)``: everything before it is durable, nothing after is.

        Earlier segments are always complete and durable and later ones do not
        exist, so a fault harness simulates power loss by closing the log and
        truncating this file to this offset. With ``fsync=False`` it is where
        the data *would* be durable.
        """
        return self._path, self._synced_size

    # -------------------------------------------------------------- internals

    def _check_usable(self) -> None:
        if self._closed:
            raise WalError(f"{self._directory}: the log is closed")
        if self._failure is not None:
            raise WalError(f"{self._directory}: an earlier I/O error poisoned the log") from (
                self._failure
            )

    def _fail(self, exc: OSError) -> NoReturn:
        self._failure = exc
        raise WalError(f"{self._path}: I/O error, the log is now unusable: {exc}") from exc

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            # A partial batch may sit in the file; appending after it would turn a
            # torn tail into mid-log corruption. Stop here; recovery truncates it.
            self._fail(exc)

    def _roll(self) -> None:
        """Finish the current segment and start the next one."""
        # Safety: make the old segment durable before the next one can exist on disk,
        # so that after a crash a torn tail can only be in the last segment.
        self.sync()
        number = self._segment + 1
        path = os.path.join(self._directory, segment_name(number))
        try:
            fd = _create_segment(path, number, self._dir_fd, self._fsync)
        except OSError as exc:
            if out_of_descriptors(exc, path):
                # The current segment, synced above, takes this batch too, and the next
                # append tries to roll again: the node goes on.
                self.rolls_deferred += 1
                _log.warning(
                    "wal.roll_deferred",
                    path=self._path,
                    reason=str(exc),
                    deferred_total=self.rolls_deferred,
                )
                return
            self._fail(exc)
        os.close(self._fd)
        self._fd = fd
        self._segment = number
        self._path = path
        self._size = self._synced_size = HEADER_SIZE


# ---------------------------------------------------------------- file helpers


def out_of_descriptors(exc: OSError, path: str | os.PathLike[str]) -> bool:
    """Whether creating ``path`` failed only because the process (or the system) has no
    file descriptor left, and nothing was created: then nothing is torn or lost, and the
    caller may go on without the file and try again later (a flood of connections can
    use every descriptor for a while; that is not a disk failure)."""
    return exc.errno in (errno.EMFILE, errno.ENFILE) and not os.path.lexists(path)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a directory's entries (creations, renames, unlinks in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_segment(path: str, number: int, dir_fd: int, fsync: bool) -> int:
    """Create segment ``number`` with its header, durable (file and directory entry)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, _header(number))
        if fsync:
            # Safety: the header is durable before any record follows it, so a crash
            # can leave at worst a header-only stub, which recovery repairs.
            os.fdatasync(fd)
            os.fsync(dir_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_floor(directory: str, dir_fd: int, floor: int, fsync: bool) -> None:
    """Replace ``<directory>/FLOOR`` with ``floor``, atomically and durably."""
    body = _FLOOR_BODY.pack(_FLOOR_MAGIC, FORMAT_VERSION, floor)
    data = body + _LENGTH.pack(zlib.crc32(body))
    tmp = os.path.join(directory, _FLOOR_TMP)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            # Safety: the contents are durable before the name points at them, so a
            # crash leaves the old FLOOR or the new one, never an empty or torn one.
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(directory, FLOOR_FILE))
    if fsync:
        # Safety: the rename itself is durable before any segment is unlinked.
        os.fsync(dir_fd)


def _read_floor(directory: str) -> int | None:
    """The floor recorded in ``<directory>/FLOOR``, or None if there is no such file."""
    path = os.path.join(directory, FLOOR_FILE)
    try:
        data = _read_file(path)
    except FileNotFoundError:
        return None
    if len(data) != _FLOOR.size:
        raise WalCorruptionError(path, 0, f"FLOOR file has {len(data)} bytes, not {_FLOOR.size}")
    magic, version, floor, stored = _FLOOR.unpack(data)
    if zlib.crc32(data[: _FLOOR_BODY.size]) != stored:
        raise WalCorruptionError(path, _FLOOR_BODY.size, "FLOOR file fails its CRC")
    if magic != _FLOOR_MAGIC:
        raise WalCorruptionError(path, 0, f"bad FLOOR magic {magic!r}")
    if version != FORMAT_VERSION:
        raise WalCorruptionError(path, 8, f"unsupported FLOOR format version {version}")
    if floor < 1:
        raise WalCorruptionError(path, 12, f"FLOOR holds segment number {floor}")
    return int(floor)


def _read_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


# -------------------------------------------------------------------- recovery


@dataclass(slots=True)
class _Recovered:
    records: list[bytes]
    per_segment: list[tuple[int, int]]  # (segment number, records from it), ascending
    floor: int
    segment: int  # the last segment, open for appending as fd
    fd: int
    size: int
    truncated: int


def _recover(directory: str, dir_fd: int, fsync: bool) -> _Recovered:
    """Read and check every segment from the floor on; open the last one for appending."""
    tmp = os.path.join(directory, _FLOOR_TMP)
    if os.path.exists(tmp):
        os.unlink(tmp)  # a compaction that crashed before its rename: the old FLOOR holds
    recorded_floor = _read_floor(directory)
    floor = 1 if recorded_floor is None else recorded_floor
    numbers = sorted(
        int(match.group(1))
        for name in os.listdir(directory)
        if (match := _SEGMENT_RE.fullmatch(name)) is not None
    )
    below = [number for number in numbers if number < floor]
    if below:
        # A compaction crashed after writing FLOOR: finish its unlinks (in ascending
        # order, as it does). They hold nothing still needed, so none is returned.
        for number in below:
            os.unlink(os.path.join(directory, segment_name(number)))
        if fsync:
            os.fsync(dir_fd)
        _log.warning("wal segments below the floor deleted", floor=floor, segments=below)
        numbers = numbers[len(below) :]
    if not numbers and recorded_floor is None:
        path = os.path.join(directory, segment_name(1))
        fd = _create_segment(path, 1, dir_fd, fsync)
        return _Recovered([], [(1, 0)], 1, 1, fd, HEADER_SIZE, 0)
    # Safety: a missing segment (even the first, or the floor segment, which compact()
    # never deletes) means lost synced records.
    if not numbers:
        missing = os.path.join(directory, segment_name(floor))
        raise WalCorruptionError(missing, 0, "segment file is missing (found no segment)")
    for expected, number in enumerate(numbers, start=floor):
        if number != expected:
            missing = os.path.join(directory, segment_name(expected))
            raise WalCorruptionError(
                missing, 0, f"segment file is missing (found {segment_name(number)} instead)"
            )

    records: list[bytes] = []
    per_segment: list[tuple[int, int]] = []
    for number in numbers[:-1]:
        path = os.path.join(directory, segment_name(number))
        data = _read_file(path)
        _check_header(path, data, number)
        before = len(records)
        end, problem = _parse_records(data, records)
        if problem is not None:
            # Safety: earlier segments were synced in full before the next was created.
            raise WalCorruptionError(path, end, f"{problem} (in a segment that is not the last)")
        per_segment.append((number, len(records) - before))

    last = numbers[-1]
    path = os.path.join(directory, segment_name(last))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        before = len(records)
        size, truncated = _recover_last_segment(path, fd, last, fsync, records)
        per_segment.append((last, len(records) - before))
    except BaseException:
        os.close(fd)
        raise
    return _Recovered(records, per_segment, floor, last, fd, size, truncated)


def _recover_last_segment(
    path: str, fd: int, number: int, fsync: bool, records: list[bytes]
) -> tuple[int, int]:
    """Check the segment being appended to, cutting a torn tail; return (size, bytes cut)."""
    data = _read_file(path)
    expected = _header(number)
    if (
        len(data) <= HEADER_SIZE
        and data != expected
        and (expected.startswith(data) or not data.strip(b"\x00"))
    ):
        # A crash while the segment was being created: no record can follow.
        os.ftruncate(fd, 0)
        os.write(fd, expected)
        if fsync:
            os.fdatasync(fd)
        _log.warning("wal segment header rewritten", path=path, found_bytes=len(data))
        return HEADER_SIZE, 0
    _check_header(path, data, number)
    end, problem = _parse_records(data, records)
    if problem is None:
        return end, 0
    follower = _find_valid_record(data, end + 1)
    if follower is not None:
        # Safety: a bad record with good ones after it is damage to synced data, not a
        # crash mid-write; cutting here would silently drop acknowledged records.
        raise WalCorruptionError(
            path, end, f"{problem}, yet a valid record follows at byte offset {follower}"
        )
    os.ftruncate(fd, end)
    if fsync:
        os.fdatasync(fd)
    _log.warning(
        "wal torn tail truncated",
        path=path,
        offset=end,
        dropped_bytes=len(data) - end,
        reason=problem,
    )
    return end, len(data) - end


def _check_header(path: str, data: bytes, number: int) -> None:
    if len(data) < HEADER_SIZE:
        raise WalCorruptionError(path, 0, f"segment header truncated ({len(data)} bytes)")
    magic, version, stored_number = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WalCorruptionError(path, 0, f"bad segment magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise WalCorruptionError(path, 8, f"unsupported format version {version}")
    if stored_number != number:
        raise WalCorruptionError(
            path, 12, f"header says segment {stored_number}, name says {number}"
        )


def _stored_crc_matches(view: memoryview, pos: int, stop: int, stored: int) -> bool:
    """Whether the frame at ``pos`` (ending at ``stop``) carries the CRC of its length + payload."""
    return zlib.crc32(view[pos + FRAME_OVERHEAD : stop], zlib.crc32(view[pos : pos + 4])) == stored


def _parse_records(data: bytes, out: list[bytes]) -> tuple[int, str | None]:
    """Append ``data``'s valid records to ``out``.

    Returns the offset just past the last valid record and, if parsing stopped
    before the end of ``data``, why.
    """
    view = memoryview(data)
    unpack = _FRAME.unpack_from
    end = len(data)
    pos = HEADER_SIZE
    while pos < end:
        if end - pos < FRAME_OVERHEAD:
            return pos, f"incomplete record frame ({end - pos} of {FRAME_OVERHEAD} bytes)"
        length, stored = unpack(data, pos)
        stop = pos + FRAME_OVERHEAD + length
        if stop > end:
            present = end - pos - FRAME_OVERHEAD
            return (
                pos,
                f"record of {length} bytes runs past the end of the file ({present} present)",
            )
        if not _stored_crc_matches(view, pos, stop, stored):
            return pos, f"CRC mismatch (stored CRC {stored:#010x})"
        out.append(data[pos + FRAME_OVERHEAD : stop])
        pos = stop
    return pos, None


def _find_valid_record(data: bytes, start: int) -> int | None:
    """Offset of the first valid record frame at or after ``start``, or None.

    Tries every offset (a damaged length field loses the framing); runs of
    zeros, the usual content of a torn tail, are skipped in one step.
    """
    view = memoryview(data)
    unpack = _FRAME.unpack_from
    end = len(data)
    pos = start
    while pos + FRAME_OVERHEAD <= end:
        length, stored = unpack(data, pos)
        if length == 0 and stored == 0:
            # Eight zero bytes are never a record (the CRC of a zero length is not 0):
            # jump to the last offset whose frame still reaches the next non-zero byte.
            match = _NONZERO_RE.search(data, pos)
            if match is None:
                return None
            pos = max(pos + 1, match.start() - FRAME_OVERHEAD + 1)
            continue
        stop = pos + FRAME_OVERHEAD + length
        if stop <= end and _stored_crc_matches(view, pos, stop, stored):
            return pos
        pos += 1
    return None
