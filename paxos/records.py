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


Record = PromiseRecord | AcceptRecord
