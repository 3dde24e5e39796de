"""Who may speak to a node, and what a client key may do (real node processes, CURVE).

The attacker is :class:`forge.Wire`: raw ZeroMQ sockets with the routing identity
and the key it likes. What it sends is the attack of :mod:`forge`: Paxos messages
in a member's name (a Prepare at a high ballot, an Accept carrying a commit, an
Accepted, a HeartbeatReply, a Commit, a CatchupReply with a payload nobody
broadcast) and client requests (Submit into the admin's session, Fetch,
StatusRequest, OpenSession). It impersonates the leader towards the followers
(a follower promises nobody else while its leader lives) and a follower towards
the leader. What the cluster did with it is read from outside, by its effects:

* no reply ever reaches the attacker;
* no node's ballot reaches the forged round (:data:`forge.FORGED_ROUND`, far above
  any round an election in a test gets to; ballots only grow, so a look after the
  attack sees any forged one taken during it; an honest election on a loaded machine
  may still move the ballot, so "unchanged" is not asked) and no session is opened;
* the next real broadcast takes the very next index, and every node's delivered
  stream holds the real payloads only (every forged one contains ``FORGED``);
* the nodes' logs say why: ``gate.denied`` (a key on no list),
  ``transport.malformed_dropped`` ("not allowed for 'c:admin'": an envelope from a
  client key), ``frame.dropped`` (a member's key speaking in another member's name).

Each test also shows that its attack is not vacuous: the attacker's own sockets
report whether their handshakes failed or succeeded, a listed key on the same
:class:`~forge.Wire` gets answers, and a member's key that speaks in its *own*
name through the same connection does move a node's ballot.

``--insecure`` (plaintext, no keys) lets anyone forge anything: there, the same
barrage plus oversized and malformed messages must merely not stop a node.

tests/runtime_mutants.py plants the bugs these tests must catch (the gate letting
in any key; the transport taking a sender's member id from its routing identity,
for any key or for members' keys; a client key allowed into another's session or
under another's name); tests/test_runtime_mutations.py checks that they do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from forge import (
    FORGED,
    FORGED_ROUND,
    Wire,
    client_forgeries,
    log_events,
    pace,
    paxos_forgeries,
)
from fuzzframes import FrameFuzzer, peer_message
from procs import ProcessCluster, grant_toml, wait_for

from broadcast.client import Client, Committed
from broadcast.errors import Forbidden, SessionExpired
from broadcast.keys import Keypair, load_keypair, save_keypair
from broadcast.protocol import (
    CloseSession,
    Denied,
    Status,
    StatusRequest,
    Submit,
)
from broadcast.spec import parse_cluster
from broadcast.transport import ENVELOPE_BYTES, pack_envelopes
from paxos.codec import decode, encode
from paxos.messages import Accept
from paxos.types import Ballot, Command

pytestmark = pytest.mark.integration

#: The admin application's session name (the admin key may use any).
ADMIN = "admin-app"
#: The attack: this many rounds, one every PERIOD_S.
ROUNDS = 30
PERIOD_S = 0.1


# ---------------------------------------------------------------------------------- helpers


@contextmanager
def running(procs: ProcessCluster) -> Iterator[ProcessCluster]:
    try:
        yield procs
    finally:
        procs.stop()


def statuses(client: Client, procs: ProcessCluster) -> dict[int, Status]:
    out = {}
    for node in procs.cluster.ids:
        out[node] = wait_for(f"node {node}'s status", lambda n=node: client.status(n, 1.0))
    return out


def stream(client: Client, node: int) -> list[Command]:
    """Everything ``node`` has delivered, read through its stream."""
    status = wait_for(f"node {node}'s status", lambda: client.status(node, 1.0))
    out: list[Command] = []
    if status.delivered:
        for delivery in client.subscribe(1, node=node):
            out.append(delivery.command)
            if len(out) >= status.delivered:
                break
    return out


def delivered_everywhere(
    client: Client, procs: ProcessCluster, count: int
) -> dict[int, list[Command]]:
    """Every node's stream, once each node has delivered at least ``count`` commands."""
    for node in procs.cluster.ids:
        wait_for(
            f"node {node} to deliver {count} commands",
            lambda n=node: (s := client.status(n, 1.0)) is not None and s.delivered >= count,
        )
    return {node: stream(client, node) for node in procs.cluster.ids}


def committed_before_the_attack(
    admin: Client, procs: ProcessCluster
) -> tuple[list[bytes], str, dict[int, Status], int]:
    """Real payloads committed and delivered everywhere first: the payloads, the admin's
    session key, every node's status, and the first slot nobody has chosen yet."""
    real = [b"real %d" % i for i in range(3)]
    admin.broadcast_many(real)
    session = admin.session
    assert session is not None
    delivered_everywhere(admin, procs, len(real))
    before = statuses(admin, procs)
    return real, session, before, max(s.commit for s in before.values()) + 1


def impersonations(leader: int, ids: tuple[int, ...], own: int = 0) -> list[tuple[int, list[int]]]:
    """Whom to impersonate towards whom: the leader towards every other node, and a
    follower (not ``own``, the attacker's own member id if it holds a member's key)
    towards the leader."""
    follower = next(i for i in ids if i not in (leader, own))
    return [(leader, [i for i in ids if i != leader]), (follower, [leader])]


def attack(wire: Wire, src: int, targets: list[int], session: str, seq: int, slot: int,
           nonce: int, *, clients: bool = True) -> None:
    """One round: the Paxos forgeries in ``src``'s name, then (``clients``) the client
    forgeries."""
    for node in targets:
        wire.send_envelopes(node, paxos_forgeries(src, session, seq, slot))
        if clients:
            for frame in client_forgeries(session, seq, nonce):
                wire.send(node, [frame])


def assert_untouched(
    client: Client,
    procs: ProcessCluster,
    before: dict[int, Status],
    real: list[bytes],
    who: str,
) -> None:
    """Nothing forged was acted on: ballots below the forged round, no session opened,
    the next real broadcast at the next index, every stream the real payloads only."""
    after = statuses(client, procs)
    for node, status in after.items():
        assert status.ballot.round < FORGED_ROUND, (
            f"{who}: node {node} took a forged Prepare or Accept: its ballot went from "
            f"{before[node].ballot} to {status.ballot}"
        )
        assert status.sessions == before[node].sessions, (
            f"{who}: node {node} opened a forged session ({before[node].sessions} sessions "
            f"before the attack, {status.sessions} after)"
        )
    last = max(s.delivered for s in before.values())
    committed = client.broadcast(b"after the attack")
    assert committed.index == last + 1, (
        f"{who}: something forged was delivered: the next real broadcast got index "
        f"{committed.index}, not {last + 1}"
    )
    expected = [*real, b"after the attack"]
    for node, commands in delivered_everywhere(client, procs, len(expected)).items():
        forged = [c for c in commands if FORGED in c.payload]
        assert not forged, f"{who}: node {node} delivered forged commands {forged}"
        assert [c.payload for c in commands] == expected, (
            f"{who}: node {node} delivered {[c.payload for c in commands]}"
        )


def log_reasons(procs: ProcessCluster, node: int, event: str, key: str = "reason") -> list[str]:
    return [str(e.get(key)) for e in log_events(procs.log_file(node), event)]


# ------------------------------------------------------------------ 1. keys on no list


def test_a_stranger_gets_no_answer_and_moves_nothing(tmp_path: Path) -> None:
    """A stranger connecting plaintext, or with CURVE and a key of its own (it knows the
    nodes' public keys from the cluster file), under a member's routing identity
    (``n:<id>``, ``n:<id>/xyz``) or a client's, is refused at the handshake: for 3 s,
    every 100 ms, on fresh connections, it sends the whole attack; no node answers, and
    nothing changes. The same wire with a listed key is answered."""
    with running(ProcessCluster(tmp_path, 3)) as procs:
        cluster = procs.cluster
        leader = procs.leader()
        with procs.client(client_id=ADMIN) as admin:
            real, session, before, slot = committed_before_the_attack(admin, procs)
            strangers: list[tuple[str, Wire, int, list[int]]] = []
            for flavour, keypair in (("plaintext", None), ("unlisted key", Keypair.generate())):
                for src, targets in impersonations(leader, cluster.ids):
                    for identity in (b"n:%d/xyz" % src, b"n:%d" % src):
                        wire = Wire(cluster, identity, keypair=keypair, nodes=targets)
                        strangers.append((f"{flavour} as {identity.decode()}", wire, src, targets))
                wire = Wire(cluster, b"c:stranger", keypair=keypair)
                strangers.append((f"{flavour} as a client", wire, leader, list(cluster.ids)))
            # The control: the same wire with a listed key (the admin's) is answered.
            control = Wire(cluster, b"c:control", keypair=load_keypair(cluster.client_key))
            try:
                for i in pace(PERIOD_S, ROUNDS):
                    for _, wire, src, targets in strangers:
                        if i:
                            wire.redial()
                        attack(wire, src, targets, session, 1 + len(real), slot, i)
                    if i % 10 == 0:
                        for node in cluster.ids:
                            control.send(node, [encode(StatusRequest(10_000 + i))])
                for name, wire, _, targets in strangers:
                    wait_for(f"{name}: its last handshakes to end",
                             lambda w=wire, t=targets: w.saw("handshake", last=True) == set(t))
                    assert not wire.saw("handshake_succeeded"), f"{name} was let in"
                    assert wire.saw("handshake_failed") == set(targets), name
                wait_for("the control's answers", lambda: len(control.saw("handshake_succeeded"))
                         == len(cluster.ids) and len(control.replies) == 3 * len(cluster.ids))
                answers = [decode(parts[0]) for _, parts in control.replies]
                assert all(isinstance(a, Status) for a in answers), answers
                assert_untouched(admin, procs, before, real, "a stranger")
                for name, wire, _, _ in strangers:
                    assert not wire.replies, f"{name} got answers: {wire.replies[:3]}"
            finally:
                for _, wire, _, _ in strangers:
                    wire.close()
                control.close()
        # (A plaintext connection leaves no line: ZeroMQ refuses it for its mechanism
        # before the ZAP handler is asked.)
        for node in cluster.ids:
            assert "unknown key" in log_reasons(procs, node, "gate.denied"), (
                f"node {node} logged no gate.denied for the unlisted key"
            )


# ------------------------------------------------- 2. a listed key in a member's name


def test_a_listed_key_cannot_speak_for_a_member(tmp_path: Path) -> None:
    """An authorised key that is not the member's (a client's: the admin's; another
    member's: node K's) connects with CURVE under the member's routing identity
    (``n:<id>``, ``n:<id>/xyz``) and sends the attack for 3 s: it is let in, but no envelope
    from a client key is taken (the transport counts it as unauthorised), and what K's key
    says in another member's name is dropped (its id is its key's, not its routing
    identity's). Then K's key speaks in its own name, through one of the same
    connections, and its Accept is taken: the channel was real all along."""
    with running(ProcessCluster(tmp_path, 3)) as procs:
        cluster = procs.cluster
        leader = procs.leader()
        member = next(i for i in cluster.ids if i != leader)  # whose key the impostor holds
        third = next(i for i in cluster.ids if i not in (leader, member))
        impostors: list[tuple[str, Wire, int, list[int]]] = []
        with procs.client(client_id=ADMIN) as admin:
            real, session, before, slot = committed_before_the_attack(admin, procs)
            client_key = load_keypair(cluster.client_key)
            member_key = load_keypair(procs.data_dir(member) / "node.key")
            try:
                for src, targets in impersonations(leader, cluster.ids):
                    for identity in (b"n:%d/xyz" % src, b"n:%d" % src):
                        wire = Wire(cluster, identity, keypair=client_key, nodes=targets)
                        impostors.append(
                            (f"the admin's client key as {identity.decode()}", wire, src, targets)
                        )
                for src, targets in impersonations(leader, cluster.ids, own=member):
                    identity = b"n:%d/abc" % src
                    wire = Wire(cluster, identity, keypair=member_key, nodes=targets)
                    impostors.append(
                        (f"node {member}'s key as {identity.decode()}", wire, src, targets)
                    )
                for name, wire, _, targets in impostors:
                    wait_for(f"{name} to be let in",
                             lambda w=wire, t=targets: w.saw("handshake_succeeded") == set(t))
                for i in pace(PERIOD_S, ROUNDS):
                    for name, wire, src, targets in impostors:
                        # (A member's key sends Paxos only: the node would log its client
                        # frames as malformed, and the log checked below is rate-limited.)
                        attack(wire, src, targets, session, 1 + len(real), slot, i,
                               clients=name.startswith("the admin's"))
                assert_untouched(admin, procs, before, real, "an impostor")
                for name, wire, _, _ in impostors:
                    assert not wire.replies, f"{name} got answers: {wire.replies[:3]}"
                    assert not wire.saw("disconnected"), f"{name} was cut off"
                for node in cluster.ids:
                    assert "not allowed for 'c:admin'" in log_reasons(
                        procs, node, "transport.malformed_dropped"
                    ), f"node {node} did not log the envelopes from the client key"
                    if node != member:
                        assert "message src does not match the sender" in log_reasons(
                            procs, node, "frame.dropped"
                        ), f"node {node} did not log node {member}'s frames in another's name"

                # The control: node K's key, in its own name, on the connection it used to
                # impersonate the leader, is heard: an Accept at the forged round moves the
                # third node's ballot.
                wire = next(w for name, w, src, _ in impostors
                            if name.startswith("node") and src == leader)
                accept = Accept(member, Ballot(FORGED_ROUND, member), slot + 10, (), 0)

                def moved() -> bool:
                    wire.send_envelopes(third, [encode(accept)])
                    status = admin.status(third, 1.0)
                    return status is not None and status.ballot.round >= FORGED_ROUND

                wait_for(f"node {member}'s own Accept to move node {third}'s ballot", moved)
            finally:
                for _, wire, _, _ in impostors:
                    wire.close()


# ------------------------------------------------------------------ 3. client grants


def forbidden(what: str, call: Callable[[], Any]) -> Forbidden:
    """The Forbidden ``call`` raises; an AssertionError naming ``what`` if it returns
    something instead (None, no answer in time, is asked again)."""

    def attempt() -> Forbidden | None:
        try:
            result = call()
        except Forbidden as exc:
            return exc
        if result is None:
            return None
        raise AssertionError(f"{what} was allowed (it returned {result!r})")

    return wait_for(f"an answer to {what}", attempt)


def paxos_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broadcast", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PAXOS_")},
        stdin=subprocess.DEVNULL,
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0, f"exited 0: {out.stdout}"
    lines = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr[-2000:]
    return lines[0]


def test_a_client_key_is_held_to_its_grant(tmp_path: Path) -> None:
    """``alice`` may broadcast and ask for status under session names ``alice*``;
    ``reader`` may only subscribe. Alice cannot open a session named ``bob``, write into
    the admin's session, ask what became of a seq of it, close it, subscribe or snapshot;
    the reader cannot broadcast or ask for status. The CLI says so in one line."""
    procs = ProcessCluster(tmp_path, 3, start=())
    with running(procs):
        keys = tmp_path / "keys"
        alice_key, reader_key = Keypair.generate(), Keypair.generate()
        save_keypair(keys / "alice.key", alice_key)
        save_keypair(keys / "reader.key", reader_key)
        path = tmp_path / "cluster.toml"
        with path.open("a") as f:
            f.write(grant_toml("alice", alice_key, ["alice*"], ["broadcast", "status"]))
            f.write(grant_toml("reader", reader_key, [], ["subscribe"]))
        procs.cluster = cluster = parse_cluster(str(path))  # the nodes read it at start
        assert set(cluster.clients) == {"admin", "alice", "reader"}
        for node in cluster.ids:
            procs.start(node)
        procs.leader()

        with (
            procs.client(client_id=ADMIN) as admin,
            Client(cluster, key_file=keys / "alice.key", client_id="alice-app") as alice,
            Client(cluster, key_file=keys / "reader.key") as reader,
        ):
            real = [b"admin 1", b"admin 2"]
            admin.broadcast_many(real)
            session = admin.session
            assert session is not None
            # Alice in her own name: allowed.
            mine = alice.broadcast(b"alice 1")
            assert mine.client.startswith("alice-app#"), mine
            assert isinstance(wait_for("alice's status", lambda: alice.status(1, 1.0)), Status)

            # Not in bob's name.
            with Client(cluster, key_file=keys / "alice.key", client_id="bob") as bob:
                denied = forbidden("alice opening a session named bob", bob.open_session)
                assert "bob" in denied.what, denied.what
            # Not into the admin's session, not about it, not closing it: every node says
            # Denied, and nothing else (no SubmitAck with the index of the admin's seq 1).
            wire = Wire(cluster, b"c:alice-raw", keypair=alice_key)
            try:
                requests = [
                    Submit((Command(session, 1 + len(real), b"alice in the admin's session"),)),
                    Submit((Command(session, 1, b"what became of seq 1?"),)),
                    CloseSession(session),
                ]
                for node in cluster.ids:
                    for request in requests:
                        wire.send(node, [encode(request)])
                    # Answered after the requests before it on this connection: the end.
                    wire.send(node, [encode(StatusRequest(777))])

                def answers() -> list[object] | None:
                    wire.pump()
                    got = [decode(parts[0]) for _, parts in wire.replies]
                    done = [a for a in got if isinstance(a, Status) and a.nonce == 777]
                    return got if len(done) == len(cluster.ids) else None

                got = [a for a in wait_for("the nodes' answers to alice", answers)
                       if not isinstance(a, Status)]
                assert len(got) == len(requests) * len(cluster.ids) and all(
                    isinstance(a, Denied) and ADMIN in a.what for a in got
                ), f"alice wrote into, closed or learnt about the admin's session: {got}"
            finally:
                wire.close()
            forbidden("alice subscribing", lambda: next(alice.subscribe(1, node=1)))
            forbidden("alice taking a snapshot", lambda: alice.take_snapshot(1, 1.0))

            # The reader reads everything, and does nothing else.
            seen = []
            for delivery in reader.subscribe(1):
                seen.append(delivery.command.payload)
                if len(seen) == 3:
                    break
            assert seen == [*real, b"alice 1"], seen
            forbidden("the reader broadcasting", lambda: reader.broadcast(b"reader 1"))
            forbidden("the reader asking for status", lambda: reader.status(1, 1.0))

            # The admin's session is whole: its next seq is its own, nothing of alice's in it.
            after = admin.broadcast(b"admin 3")
            assert (after.client, after.seq, after.index) == (session, 3, 4), after
            for node, commands in delivered_everywhere(admin, procs, 4).items():
                payloads = [c.payload for c in commands]
                assert payloads == [*real, b"alice 1", b"admin 3"], (
                    f"node {node} delivered {payloads}"
                )

        # The CLI: a one-line error and a non-zero exit; in her own name it works.
        spec = str(path)
        alice_file, reader_file = str(keys / "alice.key"), str(keys / "reader.key")
        line = one_error_line(paxos_cli("broadcast", "--cluster", spec, "--key", alice_file,
                                        "--client-id", "bob", "hello"))
        assert "not allowed" in line and "bob" in line, line
        line = one_error_line(paxos_cli("broadcast", "--cluster", spec, "--key", reader_file,
                                        "hello"))
        assert "not allowed" in line and "broadcast" in line, line
        line = one_error_line(paxos_cli("subscribe", "--cluster", spec, "--key", alice_file,
                                        "--count", "1"))
        assert "not allowed" in line and "subscribe" in line, line
        ok = paxos_cli("broadcast", "--cluster", spec, "--key", alice_file,
                       "--client-id", "alice-cli", "hello")
        assert ok.returncode == 0 and '"client": "alice-cli#' in ok.stdout, ok.stderr[-2000:]


# ------------------------------------------------------------------ 4. --insecure


def test_an_insecure_cluster_survives_the_barrage(tmp_path: Path) -> None:
    """With ``--insecure`` anyone may forge anything (that is what it means), so the
    forgeries may be acted on; but no node stops. After the attack of the tests above in
    every member's name and a client's, 2000 malformed and hostile messages
    (tests/fuzzframes.py) as a member and as a client, envelopes of 100k and of 5000 tiny
    frames, messages of 33 MB (as one part, as an envelope's second part, as a client
    frame) and a few hand-made malformed ones, every node is alive, and a new client's
    broadcast is delivered by every node."""
    with running(ProcessCluster(tmp_path, 3, insecure=True)) as procs:
        cluster = procs.cluster
        ids = cluster.ids
        procs.leader()
        with procs.client(client_id=ADMIN) as admin:
            admin.broadcast(b"before")
            session = admin.session
            assert session is not None
            slot = max(s.commit for s in statuses(admin, procs).values()) + 1
        members = [(src, Wire(cluster, b"n:%d/xyz" % src)) for src in ids]
        members += [(src, Wire(cluster, b"n:%d" % src)) for src in ids]
        client = Wire(cluster, b"c:insecure-attacker")
        junk = Wire(cluster, b"n:%d/junk" % ids[0])
        # One connection per oversized message: the node drops the connection it came on.
        huge = [Wire(cluster, b"n:%d/huge" % ids[0]), Wire(cluster, b"n:%d/huge2" % ids[0]),
                Wire(cluster, b"c:huge")]
        cid = junk.cluster_id
        try:
            for i in pace(PERIOD_S, ROUNDS // 2):
                for src, wire in members:
                    attack(wire, src, [n for n in ids if n != src], session, 2, slot, i)
                for node in ids:
                    for frame in client_forgeries(session, 2, i):
                        client.send(node, [frame])
            fuzzer = FrameFuzzer(1, src=ids[1], limits=False, sessions=(session,), cluster_id=cid)
            items = [item.parts for item in fuzzer.items(0, 2000)]
            tiny = encode(StatusRequest(0))
            head = b"\x00" + cid
            many = head + (len(tiny).to_bytes(4, "little") + tiny) * 100_000
            assert len(many) < ENVELOPE_BYTES  # refused for its count of frames alone
            big = os.urandom(33 * 10**6)
            for node in ids:
                member = members[1][1]  # as node ids[1], whose name the fuzzer's lies use
                for parts in items:
                    plain = len(parts) == 1 and parts[0][:1] not in (b"", b"\x00")
                    member.send(node, peer_message(parts, cid) if plain else parts)
                    client.send(node, parts)
                for parts, _ in pack_envelopes(cid, [tiny] * 5000):  # split as a member would
                    junk.send(node, parts)
                for parts in (
                    [many],
                    [b""],
                    [b"x"] * 1000,
                    [head],  # no frame
                    [head + (1 << 31).to_bytes(4, "little") + tiny],  # a length that lies
                    [b"\x00" + bytes(16) + (len(tiny)).to_bytes(4, "little") + tiny],  # foreign
                    [head + (len(tiny)).to_bytes(4, "little"), tiny, tiny],  # three parts
                ):
                    junk.send(node, parts)
                    client.send(node, parts)
                huge[0].send(node, [head + len(big).to_bytes(4, "little"), big])
                huge[1].send(node, [head + len(big).to_bytes(4, "little") + big])
                huge[2].send(node, [big])
            for wire in huge:
                wait_for("every node to refuse the 33 MB messages",
                         lambda w=wire: w.saw("disconnected") == set(ids))
        finally:
            for _, wire in members:
                wire.close()
            for wire in (client, junk, *huge):
                wire.close()
        for node in ids:
            assert procs.alive(node), f"node {node} died (see {procs.log_file(node)})"
        # The forged lies may have split the nodes' logs for a while; a session opened
        # meanwhile may end with its broadcast's fate unknown (SessionExpired, as the
        # client reports it honestly). A new session, then.
        tries: list[SessionExpired] = []

        def broadcast() -> tuple[bytes, Committed] | None:
            payload = b"after the barrage, try %d" % len(tries)
            try:
                with procs.client(client_id="after-the-barrage", timeout=30) as after:
                    return payload, after.broadcast(payload)
            except SessionExpired as exc:
                tries.append(exc)
                return None

        payload, committed = wait_for("a broadcast after the barrage", broadcast, 120)
        assert committed.client.startswith("after-the-barrage#"), committed
        with procs.client() as reader:
            for node in ids:
                wait_for(f"node {node} to deliver the broadcast after the barrage",
                         lambda n=node: payload in [c.payload for c in stream(reader, n)])
        for node in ids:
            assert procs.alive(node), f"node {node} died (see {procs.log_file(node)})"
        print(f"\n--insecure barrage: broadcast committed at index {committed.index} after "
              f"{len(tries)} session(s) ended by the lies: {tries}")
