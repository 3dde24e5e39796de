"""Replicated objects on top of a :class:`~broadcast.Node`: methods as broadcast commands.

::

    from broadcast.replicated import ReplCounter, ReplDict, ReplicatedGroup

    group = ReplicatedGroup(hits=ReplCounter(), users=ReplDict(max_bytes=1 << 20))
    node = Node(1, cluster, "data/node1", state_machine=group).start()
    group.attach(node)
    hits = group.objects["hits"]
    hits.add(1)                        # broadcast, committed, applied: returns the new value
    hits.get()                         # local read: this replica's state, maybe stale
    hits.get(linearizable=True)        # read barrier through the log first

Write your own with :class:`Replicated` and :func:`replicated`; see
:mod:`broadcast.replicated.core` for the rules that keep replicas equal and
:mod:`broadcast.replicated.encoding` for the (msgpack, versioned) wire format.
"""

from broadcast.replicated.core import (
    BoundCall,
    Replicated,
    ReplicatedGroup,
    ReplicatedMethod,
    replicated,
)
from broadcast.replicated.errors import (
    BadArgument,
    CallRefused,
    CapacityExceeded,
    IllegalWrite,
    MalformedCall,
    NotAttached,
    ReplicationError,
    ResultUnknown,
    StateError,
    UnknownMethod,
    UnknownObject,
    UnsupportedVersion,
)
from broadcast.replicated.objects import ReplCounter, ReplDict, ReplQueue, ReplSet

__all__ = [
    "BadArgument",
    "BoundCall",
    "CallRefused",
    "CapacityExceeded",
    "IllegalWrite",
    "MalformedCall",
    "NotAttached",
    "ReplCounter",
    "ReplDict",
    "ReplQueue",
    "ReplSet",
    "Replicated",
    "ReplicatedGroup",
    "ReplicatedMethod",
    "ReplicationError",
    "ResultUnknown",
    "StateError",
    "UnknownMethod",
    "UnknownObject",
    "UnsupportedVersion",
    "replicated",
]
