"""Replicated objects: a counter and a dict shared by three nodes in one process.

Each node registers the same objects in a :class:`ReplicatedGroup` (its state
machine); calling a replicated method on any node broadcasts the call, and every
replica applies it at the same place in the log::

    python examples/replicated_counter.py

Reads are local (fast, possibly stale) unless ``linearizable=True`` (a read
barrier through the log first).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from broadcast import Node, local_cluster
from broadcast.local import cluster_file, free_base_port
from broadcast.replicated import CapacityExceeded, ReplCounter, ReplDict, ReplicatedGroup


class App:
    """One replica's objects: the same, with the same bounds, on every node."""

    def __init__(self) -> None:
        self.visits = ReplCounter()
        self.settings = ReplDict(max_bytes=4096)
        self.group = ReplicatedGroup(visits=self.visits, settings=self.settings)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Keys and cluster.toml in tmp; node i's key is tmp/node<i>/node.key.
        cluster = cluster_file(Path(tmp), local_cluster(3, base_port=free_base_port(3)))
        apps = {i: App() for i in cluster.ids}
        nodes = []
        for i, app in apps.items():
            node = Node(i, cluster, f"{tmp}/node{i}", state_machine=app.group, fsync=False)
            app.group.attach(node.start())
            nodes.append(node)
        try:
            one, two, three = apps[1], apps[2], apps[3]
            print("node 1: visits.inc() ->", one.visits.inc())
            print("node 2: visits.add(10) ->", two.visits.add(10))
            print("node 1: settings.set('color', 'blue') ->", one.settings.set("color", "blue"))
            print("node 2: settings.set('color', 'green') ->", two.settings.set("color", "green"))
            print("node 1: linearizable get ->", one.settings.get("color", linearizable=True))
            print("node 3: local get (maybe stale) ->", three.settings.get("color"))
            try:
                one.settings.set("big", "x" * 5000)
            except CapacityExceeded as exc:
                print("refused on every replica:", exc)
            for i, app in apps.items():
                app.group.sync()  # this replica has applied everything committed so far
                print(f"node {i}: visits={app.visits.get()} settings={app.settings.to_dict()}")
        finally:
            for node in nodes:
                node.stop()


if __name__ == "__main__":
    main()
