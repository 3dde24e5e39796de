"""Typed errors of the coordination client (each with a one-line message)."""

from __future__ import annotations


class KvError(RuntimeError):
    """Base of the coordination client's errors."""


class Refused(KvError):
    """The service applied the command and refused it: ``reason`` says why (``fence:
    stale token``, ``quota``, ``no such session``, ...); ``index`` is where."""

    def __init__(self, what: str, reason: str, index: int) -> None:
        super().__init__(f"{what} refused at index {index}: {reason}")
        self.reason = reason
        self.index = index


class SessionLost(KvError):
    """The client's session ended (its lease expired, or it was closed): its ephemeral
    keys are gone and its locks and leaderships passed on. Open a new one."""


class OutcomeUnknown(KvError):
    """The command was applied (once) at ``index``, but no node still held its result."""

    def __init__(self, index: int) -> None:
        super().__init__(f"applied at index {index}; its result is no longer known")
        self.index = index


class WaitTimeout(KvError, TimeoutError):
    """A lock, a leadership or a barrier was not obtained in time (the request was
    withdrawn)."""


class WatchCompacted(KvError):
    """A watch asked for changes older than the service's bounded change log keeps:
    ``earliest`` is the first index still held (read the state, then watch from there)."""

    def __init__(self, since: int, earliest: int) -> None:
        super().__init__(f"changes from {since} are compacted; the earliest kept is {earliest}")
        self.since = since
        self.earliest = earliest
