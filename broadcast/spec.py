"""Cluster specifications: ``1=127.0.0.1:7101,2=127.0.0.1:7102`` or a TOML file.

The TOML form says the same thing in a table::

    [nodes]
    1 = "127.0.0.1:7101"
    2 = "127.0.0.1:7102"
    3 = "127.0.0.1:7103"
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A cluster spec or node configuration is wrong; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """Node ids and the ``host:port`` each node's socket is bound to."""

    nodes: dict[int, str]

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.nodes))

    def endpoint(self, node_id: int) -> str:
        """The ZeroMQ endpoint of ``node_id`` (``tcp://host:port``)."""
        return f"tcp://{self.nodes[node_id]}"

    def spec(self) -> str:
        """The one-line form, accepted back by :func:`parse_cluster`."""
        return ",".join(f"{i}={self.nodes[i]}" for i in self.ids)


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
    if host != "localhost":
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"node {node}: host {host!r} is not an IP address") from None
    return f"{host}:{port}"


def _parse_id(text: str) -> int:
    try:
        node_id = int(text)
    except ValueError:
        raise ConfigError(f"node id {text!r} is not a positive integer") from None
    if node_id <= 0:
        raise ConfigError(f"node id {text!r} is not a positive integer")
    return node_id


def _build(pairs: list[tuple[str, str]]) -> Cluster:
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
    return Cluster(nodes)


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
        return _build([(str(k), v) for k, v in table.items()])
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
