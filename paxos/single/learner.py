"""The single-decree Paxos learner: finds out which value was chosen.

A value is chosen once a majority of acceptors accepted it at the SAME ballot.
Majorities at different ballots do not add up: acceptor 1 at ballot 1 and
acceptor 2 at ballot 2 may hold different values, and neither is chosen yet.
A learner keeps nothing durable; a restarted one learns again.
"""

from __future__ import annotations

from paxos.single.messages import Accepted
from paxos.single.rules import is_quorum
from paxos.types import Ballot


class Learner:
    """Counts Accepted messages from ``acceptors`` until a majority agrees."""

    def __init__(self, acceptors: tuple[int, ...]) -> None:
        if not acceptors or len(set(acceptors)) != len(acceptors):
            raise ValueError("acceptors must be a non-empty tuple of distinct node ids")
        self._acceptors = frozenset(acceptors)
        # (ballot, value) -> acceptors that accepted it. A set, so a duplicated
        # Accepted (retransmission or network duplicate) is counted once.
        self._votes: dict[tuple[Ballot, bytes], set[int]] = {}
        self._chosen: bytes | None = None
        self._conflicts: list[tuple[Ballot, bytes]] = []

    @property
    def chosen(self) -> bytes | None:
        """The chosen value, once known; it never changes afterwards."""
        return self._chosen

    @property
    def conflicts(self) -> tuple[tuple[Ballot, bytes], ...]:
        """Majorities seen for a value other than :attr:`chosen`.

        Paxos rules this out, so this is always empty unless an acceptor broke
        a vow (for example lost its durable state). Checkers assert on it.
        """
        return tuple(self._conflicts)

    def on_accepted(self, msg: Accepted) -> bytes | None:
        """Count ``msg``; return the chosen value if it is known (now or earlier), else ``None``."""
        # Only the configured acceptors vote: a stray sender must not be able
        # to make up a majority.
        if msg.src not in self._acceptors:
            return self._chosen
        key = (msg.ballot, msg.value)
        voters = self._votes.setdefault(key, set())
        if msg.src in voters:
            return self._chosen
        voters.add(msg.src)
        # Safety: only a majority at one ballot is chosen; any two majorities
        # intersect, so a later proposer's Prepare must see this value.
        n = len(self._acceptors)
        if is_quorum(len(voters), n) and not is_quorum(len(voters) - 1, n):  # just became one
            if self._chosen is None:
                self._chosen = msg.value
            elif msg.value != self._chosen:
                self._conflicts.append(key)
        return self._chosen
