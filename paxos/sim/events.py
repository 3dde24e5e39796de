"""Structured events of one simulated run, for the visualiser (``paxos viz``).

The text trace (``SimConfig.trace``) is for people; these events are for the
page that animates a run. They follow the event contract shared with the live
nodes' ``/events`` endpoint: one dict per event,
each with ``t`` (the tick) and ``kind``; node ids are ints, ballots
``[round, node]`` lists. The simulator reports more than a live node can
(every message with its arrival tick, every drop and why, partitions, cuts,
crashes and pauses), and a few kinds of its own that readers who do not know
them ignore:

* ``cut`` / ``uncut`` (``src``, ``dst``; ``until`` on ``cut``): one directed link
  is down / up again (link cuts, partial partitions, isolation);
* ``burst`` (``types``, ``links``, ``until``): those message types are dropped on
  those links for a while;
* ``wipe`` (``node``): the node's disk is lost; it never starts again;
* ``phase`` (``phase``: ``"heal"``): the fault phase is over.

Extra fields on contract kinds: ``send`` has ``id`` (the network's sequence
number, also on the ``drop`` of a message lost in flight) and ``replay`` (an
old message delivered again); ``restart`` has ``chosen`` and ``delivered``
(the chosen prefix and delivery index the node recovered: its chosen ranges
and deliveries go on from there); ``install`` has ``index``; ``partition`` has
``bridge`` (nodes that talk to every group; a node in no group and not a bridge
is in the first group); ``submit`` has ``from`` (the client process's address,
the ``src``/``dst`` of its messages; ``client`` is its session key, as in
``deliver``).

Recording is bounded: beyond ``cap`` events it stops and says so
(``truncated``). Nothing here touches a file: the command line writes the
trace file.
"""

from __future__ import annotations

from typing import Any

#: Events one run records at most (a default run records a few thousand).
MAX_EVENTS = 2_000_000

#: One event: JSON-ready (ints, strings, lists, None, bools).
Event = dict[str, Any]


class EventLog:
    """Where the parts of one run append their events, in the order they happen."""

    __slots__ = ("cap", "events", "truncated")

    def __init__(self, cap: int = MAX_EVENTS) -> None:
        if cap < 1:
            raise ValueError("the event cap must be positive")
        self.cap = cap
        self.events: list[Event] = []
        #: True once an event was refused because the log was full.
        self.truncated = False

    def emit(self, t: int, kind: str, **fields: Any) -> None:
        events = self.events
        if len(events) >= self.cap:
            self.truncated = True
            return
        event: Event = {"t": t, "kind": kind}
        event.update(fields)
        events.append(event)

    def message(
        self,
        t: int,
        src: int | str,
        dst: int | str,
        payload: object,
        arrive: int | None,
        seq: int | None,
        replay: bool = False,
    ) -> None:
        """A ``send``: one copy of ``payload`` put on the wire, due at ``arrive`` (None:
        dropped at once)."""
        fields: Event = {"src": src, "dst": dst, "type": type(payload).__name__, "arrive": arrive}
        if seq is not None:
            fields["id"] = seq
        slot = getattr(payload, "slot", None)
        if isinstance(slot, int):
            fields["slot"] = slot
        ballot = getattr(payload, "ballot", None)
        if isinstance(ballot, tuple) and len(ballot) == 2:
            fields["ballot"] = [ballot[0], ballot[1]]
        if replay:
            fields["replay"] = True
        self.emit(t, "send", **fields)

    def drop(
        self, t: int, src: int | str, dst: int | str, payload: object, why: str,
        seq: int | None = None,
    ) -> None:
        fields: Event = {"src": src, "dst": dst, "type": type(payload).__name__, "why": why}
        if seq is not None:
            fields["id"] = seq
        self.emit(t, "drop", **fields)


def ballot_list(ballot: object) -> list[int] | None:
    """A ballot as the contract writes it: ``[round, node]`` (None if there is none)."""
    if isinstance(ballot, tuple) and len(ballot) == 2:
        return [int(ballot[0]), int(ballot[1])]
    return None


def ranges(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted, distinct slots as inclusive runs of consecutive ones."""
    out: list[tuple[int, int]] = []
    for slot in slots:
        if out and slot == out[-1][1] + 1:
            out[-1] = (out[-1][0], slot)
        else:
            out.append((slot, slot))
    return out
