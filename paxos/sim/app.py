"""The simulated application: a state machine with real snapshot and restore.

Its state is the number of deliveries applied and a running CRC-32 over each
delivered command, so two replicas that applied different commands (or the same
ones in another order, or a restored state that is not the one it claims) end up
with different states. The state checker compares them across replicas at every
index (:class:`paxos.sim.checkers.StateMachineChecker`).

With a :class:`~paxos.coord.machine.CoordMachine` (the coordination service's core),
every delivery is applied to it too (the payloads that are not coordination
commands are refused, alike everywhere), its state is part of the snapshot, and
each index's result and state digest are kept for the coordination checker
(:class:`paxos.sim.checkers.CoordAgreement`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from paxos.coord.machine import CoordMachine, Result
from paxos.types import Delivery

_STATE = struct.Struct(">QI")
#: With a coordination machine: the length of its snapshot follows, then the snapshot.
_COORD_STATE = struct.Struct(">QII")


class SimApp:
    """Applies deliveries; ``snapshot`` and ``restore`` round-trip its whole state.

    ``pad`` is appended to every snapshot (and ignored by ``restore``): nodes pass their
    own, so that two replicas' snapshots of one state differ in bytes, as a real
    application's may (a pickled set, a map in insertion order). Installs must cope.
    """

    __slots__ = ("coord", "coord_results", "digest", "index", "pad")

    def __init__(self, pad: bytes = b"", coord: CoordMachine | None = None) -> None:
        self.index = 0
        self.digest = 0
        self.pad = pad
        self.coord = coord
        #: The coordination results of the last ``apply``: (delivery, result, state digest).
        self.coord_results: list[tuple[Delivery, Result, int]] = []

    def apply(self, deliveries: Sequence[Delivery]) -> list[tuple[int, int]]:
        """Apply deliveries in order; returns ``(index, state digest after it)`` each."""
        out = []
        digest = self.digest
        for delivery in deliveries:
            client, seq, payload = delivery.command
            digest = zlib.crc32(payload, zlib.crc32(f"{client}#{seq}|".encode(), digest))
            out.append((delivery.index, digest))
        self.digest = digest
        if out:
            self.index = out[-1][0]
        coord = self.coord
        if coord is not None:
            apply = coord.apply
            self.coord_results = [(d, apply(d), coord.digest()) for d in deliveries]
        return out

    def snapshot(self) -> bytes:
        if self.coord is None:
            return _STATE.pack(self.index, self.digest) + self.pad
        coord = self.coord.snapshot()
        return _COORD_STATE.pack(self.index, self.digest, len(coord)) + coord + self.pad

    def restore(self, data: bytes) -> None:
        if self.coord is None:
            self.index, self.digest = _STATE.unpack_from(data)
            return
        self.index, self.digest, size = _COORD_STATE.unpack_from(data)
        start = _COORD_STATE.size
        self.coord.restore(data[start : start + size])
