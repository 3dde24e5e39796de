"""Cluster specifications: ``1=127.0.0.1:7101,2=node-b.example:7102`` or a TOML file.

A host is an IP address or a DNS host name (RFC 1123 labels). The TOML form
says the same thing in a table, and may name the cluster::

    cluster_id = "3f9a0c"      # optional, any non-empty string
    [nodes]
    1 = "127.0.0.1:7101"
    2 = "127.0.0.1:7102"
    3 = "127.0.0.1:7103"

A secure cluster's file (``paxos cluster up`` writes one) also names each
node's CURVE public key, the clients allowed in, and where the key of the
client reading the file lives (paths are relative to the file)::

    cluster_id = "3f9a0c"
    [nodes.1]
    address = "127.0.0.1:7101"
    key = "<40 characters of Z85>"
    ...
    [client]
    key_file = "keys/admin.key"        # used by paxos broadcast/subscribe/status
    [clients.admin]
    key = "<40 characters of Z85>"
    ids = ["*"]                        # session names it may use: exact, prefix*, or *
    allow = ["broadcast", "subscribe", "status", "admin"]

``genesis = [1, 2, 3]`` names the nodes the cluster started with (``paxos
cluster up`` writes it; without it, every node listed). Members added later
(``paxos member add`` appends them to the file) join through the log, which
holds the membership from then on; the starting list never changes, since every
node interprets the log from it.

The inline form has no place for a cluster id or keys: ``Cluster.spec()`` drops
them (an inline SPEC can only run ``--insecure``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

#: The largest payload ``paxos broadcast`` sends unless ``--max-payload-bytes`` says otherwise.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# One RFC 1123 label: letters, digits and hyphens, 1-63 characters, no hyphen at either end.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class ConfigError(ValueError):
    """A cluster spec or node configuration is wrong; the message is one line for the user."""


#: What a client key may be allowed to do.
BROADCAST = "broadcast"
"""Open sessions and broadcast under the session names of its grant."""
SUBSCRIBE = "subscribe"
"""Read the ordered stream (every client's payloads) and the state snapshots."""
STATUS = "status"
"""Ask a node for its status."""
ADMIN = "admin"
"""Make a node snapshot now (``paxos snapshot``)."""
PERMISSIONS = (BROADCAST, SUBSCRIBE, STATUS, ADMIN)
#: Longest client name in a cluster file.
_MAX_CLIENT_NAME = 64
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class Grant:
    """One authorised client key: its name, its Z85 public key, the session names it
    may use (``ids``: exact names, ``prefix*``, or ``*``) and what it may do."""

    name: str
    key: str
    ids: tuple[str, ...]
    allow: frozenset[str]

    def may(self, permission: str) -> bool:
        return permission in self.allow

    def may_use(self, session_name: str) -> bool:
        """Whether this client may open, write into or ask about sessions named
        ``session_name`` (a session key is ``name#n``: see :func:`session_name`)."""
        for pattern in self.ids:
            if pattern.endswith("*"):
                if session_name.startswith(pattern[:-1]):
                    return True
            elif session_name == pattern:
                return True
        return False


def session_name(key: str) -> str:
    """The name part of a session key ``name#n`` (the key itself if it has no ``#``)."""
    name, sep, _ = key.rpartition("#")
    return name if sep else key


@dataclass(frozen=True, slots=True)
class Cluster:
    """Node ids and the ``host:port`` each node's socket is bound to.

    ``cluster_id`` names the cluster when its TOML file gives one (None otherwise).
    A secure cluster (:attr:`secure`) also has every node's CURVE public key
    (``keys``), the authorised clients (``clients``, by name) and, for the one
    reading the file, ``client_key``: where its own key file is. ``path`` is
    the file it was read from (None for an inline SPEC).
    """

    nodes: dict[int, str]
    cluster_id: str | None = None
    keys: dict[int, str] = field(default_factory=dict)
    clients: dict[str, Grant] = field(default_factory=dict)
    client_key: Path | None = None
    path: Path | None = None
    #: The ids the cluster started with (empty: every node listed).
    genesis: tuple[int, ...] = ()

    @property
    def starting(self) -> dict[int, str]:
        """The nodes the cluster started with, and their addresses."""
        if not self.genesis:
            return self.nodes
        return {i: self.nodes[i] for i in self.genesis}

    @property
    def starting_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.starting))

    @property
    def secure(self) -> bool:
        """Whether the cluster names a CURVE key for every node."""
        return bool(self.keys) and set(self.keys) == set(self.nodes)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.nodes))

    def endpoint(self, node_id: int) -> str:
        """The ZeroMQ endpoint of ``node_id`` (``tcp://host:port``)."""
        return f"tcp://{self.nodes[node_id]}"

    def spec(self) -> str:
        """The one-line form, accepted back by :func:`parse_cluster`.

        It lists the nodes only: the inline form carries no ``cluster_id`` and no keys.
        """
        return ",".join(f"{i}={self.nodes[i]}" for i in self.ids)

    def argument(self) -> str:
        """What to pass as ``--cluster`` to another process: the file if there is one
        (it has the keys), else the inline form."""
        return str(self.path) if self.path is not None else self.spec()


def is_host_name(host: str) -> bool:
    """True if ``host`` is a syntactically valid DNS host name (RFC 1123).

    Dot-separated labels of letters, digits and hyphens (1-63 characters, not
    starting or ending with a hyphen), at most 253 characters in all. The last
    label may not be all digits, so that a mistyped IPv4 address such as
    ``256.1.1.1`` is not taken for a name.
    """
    if not 0 < len(host) <= 253:
        return False
    labels = host.split(".")
    return all(_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _parse_address(node: str, address: str) -> str:
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"node {node}: address {address!r} is not host:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"node {node}: port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ConfigError(f"node {node}: port {port} is out of range 1-65535")
    if not _is_ip(host) and not is_host_name(host):
        raise ConfigError(
            f"node {node}: host {host!r} is not an IP address or a valid host name"
        )
    return f"{host}:{port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def bind_address(address: str) -> str:
    """``host:port`` with a host name resolved to an IPv4 address, for binding.

    ZeroMQ connects to host names but binds only IP addresses (and interface
    names): a node whose own address in the SPEC is a host name binds the
    address that name resolves to here.
    """
    host, _, port = address.rpartition(":")
    if _is_ip(host):
        return address
    try:
        infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot resolve host {host!r} of {address}: {exc}") from None
    return f"{infos[0][4][0]}:{port}"


def _parse_id(text: str) -> int:
    try:
        node_id = int(text)
    except ValueError:
        raise ConfigError(f"node id {text!r} is not a positive integer") from None
    if node_id <= 0:
        raise ConfigError(f"node id {text!r} is not a positive integer")
    return node_id


def _build(pairs: list[tuple[str, str]], cluster_id: str | None = None) -> Cluster:
    if not pairs:
        raise ConfigError("the cluster spec names no nodes")
    nodes: dict[int, str] = {}
    for id_text, address in pairs:
        node_id = _parse_id(id_text.strip())
        if node_id in nodes:
            raise ConfigError(f"node {node_id} appears twice in the cluster spec")
        nodes[node_id] = _parse_address(str(node_id), address)
    if len(set(nodes.values())) != len(nodes):
        raise ConfigError("two nodes share one address in the cluster spec")
    return Cluster(nodes, cluster_id)


def parse_cluster(spec: str) -> Cluster:
    """Parse an inline spec or, if ``spec`` names an existing file, a TOML spec file."""
    text = spec.strip()
    if "=" not in text:
        return _parse_file(Path(text), spec)
    pairs = []
    for item in text.split(","):
        node_id, sep, address = item.partition("=")
        if not sep:
            raise ConfigError(f"cluster spec item {item!r} is not ID=HOST:PORT")
        pairs.append((node_id, address))
    return _build(pairs)


def local_cluster(nodes: int, base_port: int, host: str = "127.0.0.1") -> Cluster:
    """``nodes`` nodes on ``host``, ports ``base_port + 1`` ... (ids 1..nodes)."""
    if nodes < 1:
        raise ConfigError("a cluster needs at least one node")
    if base_port < 0 or base_port + nodes > 65535:
        raise ConfigError(f"ports {base_port + 1}-{base_port + nodes} are out of range")
    return Cluster({i: f"{host}:{base_port + i}" for i in range(1, nodes + 1)})


def _parse_file(path: Path, spec: str) -> Cluster:
    if not path.is_file():
        raise ConfigError(f"cluster spec {spec!r} is neither ID=HOST:PORT,... nor a file")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read cluster file {path}: {exc}") from None
    table = data.get("nodes")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{path}: expected a [nodes] table")
    cluster_id = data.get("cluster_id")
    if cluster_id is not None and (not isinstance(cluster_id, str) or not cluster_id):
        raise ConfigError(f"{path}: cluster_id must be a non-empty string")
    pairs: list[tuple[str, str]] = []
    keys: dict[str, str] = {}
    for node, entry in table.items():
        if isinstance(entry, str):
            pairs.append((str(node), entry))
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise ConfigError(
                f'{path}: node {node} must be "host:port" or a table with address (and key)'
            )
        pairs.append((str(node), entry["address"]))
        if "key" in entry:
            keys[str(node)] = _public_key(entry["key"], f"{path}: node {node}")
    built = _build(pairs, cluster_id)
    node_keys = {_parse_id(k): v for k, v in keys.items()}
    if node_keys and set(node_keys) != set(built.nodes):
        missing = sorted(set(built.nodes) - set(node_keys))
        raise ConfigError(f"{path}: nodes {missing} have no key (every node needs one, or none)")
    if len(set(node_keys.values())) != len(node_keys):
        raise ConfigError(f"{path}: two nodes share one key")
    clients = _parse_clients(data.get("clients", {}), path)
    taken = set(node_keys.values())
    for grant in clients.values():
        if grant.key in taken:
            raise ConfigError(f"{path}: client {grant.name} shares a key with a node or client")
        taken.add(grant.key)
    genesis = data.get("genesis", [])
    if not isinstance(genesis, list) or not all(type(i) is int for i in genesis) or (
        genesis and not set(genesis) <= set(built.nodes)
    ):
        raise ConfigError(f"{path}: genesis must list ids of nodes in [nodes]")
    client_key: Path | None = None
    own = data.get("client", {})
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: [client] must be a table")
    if "key_file" in own:
        if not isinstance(own["key_file"], str) or not own["key_file"]:
            raise ConfigError(f"{path}: [client] key_file must be a path")
        client_key = path.parent / own["key_file"]
    return Cluster(
        built.nodes,
        cluster_id,
        node_keys,
        clients,
        client_key,
        path.resolve(),
        tuple(sorted(genesis)),
    )


def _parse_clients(table: object, path: Path) -> dict[str, Grant]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [clients] must be a table of client tables")
    clients: dict[str, Grant] = {}
    for name, entry in table.items():
        where = f"{path}: client {name!r}"
        if not _CLIENT_NAME.match(name):
            raise ConfigError(f"{where}: names are 1-{_MAX_CLIENT_NAME} of A-Z a-z 0-9 _ . -")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with key, ids and allow")
        key = _public_key(entry.get("key"), where)
        ids = entry.get("ids", [])
        allow = entry.get("allow", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise ConfigError(f"{where}: ids must be a list of session names (or prefix*, *)")
        if not isinstance(allow, list) or not all(a in PERMISSIONS for a in allow):
            raise ConfigError(f"{where}: allow must be a list of {', '.join(PERMISSIONS)}")
        clients[name] = Grant(name, key, tuple(ids), frozenset(allow))
    return clients


def _public_key(text: object, where: str) -> str:
    from broadcast.keys import check_public_key  # keys imports this module

    if not isinstance(text, str):
        raise ConfigError(f"{where}: key must be a string of 40 Z85 characters")
    return check_public_key(text, where)
