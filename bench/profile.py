"""Profile the leader under saturation: py-spy (flamegraph + top functions) or cProfile.

py-spy samples the running leader process from outside (``--nonblocking``:
the leader is never paused), so the profile shows the leader as it runs in
the benchmark. Without py-spy, every node runs under cProfile (which slows
Python code down, so proportions shift towards Python-level work).
"""

from __future__ import annotations

import contextlib
import pstats
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from io import StringIO
from pathlib import Path
from typing import Any

from bench.clusters import BenchCluster, stop_process, track
from bench.harness import RunConfig, run_load


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _function(frame: str) -> str:
    """``"f (path.py:12)"`` -> ``"f (path.py)"``: aggregate by function, not by line."""
    name, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    file, colon, line = where.rstrip(")").rpartition(":")
    return f"{name} ({file})" if colon and line.isdigit() else frame


def top_from_collapsed(path: Path, limit: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's ``raw`` (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if total == 0:
        return {"samples": 0, "self": [], "inclusive": []}
    # Frames on (nearly) every stack are the entry chain (runpy, click, Node.run): noise.
    for frame in [f for f, n in inclusive.items() if n >= 0.98 * total]:
        del inclusive[frame]

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100.0 * n / total, 2)) for f, n in c.most_common(limit)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


def _run_load_thread(
    cluster: BenchCluster,
    leader: int,
    cfg: RunConfig,
    seconds: float,
    box: list[Any],
    rate: float | None,
) -> threading.Thread:
    def work() -> None:
        try:
            box.append(run_load(cluster, leader, cfg, rate=rate, warmup_s=0.5,
                                duration_s=seconds)[0])
        except BaseException as exc:  # reported by the caller
            box.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def profile_leader(
    system: str,
    nodes: int,
    payload: int,
    fsync: bool,
    seconds: float,
    out: Path,
    *,
    use: str = "auto",
    window: int = 4096,
    batch: int = 256,
    workdir: Path,
    role: str = "leader",
    rate: float | None = None,
    secure: bool = True,
) -> dict[str, Any]:
    """Load a fresh cluster (saturation, or ``rate`` msgs/s) for ``seconds`` while profiling
    its leader (or, with ``role="follower"``, one follower); write into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    py_spy = find_py_spy() if use in ("auto", "py-spy") else None
    if use == "py-spy" and py_spy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy, or the bench extra)")
    cprofile_dir = None if py_spy else out
    cluster = BenchCluster(system, nodes, fsync, workdir, cprofile_dir=cprofile_dir,
                           secure=secure)
    cfg = RunConfig(system, nodes, payload, fsync, batch, window, secure=cluster.secure)
    box: list[Any] = []
    report: dict[str, Any] = {"system": system, "nodes": nodes, "payload": payload,
                              "fsync": fsync, "secure": cluster.secure, "seconds": seconds,
                              "rate": rate}
    try:
        cluster.start()
        leader = cluster.wait_leader()
        target = leader if role == "leader" else min(i for i in cluster.cluster.ids if i != leader)
        pid = cluster.pids()[target]
        report["leader"] = leader
        report["profiled"] = {"role": role, "node": target}
        thread = _run_load_thread(cluster, leader, cfg, seconds, box, rate)
        time.sleep(1.0)  # load processes start and warm up before sampling begins
        if py_spy:
            report["profiler"] = "py-spy"
            collapsed, svg = out / f"{role}.collapsed.txt", out / f"{role}.svg"
            procs = []
            for fmt, path in (("raw", collapsed), ("flamegraph", svg)):
                proc = subprocess.Popen(
                    [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds) - 1),
                     "--rate", "200", "--nonblocking", "--function", "--format", fmt,
                     "--output", str(path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
                track(proc)
                procs.append(proc)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(seconds + 30)
                stop_process(proc)
            thread.join(seconds + 120)
            if collapsed.exists():
                report["top"] = top_from_collapsed(collapsed)
            report["files"] = [str(p) for p in (collapsed, svg) if p.exists()]
        else:
            report["profiler"] = "cProfile"
            thread.join(seconds + 120)
    finally:
        cluster.stop()  # SIGTERM: cProfile'd nodes exit normally and write their profiles
    if box and isinstance(box[0], BaseException):
        raise box[0]
    if box:
        run = box[0]
        report["msgs_s"] = run["msgs_s"]
        report["cpu_pct"] = run["cpu_pct"]
    if cprofile_dir is not None:
        prof = cprofile_dir / f"node{report['profiled']['node']}.prof"
        if prof.exists():
            text = StringIO()
            stats = pstats.Stats(str(prof), stream=text)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(25)
            (out / f"{role}.pstats.txt").write_text(text.getvalue())
            report["files"] = [str(prof), str(out / f"{role}.pstats.txt")]
            report["top_text"] = text.getvalue()
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [
        f"{report['profiler']} profile of a {report['system']} {report['profiled']['role']} "
        f"(node {report['profiled']['node']}; leader {report.get('leader')}), "
        f"{report['nodes']} nodes, {report['payload']} B, fsync "
        f"{'on' if report['fsync'] else 'off'}, "
        f"{'CURVE' if report.get('secure', True) else 'insecure'}, "
        f"{'saturated' if report.get('rate') is None else 'offered ' + str(report['rate'])}: "
        f"{report.get('msgs_s')} msgs/s, "
        f"CPU % per node {report.get('cpu_pct')}",
    ]
    top = report.get("top")
    if top:
        lines.append(f"\n{top['samples']} samples. Self time (% of samples):")
        lines += [f"  {pct:6.2f}%  {frame}" for frame, pct in top["self"]]
        lines.append("\nInclusive time (% of samples):")
        lines += [f"  {pct:6.2f}%  {frame}" for frame, pct in top["inclusive"]]
    if report.get("top_text"):
        lines.append(report["top_text"])
    lines.append("\nFiles: " + ", ".join(report.get("files", [])))
    return "\n".join(lines)
