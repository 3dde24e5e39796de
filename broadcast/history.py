"""The node's on-disk record of delivered commands, kept for subscribers (a broker's retention).

A node serves subscribers (:class:`~broadcast.protocol.Fetch`) from here
instead of keeping every delivered command in memory. The history keeps *at
least* a retention -- ``retain_entries`` entries and ``retain_bytes`` payload
bytes -- and deletes whole segments older than that; a fetch below what is
left raises :class:`~broadcast.errors.Compacted`, which names the earliest
index still held.

On-disk format (all integers little-endian)::

    <directory>/hist-<first index, 20 digits>.log, ...   contiguous indexes
    segment = header, record*
    header  = magic b"PAXOSHST" | format version u32 | 0 u32 | first index u64   (24 bytes)
    record  = payload length u32 | CRC-32 u32 | payload
              the CRC (zlib.crc32) covers the 4 length bytes, then the payload
              (the framing of :mod:`broadcast.wal`)
    payload = msgpack [index, client, seq, payload bytes]

Appends are not synced: the history is a convenience for subscribers, not a
vow. A crash may lose its tail; after a restart the node delivers again from
its snapshot (or index 1), and :meth:`History.append` skips what it already
holds and fills in what it lost. :meth:`History.sync` makes everything
appended durable; the node calls it before it writes a snapshot, so that what
it will not deliver again is on disk.

Opening costs about the same whatever the history holds: only the last
segment is read record by record.

* **At open**, the last segment -- the one appended to, the only one that can
  hold unsynced data -- is scanned in full: every record's CRC, decoding and
  index. An earlier segment gets cheap checks only: its header (magic,
  version, the first index its name gives), and its last record, found
  backwards from the end of the file, must pass its CRC, end exactly there and
  hold the index just below the next segment's first. Its entry count comes
  from the names (``next first - first``); no record in between is read. A
  segment that fails a cheap check is scanned in full, as if it were the last.
  Recovery keeps the longest valid, contiguous prefix: the first bad header,
  bad or torn record, or index discontinuity ends it; the segment holding it is
  truncated there and every later segment is deleted.
* **At first read** of an earlier segment (or when :meth:`History.trim` needs
  its payload bytes, see below), it is scanned once, every record checked, to
  build its sparse index. Damage found then is *not* repaired: nothing rewrites
  a segment behind the head (the node delivers again only from its snapshot),
  so the range from the damaged record to the segment's end stays unreadable
  and :meth:`History.read` raises :class:`HistoryError` for it -- for every
  read that reaches it, until retention deletes the segment. Entries before it
  in the segment still read.

Why that is acceptable: the history is not consensus state (the log and the
snapshots are), only what subscribers are served. A damaged old segment costs
reads of that range (the node answers them with nothing and the subscriber
tries another node, see ``Node._reply_fetch``) instead of being found, and cut
away, at start. And with ``fsync=True`` a crash cannot damage an earlier
segment: each is synced before the next one is created. Only the media or
outside hands can; with ``fsync=False`` a power loss too, which the tail check
catches when it cost the segment its end, and only the first read when it cost
a page in the middle.

Retention by payload bytes needs each segment's payload total, which only a
scan gives: until a segment opened lazily is scanned its payload counts as 0,
so :meth:`History.trim` keeps more than the retention, never less; when that
stops it from deleting, it scans one such segment per call (newest first, never
at open) until it can decide. Retention by entries needs no scan.

Memory does not grow with the history: the node keeps a cache of the most
recent entries bounded in bytes (followers of the head never touch the disk),
and per segment a sparse index (the file offset of every
:data:`INDEX_EVERY`-th entry), so a read far back seeks instead of scanning.
Both are bounded by the retention and the cache size.

One writer at a time (the node's loop thread; the directory is ``flock``-ed);
reads may come from other threads (a lock serialises them with appends).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import os
import re
import struct
import threading
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import BinaryIO, Final, NoReturn

import msgpack

from broadcast.errors import Compacted
from broadcast.logs import get_logger
from broadcast.wal import fsync_dir, out_of_descriptors
from paxos.types import Command

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_RETAIN_ENTRIES",
    "DEFAULT_SEGMENT_BYTES",
    "HEADER_SIZE",
    "INDEX_EVERY",
    "History",
    "HistoryError",
    "segment_name",
]

MAGIC: Final = b"PAXOSHST"
FORMAT_VERSION: Final = 1
DEFAULT_SEGMENT_BYTES: Final = 16 * 1024 * 1024
DEFAULT_CACHE_BYTES: Final = 8 * 1024 * 1024
DEFAULT_RETAIN_ENTRIES: Final = 1_000_000
#: The sparse index notes the file offset of every INDEX_EVERY-th entry of a segment.
INDEX_EVERY: Final = 256

_HEADER: Final = struct.Struct("<8sIIQ")  # magic, format version, reserved (0), first index
_FRAME: Final = struct.Struct("<II")  # payload length, CRC-32 over length bytes + payload
_LENGTH: Final = struct.Struct("<I")
HEADER_SIZE: Final = _HEADER.size
_FRAME_SIZE: Final = _FRAME.size
_MAX_RECORD_BYTES: Final = 0xFFFF_FFFF
#: The open-time check of an earlier segment first reads this much of its end.
_PROBE_BYTES: Final = 64 * 1024
#: What one cached entry costs besides its payload and client key (tuple, ints, list slot).
_CACHE_ENTRY_OVERHEAD: Final = 120

_SEGMENT_RE: Final = re.compile(r"hist-(\d{20})\.log")

_log = get_logger(__name__)


class HistoryError(Exception):
    """The history cannot be used: closed, locked by another owner, an I/O error, or a
    record that no longer reads back."""


def segment_name(first_index: int) -> str:
    """File name of the segment whose first entry has index ``first_index``."""
    return f"hist-{first_index:020d}.log"


@dataclass(slots=True)
class _Segment:
    first: int
    path: str
    count: int = 0
    size: int = HEADER_SIZE  # bytes in the file, header included
    payload_bytes: int = 0
    #: offsets[k]: file offset of the entry at index first + k * INDEX_EVERY.
    offsets: array[int] = field(default_factory=lambda: array("q"))
    #: False: opened lazily; offsets empty and payload_bytes 0 until the first scan.
    scanned: bool = True
    #: What that scan found wrong (offsets then cover only the valid prefix).
    damage: str | None = None
    #: A scan for trim failed with an I/O error: trim does not try it again.
    unreadable: bool = False

    @property
    def last(self) -> int:
        return self.first + self.count - 1


def _cost(command: Command) -> int:
    return len(command.payload) + len(command.client) + _CACHE_ENTRY_OVERHEAD


_payload_of = itemgetter(2)


def _encode(index: int, command: Command) -> bytes:
    data: bytes = msgpack.packb(
        (index, command.client, command.seq, command.payload), use_bin_type=True
    )
    return data


def _decode(data: bytes | memoryview) -> tuple[int, Command]:
    """A record's (index, command); ValueError if it is not one."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several kinds for junk
        raise ValueError(f"undecodable record ({type(exc).__name__})") from None
    if type(obj) is not tuple or len(obj) != 4:
        raise ValueError("record is not [index, client, seq, payload]")
    index, client, seq, payload = obj
    if (
        type(index) is not int
        or type(client) is not str
        or type(seq) is not int
        or type(payload) is not bytes
    ):
        raise ValueError("record fields have the wrong types")
    return index, Command(client, seq, payload)


class History:
    """An open history of delivered commands, index -> :class:`~paxos.types.Command`.

    ``retain_entries`` / ``retain_bytes``: :meth:`trim` keeps at least this many
    entries and payload bytes (whole segments of ``segment_bytes`` are deleted,
    so up to one segment more is kept). ``fsync=False`` skips every sync
    (benchmarks and tests). ``cache_bytes`` bounds the in-memory cache of recent
    entries.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retain_entries: int = DEFAULT_RETAIN_ENTRIES,
        retain_bytes: int = 0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if retain_entries < 0 or retain_bytes < 0:
            raise ValueError("retain_entries and retain_bytes must be >= 0")
        if segment_bytes <= HEADER_SIZE:
            raise ValueError(f"segment_bytes must exceed the {HEADER_SIZE}-byte header")
        if cache_bytes < 0:
            raise ValueError("cache_bytes must be >= 0")
        self.directory = os.fspath(directory)
        self.retain_entries = retain_entries
        self.retain_bytes = retain_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.cache_limit = cache_bytes
        self._lock = threading.Lock()
        # One Packer per history, used under the lock (msgpack.packb builds a new one per
        # call: twice as slow on the hot path).
        self._pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack
        self._segments: list[_Segment] = []
        self._fd: int | None = None  # the last segment's, for appending
        self._last = 0
        self._entries = 0  # entries held, over all segments
        self._payload_bytes = 0  # their payload bytes (unscanned segments count 0)
        self._records_scanned = 0
        self._dirty = False  # appended since the last sync
        #: Segment rolls put off because no file could be opened (see _roll).
        self.rolls_deferred = 0
        self._closed = False
        self._failure: OSError | None = None
        # The cache: the most recent entries, contiguous, ending at self._last.
        self._cache: list[Command] = []
        self._cache_head = 0  # entries before it in the list are evicted
        self._cache_first = 1  # index of self._cache[self._cache_head]
        self._cache_bytes = 0

        if not os.path.isdir(self.directory):
            os.makedirs(self.directory)
            if fsync:
                fsync_dir(os.path.dirname(os.path.abspath(self.directory)))
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                # Two writers appending to one segment would interleave their records.
                fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HistoryError(f"{self.directory}: already opened by another History") from None
            self._recover()
            self._cache_first = self._last + 1
            with self._lock:
                # No scan at open: its cost must not grow with the history.
                self._trim(scans=0)
        except BaseException:
            self._close_files()
            raise

    # ------------------------------------------------------------------ inspection

    @property
    def first_index(self) -> int:
        """The earliest index held (``last_index + 1`` when nothing is held)."""
        segments = self._segments
        return segments[0].first if segments else self._last + 1

    @property
    def last_index(self) -> int:
        """The latest index recorded (0 if nothing ever was)."""
        return self._last

    @property
    def entries(self) -> int:
        """How many entries are held."""
        return self._entries

    @property
    def segments(self) -> int:
        """How many segment files hold them."""
        return len(self._segments)

    @property
    def cache_bytes(self) -> int:
        """What the cache of recent entries holds now (payloads, keys and overhead)."""
        return self._cache_bytes

    @property
    def cached_entries(self) -> int:
        return len(self._cache) - self._cache_head

    @property
    def records_scanned(self) -> int:
        """Records read back and checked by scans since this History was opened: the
        open-time scans and tail checks, and the one-time scans of segments opened
        lazily (serving a read from the sparse index is not counted)."""
        return self._records_scanned

    def index_slots(self) -> int:
        """Sparse-index offsets held in memory, over all segments."""
        return sum(len(s.offsets) for s in self._segments)

    def disk_bytes(self) -> int:
        """Bytes of every segment file, headers included."""
        return sum(s.size for s in self._segments)

    # ------------------------------------------------------------------ writing

    def append(self, first_index: int, commands: Sequence[Command]) -> None:
        """Record ``commands`` at indexes ``first_index, first_index + 1, ...``.

        Indexes already held are skipped (after a restart the node delivers
        them again). An index beyond ``last_index + 1`` (the node installed a
        snapshot) restarts the history there: everything older is deleted.
        One write per call, not synced. Raises :class:`HistoryError` on an I/O
        error, after which the history refuses every further append.
        """
        if first_index < 1:
            raise ValueError("indexes start at 1")
        with self._lock:
            self._check_usable()
            if not commands:
                return
            if first_index > self._last + 1:
                # Never a hole: entries must be contiguous for reads to know where
                # index i is, so a history that cannot continue starts over.
                self._restart(first_index)
            # Held entries are the same committed commands (one total order): keep them.
            skip = self._last + 1 - first_index
            if skip >= len(commands):
                return
            fresh = commands[skip:] if skip > 0 else commands
            start = self._last + 1
            # The hot path (every delivery passes here): per command, one C-level pack,
            # two CRC calls and a struct pack; the rest is per batch.
            pack = self._pack
            records = [pack((index, *command)) for index, command in enumerate(fresh, start)]
            lengths = list(map(len, records))
            if max(lengths) > _MAX_RECORD_BYTES:
                raise ValueError(f"a record of {max(lengths)} bytes exceeds the u32 length field")
            crc32 = zlib.crc32
            frame = _FRAME.pack
            length_of = _LENGTH.pack
            parts: list[bytes] = []
            for record, length in zip(records, lengths, strict=True):
                parts.append(frame(length, crc32(record, crc32(length_of(length)))))
                parts.append(record)
            batch = b"".join(parts)
            payload_bytes = sum(map(len, map(_payload_of, fresh)))
            segment = self._segments[-1] if self._segments else None
            if segment is None or (
                segment.count and segment.size + len(batch) > self.segment_bytes
            ):
                segment = self._roll(start)
            offsets = segment.offsets
            # The sparse index: the offset of every INDEX_EVERY-th entry of the segment.
            first_indexed = start + (-(start - segment.first)) % INDEX_EVERY
            if first_indexed < start + len(fresh):
                starts = list(accumulate((_FRAME_SIZE + n for n in lengths), initial=0))
                base = segment.size
                for index in range(first_indexed, start + len(fresh), INDEX_EVERY):
                    offsets.append(base + starts[index - start])
            self._write(batch)
            segment.size += len(batch)
            segment.count += len(fresh)
            segment.payload_bytes += payload_bytes
            self._entries += len(fresh)
            self._payload_bytes += payload_bytes
            self._last += len(fresh)
            self._dirty = True
            self._cache_add(fresh)

    def sync(self) -> None:
        """Make everything appended so far durable (a no-op with ``fsync=False``)."""
        with self._lock:
            self._check_usable()
            if not self._dirty or self._fd is None:
                return
            if self.fsync:
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    # As in the WAL: after a failed fdatasync the kernel may have dropped
                    # the pages, and a retry could "succeed" without them. Never retry.
                    self._fail(exc)
            self._dirty = False

    def trim(self) -> int:
        """Delete the oldest whole segments the retention does not need; how many went.

        Cheap when there is nothing to delete (a few comparisons). With a
        ``retain_bytes`` retention, scans at most one segment opened lazily whose
        payload bytes it needs (see the module docstring).
        """
        with self._lock:
            return self._trim(scans=1)

    def _trim(self, scans: int) -> int:
        if self._closed:
            return 0
        segments = self._segments
        removed = 0
        while len(segments) > 1:  # the segment being appended to is never deleted
            oldest = segments[0]
            # Subscribers are promised the retention: a segment goes only if what
            # remains after it still holds retain_entries entries AND retain_bytes.
            if self._entries - oldest.count < self.retain_entries:
                break
            # _payload_bytes counts unscanned segments as 0: a lower bound, so this
            # keeps more than retain_bytes, never less.
            if self._payload_bytes - oldest.payload_bytes < self.retain_bytes:
                if scans > 0 and self._scan_for_trim():
                    scans -= 1
                    continue
                break
            try:
                self._delete(oldest)
            except OSError as exc:
                # Keeping more than the retention is harmless: try again next time.
                _log.warning("history.trim_failed", path=oldest.path, error=str(exc))
                break
            segments.pop(0)
            self._entries -= oldest.count
            self._payload_bytes -= oldest.payload_bytes
            removed += 1
        if removed:
            self._cache_evict_below(self.first_index)
            _log.debug(
                "history.trimmed",
                directory=self.directory,
                segments=removed,
                first_index=self.first_index,
            )
        return removed

    def _scan_for_trim(self) -> bool:
        """Scan the newest unscanned segment after the oldest (the newest are what a
        byte retention keeps, so the oldest need never be scanned); False if none."""
        for segment in reversed(self._segments[1:]):
            if segment.scanned or segment.unreadable:
                continue
            try:
                self._build_index(segment)
            except OSError as exc:
                # Keeping more than the retention is harmless; reads still try it.
                segment.unreadable = True
                _log.warning("history.scan_failed", path=segment.path, error=str(exc))
            return True
        return False

    def close(self) -> None:
        """Close the files and release the directory (does not sync). Idempotent.

        :meth:`read` still works afterwards, from the files (tests read a stopped node).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_files()

    # ------------------------------------------------------------------ reading

    def read(self, from_index: int, max_count: int, max_bytes: int) -> list[Command]:
        """Entries from ``from_index`` on: at most ``max_count``, and no more once their
        payloads reach ``max_bytes`` (so at most one payload beyond it, and always at
        least one entry if there is any).

        Raises :class:`~broadcast.errors.Compacted` below :attr:`first_index`;
        returns ``[]`` beyond :attr:`last_index`. Raises :class:`HistoryError` if a
        record on disk no longer reads back.
        """
        if from_index < 1:
            raise ValueError("indexes start at 1")
        with self._lock:
            first = self.first_index
            if from_index < first:
                raise Compacted(first, from_index)
            if from_index > self._last or max_count < 1:
                return []
            if from_index >= self._cache_first and self._cache_first <= self._last:
                pos = self._cache_head + from_index - self._cache_first
                return _take(self._cache[pos : pos + max_count], max_count, max_bytes)
            return self._read_disk(from_index, max_count, max_bytes)

    def _read_disk(self, from_index: int, max_count: int, max_bytes: int) -> list[Command]:
        out: list[Command] = []
        total = 0
        segments = self._segments
        k = bisect.bisect_right(segments, from_index, key=lambda s: s.first) - 1
        index = from_index
        while k < len(segments) and index <= self._last:
            segment = segments[k]
            if not segment.scanned:
                try:
                    self._build_index(segment)
                except OSError as exc:
                    raise HistoryError(f"{segment.path}: cannot read: {exc}") from exc
            slot = (index - segment.first) // INDEX_EVERY
            if slot >= len(segment.offsets):
                # Only a damaged segment lacks the slot: its valid prefix ends before it.
                # Raise, never guess: a subscriber must not be sent a wrong entry.
                raise HistoryError(
                    f"{segment.path}: damaged before index {index}: {segment.damage}"
                )
            at = segment.first + slot * INDEX_EVERY
            try:
                with open(segment.path, "rb") as file:
                    file.seek(segment.offsets[slot])
                    while at <= segment.last:
                        stored_index, command = self._read_record(file, segment.path)
                        if stored_index != at:
                            raise HistoryError(
                                f"{segment.path}: entry {at} reads back as index {stored_index}"
                            )
                        if at >= index:
                            out.append(command)
                            total += len(command.payload)
                            if len(out) >= max_count or total >= max_bytes:
                                return out
                        at += 1
            except OSError as exc:
                raise HistoryError(f"{segment.path}: cannot read: {exc}") from exc
            index = at
            k += 1
        return out

    def _build_index(self, segment: _Segment) -> None:
        """Scan a segment opened lazily, once, checking every record: its sparse index
        and payload bytes. Damage is remembered, not raised: reads of the valid prefix
        still work, reads reaching the damage raise HistoryError (see _read_disk).
        OSError: nothing changed, a later read tries again."""
        scanned, _, problem = _scan(segment.path, segment.first, limit=segment.count)
        self._records_scanned += scanned.count if scanned is not None else 0
        if scanned is None:
            scanned = _Segment(segment.first, segment.path)
        elif problem is None and scanned.count < segment.count:
            problem = f"ends after {scanned.count} of its {segment.count} entries"
        segment.offsets = scanned.offsets
        segment.payload_bytes = scanned.payload_bytes
        self._payload_bytes += scanned.payload_bytes
        segment.damage = problem
        segment.scanned = True
        if problem is not None:
            _log.error(
                "history segment damaged",
                path=segment.path,
                readable=[segment.first, segment.first + scanned.count - 1],
                reason=problem,
            )

    @staticmethod
    def _read_record(file: BinaryIO, path: str) -> tuple[int, Command]:
        read = file.read
        frame = read(_FRAME_SIZE)
        if len(frame) < _FRAME_SIZE:
            raise HistoryError(f"{path}: a record is missing (the file was cut)")
        length, stored = _FRAME.unpack(frame)
        data = read(length)
        if len(data) < length or zlib.crc32(data, zlib.crc32(frame[:4])) != stored:
            raise HistoryError(f"{path}: a record no longer matches its CRC")
        try:
            return _decode(data)
        except ValueError as exc:
            raise HistoryError(f"{path}: {exc}") from None

    # ------------------------------------------------------------------ the cache

    def _cache_add(self, commands: Sequence[Command]) -> None:
        if self.cache_limit == 0:
            self._cache_first = self._last + 1
            return
        self._cache.extend(commands)
        self._cache_bytes += sum(map(_cost, commands))
        self._cache_evict_to(self.cache_limit)

    def _cache_evict_to(self, limit: int) -> None:
        cache = self._cache
        head = self._cache_head
        end = len(cache)
        while self._cache_bytes > limit and head < end:
            self._cache_bytes -= _cost(cache[head])
            head += 1
        self._cache_first += head - self._cache_head
        self._cache_head = head
        if head > 1024 and head * 2 > end:  # drop evicted slots, amortised O(1)
            del cache[:head]
            self._cache_head = 0

    def _cache_evict_below(self, index: int) -> None:
        cache = self._cache
        while self._cache_first < index and self._cache_head < len(cache):
            self._cache_bytes -= _cost(cache[self._cache_head])
            self._cache_head += 1
            self._cache_first += 1
        self._cache_evict_to(self.cache_limit)

    def _cache_clear(self) -> None:
        self._cache = []
        self._cache_head = 0
        self._cache_bytes = 0
        self._cache_first = self._last + 1

    # ------------------------------------------------------------------ internals

    def _check_usable(self) -> None:
        if self._closed:
            raise HistoryError(f"{self.directory}: the history is closed")
        if self._failure is not None:
            raise HistoryError(
                f"{self.directory}: an earlier I/O error poisoned the history"
            ) from self._failure

    def _fail(self, exc: OSError) -> NoReturn:
        self._failure = exc
        raise HistoryError(f"{self.directory}: I/O error, the history is unusable: {exc}") from exc

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A partial batch may sit in the file: appending after it would put a bad
            # record in the middle. Stop; recovery cuts the file there.
            self._fail(exc)

    def _roll(self, first: int) -> _Segment:
        """Start a new segment whose first entry is ``first`` (or, when no file can be
        opened, go on in the current one: see below)."""
        path = os.path.join(self.directory, segment_name(first))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        opened: int | None = None
        if self._fd is not None and self._segments:
            # Opened before the current segment is finished, so that a failure leaves it
            # as it was: out of file descriptors, the current segment takes this batch too
            # and the next append tries again (retention only waits a little longer).
            try:
                opened = os.open(path, flags, 0o644)
            except OSError as exc:
                if out_of_descriptors(exc, path):
                    self.rolls_deferred += 1
                    _log.warning(
                        "history.roll_deferred",
                        directory=self.directory,
                        reason=str(exc),
                        deferred_total=self.rolls_deferred,
                    )
                    return self._segments[-1]
                self._fail(exc)
        try:
            if self._fd is not None:
                if self.fsync and self._dirty:
                    # The finished segment is durable before the next exists, so with
                    # fsync a crash can tear only the last segment.
                    os.fdatasync(self._fd)
                    self._dirty = False
                os.close(self._fd)
                self._fd = None
            fd = opened if opened is not None else os.open(path, flags, 0o644)
            opened = None
            self._fd = fd
            os.write(fd, _HEADER.pack(MAGIC, FORMAT_VERSION, 0, first))
            if self.fsync:
                os.fdatasync(fd)
                os.fsync(self._dir_fd)
        except OSError as exc:
            if opened is not None:
                os.close(opened)
            self._fail(exc)
        segment = _Segment(first, path)
        self._segments.append(segment)
        return segment

    def _restart(self, first: int) -> None:
        """A gap: the history starts over at ``first``; every segment is deleted."""
        _log.info(
            "history.restarted",
            directory=self.directory,
            was=[self.first_index, self._last],
            first_index=first,
        )
        try:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            # Oldest first: whatever a crash leaves is still a contiguous suffix.
            for segment in self._segments:
                self._delete(segment)
            if self.fsync:
                os.fsync(self._dir_fd)
        except OSError as exc:
            self._fail(exc)
        self._segments = []
        self._entries = self._payload_bytes = 0
        self._last = first - 1
        self._dirty = False
        self._cache_clear()

    def _delete(self, segment: _Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)

    def _close_files(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        os.close(self._dir_fd)  # releases the flock

    # ------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        found = sorted(
            (int(match.group(1)), name)
            for name in os.listdir(self.directory)
            if (match := _SEGMENT_RE.fullmatch(name)) is not None
        )
        kept: list[_Segment] = []
        for number, (first, name) in enumerate(found):
            path = os.path.join(self.directory, name)
            problem: str | None = None
            segment: _Segment | None = None
            if kept and first != kept[-1].last + 1:
                problem = f"starts at index {first}, not {kept[-1].last + 1}"
            else:
                if number + 1 < len(found):
                    # An earlier segment: cheap checks only, so that opening does not
                    # cost more with a bigger history (reads check the rest later).
                    segment = _probe(path, first, found[number + 1][0] - 1)
                    self._records_scanned += int(segment is not None)
                if segment is not None:
                    kept.append(segment)
                else:
                    # The last segment is scanned in full: it alone can hold unsynced
                    # data, torn or holed by a crash, and is appended to, so damage in
                    # it is cut away here and the node delivers that range again.
                    # So is an earlier one that failed a cheap check.
                    segment, end, problem = self._scan_at_open(path, first)
                    if segment is not None:
                        kept.append(segment)
                        if problem is not None:
                            self._cut(path, end, problem)
            if problem is not None:
                # Keep the valid prefix; what follows a break is not contiguous with it.
                later = found[number if segment is None else number + 1 :]
                for _, gone in reversed(later):
                    os.unlink(os.path.join(self.directory, gone))
                if later:
                    _log.warning(
                        "history segments dropped after a break",
                        directory=self.directory,
                        files=len(later),
                        reason=problem,
                    )
                    if self.fsync:
                        os.fsync(self._dir_fd)
                break
        self._segments = kept
        self._entries = sum(s.count for s in kept)
        self._payload_bytes = sum(s.payload_bytes for s in kept)
        if kept:
            self._last = kept[-1].last
            self._fd = os.open(kept[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            # What the last process wrote may be in the page cache only: _roll syncs it
            # before the next segment exists, so no earlier segment can be torn by a
            # crash (why open checks them only cheaply).
            self._dirty = True

    def _scan_at_open(self, path: str, first: int) -> tuple[_Segment | None, int, str | None]:
        segment, end, problem = _scan(path, first)
        self._records_scanned += segment.count if segment is not None else 0
        return segment, end, problem

    def _cut(self, path: str, end: int, problem: str) -> None:
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            file.truncate(end)
            if self.fsync:
                os.fdatasync(file.fileno())
        _log.warning(
            "history torn tail truncated",
            path=path,
            offset=end,
            dropped_bytes=size - end,
            reason=problem,
        )


def _probe(path: str, first: int, last: int) -> _Segment | None:
    """The cheap checks of an earlier segment holding ``first`` to ``last``: its header,
    and a last record that ends the file, passes its CRC and holds index ``last``.
    The segment (unscanned) if they pass, None if not (the caller scans it)."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        header = file.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            return None
        magic, version, _, stored_first = _HEADER.unpack(header)
        if magic != MAGIC or version != FORMAT_VERSION or stored_first != first:
            return None
        # A segment is created only for a batch of entries: one without a record (a
        # torn creation) or whose end is not the entry its successor's name implies
        # (torn tail, a segment missing after it) is scanned, and the prefix cut there.
        body = size - HEADER_SIZE  # bytes of records
        # The records' framing runs forwards only; backwards, look for the last one's
        # msgpack start (array of 4, then the index), right after a frame whose length
        # reaches exactly the end of the file. The window grows for a big last record.
        marker = b"\x94" + msgpack.packb(last)
        window = min(body, _PROBE_BYTES)
        while window > 0:
            file.seek(size - window)
            tail = file.read(window)
            if len(tail) < window:
                return None
            end = len(tail)
            while (at := tail.rfind(marker, _FRAME_SIZE, end)) >= 0:
                end = at + len(marker) - 1
                length, stored = _FRAME.unpack_from(tail, at - _FRAME_SIZE)
                if length != len(tail) - at:
                    continue
                record = memoryview(tail)[at:]
                if zlib.crc32(record, zlib.crc32(tail[at - _FRAME_SIZE : at - 4])) != stored:
                    continue
                try:
                    index, _ = _decode(record)
                except ValueError:
                    continue
                if index == last:  # the count the names give is the count it holds
                    return _Segment(
                        first, path, count=last - first + 1, size=size, scanned=False
                    )
            if window == body:
                break
            window = min(body, window * 8)
    return None


def _scan(
    path: str, first: int, limit: int | None = None
) -> tuple[_Segment | None, int, str | None]:
    """Read one segment: (its valid part, the offset where it ends, why it ends early).
    ``limit``: stop after that many entries (a lazy segment's count, from the names)."""
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < HEADER_SIZE:
        return None, 0, f"segment header truncated ({len(data)} bytes)"
    magic, version, _, stored_first = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION or stored_first != first:
        return None, 0, "bad segment header"
    segment = _Segment(first, path)
    view = memoryview(data)
    pos = HEADER_SIZE
    end = len(data)
    problem: str | None = None
    while pos < end and (limit is None or segment.count < limit):
        if end - pos < _FRAME_SIZE:
            problem = "incomplete record frame"
            break
        length, stored = _FRAME.unpack_from(data, pos)
        stop = pos + _FRAME_SIZE + length
        if stop > end:
            problem = "record runs past the end of the file"
            break
        if zlib.crc32(view[pos + _FRAME_SIZE : stop], zlib.crc32(view[pos : pos + 4])) != stored:
            problem = "CRC mismatch"
            break
        try:
            index, command = _decode(view[pos + _FRAME_SIZE : stop])
        except ValueError as exc:
            problem = str(exc)
            break
        expected = first + segment.count
        if index != expected:
            problem = f"record holds index {index}, expected {expected}"
            break
        if segment.count % INDEX_EVERY == 0:
            segment.offsets.append(pos)
        segment.count += 1
        segment.payload_bytes += len(command.payload)
        pos = stop
    segment.size = pos
    return segment, pos, problem


def _take(commands: list[Command], max_count: int, max_bytes: int) -> list[Command]:
    """The first of ``commands`` within ``max_count`` and the byte budget (see read)."""
    total = 0
    for i, command in enumerate(commands[:max_count]):
        total += len(command.payload)
        if total >= max_bytes:
            return commands[: i + 1]
    return commands[:max_count]


