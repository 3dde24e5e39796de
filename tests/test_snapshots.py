"""Snapshot store: round trips, atomic saves, damage detection, pruning, concurrent readers."""

from __future__ import annotations

import os
import random
import stat
import threading
import zlib
from pathlib import Path

import pytest
from test_wal import PageCache

from broadcast.snapshots import (
    HEADER_SIZE,
    SnapshotError,
    SnapshotFile,
    SnapshotStore,
    snapshot_name,
)


def _blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


class _Crash(Exception):
    """The process dies here (raised by a patched system call)."""


# ------------------------------------------------------------------ normal use


def test_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snaps")
    assert store.latest() is None
    assert store.latest_meta() is None
    assert store.disk_bytes() == 0

    blob = _blob(1000)
    meta = store.save(7, 42, blob)
    path = tmp_path / "snaps" / snapshot_name(7)
    assert meta == SnapshotFile(7, 42, 1000, zlib.crc32(blob), path)
    assert path.name == "snap-00000000000000000007.snap"
    assert store.latest() == (meta, blob)
    assert store.latest_meta() == meta
    assert store.disk_bytes() == HEADER_SIZE + 1000

    # A fresh store (a restart) reads the same; an empty blob is a snapshot too.
    reopened = SnapshotStore(tmp_path / "snaps")
    assert reopened.latest() == (meta, blob)
    empty = reopened.save(8, 43, b"")
    assert reopened.latest() == (empty, b"")
    assert SnapshotStore(tmp_path / "snaps").latest_meta() == empty


def test_large_blob_round_trips(tmp_path: Path) -> None:
    blob = _blob(20 * 1024 * 1024, seed=3)
    store = SnapshotStore(tmp_path)
    store.save(1_000_000, 5, blob)
    latest = SnapshotStore(tmp_path).latest()
    assert latest is not None
    assert latest[0].size == len(blob)
    assert latest[1] == blob


def test_only_the_newest_two_files_are_kept(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for slot in (10, 20, 30, 40):
        store.save(slot, slot + 1, _blob(100, seed=slot))
        kept = [s for s in (10, 20, 30, 40) if s <= slot][-2:]
        assert _files(tmp_path) == [snapshot_name(s) for s in kept]
    assert store.disk_bytes() == 2 * (HEADER_SIZE + 100)
    latest = store.latest()
    assert latest is not None and latest[0].slot == 40


def test_saving_an_older_or_the_same_slot_is_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path)
    store.save(10, 1, b"ten")
    newest = store.save(20, 2, b"twenty")
    before = {p.name: p.stat().st_ino for p in tmp_path.iterdir()}

    def forbidden(*args: object) -> int:
        raise AssertionError("a no-op save wrote a file")

    monkeypatch.setattr(os, "open", forbidden)
    assert store.save(15, 99, b"older") == newest
    assert store.save(20, 99, b"same slot, other blob") == newest
    assert store.save(5, 99, b"oldest") == newest
    monkeypatch.undo()
    assert {p.name: p.stat().st_ino for p in tmp_path.iterdir()} == before
    assert store.latest() == (newest, b"twenty")


def test_bad_arguments_write_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    for slot, index in [(-1, 0), (1 << 64, 0), (1, -1), (1, 1 << 64)]:
        with pytest.raises(ValueError, match="u64"):
            store.save(slot, index, b"x")
    assert _files(tmp_path) == []


def test_fsync_off_makes_no_sync_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(fd: int) -> None:
        raise AssertionError("sync system call with fsync=False")

    monkeypatch.setattr(os, "fsync", forbidden)
    monkeypatch.setattr(os, "fdatasync", forbidden)
    store = SnapshotStore(tmp_path / "new", fsync=False)
    meta = store.save(3, 4, b"blob")
    assert store.latest() == (meta, b"blob")


# -------------------------------------------------------------------- crashes


def test_crash_before_the_rename_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path)
    previous = store.save(10, 1, b"previous")

    def dying_replace(source: object, target: object) -> None:
        raise _Crash

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(_Crash):
        store.save(20, 2, _blob(5000))
    monkeypatch.undo()
    tmp = tmp_path / (snapshot_name(20) + ".tmp")
    assert tmp.exists()  # written in full, never renamed
    assert store.latest() == (previous, b"previous")  # a .tmp file is never read
    assert store.latest_meta() == previous
    assert store.disk_bytes() == HEADER_SIZE + len(b"previous")

    # A torn temporary file of a newer slot is no snapshot either; a restart removes both.
    (tmp_path / (snapshot_name(30) + ".tmp")).write_bytes(b"PAXOSSNP\x01")
    restarted = SnapshotStore(tmp_path)
    assert _files(tmp_path) == [snapshot_name(10)]
    assert restarted.latest() == (previous, b"previous")
    assert restarted.save(20, 2, b"again").slot == 20


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path)
    previous = store.save(1, 1, b"one")
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        if stat.S_ISREG(os.fstat(fd).st_mode) and len(data) > HEADER_SIZE:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save(2, 2, _blob(1000))
    monkeypatch.undo()
    assert _files(tmp_path) == [snapshot_name(1)]
    assert store.latest() == (previous, b"one")


def test_a_saved_snapshot_survives_power_loss(tmp_path: Path) -> None:
    """Once save() returns, a power cut keeps the new snapshot whole: the node may have
    compacted its log against it. So the blob must be fsynced before the rename, and
    the rename before save() returns."""
    directory = tmp_path / "snaps"
    directory.mkdir()
    blob = _blob(3000)
    with PageCache(directory) as cache:
        store = SnapshotStore(directory)
        store.save(10, 1, b"previous")
        saved = store.save(20, 2, blob)
    cache.power_cut()
    try:
        latest = SnapshotStore(directory).latest()
    except SnapshotError as exc:
        raise AssertionError(
            f"power cut after save(): the saved snapshot is damaged: {exc}"
        ) from exc
    assert latest == (saved, blob), (
        f"power cut after save(): the saved snapshot was lost (latest: {latest})"
    )


def test_power_loss_before_the_rename_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "snaps"
    directory.mkdir()
    with PageCache(directory) as cache:
        store = SnapshotStore(directory)
        previous = store.save(10, 1, b"previous")

        def dying_replace(source: object, target: object) -> None:
            raise _Crash

        monkeypatch.setattr(os, "replace", dying_replace)
        with pytest.raises(_Crash):
            store.save(20, 2, _blob(3000))
        monkeypatch.undo()
    cache.power_cut()
    assert SnapshotStore(directory).latest() == (previous, b"previous")
    assert _files(directory) == [snapshot_name(10)]


# --------------------------------------------------------------------- damage


def _two_snapshots(directory: Path) -> tuple[SnapshotStore, Path]:
    store = SnapshotStore(directory)
    store.save(10, 1, b"older, intact")
    store.save(20, 2, _blob(200))
    return store, directory / snapshot_name(20)


@pytest.mark.parametrize("where", ["header", "blob"])
def test_every_damaged_byte_of_the_newest_file_is_reported(tmp_path: Path, where: str) -> None:
    store, newest = _two_snapshots(tmp_path)
    pristine = newest.read_bytes()
    offsets = range(HEADER_SIZE) if where == "header" else range(HEADER_SIZE, len(pristine))
    for offset in offsets:
        _flip(newest, offset)
        # No fallback to the intact older snapshot: the log may be compacted against this one.
        with pytest.raises(SnapshotError) as caught:
            store.latest()
        assert caught.value.path == newest
        assert str(newest) in str(caught.value)
        if where == "header":
            with pytest.raises(SnapshotError):
                store.latest_meta()
        newest.write_bytes(pristine)
    latest = store.latest()
    assert latest is not None and latest[0].slot == 20


@pytest.mark.parametrize("keep", [0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 199])
def test_truncated_newest_file_is_reported(tmp_path: Path, keep: int) -> None:
    store, newest = _two_snapshots(tmp_path)
    os.truncate(newest, keep)
    match = "header truncated" if keep < HEADER_SIZE else "blob bytes"
    with pytest.raises(SnapshotError, match=match) as caught:
        store.latest()
    assert caught.value.path == newest
    with pytest.raises(SnapshotError, match=match):
        store.latest_meta()


def test_trailing_bytes_and_a_renamed_file_are_reported(tmp_path: Path) -> None:
    store, newest = _two_snapshots(tmp_path)
    with newest.open("ab") as f:
        f.write(b"\x00")
    with pytest.raises(SnapshotError, match="blob bytes"):
        store.latest()
    newest.write_bytes(newest.read_bytes()[:-1])
    newest.rename(tmp_path / snapshot_name(21))
    with pytest.raises(SnapshotError, match="header says slot 20, name says 21"):
        store.latest()


# ----------------------------------------------------------------- concurrency


def test_readers_are_not_blocked_by_a_save_writing_its_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """latest_meta() and disk_bytes() answer (with the previous snapshot) while a save on
    another thread is stuck in the fsync of its blob, and see the new one once it returns."""
    store = SnapshotStore(tmp_path)
    previous = store.save(10, 1, b"previous")
    in_fsync = threading.Event()
    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            in_fsync.set()
            assert release.wait(timeout=30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    saved: list[SnapshotFile] = []
    saver = threading.Thread(target=lambda: saved.append(store.save(20, 2, _blob(4096))))
    saver.start()
    try:
        assert in_fsync.wait(timeout=30)
        assert store.latest_meta() == previous
        assert store.disk_bytes() == HEADER_SIZE + len(b"previous")
        assert store.latest() == (previous, b"previous")
    finally:
        release.set()
        saver.join(timeout=30)
    assert not saver.is_alive()
    assert store.latest_meta() == saved[0]
    assert saved[0].slot == 20
