"""``python -m chaos.nodeproc MARKS -- <paxos node arguments>``: a real node,
plus a record of what it made durable, for simulating power loss.

It runs the unmodified ``paxos node`` command in this process, after wrapping
``os.fdatasync`` and ``os.fsync``: each successful sync of a regular file appends one
line ``<path>\\t<size>\\t<device>:<inode>`` to the MARKS file, where ``<size>`` is the
file's size *before* the sync began: every sync covers at least the bytes below its
mark, and the line is written before the sync returns to its caller, so:

* every byte below the last mark of a file is durable (it was written before a sync that
  completed);
* a byte above it (any byte of a file never synced) may not be -- and if the node was
  killed between a sync and its mark, nothing that sync vouched for was acted on yet
  (the node sends only after ``sync`` returns), so treating those bytes as lost is still
  a state a real power cut can leave.

Truncating each file to its last mark (see :func:`chaos.faults.power_loss`;
files are matched by device and inode, so a rename does not lose a mark) is
therefore a sound simulation of losing the page cache at the moment of the kill. A
``write`` of one short line to an ``O_APPEND`` file is never torn by ``SIGKILL``.

The process also asks the kernel to ``SIGKILL`` it when the harness dies
(``PR_SET_PDEATHSIG``), so no node outlives a crashed harness.
"""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.environ.get("PAXOS_CHAOS_PARENT")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent is not None and os.getppid() != int(parent):
        os._exit(3)  # the harness died before the death signal was armed


def install_marks(path: str) -> None:
    """Wrap ``os.fdatasync``/``os.fsync`` to log durable sizes to ``path``."""
    marks = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    names: dict[int, tuple[int, int, str]] = {}  # fd -> (st_dev, st_ino, path)

    def wrap(real: Callable[[Any], None]) -> Callable[[Any], None]:
        def sync(target: Any) -> None:
            fd = target if isinstance(target, int) else target.fileno()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                real(fd)
                return
            size = info.st_size  # what this sync covers at least
            real(fd)
            known = names.get(fd)
            if known is None or known[:2] != (info.st_dev, info.st_ino):
                known = (info.st_dev, info.st_ino, os.readlink(f"/proc/self/fd/{fd}"))
                names[fd] = known
            os.write(marks, f"{known[2]}\t{size}\t{info.st_dev}:{info.st_ino}\n".encode())

        return sync

    setattr(os, "fdatasync", wrap(os.fdatasync))  # noqa: B010 - typeshed's signature is narrower
    setattr(os, "fsync", wrap(os.fsync))  # noqa: B010


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] != "--":
        sys.exit("usage: python -m chaos.nodeproc MARKS -- <paxos node arguments>")
    _die_with_parent()
    install_marks(argv[0])
    from broadcast.cli import main as paxos

    paxos(["node", *argv[2:]], prog_name="paxos")


if __name__ == "__main__":
    main(sys.argv[1:])
