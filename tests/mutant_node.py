"""``python tests/mutant_node.py <paxos node arguments>``: a real node, instrumented for tests.

It runs the unmodified ``paxos node`` command in this process, after (each only if
its environment variable is set):

* ``PAXOS_TEST_CRASH_ARM=PATH``: a **crash point**. Once the file PATH exists, the
  first ``fdatasync`` of a file whose unsynced bytes contain PATH's content (a marker
  payload: its accept record is being made durable) never completes: the disk is
  slow, the sync is held for :data:`HOLD_S`, and then the power goes (``SIGKILL``).
  What that sync would have made durable is lost with the power cut that follows
  (see ``PAXOS_TEST_MARKS``), and whatever the node did before the sync (sent its
  messages, say) has had all the time it needs to leave the machine.
* ``PAXOS_TEST_MARKS=PATH``: the fsync marks of :mod:`chaos.nodeproc` (what each
  completed sync made durable), for :func:`chaos.faults.power_loss`.
* ``PAXOS_TEST_MUTANT=NAME``: the planted bug NAME of :mod:`runtime_mutants`.
* ``PAXOS_TEST_CRASH_STEP=STEP``: the power goes (``SIGKILL``) at one step of the
  first snapshot-then-compact (see :data:`CRASH_STEPS`); the test then drops what
  was not synced.

Like ``chaos.nodeproc``, it dies with the test process (``PAXOS_CHAOS_PARENT``).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from pathlib import Path

#: How long a sync at the crash point is held before the power goes.
HOLD_S = 1.0


def install_crash_point(arm: Path) -> None:
    real = os.fdatasync
    synced: dict[tuple[int, int], int] = {}  # file -> its size at its last sync

    def fdatasync(fd: int) -> None:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        key = (info.st_dev, info.st_ino)
        if regular and arm.exists():
            marker = arm.read_bytes()
            with open(f"/proc/self/fd/{fd}", "rb") as file:  # the fd may be write-only
                file.seek(synced.get(key, 0))
                unsynced = file.read()
            if marker and marker in unsynced:
                time.sleep(HOLD_S)  # the crash point: the sync hangs, then the power goes
                os.kill(os.getpid(), signal.SIGKILL)
        real(fd)
        if regular:
            synced[key] = info.st_size

    os.fdatasync = fdatasync


#: The steps of snapshot-then-compact a node can be killed at, in their order.
CRASH_STEPS = (
    "before-snapshot-rename",  # the snapshot's temp file written and synced, not renamed
    "after-snapshot-rename",  # the snapshot durable, the replica not compacted
    "before-log-floor",  # promise and prefix re-recorded (synced), no segment deleted
    "after-log-floor",  # the log's FLOOR durable, no segment deleted yet
    "after-first-unlink",  # one obsolete segment deleted, the others not
)


def install_crash_step(step: str) -> None:
    if step not in CRASH_STEPS:
        raise SystemExit(f"unknown crash step {step!r}")

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    real_replace = os.replace
    real_rename = os.rename
    real_unlink = os.unlink

    def moved(src: object, dst: object, real: object, *args: object, **kw: object) -> None:
        name = os.path.basename(str(dst))
        is_snapshot = name.startswith("snap-") and name.endswith(".snap")
        if step == "before-snapshot-rename" and is_snapshot:
            die()
        real(src, dst, *args, **kw)  # type: ignore[operator]
        if step == "after-snapshot-rename" and is_snapshot:
            die()
        if step == "after-log-floor" and name == "FLOOR":
            die()

    os.replace = lambda src, dst, *a, **k: moved(src, dst, real_replace, *a, **k)  # type: ignore[assignment]
    os.rename = lambda src, dst, *a, **k: moved(src, dst, real_rename, *a, **k)  # type: ignore[assignment]

    def unlink(path: object, *args: object, **kw: object) -> None:
        real_unlink(path, *args, **kw)  # type: ignore[arg-type]
        name = os.path.basename(str(path))
        if step == "after-first-unlink" and name.startswith("wal-"):
            die()

    os.unlink = unlink  # type: ignore[assignment]
    if step == "before-log-floor":
        from broadcast.wal import WriteAheadLog

        real_compact = WriteAheadLog.compact

        def compact(self: WriteAheadLog, keep_from: int) -> int:
            if keep_from > self.floor:
                die()
            return real_compact(self, keep_from)

        WriteAheadLog.compact = compact  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    from chaos.nodeproc import _die_with_parent, install_marks

    _die_with_parent()
    arm = os.environ.get("PAXOS_TEST_CRASH_ARM")
    if arm:
        install_crash_point(Path(arm))
    marks = os.environ.get("PAXOS_TEST_MARKS")
    if marks:
        install_marks(marks)  # outside the crash point: a sync that never completes leaves no mark
    step = os.environ.get("PAXOS_TEST_CRASH_STEP")
    if step:
        install_crash_step(step)
    import runtime_mutants

    name = os.environ.get(runtime_mutants.ENV)
    if name:
        runtime_mutants.apply(name)
    from broadcast.cli import main as paxos

    paxos(["node", *argv], prog_name="paxos")


if __name__ == "__main__":
    main(sys.argv[1:])
