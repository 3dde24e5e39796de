"""Typed errors of replicated objects.

Two families, told apart by *where* they happen:

* before anything is sent, in the caller's thread: ``TypeError`` (arguments that
  msgpack cannot encode, or that do not fit the method's signature),
  :class:`~broadcast.errors.PayloadTooLarge` (an encoded call above the cluster's
  payload limit), :class:`NotAttached`. Nothing entered the log.
* after the call was committed, as its result on every replica alike:
  :class:`CallRefused` and its subclasses. The call is in the log, every replica
  refused it the same way, and no object's state changed. The caller gets it
  raised from the method call.

An exception a method raises itself while it is applied (``ReplDict.pop`` never
does, a user's method may) is the call's result too, raised to the caller, and is
the same on every replica as long as the method is deterministic.
"""

from __future__ import annotations


class ReplicationError(Exception):
    """Base class of every error of :mod:`broadcast.replicated`."""


class NotAttached(ReplicationError, RuntimeError):
    """A replicated method or a linearizable read was used on an object that is not
    in a :class:`~broadcast.replicated.ReplicatedGroup` attached to a node."""


class IllegalWrite(ReplicationError, RuntimeError):
    """An attribute of an attached object was set outside ``apply``: only replicated
    methods, applied in the log's order, may change an object's state."""


class ResultUnknown(ReplicationError):
    """The call was committed (at ``index``) and applied, but this replica caught up by
    installing a peer's snapshot that covers it: the state includes its effect, its
    return value is not known here."""

    def __init__(self, index: int) -> None:
        super().__init__(
            f"the call was committed at index {index}, inside a snapshot this node "
            "installed: its effect is in the state, its result is not known here"
        )
        self.index = index


class StateError(ReplicationError):
    """A snapshot blob (``ReplicatedGroup.restore``) is not one this code can load:
    garbage, an unknown format version, or objects this group does not register."""


class CallRefused(ReplicationError):
    """A committed call that every replica refused the same way; no state changed."""


class MalformedCall(CallRefused):
    """A payload marked as a replicated call that does not decode as one, or whose
    arguments do not fit the method's signature."""


class UnsupportedVersion(CallRefused):
    """A call encoded in a format version this code does not know (a newer sender)."""

    def __init__(self, version: object) -> None:
        super().__init__(f"call format version {version!r} is not supported")
        self.version = version


class UnknownObject(CallRefused):
    """A call to an object name this group does not register."""

    def __init__(self, name: object) -> None:
        super().__init__(f"no replicated object named {name!r}")
        self.name = name


class UnknownMethod(CallRefused):
    """A call to a method that is not a ``@replicated`` method of the object."""

    def __init__(self, name: str, method: object) -> None:
        super().__init__(f"{name!r} has no replicated method {method!r}")
        self.name = name
        self.method = method


class BadArgument(CallRefused):
    """An argument of the wrong kind for a ready-made object (a float as a key, say)."""


class CapacityExceeded(CallRefused):
    """A call would take an object beyond its bound (bytes, items, or a counter's
    64-bit range); it was refused as a whole."""

    def __init__(self, what: str, wanted: int, limit: int) -> None:
        super().__init__(f"{what}: {wanted} is beyond the limit of {limit}")
        self.what = what
        self.wanted = wanted
        self.limit = limit
