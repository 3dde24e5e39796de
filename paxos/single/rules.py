"""The safety rules of Paxos, as pure functions shared by both layers.

Single-decree roles (:mod:`paxos.single`) and the Multi-Paxos replica
(:mod:`paxos.multi`) both call these, so each rule is written exactly once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from paxos.types import MAX_ROUND, MAX_ROUND_STEP, Ballot

V = TypeVar("V")


def may_promise(promised: Ballot, ballot: Ballot) -> bool:
    """An acceptor may promise ``ballot`` iff it has not promised anything higher.

    Equal is allowed so that a retransmitted Prepare of the same ballot gets the
    same answer; two proposers never share a ballot (the node id breaks ties).
    A round at or above :data:`~paxos.types.MAX_ROUND` is never promised: after
    promising it nobody could build a higher ballot, and the cluster could never
    elect again. Nor is one more than :data:`~paxos.types.MAX_ROUND_STEP` above
    the promised round: only a forged ballot jumps that far.
    """
    return (
        ballot >= promised
        and ballot.round < MAX_ROUND
        and ballot.round <= promised.round + MAX_ROUND_STEP
    )


def may_accept(promised: Ballot, ballot: Ballot) -> bool:
    """An acceptor may accept at ``ballot`` iff it promised nothing higher.

    This is what makes a chosen value stick: once a majority promised ``b``,
    no ballot below ``b`` can gather a majority of accepts any more. Accepting
    implies promising, so the round bounds of :func:`may_promise` hold here too.
    """
    return (
        ballot >= promised
        and ballot.round < MAX_ROUND
        and ballot.round <= promised.round + MAX_ROUND_STEP
    )


def pick_value(reports: Iterable[tuple[Ballot, V]], default: V) -> V:
    """The value a new proposer must propose, given a majority's promises.

    ``reports`` holds ``(accepted ballot, accepted value)`` for each promising
    acceptor that accepted something. The value with the highest ballot may
    already be chosen, so it must be proposed again; only when nobody reported
    a value is the proposer free to use ``default``.
    """
    best_ballot: Ballot | None = None
    best: V = default
    for ballot, value in reports:
        if best_ballot is None or ballot > best_ballot:
            best_ballot, best = ballot, value
    return best


def is_quorum(count: int, cluster_size: int) -> bool:
    """True iff ``count`` nodes are a majority of ``cluster_size``: two majorities intersect."""
    return 2 * count > cluster_size
