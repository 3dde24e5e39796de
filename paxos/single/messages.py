"""The messages of single-decree Paxos, as frozen, slotted dataclasses.

Phase names follow Lamport: 1a :class:`Prepare`, 1b :class:`Promise`,
2a :class:`Accept`, 2b :class:`Accepted`; :class:`Nack` tells a proposer its
ballot was refused and which ballot stood in the way. Every message names its
sender (``src``); the destination travels beside it in a :data:`Sends` tuple
of ``(destination, message)`` pairs. Values are opaque ``bytes``.

Each message checks its own fields when built, so a decoder that turns peer
bytes into messages gets a typed :class:`MessageError` for malformed input
instead of a role tripping over it later.
"""

from __future__ import annotations

from dataclasses import dataclass

from paxos.types import Ballot


class MessageError(ValueError):
    """A message was built from malformed fields (a bad peer or a bad decoder)."""


def _check_src(src: object) -> None:
    if not isinstance(src, int) or isinstance(src, bool):
        raise MessageError(f"src must be an int, not {src!r}")


def _check_ballot(name: str, ballot: object) -> None:
    # Round 0 is ZERO_BALLOT's: "nothing promised yet". A real proposal must
    # sit above it, or an acceptor could not tell a proposal from its own
    # initial state.
    if (
        not isinstance(ballot, Ballot)
        or not isinstance(ballot.round, int)
        or not isinstance(ballot.node, int)
        or ballot.round < 1
    ):
        raise MessageError(f"{name} must be a Ballot with round >= 1, not {ballot!r}")


def _check_value(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise MessageError(f"{name} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Prepare:
    """Phase 1a: ``src`` asks every acceptor to promise ``ballot``."""

    src: int
    ballot: Ballot

    def __post_init__(self) -> None:
        _check_src(self.src)
        _check_ballot("ballot", self.ballot)


@dataclass(frozen=True, slots=True)
class Promise:
    """Phase 1b: the acceptor promises ``ballot`` and reports its last accept.

    ``accepted_ballot``/``accepted_value`` are the highest-ballot proposal this
    acceptor accepted (both ``None`` if it never accepted anything). The
    accepted ballot is never above the promised one: accepting implies promising.
    """

    src: int
    ballot: Ballot
    accepted_ballot: Ballot | None = None
    accepted_value: bytes | None = None

    def __post_init__(self) -> None:
        _check_src(self.src)
        _check_ballot("ballot", self.ballot)
        if (self.accepted_ballot is None) != (self.accepted_value is None):
            raise MessageError("accepted_ballot and accepted_value must be both set or both None")
        if self.accepted_ballot is not None:
            _check_ballot("accepted_ballot", self.accepted_ballot)
            _check_value("accepted_value", self.accepted_value)
            if self.accepted_ballot > self.ballot:
                raise MessageError("accepted_ballot is above the promised ballot")


@dataclass(frozen=True, slots=True)
class Accept:
    """Phase 2a: the proposer of ``ballot`` asks the acceptors to accept ``value``."""

    src: int
    ballot: Ballot
    value: bytes

    def __post_init__(self) -> None:
        _check_src(self.src)
        _check_ballot("ballot", self.ballot)
        _check_value("value", self.value)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Phase 2b: acceptor ``src`` accepted ``value`` at ``ballot``.

    Sent to the proposer of ``ballot`` and to the learners; ``value`` rides
    along so a learner needs nothing else to know what was chosen.
    """

    src: int
    ballot: Ballot
    value: bytes

    def __post_init__(self) -> None:
        _check_src(self.src)
        _check_ballot("ballot", self.ballot)
        _check_value("value", self.value)


@dataclass(frozen=True, slots=True)
class Nack:
    """A Prepare or Accept at ``ballot`` was refused: ``src`` promised ``promised``."""

    src: int
    ballot: Ballot
    promised: Ballot

    def __post_init__(self) -> None:
        _check_src(self.src)
        _check_ballot("ballot", self.ballot)
        _check_ballot("promised", self.promised)
        if self.promised <= self.ballot:
            # An acceptor only refuses a ballot below the one it promised.
            raise MessageError("a Nack's promised ballot must be above the refused one")


#: Any single-decree Paxos message.
Message = Prepare | Promise | Accept | Accepted | Nack

#: ``(destination node id, message)`` pairs for the driver to send.
Sends = tuple[tuple[int, Message], ...]
