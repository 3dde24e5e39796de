"""The load client: one process that submits payloads and times every acknowledgement.

It speaks the runtime's client protocol (``Submit`` of ``(client, seq,
payload)`` commands in batches, ``SubmitAck`` runs back, ``SubmitRefused``
with a leader hint) through :class:`broadcast.transport.ClientTransport`, like
:class:`broadcast.client.Client`, but keeps a send timestamp per message so
that each message's commit latency (send -> acknowledgement, both on this
process' monotonic clock) is measured.

Two modes:

* **saturation** (``rate=None``): closed loop, keeps ``window`` messages in
  flight, sends in batches of ``batch`` as the window opens;
* **fixed rate**: every millisecond sends the messages due by then (``rate``
  per second) in one batch, whatever is in flight (open loop, capped at
  ``window`` in flight; ``behind`` reports how far the cap held it back).

Throughput is the number of acknowledgements received inside the measurement
window (``warmup_s`` after the start, for ``duration_s``). Latencies are
those of the messages *sent* inside the window; after the window the client
stops sending and waits up to ``grace_s`` for their acknowledgements, so a slow
tail is measured rather than cut off (what is still missing is ``unacked``).

Unacknowledged messages are re-sent, in order, after ``retry_s`` without
progress, or soon after a refusal or a failed send (to the hinted leader or
the next node). Latency is always counted from the first send.

Security: if ``cluster`` is a cluster file with keys, the client speaks CURVE
with the file's client key (``[client] key_file``: the admin key the benchmark
clusters create); with an inline spec it speaks plaintext to ``--insecure``
nodes. It never fetches deliveries, so it has no reply tickets to echo (see
:meth:`bench.clusters.BenchCluster.read_order` for a reader that does).
"""

from __future__ import annotations

import bisect
import os
import pickle
import sys
import time
import traceback
from array import array
from dataclasses import dataclass, field

from bench.clusters import client_transport
from broadcast.protocol import OpenSession, SessionOpened, Submit, SubmitAck, SubmitRefused
from broadcast.spec import parse_cluster
from broadcast.transport import TransportConfig
from paxos.codec import CodecError, decode, encode
from paxos.types import Command

_DEBUG = bool(os.environ.get("BENCH_DEBUG"))

#: After a refusal or a failed send, resend this soon (seconds).
_QUICK_RETRY_S = 0.02


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one load process does. Plain data: it is pickled into the process."""

    cluster: str
    """An inline spec (plaintext) or a cluster file (CURVE if it names keys)."""
    target: int
    client_id: str
    payload_bytes: int
    rate: float | None
    window: int
    batch: int
    warmup_s: float
    duration_s: float
    grace_s: float = 2.0
    retry_s: float = 1.0
    record_acks: bool = False


@dataclass(slots=True)
class LoadResult:
    """What one load process measured."""

    client_id: str
    session: str = ""
    """The key of the session the cluster opened for this load (its commands carry it)."""
    sent: int = 0
    """Distinct messages sent (first sends)."""
    acked: int = 0
    """Distinct messages acknowledged, in total."""
    window_acked: int = 0
    """Acknowledgements received inside the measurement window."""
    window_s: float = 0.0
    window_sent: int = 0
    """Messages first sent inside the window (their latencies are measured)."""
    unacked: int = 0
    """Of those, not acknowledged by the end of the grace period."""
    latencies: bytes = b""
    """array('d') of the window's latencies in seconds (tobytes)."""
    refused: int = 0
    resends: int = 0
    send_drops: int = 0
    behind_max: int = 0
    cpu_s: float = 0.0
    """This process' CPU time inside the window."""
    window_start: float = 0.0
    acks: list[tuple[int, float, int]] = field(default_factory=list)
    """With ``record_acks``: (seq, monotonic time, node) of every first acknowledgement."""
    send_times: bytes = b""
    """With ``record_acks``: array('d') of each seq's first send time (tobytes)."""
    error: str | None = None

    def sent_by(self, when: float) -> int:
        """The highest seq first sent at or before ``when`` (needs ``record_acks``)."""
        times = array("d")
        times.frombytes(self.send_times)
        return bisect.bisect_right(times, when)  # seqs are sent in order: times ascend


class LoadClient:
    """The measuring client. :meth:`run` drives it from ``start_at`` (a monotonic time)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.cluster = parse_cluster(spec.cluster)
        self.ids = self.cluster.ids
        # A deep receive queue: acks must never be what throttles the measurement.
        config = TransportConfig(sndhwm=10_000, rcvhwm=10_000)
        self.transport = client_transport(self.cluster, config=config)
        self.target = spec.target if spec.target in self.cluster.nodes else self.ids[0]
        #: The session's key, given by the cluster (sessions are opened through the log).
        self.key = self._open_session()
        self.payload = os.urandom(spec.payload_bytes)
        self.send_time = array("d")  # send_time[seq - 1]: first send (monotonic s)
        self.is_acked = bytearray()  # is_acked[seq - 1]
        self.next_seq = 1
        self.low = 1  # lowest seq not acknowledged
        self.inflight = 0
        self.latencies = array("d")
        self.result = LoadResult(spec.client_id, self.key)
        self.window_start = 0.0
        self.window_end = 0.0
        self.last_progress = 0.0
        self.resend_at = float("inf")
        self.suspect = 0
        self.suspect_until = 0.0

    def close(self) -> None:
        self.transport.close()

    def _open_session(self, timeout_s: float = 30.0) -> str:
        nonce = os.urandom(16)
        request = encode(OpenSession(self.spec.client_id, nonce, ""))
        deadline = time.monotonic() + timeout_s
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                for node in self.ids:  # same nonce: one session, whoever applies it
                    self.transport.send(node, request)
                next_send = time.monotonic() + 0.25
            for _, frame in self.transport.poll(20):
                try:
                    msg = decode(frame)
                except CodecError:
                    continue
                if isinstance(msg, SessionOpened) and msg.nonce == nonce:
                    return msg.key
        raise TimeoutError("no node opened a session")

    # ------------------------------------------------------------------ sending

    def _send(self, commands: list[Command]) -> bool:
        batch = self.spec.batch
        for i in range(0, len(commands), batch):
            frame = encode(Submit(tuple(commands[i : i + batch])))
            if not self.transport.send(self.target, frame):
                # Node not connected (dead?) or its queue is full: try elsewhere soon.
                self.result.send_drops += 1
                self._rotate()
                return False
        return True

    def _rotate(self) -> None:
        self.target = self.ids[(self.ids.index(self.target) + 1) % len(self.ids)]
        self.resend_at = min(self.resend_at, time.monotonic() + _QUICK_RETRY_S)

    def _follow_hint(self, leader: int) -> None:
        if leader == self.target or leader not in self.cluster.nodes:
            return
        if leader == self.suspect and time.monotonic() < self.suspect_until:
            self._rotate()  # a stale hint: try the next node instead
            return
        self.target = leader

    def _send_new(self, count: int, now: float) -> None:
        cid, payload, first = self.key, self.payload, self.next_seq
        commands = [Command(cid, seq, payload) for seq in range(first, first + count)]
        self.next_seq = first + count
        self.send_time.extend([now] * count)
        self.is_acked.extend(bytes(count))
        self.inflight += count
        self.result.sent += count
        if self.window_start <= now < self.window_end:
            self.result.window_sent += count
        self._send(commands)

    def _resend(self, now: float, timed_out: bool) -> None:
        """Send every unacknowledged message again, in order (the session drops repeats).

        After a timeout the target is suspect (dead, partitioned, deposed): move on to the
        next node, and ignore leader hints naming the suspect for a while -- a follower's
        hint is stale until it notices the leader is gone.
        """
        if timed_out:
            self.suspect, self.suspect_until = self.target, now + 0.5
            self._rotate()
        cid, payload, acked = self.key, self.payload, self.is_acked
        commands = [
            Command(cid, seq, payload)
            for seq in range(self.low, self.next_seq)
            if not acked[seq - 1]
        ]
        self.resend_at = float("inf")
        self.last_progress = now
        if commands:
            self.result.resends += len(commands)
            ok = self._send(commands)
            if _DEBUG:
                sys.stderr.write(f"{now:.3f} resend {len(commands)} from {commands[0].seq} "
                                 f"to {self.target} ok={ok}\n")

    # ------------------------------------------------------------------ receiving

    def _receive(self, timeout_ms: int) -> None:
        for node, frame in self.transport.poll(timeout_ms):
            try:
                msg = decode(frame)
            except CodecError:
                continue
            if isinstance(msg, SubmitAck) and msg.client == self.key:
                self._on_ack(node, msg)
            elif isinstance(msg, SubmitRefused) and msg.client == self.key:
                self.result.refused += 1
                self._follow_hint(msg.leader)
                self.resend_at = min(self.resend_at, time.monotonic() + _QUICK_RETRY_S)

    def _on_ack(self, node: int, msg: SubmitAck) -> None:
        now = time.monotonic()
        acked, send_time, next_seq = self.is_acked, self.send_time, self.next_seq
        w0, w1 = self.window_start, self.window_end
        lat = self.latencies
        record = self.result.acks if self.spec.record_acks else None
        fresh = 0
        for first_seq, _, count in msg.acks:
            for seq in range(first_seq, min(first_seq + count, next_seq)):
                if acked[seq - 1]:
                    continue
                acked[seq - 1] = 1
                fresh += 1
                sent = send_time[seq - 1]
                if w0 <= sent < w1:
                    lat.append(now - sent)
                if record is not None:
                    record.append((seq, now, node))
        if fresh:
            self.inflight -= fresh
            self.result.acked += fresh
            if w0 <= now < w1:
                self.result.window_acked += fresh
            self.last_progress = now
            low = self.low
            while low < next_seq and acked[low - 1]:
                low += 1
            self.low = low
        if msg.leader:
            self._follow_hint(msg.leader)

    # ------------------------------------------------------------------ the loop

    def run(self, start_at: float) -> LoadResult:
        spec = self.spec
        while time.monotonic() < start_at:
            self._receive(1)
        start = time.monotonic()
        self.window_start = start + spec.warmup_s
        self.window_end = self.window_start + spec.duration_s
        self.last_progress = start
        cpu_start: float | None = None
        cpu_end: float | None = None
        window, batch = spec.window, spec.batch
        min_chunk = max(1, min(batch, window // 8))
        rate = spec.rate
        tick = 0.001
        next_tick = start
        while True:
            now = time.monotonic()
            if cpu_start is None and now >= self.window_start:
                cpu_start = time.process_time()
            if now >= self.window_end:
                break
            if rate is None:
                room = window - self.inflight
                if room >= min_chunk:
                    self._send_new(room, now)
            elif now >= next_tick:
                # Open loop: once per millisecond, send whatever the schedule says is due.
                next_tick += tick
                if next_tick < now:
                    next_tick = now + tick
                due = int((now - start) * rate) + 1 - (self.next_seq - 1)
                if due > 0:
                    room = window - self.inflight
                    if due > room:
                        self.result.behind_max = max(self.result.behind_max, due - room)
                    if room > 0:
                        self._send_new(min(due, room), now)
            if self.inflight and now - self.last_progress >= spec.retry_s:
                self._resend(now, timed_out=True)
            elif now >= self.resend_at:
                self._resend(now, timed_out=False)
            self._receive(1 if rate is not None else 10)
        cpu_end = time.process_time()
        # Grace: no new messages; wait for the window's stragglers.
        deadline = time.monotonic() + spec.grace_s
        while self.inflight and time.monotonic() < deadline:
            now = time.monotonic()
            if now - self.last_progress >= spec.retry_s:
                self._resend(now, timed_out=True)
            elif now >= self.resend_at:
                self._resend(now, timed_out=False)
            self._receive(10)
        result = self.result
        result.window_s = spec.duration_s
        result.window_start = self.window_start
        result.cpu_s = cpu_end - (cpu_start if cpu_start is not None else cpu_end)
        w0, w1 = self.window_start, self.window_end
        result.unacked = sum(
            1
            for i in range(len(self.send_time))
            if not self.is_acked[i] and w0 <= self.send_time[i] < w1
        )
        result.latencies = self.latencies.tobytes()
        if spec.record_acks:
            result.send_times = self.send_time.tobytes()
        return result


def main() -> int:
    """``python -m bench.loadgen``: one load process, driven over stdin/stdout.

    Protocol (pickles on the pipes): the parent writes a :class:`LoadSpec`; the
    child answers ``"ready"`` once connected; the parent writes the start time
    (a ``time.monotonic()`` value: one clock for all processes on Linux); the
    child answers a :class:`LoadResult` (``error`` set if anything failed).
    """
    stdin = sys.stdin.buffer
    # The pickles get a private copy of fd 1; fd 1 itself becomes stderr, so that any stray
    # print or log line (structlog prints to stdout by default) cannot corrupt the stream.
    sys.stdout.flush()
    stdout = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    spec = pickle.load(stdin)
    if not isinstance(spec, LoadSpec):
        return 2
    client: LoadClient | None = None
    result: LoadResult
    try:
        client = LoadClient(spec)
        pickle.dump("ready", stdout)
        stdout.flush()
        start_at = pickle.load(stdin)
        result = client.run(float(start_at))
    except BaseException:
        result = LoadResult(spec.client_id, error=traceback.format_exc(limit=8))
    finally:
        if client is not None:
            client.close()
    pickle.dump(result, stdout)
    stdout.flush()
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so that pickled classes are bench.loadgen's, not __main__'s.
    from bench.loadgen import main as module_main

    sys.exit(module_main())
