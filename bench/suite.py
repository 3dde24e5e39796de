"""The benchmark matrices (quick, full, security), repetitions, aggregation and targets."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from bench.clusters import (
    PSO_ARGS,
    SECURE_SYSTEMS,
    BenchCluster,
    ClusterError,
    host_cpu_seconds,
)
from bench.harness import RunConfig, run_failover, run_load
from bench.machine import describe


@dataclass(frozen=True)
class SuiteParams:
    """Everything that decides what a suite run measures."""

    systems: tuple[str, ...] = ("paxos", "async", "pysyncobj")
    nodes: tuple[int, ...] = (3, 5)
    payloads: tuple[int, ...] = (100, 1024)
    fsyncs: tuple[bool, ...] = (False, True)
    #: PySyncObj's "fsync on" is its mmap journal (it has no per-entry fsync).
    pysyncobj_fsyncs: tuple[bool, ...] = (False,)
    #: Also measure PySyncObj with a 10 ms appendEntriesPeriod (3 nodes, first payload).
    pysyncobj_tuned: bool = True
    rates: tuple[int, ...] = (1_000, 10_000, 50_000)
    saturation: bool = True
    reps: int = 3
    warmup_s: float = 0.5
    rate_duration_s: float = 2.0
    saturation_duration_s: float = 3.0
    grace_s: float = 2.0
    batch: int = 256
    window: int = 4096
    clients: int = 1
    #: (batch, window) pairs measured at saturation (3 nodes, first payload, no fsync).
    sweep: tuple[tuple[int, int], ...] = ((64, 4096), (1024, 4096), (256, 1024), (256, 16384))
    sweep_systems: tuple[str, ...] = ("paxos", "async")
    sweep_reps: int = 2
    failover_systems: tuple[str, ...] = ("paxos", "async")
    failover_fsyncs: tuple[bool, ...] = (False, True)
    failover_reps: int = 3
    failover_rate: float | None = 50_000
    #: Before each cluster start, wait up to this long for the machine to be idle.
    quiet_wait_s: float = 5.0
    #: Run every system without CURVE (``--insecure``), as before CURVE was the default.
    insecure: bool = False
    #: What CURVE costs: also measure Multi-Paxos ``--insecure`` (first node count and
    #: payload, every fsync setting), each run next to its CURVE twin (see
    #: :func:`security_comparison`).
    security_compare: bool = True


QUICK = SuiteParams(
    systems=("paxos", "async"),
    pysyncobj_tuned=False,
    nodes=(3,),
    payloads=(100,),
    fsyncs=(False,),
    rates=(1_000,),
    reps=1,
    saturation_duration_s=2.0,
    sweep=(),
    failover_systems=(),
    quiet_wait_s=3.0,
    security_compare=False,
)

#: Saturation repetitions in --quick (on one cluster per system).
QUICK_SATURATION_REPS = 2

#: ``--security``: Multi-Paxos, 3 nodes, 100 B, fsync on (the headline) and off, CURVE and
#: ``--insecure`` in alternating order (C I, then I C, ...), a fresh cluster each: 1k msgs/s
#: offered (latency), then saturation (throughput).
SECURITY = SuiteParams(
    systems=("paxos",),
    pysyncobj_tuned=False,
    nodes=(3,),
    payloads=(100,),
    fsyncs=(True, False),
    rates=(1_000,),
    reps=6,
    sweep=(),
    failover_systems=(),
    security_compare=True,
)
#: ``--security --quick``: the same, fewer and shorter rounds (about two minutes).
SECURITY_QUICK = replace(
    SECURITY, reps=3, rate_duration_s=1.5, saturation_duration_s=2.0, quiet_wait_s=2.0
)
#: The requirement: CURVE may cost at most this share of Multi-Paxos' throughput.
CURVE_MAX_COST = 0.25


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def step(self, label: str) -> None: ...
    def advance(self) -> None: ...
    def stop(self) -> None: ...


class PlainProgress:
    """Progress lines on stderr (when ``rich`` is not installed)."""

    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.t0 = time.monotonic()

    def start(self, total: int) -> None:
        self.total = total

    def step(self, label: str) -> None:
        elapsed = time.monotonic() - self.t0
        sys.stderr.write(f"[{self.done + 1}/{self.total} {elapsed:5.0f}s] {label}\n")

    def advance(self) -> None:
        self.done += 1

    def stop(self) -> None:
        pass


class RichProgress:
    """A rich progress bar on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task: Any = None

    def start(self, total: int) -> None:
        self._bar.start()
        self._task = self._bar.add_task("bench", total=total)

    def step(self, label: str) -> None:
        self._bar.update(self._task, description=label)

    def advance(self) -> None:
        self._bar.advance(self._task)

    def stop(self) -> None:
        self._bar.stop()


def make_progress(enabled: bool = True) -> Progress:
    if enabled:
        try:
            return RichProgress()
        except ImportError:
            pass
    return PlainProgress()


class SilentProgress(PlainProgress):
    def step(self, label: str) -> None:
        pass


def wait_quiet_host(max_wait_s: float, busy_limit_pct: float = 30.0) -> float | None:
    """Wait (up to ``max_wait_s``) until the machine is nearly idle; returns its busy %.

    Other jobs on the machine (another test suite, a build) distort every
    figure; each run also records the CPU used by processes not its own.
    """
    deadline = time.monotonic() + max_wait_s
    busy: float | None = None
    while True:
        a = host_cpu_seconds()
        time.sleep(0.3)  # the sampling interval of the busy measurement
        b = host_cpu_seconds()
        if a is None or b is None:
            return None
        busy = 100.0 * (b[0] - a[0]) / max(b[1] - a[1], 1e-9) * _cores()
        if busy < busy_limit_pct or time.monotonic() >= deadline:
            return round(busy, 1)


def _cores() -> int:
    return os.cpu_count() or 1


# ---------------------------------------------------------------------- the runs


@dataclass
class SuiteState:
    runs: list[dict[str, Any]] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    failover: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def _secure(params: SuiteParams, system: str) -> bool:
    """Whether ``system`` runs with CURVE in this suite (PySyncObj never does)."""
    return not params.insecure and system in SECURE_SYSTEMS


def _configs(params: SuiteParams) -> list[RunConfig]:
    out = []
    for system in params.systems:
        if system == "pysyncobj-tuned":
            continue  # added below, in one configuration only
        fsyncs = params.pysyncobj_fsyncs if system == "pysyncobj" else params.fsyncs
        secure = _secure(params, system)
        for nodes in params.nodes:
            for payload in params.payloads:
                for fsync in fsyncs:
                    cfg = RunConfig(system, nodes, payload, fsync, params.batch, params.window,
                                    params.clients, secure)
                    out.append(cfg)
                    if (params.security_compare and secure and system == "paxos"
                            and nodes == params.nodes[0] and payload == params.payloads[0]):
                        out.append(replace(cfg, secure=False))  # right next to its twin
    tuned = "pysyncobj-tuned" in params.systems
    if tuned or (params.pysyncobj_tuned and "pysyncobj" in params.systems):
        out.append(RunConfig("pysyncobj-tuned", params.nodes[0], params.payloads[0], False,
                             params.batch, params.window, params.clients, False))
    return out


def counterbalanced(configs: list[RunConfig], rep: int) -> list[RunConfig]:
    """The order of ``configs`` in repetition ``rep``: on odd repetitions each CURVE
    configuration and its ``--insecure`` twin swap places (C I, I C, C I, ...), so that
    neither always runs first (or on a machine that has warmed up, or got busier)."""
    out = list(configs)
    if rep % 2 == 0:
        return out
    i = 0
    while i < len(out) - 1:
        a, b = out[i], out[i + 1]
        if a.secure and b == replace(a, secure=False):
            out[i], out[i + 1] = b, a
            i += 2
        else:
            i += 1
    return out


def _phases(params: SuiteParams, saturation_reps: int = 1) -> list[float | None]:
    # Low rates first: latency is measured on a fresh cluster; saturation last.
    phases: list[float | None] = [float(r) for r in params.rates]
    if params.saturation:
        phases += [None] * saturation_reps
    return phases


def _measure_cluster(
    cfg: RunConfig,
    phases: list[float | None],
    params: SuiteParams,
    workdir: Path,
    progress: Progress,
    state: SuiteState,
    rep: int,
    sink: list[dict[str, Any]],
) -> None:
    """Start one cluster of ``cfg``, run every phase on it, always stop it."""
    quiet = wait_quiet_host(params.quiet_wait_s)
    cluster = BenchCluster(cfg.system, cfg.nodes, cfg.fsync, workdir, secure=cfg.secure)
    done = 0
    try:
        cluster.start()
        leader = cluster.wait_leader()
        for rate in phases:
            what = "saturation" if rate is None else f"{rate:,.0f} msgs/s"
            progress.step(f"{cfg.label()} rep {rep + 1}: {what}")
            duration = params.saturation_duration_s if rate is None else params.rate_duration_s
            before = cluster.status(leader)
            summary, _ = run_load(
                cluster,
                leader,
                cfg,
                rate=rate,
                warmup_s=params.warmup_s,
                duration_s=duration,
                grace_s=params.grace_s,
            )
            summary.pop("kill_time", None)
            # An election during the run (e.g. heartbeats starved of CPU) explains a stall.
            new_leader = cluster.wait_leader(deadline_s=15)
            after = cluster.status(new_leader)
            summary["leader_changed"] = new_leader != leader or (
                before is not None and after is not None and before.ballot != after.ballot
            )
            leader = new_leader
            summary["rep"] = rep
            summary["host_busy_before_pct"] = quiet
            sink.append(summary)
            progress.advance()
            done += 1
    except (ClusterError, OSError) as exc:
        state.errors.append(
            {**asdict(cfg), "rep": rep, "error": str(exc), "trace": traceback.format_exc(limit=5)}
        )
        for _ in range(len(phases) - done):
            progress.advance()
    finally:
        cluster.stop()


def run_suite(
    params: SuiteParams,
    progress: Progress,
    workdir: Path | None = None,
    *,
    quick: bool = False,
) -> dict[str, Any]:
    """Run everything ``params`` asks for; returns the full results document."""
    t0 = time.monotonic()
    machine = describe()
    state = SuiteState()
    configs = _configs(params)
    sat_reps = QUICK_SATURATION_REPS if quick else 1
    phases = _phases(params, sat_reps)
    cluster_reps = 1 if quick else params.reps
    total = len(configs) * cluster_reps * len(phases)
    sweep_cfgs = [
        replace(RunConfig(s, params.nodes[0], params.payloads[0], False), batch=b, window=w,
                clients=params.clients, secure=_secure(params, s))
        for s in params.sweep_systems
        for b, w in params.sweep
    ] if params.sweep else []
    total += len(sweep_cfgs) * params.sweep_reps
    failovers = [(s, f) for s in params.failover_systems for f in params.failover_fsyncs]
    total += len(failovers) * params.failover_reps
    progress.start(total)
    with tempfile.TemporaryDirectory(prefix="paxos-bench-", dir=workdir) as tmp:
        root = Path(tmp)
        n = 0
        try:
            for rep in range(cluster_reps):
                for cfg in counterbalanced(configs, rep):
                    n += 1
                    _measure_cluster(
                        cfg, phases, params, root / f"c{n}", progress, state, rep, state.runs
                    )
            sweep_params = replace(params, rates=(), saturation=True)
            for cfg in sweep_cfgs:
                n += 1
                _measure_cluster(
                    cfg, [None] * params.sweep_reps, sweep_params, root / f"c{n}", progress,
                    state, 0, state.sweep,
                )
            for rep in range(params.failover_reps):
                for system, fsync in failovers:
                    n += 1
                    progress.step(f"failover {system} {'fsync' if fsync else 'nofsync'} "
                                  f"rep {rep + 1}")
                    wait_quiet_host(params.quiet_wait_s)
                    try:
                        result = run_failover(
                            system, params.nodes[0], params.payloads[0], fsync,
                            root / f"c{n}", rate=params.failover_rate,
                            window=params.window, batch=params.batch,
                            secure=_secure(params, system),
                        )
                        result["rep"] = rep
                        state.failover.append(result)
                    except (ClusterError, OSError) as exc:
                        state.errors.append({"system": system, "fsync": fsync, "rep": rep,
                                             "failover": True, "error": str(exc)})
                    progress.advance()
        finally:
            progress.stop()
    doc: dict[str, Any] = {
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "params": {**asdict(params), "pysyncobj_node_args": list(PSO_ARGS)},
        "quick": quick,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "runs": state.runs,
        "sweep_runs": state.sweep,
        "summary": aggregate(state.runs),
        "sweep": aggregate(state.sweep),
        "failover": state.failover,
        "failover_summary": aggregate_failover(state.failover),
        "errors": state.errors,
    }
    doc["security"] = security_comparison(doc)
    doc["targets"] = evaluate_targets(doc)
    return doc


# ---------------------------------------------------------------------- aggregation

_KEY = ("system", "nodes", "payload", "fsync", "secure", "batch", "window", "clients", "mode",
        "offered_msgs_s")


def _spread(values: Iterable[float | None]) -> dict[str, float] | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": round(statistics.median(vals), 3),
        "min": round(min(vals), 3),
        "max": round(max(vals), 3),
        "stdev": round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0,
        "n": len(vals),
    }


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration and phase: medians and spread over repetitions."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(tuple(run.get(k, True) for k in _KEY), []).append(run)
    rows = []
    for key, group in groups.items():
        row: dict[str, Any] = dict(zip(_KEY, key, strict=True))

        def lat(name: str, g: list[dict[str, Any]] = group) -> list[float | None]:
            return [r["latency_ms"].get(name) for r in g]

        p50s = lat("p50")
        row.update(
            reps=len(group),
            msgs_s=_spread(r["msgs_s"] for r in group),
            mb_s=_spread(r["mb_s"] for r in group),
            p50_ms=_spread(p50s),
            p95_ms=_spread(lat("p95")),
            p99_ms=_spread(lat("p99")),
            p999_ms=_spread(lat("p999")),
            max_ms=_spread(lat("max")),
            leader_cpu_pct=_median(r["leader_cpu_pct"] for r in group),
            follower_cpu_pct=_median(
                statistics.fmean(v for k, v in r["cpu_pct"].items() if k != str(r["leader"]))
                if len(r["cpu_pct"]) > 1 else None
                for r in group
            ),
            nodes_cpu_pct=_median(sum(r["cpu_pct"].values()) for r in group),
            client_cpu_pct=_median(r["client_cpu_pct"] for r in group),
            cpu_us_per_msg={
                k: _median(r["cpu_us_per_msg"][k] for r in group)
                for k in ("leader", "followers_mean", "client", "total")
            },
            foreign_cpu_pct_max=max(
                (r["foreign_cpu_pct"] for r in group if r.get("foreign_cpu_pct") is not None),
                default=None,
            ),
            unacked=sum(r["unacked"] for r in group),
            leader_changes=sum(1 for r in group if r.get("leader_changed")),
            behind_max=max(r["behind_max"] for r in group),
        )
        # The CDF of the repetition whose p50 is the median one: a real distribution.
        ranked = sorted(
            (r for r in group if r["latency_ms"].get("p50") is not None),
            key=lambda r: r["latency_ms"]["p50"],
        )
        row["cdf_ms"] = ranked[len(ranked) // 2]["cdf_ms"] if ranked else []
        rows.append(row)
    return rows


def aggregate_failover(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["system"], r["nodes"], r["payload"], r["fsync"], r["mode"]),
                          []).append(r)
    rows = []
    for (system, nodes, payload, fsync, mode), group in groups.items():
        lost = [r["lost_acked"] for r in group]
        rows.append({
            "system": system,
            "nodes": nodes,
            "payload": payload,
            "fsync": fsync,
            "mode": mode,
            "reps": len(group),
            "lost_acked_total": sum(x for x in lost if x is not None),
            "lost_acked_per_rep": lost,
            "acked_total": sum(r["acked_total"] for r in group),
            "unavailable_s": _spread(r["unavailable_s"] for r in group),
            "first_ack_after_kill_s": _spread(r["first_ack_after_kill_s"] for r in group),
            "orders_agree": all(r["survivor_orders_agree"] for r in group),
        })
    return rows


def find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _med(row: dict[str, Any] | None, name: str) -> float | None:
    if row is None or row.get(name) is None:
        return None
    value = row[name]["median"]
    return float(value) if value is not None else None


def headline_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary rows of every system as the suite runs it (CURVE unless ``insecure``;
    PySyncObj plaintext), without the ``--insecure`` twins of the security comparison."""
    insecure = bool(doc["params"].get("insecure", False))
    return [
        r for r in doc["summary"]
        if r.get("secure", True) == (not insecure and r["system"] in SECURE_SYSTEMS)
    ]


def security_comparison(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Multi-Paxos with CURVE against ``--insecure``, one row per (nodes, payload, fsync)
    measured both ways: saturation throughput (medians, spread, their ratio, and the
    ratio within each round: a CURVE run and the insecure run next to it), latency at each
    offered rate, CPU per message, and how busy the machine was meanwhile."""
    rows = doc["summary"]
    runs = doc["runs"]
    params = doc["params"]
    base = {"system": "paxos", "batch": params["batch"], "window": params["window"],
            "clients": params["clients"]}
    keys = sorted({(r["nodes"], r["payload"], r["fsync"]) for r in rows
                   if r["system"] == "paxos" and r.get("secure") is False},
                  key=lambda k: (k[0], k[1], not k[2]))
    out = []
    for nodes, payload, fsync in keys:
        key = {**base, "nodes": nodes, "payload": payload, "fsync": fsync}
        found = {sec: find(rows, **key, secure=sec, mode="saturation") for sec in (True, False)}
        sat = {sec: row for sec, row in found.items() if row is not None}
        if len(sat) < 2:
            continue
        curve, plain = _med(sat[True], "msgs_s"), _med(sat[False], "msgs_s")
        ratio = round(curve / plain, 3) if curve is not None and plain else None

        def sat_runs(sec: bool, k: dict[str, Any] = key) -> dict[int, float]:
            return {r["rep"]: r["msgs_s"] for r in runs if r["mode"] == "saturation"
                    and r.get("secure", True) == sec
                    and all(r[n] == v for n, v in k.items())}

        c_runs, p_runs = sat_runs(True), sat_runs(False)
        paired = [c_runs[rep] / p_runs[rep] for rep in sorted(c_runs)
                  if rep in p_runs and p_runs[rep] > 0]
        latency = {}
        for rate in params["rates"]:
            lat = {sec: find(rows, **key, secure=sec, mode="rate", offered_msgs_s=float(rate))
                   for sec in (True, False)}
            latency[str(rate)] = {
                ("curve" if sec else "insecure"): None if row is None else {
                    "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"], "msgs_s": row["msgs_s"],
                    "behind_max": row["behind_max"], "unacked": row["unacked"],
                }
                for sec, row in lat.items()
            }
        mine = [r for r in runs if r["system"] == "paxos" and r["nodes"] == nodes
                and r["payload"] == payload and r["fsync"] == fsync]
        foreign = [r["foreign_cpu_pct"] for r in mine if r.get("foreign_cpu_pct") is not None]
        cpu = {sec: sat[sec]["cpu_us_per_msg"].get("total") for sec in (True, False)}
        out.append({
            "nodes": nodes,
            "payload": payload,
            "fsync": fsync,
            "curve_msgs_s": sat[True]["msgs_s"],
            "insecure_msgs_s": sat[False]["msgs_s"],
            "ratio": ratio,
            "cost": None if ratio is None else round(1 - ratio, 3),
            "paired_ratio": _spread(paired),
            "max_cost": CURVE_MAX_COST,
            "met": None if ratio is None else ratio >= 1 - CURVE_MAX_COST,
            "latency": latency,
            "cpu_us_per_msg": {"curve": sat[True]["cpu_us_per_msg"],
                               "insecure": sat[False]["cpu_us_per_msg"]},
            "cpu_ratio": (round(cpu[True] / cpu[False], 3)
                          if cpu[True] is not None and cpu[False] else None),
            "cpu_pct": {
                ("curve" if sec else "insecure"): {
                    "leader": row["leader_cpu_pct"], "follower": row["follower_cpu_pct"],
                    "client": row["client_cpu_pct"],
                }
                for sec, row in sat.items()
            },
            "leader_changes": sum(1 for r in mine if r.get("leader_changed")),
            "foreign_cpu_pct": _spread(foreign),
            "runs": len(mine),
        })
    return out


def evaluate_targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met."""
    rows = headline_rows(doc)
    base = {"nodes": 3, "payload": 100, "batch": doc["params"]["batch"],
            "window": doc["params"]["window"]}

    def sat(system: str, fsync: bool = False, nodes: int = 3) -> float | None:
        return _med(find(rows, **{**base, "nodes": nodes}, system=system, fsync=fsync,
                         mode="saturation"), "msgs_s")

    def p50_at_1k(fsync: bool) -> float | None:
        return _med(find(rows, **base, system="paxos", fsync=fsync, offered_msgs_s=1000.0),
                    "p50_ms")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    failover = [r for r in doc["failover"] if r["system"] == "paxos"]
    unavail = [r["unavailable_s"] for r in failover]
    lost = [r["lost_acked"] for r in failover]
    targets: list[tuple[str, float | None, str, float]] = [
        ("paxos msgs/s, 3 nodes, 100 B, no fsync", sat("paxos"), ">=", 300_000),
        ("paxos msgs/s, 3 nodes, 100 B, fsync", sat("paxos", True), ">=", 150_000),
        ("paxos / async throughput", ratio(sat("paxos"), sat("async")), ">=", 0.4),
        ("paxos / pysyncobj throughput", ratio(sat("paxos"), sat("pysyncobj")), ">=", 10),
        ("paxos / pysyncobj-tuned throughput", ratio(sat("paxos"), sat("pysyncobj-tuned")), ">=",
         10),
        ("paxos p50 ms at 1k msgs/s, no fsync", p50_at_1k(False), "<=", 1.0),
        ("paxos p50 ms at 1k msgs/s, fsync", p50_at_1k(True), "<=", 1.5),
        ("paxos failover s, kill -> first new commit (worst rep)",
         max(unavail) if unavail and None not in unavail else None, "<=", 1.0),
        ("paxos acknowledged messages lost in failover (all reps)",
         float(sum(lost)) if lost and None not in lost else None, "<=", 0),
        ("paxos 5-node / 3-node throughput", ratio(sat("paxos", nodes=5), sat("paxos")), ">=",
         0.6),
    ]
    for row in doc.get("security") or security_comparison(doc):
        targets.append((
            f"paxos CURVE / --insecure throughput, {row['nodes']} nodes, {row['payload']} B, "
            f"fsync {'on' if row['fsync'] else 'off'}",
            row["ratio"], ">=", 1 - CURVE_MAX_COST,
        ))
    out = []
    compare: dict[str, Callable[[float, float], bool]] = {
        ">=": lambda v, t: v >= t,
        "<=": lambda v, t: v <= t,
    }
    for name, value, op, threshold in targets:
        out.append({
            "target": name,
            "value": value,
            "op": op,
            "threshold": threshold,
            "met": None if value is None else compare[op](value, threshold),
        })
    return out


def quick_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object ``python -m bench --quick`` prints."""
    rows = headline_rows(doc)
    base = {"nodes": 3, "payload": 100, "fsync": False}

    def get(system: str, mode: str, name: str, offered: float | None = None) -> float | None:
        row = find(rows, **base, system=system, mode=mode, offered_msgs_s=offered)
        return _med(row, name)

    paxos = get("paxos", "saturation", "msgs_s")
    asyn = get("async", "saturation", "msgs_s")
    sat_rows = [find(rows, **base, system=s, mode="saturation") for s in ("paxos", "async")]
    return {
        "paxos_msgs_s": paxos,
        "async_msgs_s": asyn,
        "ratio": round(paxos / asyn, 3) if paxos is not None and asyn else None,
        "paxos_p50_ms_at_1k": get("paxos", "rate", "p50_ms", 1000.0),
        "paxos_p99_ms_at_1k": get("paxos", "rate", "p99_ms", 1000.0),
        "async_p50_ms_at_1k": get("async", "rate", "p50_ms", 1000.0),
        "paxos_p50_ms_at_saturation": get("paxos", "saturation", "p50_ms"),
        "paxos_msgs_s_spread": (sat_rows[0] or {}).get("msgs_s"),
        "async_msgs_s_spread": (sat_rows[1] or {}).get("msgs_s"),
        "paxos_leader_cpu_pct": (sat_rows[0] or {}).get("leader_cpu_pct"),
        "foreign_cpu_pct_max": max(
            (r["foreign_cpu_pct_max"] for r in rows if r.get("foreign_cpu_pct_max") is not None),
            default=None,
        ),
        "errors": [e["error"] for e in doc["errors"]],
        "elapsed_s": doc["elapsed_s"],
        "cpu": doc["machine"]["cpu_model"],
        "cores": doc["machine"]["cores_usable"],
    }


def security_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object ``python -m bench --security --quick`` prints."""
    out: dict[str, Any] = {}
    for row in doc.get("security") or []:
        name = f"fsync_{'on' if row['fsync'] else 'off'}"
        lat = row["latency"].get("1000") or {}

        def at_1k(which: str, q: str, lat: dict[str, Any] = lat) -> float | None:
            cell = lat.get(which)
            return None if cell is None or cell[q] is None else cell[q]["median"]

        out[name] = {
            "curve_msgs_s": row["curve_msgs_s"],
            "insecure_msgs_s": row["insecure_msgs_s"],
            "ratio": row["ratio"],
            "paired_ratio": row["paired_ratio"],
            "met": row["met"],
            "cpu_us_per_msg_ratio": row["cpu_ratio"],
            "curve_p50_ms_at_1k": at_1k("curve", "p50_ms"),
            "curve_p99_ms_at_1k": at_1k("curve", "p99_ms"),
            "insecure_p50_ms_at_1k": at_1k("insecure", "p50_ms"),
            "insecure_p99_ms_at_1k": at_1k("insecure", "p99_ms"),
            "foreign_cpu_pct": row["foreign_cpu_pct"],
        }
    return {
        **out,
        "loadavg_at_start": doc["machine"].get("loadavg_at_start"),
        "loadavg_at_end": doc.get("loadavg_at_end"),
        "errors": [e["error"] for e in doc["errors"]],
        "elapsed_s": doc["elapsed_s"],
        "cpu": doc["machine"]["cpu_model"],
        "cores": doc["machine"]["cores_usable"],
    }
