"""Cluster specifications: ``1=127.0.0.1:7101,2=node-b.example:7102`` or a TOML file.

A host is an IP address or a DNS host name (RFC 1123 labels). The TOML form
says the same thing in a table, and may name the cluster::

    cluster_id = "3f9a0c"      # optional, any non-empty string
    [nodes]
    1 = "127.0.0.1:7101"
    2 = "127.0.0.1:7102"
    3 = "127.0.0.1:7103"

The inline form has no place for a cluster id: ``Cluster.spec()`` drops it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

#: The largest payload ``paxos broadcast`` sends unless ``--max-payload-bytes`` says otherwise.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

# One RFC 1123 label: letters, digits and hyphens, 1-63 characters, no hyphen at either end.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


class ConfigError(ValueError):
    """A cluster spec or node configuration is wrong; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """Node ids and the ``host:port`` each node's socket is bound to.

    ``cluster_id`` names the cluster when its TOML file gives one (None otherwise).
    """

    nodes: dict[int, str]
    cluster_id: str | None = None

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.nodes))

    def endpoint(self, node_id: int) -> str:
        """The ZeroMQ endpoint of ``node_id`` (``tcp://host:port``)."""
        return f"tcp://{self.nodes[node_id]}"

    def spec(self) -> str:
        """The one-line form, accepted back by :func:`parse_cluster`.

        It lists the nodes only: the inline form carries no ``cluster_id``.
        """
        return ",".join(f"{i}={self.nodes[i]}" for i in self.ids)


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
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"cluster spec {spec!r} is neither ID=HOST:PORT,... nor a file")
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read cluster file {path}: {exc}") from None
        table = data.get("nodes")
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ConfigError(f"{path}: expected a [nodes] table of id = \"host:port\"")
        cluster_id = data.get("cluster_id")
        if cluster_id is not None and (not isinstance(cluster_id, str) or not cluster_id):
            raise ConfigError(f"{path}: cluster_id must be a non-empty string")
        return _build([(str(k), v) for k, v in table.items()], cluster_id)
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
