"""Review finding (runtime): a membership change could name a public key the cluster
already uses; it failed on the reviewed code and passes with the fix.

``paxos member add`` (ChangeMembers, ADD_LEARNER) checks only that the key is Z85
(broadcast/node.py ``_on_change_members``); every node then runs
``Gatekeeper.admit_member`` (broadcast/auth.py), which *overwrites* the key -> principal
map. A key of an existing node now authenticates as the new id, so that node's
messages are dropped everywhere as "message src does not match the sender"
(broadcast/node.py ``_on_frame``) once it reconnects. The change is in the log:
every restart replays it (``_connect_members``), so the node stays cut off for good
and a single admin typo costs the cluster a voter (here: all its availability).
The cluster-file parser refuses shared keys (broadcast/spec.py: "shares a key with a
node or client"); the log path does not.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from procs import ProcessCluster, wait_for

from broadcast.auth import Gatekeeper, Keyring
from broadcast.client import ClusterUnavailable
from broadcast.local import free_base_port
from paxos.multi.membership import Op

pytestmark = pytest.mark.integration



def test_adding_a_learner_with_an_existing_nodes_key_is_refused_or_harmless(
    tmp_path: Path,
) -> None:
    cluster = ProcessCluster(tmp_path, fsync=False)
    try:
        leader = cluster.leader()
        victim, third = (n for n in (1, 2, 3) if n != leader)
        with cluster.client(timeout=30) as admin:
            admin.broadcast(b"before")
            try:
                admin.change_members(
                    Op.ADD_LEARNER, 4, f"127.0.0.1:{free_base_port(1) + 1}",
                    cluster.cluster.keys[victim], timeout=30,
                )
            except ValueError:
                return  # refused: the fix
        # Two of three voters (the leader and the victim) are enough to serve, but the
        # victim reconnects (a restart) and is now let in as node 4 by the leader.
        cluster.kill(third)
        cluster.kill(victim, signal.SIGKILL)
        cluster.start(victim)
        wait_for("the victim to run", lambda: cluster.alive(victim) or None)
        with cluster.client(timeout=30) as client:
            try:
                client.broadcast(b"after")
            except ClusterUnavailable as exc:
                text = cluster.log_file(leader).read_text()
                raise AssertionError(
                    f"2 of 3 voters up, yet no write: node {victim}'s key now lets it in "
                    f"as node 4 ({exc!r}); leader log tail:\n{text[-1500:]}"
                ) from None
    finally:
        cluster.stop()


def test_a_removed_members_key_is_no_longer_let_in() -> None:
    from broadcast.keys import Keypair

    keys = [Keypair.generate() for _ in range(3)]
    gate = Gatekeeper.__new__(Gatekeeper)  # just the key map (no sockets)
    ring = Keyring(keys[0], {1: keys[0].public, 2: keys[1].public}, {})
    gate.keyring = ring
    gate._principals = ring.principals()
    assert gate.admit_member(4, keys[2].public)
    assert gate._principal(b"CURVE", [_raw(keys[2].public)]) == "n:4"
    gate.revoke_member(4)
    assert gate._principal(b"CURVE", [_raw(keys[2].public)]) is None


def test_admit_member_never_takes_over_a_key_already_let_in() -> None:
    """The unit under the test above: after admit_member, a known key still maps to its
    own principal."""
    from broadcast.keys import Keypair

    keys = [Keypair.generate() for _ in range(3)]
    gate = Gatekeeper.__new__(Gatekeeper)  # just the key map (no sockets)
    ring = Keyring(keys[0], {1: keys[0].public, 2: keys[1].public}, {})
    gate.keyring = ring
    gate._principals = ring.principals()
    gate.admit_member(4, keys[1].public)  # node 2's key, named for node 4
    assert gate._principal(b"CURVE", [_raw(keys[1].public)]) == "n:2"


def _raw(z85: bytes) -> bytes:
    import zmq

    return zmq.utils.z85.decode(z85)
