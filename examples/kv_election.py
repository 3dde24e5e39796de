"""Leader election across processes: candidates campaign, one leads, and when it goes
away the next in line takes over.

Start a cluster running the coordination service, then the candidates::

    paxos cluster up --service coord      # writes paxos-data/cluster.toml
    python examples/kv_election.py --cluster paxos-data/cluster.toml --candidates 3

The script starts ``--candidates`` processes (``--candidate NAME`` runs one alone:
start several in different terminals, and kill the one that leads). Each campaigns
for ``demo-election``; the one elected prints ``NAME leads (term T)`` and writes a
heartbeat to ``demo/leader``, fenced by its term, until it goes away. The script
then removes the leader ``--handovers`` times, alternately with SIGKILL (a crash:
the next candidate is elected once the dead one's lease of ``--ttl-ms`` ran out)
and SIGTERM (it resigns, and the next is elected at once).

For nodes run ``--insecure``, give their SPEC as ``--cluster`` and add ``--insecure``.
"""

from __future__ import annotations

import argparse
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from broadcast.kv import KvClient, Refused

ELECTION = "demo-election"


def candidate(args: argparse.Namespace) -> int:
    stop = threading.Event()
    leading = False

    def on_term(*_: object) -> None:
        stop.set()
        if not leading:
            raise SystemExit(0)  # still campaigning: leave (the session closes on the way)

    signal.signal(signal.SIGTERM, on_term)
    with KvClient(args.cluster, name=args.candidate, ttl_ms=args.ttl_ms,
                  insecure=args.insecure) as kv:
        election = kv.election(ELECTION, args.candidate.encode())
        term = election.campaign()
        leading = True
        print(f"{args.candidate} leads (term {term})", flush=True)
        while not stop.wait(0.2):
            try:
                kv.put("demo/leader", f"{args.candidate} {term}".encode(), fence=election.fence)
            except Refused:  # deposed (our lease ran out while we were away)
                print(f"{args.candidate} was deposed", flush=True)
                return 1
        election.resign()
        print(f"{args.candidate} resigned", flush=True)
    return 0


def _relay(name: str, stream: IO[str], lines: queue.Queue[tuple[str, str]]) -> None:
    for line in stream:
        lines.put((name, line.rstrip("\n")))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="the cluster file (or SPEC)")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--handovers", type=int, default=2)
    parser.add_argument("--ttl-ms", type=int, default=1000, help="each candidate's lease")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this long")
    parser.add_argument("--candidate", metavar="NAME", help="run one candidate named NAME")
    args = parser.parse_args(argv)
    if args.candidate:
        return candidate(args)
    common = ["--cluster", args.cluster, "--ttl-ms", str(args.ttl_ms)]
    if args.insecure:
        common.append("--insecure")
    lines: queue.Queue[tuple[str, str]] = queue.Queue()
    procs: dict[str, subprocess.Popen[str]] = {}
    for i in range(1, args.candidates + 1):
        name = f"c{i}"
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--candidate", name, *common],
            stdout=subprocess.PIPE, text=True,
        )
        assert procs[name].stdout is not None
        threading.Thread(target=_relay, args=(name, procs[name].stdout, lines),
                         daemon=True).start()
    leaders: list[str] = []
    deadline = time.monotonic() + args.timeout
    try:
        while len(leaders) <= args.handovers:
            try:
                name, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                print(f"FAILED: {len(leaders)} leaders within {args.timeout}s", file=sys.stderr)
                return 1
            print(line, flush=True)
            if " leads " not in line:
                continue
            if leaders:
                print(f"handed over: {leaders[-1]} -> {name}", flush=True)
            leaders.append(name)
            if len(leaders) <= args.handovers:
                how = signal.SIGKILL if len(leaders) % 2 else signal.SIGTERM
                print(f"removing {name} ({how.name})", flush=True)
                procs[name].send_signal(how)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            proc.wait(30)
    print(f"ok: {len(leaders)} leaders, {len(leaders) - 1} hand-overs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
