"""Sans-IO Paxos: single-decree roles, a Multi-Paxos replica and a deterministic simulator.

Nothing in this package touches sockets, files, clocks, threads or the module-level
``random``: messages and ticks go in; records to persist, messages to send and
deliveries come out. The runtime in :mod:`broadcast` does the I/O.
"""

from paxos.types import NOOP, Ballot, Command, Delivery, Value

__all__ = ["NOOP", "Ballot", "Command", "Delivery", "Value"]
