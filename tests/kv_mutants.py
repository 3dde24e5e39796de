"""Planted bugs in the coordination service and its client, for ``paxos chaos --service kv``
(run by tests/test_chaos_kv.py), and the checker verdict that must catch each.

Like :mod:`runtime_mutants`, they live here and never behind switches in production
code: each is a one-line rewrite of the shipped function (:func:`runtime_mutants.rewrite`)
or a wrapper around it.

A *client* bug is planted in the harness's own process, where the clients run; a
*service* bug in every node process (the harness then starts its nodes through this
file). The checkers also run in the harness's process and are never mutated: they replay
the agreed log through the machine as it ships.

Run one::

    python tests/kv_mutants.py NAME [paxos chaos arguments...]

(nodes: ``python tests/kv_mutants.py --node NAME MARKS -- <paxos node arguments>``.)
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime_mutants import Patch, rewrite

from broadcast.client import Client, ClusterUnavailable
from broadcast.kv.client import KvClient
from broadcast.kv.wire import decode_get, encode_query
from paxos.coord.commands import CoordCommand
from paxos.coord.machine import CoordMachine, Result


@dataclass(frozen=True)
class KvMutant:
    """A planted bug, where it runs, the verdict that must fail and what it must say."""

    doc: str
    side: str  # "client" (the harness's process) or "service" (every node)
    patches: Callable[[], list[Patch]]
    verdict: str
    expect: str
    #: ``paxos chaos`` arguments that give the bug its chance in a short run.
    args: tuple[str, ...]


_GET = KvClient.get
_CALL = KvClient._call
_CLIENT_CALL = Client.call
_FENCED = CoordMachine._fenced


def _get_from_any_replica(self: KvClient, key: str, *, stale: bool = False) -> Any:
    """KvClient.get, with every read sent to a replica picked at random (a load balancer
    in front of the nodes) and answered from its applied state: the log is skipped."""
    node = random.choice(self._client.cluster.ids)
    answer = self._client.query(encode_query("get", key), node=node)
    entry = decode_get(answer.payload)
    return None if entry is None else (entry[0], entry[1])


def _impatient_call(
    self: KvClient, command: CoordCommand, what: str, refuse: bool = True
) -> Result:
    """KvClient._call with a short fuse: a command not committed (or answered) in time
    is sent again on a fresh connection, whose broadcast session the cluster cannot tell
    from a new command's, while the first connection is left as it is. (The fuse is 5
    ms, short enough that the bug fires many times in a few seconds.)"""
    if self._client.session is None:
        self._client.open_session()  # (the fuse is for commands, not for the session)
    patient = self._client.timeout
    self._client.timeout = 0.005
    try:
        return _CALL(self, command, what, refuse)
    except ClusterUnavailable:
        with self._mutex:
            self._client = self._connect("call")
        return _CALL(self, command, what, refuse)
    finally:
        self._client.timeout = patient


MUTANTS: dict[str, KvMutant] = {
    "reads-any-replica": KvMutant(
        "linearizable gets are answered by any replica's applied state, without the log",
        "client",
        lambda: [(KvClient, "get", _get_from_any_replica)],
        "linearizable",
        r"not linearizable: .*\(read returning",
        ("--faults", "partition", "--duration", "3", "--tempo", "0.5"),
    ),
    "fence-ignored": KvMutant(
        "the service ignores fencing tokens: a fenced write is applied whoever holds the lock",
        "service",
        lambda: [(CoordMachine, "_fenced", rewrite(_FENCED, "if fence is None:", "if True:"))],
        "locks",
        r"the service accepted Put\(key='g/0'.* with token \d+, but lock 'lock/0' was",
        ("--faults", "pause", "--lock-pause-chance", "1", "--duration", "6"),
    ),
    "resend-as-new": KvMutant(
        "a client resends a command that is slow to commit as a new one (a fresh session)",
        "client",
        lambda: [(KvClient, "_call", _impatient_call)],
        "at-most-once",
        r"took effect 2 times",
        ("--faults", "pause,kill", "--duration", "3", "--tempo", "0.5"),
    ),
    "takes-any-result": KvMutant(
        "a client takes whichever result arrived first, not the one of its command",
        "client",
        lambda: [(Client, "call", rewrite(
            _CLIENT_CALL,
            "hit = self._results.pop(key, None)",
            "hit = self._results.pop(next(iter(self._results))) if self._results else None",
        ))],
        "results",
        r"names index \d+, which holds .*: another command's result",
        ("--faults", "pause,kill", "--duration", "3", "--tempo", "0.5"),
    ),
}


def apply(name: str) -> Callable[[], None]:
    """Plant ``name`` here; returns what takes it out again."""
    undo = []
    for owner, attribute, replacement in MUTANTS[name].patches():
        undo.append((owner, attribute, owner.__dict__[attribute]))
        setattr(owner, attribute, replacement)

    def remove() -> None:
        for owner, attribute, original in reversed(undo):
            setattr(owner, attribute, original)

    return remove


def main(argv: list[str]) -> None:
    if argv[:1] == ["--node"]:
        # A node: the bug, then chaos.nodeproc as the harness would run it.
        from chaos.nodeproc import main as node_main

        apply(argv[1])
        node_main(argv[2:])
        return
    name, args = argv[0], argv[1:]
    mutant = MUTANTS[name]
    if mutant.side == "client":
        apply(name)
    else:
        import chaos.harness

        chaos.harness.NODE_PROGRAM = (str(Path(__file__).resolve()), "--node", name)
    from broadcast.cli import main as paxos

    paxos(["chaos", *args], prog_name="paxos")


if __name__ == "__main__":
    main(sys.argv[1:])
