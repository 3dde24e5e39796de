"""``python -m bench``: run the benchmark suite.

* ``python -m bench`` -- the full suite (``make bench``): JSON, Markdown and PNGs in ``--out``;
* ``python -m bench --quick`` -- Multi-Paxos and async, 3 nodes, 100 B, no fsync, in
  under a minute; prints one JSON object on stdout;
* ``python -m bench --security`` -- what CURVE costs: Multi-Paxos (3 nodes, 100 B, fsync on
  and off) with CURVE and ``--insecure`` in alternating rounds, saturation throughput and
  p50/p99 at 1k msgs/s, side by side (``--security --quick``: fewer, shorter rounds, JSON);
* ``python -m bench --profile`` -- profile the leader under saturation (py-spy or cProfile).

Multi-Paxos and async replication run with CURVE on every socket, as deployed, unless
``--insecure``.
* ``python -m bench.soak`` -- the soak run (issue 10): RSS and disk per node over 10M
  messages, restart-to-serving and catch-up of a node far behind (see bench/soak.py).

Every process it starts is on 127.0.0.1 and is killed on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import atexit
import json
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.clusters import PSO_ARGS, SYSTEMS, kill_all


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the one-minute subset; JSON on stdout")
    mode.add_argument("--profile", action="store_true", help="profile the leader under load")
    p.add_argument("--security", action="store_true",
                   help="CURVE vs --insecure, Multi-Paxos 3 nodes (with --quick: shorter; JSON)")
    p.add_argument("--insecure", action="store_true",
                   help="run every node and client without CURVE (default: CURVE, as deployed)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="output directory (default: bench-results)")
    p.add_argument("--systems", default=None,
                   help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--nodes", default=None, help="comma-separated node counts (default 3,5)")
    p.add_argument("--payloads", default=None, help="comma-separated payload sizes in bytes")
    p.add_argument("--fsync", choices=("both", "on", "off"), default=None)
    p.add_argument("--rates", default=None, help="comma-separated offered rates (msgs/s)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (fresh cluster each)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds measured per saturation run")
    p.add_argument("--batch", type=int, default=None, help="client batch (commands per Submit)")
    p.add_argument("--window", type=int, default=None, help="client window (msgs in flight)")
    p.add_argument("--clients", type=int, default=None, help="load processes per run")
    p.add_argument("--no-sweep", action="store_true", help="skip the batch/window sweep")
    p.add_argument("--no-failover", action="store_true", help="skip the failover runs")
    p.add_argument("--failover-rate", type=float, default=None,
                   help="offered msgs/s during failover runs (default 50000; 0: saturation)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines on stderr")
    p.add_argument("--pso-append-period", type=float, default=None,
                   help="PySyncObj appendEntriesPeriod in s (default: PySyncObj's own, 0.1)")
    p.add_argument("--seconds", type=float, default=8.0, help="--profile: seconds sampled")
    p.add_argument("--profiler", choices=("auto", "py-spy", "cprofile"), default="auto")
    p.add_argument("--role", choices=("leader", "follower"), default="leader",
                   help="--profile: which node to sample (load: saturation, or --rates R)")
    return p


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _params(args: argparse.Namespace) -> object:
    from bench.suite import QUICK, SECURITY, SECURITY_QUICK, SuiteParams

    if args.security:
        params = SECURITY_QUICK if args.quick else SECURITY
    else:
        params = QUICK if args.quick else SuiteParams()
    changes: dict[str, object] = {}
    if args.insecure:
        changes["insecure"] = True
    if args.systems:
        systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
        unknown = set(systems) - set(SYSTEMS)
        if unknown:
            raise SystemExit(f"unknown systems {sorted(unknown)}; expected {SYSTEMS}")
        changes["systems"] = systems
        changes["sweep_systems"] = tuple(s for s in params.sweep_systems if s in systems)
        changes["failover_systems"] = tuple(s for s in params.failover_systems if s in systems)
    if args.nodes:
        changes["nodes"] = _ints(args.nodes)
    if args.payloads:
        changes["payloads"] = _ints(args.payloads)
    if args.fsync:
        changes["fsyncs"] = {"both": (False, True), "on": (True,), "off": (False,)}[args.fsync]
        changes["failover_fsyncs"] = changes["fsyncs"]
    if args.rates:
        changes["rates"] = _ints(args.rates)
    if args.reps:
        changes["reps"] = args.reps
        changes["failover_reps"] = args.reps
    if args.duration:
        changes["saturation_duration_s"] = args.duration
    for name in ("batch", "window", "clients"):
        if getattr(args, name):
            changes[name] = getattr(args, name)
    if args.no_sweep:
        changes["sweep"] = ()
    if args.no_failover:
        changes["failover_systems"] = ()
    if args.failover_rate is not None:
        changes["failover_rate"] = args.failover_rate or None
    return replace(params, **changes)  # type: ignore[arg-type]


def _on_signal(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.security and (args.profile or args.insecure):
        parser.error("--security measures CURVE and --insecure itself; not with --profile "
                     "or --insecure")
    atexit.register(kill_all)  # whatever happens, no node or load process outlives us
    if args.pso_append_period is not None:
        PSO_ARGS[:] = ["--append-period", str(args.pso_append_period)]
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        if args.profile:
            return _profile(args)
        return _suite(args)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    finally:
        kill_all()


def _profile(args: argparse.Namespace) -> int:
    from bench.profile import format_report, profile_leader

    system = (args.systems or "paxos").split(",")[0]
    with tempfile.TemporaryDirectory(prefix="paxos-bench-") as tmp:
        report = profile_leader(
            system,
            _ints(args.nodes)[0] if args.nodes else 3,
            _ints(args.payloads)[0] if args.payloads else 100,
            args.fsync == "on",
            max(3.0, args.seconds),
            args.out / "profile",
            use={"cprofile": "cprofile"}.get(args.profiler, args.profiler),
            window=args.window or 4096,
            batch=args.batch or 256,
            workdir=Path(tmp),
            role=args.role,
            rate=float(_ints(args.rates)[0]) if args.rates else None,
            secure=not args.insecure,
        )
    text = format_report(report)
    (args.out / "profile").mkdir(parents=True, exist_ok=True)
    (args.out / "profile" / f"{args.role}-top.txt").write_text(text + "\n")
    print(text)
    return 0


def _suite(args: argparse.Namespace) -> int:
    from bench.report import markdown, plots, security_markdown, write_json
    from bench.suite import (
        SilentProgress,
        SuiteParams,
        make_progress,
        quick_summary,
        run_suite,
        security_summary,
    )

    params = _params(args)
    assert isinstance(params, SuiteParams)
    progress = SilentProgress() if args.no_progress and args.quick else make_progress(
        not args.no_progress
    )
    t0 = time.monotonic()
    # --security: every round on its own fresh clusters (never the --quick shortcut of one
    # cluster per configuration), so that the rounds are independent.
    doc = run_suite(params, progress, quick=args.quick and not args.security)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.security:
        write_json(doc, args.out / "security.json")
        report = security_markdown(doc)
        (args.out / "security.md").write_text(report)
        sys.stderr.write(f"done in {time.monotonic() - t0:.0f}s: {args.out / 'security.json'}, "
                         f"{args.out / 'security.md'}\n")
        print(json.dumps(security_summary(doc)) if args.quick else report)
        return 0 if not doc["errors"] else 1
    if args.quick:
        write_json(doc, args.out / "quick.json")
        print(json.dumps(quick_summary(doc)))
        return 0 if not doc["errors"] else 1
    write_json(doc, args.out / "results.json")
    (args.out / "results.md").write_text(markdown(doc))
    pngs = [] if args.no_plots else plots(doc, args.out)
    sys.stderr.write(
        f"done in {time.monotonic() - t0:.0f}s: {args.out / 'results.json'}, "
        f"{args.out / 'results.md'}" + "".join(f", {p}" for p in pngs) + "\n"
    )
    print(markdown(doc))
    return 0 if not doc["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
