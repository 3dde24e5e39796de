"""The simulated application: a state machine with real snapshot and restore.

Its state is the number of deliveries applied and a running CRC-32 over each
delivered command, so two replicas that applied different commands (or the same
ones in another order, or a restored state that is not the one it claims) end up
with different states. The state checker compares them across replicas at every
index (:class:`paxos.sim.checkers.StateMachineChecker`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from paxos.types import Delivery

_STATE = struct.Struct(">QI")


class SimApp:
    """Applies deliveries; ``snapshot`` and ``restore`` round-trip its whole state.

    ``pad`` is appended to every snapshot (and ignored by ``restore``): nodes pass their
    own, so that two replicas' snapshots of one state differ in bytes, as a real
    application's may (a pickled set, a map in insertion order). Installs must cope.
    """

    __slots__ = ("digest", "index", "pad")

    def __init__(self, pad: bytes = b"") -> None:
        self.index = 0
        self.digest = 0
        self.pad = pad

    def apply(self, deliveries: Iterable[Delivery]) -> list[tuple[int, int]]:
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
        return out

    def snapshot(self) -> bytes:
        return _STATE.pack(self.index, self.digest) + self.pad

    def restore(self, data: bytes) -> None:
        self.index, self.digest = _STATE.unpack_from(data)
