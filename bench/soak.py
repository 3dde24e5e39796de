"""``python -m bench.soak``: a long saturating run that watches memory, disk and recovery.

Three ``paxos node`` processes (default settings: CURVE and fsync on, snapshots every
100k deliveries, the default history retention) take 100-byte payloads from
``--clients`` saturating load processes (``bench.loadgen``, closed loop) until
``--messages`` have been committed (the highest delivered index among the nodes).
Every ``--sample`` messages it records, for every node: RSS (``VmRSS``), the bytes
of its data directory (walked; also split into wal / history / snapshots / other)
and its Status (delivered, snapshot index, floor, log bytes). Then two recovery
phases:

* **restart**: SIGKILL a follower, start it again, and time process start ->
  serving (it answers status with ``leader_ok`` and its delivered index has
  reached the others');
* **behind**: stop (SIGTERM) a follower, commit ``--behind`` more messages, start
  it again, and time process start -> caught up (delivered == the others'); its
  log (``node{N}.log``, JSON lines) says whether it installed a snapshot
  (``snapshot.installed``) rather than replaying entries.

Writes ``<out>/soak.csv`` (one row per node per sample), ``<out>/soak.json``
(parameters, machine, samples, summary) and ``<out>/soak.png`` (RSS and disk per
node against messages committed), and prints a summary. It is a benchmark, not a
test: it exits non-zero on errors only, never on a missed target.

Development size: ``python -m bench.soak --messages 300000 --sample 50000 --behind 100000``.
Every process it starts is on 127.0.0.1 and is killed on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.clusters import REPO, BenchCluster, ClusterError, kill_all
from bench.harness import _LoadProcess
from bench.loadgen import LoadSpec
from broadcast.protocol import Status

#: Targets from issue 10 (reported, never enforced).
RSS_RATIO_TARGET = 1.3
RESTART_TARGET_S = 3.0
MIB = 1024 * 1024

#: Status probes: how long one waits for an answer, and the pause between polls.
_PROBE_S = 0.3
_POLL_S = 0.05


class SoakCluster(BenchCluster):
    """A :class:`BenchCluster` of ``paxos`` nodes with extra ``paxos node`` options."""

    def __init__(
        self, nodes: int, fsync: bool, workdir: Path, extra: list[str], *, secure: bool = True
    ) -> None:
        # info: the snapshot.taken / snapshot.installed / node.recovered events are read back.
        super().__init__("paxos", nodes, fsync, workdir, log_level="info", secure=secure)
        self.extra = list(extra)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), self.env.get("PYTHONPATH")) if p
        )

    def command(self, node: int) -> list[str]:
        return [*super().command(node), *self.extra]

    def start(self) -> None:
        for node in self.cluster.ids:
            self.start_node(node, self.env)

    def restart(self, node: int) -> float:
        """Start ``node`` again; returns the monotonic time just before its process started."""
        t0 = time.monotonic()
        self.start_node(node, self.env)
        return t0

    def data_dir(self, node: int) -> Path:
        return self.workdir / f"node{node}"

    def log_path(self, node: int) -> Path:
        return self.workdir / f"node{node}.log"


# ---------------------------------------------------------------------- measuring


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (``VmRSS`` in /proc/PID/status), None if unknown."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


def disk_usage(root: Path) -> dict[str, int]:
    """Bytes under ``root``: ``total`` (file sizes), ``allocated`` (blocks on disk) and the
    sizes per top-level entry: ``wal``, ``history``, ``snapshots`` and ``other``.

    Files may vanish while it walks (compaction deletes segments): those count as gone.
    """
    out = {"total": 0, "allocated": 0, "wal": 0, "history": 0, "snapshots": 0, "other": 0}
    for dirpath, _, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        top = rel.parts[0] if rel.parts else ""
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = top if top in ("wal", "history", "snapshots") else "other"
            if not top and name.startswith("wal-"):
                key = "wal"
            out["total"] += st.st_size
            out["allocated"] += st.st_blocks * 512
            out[key] += st.st_size
    return out


@dataclass
class Sample:
    """One node at one moment."""

    phase: str
    messages: int
    elapsed_s: float
    node: int
    role: str = ""
    rss_bytes: int | None = None
    disk_bytes: int = 0
    disk_allocated: int = 0
    wal_bytes: int = 0
    history_bytes: int = 0
    snapshot_bytes: int = 0
    other_bytes: int = 0
    delivered: int | None = None
    snapshot_index: int | None = None
    snapshot_slot: int | None = None
    floor: int | None = None
    log_bytes: int | None = None


@dataclass
class Soak:
    """The run's state: the cluster, the clock, the samples."""

    cluster: SoakCluster
    args: argparse.Namespace
    t0: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    leader: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def say(self, text: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - self.t0:7.1f}s] {text}\n")
        sys.stderr.flush()

    def event(self, what: str, **fields: Any) -> None:
        self.events.append({"event": what, "elapsed_s": round(time.monotonic() - self.t0, 3),
                            **fields})

    def statuses(self, nodes: Sequence[int]) -> dict[int, Status | None]:
        return {node: self.cluster.status(node, _PROBE_S) for node in nodes}

    def live(self) -> list[int]:
        return sorted(self.cluster.pids())

    def committed(self) -> int:
        """The highest delivered index known: the leader's (asked first), else anyone's."""
        if self.leader in self.cluster.pids():
            s = self.cluster.status(self.leader, _PROBE_S)
            if s is not None and s.role == "leader":
                return s.delivered
        deadline = time.monotonic() + 30.0  # nodes may pause (GC, a slow disk): not at once
        while True:
            best = -1
            for node, s in self.statuses(self.live()).items():
                if s is None:
                    continue
                best = max(best, s.delivered)
                if s.role == "leader":
                    self.leader = node
            if best >= 0:
                return best
            if time.monotonic() > deadline:
                raise ClusterError("no node answered status for 30 s")

    def sample(self, phase: str, messages: int) -> list[Sample]:
        pids = self.cluster.pids()
        elapsed = round(time.monotonic() - self.t0, 3)
        rows: list[Sample] = []
        for node in self.cluster.cluster.ids:
            if node not in pids:
                continue
            s = self.cluster.status(node, 1.0)
            disk = disk_usage(self.cluster.data_dir(node))
            row = Sample(
                phase, messages, elapsed, node,
                rss_bytes=rss_bytes(pids[node]),
                disk_bytes=disk["total"], disk_allocated=disk["allocated"],
                wal_bytes=disk["wal"], history_bytes=disk["history"],
                snapshot_bytes=disk["snapshots"], other_bytes=disk["other"],
            )
            if s is not None:
                row.role = s.role
                row.delivered = s.delivered
                row.snapshot_index = s.snapshot_index
                row.snapshot_slot = s.snapshot_slot
                row.floor = s.floor
                row.log_bytes = s.log_bytes
            rows.append(row)
        self.samples.extend(rows)
        return rows

    # ------------------------------------------------------------------ load

    @contextlib.contextmanager
    def load(self) -> Iterator[list[_LoadProcess]]:
        """``--clients`` saturating load processes for as long as the block runs."""
        args = self.args
        tag = uuid.uuid4().hex[:8]
        target = self.leader or self.cluster.cluster.ids[0]
        specs = [
            LoadSpec(
                cluster=self.cluster.spec,
                target=target,
                client_id=f"soak-{tag}-{k}",
                payload_bytes=args.payload,
                rate=None,
                window=args.window,
                batch=args.batch,
                # The measurement window never opens: no latency is kept per message (the
                # client still keeps 9 bytes per message sent); we stop it ourselves.
                warmup_s=1e9,
                duration_s=1.0,
                grace_s=0.0,
            )
            for k in range(args.clients)
        ]
        loads: list[_LoadProcess] = []
        try:
            for spec in specs:
                loads.append(_LoadProcess(spec, self.cluster.workdir / "loadgen.log"))
            for proc in loads:
                if proc.expect(60, "ready signal") != "ready":
                    raise ClusterError("load process failed to start")
            start_at = time.monotonic() + 0.05
            for proc in loads:
                proc.send(start_at)
            yield loads
        finally:
            for proc in loads:
                proc.stop()

    def drive(self, phase: str, until: int, down: tuple[int, ...] = ()) -> tuple[int, float]:
        """Saturate until ``until`` messages are committed, sampling every ``--sample``.

        Returns (messages committed when the load stopped, seconds it ran).
        """
        every = self.args.sample
        start = self.committed()
        next_sample = (start // every + 1) * every
        t_start = time.monotonic()
        last_note = t_start
        with self.load() as loads:
            while True:
                self.cluster.check_alive(expected_dead=down)
                for proc in loads:
                    if proc.proc.poll() is not None:
                        raise ClusterError(f"a load process exited ({proc.proc.returncode}); "
                                           f"see {self.cluster.workdir / 'loadgen.log'}")
                done = self.committed()
                if done >= until:
                    break
                if done >= next_sample:
                    rows = self.sample(phase, done)
                    next_sample = (done // every + 1) * every
                    rate = (done - start) / max(1e-9, time.monotonic() - t_start)
                    rss = " ".join(f"n{r.node}={_mib(r.rss_bytes)}" for r in rows)
                    disk = " ".join(f"n{r.node}={_mib(r.disk_bytes)}" for r in rows)
                    self.say(f"{phase}: {done:,} committed ({rate:,.0f}/s); "
                             f"RSS MiB {rss}; disk MiB {disk}")
                    last_note = time.monotonic()
                elif time.monotonic() - last_note > 30:
                    self.say(f"{phase}: {done:,} committed")
                    last_note = time.monotonic()
                time.sleep(_POLL_S)
            seconds = time.monotonic() - t_start
        return done, seconds

    def quiet(self, nodes: Sequence[int], deadline_s: float = 60.0) -> int:
        """Wait until ``nodes`` agree on a delivered index that stays put; returns it."""
        deadline = time.monotonic() + deadline_s
        last: tuple[int, ...] | None = None
        while time.monotonic() < deadline:
            got = self.statuses(nodes)
            counts = tuple(s.delivered if s is not None else -1 for s in got.values())
            if counts == last and len(set(counts)) == 1 and counts[0] >= 0:
                return counts[0]
            last = counts
            time.sleep(0.2)
        raise ClusterError(f"nodes {list(nodes)} did not settle within {deadline_s:.0f}s: {last}")

    def follower(self, avoid: int = 0) -> int:
        """A node that is not the leader (the highest id other than ``avoid`` if it can)."""
        self.leader = self.cluster.wait_leader(exclude=tuple(
            n for n in self.cluster.cluster.ids if n not in self.cluster.pids()))
        others = [n for n in self.cluster.cluster.ids if n != self.leader]
        pick = [n for n in others if n != avoid] or others
        return max(pick)

    def wait_caught_up(self, node: int, target: int, t0: float,
                       deadline_s: float) -> dict[str, float | None]:
        """Poll ``node`` from its (re)start at ``t0``: seconds to its first status answer,
        to ``leader_ok``, and to serving (``leader_ok`` and delivered >= ``target``)."""
        first = ok = serving = None
        deadline = t0 + deadline_s
        while time.monotonic() < deadline:
            self.cluster.check_alive()
            s = self.cluster.status(node, 0.1)
            now = time.monotonic() - t0
            if s is not None:
                if first is None:
                    first = now
                if s.leader_ok and ok is None:
                    ok = now
                if s.leader_ok and s.delivered >= target:
                    serving = now
                    break
            time.sleep(0.01)
        return {"first_status_s": _r(first), "leader_ok_s": _r(ok), "serving_s": _r(serving)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _mib(x: int | None) -> str:
    return "?" if x is None else f"{x / MIB:.0f}"


def log_events(path: Path, offset: int) -> list[dict[str, Any]]:
    """The JSON-line events of a node's log from byte ``offset`` on (other lines skipped)."""
    out: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
    except OSError:
        pass
    return out


def log_summary(cluster: SoakCluster) -> dict[str, Any]:
    """Per node: leader elections won, role changes, snapshots taken and installed, and
    the warnings and errors of its log (their event names and counts)."""
    out: dict[str, Any] = {}
    for node in cluster.cluster.ids:
        events = log_events(cluster.log_path(node), 0)
        roles = [e for e in events if e.get("event") == "node.role"]
        problems: dict[str, int] = {}
        for e in events:
            if e.get("level") in ("warning", "error", "critical"):
                key = f"{e.get('level')}: {e.get('event')}"
                problems[key] = problems.get(key, 0) + 1
        out[str(node)] = {
            "became_leader": sum(1 for e in roles if e.get("role") == "leader"),
            "role_changes": len(roles),
            "snapshots_taken": sum(1 for e in events if e.get("event") == "snapshot.taken"),
            "snapshots_installed": sum(
                1 for e in events if e.get("event") == "snapshot.installed"),
            "starts": sum(1 for e in events if e.get("event") == "node.recovered"),
            "warnings_errors": problems,
        }
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _brief(events: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for e in events:
        if e.get("event") == name:
            return {k: v for k, v in e.items() if k not in ("timestamp", "level")}
    return None


# ---------------------------------------------------------------------- phases


def phase_restart(soak: Soak) -> dict[str, Any]:
    """SIGKILL a follower of the idle cluster, start it again, time it to serving."""
    cluster = soak.cluster
    node = soak.follower()
    target = soak.quiet(cluster.cluster.ids)
    soak.say(f"restart: SIGKILL node {node} (all at {target:,} delivered)")
    cluster.kill(node, signal.SIGKILL)
    soak.event("restart", node=node, messages=target)
    offset = _size(cluster.log_path(node))
    t0 = cluster.restart(node)
    times = soak.wait_caught_up(node, target, t0, soak.args.deadline)
    events = log_events(cluster.log_path(node), offset)
    pid = cluster.pids().get(node)
    result = {
        "node": node,
        "signal": "SIGKILL",
        "delivered_target": target,
        **times,
        "target_s": RESTART_TARGET_S,
        "met": times["serving_s"] is not None and times["serving_s"] <= RESTART_TARGET_S,
        "recovered": _brief(events, "node.recovered"),
        "rss_after_bytes": rss_bytes(pid) if pid else None,
    }
    soak.say(f"restart: node {node} serving after {times['serving_s']} s "
             f"(first status {times['first_status_s']} s)")
    return result


def phase_behind(soak: Soak) -> dict[str, Any]:
    """Stop a follower, commit ``--behind`` messages, start it, time its catch-up."""
    cluster, args = soak.cluster, soak.args
    node = soak.follower()
    before = soak.quiet(cluster.cluster.ids)
    soak.say(f"behind: SIGTERM node {node} at {before:,} delivered; "
             f"committing {args.behind:,} more")
    cluster.kill(node, signal.SIGTERM)
    soak.event("stopped", node=node, messages=before)
    others = [n for n in cluster.cluster.ids if n != node]
    soak.leader = cluster.wait_leader(exclude=(node,))
    done, seconds = soak.drive("behind", before + args.behind, down=(node,))
    target = soak.quiet(others)
    floors = {n: s.floor if s is not None else None for n, s in soak.statuses(others).items()}
    soak.say(f"behind: {done - before:,} committed in {seconds:.1f}s; others at {target:,} "
             f"(floors {floors}); starting node {node}")
    offset = _size(cluster.log_path(node))
    t0 = cluster.restart(node)
    soak.event("started", node=node, messages=target)
    times = soak.wait_caught_up(node, target, t0, soak.args.deadline)
    # Give the log a moment: the install is logged in the same turn as it is applied.
    events = log_events(cluster.log_path(node), offset)
    installed = [
        {k: v for k, v in e.items() if k not in ("timestamp", "level")}
        for e in events if e.get("event") == "snapshot.installed"
    ]
    pid = cluster.pids().get(node)
    result = {
        "node": node,
        "stopped_at": before,
        "behind": target - before,
        "delivered_target": target,
        "others_floor": floors,
        **{("catch_up_s" if k == "serving_s" else k): v for k, v in times.items()},
        "snapshot_installed": bool(installed),
        "installs": installed,
        "recovered": _brief(events, "node.recovered"),
        "rss_after_bytes": rss_bytes(pid) if pid else None,
        "disk_after": disk_usage(cluster.data_dir(node)),
    }
    soak.say(f"behind: node {node} caught up after {times['serving_s']} s; "
             f"snapshot installed: {'yes' if installed else 'no'}")
    return result


# ---------------------------------------------------------------------- report


def reference_point(args: argparse.Namespace) -> int:
    """The message count RSS is compared at: ``--reference``, unless the run is too short
    for it to mean anything (then a tenth of the run, at least one sample)."""
    if args.messages >= 2 * args.reference:
        return int(args.reference)
    return int(max(args.sample, args.messages // 10))


def nearest(rows: list[Sample], node: int, messages: int) -> Sample | None:
    mine = [r for r in rows if r.node == node and r.rss_bytes is not None]
    return min(mine, key=lambda r: abs(r.messages - messages)) if mine else None


def summarize(soak: Soak, soak_done: int, soak_s: float, start_msgs: int,
              restart: dict[str, Any] | None, behind: dict[str, Any] | None) -> dict[str, Any]:
    rows = [r for r in soak.samples if r.phase == "soak"]
    ref = reference_point(soak.args)
    nodes: dict[str, Any] = {}
    for node in soak.cluster.cluster.ids:
        at_ref = nearest(rows, node, ref)
        end = nearest(rows, node, soak_done)
        mine = [r for r in rows if r.node == node]
        half = nearest(rows, node, soak_done // 2)
        ratio = None
        if at_ref and end and at_ref.rss_bytes and end.rss_bytes:
            ratio = round(end.rss_bytes / at_ref.rss_bytes, 3)
        nodes[str(node)] = {
            "rss_at_ref_mib": _m(at_ref.rss_bytes if at_ref else None),
            "ref_messages": at_ref.messages if at_ref else None,
            "rss_end_mib": _m(end.rss_bytes if end else None),
            "end_messages": end.messages if end else None,
            "rss_ratio": ratio,
            "rss_ratio_met": ratio is not None and ratio <= RSS_RATIO_TARGET,
            "rss_max_mib": _m(max((r.rss_bytes or 0 for r in mine), default=None)),
            "disk_end_mib": _m(end.disk_bytes if end else None),
            "disk_end": None if end is None else {
                "wal_mib": _m(end.wal_bytes), "history_mib": _m(end.history_bytes),
                "snapshots_mib": _m(end.snapshot_bytes), "other_mib": _m(end.other_bytes),
                "allocated_mib": _m(end.disk_allocated),
            },
            "disk_half_mib": _m(half.disk_bytes if half else None),
            "disk_max_mib": _m(max((r.disk_bytes for r in mine), default=None)),
            "log_bytes_end_mib": _m(end.log_bytes if end else None),
            "floor_end": end.floor if end else None,
            "snapshot_index_end": end.snapshot_index if end else None,
        }
    # Throughput between consecutive samples: dips show pauses (elections, GC, compaction).
    points = sorted({(r.elapsed_s, r.messages) for r in rows if r.node == rows[0].node}
                    if rows else set())
    rates = sorted((m1 - m0) / (t1 - t0)
                   for (t0, m0), (t1, m1) in itertools.pairwise(points) if t1 > t0)
    return {
        "messages": soak_done - start_msgs,
        "interval_msgs_s": {"min": round(rates[0]), "median": round(rates[len(rates) // 2]),
                            "max": round(rates[-1])} if rates else None,
        "soak_s": round(soak_s, 1),
        "msgs_s": round((soak_done - start_msgs) / max(soak_s, 1e-9), 1),
        "reference_messages": ref,
        "rss_ratio_target": RSS_RATIO_TARGET,
        "nodes": nodes,
        "restart": restart,
        "behind": behind,
    }


def _m(x: int | None) -> float | None:
    return None if x is None else round(x / MIB, 1)


def text_summary(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    p = doc["params"]
    lines = [
        f"soak: {p['nodes']} nodes, {p['payload']} B, fsync {'on' if p['fsync'] else 'off'}, "
        f"{'CURVE' if p.get('secure', True) else 'insecure (no CURVE)'}, "
        f"{p['clients']} load processes (batch {p['batch']}, window {p['window']}), "
        f"node options: {' '.join(p['node_options']) or '(defaults)'}",
        f"committed {s['messages']:,} messages in {s['soak_s']:.0f} s: "
        f"{s['msgs_s']:,.0f} msgs/s sustained"
        + (" (between samples: min {min:,}, median {median:,}, max {max:,})".format(
            **s["interval_msgs_s"]) if s["interval_msgs_s"] else ""),
    ]
    for node, n in s["nodes"].items():
        ratio = n["rss_ratio"]
        verdict = "?" if ratio is None else ("<= 1.3: yes" if n["rss_ratio_met"] else
                                             "<= 1.3: NO")
        disk = n["disk_end"] or {}
        lines.append(
            f"node {node}: RSS {n['rss_at_ref_mib']} MiB at {n['ref_messages']:,} -> "
            f"{n['rss_end_mib']} MiB at {n['end_messages']:,} (x{ratio}, {verdict}); "
            f"disk {n['disk_end_mib']} MiB at the end (wal {disk.get('wal_mib')}, history "
            f"{disk.get('history_mib')}, snapshots {disk.get('snapshots_mib')}, other "
            f"{disk.get('other_mib')}; max {n['disk_max_mib']}, at half-way "
            f"{n['disk_half_mib']}); floor {n['floor_end']}"
            if n["ref_messages"] is not None and n["end_messages"] is not None
            else f"node {node}: no samples"
        )
    r = s["restart"]
    if r is not None:
        met = r["serving_s"] is not None and r["serving_s"] <= RESTART_TARGET_S
        lines.append(
            f"restart (SIGKILL node {r['node']} at {r['delivered_target']:,}): serving after "
            f"{r['serving_s']} s (<= {RESTART_TARGET_S:.0f} s: {'yes' if met else 'NO'}; "
            f"first status {r['first_status_s']} s, leader_ok {r['leader_ok_s']} s)"
        )
    b = s["behind"]
    if b is not None:
        lines.append(
            f"behind (node {b['node']} stopped while {b['behind']:,} committed): caught up "
            f"{b['catch_up_s']} s after its start; snapshot installed: "
            f"{'yes' if b['snapshot_installed'] else 'NO (replayed)'}"
        )
    logs = doc.get("logs") or {}
    if logs:
        lines.append("logs: " + "; ".join(
            f"node {n}: leader x{v['became_leader']}, {v['snapshots_taken']} snapshots taken, "
            f"{v['snapshots_installed']} installed, "
            f"{sum(v['warnings_errors'].values())} warnings/errors"
            + (f" {v['warnings_errors']}" if v["warnings_errors"] else "")
            for n, v in logs.items()))
    if doc["errors"]:
        lines.append("errors: " + "; ".join(doc["errors"]))
    lines += [f"files: {doc['files']}"]
    return "\n".join(lines)


def write_outputs(doc: dict[str, Any], out: Path, plot: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = doc["samples"]
    fields = list(Sample.__dataclass_fields__)
    with open(out / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for row in rows:
            w.writerow(row)
    doc["files"] = [str(out / "soak.csv"), str(out / "soak.json")]
    if plot and rows:
        path = draw(doc, out / "soak.png")
        if path is not None:
            doc["files"].append(str(path))
    (out / "soak.json").write_text(json.dumps(doc, indent=1) + "\n")


def draw(doc: dict[str, Any], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = doc["samples"]
    p = doc["params"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, node in enumerate(sorted({r["node"] for r in rows})):
        color = colors[k % len(colors)]
        # A node's line breaks where it was killed or stopped: a restarted process is another.
        cuts = sorted(e["elapsed_s"] for e in doc["events"] if e.get("node") == node)
        for i, part in enumerate(_split([r for r in rows if r["node"] == node], cuts)):
            xs = [r["messages"] / 1e6 for r in part]
            label = f"node {node}" if i == 0 else None
            top.plot(xs, [(r["rss_bytes"] or 0) / MIB for r in part], marker=".",
                     color=color, label=label)
            bottom.plot(xs, [r["disk_bytes"] / MIB for r in part], marker=".",
                        color=color, label=label)
    styles = {"restart": ("-.", "SIGKILL + restart"), "stopped": ("--", "stopped"),
              "started": (":", "started")}
    for k, e in enumerate(doc["events"]):
        style, what = styles.get(e["event"], (None, ""))
        if style is None:
            continue
        x = e["messages"] / 1e6
        for ax in (top, bottom):
            ax.axvline(x, color="grey", linestyle=style, linewidth=0.8)
        top.annotate(f"node {e['node']} {what}", (x, 0), xycoords=("data", "axes fraction"),
                     xytext=(3, 5 + 11 * k),
                     textcoords="offset points", fontsize=8, color="grey")
    top.set_ylabel("RSS (MiB)")
    bottom.set_ylabel("data directory (MiB)")
    bottom.set_xlabel("messages committed (millions)")
    top.set_ylim(bottom=0)
    bottom.set_ylim(bottom=0)
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    retain = " ".join(p["node_options"]) or "default settings"
    top.set_title(f"Soak: {p['nodes']} nodes, {p['payload']} B, fsync "
                  f"{'on' if p['fsync'] else 'off'}, {retain}; "
                  f"{doc['summary']['msgs_s']:,.0f} msgs/s" if doc.get("summary") else "Soak")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _split(rows: list[dict[str, Any]], cuts: list[float]) -> list[list[dict[str, Any]]]:
    """``rows`` (in time order) cut wherever a time in ``cuts`` falls between two rows."""
    parts: list[list[dict[str, Any]]] = [[]]
    for row in rows:
        prev = parts[-1][-1] if parts[-1] else None
        if prev is not None and any(prev["elapsed_s"] < c <= row["elapsed_s"] for c in cuts):
            parts.append([])
        parts[-1].append(row)
    return [p for p in parts if p]


# ---------------------------------------------------------------------- CLI


def node_accepts(option: str) -> bool:
    """Whether ``paxos node`` has ``option`` (checked in its ``--help``)."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "broadcast", "node", "--help"],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return option in out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=10_000_000,
                   help="messages committed by the soak phase (default 10,000,000)")
    p.add_argument("--sample", type=int, default=250_000,
                   help="record RSS and disk every this many messages (default 250,000)")
    p.add_argument("--behind", type=int, default=1_000_000,
                   help="messages committed while a node is down (default 1,000,000; 0: skip)")
    p.add_argument("--reference", type=int, default=1_000_000,
                   help="RSS at the end is compared with RSS here (default 1,000,000)")
    p.add_argument("--no-restart", action="store_true", help="skip the restart phase")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--payload", type=int, default=100, help="payload bytes (default 100)")
    p.add_argument("--no-fsync", action="store_true", help="nodes run with --no-fsync (faster)")
    p.add_argument("--insecure", action="store_true",
                   help="nodes and clients without CURVE (default: CURVE, as deployed)")
    p.add_argument("--retain", default=None,
                   help="pass --retain N|SIZE to the nodes (if paxos node accepts it)")
    p.add_argument("--clients", type=int, default=2, help="load processes (default 2)")
    p.add_argument("--batch", type=int, default=256, help="client batch (default 256)")
    p.add_argument("--window", type=int, default=4096, help="client window (default 4096)")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds a restarted node gets to serve / catch up (default 120)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="output directory (default: bench-results)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep the nodes' data and logs here (default: a temporary directory)")
    p.add_argument("--no-plot", action="store_true")
    return p


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.messages <= 0 or args.sample <= 0 or args.behind < 0:
        raise SystemExit("--messages and --sample must be positive, --behind not negative")
    atexit.register(kill_all)  # whatever happens, no node or load process outlives us
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            return run(args, args.workdir)
        with tempfile.TemporaryDirectory(prefix="paxos-soak-") as tmp:
            return run(args, Path(tmp))
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        kill_all()


def run(args: argparse.Namespace, workdir: Path) -> int:
    from bench.machine import describe

    extra: list[str] = []
    retain_supported = node_accepts("--retain")
    if args.retain is not None:
        if retain_supported:
            extra += ["--retain", str(args.retain)]
        else:
            sys.stderr.write("paxos node has no --retain yet: running with its defaults\n")
    cluster = SoakCluster(args.nodes, not args.no_fsync, workdir, extra, secure=not args.insecure)
    soak = Soak(cluster, args)
    params = {
        "messages": args.messages, "sample": args.sample, "behind": args.behind,
        "reference": args.reference, "nodes": args.nodes, "payload": args.payload,
        "fsync": not args.no_fsync, "secure": cluster.secure, "clients": args.clients,
        "batch": args.batch, "window": args.window, "node_options": extra,
        "retain_supported": retain_supported, "workdir": str(workdir),
    }
    doc: dict[str, Any] = {"params": params, "machine": describe(), "samples": [],
                           "events": soak.events, "summary": None, "errors": []}
    restart = behind = None
    soak_done = start_msgs = 0
    soak_s = 0.0
    try:
        cluster.start()
        soak.leader = cluster.wait_leader()
        soak.say(f"cluster up in {workdir} (leader {soak.leader}); soak to "
                 f"{args.messages:,} messages")
        start_msgs = soak.committed()
        soak.sample("soak", start_msgs)
        soak_done, soak_s = soak.drive("soak", start_msgs + args.messages)
        soak.sample("soak", soak_done)
        soak.say(f"soak: {soak_done - start_msgs:,} committed in {soak_s:.1f}s "
                 f"({(soak_done - start_msgs) / soak_s:,.0f}/s)")
        if not args.no_restart:
            restart = phase_restart(soak)
            soak.sample("restart", restart["delivered_target"])
        if args.behind:
            behind = phase_behind(soak)
            soak.sample("after", soak.quiet(cluster.cluster.ids))
    except (ClusterError, TimeoutError, OSError) as exc:
        doc["errors"].append(f"{type(exc).__name__}: {exc}")
        soak.say(f"error: {exc}")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: still write what was measured
        doc["errors"].append("interrupted")
        soak.say("interrupted: writing what was measured")
    finally:
        cluster.stop()
        doc["logs"] = log_summary(cluster)
    doc["samples"] = [asdict(s) for s in soak.samples]
    if soak_s > 0:
        doc["summary"] = summarize(soak, soak_done, soak_s, start_msgs, restart, behind)
    write_outputs(doc, args.out, not args.no_plot)
    if doc["summary"] is not None:
        print(text_summary(doc))
    else:
        print("no summary: " + "; ".join(doc["errors"]))
    if "interrupted" in doc["errors"]:
        return 130
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
