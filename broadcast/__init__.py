"""Multi-Paxos FIFO-total order broadcast: the runtime and public API.

* :class:`Node` - embed a cluster member in a Python application, with a state
  machine whose ``apply`` sees every committed payload in the total order.
* :class:`Client` - broadcast into a cluster and subscribe to its ordered
  stream from outside it.

Guarantees (whatever the timing, as long as fewer than half the nodes are
down or cut off for progress, and with fsync on for durability):
every node delivers every committed payload exactly once, all in one total
order, each sender's payloads in the order it sent them; a broadcast that
returned is committed and is never lost.
"""

from broadcast.client import Client, ClusterUnavailable, Committed, StateSnapshot
from broadcast.errors import Compacted, PayloadTooLarge, SessionExpired, WrongCluster
from broadcast.node import BroadcastResult, Node, StateMachine
from broadcast.spec import Cluster, ConfigError, local_cluster, parse_cluster
from paxos.types import Command, Delivery

__all__ = [
    "BroadcastResult",
    "Client",
    "Cluster",
    "ClusterUnavailable",
    "Command",
    "Committed",
    "Compacted",
    "ConfigError",
    "Delivery",
    "Node",
    "PayloadTooLarge",
    "SessionExpired",
    "StateMachine",
    "StateSnapshot",
    "WrongCluster",
    "local_cluster",
    "parse_cluster",
]
