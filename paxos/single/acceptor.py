"""The single-decree Paxos acceptor: the role whose vows make a choice stick.

An acceptor's whole durable state is :class:`AcceptorState`: the highest
ballot it promised and the last proposal it accepted. Each handler returns an
:class:`Output` whose ``persist`` part the driver must write and sync BEFORE it
sends any of the ``send`` part: a Promise or an Accepted is a vow, and a vow
that a crash can erase is no vow at all (an acceptor that forgets a promise
can let two different values be chosen). Recovery is simply
``Acceptor(node_id, last_persisted_state)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.single.messages import Accept, Accepted, Nack, Prepare, Promise, Sends
from paxos.single.rules import may_accept, may_promise
from paxos.types import ZERO_BALLOT, Ballot


@dataclass(frozen=True, slots=True)
class AcceptorState:
    """What an acceptor must keep on stable storage.

    ``promised`` is the highest ballot promised (``ZERO_BALLOT`` for none);
    ``accepted`` is ``(ballot, value)`` of the last accepted proposal, or
    ``None``. Accepting at a ballot also promises it, so the accepted ballot is
    never above ``promised``.
    """

    promised: Ballot = ZERO_BALLOT
    accepted: tuple[Ballot, bytes] | None = None

    def __post_init__(self) -> None:
        if self.accepted is not None and self.accepted[0] > self.promised:
            raise ValueError("accepted ballot above the promised ballot")


@dataclass(frozen=True, slots=True)
class Output:
    """What one acceptor step asks of its driver, in this order.

    1. ``persist``: if not ``None``, write this state to stable storage
       (replacing the previous one) and sync. Only then:
    2. ``send``: ``(destination, message)`` pairs.

    ``persist`` is ``None`` when the state did not change (a refusal, or a
    retransmitted Prepare/Accept answered again from already-durable state).
    """

    persist: AcceptorState | None
    send: Sends


class Acceptor:
    """A single-decree Paxos acceptor.

    ``state`` is the last state this node persisted (``None`` for a fresh
    node); a restarted acceptor is a new ``Acceptor`` built from it.
    ``learners`` receive a copy of every Accepted, besides the proposer that
    asked for it.
    """

    def __init__(
        self,
        node_id: int,
        state: AcceptorState | None = None,
        *,
        learners: tuple[int, ...] = (),
    ) -> None:
        self._node_id = node_id
        self._state = state if state is not None else AcceptorState()
        self._learners = tuple(dict.fromkeys(learners))

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def state(self) -> AcceptorState:
        """The current state; durable once the driver has applied the last ``persist``."""
        return self._state

    def on_prepare(self, msg: Prepare) -> Output:
        """Phase 1b: promise ``msg.ballot`` and report the last accepted proposal, or refuse."""
        state = self._state
        # Safety: never promise below a ballot already promised, or the earlier
        # proposer's phase 2 could complete after a later proposer has picked a
        # value without seeing it. Equal is a retransmission: same answer again.
        if not may_promise(state.promised, msg.ballot):
            return self._refuse(msg.src, msg.ballot)
        persist = None
        if msg.ballot != state.promised:
            state = AcceptorState(msg.ballot, state.accepted)
            persist = state
        self._state = state
        # Report the highest-ballot accept, so the proposer can re-propose a
        # value that may already be chosen (see rules.pick_value).
        if state.accepted is None:
            reply = Promise(self._node_id, msg.ballot)
        else:
            reply = Promise(self._node_id, msg.ballot, state.accepted[0], state.accepted[1])
        # The promise leaves only after `persist` is durable (see Output).
        return Output(persist, ((msg.src, reply),))

    def on_accept(self, msg: Accept) -> Output:
        """Phase 2b: accept ``msg.value`` at ``msg.ballot`` and announce it, or refuse."""
        state = self._state
        # Safety: never accept below a promised ballot; that promise told a
        # later proposer that this acceptor's reported accept is final.
        if not may_accept(state.promised, msg.ballot):
            return self._refuse(msg.src, msg.ballot)
        accepted = (msg.ballot, msg.value)
        persist = None
        if state.promised != msg.ballot or state.accepted != accepted:
            # Accepting at a ballot also promises it (promised never drops).
            state = AcceptorState(msg.ballot, accepted)
            persist = state
        self._state = state
        reply = Accepted(self._node_id, msg.ballot, msg.value)
        dests = (msg.src, *(n for n in self._learners if n != msg.src))
        # The Accepted leaves only after `persist` is durable (see Output).
        return Output(persist, tuple((dst, reply) for dst in dests))

    def _refuse(self, dst: int, ballot: Ballot) -> Output:
        # A Nack changes nothing, so there is nothing to persist; it tells the
        # proposer which ballot to beat, sparing it blind retries.
        return Output(None, ((dst, Nack(self._node_id, ballot, self._state.promised)),))
