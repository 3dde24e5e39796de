"""Where the chaos cluster's packets go, and how the harness cuts them.

Two kinds of network:

:class:`NetnsNetwork` (the default wherever it works: Linux, root, ``ip`` and ``iptables``)
    Each node runs in its own network namespace with one veth interface, all veths joined
    by a bridge that lives in a hub namespace; the clients (the harness process itself)
    sit in one more namespace on the same bridge. Node ``i`` is ``10.77.0.i``, the
    clients are ``10.77.0.200``. A partition is a set of iptables ``DROP`` rules inside
    the nodes' namespaces (INPUT and OUTPUT, by peer address), installed atomically with
    ``iptables-restore``: packets really vanish, established TCP connections included, so
    ZeroMQ sees what it would see on a broken LAN (silence, keepalive timeouts,
    reconnects that hang). Nothing touches the root namespace: these addresses exist only
    inside namespaces this harness created, and the bridge has no way out.

:class:`LoopbackNetwork`
    Every node on 127.0.0.1, no namespaces; partitions are not available (kill, pause and
    power loss still are). For machines where namespaces are not possible.

Namespaces are named ``pxc<harness pid><role>``; :func:`cleanup_stale` removes those
of a harness that is gone (killed before it could clean up).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence

from broadcast.logs import get_logger

log = get_logger("chaos.network")

SUBNET = "10.77.0"
CLIENT_HOST = 200
NODE_PORT = 7000
_PREFIX = "pxc"
_NAME_RE = re.compile(rf"^{_PREFIX}(\d+)[hcn]\d*$")
_CLONE_NEWNET = 0x40000000


class NetworkError(RuntimeError):
    """The harness could not set up, change or remove its network."""


def _run(args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
    try:
        done = subprocess.run(
            list(args), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{' '.join(args)}: {exc}") from None
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return done.stdout


class Network:
    """Base: nodes on loopback, no faults of the network."""

    kind = "loopback"
    supports_partitions = False

    def __init__(self, nodes: Sequence[int]) -> None:
        self.nodes = tuple(nodes)
        self.blocked: set[frozenset[int]] = set()

    def setup(self) -> None:
        """Create whatever the network needs. Idempotent teardown follows in :meth:`teardown`."""

    def address(self, node: int) -> str:
        raise NotImplementedError

    def spawn_prefix(self, node: int) -> list[str]:
        """Command prefix that runs a program in ``node``'s network."""
        return []

    def enter_client_side(self) -> None:
        """Move the calling process to where the clients live (call before any thread starts)."""

    def cut(self, links: set[frozenset[int]]) -> None:
        """Drop every packet on exactly these node-to-node links (both ways); heal the rest."""
        raise NetworkError(f"the {self.kind} network cannot partition")

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Cut every link between nodes of different ``groups`` (and heal all others)."""
        self.cut(links_cut([list(g) for g in groups], self.nodes))

    def heal(self) -> None:
        """Restore every link."""

    def teardown(self) -> None:
        """Remove everything :meth:`setup` made. Safe to call twice, and after a failed setup."""

    def describe(self) -> str:
        return self.kind


class LoopbackNetwork(Network):
    def __init__(self, nodes: Sequence[int], base_port: int) -> None:
        super().__init__(nodes)
        self.base_port = base_port

    def address(self, node: int) -> str:
        return f"127.0.0.1:{self.base_port + node}"


def netns_available() -> str | None:
    """None if this machine can run :class:`NetnsNetwork`, else why not."""
    if not os.path.exists("/proc/self/ns/net"):
        return "no network namespaces (not Linux?)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables-restore"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 iptables)"
    return None


def links_cut(groups: Iterable[Iterable[int]], nodes: Iterable[int]) -> set[frozenset[int]]:
    """The node pairs that ``groups`` separates (nodes in no group are cut from everyone)."""
    side: dict[int, int] = {}
    for number, group in enumerate(groups):
        for node in group:
            side[node] = number
    everyone = sorted(nodes)
    cut: set[frozenset[int]] = set()
    for a in everyone:
        for b in everyone:
            if a < b and (a not in side or b not in side or side[a] != side[b]):
                cut.add(frozenset((a, b)))
    return cut


class NetnsNetwork(Network):
    kind = "netns"
    supports_partitions = True

    def __init__(self, nodes: Sequence[int], tag: int | None = None) -> None:
        super().__init__(nodes)
        if any(not 0 < n < CLIENT_HOST for n in nodes):
            raise NetworkError(f"node ids must be 1..{CLIENT_HOST - 1} on the netns network")
        self.tag = os.getpid() if tag is None else tag
        self.hub = f"{_PREFIX}{self.tag}h"
        self.client_ns = f"{_PREFIX}{self.tag}c"
        self._made: list[str] = []
        self._home: int | None = None  # fd of the namespace this process came from

    def ns(self, node: int) -> str:
        return f"{_PREFIX}{self.tag}n{node}"

    def host(self, node: int) -> str:
        return f"{SUBNET}.{node}"

    def address(self, node: int) -> str:
        return f"{self.host(node)}:{NODE_PORT}"

    def spawn_prefix(self, node: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(node)]

    def describe(self) -> str:
        return (
            f"netns: nodes in namespaces {self.ns(self.nodes[0])}.. on bridge in {self.hub}, "
            f"clients in {self.client_ns}; partitions by iptables DROP"
        )

    def _add_ns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self._made.append(name)
        _run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _attach(self, name: str, host: int) -> None:
        """Give namespace ``name`` an interface on the bridge with address SUBNET.host."""
        outer, inner = f"{_PREFIX}{self.tag}p{host}", f"{_PREFIX}{self.tag}v{host}"
        # Created directly inside the hub, then one end moved: the root namespace never
        # holds either end, even for a moment.
        _run(["ip", "-n", self.hub, "link", "add", outer, "type", "veth", "peer", "name", inner])
        _run(["ip", "-n", self.hub, "link", "set", inner, "netns", name])
        _run(["ip", "-n", self.hub, "link", "set", outer, "master", "br0"])
        _run(["ip", "-n", self.hub, "link", "set", outer, "up"])
        _run(["ip", "-n", name, "addr", "add", f"{SUBNET}.{host}/24", "dev", inner])
        _run(["ip", "-n", name, "link", "set", inner, "up"])

    def setup(self) -> None:
        why = netns_available()
        if why is not None:
            raise NetworkError(why)
        try:
            self._add_ns(self.hub)
            _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
            for node in self.nodes:
                self._add_ns(self.ns(node))
                self._attach(self.ns(node), node)
            self._add_ns(self.client_ns)
            self._attach(self.client_ns, CLIENT_HOST)
            self.heal()
        except BaseException:
            self.teardown()
            raise
        log.info("chaos.network.up", network=self.describe())

    def enter_client_side(self) -> None:
        if self._home is None:
            self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        fd = os.open(f"/run/netns/{self.client_ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd, self.client_ns)
        finally:
            os.close(fd)

    def _go_home(self) -> None:
        if self._home is not None:
            _setns(self._home, "the original namespace")
            os.close(self._home)
            self._home = None

    def _rules(self, node: int, cut: set[frozenset[int]]) -> str:
        lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        for pair in sorted(cut, key=sorted):
            if node in pair:
                (peer,) = pair - {node}
                lines.append(f"-A INPUT -s {self.host(peer)}/32 -j DROP")
                lines.append(f"-A OUTPUT -d {self.host(peer)}/32 -j DROP")
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"

    def cut(self, links: set[frozenset[int]]) -> None:
        # One atomic iptables-restore per namespace, all namespaces at once.
        procs = []
        for node in self.nodes:
            procs.append(
                (
                    node,
                    subprocess.Popen(
                        ["ip", "netns", "exec", self.ns(node), "iptables-restore", "-w", "5"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    ),
                )
            )
        errors = []
        for node, proc in procs:
            try:
                _, err = proc.communicate(self._rules(node, links), timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                err = "timed out"
            if proc.returncode != 0:
                errors.append(f"node {node}: {err.strip()[:200]}")
        if errors:
            raise NetworkError("iptables-restore failed: " + "; ".join(errors))
        self.blocked = links

    def heal(self) -> None:
        self.cut(set())

    def teardown(self) -> None:
        self._go_home()
        for name in reversed(self._made):
            _delete_ns(name)
        self._made = []


def _setns(fd: int, what: str) -> None:
    """Move the calling thread (and the threads it starts later) to network namespace ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        raise NetworkError(f"setns({what}): {os.strerror(ctypes.get_errno())}")


def _ns_pids(name: str) -> list[int]:
    out = _run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def _delete_ns(name: str) -> None:
    """Kill what runs in namespace ``name`` (only our own processes live there); delete it."""
    for pid in _ns_pids(name):
        if pid == os.getpid():
            continue  # this harness, still in its clients' namespace
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        _run(["ip", "netns", "del", name])
    except NetworkError as exc:
        log.warning("chaos.network.cleanup_failed", namespace=name, error=str(exc))


def cleanup_stale() -> list[str]:
    """Delete the namespaces of chaos harnesses that are no longer running; returns their names."""
    if shutil.which("ip") is None or not os.path.isdir("/run/netns"):
        return []
    removed = []
    for name in sorted(os.listdir("/run/netns")):
        match = _NAME_RE.match(name)
        if match is None:
            continue
        if os.path.exists(f"/proc/{match.group(1)}"):
            continue  # its harness still runs
        _delete_ns(name)
        removed.append(name)
    return removed
