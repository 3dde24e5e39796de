"""The single-decree Paxos proposer: drives one ballot at a time to a choice.

Life of a proposer::

    start() --Prepare--> on_promise x majority --Accept--> on_accepted x majority --> CHOSEN
       ^                          |                                 |
       |                     Nack or silence                   Nack or silence
       |                          v                                 v
       +-- retry() <------ on_nack() is True, or the caller's timeout fires

The proposer never sleeps or counts time: the caller decides when an attempt
has taken too long and calls :meth:`Proposer.retry`, which runs phase 1 again
at a ballot above every ballot the proposer has seen. A Nack only abandons the
current attempt (:meth:`Proposer.on_nack` returns ``True``); the caller
retries, ideally after a randomized backoff so two proposers do not keep
pre-empting each other.

A proposer's ballot ``(round, node_id)`` is unique because node ids are. A
restarted proposer must not reuse a round whose phase 2 it may have started
with a different value; build it with a ``round`` above any it used (or above
what its acceptors report in Nacks, which :meth:`retry` does by itself).
"""

from __future__ import annotations

import enum

from paxos.single.learner import Learner
from paxos.single.messages import Accept, Accepted, Nack, Prepare, Promise, Sends
from paxos.single.rules import is_quorum, pick_value
from paxos.types import Ballot


class Phase(enum.Enum):
    """Where a proposer stands."""

    #: Not started, or the last attempt was refused (a Nack): call start()/retry().
    IDLE = "idle"
    #: Phase 1: Prepare sent, collecting Promises.
    PREPARE = "prepare"
    #: Phase 2: Accept sent, collecting Accepted.
    ACCEPT = "accept"
    #: The proposer knows the chosen value (maybe not its own). Nothing more to do.
    #: Once known, :attr:`Proposer.chosen` stays set even if retry() runs again.
    CHOSEN = "chosen"


class Proposer:
    """Proposes ``value`` to ``acceptors``, starting at ballot ``(round, node_id)``."""

    def __init__(
        self, node_id: int, acceptors: tuple[int, ...], value: bytes, round: int = 1
    ) -> None:
        if not acceptors or len(set(acceptors)) != len(acceptors):
            raise ValueError("acceptors must be a non-empty tuple of distinct node ids")
        if round < 1:
            raise ValueError("round must be >= 1 (round 0 is the 'nothing promised' ballot)")
        if not isinstance(value, bytes):
            raise ValueError("value must be bytes")
        self._node_id = node_id
        self._acceptors = acceptors
        self._value = value
        self._ballot = Ballot(round, node_id)
        self._phase = Phase.IDLE
        self._started = False
        # Promises for the current ballot, by acceptor (a duplicate overwrites
        # an identical entry, so it is counted once).
        self._promises: dict[int, Promise] = {}
        self._proposal: bytes | None = None
        # The highest ballot any acceptor said it promised; retry() goes above it.
        self._highest_seen = self._ballot
        self._learner = Learner(acceptors)

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def ballot(self) -> Ballot:
        """The ballot of the current (or last) attempt."""
        return self._ballot

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def value(self) -> bytes:
        """The value this proposer wants chosen if it is free to choose."""
        return self._value

    @property
    def proposal(self) -> bytes | None:
        """The value sent in phase 2 of the current ballot (``None`` before phase 2)."""
        return self._proposal

    @property
    def chosen(self) -> bytes | None:
        """The chosen value, once this proposer has seen a majority accept it."""
        return self._learner.chosen

    def start(self) -> Sends:
        """Begin phase 1 at the initial ballot. A second call sends nothing: use :meth:`retry`."""
        if self._started:
            return ()
        self._started = True
        return self._prepare()

    def retry(self) -> Sends:
        """Abandon the current attempt and run phase 1 at a higher ballot.

        The caller's timeout for a stalled attempt, and the way to go on after
        :meth:`on_nack` returned ``True``. Once the value is chosen there is no
        need to call it, but it is harmless: phase 1 then always finds the
        chosen value (see :meth:`on_promise`) and proposes it again, which is
        how a learner that missed every Accepted can hear them once more.
        """
        self._started = True
        # Go above every ballot seen, so the acceptors that nacked us will promise.
        top = max(self._ballot, self._highest_seen)
        self._ballot = Ballot(top.round + 1, self._node_id)
        self._highest_seen = self._ballot
        return self._prepare()

    def on_promise(self, msg: Promise) -> Sends:
        """Collect a promise; with a majority, send Accept for the value pick_value allows."""
        # Promises for an older ballot (late or duplicated) say nothing about
        # the current one; non-acceptors do not count toward a majority.
        if (
            self._phase is not Phase.PREPARE
            or msg.ballot != self._ballot
            or msg.src not in self._acceptors
        ):
            return ()
        self._promises[msg.src] = msg
        if not is_quorum(len(self._promises), len(self._acceptors)):
            return ()
        # Safety: a majority promised our ballot, so no lower ballot can still
        # complete; but a value some majority already accepted would show up
        # in at least one promise (majorities intersect). The highest-ballot
        # report is the only one that can be chosen, so it must be proposed.
        reports = [
            (p.accepted_ballot, p.accepted_value)
            for p in self._promises.values()
            if p.accepted_ballot is not None and p.accepted_value is not None
        ]
        self._proposal = pick_value(reports, self._value)
        self._phase = Phase.ACCEPT
        accept = Accept(self._node_id, self._ballot, self._proposal)
        return tuple((a, accept) for a in self._acceptors)

    def on_accepted(self, msg: Accepted) -> bytes | None:
        """Count an Accepted; return the chosen value once a majority of one ballot accepted it."""
        chosen = self._learner.on_accepted(msg)
        if chosen is not None:
            self._phase = Phase.CHOSEN
        return chosen

    def on_nack(self, msg: Nack) -> bool:
        """Note a refusal. ``True`` iff it aborted the current attempt: call :meth:`retry` then.

        A Nack for an older ballot only raises the ballot the next retry must beat.
        """
        if msg.src not in self._acceptors:
            return False  # a stray sender must not steer our ballots
        self._highest_seen = max(self._highest_seen, msg.promised)
        if msg.ballot != self._ballot or self._phase not in (Phase.PREPARE, Phase.ACCEPT):
            return False
        # One refusal means some acceptor moved past our ballot; this attempt
        # may still succeed with the others, but waiting to find out costs a
        # timeout, so give up on it now (safe: retrying never breaks safety).
        self._phase = Phase.IDLE
        return True

    def _prepare(self) -> Sends:
        self._phase = Phase.PREPARE
        self._promises = {}
        self._proposal = None
        prepare = Prepare(self._node_id, self._ballot)
        return tuple((a, prepare) for a in self._acceptors)
