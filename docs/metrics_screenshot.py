"""Make docs/metrics.png: a local 3-node cluster under load, scraped by a real Prometheus,
its leader killed and restarted, and three PromQL queries asked of that Prometheus
(its HTTP API, query_range) and drawn with matplotlib, one panel each.

    python docs/metrics_screenshot.py      # needs Debian's prometheus and the bench extra

Everything runs on 127.0.0.1 and in a temporary directory; nothing is left running.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from broadcast.client import Client
from broadcast.local import cluster_file, free_base_port, spawn_node
from broadcast.spec import local_cluster

OUT = Path(__file__).resolve().parent / "metrics.png"
QUERIES = [
    ("sum by (instance) (rate(paxos_delivered_commands_total[5s]))", "deliveries/s per node"),
    ("histogram_quantile(0.99, sum by (le) (rate(paxos_commit_latency_seconds_bucket[5s])))",
     "p99 commit latency (s)"),
    ("max by (instance) (paxos_role{role=\"leader\"})", "who leads"),
]


def main() -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        sys.exit("needs prometheus (apt-get install prometheus)")

    with tempfile.TemporaryDirectory(prefix="paxos-metrics-shot-") as tmp_name:
        tmp = Path(tmp_name)
        base = free_base_port(3)
        mbase = free_base_port(4, start=38000)
        cluster = cluster_file(tmp, local_cluster(3, base), secure=True)
        procs = {
            i: spawn_node(i, cluster, tmp, fsync=True, log_file=tmp / f"node{i}.log",
                          extra=("--metrics", f"127.0.0.1:{mbase + i}"))
            for i in cluster.ids
        }
        prom_port = free_base_port(1, start=39000) + 1
        targets = [f"127.0.0.1:{mbase + i}" for i in cluster.ids]
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n  - job_name: paxos\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        prom = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        stop = threading.Event()
        try:
            with Client(cluster, timeout=30) as client:
                leader = None
                while leader is None:
                    leader = client.leader(timeout=0.5)

                def load() -> None:
                    with Client(cluster, timeout=30, window=256) as c:
                        n = 0
                        while not stop.is_set():
                            c.broadcast_many(b"x" * 100 for _ in range(500))
                            n += 1
                            time.sleep(0.05)  # a steady load, not saturation

                worker = threading.Thread(target=load, daemon=True)
                worker.start()
                time.sleep(15)
                procs[leader].send_signal(signal.SIGKILL)  # a failover in the middle
                killed = time.time()
                time.sleep(15)
                procs[leader] = spawn_node(leader, cluster, tmp, fsync=True,
                                           log_file=tmp / f"node{leader}.log",
                                           extra=("--metrics", f"127.0.0.1:{mbase + leader}"))
                restarted = time.time()
                time.sleep(15)
                stop.set()
                worker.join(60)
            plot(prom_port, time.time(), {f"node {leader} killed": killed,
                                          f"node {leader} restarted": restarted})
            print(f"wrote {OUT}")
        finally:
            stop.set()
            prom.terminate()
            prom.wait(10)
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.wait(15)
            os.sync()


def plot(port: int, end: float, marks: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(QUERIES), 1, figsize=(10, 8), sharex=True)
    for ax, (expr, title) in zip(axes, QUERIES, strict=True):
        query = urllib.parse.urlencode(
            {"query": expr, "start": end - 60, "end": end, "step": "1"}
        )
        url = f"http://127.0.0.1:{port}/api/v1/query_range?{query}"
        with urllib.request.urlopen(url, timeout=10) as reply:
            result = json.loads(reply.read())["data"]["result"]
        for series in result:
            label = series["metric"].get("instance", "")
            xs = [float(t) - end for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            ax.plot(xs, ys, label=label or None, drawstyle="steps-post")
        ax.set_title(f"{title}:  {expr}", fontsize=8, loc="left")
        if any(series["metric"].get("instance") for series in result):
            ax.legend(fontsize=7, loc="upper left")
        ax.grid(alpha=0.3)
        for what, when in marks.items():
            ax.axvline(when - end, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(what, (when - end, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, va="top", ha="left", color="grey")
    axes[-1].set_xlabel("seconds before the end of the run")
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)


if __name__ == "__main__":
    main()
