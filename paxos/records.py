"""Durable records: what an acceptor must have on disk before it tells anyone.

A :class:`~paxos.multi.ready.Ready` lists records first; the driver writes and
syncs them, and only then sends the Ready's messages. Recovery replays the
records in the order they were written.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.types import Ballot, Value


@dataclass(frozen=True, slots=True)
class PromiseRecord:
    """The acceptor promised ``ballot``: it will not accept anything lower, ever."""

    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    """The acceptor accepted ``value`` for ``slot`` at ``ballot``."""

    slot: int
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """Every slot <= ``commit`` is chosen, and this node's accepted value there is
    the chosen one (values learned by catch-up are recorded as accepted too).

    Not a vow: it may be lost in a crash (the node re-learns from peers). It
    lets a restarted node replay its chosen prefix from its own disk and keeps
    phase 1 small after a restart of the whole cluster.
    """

    commit: int


Record = PromiseRecord | AcceptRecord | CommitRecord
