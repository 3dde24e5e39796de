"""``python -m broadcast`` is the ``paxos`` command."""

from broadcast.cli import main

main()
