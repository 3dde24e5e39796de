"""Write-ahead log: round trips, rollover, group commit, crash recovery and damage detection."""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from broadcast.wal import (
    DEFAULT_SEGMENT_BYTES,
    FLOOR_FILE,
    FRAME_OVERHEAD,
    HEADER_SIZE,
    WalCorruptionError,
    WalError,
    WriteAheadLog,
    segment_name,
)


def _records(count: int, size: int = 40, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [i.to_bytes(4, "big") + rng.randbytes(size - 4) for i in range(count)]


def _batches(records: list[bytes], size: int) -> list[list[bytes]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _write(
    directory: Path, batches: list[list[bytes]], segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> None:
    wal, _ = WriteAheadLog.open(directory, segment_bytes=segment_bytes)
    with wal:
        for batch in batches:
            wal.append(batch)
            wal.sync()


def _reopen(directory: Path, *, fsync: bool = True, segment_bytes: int = 4096) -> list[bytes]:
    wal, records = WriteAheadLog.open(directory, fsync=fsync, segment_bytes=segment_bytes)
    wal.close()
    return records


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ normal use


def test_round_trip_across_reopen(tmp_path: Path) -> None:
    records = [b"", b"a", b"\x00" * 9, bytes(range(256)), b"x" * 70_000]
    wal, recovered = WriteAheadLog.open(tmp_path / "wal")
    assert recovered == []
    wal.append(records[:2])
    wal.append(records[2:])
    wal.sync()
    wal.close()

    wal, recovered = WriteAheadLog.open(tmp_path / "wal")
    assert recovered == records
    assert wal.stats.recovered_records == 5
    wal.append([b"more"])
    wal.sync()
    wal.close()
    assert _reopen(tmp_path / "wal") == [*records, b"more"]


def test_rollover_keeps_every_record_in_order(tmp_path: Path) -> None:
    records = _records(2_000)
    _write(tmp_path, _batches(records, 50), segment_bytes=16_384)

    segments = _segments(tmp_path)
    assert [p.name for p in segments] == [segment_name(i) for i in range(1, len(segments) + 1)]
    assert len(segments) > 5
    assert all(p.stat().st_size <= 16_384 for p in segments)
    assert _reopen(tmp_path) == records


def test_batch_larger_than_a_segment_gets_its_own_segment(tmp_path: Path) -> None:
    big = _records(50, size=100)
    _write(tmp_path, [[b"first"], big, [b"last"]], segment_bytes=1024)
    assert len(_segments(tmp_path)) == 3
    assert _reopen(tmp_path) == [b"first", *big, b"last"]


def test_group_commit_issues_one_fdatasync_per_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    wal, _ = WriteAheadLog.open(tmp_path)
    monkeypatch.setattr(os, "fdatasync", counting)
    for batch in range(10):
        wal.append(_records(100, seed=batch))
        assert wal.records_since_sync == 100
        wal.sync()
        assert wal.records_since_sync == 0
    wal.sync()  # nothing new: no system call
    stats = wal.stats
    wal.close()

    assert len(calls) == stats.syncs == 10
    assert stats.records_appended == 1_000
    assert stats.bytes_appended == 1_000 * (40 + FRAME_OVERHEAD)
    assert stats.bytes_since_sync == 0


def test_fsync_off_makes_no_sync_calls_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(fd: int) -> None:
        raise AssertionError("sync system call with fsync=False")

    monkeypatch.setattr(os, "fdatasync", forbidden)
    monkeypatch.setattr(os, "fsync", forbidden)
    records = _records(500)
    with structlog.testing.capture_logs() as logs:
        wal, _ = WriteAheadLog.open(tmp_path / "new", fsync=False, segment_bytes=2048)
        for i in range(0, 500, 10):
            wal.append(records[i : i + 10])
            wal.sync()
        assert wal.stats.syncs >= 50
        wal.close()
    warnings = [e for e in logs if "FSYNC DISABLED" in e["event"]]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert _reopen(tmp_path / "new", fsync=False) == records


def test_second_open_of_a_directory_is_refused(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    with pytest.raises(WalError, match="already opened"):
        WriteAheadLog.open(tmp_path)
    wal.close()
    wal.close()  # idempotent
    _reopen(tmp_path)


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.close()
    with pytest.raises(WalError, match="closed"):
        wal.append([b"x"])
    with pytest.raises(WalError, match="closed"):
        wal.sync()


def test_bad_input_is_rejected_without_writing(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append([b"ok"])
    with pytest.raises(TypeError):
        wal.append([b"fine", "not bytes"])  # type: ignore[list-item]
    wal.sync()
    wal.close()
    assert _reopen(tmp_path) == [b"ok"]
    with pytest.raises(ValueError):
        WriteAheadLog.open(tmp_path, segment_bytes=HEADER_SIZE)


@pytest.mark.parametrize("failing", ["write", "fdatasync"])
def test_io_error_poisons_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    wal.append([b"durable"])
    wal.sync()

    real = getattr(os, failing)

    def broken(fd: int, *args: object) -> object:
        if fd == wal_fd:
            raise OSError(errno.EIO, "simulated I/O error")
        return real(fd, *args)

    wal_fd = wal._fd

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(WalError, match="I/O error"):
        wal.append([b"doomed"])
        wal.sync()
    monkeypatch.undo()
    with pytest.raises(WalError, match="poisoned"):
        wal.append([b"after"])
    with pytest.raises(WalError, match="poisoned"):
        wal.sync()
    wal.close()
    assert _reopen(tmp_path)[0] == b"durable"


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_out_of_file_descriptors_puts_a_roll_off_instead_of_poisoning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A flood of connections can use up a node's file descriptors: the next segment cannot
    be opened, but nothing was lost, so the log keeps writing where it is and rolls later
    (review finding: the node used to stop with "the log is now unusable")."""
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=1024)
    records = _records(200)
    real_open = os.open
    full = True

    def no_files(path: object, *args: object, **kwargs: object) -> int:
        if full and str(path).endswith(".log"):
            raise OSError(code, os.strerror(code))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_files)
    for batch in _batches(records[:100], 10):
        wal.append(batch)
        wal.sync()
    assert wal.rolls_deferred > 0
    assert len(_segments(tmp_path)) == 1  # it kept writing to the one it had
    full = False
    for batch in _batches(records[100:], 10):
        wal.append(batch)
        wal.sync()
    wal.close()
    assert len(_segments(tmp_path)) > 2  # and rolled again once files could be opened
    assert _reopen(tmp_path) == records


# -------------------------------------------------------------------- crashes


def test_power_loss_at_durable_position_keeps_synced_records(tmp_path: Path) -> None:
    records = _records(300)
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=2048)
    for i in range(0, 200, 20):
        wal.append(records[i : i + 20])
        wal.sync()
    wal.append(records[200:])  # never synced
    path, offset = wal.durable_position()
    assert wal.stats.bytes_since_sync == 100 * (40 + FRAME_OVERHEAD)
    wal.close()
    # The unsynced batch went to a new segment, which is (being) the last one.
    assert Path(path) == _segments(tmp_path)[-1]
    os.truncate(path, offset)
    assert _reopen(tmp_path) == records[:200]


def test_torn_last_record_at_every_cut_point(tmp_path: Path) -> None:
    synced = _records(3)
    last = b"the final record, torn by a crash"
    template = tmp_path / "template"
    _write(template, [synced, [last]])
    segment = template / segment_name(1)
    full = segment.read_bytes()
    good_end = len(full) - FRAME_OVERHEAD - len(last)

    for cut in range(good_end + 1, len(full)):
        directory = tmp_path / f"cut{cut}"
        directory.mkdir()
        (directory / segment_name(1)).write_bytes(full[:cut])
        with structlog.testing.capture_logs() as logs:
            wal, recovered = WriteAheadLog.open(directory)
        assert recovered == synced, cut
        assert wal.stats.truncated_bytes == cut - good_end
        assert any(e["event"] == "wal torn tail truncated" for e in logs)
        assert (directory / segment_name(1)).stat().st_size == good_end
        # Appending after the repair continues the log cleanly.
        wal.append([b"after"])
        wal.sync()
        wal.close()
        assert _reopen(directory) == [*synced, b"after"], cut


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 10_000,
        random.Random(7).randbytes(3_000),
        b"\xff" * 5,
        b"\x05\x00\x00\x00\x00\x00\x00\x00abcde",  # well-formed length, wrong CRC
    ],
    ids=["zeros", "random", "short", "bad-crc"],
)
def test_garbage_after_last_record_is_truncated(tmp_path: Path, garbage: bytes) -> None:
    records = _records(20)
    _write(tmp_path, [records])
    segment = tmp_path / segment_name(1)
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(garbage)
    assert _reopen(tmp_path) == records
    assert segment.stat().st_size == size


def test_torn_segment_creation_is_repaired(tmp_path: Path) -> None:
    records = _records(100)
    _write(tmp_path, [records], segment_bytes=1 << 20)
    for stub in [b"", b"PAXOS", b"\x00" * HEADER_SIZE]:
        (tmp_path / segment_name(2)).write_bytes(stub)
        wal, recovered = WriteAheadLog.open(tmp_path)
        assert recovered == records
        wal.close()
        assert (tmp_path / segment_name(2)).stat().st_size == HEADER_SIZE
        (tmp_path / segment_name(2)).unlink()
    # Repaired stub receives new records.
    (tmp_path / segment_name(2)).write_bytes(b"")
    _write(tmp_path, [[b"next"]])
    assert _reopen(tmp_path) == [*records, b"next"]


class PageCache:
    """A simulated power cut for one log directory: what each sync made durable is
    recorded, and :meth:`power_cut` drops the rest.

    While open it watches ``os.fdatasync`` and ``os.fsync``: a sync of a file makes its
    current size durable; a sync of ``directory`` makes its current entries durable
    (a file created, or renamed, since the directory's last sync may vanish with the
    power, whatever was synced *in* it: POSIX makes no promise for the entry). The
    directory itself is taken to exist durably (the test creates it).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.inode = os.stat(directory).st_ino
        self.sizes: dict[int, int] = {}  # inode -> durable size
        self.entries: dict[str, int] = {}  # durable directory entries: name -> inode
        self._real = (os.fdatasync, os.fsync)

    def __enter__(self) -> PageCache:
        real_fdatasync, real_fsync = self._real
        os.fdatasync = lambda fd: self._synced(real_fdatasync, fd)
        os.fsync = lambda fd: self._synced(real_fsync, fd)
        return self

    def __exit__(self, *exc: object) -> None:
        os.fdatasync, os.fsync = self._real

    def _synced(self, real: Callable[[int], None], fd: int) -> None:
        real(fd)
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode) and info.st_ino == self.inode:
            self.entries = {
                entry.name: entry.inode() for entry in os.scandir(self.directory)
            }
        elif stat.S_ISREG(info.st_mode):
            self.sizes[info.st_ino] = info.st_size

    def power_cut(self) -> None:
        for entry in list(os.scandir(self.directory)):
            if self.entries.get(entry.name) != entry.inode():
                os.unlink(entry.path)  # its directory entry never became durable
            else:
                os.truncate(entry.path, self.sizes.get(entry.inode(), 0))


def test_synced_records_survive_power_loss_across_segment_rolls(tmp_path: Path) -> None:
    """After a power cut at any point, the log holds every record a ``sync`` returned for,
    and nothing but what was appended, in order. Every batch here starts a new segment,
    and every other batch is appended without a sync first: a roll must sync the segment
    it leaves, and a new segment's creation (its header and its directory entry) must be
    durable before records in it count as such."""
    records = _records(48)
    batches = _batches(records, 3)  # 3 x 48 framed bytes: one batch per 256-byte segment
    for cut_after in range(1, len(batches) // 2 + 1):  # syncs before the power cut
        directory = tmp_path / f"cut-after-{cut_after}"
        directory.mkdir()
        appended: list[bytes] = []
        synced: list[bytes] = []
        with PageCache(directory) as cache:
            wal, _ = WriteAheadLog.open(directory, segment_bytes=256)
            for number, batch in enumerate(batches, start=1):
                wal.append(batch)
                appended += batch
                if number % 2 == 0:
                    wal.sync()
                    synced = list(appended)
                    if len(synced) == 6 * cut_after:
                        break
            assert wal.stats.segment > 1 and len(_segments(directory)) == wal.stats.segment
            wal.close()  # (does not sync)
        cache.power_cut()
        recovered = _reopen(directory)
        assert recovered[: len(synced)] == synced, (
            f"power cut after sync {cut_after}: synced records lost "
            f"({len(recovered)} recovered of {len(synced)} synced)"
        )
        assert recovered == appended[: len(recovered)]


# --------------------------------------------------------------------- damage


def _middle_record_layout(tmp_path: Path) -> tuple[Path, int, int]:
    """A one-segment log of 5 records; returns (segment, start of record 2, its framed size)."""
    records = _records(5, size=24)
    _write(tmp_path, [records])
    framed = FRAME_OVERHEAD + 24
    return tmp_path / segment_name(1), HEADER_SIZE + 2 * framed, framed


def test_every_damaged_byte_of_a_middle_record_is_reported(tmp_path: Path) -> None:
    segment, start, framed = _middle_record_layout(tmp_path)
    pristine = segment.read_bytes()
    for offset in range(start, start + framed):
        _flip(segment, offset)
        with pytest.raises(WalCorruptionError) as caught:
            _reopen(tmp_path)
        assert caught.value.path == str(segment)
        assert caught.value.offset == start
        assert str(segment) in str(caught.value)
        assert f"byte offset {start}" in str(caught.value)
        segment.write_bytes(pristine)
    assert len(_reopen(tmp_path)) == 5  # nothing was truncated by the failed opens


def test_damage_in_an_earlier_segment_is_reported_even_at_its_end(tmp_path: Path) -> None:
    _write(tmp_path, _batches(_records(200), 5), segment_bytes=1024)
    first = _segments(tmp_path)[0]
    _flip(first, first.stat().st_size - 1)  # last byte of its last record
    with pytest.raises(WalCorruptionError, match="not the last") as caught:
        _reopen(tmp_path)
    assert caught.value.path == str(first)

    first.write_bytes(first.read_bytes()[:-3])  # a "torn" earlier segment is damage too
    with pytest.raises(WalCorruptionError, match="not the last"):
        _reopen(tmp_path)


@pytest.mark.parametrize("which", ["first", "last"])
@pytest.mark.parametrize("offset", range(HEADER_SIZE))
def test_damaged_segment_header_is_reported(tmp_path: Path, which: str, offset: int) -> None:
    _write(tmp_path, _batches(_records(60), 10), segment_bytes=1024)
    assert len(_segments(tmp_path)) >= 2
    segments = _segments(tmp_path)
    segment = segments[0] if which == "first" else segments[-1]
    _flip(segment, offset)
    with pytest.raises(WalCorruptionError, match=r"header|magic|version") as caught:
        _reopen(tmp_path)
    assert caught.value.path == str(segment)


def test_renamed_segment_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, [[b"one"]])
    shutil.copy(tmp_path / segment_name(1), tmp_path / segment_name(2))
    with pytest.raises(WalCorruptionError, match="header says segment 1"):
        _reopen(tmp_path)


@pytest.mark.parametrize("missing", [1, 2])
def test_missing_segment_is_reported(tmp_path: Path, missing: int) -> None:
    _write(tmp_path, _batches(_records(100), 5), segment_bytes=1024)
    assert len(_segments(tmp_path)) >= 3
    (tmp_path / segment_name(missing)).unlink()
    with pytest.raises(WalCorruptionError, match="missing") as caught:
        _reopen(tmp_path)
    assert caught.value.path == str(tmp_path / segment_name(missing))


def test_unrelated_files_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, [[b"one"]])
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "wal-1.log").write_bytes(b"junk")
    assert _reopen(tmp_path) == [b"one"]


# ----------------------------------------------------------------- compaction


def _floor_file(directory: Path) -> Path:
    return directory / FLOOR_FILE


def _segmented_log(directory: Path, batches: int = 40) -> tuple[list[tuple[int, list[bytes]]], int]:
    """A synced log of 5-record batches over 1024-byte segments, left closed.

    Returns ``(segment, batch)`` for every batch, as ``current_segment`` reported right
    after its append, and the number of the last segment.
    """
    placed: list[tuple[int, list[bytes]]] = []
    wal, _ = WriteAheadLog.open(directory, segment_bytes=1024)
    with wal:
        for batch in _batches(_records(5 * batches), 5):
            wal.append(batch)
            placed.append((wal.current_segment, batch))
            wal.sync()
        last = wal.current_segment
    assert last >= 6
    return placed, last


def _expected(
    placed: list[tuple[int, list[bytes]]], keep_from: int
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """The records a reopen returns once segments below ``keep_from`` are gone, and the
    ``recovered_segments`` it reports."""
    records = [r for segment, batch in placed if segment >= keep_from for r in batch]
    counts: dict[int, int] = {}
    for segment, batch in placed:
        if segment >= keep_from:
            counts[segment] = counts.get(segment, 0) + len(batch)
    return records, sorted(counts.items())


def _open_recovering(directory: Path) -> tuple[WriteAheadLog, list[bytes]]:
    return WriteAheadLog.open(directory, segment_bytes=1024)


class _Crash(Exception):
    """The process dies here (raised by a patched system call)."""


def test_recovered_segments_cover_the_returned_records(tmp_path: Path) -> None:
    placed, last = _segmented_log(tmp_path)
    # The segment each batch went to is the one current_segment named after its append.
    for segment, batch in placed:
        data = (tmp_path / segment_name(segment)).read_bytes()
        assert all(record in data for record in batch)
    wal, records = _open_recovering(tmp_path)
    with wal:
        assert (wal.floor, wal.first_segment, wal.current_segment) == (1, 1, last)
        assert (records, wal.recovered_segments) == _expected(placed, 1)
        assert sum(count for _, count in wal.recovered_segments) == len(records)
    # A fresh log, and a header-only last segment, are reported with a count of 0.
    wal, _ = WriteAheadLog.open(tmp_path / "fresh")
    with wal:
        assert wal.recovered_segments == [(1, 0)]
    (tmp_path / segment_name(last + 1)).write_bytes(b"")
    wal, _ = _open_recovering(tmp_path)
    with wal:
        assert wal.recovered_segments == [*_expected(placed, 1)[1], (last + 1, 0)]


@pytest.mark.parametrize("keep_from", [2, 4, "last"])
def test_compact_deletes_exactly_the_segments_below_keep_from(
    tmp_path: Path, keep_from: int | str
) -> None:
    placed, last = _segmented_log(tmp_path)
    keep = last if keep_from == "last" else int(keep_from)
    wal, _ = _open_recovering(tmp_path)
    with wal:
        assert wal.compact(keep) == keep - 1
        assert (wal.floor, wal.first_segment, wal.current_segment) == (keep, keep, last)
        # The log goes on: appends after a compaction are recovered with the rest.
        wal.append([b"after"])
        wal.sync()
    assert [p.name for p in _segments(tmp_path)] == [
        segment_name(n) for n in range(keep, last + 1)
    ]
    records, per_segment = _expected([*placed, (last, [b"after"])], keep)
    wal, recovered = _open_recovering(tmp_path)
    with wal:
        assert recovered == records
        assert wal.recovered_segments == per_segment
        assert (wal.floor, wal.first_segment) == (keep, keep)


def test_compact_never_deletes_the_active_segment(tmp_path: Path) -> None:
    placed, last = _segmented_log(tmp_path)
    wal, _ = _open_recovering(tmp_path)
    with wal:
        with pytest.raises(ValueError, match="beyond the current segment"):
            wal.compact(last + 1)
        assert len(_segments(tmp_path)) == last and not _floor_file(tmp_path).exists()
        assert wal.compact(3) == 2
        assert wal.compact(3) == 0  # at or below the floor: nothing to do
        assert wal.compact(1) == 0
        assert wal.floor == 3
        assert wal.compact(last) == last - 3
        with pytest.raises(ValueError, match="beyond the current segment"):
            wal.compact(last + 1)
    assert _segments(tmp_path) == [tmp_path / segment_name(last)]
    assert _reopen(tmp_path) == _expected(placed, last)[0]


def test_compact_that_is_a_no_op_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _segmented_log(tmp_path)
    wal, _ = _open_recovering(tmp_path)
    with wal:
        wal.compact(2)
        floor_inode = _floor_file(tmp_path).stat().st_ino
        monkeypatch.setattr(os, "replace", lambda *a: pytest.fail("FLOOR rewritten"))
        assert wal.compact(2) == 0
    assert _floor_file(tmp_path).stat().st_ino == floor_inode


@pytest.mark.parametrize("unlinks_before_crash", [0, 2, 3])
def test_crash_during_the_unlinks_is_finished_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unlinks_before_crash: int
) -> None:
    """FLOOR is written, then the process dies before the unlinks (0) or after some
    of them (2 or 3 of 4): the next open deletes the rest and returns none of them."""
    placed, _ = _segmented_log(tmp_path)
    real_unlink = os.unlink
    done: list[str] = []

    def dying_unlink(path: str) -> None:
        if len(done) == unlinks_before_crash:
            raise _Crash
        done.append(os.path.basename(path))
        real_unlink(path)

    wal, _ = _open_recovering(tmp_path)
    monkeypatch.setattr(os, "unlink", dying_unlink)
    with pytest.raises(_Crash):
        wal.compact(5)
    monkeypatch.undo()
    wal.close()
    assert done == [segment_name(n) for n in range(1, unlinks_before_crash + 1)]
    assert _floor_file(tmp_path).exists()
    assert _segments(tmp_path)[0] == tmp_path / segment_name(unlinks_before_crash + 1)

    with structlog.testing.capture_logs() as logs:
        wal, recovered = _open_recovering(tmp_path)
    with wal:
        assert (recovered, wal.recovered_segments) == _expected(placed, 5)
        assert (wal.floor, wal.first_segment) == (5, 5)
    assert _segments(tmp_path)[0] == tmp_path / segment_name(5)
    assert any(e["event"] == "wal segments below the floor deleted" for e in logs)


@pytest.mark.parametrize("earlier_floor", [None, 3])
def test_crash_before_the_floor_rename_leaves_the_old_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, earlier_floor: int | None
) -> None:
    """The process dies with FLOOR.tmp written but not renamed: the old floor holds,
    nothing was deleted, and the temporary file is removed."""
    placed, _ = _segmented_log(tmp_path)
    wal, _ = _open_recovering(tmp_path)
    if earlier_floor is not None:
        wal.compact(earlier_floor)
    def dying_replace(source: str, target: str) -> None:
        raise _Crash

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(_Crash):
        wal.compact(5)
    monkeypatch.undo()
    wal.close()
    tmp = tmp_path / (FLOOR_FILE + ".tmp")
    assert tmp.exists()

    floor = earlier_floor or 1
    wal, recovered = _open_recovering(tmp_path)
    with wal:
        assert (recovered, wal.recovered_segments) == _expected(placed, floor)
        assert wal.floor == floor
    assert not tmp.exists()
    assert _segments(tmp_path)[0] == tmp_path / segment_name(floor)


def test_a_garbage_floor_temp_file_is_removed(tmp_path: Path) -> None:
    placed, _ = _segmented_log(tmp_path)
    (tmp_path / (FLOOR_FILE + ".tmp")).write_bytes(b"\x00" * 7)  # torn, never renamed
    assert _reopen(tmp_path) == _expected(placed, 1)[0]
    assert not (tmp_path / (FLOOR_FILE + ".tmp")).exists()


def _compact_then_power_cut(directory: Path, keep_from: int, calls_before_cut: int) -> bool:
    """Compact the closed log in ``directory``, cutting the power before its system call
    number ``calls_before_cut`` (writes, renames and unlinks count); return whether the
    compaction finished first."""
    cache = PageCache(directory)
    # The log on entry counts as durable (as if synced), down to its directory entries.
    cache.entries = {e.name: e.inode() for e in os.scandir(directory)}
    cache.sizes = {e.inode(): e.stat().st_size for e in os.scandir(directory)}
    real = {name: getattr(os, name) for name in ("unlink", "replace", "write")}
    calls = 0

    def counted(name: str) -> Callable[..., object]:
        def call(*args: object) -> object:
            nonlocal calls
            if calls == calls_before_cut:
                raise _Crash
            calls += 1
            return real[name](*args)

        return call

    wal, _ = _open_recovering(directory)
    with cache:
        for name in real:
            setattr(os, name, counted(name))
        try:
            wal.compact(keep_from)
            finished = True
        except _Crash:
            finished = False
        finally:
            for name, function in real.items():
                setattr(os, name, function)
    wal.close()
    cache.power_cut()
    return finished


def test_compaction_survives_power_loss_at_every_step(tmp_path: Path) -> None:
    """A power cut before each system call of a compaction (and after it returns) leaves
    a log that opens, holding either every record or exactly the kept segments'. FLOOR
    and its directory entry must be durable before the first unlink: otherwise the cut
    takes FLOOR away while the deleted segments stay deleted."""
    template = tmp_path / "template"
    template.mkdir()
    placed, _ = _segmented_log(template)
    for steps in itertools.count():
        directory = tmp_path / f"cut-before-{steps}"
        shutil.copytree(template, directory)
        finished = _compact_then_power_cut(directory, 5, steps)
        try:
            wal, recovered = _open_recovering(directory)
        except WalCorruptionError as exc:
            raise AssertionError(
                f"power cut before system call {steps} of compact(): the log no longer "
                f"opens: {exc}"
            ) from exc
        with wal:
            assert wal.floor == (5 if finished else wal.floor) and wal.floor in (1, 5), steps
            assert (recovered, wal.recovered_segments) == _expected(placed, wal.floor), steps
        if finished:
            break
    assert steps == 6  # FLOOR.tmp write, rename, 4 unlinks


@pytest.mark.parametrize("missing", ["floor", "after-floor", "all"])
def test_missing_segment_at_or_above_the_floor_is_reported(
    tmp_path: Path, missing: str
) -> None:
    _, last = _segmented_log(tmp_path)
    wal, _ = _open_recovering(tmp_path)
    with wal:
        wal.compact(3)
    gone = {"floor": [3], "after-floor": [4], "all": list(range(3, last + 1))}[missing]
    for number in gone:
        (tmp_path / segment_name(number)).unlink()
    with pytest.raises(WalCorruptionError, match="missing") as caught:
        _reopen(tmp_path)
    assert caught.value.path == str(tmp_path / segment_name(gone[0]))


def test_damaged_floor_file_is_reported(tmp_path: Path) -> None:
    _segmented_log(tmp_path)
    wal, _ = _open_recovering(tmp_path)
    with wal:
        wal.compact(3)
    floor = _floor_file(tmp_path)
    pristine = floor.read_bytes()
    damaged = [pristine[:-1], pristine + b"\x00", b""]
    for offset in range(len(pristine)):
        flipped = bytearray(pristine)
        flipped[offset] ^= 0x40
        damaged.append(bytes(flipped))
    for data in damaged:
        floor.write_bytes(data)
        with pytest.raises(WalCorruptionError, match="FLOOR") as caught:
            _reopen(tmp_path)
        assert caught.value.path == str(floor)
    floor.write_bytes(pristine)
    assert len(_segments(tmp_path)) > 1
    _reopen(tmp_path)
