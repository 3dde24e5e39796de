"""Watch a prefix in one process while another writes under it.

Start a cluster running the coordination service, then a watcher and a writer, in two
terminals::

    paxos cluster up --service coord      # writes paxos-data/cluster.toml
    python examples/kv_watch.py --cluster paxos-data/cluster.toml watch demo/watch/
    python examples/kv_watch.py --cluster paxos-data/cluster.toml put demo/watch/ 5

or both at once (the script starts the watcher, then the writer, as processes)::

    python examples/kv_watch.py --cluster paxos-data/cluster.toml demo

The watcher prints each change under the prefix, in log order, from the moment it
starts, or ``--since INDEX``: a watch resumes from where it stood without a gap or a
repeat, and says so if the service's bounded change log no longer holds INDEX.

For nodes run ``--insecure``, give their SPEC as ``--cluster`` and add ``--insecure``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from broadcast.kv import KvClient, WatchCompacted


def watch(args: argparse.Namespace) -> int:
    with KvClient(args.cluster, name="kv-watcher", insecure=args.insecure) as kv:
        since = args.since if args.since is not None else kv.applied_index() + 1
        print(f"watching {args.prefix} from {since}", flush=True)
        seen = 0
        try:
            with kv.watch(args.prefix, since=since) as changes:
                for change in changes:
                    value = "" if change.value is None else f" = {change.value.decode()}"
                    print(f"{change.index} {change.kind} {change.key}{value}", flush=True)
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
        except WatchCompacted as exc:
            print(f"error: {exc}; start again with --since {exc.earliest}", file=sys.stderr)
            return 1
    return 0


def put(args: argparse.Namespace) -> int:
    with KvClient(args.cluster, name="kv-writer", insecure=args.insecure) as kv:
        for k in range(args.count):
            kv.put(f"{args.prefix}k{k}", f"v{k}".encode())
        kv.delete(f"{args.prefix}k0")
    print(f"wrote {args.count} keys and deleted one", flush=True)
    return 0


def demo(args: argparse.Namespace) -> int:
    common = ["--cluster", args.cluster] + (["--insecure"] if args.insecure else [])
    watcher = subprocess.Popen(
        [sys.executable, __file__, *common, "watch", args.prefix, "--count", str(args.count + 1)],
        stdout=subprocess.PIPE, text=True,
    )
    assert watcher.stdout is not None
    first = watcher.stdout.readline()  # "watching ... from N": it is ready
    print(first, end="", flush=True)
    writer = subprocess.run([sys.executable, __file__, *common, "put", args.prefix,
                             str(args.count)], timeout=args.timeout)
    if writer.returncode:
        watcher.terminate()
    lines = 0
    for line in watcher.stdout:
        print(line, end="", flush=True)
        lines += 1
    code = watcher.wait(args.timeout)
    if writer.returncode or code or lines != args.count + 1:
        print(f"FAILED: writer {writer.returncode}, watcher {code}, {lines} changes seen",
              file=sys.stderr)
        return 1
    print(f"ok: the watcher saw {lines} changes")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="the cluster file (or SPEC)")
    parser.add_argument("--insecure", action="store_true")
    roles = parser.add_subparsers(dest="role", required=True)
    w = roles.add_parser("watch", help="print the changes under PREFIX")
    w.add_argument("prefix")
    w.add_argument("--since", type=int, default=None, help="from this index (default: now)")
    w.add_argument("--count", type=int, default=None, help="stop after COUNT changes")
    p = roles.add_parser("put", help="write COUNT keys under PREFIX, then delete the first")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    d = roles.add_parser("demo", help="a watcher and a writer, as processes")
    d.add_argument("--prefix", default="demo/watch/")
    d.add_argument("--count", type=int, default=5)
    d.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    return {"watch": watch, "put": put, "demo": demo}[args.role](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
