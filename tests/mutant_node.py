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
                time.sleep(HOLD_S)
                os.kill(os.getpid(), signal.SIGKILL)
        real(fd)
        if regular:
            synced[key] = info.st_size

    os.fdatasync = fdatasync


def main(argv: list[str]) -> None:
    from chaos.nodeproc import _die_with_parent, install_marks

    _die_with_parent()
    arm = os.environ.get("PAXOS_TEST_CRASH_ARM")
    if arm:
        install_crash_point(Path(arm))
    marks = os.environ.get("PAXOS_TEST_MARKS")
    if marks:
        install_marks(marks)  # outside the crash point: a sync that never completes leaves no mark
    import runtime_mutants

    name = os.environ.get(runtime_mutants.ENV)
    if name:
        runtime_mutants.apply(name)
    from broadcast.cli import main as paxos

    paxos(["node", *argv], prog_name="paxos")


if __name__ == "__main__":
    main(sys.argv[1:])
