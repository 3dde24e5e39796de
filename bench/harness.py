"""One measured run against a running cluster: saturation, fixed rate, or failover.

The harness starts the load processes (``python -m bench.loadgen``: fresh
interpreters, nothing shared with this one), gives them a common start time,
samples every node's CPU time at the start and at the end of the measurement
window, and merges what the load processes report.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import statistics
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.clusters import (
    REPO,
    BenchCluster,
    ClusterError,
    host_cpu_seconds,
    stop_process,
    track,
)
from bench.loadgen import LoadResult, LoadSpec

#: Number of points kept of each latency CDF (quantiles).
CDF_POINTS = 200


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A cluster configuration plus the client parameters of a run."""

    system: str
    nodes: int
    payload: int
    fsync: bool
    batch: int = 256
    window: int = 4096
    clients: int = 1
    secure: bool = True
    """CURVE on every socket (as deployed); False: nodes and clients ``--insecure``.
    PySyncObj is always plaintext (see bench/clusters.py): its configs say False."""

    def label(self) -> str:
        sync = "fsync" if self.fsync else "nofsync"
        security = "" if self.secure else " insecure"
        return (f"{self.system} n={self.nodes} {self.payload}B {sync}{security} b={self.batch} "
                f"w={self.window}")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted sequence."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[rank]


def latency_summary(sorted_s: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p95/p99/p99.9/max/mean in milliseconds, from sorted seconds."""
    if not sorted_s:
        return {"count": 0}
    return {
        "count": len(sorted_s),
        "p50": 1000 * percentile(sorted_s, 50),
        "p90": 1000 * percentile(sorted_s, 90),
        "p95": 1000 * percentile(sorted_s, 95),
        "p99": 1000 * percentile(sorted_s, 99),
        "p999": 1000 * percentile(sorted_s, 99.9),
        "max": 1000 * sorted_s[-1],
        "mean": 1000 * statistics.fmean(sorted_s),
    }


def cdf_points(sorted_s: Sequence[float], points: int = CDF_POINTS) -> list[tuple[float, float]]:
    """``points`` (latency ms, cumulative fraction) pairs, denser in the tail."""
    n = len(sorted_s)
    if n == 0:
        return []
    out: list[tuple[float, float]] = []
    half = points // 2
    fractions = [i / half * 0.9 for i in range(1, half + 1)]
    fractions += [1 - 0.1 * (10 ** (-3 * i / (points - half))) for i in range(1, points - half + 1)]
    for f in fractions:
        idx = min(n - 1, max(0, int(f * n) - 1))
        out.append((1000 * sorted_s[idx], f))
    return out


class _LoadProcess:
    """A ``python -m bench.loadgen`` child, spoken to in pickles over its stdin/stdout."""

    def __init__(self, spec: LoadSpec, log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=REPO,
                env=env,
                start_new_session=True,
            )
        track(self.proc)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.send(spec)

    def send(self, obj: object) -> None:
        pickle.dump(obj, self.stdin)
        self.stdin.flush()

    def expect(self, timeout: float, what: str) -> object:
        ready, _, _ = select.select([self.stdout], [], [], max(0.0, timeout))
        if not ready:
            raise ClusterError(f"load process: no {what} within {timeout:.0f}s")
        try:
            return pickle.load(self.stdout)
        except (EOFError, pickle.UnpicklingError):
            raise ClusterError(
                f"load process died before its {what} (exit {self.proc.poll()})"
            ) from None

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        stop_process(self.proc)


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_load(
    cluster: BenchCluster,
    leader: int,
    cfg: RunConfig,
    *,
    rate: float | None,
    warmup_s: float,
    duration_s: float,
    grace_s: float = 2.0,
    retry_s: float = 1.0,
    record_acks: bool = False,
    kill_at: float | None = None,
    kill_signal: int = signal.SIGKILL,
) -> tuple[dict[str, Any], list[LoadResult]]:
    """Drive ``cluster`` with ``cfg.clients`` load processes; returns (summary, raw results).

    ``kill_at`` (seconds after the start): send the leader ``kill_signal`` then
    (failover runs: SIGKILL; a planned handover: SIGTERM, on which a leader hands over
    and exits); the summary then has ``kill_time`` (monotonic).
    """
    tag = uuid.uuid4().hex[:8]
    per_client = None if rate is None else rate / cfg.clients
    specs = [
        LoadSpec(
            cluster=cluster.spec,
            target=leader,
            client_id=f"bench-{tag}-{k}",
            payload_bytes=cfg.payload,
            rate=per_client,
            window=cfg.window,
            batch=cfg.batch,
            warmup_s=warmup_s,
            duration_s=duration_s,
            grace_s=grace_s,
            retry_s=retry_s,
            record_acks=record_acks,
        )
        for k in range(cfg.clients)
    ]
    loads: list[_LoadProcess] = []
    kill_time: float | None = None
    try:
        for spec in specs:
            loads.append(_LoadProcess(spec, cluster.workdir / "loadgen.log"))
        for load in loads:
            if load.expect(60, "ready signal") != "ready":
                raise ClusterError("load process failed to start")
        start_at = time.monotonic() + 0.05
        for load in loads:
            load.send(start_at)
        if kill_at is not None:
            _sleep_until(start_at + kill_at)
            kill_time = cluster.kill(leader, kill_signal)
        _sleep_until(start_at + warmup_s)
        cpu0, host0, t0 = cluster.cpu(), host_cpu_seconds(), time.monotonic()
        _sleep_until(start_at + warmup_s + duration_s)
        cpu1, host1, t1 = cluster.cpu(), host_cpu_seconds(), time.monotonic()
        results: list[LoadResult] = []
        for load in loads:
            result = load.expect(start_at + warmup_s + duration_s + grace_s + 60 - time.monotonic(),
                                 "result")
            if not isinstance(result, LoadResult):
                raise ClusterError(f"load process sent {type(result).__name__}")
            if result.error is not None:
                raise ClusterError(f"load process failed:\n{result.error}")
            results.append(result)
    finally:
        for load in loads:
            load.stop()
    cluster.check_alive(expected_dead=(leader,) if kill_at is not None else ())
    merged = array("d")
    for result in results:
        merged.frombytes(result.latencies)
    lat = sorted(merged)
    window_acked = sum(r.window_acked for r in results)
    msgs_s = window_acked / duration_s
    wall = max(t1 - t0, 1e-9)
    cpu = {
        str(node): round(100.0 * (cpu1[node] - cpu0[node]) / wall, 1)
        for node in cpu1
        if node in cpu0
    }
    client_cpu = 100.0 * sum(r.cpu_s for r in results) / duration_s
    host_busy = foreign = None
    if host0 is not None and host1 is not None:
        host_busy = 100.0 * (host1[0] - host0[0]) / wall
        # Whatever else ran on the machine meanwhile (other jobs, this harness, kernel threads).
        foreign = max(0.0, host_busy - sum(cpu.values()) - client_cpu)
    summary: dict[str, Any] = {
        **asdict(cfg),
        "mode": "saturation" if rate is None else "rate",
        "offered_msgs_s": rate,
        "duration_s": duration_s,
        "msgs_s": round(msgs_s, 1),
        "mb_s": round(msgs_s * cfg.payload / 1e6, 3),
        "latency_ms": latency_summary(lat),
        "cdf_ms": cdf_points(lat),
        "cpu_pct": cpu,
        "leader": leader,
        "leader_cpu_pct": cpu.get(str(leader)),
        "client_cpu_pct": round(client_cpu, 1),
        # CPU cost per committed message: what bounds throughput when the cores are shared.
        "cpu_us_per_msg": {
            "leader": _per_msg(cpu.get(str(leader)), msgs_s),
            "followers_mean": _per_msg(
                statistics.fmean(v for k, v in cpu.items() if k != str(leader))
                if len(cpu) > 1 else None, msgs_s),
            "client": _per_msg(client_cpu, msgs_s),
            "total": _per_msg(sum(cpu.values()) + client_cpu, msgs_s),
        },
        "host_busy_pct": None if host_busy is None else round(host_busy, 1),
        "foreign_cpu_pct": None if foreign is None else round(foreign, 1),
        "sent": sum(r.sent for r in results),
        "window_sent": sum(r.window_sent for r in results),
        "unacked": sum(r.unacked for r in results),
        "refused": sum(r.refused for r in results),
        "resends": sum(r.resends for r in results),
        "send_drops": sum(r.send_drops for r in results),
        "behind_max": max(r.behind_max for r in results),
        "kill_time": kill_time,
        "start_at": start_at,
    }
    return summary, results


def _per_msg(cpu_pct: float | None, msgs_s: float) -> float | None:
    """Microseconds of CPU per committed message, from % of a core and msgs/s."""
    if cpu_pct is None or msgs_s <= 0:
        return None
    return round(cpu_pct / 100.0 / msgs_s * 1e6, 2)


def run_failover(
    system: str,
    nodes: int,
    payload: int,
    fsync: bool,
    workdir: Path,
    *,
    kill_after_s: float = 1.5,
    after_s: float = 2.5,
    rate: float | None = 50_000,
    window: int = 4096,
    batch: int = 256,
    bucket_ms: int = 20,
    secure: bool = True,
    kill_signal: int = signal.SIGKILL,
) -> dict[str, Any]:
    """Load a fresh cluster, SIGKILL its leader (or, with ``kill_signal`` SIGTERM, stop
    it gracefully: it hands over first), and account for what was acknowledged.

    Reports ``lost_acked`` (acknowledged messages missing from the order of
    the survivor that misses the most), ``unavailable_s`` (kill -> the first
    acknowledgement of a message first sent after the kill: a commit that
    only the new regime can have made), ``first_ack_after_kill_s`` (kill ->
    any acknowledgement from a survivor, e.g. of a message committed before
    the kill whose acknowledgement died with the leader) and a throughput
    ``timeline`` (acknowledgements per second in ``bucket_ms`` buckets,
    time relative to the kill).
    """
    cluster = BenchCluster(system, nodes, fsync, workdir, secure=secure)
    cfg = RunConfig(system, nodes, payload, fsync, batch, window, 1, cluster.secure)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        summary, results = run_load(
            cluster,
            leader,
            cfg,
            rate=rate,
            warmup_s=0.0,
            duration_s=kill_after_s + after_s,
            grace_s=3.0,
            retry_s=0.1,
            record_acks=True,
            kill_at=kill_after_s,
            kill_signal=kill_signal,
        )
        kill_time = summary["kill_time"]
        survivors = [i for i in cluster.cluster.ids if i != leader]
        cluster.wait_quiet(survivors)
        client = results[0].session
        acks = results[0].acks
        acked = {seq for seq, _, _ in acks}
        missing: dict[str, int | None] = {}
        orders: dict[int, list[tuple[str, int]]] = {}
        for node in survivors:
            order = cluster.read_order(node)
            if order is None:
                missing[str(node)] = None
                continue
            orders[node] = [(c.client, c.seq) for c in order]
            have = {c.seq for c in order if c.client == client}
            missing[str(node)] = len(acked - have)
        known = [m for m in missing.values() if m is not None]
        after = sorted(t for _, t, node in acks if t > kill_time and node != leader)
        before = [t for _, t, _ in acks if t <= kill_time]
        # The load process sends seqs in order: those above this one were first sent after the kill.
        sent_before = results[0].sent_by(kill_time)
        new = sorted(t for seq, t, _ in acks if seq > sent_before and t > kill_time)
        start = summary["start_at"]
        end = start + kill_after_s + after_s
        buckets = [0] * int((end - start) * 1000 / bucket_ms + 1)
        for _, t, _ in acks:
            slot = int((t - start) * 1000 / bucket_ms)
            if 0 <= slot < len(buckets):
                buckets[slot] += 1
        timeline = [
            (round((i * bucket_ms) / 1000 - kill_after_s, 3), count * 1000 / bucket_ms)
            for i, count in enumerate(buckets)
        ]
        agree = _orders_agree(list(orders.values()))
        return {
            "system": system,
            "nodes": nodes,
            "payload": payload,
            "fsync": fsync,
            "secure": cluster.secure,
            "mode": "saturation" if rate is None else f"rate {rate:.0f}/s",
            "old_leader": leader,
            "acked_total": len(acked),
            "acked_before_kill": len(before),
            "lost_acked": max(known) if known else None,
            "lost_acked_per_survivor": missing,
            "survivor_orders_agree": agree,
            "unavailable_s": round(new[0] - kill_time, 4) if new else None,
            # The gap in commits: the last acknowledgement before the signal to the first
            # of a message sent after it.
            "gap_s": round(new[0] - max(before), 4) if new and before else None,
            "signal": signal.Signals(kill_signal).name,
            "first_ack_after_kill_s": round(after[0] - kill_time, 4) if after else None,
            "last_ack_before_kill_s": round(kill_time - max(before), 4) if before else None,
            "msgs_s_before_kill": round(len(before) / kill_after_s, 1),
            "timeline": timeline,
            "bucket_ms": bucket_ms,
        }
    finally:
        cluster.stop()


def _orders_agree(orders: list[list[tuple[str, int]]]) -> bool:
    """Whether the survivors' orders are prefixes of one another."""
    if len(orders) < 2:
        return True
    shortest = min(len(o) for o in orders)
    return all(o[:shortest] == orders[0][:shortest] for o in orders)


@contextlib.contextmanager
def started(cluster: BenchCluster) -> Iterator[int]:
    """Start a cluster, yield its leader, always stop it."""
    try:
        cluster.start()
        yield cluster.wait_leader()
    finally:
        cluster.stop()
