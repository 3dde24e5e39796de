"""Fault bookkeeping: the timestamped fault log, and power loss on a node's data directory."""

from __future__ import annotations

import datetime
import json
import os
import random
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULT_KINDS = ("kill", "pause", "partition", "powerloss", "reconfigure")
#: The faults a nested fault of a partition (``--compose``) is drawn from: something that
#: happens to one node. A membership change is not; it could also wait for a quorum the
#: partition keeps apart until the partition ends, which it does only after the change.
NESTED_KINDS = ("kill", "pause", "powerloss")


class FaultLog:
    """Every fault's start and end, with wall-clock and run-relative timestamps (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self.entries: list[dict[str, Any]] = []

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def record(self, fault: str, phase: str, **details: Any) -> dict[str, Any]:
        entry = {
            "t": round(self.elapsed(), 3),
            "wall": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "fault": fault,
            "phase": phase,
            **details,
        }
        with self._lock:
            self.entries.append(entry)
        return entry

    def counts(self) -> dict[str, int]:
        """Faults injected, by kind (counting starts only)."""
        out: dict[str, int] = {}
        with self._lock:
            for entry in self.entries:
                if entry["phase"] == "start":
                    out[entry["fault"]] = out.get(entry["fault"], 0) + 1
        return out

    def save(self, path: Path) -> None:
        with self._lock, path.open("w") as f:
            for entry in self.entries:
                f.write(json.dumps(entry) + "\n")


FileId = tuple[int, int]  # (st_dev, st_ino): survives renames


def read_marks(path: Path) -> dict[FileId, int]:
    """The last durable size the node recorded for each file (see :mod:`.nodeproc`)."""
    marks: dict[FileId, int] = {}
    try:
        text = path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return marks
    for line in text.splitlines():
        parts = line.rsplit("\t", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue  # not a complete line
        dev, sep, ino = parts[2].partition(":")
        if sep and dev.isdigit() and ino.isdigit():
            marks[(int(dev), int(ino))] = int(parts[1])
    return marks


def _files(data_dir: Path) -> list[tuple[str, FileId, int]]:
    """Every regular file under ``data_dir``: (path, id, size)."""
    out = []
    for folder, _, names in os.walk(data_dir):
        for name in sorted(names):
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                out.append((path, (info.st_dev, info.st_ino), info.st_size))
    return out


def unsynced_bytes(data_dir: Path, marks: Path) -> int:
    """Bytes under ``data_dir`` past their file's last durable mark, right now."""
    durable = read_marks(marks)
    return sum(max(0, size - durable.get(fid, 0)) for _, fid, size in _files(data_dir))


@dataclass(frozen=True, slots=True)
class Truncation:
    """What power loss did to a file: kept ``kept`` of ``size`` bytes (``durable`` were synced)."""

    path: str
    size: int
    durable: int
    kept: int
    zeroed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": os.path.basename(self.path),
            "size": self.size,
            "durable": self.durable,
            "kept": self.kept,
            "zeroed": self.zeroed,
        }


def power_loss(data_dir: Path, marks: Path, rng: random.Random) -> list[Truncation]:
    """Make ``data_dir`` look like the machine lost power when its (killed) node died.

    Call only after the node process is dead. For every file, the bytes past its last
    durable mark (all of it, for a file never synced) were in the page cache only: a
    power cut may keep none of them, any prefix of them (a torn write), or leave the
    region zero-filled (blocks allocated, data never written). Each is chosen at random.
    Bytes at or below the mark are never touched: that would be a disk that lies about
    fsync, not a power cut.

    Afterwards the surviving state is, by definition, what is on disk: the marks are
    advanced to it, so a later power cut cannot take it away again.
    """
    durable_sizes = read_marks(marks)
    done: list[Truncation] = []
    for path, fid, size in _files(data_dir):
        durable = durable_sizes.get(fid, 0)
        if size <= durable:
            continue
        draw = rng.random()
        kept = durable if draw < 0.5 else rng.randint(durable, size)
        zeroed = size - kept if draw >= 0.85 else 0
        with open(path, "r+b") as f:
            f.truncate(kept)
            if zeroed:
                f.seek(kept)
                f.write(b"\0" * zeroed)
        done.append(Truncation(path, size, durable, kept, zeroed))
    with marks.open("a") as f:
        for path, fid, size in _files(data_dir):
            f.write(f"{path}\t{size}\t{fid[0]}:{fid[1]}\n")
    return done
