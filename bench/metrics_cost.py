"""What metrics cost on the hot path: Multi-Paxos with ``--metrics`` against without.

Each round starts a fresh 3-node cluster (100 B payloads, CURVE) without metrics and one
with ``--metrics`` on every node, one right after the other, and swaps which goes first
every round (off on, on off, ...), so that a machine getting busier or quieter shifts
both alike. On each cluster: 1,000 msgs/s offered (p50/p99 commit latency), then
saturation (committed msgs/s, CPU µs per message). While metrics are on, a scraper
reads every node's ``/metrics`` once a second (Prometheus' default is every 15 s), and
with ``--viewer`` also its ``/events`` four times a second (a live ``paxos viz``, which
makes the nodes record events). The goal: metrics cost under 5% of saturation
throughput.

    python -m bench.metrics_cost [--rounds 4] [--fsync] [--duration 3] [--viewer]

JSON on stdout; progress on stderr. Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

from bench.clusters import BenchCluster, kill_all
from bench.harness import RunConfig, run_load
from broadcast.local import free_base_port

GOAL_MAX_COST = 0.05


class _Scraper:
    """Reads /metrics every second and /events four times a second on every node."""

    def __init__(self, ports: list[int], viewer: bool) -> None:
        self.ports = ports
        self.viewer = viewer
        self.stop = threading.Event()
        self.scrapes = 0
        self.events = 0
        self.errors = 0
        self._after = dict.fromkeys(ports, 0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(5)

    def _get(self, url: str) -> bytes | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                data: bytes = reply.read()
                return data
        except OSError:
            self.errors += 1
            return None

    def _run(self) -> None:
        beat = 0
        while not self.stop.wait(0.25):
            for port in self.ports:
                if beat % 4 == 0 and self._get(f"http://127.0.0.1:{port}/metrics") is not None:
                    self.scrapes += 1
                if not self.viewer:
                    continue
                body = self._get(f"http://127.0.0.1:{port}/events?after={self._after[port]}")
                if body is not None:
                    reply = json.loads(body)
                    self._after[port] = reply["next"]
                    self.events += len(reply["events"])
            beat += 1


def one_cluster(
    metrics: bool, fsync: bool, duration: float, workdir: Path, viewer: bool
) -> dict[str, Any]:
    base = free_base_port(4, start=40000) if metrics else None  # away from the nodes
    cluster = BenchCluster("paxos", 3, fsync, workdir, metrics_base_port=base)
    try:
        cluster.start()
        leader = cluster.wait_leader()
        cfg = RunConfig("paxos", 3, 100, fsync, 256, 4096, 1, cluster.secure)
        ports = [base + i for i in cluster.cluster.ids] if base is not None else []
        scraper = _Scraper(ports, viewer)
        if metrics:
            scraper.__enter__()
        try:
            at_rate, _ = run_load(cluster, leader, cfg, rate=1000.0, warmup_s=0.5, duration_s=2.0)
            at_max, _ = run_load(cluster, leader, cfg, rate=None, warmup_s=0.5,
                                 duration_s=duration)
        finally:
            if metrics:
                scraper.__exit__()
        return {
            "metrics": metrics,
            "msgs_s": at_max["msgs_s"],
            "cpu_us_per_msg": at_max["cpu_us_per_msg"]["total"],
            "leader_cpu_pct": at_max["leader_cpu_pct"],
            "foreign_cpu_pct": at_max["foreign_cpu_pct"],
            "p50_ms_at_1k": at_rate["latency_ms"]["p50"],
            "p99_ms_at_1k": at_rate["latency_ms"]["p99"],
            "scrapes": scraper.scrapes,
            "events_read": scraper.events,
            "scrape_errors": scraper.errors,
        }
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="saturation seconds per run")
    p.add_argument("--fsync", action="store_true")
    p.add_argument("--viewer", action="store_true", help="also read /events 4 times a second")
    args = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="paxos-metrics-cost-") as tmp:
            for rnd in range(args.rounds):
                order = (False, True) if rnd % 2 == 0 else (True, False)
                for metrics in order:
                    run = one_cluster(metrics, args.fsync, args.duration,
                                      Path(tmp) / f"r{rnd}-{'on' if metrics else 'off'}",
                                      args.viewer)
                    run["round"] = rnd
                    runs.append(run)
                    print(f"# round {rnd} metrics {'on ' if metrics else 'off'}: "
                          f"{run['msgs_s']:.0f} msgs/s, {run['cpu_us_per_msg']} µs/msg, "
                          f"p50 {run['p50_ms_at_1k']} ms, scrapes {run['scrapes']}",
                          file=sys.stderr)
    finally:
        kill_all()

    def med(metrics: bool, name: str) -> float:
        return statistics.median(r[name] for r in runs if r["metrics"] is metrics
                                 and r[name] is not None)

    on, off = med(True, "msgs_s"), med(False, "msgs_s")
    paired = [
        a["msgs_s"] / b["msgs_s"]
        for a in runs for b in runs
        if a["metrics"] and not b["metrics"] and a["round"] == b["round"] and b["msgs_s"]
    ]
    result = {
        "nodes": 3, "payload": 100, "fsync": args.fsync, "rounds": args.rounds,
        "viewer": args.viewer,
        "off_msgs_s": off, "on_msgs_s": on,
        "ratio": round(on / off, 3) if off else None,
        "cost": round(1 - on / off, 3) if off else None,
        "paired_ratio_median": round(statistics.median(paired), 3) if paired else None,
        "cpu_us_per_msg": {"off": med(False, "cpu_us_per_msg"),
                           "on": med(True, "cpu_us_per_msg")},
        "p50_ms_at_1k": {"off": med(False, "p50_ms_at_1k"), "on": med(True, "p50_ms_at_1k")},
        "p99_ms_at_1k": {"off": med(False, "p99_ms_at_1k"), "on": med(True, "p99_ms_at_1k")},
        "goal_max_cost": GOAL_MAX_COST,
        "met": bool(off) and 1 - on / off < GOAL_MAX_COST,
        "runs": runs,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
