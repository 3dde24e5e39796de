"""Planned leadership transfer against a crash failover, and flexible phase-2 quorums.

* **handover**: a fresh 3-node cluster under a fixed load; its leader is stopped with
  SIGTERM (``paxos node`` then hands leadership over to the voter furthest along and
  exits: a rolling restart) or killed with SIGKILL (the others wait for an election
  timeout). Reported per run: ``gap_s``, the last commit before the signal to the first
  commit of a message sent after it, and the acknowledged messages lost (must be 0).
* **quorum**: a fresh 5-node cluster, its phase-2 quorum set to 2 (phase 1 then needs
  4) through the log, against the default majority of 3: latency at a fixed rate, and
  saturation.

    python -m bench.handover [--reps 5] [--rate 2000]            # both, JSON on stdout
    python -m bench.handover --only handover|quorum

Everything runs on loopback; each run gets its own cluster, data directory and ports.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.clusters import BenchCluster, kill_all
from bench.harness import RunConfig, run_failover, run_load
from broadcast.client import Client
from broadcast.spec import parse_cluster
from paxos.multi.membership import Op


def handover(reps: int, rate: float, workdir: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"SIGTERM": [], "SIGKILL": []}
    for rep in range(reps):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            result = run_failover(
                "paxos", 3, 100, False, workdir / f"handover-{rep}-{sig.name}",
                rate=rate, kill_after_s=1.5, after_s=2.5, kill_signal=sig,
            )
            runs[sig.name].append(result)
            print(
                f"# {sig.name} rep {rep}: gap {result['gap_s']} s, "
                f"lost {result['lost_acked']}, orders agree {result['survivor_orders_agree']}",
                file=sys.stderr,
            )
    summary = {}
    for name, results in runs.items():
        gaps = [r["gap_s"] for r in results if r["gap_s"] is not None]
        summary[name] = {
            "gap_s_median": round(statistics.median(gaps), 4) if gaps else None,
            "gap_s_min": min(gaps, default=None),
            "gap_s_max": max(gaps, default=None),
            "lost_acked_total": sum(r["lost_acked"] or 0 for r in results),
            "orders_agree": all(r["survivor_orders_agree"] for r in results),
            "runs": len(results),
        }
    return {"rate": rate, "nodes": 3, "payload": 100, "fsync": False, "handover": summary}


def quorum(reps: int, rate: float, workdir: Path, fsync: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q2 in (0, 2):
        name = "majority" if q2 == 0 else f"q2={q2}"
        fixed, saturated = [], []
        for rep in range(reps):
            cluster = BenchCluster("paxos", 5, fsync, workdir / f"quorum-{q2}-{rep}")
            try:
                cluster.start()
                leader = cluster.wait_leader()
                if q2:
                    with Client(parse_cluster(cluster.spec), timeout=30) as client:
                        client.change_members(Op.SET_QUORUM, q2, timeout=30)
                    leader = cluster.wait_leader()
                cfg = RunConfig("paxos", 5, 100, fsync, 256, 4096, 1, cluster.secure)
                at_rate, _ = run_load(cluster, leader, cfg, rate=rate, warmup_s=0.5,
                                      duration_s=2.0)
                at_max, _ = run_load(cluster, leader, cfg, rate=None, warmup_s=0.5,
                                     duration_s=3.0)
                fixed.append(at_rate["latency_ms"])
                saturated.append(at_max["msgs_s"])
            finally:
                cluster.stop()
        out[name] = {
            f"p50_ms_at_{rate:.0f}": statistics.median(x["p50"] for x in fixed),
            f"p99_ms_at_{rate:.0f}": statistics.median(x["p99"] for x in fixed),
            "saturation_msgs_s": statistics.median(saturated),
            "reps": reps,
        }
    return {"nodes": 5, "payload": 100, "fsync": fsync, "quorum": out}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rate", type=float, default=2000.0, help="offered msgs/s")
    p.add_argument("--only", choices=("handover", "quorum"))
    p.add_argument("--fsync", action="store_true", help="quorum runs with fsync on")
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="paxos-handover-") as tmp:
            if args.only in (None, "handover"):
                result.update(handover(args.reps, args.rate, Path(tmp)))
            if args.only in (None, "quorum"):
                result.update(quorum(args.reps, args.rate, Path(tmp), args.fsync))
    finally:
        kill_all()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
