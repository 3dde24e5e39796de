"""The node's history of delivered commands: appends, reads, retention, recovery (the last
segment scanned at open, earlier ones lazily at first read), memory."""

from __future__ import annotations

import errno
import itertools
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
from procs import secure_cluster, wait_for

from broadcast import Client, ConfigError, Delivery, Node, local_cluster
from broadcast.errors import Compacted
from broadcast.history import HEADER_SIZE, INDEX_EVERY, History, HistoryError, segment_name
from broadcast.local import free_base_port
from paxos.types import Command


def cmd(index: int, size: int = 10, tag: bytes = b"") -> Command:
    """A recognisable command for ``index``: payload ``size`` bytes (at least the tag)."""
    payload = (tag + b"%d:" % index).ljust(size, b".")
    return Command(f"c#{index % 7}", index, payload)


def cmds(first: int, last: int, size: int = 10, tag: bytes = b"") -> list[Command]:
    return [cmd(i, size, tag) for i in range(first, last + 1)]


def open_history(path: Path, **kwargs: int) -> History:
    kwargs.setdefault("segment_bytes", 1 << 20)
    return History(path, fsync=False, **kwargs)  # type: ignore[arg-type]


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("hist-"))


def check_retention(history: History, appended_bytes: int) -> None:
    """The retention rule, for a history fed from index 1 with ``appended_bytes`` of
    payloads: trim keeps at least retain_entries entries and retain_bytes payload bytes
    (or everything, if there is less), all readable; below them is Compacted."""
    held = history.read(history.first_index, 1 << 30, 1 << 62)
    assert len(held) == history.last_index - history.first_index + 1
    assert len(held) >= min(history.retain_entries, history.last_index)
    assert sum(len(c.payload) for c in held) >= min(history.retain_bytes, appended_bytes)
    if history.first_index > 1:
        with pytest.raises(Compacted) as info:
            history.read(history.first_index - 1, 1, 1)
        assert info.value.earliest == history.first_index


# ---------------------------------------------------------------------- basics


def test_an_empty_history(tmp_path: Path) -> None:
    with_history = open_history(tmp_path / "h")
    assert (with_history.first_index, with_history.last_index) == (1, 0)
    assert with_history.read(1, 10, 1000) == []
    assert with_history.disk_bytes() == 0
    with_history.close()


def test_append_and_read_ranges_with_count_and_byte_budgets(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h")
    h.append(1, cmds(1, 10))
    h.append(11, cmds(11, 20))
    assert (h.first_index, h.last_index) == (1, 20)
    assert h.read(1, 100, 1 << 20) == cmds(1, 20)
    assert h.read(5, 3, 1 << 20) == cmds(5, 7)
    assert h.read(21, 10, 1 << 20) == []
    # Budget 25 bytes of 10-byte payloads: the third one reaches it and is the last.
    assert h.read(4, 100, 25) == cmds(4, 6)
    assert h.read(4, 100, 30) == cmds(4, 6)
    # A payload larger than the whole budget still travels (alone).
    assert h.read(4, 100, 1) == cmds(4, 4)
    assert h.read(4, 0, 100) == []
    with pytest.raises(ValueError):
        h.read(0, 1, 1)
    h.close()


def test_entries_held_already_are_skipped_and_the_rest_appended(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h")
    h.append(1, cmds(1, 10, tag=b"first"))
    h.append(5, cmds(5, 14, tag=b"again"))  # 5-10 are redelivered: kept as they were
    h.append(3, cmds(3, 8, tag=b"again"))  # all held: nothing changes
    assert h.last_index == 14
    assert h.read(1, 100, 1 << 20) == cmds(1, 10, tag=b"first") + cmds(11, 14, tag=b"again")
    h.close()


def test_a_gap_restarts_the_history_and_deletes_the_old_files(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=300)
    for first in range(1, 41, 10):
        h.append(first, cmds(first, first + 9))  # one batch never straddles two segments
    assert len(files(tmp_path / "h")) > 1
    h.append(100, cmds(100, 102))  # the node installed a snapshot up to 99
    assert (h.first_index, h.last_index) == (100, 102)
    assert files(tmp_path / "h") == [segment_name(100)]
    with pytest.raises(Compacted) as info:
        h.read(1, 10, 1000)
    assert info.value.earliest == 100 and info.value.requested == 1
    assert "index 1 is no longer retained; the earliest available is 100" in str(info.value)
    assert h.read(100, 10, 1000) == cmds(100, 102)
    h.close()
    again = open_history(tmp_path / "h")
    assert (again.first_index, again.last_index) == (100, 102)
    assert again.read(101, 10, 1000) == cmds(101, 102)
    again.close()


def test_a_history_that_starts_above_one(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h")
    h.append(50, cmds(50, 60))  # the first start after a snapshot install
    assert (h.first_index, h.last_index) == (50, 60)
    with pytest.raises(Compacted):
        h.read(49, 1, 1)
    h.close()


def test_a_directory_has_one_owner(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h")
    with pytest.raises(HistoryError, match="already opened"):
        open_history(tmp_path / "h")
    h.close()
    with pytest.raises(HistoryError, match="closed"):
        h.append(1, cmds(1, 1))
    open_history(tmp_path / "h").close()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        History(tmp_path / "a", retain_entries=-1)
    with pytest.raises(ValueError):
        History(tmp_path / "b", segment_bytes=HEADER_SIZE)
    h = open_history(tmp_path / "c")
    with pytest.raises(ValueError):
        h.append(0, cmds(1, 1))
    h.close()


# ---------------------------------------------------------------------- retention


def test_trim_by_entries_keeps_at_least_the_retention(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=600, retain_entries=50, cache_bytes=0)
    for i in range(1, 401):
        h.append(i, [cmd(i, 20)])
        h.trim()
        check_retention(h, 20 * i)
    assert h.first_index > 1 and h.segments < 10
    # No more than one segment beyond the retention is kept.
    assert h.entries < 50 + 600 // 20
    assert h.read(h.first_index, 1000, 1 << 20) == cmds(h.first_index, 400, 20)
    h.close()


def test_trim_by_bytes_keeps_at_least_the_retention(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=2000, retain_entries=0, retain_bytes=3000)
    for i in range(1, 301):
        h.append(i, [cmd(i, 100)])
        h.trim()
        check_retention(h, 100 * i)
    assert h.first_index > 1
    assert h.disk_bytes() < 3000 + 2 * 2000 + 2 * HEADER_SIZE
    h.close()


def test_trim_leaves_the_last_segment_whatever_the_retention(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=300, retain_entries=0)
    h.append(1, cmds(1, 30))
    h.append(31, cmds(31, 60))
    assert h.trim() >= 1
    assert h.segments == 1 and h.last_index == 60
    assert h.read(h.first_index, 100, 1 << 20)[-1] == cmd(60)
    h.close()


def test_a_smaller_retention_at_reopen_trims_at_once(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=400, retain_entries=1000)
    h.append(1, cmds(1, 200))
    assert h.first_index == 1
    for i in range(201, 301):
        h.append(i, [cmd(i)])
    h.close()
    small = open_history(tmp_path / "h", segment_bytes=400, retain_entries=20)
    assert small.first_index > 1 and small.entries >= 20
    check_retention(small, 10 * 300)
    small.close()


class _Greedy(History):
    """A planted bug: trim deletes one segment more than the retention allows."""

    def trim(self) -> int:
        removed = super().trim()
        if self.segments > 1:
            oldest = self._segments.pop(0)
            os.unlink(oldest.path)
            self._entries -= oldest.count
            self._payload_bytes -= oldest.payload_bytes
            removed += 1
        return removed


def test_the_retention_check_catches_a_trim_that_keeps_too_little(tmp_path: Path) -> None:
    """check_retention (used above) is not vacuous: it fails for a greedy trim."""
    h = _Greedy(tmp_path / "h", fsync=False, segment_bytes=600, retain_entries=50)
    with pytest.raises(AssertionError):
        for i in range(1, 401):
            h.append(i, [cmd(i, 20)])
            h.trim()
            check_retention(h, 20 * i)
    h.close()


# ---------------------------------------------------------------------- reads from disk


def test_reads_across_segments_and_far_back_come_from_disk(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=20_000, cache_bytes=0)
    for first in range(1, 3001, 100):
        h.append(first, cmds(first, first + 99, 5))
    assert h.segments > 3 and h.cached_entries == 0
    every = h.read(1, 10_000, 1 << 30)
    assert every == cmds(1, 3000, 5)
    # Starting anywhere: within a segment, past a sparse-index slot, at a boundary.
    for start in (1, 2, INDEX_EVERY, INDEX_EVERY + 1, 777, 1500, 2999, 3000):
        assert h.read(start, 600, 1 << 30) == cmds(start, min(3000, start + 599), 5)
    assert h.index_slots() <= 3000 // INDEX_EVERY + h.segments
    h.close()


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_out_of_file_descriptors_puts_a_roll_off_instead_of_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """A flood of connections can use up a node's file descriptors: the next segment cannot
    be opened, nothing is lost, so the history goes on in the segment it has and rolls
    later (review finding: a node out of files stopped)."""
    h = open_history(tmp_path / "h", segment_bytes=20_000, cache_bytes=0)
    real_open = os.open
    full = True

    def no_files(path: object, *args: object, **kwargs: object) -> int:
        if full and os.path.basename(str(path)).startswith("hist-"):
            raise OSError(code, os.strerror(code))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    h.append(1, cmds(1, 100, 5))
    monkeypatch.setattr(os, "open", no_files)
    for first in range(101, 1501, 100):
        h.append(first, cmds(first, first + 99, 5))
    assert h.rolls_deferred > 0 and h.segments == 1
    full = False
    for first in range(1501, 3001, 100):
        h.append(first, cmds(first, first + 99, 5))
    assert h.segments > 1
    assert h.read(1, 10_000, 1 << 30) == cmds(1, 3000, 5)
    h.close()
    again = open_history(tmp_path / "h", segment_bytes=20_000, cache_bytes=0)
    assert again.read(1, 10_000, 1 << 30) == cmds(1, 3000, 5)
    again.close()


def test_the_cache_serves_the_head_and_the_disk_the_rest(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", cache_bytes=5000)
    h.append(1, cmds(1, 500, 50))
    assert 0 < h.cached_entries < 500 and h.cache_bytes <= 5000
    head = 500 - h.cached_entries + 1
    assert h.read(head, 1000, 1 << 20) == cmds(head, 500, 50)
    assert h.read(1, 1000, 1 << 20) == cmds(1, 500, 50)
    h.close()


def test_memory_does_not_grow_with_the_history(tmp_path: Path) -> None:
    """Appending a hundred times more entries leaves memory where it was: old entries
    live on disk only, the cache and the sparse index stay within their bounds."""
    h = open_history(tmp_path / "h", segment_bytes=32 * 1024, retain_entries=1000,
                     cache_bytes=16 * 1024)

    def feed(first: int, count: int) -> None:
        for start in range(first, first + count, 50):
            h.append(start, cmds(start, start + 49, 100))
            h.trim()

    feed(1, 2000)
    tracemalloc.start()
    try:
        feed(2001, 2000)
        before = tracemalloc.take_snapshot()
        feed(4001, 200_000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 256 * 1024, f"memory grew by {grown} bytes over 200,000 entries"
    assert h.cache_bytes <= 16 * 1024
    assert h.entries < 1000 + 2 * (32 * 1024 // 100)
    assert h.index_slots() < 20
    assert h.read(h.last_index, 1, 1 << 20) == [cmd(h.last_index, 100)]
    h.close()


# ---------------------------------------------------------------------- recovery


def test_reopen_recovers_everything(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=1000)
    h.append(1, cmds(1, 100))
    h.sync()
    h.close()
    again = open_history(tmp_path / "h", segment_bytes=1000)
    assert (again.first_index, again.last_index) == (1, 100)
    assert again.read(1, 1000, 1 << 20) == cmds(1, 100)
    again.append(1, cmds(1, 110))
    assert again.read(95, 1000, 1 << 20) == cmds(95, 110)
    again.close()


@pytest.mark.parametrize("damage", ["cut", "zeros", "garbage"])
def test_a_torn_tail_is_truncated_and_filled_in_again(tmp_path: Path, damage: str) -> None:
    h = open_history(tmp_path / "h")
    h.append(1, cmds(1, 20))
    h.close()
    path = tmp_path / "h" / segment_name(1)
    size = path.stat().st_size
    with path.open("r+b") as f:
        if damage == "cut":
            f.truncate(size - 5)  # in the middle of record 20
        elif damage == "zeros":
            f.truncate(size - 5)
            f.seek(0, os.SEEK_END)
            f.write(b"\0" * 4096)  # blocks allocated, never written
        else:
            f.seek(size - 3)
            f.write(b"\xff\xfe\xfd")  # a CRC mismatch in record 20
    again = open_history(tmp_path / "h")
    assert (again.first_index, again.last_index) == (1, 19)
    assert again.read(1, 100, 1 << 20) == cmds(1, 19)
    # The node delivers again from index 1 after a restart: 20 comes back.
    again.append(1, cmds(1, 25))
    assert again.read(1, 100, 1 << 20) == cmds(1, 25)
    again.close()
    third = open_history(tmp_path / "h")
    assert third.read(18, 100, 1 << 20) == cmds(18, 25)
    third.close()


def test_a_break_in_an_earlier_segment_drops_the_later_ones(tmp_path: Path) -> None:
    """Unsynced segments may lose their tails in any order: the valid prefix stays, every
    segment after a break goes (the node redelivers what follows the break)."""
    h = open_history(tmp_path / "h", segment_bytes=400)
    h.append(1, cmds(1, 10))
    h.append(11, cmds(11, 20))
    h.append(21, cmds(21, 30))
    h.close()
    names = files(tmp_path / "h")
    assert len(names) == 3
    second = tmp_path / "h" / names[1]
    with second.open("r+b") as f:
        f.truncate(second.stat().st_size - 1)
    again = open_history(tmp_path / "h", segment_bytes=400)
    assert (again.first_index, again.last_index) == (1, 19)
    assert files(tmp_path / "h") == names[:2]
    again.append(1, cmds(1, 30))
    assert again.read(1, 100, 1 << 20) == cmds(1, 30)
    again.close()


def test_an_unreadable_header_or_a_missing_segment_ends_the_prefix(tmp_path: Path) -> None:
    h = open_history(tmp_path / "h", segment_bytes=400)
    for first in (1, 11, 21, 31):
        h.append(first, cmds(first, first + 9))
    h.close()
    names = files(tmp_path / "h")
    (tmp_path / "h" / names[2]).write_bytes(b"")  # created, never written: power cut
    again = open_history(tmp_path / "h", segment_bytes=400)
    assert (again.first_index, again.last_index) == (1, 20)
    assert files(tmp_path / "h") == names[:2]
    again.close()
    (tmp_path / "h" / names[0]).unlink()  # an operator removed the oldest: still fine
    third = open_history(tmp_path / "h", segment_bytes=400)
    assert (third.first_index, third.last_index) == (11, 20)
    third.close()
    (tmp_path / "h" / names[1]).write_bytes(b"NOTAHIST" + b"\0" * 40)
    fourth = open_history(tmp_path / "h", segment_bytes=400)
    assert (fourth.first_index, fourth.last_index) == (1, 0)
    assert files(tmp_path / "h") == []
    fourth.close()


# ---------------------------------------------------------------------- opening lazily


def record_offsets(path: Path) -> list[int]:
    """The file offset of each record of a segment (walking the length fields)."""
    data = path.read_bytes()
    offsets, pos = [], HEADER_SIZE
    while pos + 8 <= len(data):
        offsets.append(pos)
        pos += 8 + int.from_bytes(data[pos : pos + 4], "little")
    return offsets


def build(path: Path, entries: int, segment_bytes: int = 2000, size: int = 10) -> list[str]:
    """A closed history of ``entries`` entries in batches of 10; its segment files."""
    h = open_history(path, segment_bytes=segment_bytes)
    for first in range(1, entries + 1, 10):
        h.append(first, cmds(first, min(entries, first + 9), size))
    h.close()
    return files(path)


def check_open_cost(history: History) -> None:
    """What opening parsed: every record of the last segment, and of each earlier one
    only its last record (the tail check) -- not the entries it holds."""
    segments = history._segments
    if not segments:
        assert history.records_scanned == 0
        return
    last_segment = history.last_index - segments[-1].first + 1
    assert history.records_scanned == last_segment + len(segments) - 1
    assert history.index_slots() == len(segments[-1].offsets)


def test_opening_parses_the_last_segment_only(tmp_path: Path) -> None:
    """Ten times the segments, the same records parsed at open (plus one per segment):
    counted, not timed."""
    parsed = {}
    biggest = 0  # entries in the fullest segment
    for entries in (205, 2005):
        path = tmp_path / f"h{entries}"
        names = build(path, entries)
        h = open_history(path, segment_bytes=2000)
        assert (h.first_index, h.last_index, h.segments) == (1, entries, len(names))
        check_open_cost(h)
        parsed[h.segments] = h.records_scanned
        biggest = max(biggest, *(s.count for s in h._segments))
        h.close()
    (few, few_parsed), (many, many_parsed) = sorted(parsed.items())
    assert many >= 10 * few
    # 1800 more entries, but only one more record per extra segment (the last
    # segments differ, by at most one segment's worth).
    assert many_parsed - few_parsed <= (many - few) + biggest < 1800 // 4


class _EagerOpen(History):
    """A planted bug (the old open): every segment is scanned at construction."""

    def __init__(self, directory: Path, **kwargs: int) -> None:
        super().__init__(directory, fsync=False, **kwargs)  # type: ignore[arg-type]
        for segment in self._segments:
            if not segment.scanned:
                self._build_index(segment)


def test_the_open_cost_check_catches_an_open_that_scans_everything(tmp_path: Path) -> None:
    """check_open_cost (used above) is not vacuous."""
    build(tmp_path / "h", 505)
    h = _EagerOpen(tmp_path / "h", segment_bytes=2000)
    with pytest.raises(AssertionError):
        check_open_cost(h)
    h.close()


def test_reads_build_each_segment_index_once_on_first_use(tmp_path: Path) -> None:
    names = build(tmp_path / "h", 3000, segment_bytes=20_000, size=5)
    h = open_history(tmp_path / "h", segment_bytes=20_000, cache_bytes=0)
    assert h.segments == len(names) > 3
    at_open = h.records_scanned
    # One read in the middle of the second segment scans that segment, no other.
    second = h._segments[1]
    middle = second.first + second.count // 2
    assert h.read(middle, 3, 1 << 30) == cmds(middle, middle + 2, 5)
    assert h.records_scanned == at_open + second.count
    assert [s.scanned for s in h._segments] == [False, True] + [False] * (h.segments - 3) + [True]
    assert h.read(second.first, 2, 1 << 30) == cmds(second.first, second.first + 1, 5)
    assert h.records_scanned == at_open + second.count  # built once
    # Reads anywhere, across every boundary, give the entries appended.
    assert h.read(1, 10_000, 1 << 30) == cmds(1, 3000, 5)
    for start in (1, 2, INDEX_EVERY, INDEX_EVERY + 1, 777, 1500, 2999, 3000,
                  *(s.first - 1 for s in h._segments[1:]), *(s.first for s in h._segments)):
        assert h.read(start, 600, 1 << 30) == cmds(start, min(3000, start + 599), 5)
    assert h.records_scanned == at_open + sum(s.count for s in h._segments[:-1])
    # The index is as small as one built at open used to be.
    assert h.index_slots() <= 3000 // INDEX_EVERY + h.segments
    # Appending goes on after the last entry, and everything reopens.
    h.append(3001, cmds(3001, 3100, 5))
    h.close()
    again = open_history(tmp_path / "h", segment_bytes=20_000, cache_bytes=0)
    assert again.read(1, 10_000, 1 << 30) == cmds(1, 3100, 5)
    again.close()


@pytest.mark.parametrize("bad", [1, 6])
@pytest.mark.parametrize("damage", ["crc", "hole"])
def test_damage_in_an_earlier_segment_is_found_at_read(
    tmp_path: Path, damage: str, bad: int
) -> None:
    """Open does not read the middle of an earlier segment: damage there is found by the
    first read that needs the segment, which raises HistoryError (the node answers that
    fetch with nothing) -- for every read that reaches the damage. The rest still reads."""
    names = build(tmp_path / "h", 100, segment_bytes=600)
    first_segment = tmp_path / "h" / names[0]
    in_it = len(record_offsets(first_segment))
    at = record_offsets(first_segment)[bad - 1]  # the record of index `bad`
    with first_segment.open("r+b") as f:
        if damage == "crc":
            f.seek(at + 8 + 5)
            byte = f.read(1)
            f.seek(at + 8 + 5)
            f.write(bytes([byte[0] ^ 0x01]))
        else:
            f.seek(at)
            f.write(b"\0" * 40)  # a lost write: zeros over the record and beyond
    h = open_history(tmp_path / "h", segment_bytes=600)
    assert (h.first_index, h.last_index) == (1, 100)  # not found at open
    assert files(tmp_path / "h") == names
    check_open_cost(h)
    assert h.read(1, bad - 1, 1 << 20) == cmds(1, bad - 1)  # before the damage: fine
    for start in (1, bad, bad + 1, in_it):
        with pytest.raises(HistoryError, match=names[0]):
            h.read(start, 100, 1 << 20)
    assert h.read(in_it + 1, 200, 1 << 20) == cmds(in_it + 1, 100)  # later segments
    h.append(101, cmds(101, 110))
    assert h.read(95, 100, 1 << 20) == cmds(95, 110)
    with pytest.raises(HistoryError):  # still, it is not repaired
        h.read(bad, 1, 1 << 20)
    h.close()


def test_a_hole_in_the_last_segment_is_cut_at_open(tmp_path: Path) -> None:
    """The last segment can hold unsynced data, lost in any page, not only at the end:
    it is checked record by record at open and cut at the first bad one."""
    names = build(tmp_path / "h", 100, segment_bytes=600)
    last = tmp_path / "h" / names[-1]
    first_in_last = int(names[-1][5:25])
    offsets = record_offsets(last)
    assert len(offsets) > 4
    with last.open("r+b") as f:
        f.seek(offsets[2])
        f.write(b"\0" * 30)  # a hole; the records after it are intact
    h = open_history(tmp_path / "h", segment_bytes=600)
    assert (h.first_index, h.last_index) == (1, first_in_last + 1)
    h.append(1, cmds(1, 100))  # the node delivers the rest again
    assert h.read(1, 200, 1 << 20) == cmds(1, 100)
    h.close()


def test_a_missing_middle_segment_ends_the_prefix_at_open(tmp_path: Path) -> None:
    """The names say the segment before the gap holds more than it does: its tail check
    fails, it is scanned, and the history ends where it does, as before."""
    names = build(tmp_path / "h", 100, segment_bytes=600)
    assert len(names) >= 4
    (tmp_path / "h" / names[2]).unlink()
    h = open_history(tmp_path / "h", segment_bytes=600)
    assert (h.first_index, h.last_index) == (1, int(names[2][5:25]) - 1)
    assert files(tmp_path / "h") == names[:2]
    assert h.read(1, 200, 1 << 20) == cmds(1, h.last_index)
    h.close()


def test_a_big_last_record_passes_the_tail_check(tmp_path: Path) -> None:
    """The tail check reads backwards as far as the last record needs (here 300 KiB)."""
    h = open_history(tmp_path / "h", segment_bytes=100_000)
    h.append(1, cmds(1, 3))
    h.append(4, [cmd(4, 300 * 1024)])  # alone in a segment: bigger than segment_bytes
    h.append(5, cmds(5, 6))
    h.close()
    assert files(tmp_path / "h") == [segment_name(1), segment_name(4), segment_name(5)]
    again = open_history(tmp_path / "h", segment_bytes=100_000)
    assert (again.first_index, again.last_index) == (1, 6)
    assert not again._segments[1].scanned
    check_open_cost(again)
    assert again.read(1, 10, 1 << 30) == [*cmds(1, 3), cmd(4, 300 * 1024), *cmds(5, 6)]
    again.close()


def test_a_byte_retention_after_reopen_trims_without_scanning_at_open(tmp_path: Path) -> None:
    """Unscanned segments count 0 payload bytes: open deletes nothing it cannot prove
    spare, trim() then scans the newest of them (one per call) until it can decide, the
    oldest are deleted unscanned, and restarting often does not make the disk grow."""
    kwargs = {"segment_bytes": 2000, "retain_entries": 0, "retain_bytes": 3000}
    appended = 0
    for round_ in range(60):
        h = open_history(tmp_path / "h", **kwargs)
        check_open_cost(h)
        # Less than the retention between restarts: what is new never proves alone that
        # the old segments are spare, so they go only if trim scans some.
        first = h.last_index + 1
        for i in range(first, first + 10):
            h.append(i, [cmd(i, 100)])
            appended += 100
            h.trim()
        assert h.disk_bytes() < 3000 + 4 * 2000, round_
        h.close()
    # A smaller retention at reopen: trim scans one segment per call, newest first,
    # until the scanned ones hold the retention; the older ones go unscanned.
    kwargs["retain_bytes"] = 1500
    h = open_history(tmp_path / "h", **kwargs)
    check_open_cost(h)
    at_open, held = h.records_scanned, h.segments
    assert held >= 3
    for _ in range(held):
        scanned = h.records_scanned
        h.trim()
        assert h.records_scanned - scanned <= max(s.count for s in h._segments)
        flags = [s.scanned for s in h._segments]
        assert flags == sorted(flags)  # the scanned ones: the newest
    assert h.segments < held
    # Every record scanned is in a segment still held: none deleted was ever scanned.
    assert h.records_scanned == at_open + sum(s.count for s in h._segments[:-1] if s.scanned)
    check_retention(h, appended)
    h.close()


# ---------------------------------------------------------------------- in a node


def _compacted_at(client: Client, index: int, node: int | None = None) -> int | None:
    """The earliest index named when subscribing from ``index`` is refused, else None."""
    try:
        next(client.subscribe(index, node=node, idle_timeout=2, unreachable_timeout=30))
    except Compacted as exc:
        return exc.earliest
    except StopIteration:
        pass
    return None


@pytest.mark.integration
def test_nodes_keep_their_retention_for_subscribers_and_refuse_below_it(tmp_path: Path) -> None:
    """Tiny retention, tiny segments: old entries leave the disk, recent ones are served,
    a subscription from below the retention fails naming the earliest index, and a
    subscriber following the head sees every entry while segments are deleted."""
    cluster = secure_cluster(tmp_path, 3)
    retain = 50

    def start(i: int) -> Node:
        return Node(i, cluster, tmp_path / f"node{i}", fsync=False, retain_entries=retain,
                    history_segment_bytes=1024).start()

    nodes = {i: start(i) for i in cluster.ids}
    try:
        with Client(cluster, client_id="writer") as writer, Client(cluster) as reader:
            for k in range(30):  # many turns, so many segments
                writer.broadcast_many([b"old %d-%d" % (k, j) for j in range(10)])
            # A subscriber follows the head from here while the writer goes on (and the
            # nodes delete segments behind it).
            head = max(n.last_index for n in nodes.values()) + 1
            followed: list[Delivery] = []
            box: dict[str, BaseException] = {}

            def follow() -> None:
                with Client(cluster) as follower:
                    try:
                        stream = follower.subscribe(head, idle_timeout=60)
                        followed.extend(itertools.islice(stream, 100))
                    except BaseException as exc:
                        box["error"] = exc

            thread = threading.Thread(target=follow)
            thread.start()
            committed = []
            for k in range(10):
                committed += writer.broadcast_many([b"new %d-%d" % (k, j) for j in range(10)])
            thread.join(120)
            assert not thread.is_alive() and "error" not in box, box
            last = max(c.index for c in committed)
            wait_for("every node to deliver all", lambda: all(
                n.last_index >= last for n in nodes.values()))
            assert [d.index for d in followed] == list(range(head, head + len(committed)))
            by_index = {c.index: (c.client, c.seq) for c in committed}
            assert all(
                by_index.get(d.index) in (None, (d.command.client, d.command.seq))
                for d in followed
            )
            for node in nodes.values():
                assert node.first_index > 1
                held = node.delivered(node.first_index)
                assert len(held) == node.last_index - node.first_index + 1 >= retain
                assert node.history.disk_bytes() < 20 * 1024  # not the 400 entries written
                with pytest.raises(Compacted) as info:
                    node.delivered(1)
                assert info.value.earliest == node.first_index
            # Recent entries are served by any node ...
            recent = list(itertools.islice(reader.subscribe(last - 9, node=2), 10))
            assert [d.command.payload for d in recent] == [
                c.payload for c in nodes[1].delivered(last - 9)
            ]
            # ... old ones by none: the error names where to start.
            assert _compacted_at(reader, 1, node=3) == nodes[3].first_index
            earliest = min(n.first_index for n in nodes.values())
            assert _compacted_at(reader, 1) == earliest
            assert next(reader.subscribe(earliest)).index == earliest
        # A restarted node finds its history on disk: the same range, the same entries.
        before = (nodes[2].first_index, nodes[2].last_index, nodes[2].delivered(last - 19))
        nodes[2].stop()
        nodes[2] = start(2)
        after = (nodes[2].first_index, nodes[2].last_index, nodes[2].delivered(last - 19))
        assert after == before
    finally:
        for node in nodes.values():
            node.stop()


def test_a_node_refuses_bad_retention_arguments(tmp_path: Path) -> None:
    cluster = local_cluster(1, free_base_port(1))
    with pytest.raises(ConfigError, match="retain"):
        Node(1, cluster, tmp_path / "n1", retain_entries=-1)
    with pytest.raises(ConfigError, match="history_segment_bytes"):
        Node(1, cluster, tmp_path / "n1", history_segment_bytes=10)
