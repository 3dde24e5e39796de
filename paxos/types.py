"""Values shared by every layer: ballots, commands, slot values, deliveries.

These are NamedTuples rather than dataclasses on purpose: they sit on the hot
path (one per command), compare and hash as tuples, and msgpack packs them as
arrays without any conversion.
"""

from __future__ import annotations

from typing import NamedTuple


class Ballot(NamedTuple):
    """A Paxos ballot (proposal number): totally ordered by (round, node).

    Two proposers never share a ballot because the node id breaks ties; a node
    never reuses a round because the rounds it has used are persisted (its own
    promise is written before its Prepare leaves).
    """

    round: int
    node: int


#: The ballot below every real ballot; nothing is promised or accepted at it.
ZERO_BALLOT = Ballot(0, 0)

#: The bound on ballot rounds. The codec refuses a round above it and the rules refuse
#: to promise or accept a round at or above it, so nothing that was promised can ever
#: fail to encode (a round near 2**64 would overflow msgpack's integers for good), and
#: a node can always build the next ballot. 2**53 also keeps rounds exact in JSON.
#: One election per millisecond would take 285,000 years to get there.
MAX_ROUND = 2**53

#: The most a promise may jump above the round promised before. Rounds grow by one
#: per election, so a real candidate is never this far ahead of an acceptor that has
#: heard any leader of the last million elections; a forged Prepare with a round near
#: MAX_ROUND (which would leave nobody able to campaign again) is refused instead.
#: Refusing a promise is always safe.
MAX_ROUND_STEP = 2**20


class Command(NamedTuple):
    """One broadcast payload, tagged with its sender's session.

    ``(client, seq)`` identifies the command for exactly-once, FIFO delivery:
    a client numbers its commands 1, 2, 3, ... and retries with the same number.
    """

    client: str
    seq: int
    payload: bytes


#: The value of one slot: a batch of commands, decided together.
Value = tuple[Command, ...]

#: The no-op a new leader puts into a slot that no acceptor reported a value for.
NOOP: Value = ()


class Delivery(NamedTuple):
    """A committed command handed to the application.

    ``index`` is the 1-based position in the total order (identical on every
    replica); ``slot`` is the log slot whose batch held it.
    """

    # A NamedTuple (one per delivered command, on the hot path) whose first
    # field deliberately shadows tuple.index: attribute access gives the field.
    index: int  # type: ignore[assignment]
    slot: int
    command: Command
