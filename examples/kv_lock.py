"""Worker processes take turns with a lock and append to one key, each write fenced.

Start a cluster running the coordination service, then the workers against it::

    paxos cluster up --service coord      # writes paxos-data/cluster.toml
    python examples/kv_lock.py --cluster paxos-data/cluster.toml --workers 3 --rounds 5

The script starts ``--workers`` processes (``--worker NAME`` runs one alone: start
several in different terminals). Each round, a worker takes the lock ``demo-lock``
(FIFO), reads the key ``demo/ledger``, appends its name and writes it back with
``fence=lock.fence``, then lets go. The fence is what makes this safe: a worker that
paused while holding the lock, and whose session's lease ran out meanwhile, has its
late write refused (``fence: stale token``) instead of overwriting a newer ledger.
At the end the script reads the ledger: every append is there, none lost.

For nodes run ``--insecure``, give their SPEC as ``--cluster`` and add ``--insecure``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from broadcast.kv import KvClient, Refused

LOCK = "demo-lock"


def worker(args: argparse.Namespace) -> int:
    with KvClient(args.cluster, name=args.worker, insecure=args.insecure) as kv:
        for round_ in range(1, args.rounds + 1):
            with kv.lock(LOCK) as lock:
                found = kv.get(args.key)
                ledger = found[0].split() if found is not None else []
                ledger.append(args.worker.encode())
                try:
                    kv.put(args.key, b" ".join(ledger), fence=lock.fence)
                except Refused as exc:  # the lock moved on while we held it: not written
                    print(f"{args.worker} round {round_}: {exc}", flush=True)
                    continue
                print(f"{args.worker} round {round_}: token {lock.token}, "
                      f"{len(ledger)} entries", flush=True)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="the cluster file (or SPEC)")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--key", default="demo/ledger")
    parser.add_argument("--worker", metavar="NAME", help="run one worker named NAME")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    with KvClient(args.cluster, name="kv-lock-demo", insecure=args.insecure) as kv:
        kv.delete(args.key)  # a fresh ledger
        common = ["--cluster", args.cluster, "--rounds", str(args.rounds), "--key", args.key]
        if args.insecure:
            common.append("--insecure")
        workers = [
            subprocess.Popen([sys.executable, __file__, "--worker", f"w{i}", *common])
            for i in range(1, args.workers + 1)
        ]
        codes = [w.wait() for w in workers]
        found = kv.get(args.key)
    ledger = found[0].decode().split() if found is not None else []
    print("ledger:", " ".join(ledger))
    want = {f"w{i}": args.rounds for i in range(1, args.workers + 1)}
    counts = {name: ledger.count(name) for name in want}
    if any(codes) or counts != want:
        print(f"FAILED: exit codes {codes}, appends per worker {counts}", file=sys.stderr)
        return 1
    print(f"ok: {len(ledger)} appends, none lost")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
