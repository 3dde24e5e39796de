"""Hostile frames at a live node, as a client and as a peer (real processes on loopback).

A 3-node cluster of ``paxos node`` processes; node 3 is killed first, so that
its identity ``n:3`` is free and frames can arrive under a real member's name.
(A raw DEALER with the identity of a *live* member is not refused either:
ROUTER_HANDOVER gives it the route, and the member's own connection takes it
back only when it times out and reconnects, after a few seconds; frames would
land under that name only part of the time.) The node that then leads
receives, from raw ZeroMQ DEALER sockets, the frames of :mod:`fuzzframes` on
three channels, interleaved window by window:

* ``client``: a client identity ``c:...`` of the maximal length (255 bytes);
* ``stranger``: ``n:99``, a node id outside the cluster;
* ``member``: ``n:3``, the killed member.

The peer channels send every other window bare and the others in node-to-node
envelopes (``fuzzframes.peer_message``). One socket per identity: two DEALERs
with one identity would take the route from each other.

Pacing: a window of frames, then a StatusRequest on the same channel; the next
window leaves once its Status came back, so at most one window is in flight
and the node has read everything before it.

Afterwards: every node process is alive; each node's RSS stayed under
:func:`rss_limit_mb` (sampled every ``SAMPLE_EVERY`` frames) and its peak
(VmHWM) under ``HWM_LIMIT_MB``; its log grew by at most :func:`log_line_limit`
lines (and ``LOG_BYTES_PER_LINE`` bytes a line); node 3 restarts, a broadcast
commits, and all three nodes deliver the same sequence.

That acceptance run leaves out well-formed Paxos messages in the member's own
name (``FrameFuzzer(lies=False)``): Multi-Paxos tolerates crashes, not lying
members, so such messages may break agreement, which that run checks. A second
run sends only them (and junk) in the member's name, and checks everything but
agreement: a lie must not stop a node.

``PAXOS_FUZZ_FRAMES=N`` sends N frames instead of 100k (``PAXOS_FUZZ_LIES_FRAMES``
for the run of lies, 30k); ``PAXOS_FUZZ_SEED=S`` changes the seed. A failure
names the frames of the last windows as ``#i``; ``fuzzframes.frame_at(S + k, i,
src=...)`` rebuilds one (``k``: the channel's position in its run's specs).

The ``test_finding_*`` tests are the bugs this fuzzing found, with the one frame
that does each.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from fuzzframes import FrameFuzzer, Hostile, peer_message
from procs import ProcessCluster, wait_for

from broadcast.client import Client, ClusterUnavailable
from broadcast.protocol import Status, StatusRequest, Submit, SubmitAck
from paxos.codec import CodecError, decode, encode
from paxos.messages import Accept, CatchupReply, Nack, Prepare
from paxos.types import Ballot, Command

pytestmark = pytest.mark.integration

FRAMES = int(os.environ.get("PAXOS_FUZZ_FRAMES", "100000"))
SEED = int(os.environ.get("PAXOS_FUZZ_SEED", "20261201"))
#: Frames per window: at most this many (plus one probe) are in flight on a channel.
WINDOW = 200
#: RSS is sampled (and the nodes checked for life) every this many frames.
SAMPLE_EVERY = 5_000
#: A node starts at ~35 MB. Well-formed Submits among the frames commit a few thousand
#: commands per 100k frames, and a node keeps its whole log in memory (no compaction):
#: that, not junk, is what the per-frame allowance is for.
RSS_BASE_MB = 150
RSS_MB_PER_100K_FRAMES = 25
#: Bound on a node's peak resident set: a 64 MiB frame is held a few times over while
#: it is received and refused, so the peak is well above the steady state.
HWM_LIMIT_MB = 600
#: A log line is a few hundred bytes; longer ones would be a flood of bytes.
LOG_BYTES_PER_LINE = 400
#: A probe not answered within this time is lost (or the node is stuck).
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ChannelSpec:
    """A sender: its routing identity (None: a fresh client one of the maximal length),
    the node id it has (0 for a client), its share of the frames, and whether its
    Paxos messages may claim its own id (see ``FrameFuzzer``'s ``lies``)."""

    name: str
    identity: bytes | None
    src: int
    share: float
    lies: bool = False


#: The acceptance run: client, stranger and (killed) member, no lies in the member's name.
CHANNELS = (
    ChannelSpec("client", None, 0, 0.4),
    ChannelSpec("stranger", b"n:99", 99, 0.3),
    ChannelSpec("member", b"n:3", 3, 0.3),
)
#: The run of lies: well-formed Paxos messages in the killed member's name, with junk.
LIAR = (ChannelSpec("member", b"n:3", 3, 1.0, lies=True),)
LIES_FRAMES = int(os.environ.get("PAXOS_FUZZ_LIES_FRAMES", "30000"))


def rss_limit_mb(frames: int) -> float:
    return RSS_BASE_MB + RSS_MB_PER_100K_FRAMES * frames / 100_000


def log_line_limit(frames: int) -> int:
    """A node may log a few hundred lines, then about one per 200 junk frames at most."""
    return 500 + frames // 200


def proc_status_mb(pid: int, name: str = "VmRSS") -> float:
    """A memory field of /proc/<pid>/status in MB (VmRSS: now; VmHWM: the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {name} for pid {pid}")


def raw_dealer(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, identity: bytes
) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, int(PROBE_TIMEOUT_S * 1000))
    sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def probe(sock: zmq.Socket[bytes], nonce: int, *, enveloped: bool = False) -> tuple[bool, int]:
    """Send a StatusRequest; (True once its Status came back, replies read meanwhile)."""
    frame = encode(StatusRequest(nonce))
    sock.send(peer_message([frame], enveloped=enveloped))
    replies = 0
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        if not sock.poll(100):
            continue
        while True:
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            replies += 1
            try:
                msg = decode(parts[-1])
            except CodecError:
                continue
            if isinstance(msg, Status) and msg.nonce == nonce:
                return True, replies
    return False, replies


@dataclass
class Channel:
    """One raw DEALER at the target node, and its part of the run."""

    name: str
    src: int
    peer: bool
    fuzzer: FrameFuzzer
    indexes: Iterator[int]
    sock: zmq.Socket[bytes]
    sent: int = 0
    probes_lost: int = 0
    replies: int = 0
    enveloped: bool = False

    def send(self, items: list[Hostile]) -> None:
        """Send items the way this channel's sender would; a peer envelopes every other window."""
        self.enveloped = self.peer and not self.enveloped
        group: list[bytes] = []
        for item in items:
            frame = item.parts[0]
            plain = len(item.parts) == 1 and frame[:1] != b"\x00" and 0 < len(frame) < 1 << 20
            if self.enveloped and plain:
                group.append(frame)
                if len(group) > item.index % 4:  # envelopes of 1 to 4 frames
                    self._send([peer_message(group, enveloped=True)])
                    group = []
            else:
                # Bare: a client's frames, multipart items, envelopes of their own, empty
                # frames (one would void its envelope) and huge ones.
                self._send(list(item.parts))
        if group:
            self._send([peer_message(group, enveloped=True)])
        self.sent += len(items)

    def _send(self, parts: list[bytes]) -> None:
        self.sock.send_multipart(parts, copy=max(map(len, parts)) < 1 << 16)

    def probe(self, nonce: int) -> bool:
        # A peer's probe always travels the way a real node's frames do, enveloped: once
        # bare frames from node identities are dropped, it must still get through.
        answered, replies = probe(self.sock, nonce, enveloped=self.peer)
        self.replies += replies
        self.probes_lost += not answered
        return answered


def open_channels(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, specs: tuple[ChannelSpec, ...], frames: int
) -> list[Channel]:
    channels = []
    start = 0
    for k, spec in enumerate(specs):
        identity = spec.identity
        if identity is None:
            identity = b"c:" + uuid.uuid4().hex.encode()
            identity += b"x" * (255 - len(identity))  # the longest routing identity zmq allows
        count = round(frames * spec.share)
        # One seed per channel (its position), and disjoint indexes.
        fuzzer = FrameFuzzer(SEED + k, src=spec.src, lies=spec.lies)
        indexes = iter(range(start, start + count))
        sock = raw_dealer(ctx, endpoint, identity)
        channels.append(Channel(spec.name, spec.src, spec.src > 0, fuzzer, indexes, sock))
        start += count
    return channels


def crash_report(log: Path, lines: int = 60) -> str:
    """The end of a node's log from its last traceback (or Python stack dump) on."""
    text = log.read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(text) if line.startswith(("Traceback", "Fatal Python"))]
    first = starts[-1] if starts else max(0, len(text) - lines)
    body = [line for line in text[first:] if "site-packages/click" not in line]
    return "\n".join(body[-lines:])


class Watch:
    """The live nodes under fire: their life, RSS and logs, and what to say when one fails."""

    def __init__(self, cluster: ProcessCluster, nodes: list[int]) -> None:
        self.cluster = cluster
        self.nodes = nodes
        self.pids = {n: cluster.procs[n].pid for n in nodes}
        self.logs = {n: cluster.log_file(n) for n in nodes}
        self.log_start = {n: self._log_size(n) for n in nodes}
        self.rss_max = {n: proc_status_mb(pid) for n, pid in self.pids.items()}
        self.recent: deque[tuple[str, bool, list[Hostile]]] = deque(maxlen=6)

    def _log_size(self, node: int) -> tuple[int, int]:
        data = self.logs[node].read_bytes()
        return len(data), data.count(b"\n")

    def log_growth(self, node: int) -> tuple[int, int]:
        size, lines = self._log_size(node)
        return size - self.log_start[node][0], lines - self.log_start[node][1]

    def sample(self) -> None:
        for n, pid in self.pids.items():
            self.rss_max[n] = max(self.rss_max[n], proc_status_mb(pid))

    def peak_mb(self, node: int) -> float:
        return proc_status_mb(self.pids[node], "VmHWM")

    def check_alive(self, where: str) -> None:
        procs = self.cluster.procs
        dead = {n: procs[n].returncode for n in self.nodes if procs[n].poll() is not None}
        if dead:
            self.fail(f"node(s) {sorted(dead)} exited (codes {dead}) {where}", sorted(dead))

    def stuck(self, node: int, where: str) -> None:
        """Fail for a node that is alive but answers nothing: its Python stack tells why."""
        self.check_alive(where)  # it may have died meanwhile: that is the better report
        rss = proc_status_mb(self.pids[node])
        self.cluster.procs[node].send_signal(signal.SIGABRT)  # faulthandler dumps the stack
        self.cluster.procs[node].wait(10)
        self.fail(f"node {node} alive but stuck {where} (RSS {rss:.0f} MB)", [node])

    def fail(self, what: str, nodes: list[int]) -> None:
        report = [f"{what}; seed {SEED}."]
        if self.recent:
            report.append("Last windows, oldest first (a crash may come from an earlier one):")
        for name, enveloped, window in self.recent:
            report.append(f"-- channel {name} (enveloped={enveloped}):")
            report += [f"   {item.describe(48)}" for item in window]
        for n in nodes:
            report.append(f"--- node {n}, {self.logs[n]}:\n{crash_report(self.logs[n])}")
        pytest.fail("\n".join(report), pytrace=False)


def fuzz(watch: Watch, channels: list[Channel], target: int) -> int:
    """Send every channel's frames, window by window; returns the number sent."""
    sent = nonce = 0
    next_sample = SAMPLE_EVERY
    active = list(channels)
    while active:
        for channel in list(active):
            window = [channel.fuzzer.item(i) for i in itertools.islice(channel.indexes, WINDOW)]
            if not window:
                active.remove(channel)
                continue
            watch.recent.append((channel.name, not channel.enveloped and channel.peer, window))
            try:
                channel.send(window)
            except zmq.Again:
                watch.check_alive("while a window was being sent")
                watch.stuck(target, "(its socket took no more frames)")
            # A lost probe: a frame over the size limit made zmq drop the connection
            # (the DEALER reconnects, and what was queued behind it is lost). A second
            # probe must get through.
            for attempt in range(2):
                nonce += 1
                if channel.probe(nonce):
                    break
                watch.check_alive("before answering a probe")
                if attempt:
                    watch.stuck(target, f"(no answer to two probes on {channel.name})")
            sent += len(window)
            if sent >= next_sample:
                next_sample += SAMPLE_EVERY
                watch.check_alive(f"after {sent} frames")
                watch.sample()
    return sent


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProcessCluster]:
    # faulthandler: a node that gets SIGABRT (see Watch.stuck) writes its stack to its log.
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")
    # No fsync: the fuzz is about input handling, and the member channel makes the node
    # write promises; an fsync per turn would only slow the run down.
    procs = ProcessCluster(tmp_path, fsync=False)
    try:
        yield procs
    finally:
        procs.stop()


def run(
    cluster: ProcessCluster,
    specs: tuple[ChannelSpec, ...],
    frames: int,
    record_property: Callable[[str, object], None],
) -> Watch:
    """Kill node 3, fuzz the leader of the other two, check life, RSS and logs."""
    cluster.leader()
    cluster.kill(3)  # frees the identity n:3 for the member channel
    target = cluster.leader(exclude=3)
    watch = Watch(cluster, [1, 2])
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        channels = open_channels(ctx, cluster.cluster.endpoint(target), specs, frames)
        started = time.monotonic()
        sent = fuzz(watch, channels, target)
        seconds = time.monotonic() - started
    finally:
        ctx.destroy(linger=0)
    watch.check_alive("after the run")
    watch.sample()

    figures: dict[str, object] = {
        "frames": sent,
        "seconds": round(seconds, 1),
        "frames_per_s": round(sent / seconds),
        "target": target,
        "rss_max_mb": {n: round(v, 1) for n, v in watch.rss_max.items()},
        "rss_peak_mb": {n: round(watch.peak_mb(n), 1) for n in watch.nodes},
        "log_growth_bytes_lines": {n: watch.log_growth(n) for n in watch.nodes},
        "sent": {c.name: c.sent for c in channels},
        "probes_lost": {c.name: c.probes_lost for c in channels},
        "replies": {c.name: c.replies for c in channels},
    }
    for key, value in figures.items():
        record_property(f"fuzz_{key}", value)
    print(f"\nfuzz figures (seed {SEED}): {figures}")

    assert sent >= frames - len(specs), f"only {sent} of {frames} frames were sent"
    for n in watch.nodes:
        assert watch.rss_max[n] < rss_limit_mb(sent), f"node {n}: RSS {watch.rss_max[n]:.0f} MB"
        assert watch.peak_mb(n) < HWM_LIMIT_MB, f"node {n}: peak RSS {watch.peak_mb(n):.0f} MB"
        size, lines = watch.log_growth(n)
        assert lines <= log_line_limit(sent), f"node {n} logged {lines} lines"
        assert size <= LOG_BYTES_PER_LINE * log_line_limit(sent), f"node {n} logged {size} bytes"
    return watch


def test_fuzz_a_live_node_as_client_and_as_peer(
    cluster: ProcessCluster, record_property: Callable[[str, object], None]
) -> None:
    run(cluster, CHANNELS, FRAMES, record_property)
    # The cluster still commits, and every node, the restarted member included, agrees.
    cluster.start(3)
    with Client(cluster.cluster, client_id="after-fuzz", timeout=60) as client:
        committed = client.broadcast(b"still serving")
    orders = {n: cluster.order(n, committed.index) for n in cluster.cluster.ids}
    for n, order in orders.items():
        assert len(order) == committed.index, f"node {n}: {len(order)} of {committed.index}"
        assert order == orders[1], f"node {n} delivered another sequence than node 1"
    assert all(p.poll() is None for p in cluster.procs.values()), "a node died at the end"
    record_property("fuzz_delivered", committed.index)


def test_fuzz_a_live_node_with_lies_in_a_members_name(
    cluster: ProcessCluster, record_property: Callable[[str, object], None]
) -> None:
    """Lies may break agreement (crash-fault Paxos trusts its members), but no node may
    exit, hang, or grow without bound, and the cluster must still commit."""
    watch = run(cluster, LIAR, LIES_FRAMES, record_property)
    with Client(cluster.cluster, client_id="after-lies", timeout=60) as client:
        client.broadcast(b"still serving")
    watch.check_alive("after a broadcast")


# ---------------------------------------------------------------------------
# Findings: one frame each, in the name of killed member 3. Multi-Paxos trusts
# its members not to lie, but a lie must not stop a node.
# ---------------------------------------------------------------------------

U64 = 2**64 - 1


def send_as(cluster: ProcessCluster, node: int, identity: bytes, frames: list[bytes]) -> None:
    """Send frames to ``node`` from a raw DEALER; returns once it read them (or did not answer)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = raw_dealer(ctx, cluster.cluster.endpoint(node), identity)
        for frame in frames:
            sock.send(frame)
        probe(sock, 1)
    finally:
        ctx.destroy(linger=0)


def assert_keeps_serving(cluster: ProcessCluster, watch: Watch, seconds: float = 8.0) -> None:
    """For ``seconds``, every watched node is alive, answers and stays small; then one commit."""
    deadline = time.monotonic() + seconds
    with Client(cluster.cluster, client_id=f"check-{uuid.uuid4().hex[:8]}", timeout=20) as client:
        while time.monotonic() < deadline:
            watch.check_alive("after the frame")
            for n in watch.nodes:
                if client.status(n, 2.0) is None:
                    watch.stuck(n, "after the frame")
                if proc_status_mb(watch.pids[n]) > RSS_BASE_MB:
                    watch.stuck(n, "after the frame, and growing")
        client.broadcast(b"after the frame")
    watch.check_alive("after a broadcast")


def member_and_leader(cluster: ProcessCluster) -> tuple[Watch, int, Status]:
    """Kill node 3 (its identity is free), then the leader of the rest and its Status."""
    cluster.leader()
    cluster.kill(3)
    leader = cluster.leader(exclude=3)
    with Client(cluster.cluster) as client:
        status = client.status(leader, 5.0)
    assert status is not None
    return Watch(cluster, [1, 2]), leader, status


def test_finding_a_round_at_the_uint64_limit_crashes_the_next_campaign(
    cluster: ProcessCluster,
) -> None:
    """F1. A Nack from a member, to both live nodes, saying it promised round 2**64-1.

    The leader steps down (the Nack is for its ballot), and whichever node campaigns
    next asks for round 2**64: its PreVote does not encode (msgpack stops at uint64)
    and the CodecError escapes the node loop. Any message with a round near 2**64
    (Prepare, PreVote, Accept, Heartbeat, a Nack's ``promised``...) arms the same crash
    for the next campaign of the node that saw it, however much later.
    """
    watch, leader, status = member_and_leader(cluster)
    frame = encode(Nack(3, status.ballot, Ballot(U64, 3)))  # 9501050392..92cfff..ff03
    watch.recent.append(("member", False, [Hostile(0, "finding.F1.nack", (frame,))]))
    send_as(cluster, 3 - leader, b"n:3", [frame])
    send_as(cluster, leader, b"n:3", [frame])
    assert_keeps_serving(cluster, watch)


def test_finding_a_promised_round_at_the_uint64_limit_survives_restarts(
    cluster: ProcessCluster,
) -> None:
    """F1, persisted. A leaderless node promises a Prepare for round 2**64-1 and writes
    the promise to its log: it crashes at its next campaign, and again after a restart."""
    watch, leader, _ = member_and_leader(cluster)
    follower = 3 - leader
    cluster.kill(leader)
    with Client(cluster.cluster) as client:

        def leaderless() -> bool:
            status = client.status(follower, 0.5)
            return status is not None and status.leader == 0

        wait_for("the follower to give up on its leader", leaderless, 10)
    frame = encode(Prepare(3, Ballot(U64, 3), 1))  # 9501010392cfffffffffffffffff0301
    send_as(cluster, follower, b"n:3", [frame])
    deadline = time.monotonic() + 2.0
    while cluster.procs[follower].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # its next campaign is due within 300 ms
    if cluster.procs[follower].poll() is not None:
        cluster.start(follower)  # from its log, which holds the promise
    cluster.start(leader)
    watch = Watch(cluster, [1, 2])
    watch.recent.append(("member", False, [Hostile(0, "finding.F1.prepare", (frame,))]))
    assert_keeps_serving(cluster, watch)


def test_finding_a_slot_far_ahead_makes_the_next_leader_fill_every_slot_before_it(
    cluster: ProcessCluster,
) -> None:
    """F2. An Accept from a member at a higher ballot for slot 2**63.

    The receiver accepts it (and follows the dead member). At the next election the new
    leader's phase 1 reports that slot, and ``_become_leader`` proposes a no-op for every
    slot up to it, in one loop: the node stops answering and its memory grows by
    gigabytes. A slot a few million ahead does the same, for less time.
    """
    watch, leader, status = member_and_leader(cluster)
    ballot = Ballot(status.ballot.round + 1, 3)
    frame = encode(Accept(3, ballot, 2**63, (), 0))
    watch.recent.append(("member", False, [Hostile(0, "finding.F2.accept", (frame,))]))
    send_as(cluster, leader, b"n:3", [frame])
    assert_keeps_serving(cluster, watch)


@pytest.mark.xfail(
    strict=True,
    reason="F3: Multi-Paxos trusts its members; nothing authenticates a peer's frames",
)
def test_finding_a_forged_catchup_reply_breaks_agreement(tmp_path: Path) -> None:
    """F3. A CatchupReply in a member's name is believed: the receiver delivers a value
    that was never chosen, while the others choose another one in that slot.

    Out of the crash-fault model, so an expected failure; it passes once peers are
    authenticated (a cluster id in the envelope is not that: anyone who sees the
    traffic can copy it).
    """
    cluster = ProcessCluster(tmp_path, n=5, fsync=False)  # a majority without the victim
    try:
        cluster.leader()
        cluster.kill(5)
        leader = cluster.leader(exclude=5)
        victim = next(n for n in (1, 2, 3, 4) if n != leader)
        with Client(cluster.cluster) as client:
            status = client.status(victim, 5.0)
        assert status is not None
        slot = status.commit + 1
        forged = (Command("forger", 1, b"forged"),)
        send_as(cluster, victim, b"n:5", [encode(CatchupReply(5, ((slot, forged),), slot))])
        with Client(cluster.cluster, client_id="honest", timeout=30) as client:
            committed = client.broadcast(b"honest")
        orders = {n: cluster.order(n, committed.index, deadline_s=15) for n in (1, 2, 3, 4)}
        assert all(order == orders[leader] for order in orders.values()), orders[victim][-2:]
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------
# Findings about big values: no lie needed, a client (or an honest workload) does it.
# ---------------------------------------------------------------------------


def test_finding_a_message_of_many_values_exceeds_the_frame_limit_and_kills_the_node(
    cluster: ProcessCluster,
) -> None:
    """F4. 4200 broadcasts of 16.5 KB, then a subscriber reading them from the start.

    The node answers the subscriber's Fetch with up to 4096 deliveries in one Deliveries
    frame: 4096 x 16.5 KB is over MAX_FRAME_BYTES (64 MiB), ``encode`` raises CodecError
    in ``_reply_fetch`` and the node exits. CatchupReply (64 slots of up to 256 commands)
    and Promise (every accepted slot above the last CommitRecord) have no bound either:
    the same workload kills nodes that answer a catch-up or a Prepare, from ``_send``
    (a CatchupRequest(src=3, 1, 64) in a member's name does it at will).
    """
    cluster.leader()
    watch = Watch(cluster, [1, 2, 3])
    count = 4200
    payloads = (b"%06d" % i + b"x" * 16_500 for i in range(count))
    try:
        with Client(cluster.cluster, client_id="many-values", timeout=30) as client:
            client.broadcast_many(payloads)
    except ClusterUnavailable:
        watch.check_alive("during the broadcasts")
        raise
    watch.check_alive("after the broadcasts")
    leader = cluster.leader()
    delivered = cluster.order(leader, count, deadline_s=30)
    watch.check_alive("after a subscriber read from the start")
    assert len(delivered) == count


def test_finding_a_40_mib_broadcast_balloons_every_node(cluster: ProcessCluster) -> None:
    """F5. One 40 MiB command (the limit is 64 MiB), resent to every node every 0.25 s
    until acknowledged, as ``Client`` does.

    Decoding, logging and re-encoding 40 MiB keeps a node's loop busy for longer than
    the election timeout, so leadership churns; every node proposes or forwards each
    copy, and the leader retransmits 40 MiB Accepts every 40 ms: each node's RSS passes
    1.2 GB before it commits (with ``Client`` itself, 2-3 GB and no commit in 30 s), and
    the slots holding copies make F4's Promise exceed 64 MiB (a node exits).
    """
    cluster.leader()
    watch = Watch(cluster, list(cluster.cluster.ids))
    frame = encode(Submit((Command("big", 1, b"x" * (40 << 20)),)))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        socks = [raw_dealer(ctx, cluster.cluster.endpoint(n), b"c:big") for n in watch.nodes]
        acked = False
        last_send = 0.0
        deadline = time.monotonic() + 30
        while not acked and time.monotonic() < deadline:
            watch.check_alive("during a 40 MiB broadcast")
            watch.sample()
            if max(watch.rss_max.values()) > 2000:
                break  # no need to wait for the machine to swap
            if time.monotonic() - last_send >= 0.25:
                for sock in socks:
                    sock.send(frame, copy=False)
                last_send = time.monotonic()
            for sock in socks:
                while sock.poll(0):
                    acked |= isinstance(decode(sock.recv()), SubmitAck)
            time.sleep(0.02)
    finally:
        ctx.destroy(linger=0)
    watch.check_alive("after a 40 MiB broadcast")
    peaks = {n: round(watch.peak_mb(n)) for n in watch.nodes}
    assert acked, f"a 40 MiB command was not committed in 30 s (peak RSS MB {peaks})"
    assert max(peaks.values()) < HWM_LIMIT_MB, f"peak RSS MB per node: {peaks}"
