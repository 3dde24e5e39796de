"""A replicated key-value store driven by delivery callbacks.

Every node runs the same :class:`KVStore` state machine; commands are JSON
objects broadcast through the cluster, so every replica applies the same
writes in the same order and ends in the same state.

Run a 3-node store in one process and write to it::

    python examples/kv_store.py

The nodes speak CURVE, as every cluster does by default: ``cluster_file`` writes a
key for each node (into its data directory) and the cluster file that names them.

Reads come in two kinds:

* ``store.get(key)`` - a **local, possibly stale** read of this replica's state;
* ``node.broadcast(kv_get(key))`` - a **linearizable** read: the read is ordered
  in the log like a write, so it sees every write committed before it began.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from broadcast import Node, local_cluster
from broadcast.local import cluster_file
from paxos.types import Delivery


def kv_put(key: str, value: str) -> bytes:
    return json.dumps({"op": "put", "key": key, "value": value}).encode()


def kv_delete(key: str) -> bytes:
    return json.dumps({"op": "delete", "key": key}).encode()


def kv_get(key: str) -> bytes:
    return json.dumps({"op": "get", "key": key}).encode()


class KVStore:
    """The state machine: a dict, changed only by committed commands."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.applied = 0

    def apply(self, delivery: Delivery) -> Any:
        """Apply one committed command; returns the previous value (or the value, for get)."""
        self.applied = delivery.index
        try:
            command = json.loads(delivery.command.payload)
            op, key = command["op"], str(command["key"])
        except (ValueError, KeyError, TypeError):
            return {"error": "not a kv command"}  # deterministic on every replica
        if op == "put":
            previous = self.data.get(key)
            self.data[key] = str(command.get("value", ""))
            return previous
        if op == "delete":
            return self.data.pop(key, None)
        if op == "get":
            return self.data.get(key)
        return {"error": f"unknown op {op!r}"}

    def get(self, key: str) -> str | None:
        """A local read: fast, but it may miss writes committed elsewhere (stale)."""
        return self.data.get(key)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Keys and cluster.toml in tmp; node i's key is tmp/node<i>/node.key.
        cluster = cluster_file(Path(tmp), local_cluster(3, base_port=7300))
        stores = {i: KVStore() for i in cluster.ids}
        nodes = [
            Node(i, cluster, f"{tmp}/node{i}", state_machine=stores[i]).start()
            for i in cluster.ids
        ]
        try:
            print(nodes[0].broadcast(kv_put("color", "blue"), timeout=10))
            print(nodes[1].broadcast(kv_put("color", "green"), timeout=10))
            print(nodes[2].broadcast(kv_delete("shape"), timeout=10))
            read = nodes[2].broadcast(kv_get("color"), timeout=10)
            print("linearizable read:", read.result)
            print("stores:", {i: s.data for i, s in stores.items()})
        finally:
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
