"""Typed errors of the public API (each with a one-line message for the user)."""

from __future__ import annotations


class PayloadTooLarge(ValueError):
    """A payload is above the cluster's payload limit; it never entered the log."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload of {size} bytes is larger than the cluster's limit of {limit}")
        self.size = size
        self.limit = limit


class SessionExpired(RuntimeError):
    """The client's session ended (expired, evicted or closed) while some of its
    broadcasts were unacknowledged and their fate cannot be known for sure.

    ``delivered`` lists the seqs that were delivered before the end (their index
    is not known); ``unknown`` lists the seqs whose fate nobody remembers. Seqs
    above the session's last delivered seq are never delivered and are not listed:
    the client resends those in a new session.
    """

    def __init__(self, key: str, delivered: list[int], unknown: list[int]) -> None:
        parts = []
        if delivered:
            parts.append(f"{len(delivered)} delivered at unknown positions")
        if unknown:
            parts.append(f"{len(unknown)} of unknown fate")
        super().__init__(f"session {key} ended with broadcasts outstanding: {', '.join(parts)}")
        self.key = key
        self.delivered = delivered
        self.unknown = unknown


class WrongCluster(RuntimeError):
    """The nodes answering belong to another cluster than the client asked for."""


class Compacted(LookupError):
    """An index below what a node still retains was asked for: its retention (``paxos
    node --retain``) has deleted it. ``earliest`` is the first index still held;
    ``requested`` the one asked for (None if unknown)."""

    def __init__(self, earliest: int, requested: int | None = None) -> None:
        what = f"index {requested}" if requested is not None else "that index"
        super().__init__(f"{what} is no longer retained; the earliest available is {earliest}")
        self.earliest = earliest
        self.requested = requested


class Forbidden(PermissionError):
    """The cluster does not allow this client's key to do ``what`` (a permission, or a
    session name its key is not granted: see the ``[clients]`` table of the cluster file)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"this client's key is not allowed: {what}")
        self.what = what


class QueryFailed(RuntimeError):
    """A node's state machine could not answer a query: ``reason`` is "unsupported" (the
    node replicates no state machine that answers queries) or the error it raised."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"query not answered: {reason}")
        self.reason = reason
