"""The coordination service: ZooKeeper's recipes on the broadcast log.

* :class:`~broadcast.kv.service.CoordService`: the state machine nodes replicate
  (``paxos kv serve``);
* :class:`~broadcast.kv.client.KvClient`: keys, sessions with leases, ephemeral
  keys, locks with fencing tokens, elections, barriers and resumable watches.
"""

from broadcast.kv.client import Election, KvClient, Lock, Watch
from broadcast.kv.errors import (
    KvError,
    OutcomeUnknown,
    Refused,
    SessionLost,
    WaitTimeout,
    WatchCompacted,
)
from broadcast.kv.service import CoordService
from broadcast.kv.wire import Cursor

__all__ = [
    "CoordService",
    "Cursor",
    "Election",
    "KvClient",
    "KvError",
    "Lock",
    "OutcomeUnknown",
    "Refused",
    "SessionLost",
    "WaitTimeout",
    "Watch",
    "WatchCompacted",
]
