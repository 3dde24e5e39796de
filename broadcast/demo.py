"""``paxos demo``: a 3-node cluster on this machine, ordered delivery and a failover, narrated.

Separate node processes on 127.0.0.1, a temporary data directory, two
clients broadcasting at once; then the leader is killed with SIGKILL and the
order continues under a new leader; then the killed node restarts from its
data directory and catches up. Then the membership changes while it runs: a
fourth node joins as a learner, catches up and is promoted to voter, and the
leader is removed (it hands leadership over first). Every step is checked, and
the demo exits non-zero if any check fails.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import click

from broadcast.client import Client, Committed
from broadcast.keys import ensure_keypair
from broadcast.local import cluster_file, free_base_port, spawn_node
from broadcast.logs import configure
from broadcast.members_cli import add_to_file
from broadcast.spec import Cluster, local_cluster, parse_cluster
from paxos.multi.membership import Op
from paxos.types import Delivery


class DemoFailed(click.ClickException):
    pass


def _say(text: str) -> None:
    click.echo(click.style("==> ", fg="cyan", bold=True) + text)


def _wait_leader(client: Client, cluster: Cluster, deadline_s: float, exclude: int = 0) -> int:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        leader = client.leader(timeout=0.3)
        if leader is not None and leader != exclude:
            return leader
    raise DemoFailed(f"no leader elected within {deadline_s:.0f}s")


def _read_order(cluster: Cluster, node: int, count: int) -> list[Delivery]:
    with Client(cluster) as client:
        out = []
        for delivery in client.subscribe(1, node=node, idle_timeout=10):
            out.append(delivery)
            if len(out) >= count:
                break
        return out


def _broadcast_concurrently(cluster: Cluster, names: list[str], first: int, n: int) -> None:
    errors: list[BaseException] = []

    def send(name: str) -> None:
        try:
            with Client(cluster, client_id=name) as client:
                client.broadcast_many(
                    (f"{name}: message {i}".encode() for i in range(first, first + n)),
                    on_commit=lambda c: None,
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise DemoFailed(f"a client failed: {errors[0]}")


def _show_orders(orders: dict[int, list[Delivery]], start: int = 1) -> None:
    nodes = sorted(orders)
    click.echo("    index  " + "  ".join(f"node {n:<22}" for n in nodes))
    length = max(len(o) for o in orders.values())
    for i in range(start - 1, length):
        cells = []
        for n in nodes:
            o = orders[n]
            cells.append(f"{o[i].command.payload.decode()[:27]:<27}" if i < len(o) else " " * 27)
        click.echo(f"    {i + 1:>5}  " + "  ".join(cells))


def run_demo(per_client: int = 5) -> None:
    configure("warning")
    base = free_base_port(4)
    total = 2 * per_client
    with tempfile.TemporaryDirectory(prefix="paxos-demo-") as tmp:
        data = Path(tmp)
        # A key for every node and one for the clients: every connection is CURVE.
        cluster = cluster_file(data, local_cluster(3, base))
        logs = {i: data / f"node{i}.log" for i in cluster.ids}
        _say(f"starting 3 nodes: {cluster.spec()}  (data and logs in {tmp})")
        _say(f"every connection is CURVE-encrypted and authenticated: see {cluster.path}")
        procs: dict[int, subprocess.Popen[bytes]] = {
            i: spawn_node(i, cluster, data, log_file=logs[i]) for i in cluster.ids
        }
        try:
            with Client(cluster) as admin:
                leader = _wait_leader(admin, cluster, 20)
                _say(f"node {leader} was elected leader")

                _say(f"alice and bob broadcast {per_client} messages each, at the same time")
                _broadcast_concurrently(cluster, ["alice", "bob"], 1, per_client)
                orders = {n: _read_order(cluster, n, total) for n in cluster.ids}
                _show_orders(orders)
                reference = [d.command for d in orders[cluster.ids[0]]]
                if any([d.command for d in o] != reference for o in orders.values()):
                    raise DemoFailed("the nodes delivered different orders")
                _say("every node delivered the same order, each sender's messages in its order")

                _say(f"killing the leader, node {leader}, with SIGKILL")
                killed_at = time.monotonic()
                procs[leader].send_signal(signal.SIGKILL)
                procs[leader].wait()
                with Client(cluster, client_id="carol") as carol:
                    first: Committed = carol.broadcast(b"carol: first message after the kill")
                failover = time.monotonic() - killed_at
                new_leader = _wait_leader(admin, cluster, 20, exclude=leader)
                _say(
                    f"node {new_leader} took over; first commit {failover * 1000:.0f} ms after "
                    f"the kill, at index {first.index}"
                )

                _say("alice and bob go on broadcasting")
                _broadcast_concurrently(cluster, ["alice", "bob"], per_client + 1, per_client)
                survivors = [n for n in cluster.ids if n != leader]
                expected = 2 * total + 1
                orders = {n: _read_order(cluster, n, expected) for n in survivors}
                _show_orders(orders, start=total + 1)
                ref = [d.command for d in orders[survivors[0]]]
                if any([d.command for d in o] != ref for o in orders.values()):
                    raise DemoFailed("the surviving nodes delivered different orders")
                if ref[:total] != reference:
                    raise DemoFailed("the order before the failover changed")
                _say("the order continued; nothing acknowledged was lost or repeated")

                _say(f"restarting node {leader} from its data directory")
                procs[leader] = spawn_node(leader, cluster, data, log_file=logs[leader])
                caught_up = _read_order(cluster, leader, expected)
                if [d.command for d in caught_up] != ref:
                    raise DemoFailed(f"node {leader} did not catch up to the same order")
                _say(f"node {leader} caught up: all {expected} deliveries, in the same order")

                # Membership changes online: a new machine joins, the leader leaves.
                address = f"127.0.0.1:{base + 4}"
                key = ensure_keypair(data / "node4" / "node.key").public_text
                _say(f"adding node 4 ({address}) as a learner: paxos member add 4 {address}")
                admin.change_members(Op.ADD_LEARNER, 4, address, key, timeout=30)
                assert cluster.path is not None
                add_to_file(cluster, 4, address, key)
                cluster = parse_cluster(str(cluster.path))
                procs[4] = spawn_node(4, cluster, data, log_file=data / "node4.log")
                admin.refresh_members()
                admin.change_members(Op.PROMOTE, 4, timeout=60)
                joined = _read_order(cluster, 4, expected)
                if [d.command for d in joined] != ref:
                    raise DemoFailed("node 4 did not learn the same order")
                _say(f"node 4 caught up ({expected} deliveries, the same order) and now votes")

                leader = _wait_leader(admin, cluster, 20)
                _say(f"removing the leader, node {leader}: it hands leadership over first")
                removed_at = time.monotonic()
                admin.change_members(Op.REMOVE, leader, timeout=30)
                members = admin.members()
                if members is None or leader in members.voters:
                    raise DemoFailed(f"node {leader} is still a member")
                with Client(cluster, client_id="dave") as dave:
                    last = dave.broadcast(b"dave: after the leader left")
                took = time.monotonic() - removed_at
                procs[leader].send_signal(signal.SIGTERM)
                procs[leader].wait(10)
                _say(
                    f"voters now {list(members.voters)}; node {members.leader} leads; a "
                    f"broadcast committed at index {last.index}, {took * 1000:.0f} ms after the "
                    "removal was asked for"
                )
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    _say("demo finished: cluster stopped, temporary directory removed")


@click.command("demo")
@click.option("--messages", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Messages per client per round.")
def demo_command(messages: int) -> None:
    """Start a local 3-node cluster, show ordered delivery and a leader failover, clean up."""
    run_demo(messages)
