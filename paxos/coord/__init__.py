"""A coordination service's deterministic core (ZooKeeper's recipes on the broadcast log).

Pure, like everything under ``paxos``: :class:`CoordMachine` applies the commands of
:mod:`paxos.coord.commands` in log order and reads no clock. See
:mod:`paxos.coord.machine` for the design and the safety argument.
"""

from paxos.coord.commands import (
    Acquire,
    Campaign,
    Cas,
    Close,
    CoordCommand,
    CoordDecodeError,
    Delete,
    Enter,
    Expire,
    Get,
    Open,
    Put,
    Release,
    Renew,
    Resign,
    UnknownFormat,
    decode,
    encode,
)
from paxos.coord.machine import (
    Change,
    Changes,
    Compacted,
    CoordLimits,
    CoordMachine,
    CoordSnapshotError,
    LockInfo,
    Result,
    SessionInfo,
)

__all__ = [
    "Acquire",
    "Campaign",
    "Cas",
    "Change",
    "Changes",
    "Close",
    "Compacted",
    "CoordCommand",
    "CoordDecodeError",
    "CoordLimits",
    "CoordMachine",
    "CoordSnapshotError",
    "Delete",
    "Enter",
    "Expire",
    "Get",
    "LockInfo",
    "Open",
    "Put",
    "Release",
    "Renew",
    "Resign",
    "Result",
    "SessionInfo",
    "UnknownFormat",
    "decode",
    "encode",
]
