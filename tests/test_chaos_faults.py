"""Fault mechanics: power loss on real WAL files (driven by durability marks); partition links."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from broadcast.wal import WriteAheadLog
from chaos.faults import FaultLog, power_loss, read_marks, unsynced_bytes
from chaos.network import links_cut


class Draws(random.Random):
    """An rng whose ``random()`` and ``randint()`` answers are fixed."""

    def __init__(self, draw: float, pick: float = 0.5) -> None:
        super().__init__(0)
        self.draw = draw
        self.pick = pick

    def random(self) -> float:
        return self.draw

    def randint(self, a: int, b: int) -> int:
        return a + int((b - a) * self.pick)


_WRITER = """
import os, sys
from chaos.nodeproc import install_marks
from broadcast.wal import WriteAheadLog
install_marks(sys.argv[1])
wal, _ = WriteAheadLog.open(sys.argv[2])
wal.append([b"synced-1", b"synced-2"])
wal.sync()
wal.append([b"unsynced-3" * 50, b"unsynced-4" * 50])   # written, never synced: then killed
os.kill(os.getpid(), 9)
"""


def write_then_die(tmp_path: Path) -> tuple[Path, Path]:
    marks, data = tmp_path / "marks", tmp_path / "data"
    wal_dir = data / "wal"
    done = subprocess.run([sys.executable, "-c", _WRITER, str(marks), str(wal_dir)], check=False)
    assert done.returncode == -9
    return marks, data


def recovered(data: Path) -> list[bytes]:
    wal, records = WriteAheadLog.open(data / "wal")
    wal.close()
    return records


def test_marks_record_exactly_the_synced_prefix(tmp_path: Path) -> None:
    marks, data = write_then_die(tmp_path)
    assert len(read_marks(marks)) == 1
    assert unsynced_bytes(data, marks) == 2 * (8 + 500)  # two frames past the mark
    assert len(recovered(data)) == 4  # a plain kill loses nothing: the page cache survives


def test_power_loss_discards_the_unsynced_tail(tmp_path: Path) -> None:
    marks, data = write_then_die(tmp_path)
    cuts = power_loss(data, marks, Draws(0.1))
    assert [(c.size - c.durable, c.kept - c.durable) for c in cuts] == [(1016, 0)]
    assert recovered(data) == [b"synced-1", b"synced-2"]
    # What survived is now durable: a second power cut takes nothing more.
    assert unsynced_bytes(data, marks) == 0
    assert power_loss(data, marks, Draws(0.1)) == []


def test_power_loss_may_keep_a_torn_prefix_or_zeros(tmp_path: Path) -> None:
    for draw, pick in ((0.6, 0.75), (0.9, 0.3), (0.6, 0.0), (0.6, 1.0)):
        sub = tmp_path / f"{draw}-{pick}"
        sub.mkdir()
        marks, data = write_then_die(sub)
        (cut,) = power_loss(data, marks, Draws(draw, pick))
        assert cut.durable <= cut.kept <= cut.size
        records = recovered(data)
        # Never less than what was synced; at most what was written; always a prefix.
        assert records[:2] == [b"synced-1", b"synced-2"]
        assert len(records) <= 4


def test_power_loss_wipes_files_never_synced(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "never-synced").write_bytes(b"x" * 100)
    (cut,) = power_loss(data, tmp_path / "marks", Draws(0.1))
    assert (cut.durable, cut.kept) == (0, 0)
    assert (data / "never-synced").stat().st_size == 0


def test_read_marks_skips_torn_lines(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.write_text("/a\t10\t1:2\n/a\t20\t1:2\n/b\t5\n/c\t7\t1:")
    assert read_marks(marks) == {(1, 2): 20}
    assert read_marks(tmp_path / "missing") == {}


def test_fault_log_counts_starts() -> None:
    faults = FaultLog()
    faults.record("kill", "start", node=1)
    faults.record("kill", "end", node=1)
    faults.record("pause", "start", node=2)
    assert faults.counts() == {"kill": 1, "pause": 1}
    assert all("wall" in e and "t" in e for e in faults.entries)


def test_partition_links() -> None:
    nodes = [1, 2, 3, 4, 5]
    assert links_cut([[1], [2, 3]], [1, 2, 3]) == {frozenset((1, 2)), frozenset((1, 3))}
    # A bridge: {1, 2} and {4, 5} cut from each other, 3 talks to everyone.
    bridge = links_cut([[1, 2], [4, 5]], [1, 2, 4, 5])
    assert len(bridge) == 4 and not any(3 in pair for pair in bridge)
    # Nodes in no group are cut from everyone.
    assert len(links_cut([[1, 2, 3, 4]], nodes)) == 4
