"""Follow a cluster's ordered delivery stream from outside, and resume where you left off.

    python examples/follow.py 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103 [FROM_INDEX]

It prints one line per delivery and records the last index it saw in
``follow.offset``, so a restart resumes at the next index: no gap, no repeat.
If the nodes no longer retain that index (``paxos node --retain``), it says which
is the earliest they still hold and stops.
"""

from __future__ import annotations

import sys
from pathlib import Path

from broadcast import Client
from broadcast.errors import Compacted

OFFSET_FILE = Path("follow.offset")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    start = int(argv[2]) if len(argv) > 2 else 1
    if OFFSET_FILE.exists() and len(argv) <= 2:
        start = int(OFFSET_FILE.read_text()) + 1
    with Client(argv[1]) as client:
        try:
            for delivery in client.subscribe(from_index=start):
                command = delivery.command
                print(f"{delivery.index:>8} {command.client}#{command.seq}: "
                      f"{command.payload[:60]!r}")
                OFFSET_FILE.write_text(str(delivery.index))
        except Compacted as exc:
            print(f"error: {exc} (gap: restart with FROM_INDEX {exc.earliest})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
