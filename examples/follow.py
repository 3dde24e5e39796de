"""Follow a cluster's ordered delivery stream from outside, and resume where you left off.

    python examples/follow.py paxos-data/cluster.toml [FROM_INDEX]

The first argument is the cluster file (``paxos cluster up`` writes
``paxos-data/cluster.toml``): it names the nodes' CURVE keys and the client key
to use. For nodes run ``--insecure``, give their SPEC and ``--insecure``::

    python examples/follow.py --insecure 1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103

It prints one line per delivery and records the last index it saw in
``follow.offset``, so a restart resumes at the next index: no gap, no repeat.
If the nodes no longer retain that index (``paxos node --retain``), it says which
is the earliest they still hold and stops.
"""

from __future__ import annotations

import sys
from pathlib import Path

from broadcast import Client, ConfigError
from broadcast.errors import Compacted

OFFSET_FILE = Path("follow.offset")


def main(argv: list[str]) -> int:
    insecure = "--insecure" in argv
    argv = [arg for arg in argv if arg != "--insecure"]
    if len(argv) < 2:
        print(__doc__)
        return 2
    start = int(argv[2]) if len(argv) > 2 else 1
    if OFFSET_FILE.exists() and len(argv) <= 2:
        start = int(OFFSET_FILE.read_text()) + 1
    try:
        client = Client(argv[1], insecure=insecure)
    except ConfigError as exc:  # no such file, no keys in it, an unreadable key file ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with client:
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
