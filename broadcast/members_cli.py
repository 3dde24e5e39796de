"""``paxos member list|add|promote|remove|quorum`` and ``paxos leader transfer``.

The membership lives in the cluster's log (see :mod:`paxos.multi.membership`); these
commands ask the leader for a change and wait until the cluster applied it. ``member
add`` also appends the new node (address and public key) to the cluster file, so that
``paxos node --id ID --join --cluster FILE`` can start it and clients find it. A new
member always gets a new id: a machine whose disk was lost comes back as a new member
(``add``, then ``promote``), and its old id is removed.

Growing a cluster, the way ``make demo`` does it::

    paxos keys gen data/node4/node.key
    paxos member add 4 127.0.0.1:7104 --node-key data/node4/node.key --cluster FILE
    paxos node --id 4 --join --cluster FILE --data-dir data/node4 &   # a learner
    paxos member promote 4 --cluster FILE                   # once it is close behind
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from broadcast.client import Client, ClusterUnavailable
from broadcast.commands import _client, _cluster, client_key_option, cluster_option
from broadcast.errors import Forbidden
from broadcast.keys import load_keypair
from broadcast.logs import configure
from broadcast.protocol import Members
from broadcast.spec import Cluster, ConfigError, parse_cluster
from paxos.multi.membership import Op


@click.group("member")
def member_group() -> None:
    """List or change the cluster's members (stored in the cluster itself)."""


@member_group.command("list")
@cluster_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@client_key_option
def member_list(spec: str | None, as_json: bool, key_file: Path | None, insecure: bool) -> None:
    """The newest membership any node reachable applied: voters, learners, quorums."""
    configure("warning")
    cluster = _cluster(spec)
    with _client(cluster, key_file, insecure) as client:
        members = _members(client)
    voters, learners = set(members.voters), set(members.learners)
    if as_json:
        click.echo(json.dumps({
            "epoch": members.epoch,
            "in_effect": members.governing,
            "leader": members.leader or None,
            "voters": list(members.voters),
            "learners": list(members.learners),
            "phase1_quorum": members.phase1_quorum,
            "phase2_quorum": members.phase2_quorum,
            "members": [{"id": i, "address": a, "key": k} for i, a, k in members.endpoints],
        }))
        return
    pending = "" if members.governing == members.epoch else (
        f" (epoch {members.governing} still governs: the change takes effect shortly)"
    )
    click.echo(
        f"epoch {members.epoch}{pending}; phase-1 quorum {members.phase1_quorum}, "
        f"phase-2 quorum {members.phase2_quorum}"
    )
    click.echo(f"{'id':>3} {'address':<24} {'role':<8}")
    for i, address, _ in members.endpoints:
        role = "voter" if i in voters else "learner" if i in learners else "-"
        lead = " (leader)" if i == members.leader else ""
        click.echo(f"{i:>3} {address:<24} {role:<8}{lead}")


@member_group.command("add")
@click.argument("node_id", type=click.IntRange(1))
@click.argument("address")
@click.option("--node-key", "node_key", type=click.Path(dir_okay=False, path_type=Path),
              help="The new node's key file (paxos keys gen): its public key is added.")
@click.option("--public-key", help="... or its public key (40 characters of Z85).")
@cluster_option
@click.option("--timeout", type=click.FloatRange(1), default=30.0, show_default=True)
@client_key_option
def member_add(
    node_id: int,
    address: str,
    node_key: Path | None,
    public_key: str | None,
    spec: str | None,
    timeout: float,
    key_file: Path | None,
    insecure: bool,
) -> None:
    """Add node NODE_ID, listening on ADDRESS, as a learner (it votes once promoted).

    NODE_ID must be above every id the cluster ever had. The node is appended to the
    cluster file (a file SPEC), so that it can be started with it."""
    configure("warning")
    cluster = _cluster(spec)
    key = ""
    if not insecure:
        if (node_key is None) == (public_key is None):
            raise click.UsageError("give the new node's --node-key FILE or --public-key KEY")
        try:
            key = public_key or load_keypair(node_key).public_text  # type: ignore[arg-type]
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    try:
        parse_cluster(f"{node_id}={address}")  # the address must be host:port
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _change(cluster, key_file, insecure, Op.ADD_LEARNER, node_id, timeout, address, key)
    if cluster.path is not None:
        add_to_file(cluster, node_id, address, key)
    click.echo(
        f"node {node_id} is a learner; start it (paxos node --id {node_id} --join ...), "
        f"then: paxos member promote {node_id}"
    )


@member_group.command("promote")
@click.argument("node_id", type=click.IntRange(1))
@cluster_option
@click.option("--timeout", type=click.FloatRange(1), default=120.0, show_default=True,
              help="Seconds to wait (the learner first catches up).")
@client_key_option
def member_promote(
    node_id: int, spec: str | None, timeout: float, key_file: Path | None, insecure: bool
) -> None:
    """Make learner NODE_ID a voter, once it is close to the chosen prefix."""
    configure("warning")
    _change(_cluster(spec), key_file, insecure, Op.PROMOTE, node_id, timeout)
    click.echo(f"node {node_id} is a voter")


@member_group.command("remove")
@click.argument("node_id", type=click.IntRange(1))
@cluster_option
@click.option("--timeout", type=click.FloatRange(1), default=30.0, show_default=True)
@client_key_option
def member_remove(
    node_id: int, spec: str | None, timeout: float, key_file: Path | None, insecure: bool
) -> None:
    """Remove node NODE_ID (the leader too: it hands over once the change is in effect).
    Stop the node afterwards; its id is never used again."""
    configure("warning")
    _change(_cluster(spec), key_file, insecure, Op.REMOVE, node_id, timeout)
    click.echo(f"node {node_id} is no longer a member; stop it")


@member_group.command("quorum")
@click.argument("size", type=click.IntRange(0))
@cluster_option
@click.option("--timeout", type=click.FloatRange(1), default=30.0, show_default=True)
@client_key_option
def member_quorum(
    size: int, spec: str | None, timeout: float, key_file: Path | None, insecure: bool
) -> None:
    """Set the phase-2 quorum to SIZE voters (0: a majority); phase 1 then needs the
    voters minus SIZE plus one (flexible quorums: the two always meet)."""
    configure("warning")
    _change(_cluster(spec), key_file, insecure, Op.SET_QUORUM, size, timeout)
    click.echo(f"phase-2 quorum {size or 'a majority'}")


@click.group("leader")
def leader_group() -> None:
    """Leadership."""


@leader_group.command("transfer")
@click.option("--to", "target", type=click.IntRange(1), required=True, help="The new leader.")
@cluster_option
@click.option("--timeout", type=click.FloatRange(1), default=10.0, show_default=True)
@client_key_option
def leader_transfer(
    target: int, spec: str | None, timeout: float, key_file: Path | None, insecure: bool
) -> None:
    """Hand leadership over to voter TARGET without waiting for an election timeout."""
    configure("warning")
    cluster = _cluster(spec)
    with _client(cluster, key_file, insecure) as client:
        try:
            client.transfer_leader(target, timeout)
        except (ClusterUnavailable, ValueError, Forbidden) as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"node {target} leads")


def _members(client: Client) -> Members:
    try:
        members = client.members()
    except Forbidden as exc:
        raise click.ClickException(str(exc)) from None
    if members is None:
        raise click.ClickException("no node answered")
    return members


def _change(
    cluster: Cluster,
    key_file: Path | None,
    insecure: bool,
    op: Op,
    node: int,
    timeout: float,
    address: str = "",
    key: str = "",
) -> None:
    with _client(cluster, key_file, insecure) as client:
        try:
            client.change_members(op, node, address, key, timeout)
        except (ClusterUnavailable, ValueError, Forbidden) as exc:
            raise click.ClickException(str(exc)) from None


def add_to_file(cluster: Cluster, node_id: int, address: str, key: str) -> None:
    """Append ``node_id`` to the cluster file (pinning the starting members first, if the
    file does not name them yet: a file without ``genesis`` means every node listed)."""
    path = cluster.path
    assert path is not None
    if node_id in cluster.nodes:
        return
    text = path.read_text()
    if not cluster.genesis:
        text = f"genesis = {json.dumps(list(cluster.ids))}\n" + text
    text += f'\n[nodes.{node_id}]\naddress = "{address}"\n'
    if key:
        text += f'key = "{key}"\n'
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
