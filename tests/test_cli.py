"""The CLI as operators use it: real processes, JSON lines, one-line errors.

Clusters run with CURVE on (the default): commands get their cluster file (``--cluster
<tmp>/cluster.toml``, which names the admin client's key). Commands that never reach a
node (user errors) keep inline SPECs and say ``--insecure``."""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import ProcessCluster, wait_for

from broadcast import Client, payloads
from broadcast.errors import Compacted
from broadcast.local import free_base_port
from broadcast.spec import Cluster, ConfigError, bind_address, local_cluster, parse_cluster

pytestmark = pytest.mark.integration


def paxos(
    *args: str,
    stdin: str | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "PAXOS_CLUSTER"}
    return subprocess.run(
        [sys.executable, "-m", "broadcast", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **(env or {})},
    )


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The failed command's single ``Error:`` line (JSON log lines aside)."""
    assert out.returncode != 0, out.stdout
    errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and errors[0].startswith("Error:"), out.stderr
    return errors[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    procs = ProcessCluster(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def test_broadcast_subscribe_and_status(cluster: ProcessCluster) -> None:
    spec = cluster.cluster.argument()
    cluster.leader()
    out = paxos("broadcast", "--cluster", spec, "--client-id", "ops", "hello", "wörld")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    # The client id names the run's session; the cluster makes its key unique.
    key = lines[0]["client"]
    assert key.startswith("ops#")
    assert lines == [
        {"index": 1, "client": key, "seq": 1},
        {"index": 2, "client": key, "seq": 2},
    ]
    out = paxos("broadcast", "--cluster", spec, "--client-id", "ops", "-", stdin="a\nb\n")
    again = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["index"], r["seq"]) for r in again] == [(3, 1), (4, 2)]
    assert again[0]["client"] not in (key,) and again[0]["client"].startswith("ops#")
    out = paxos("broadcast", "--cluster", spec, "--count", "50", "--size", "10")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 50

    out = paxos("subscribe", "--cluster", spec, "--from", "2", "--count", "3", "--node", "2")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert rows[0] == {"index": 2, "client": key, "seq": 2, "payload": "wörld"}
    assert [r["index"] for r in rows] == [2, 3, 4]

    out = paxos("status", "--cluster", spec, "--json")
    assert out.returncode == 0
    status = [json.loads(line) for line in out.stdout.splitlines()]
    assert [s["id"] for s in status] == [1, 2, 3]
    assert all(s["reachable"] for s in status)
    assert sum(s["role"] == "leader" for s in status) == 1
    assert len({s["leader"] for s in status}) == 1

    # --watch: a table per refresh, with each node's deliveries per second from the second on.
    out = paxos("status", "--cluster", spec, "--watch", "--count", "3", "--interval", "0.2")
    assert out.returncode == 0, out.stderr
    tables = out.stdout.split("Ctrl-C stops")
    assert len(tables) == 4, out.stdout
    assert "per s" not in tables[1] and "per s" in tables[2] and "per s" in tables[3]
    assert all("leader" in table for table in tables[1:]), out.stdout


def test_binary_payloads_are_base64(cluster: ProcessCluster) -> None:
    from broadcast import Client

    spec = cluster.cluster.argument()
    with Client(spec) as client:
        client.broadcast(b"\xff\xfe")
    out = paxos("subscribe", "--cluster", spec, "--count", "1")
    assert json.loads(out.stdout)["payload_b64"] == "//4="


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("node", "--id", "9", "--cluster", "1=127.0.0.1:7401", "--data-dir", "{tmp}"),
            "not in the cluster",
        ),
        (("node", "--id", "1", "--cluster", "nonsense", "--data-dir", "{tmp}"), "--cluster"),
        (
            ("node", "--id", "1", "--cluster", "1=127.0.0.1:99999", "--data-dir", "{tmp}"),
            "out of range",
        ),
        (
            ("broadcast", "--cluster", "1=127.0.0.1:7402", "--timeout", "1", "--insecure", "x"),
            "no node opened a session",
        ),
        (
            ("subscribe", "--cluster", "1=127.0.0.1:7403", "--timeout", "1", "--insecure"),
            "no node answered",
        ),
        (
            ("status", "--cluster", "1=127.0.0.1:7404", "--timeout", "0.2", "--insecure"),
            "reachable",
        ),
        # Without --insecure, an inline SPEC (no keys) is refused before anything is sent.
        (("broadcast", "--cluster", "1=127.0.0.1:7402", "x"), "names no CURVE keys"),
        (("status", "--cluster", "1=127.0.0.1:7404"), "names no CURVE keys"),
        (
            ("node", "--id", "1", "--cluster", "1=127.0.0.1:7406", "--data-dir", "{tmp}"),
            "names no CURVE keys",
        ),
        (("broadcast", "--cluster", "1=127.0.0.1:7405"), "MESSAGE"),
        (("sim", "--nodes", "99"), "--nodes"),
        (
            ("node", "--id", "1", "--cluster", "1=127.0.0.1:7406", "--data-dir", "{tmp}",
             "--retain", "1.5GB"),
            "--retain",
        ),
        (
            ("node", "--id", "1", "--cluster", "1=127.0.0.1:7406", "--data-dir", "{tmp}",
             "--retain", "-5"),
            "neither an entry count",
        ),
        (("cluster", "up", "--retain", "10 MiB"), "--retain"),
        (
            ("node", "--id", "1", "--cluster", "1=bad_host:7401", "--data-dir", "{tmp}"),
            "not an IP address or a valid host name",
        ),
    ],
)
def test_user_errors_are_one_line_and_non_zero(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = paxos(*(a.replace("{tmp}", str(tmp_path)) for a in args), timeout=60)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and errors[0].startswith("Error:") and message in errors[0], out.stderr


def test_port_in_use_and_corrupted_data_dir(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = paxos(
            "node", "--id", "1", "--cluster", f"1=127.0.0.1:{port}", "--data-dir", str(tmp_path),
            "--insecure",
        )
    assert out.returncode != 0 and "address already in use" in out.stderr.splitlines()[-1]
    wal = tmp_path / "bad" / "wal"
    wal.mkdir(parents=True)
    (wal / "wal-00000001.log").write_bytes(b"not a log at all")
    out = paxos(
        "node", "--id", "1", "--cluster", "1=127.0.0.1:7406", "--data-dir", str(tmp_path / "bad"),
        "--insecure",
    )
    assert out.returncode != 0
    assert "wal-00000001.log" in out.stderr.splitlines()[-1]


# ---------------------------------------------------------------------- SPEC parsing


@pytest.mark.parametrize(
    "host",
    ["node-a.example", "localhost", "NODE1", "a.1b", "xn--bcher-kva.example", "10.0.0.1", "[::1]"],
)
def test_spec_hosts_may_be_ip_addresses_or_host_names(host: str) -> None:
    cluster = parse_cluster(f"1={host}:7101,2=127.0.0.1:7102")
    assert cluster.nodes[1] == f"{host}:7101"
    assert parse_cluster(cluster.spec()) == cluster


@pytest.mark.parametrize(
    "host",
    ["bad_host", "-a.example", "a-.example", "a..b", "a" * 64, "256.1.1.1", "1.2.3", "ho st", "*"],
)
def test_spec_rejects_garbage_hosts(host: str) -> None:
    with pytest.raises(ConfigError, match="not an IP address or a valid host name"):
        parse_cluster(f"1={host}:7101")


def test_a_node_binds_the_address_its_host_name_resolves_to() -> None:
    assert bind_address("localhost:7101") == "127.0.0.1:7101"
    assert bind_address("10.1.2.3:7101") == "10.1.2.3:7101"
    with pytest.raises(ConfigError, match="cannot resolve"):
        bind_address("no-such-host.invalid:7101")


def test_toml_spec_may_carry_a_cluster_id_the_inline_form_cannot(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text('cluster_id = "3f9a0c"\n[nodes]\n1 = "localhost:7101"\n2 = "node-b:7102"\n')
    cluster = parse_cluster(str(path))
    assert cluster == Cluster(
        {1: "localhost:7101", 2: "node-b:7102"}, "3f9a0c", path=path.resolve()
    )
    assert not cluster.secure and cluster.argument() == str(path.resolve())
    assert parse_cluster(cluster.spec()).cluster_id is None
    path.write_text('[nodes]\n1 = "127.0.0.1:7101"\n')
    assert parse_cluster(str(path)).cluster_id is None
    for bad in ("cluster_id = 7", 'cluster_id = ""'):
        path.write_text(f'{bad}\n[nodes]\n1 = "127.0.0.1:7101"\n')
        with pytest.raises(ConfigError, match="cluster_id must be a non-empty string"):
            parse_cluster(str(path))


def test_a_cluster_on_localhost_host_names(tmp_path: Path) -> None:
    procs = ProcessCluster(tmp_path, host="localhost")
    try:
        assert procs.cluster.spec().startswith("1=localhost:")
        spec = procs.cluster.argument()
        procs.leader()
        out = paxos("broadcast", "--cluster", spec, "hello")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["index"] == 1
        out = paxos("status", "--cluster", spec, "--json")
        assert all(json.loads(line)["reachable"] for line in out.stdout.splitlines())
    finally:
        procs.stop()


# ---------------------------------------------------------------------- --version, PAXOS_CLUSTER


def test_version() -> None:
    out = paxos("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"paxos {importlib.metadata.version('paxos-broadcast')}\n"


def test_paxos_cluster_is_the_default_spec_and_cluster_wins(tmp_path: Path) -> None:
    env = {"PAXOS_CLUSTER": "1=127.0.0.1:7407"}
    # An unreachable cluster names the spec it tried: the environment's.
    error = one_error_line(paxos("status", "--timeout", "0.1", "--insecure", env=env))
    assert "1=127.0.0.1:7407" in error
    error = one_error_line(
        paxos("status", "--cluster", "1=127.0.0.1:7408", "--timeout", "0.1", "--insecure",
              env=env)
    )
    assert "1=127.0.0.1:7408" in error
    # A bad environment value is a one-line error too; an explicit --cluster does not read it.
    error = one_error_line(paxos("status", env={"PAXOS_CLUSTER": "nonsense"}))
    assert "--cluster (from PAXOS_CLUSTER)" in error and "nonsense" in error
    assert "PAXOS_CLUSTER" in one_error_line(paxos("status"))
    assert "PAXOS_CLUSTER" in one_error_line(paxos("broadcast", "x"))


@pytest.mark.parametrize("command", ["node", "broadcast", "subscribe", "status"])
def test_help_mentions_paxos_cluster(command: str) -> None:
    out = paxos(command, "--help")
    assert out.returncode == 0 and "PAXOS_CLUSTER" in out.stdout


def test_paxos_cluster_reaches_a_running_cluster(cluster: ProcessCluster) -> None:
    env = {"PAXOS_CLUSTER": cluster.cluster.argument()}
    cluster.leader()
    out = paxos("broadcast", "hello", env=env)
    assert out.returncode == 0, out.stderr
    out = paxos("subscribe", "--count", "1", env=env)
    assert json.loads(out.stdout)["payload"] == "hello"


# ---------------------------------------------------------------------- binary payloads


class CountingStdin(io.BytesIO):
    """A stdin that remembers the largest line read it was asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_request = 0

    def readline(self, size: int | None = -1, /) -> bytes:
        assert size is not None and size > 0, "an unbounded readline"
        self.largest_request = max(self.largest_request, size)
        return super().readline(size)


def test_stdin_lines_are_payloads_read_with_a_bound() -> None:
    stdin = CountingStdin(b"a\nbb\r\n\nlast")
    assert list(payloads.stdin_payloads(stdin, b64=False, limit=4)) == [b"a", b"bb", b"", b"last"]
    assert stdin.largest_request == 4 + 2


def test_a_stdin_line_longer_than_the_limit_stops_without_reading_it_whole() -> None:
    stdin = CountingStdin(b"1234\n12345\n" + b"x" * 1_000_000 + b"\nnever\n")
    source = payloads.stdin_payloads(stdin, b64=False, limit=4)
    assert next(source) == b"1234"
    with pytest.raises(payloads.PayloadError, match="stdin line 2 is larger than the payload"):
        next(source)
    stdin = CountingStdin(b"x" * 1_000_000 + b"\n")
    with pytest.raises(payloads.PayloadError, match="stdin line 1"):
        list(payloads.stdin_payloads(stdin, b64=False, limit=10))
    assert stdin.tell() <= 12  # 10 bytes and a line end at most


def test_b64_stdin_lines_and_arguments_are_decoded() -> None:
    stdin = CountingStdin(b"//4=\nAAEC\n")
    assert list(payloads.stdin_payloads(stdin, b64=True, limit=3)) == [b"\xff\xfe", b"\0\1\2"]
    assert stdin.largest_request == 4 + 2
    with pytest.raises(payloads.PayloadError, match="stdin line 2 is not valid base64"):
        list(payloads.stdin_payloads(io.BytesIO(b"AAEC\n!!!!\n"), b64=True, limit=3))
    with pytest.raises(payloads.PayloadError, match="stdin line 1 is larger"):
        list(payloads.stdin_payloads(io.BytesIO(b"AAECAw==\n"), b64=True, limit=3))
    assert payloads.argument_payload("//4=", 1, b64=True, limit=10) == b"\xff\xfe"
    with pytest.raises(payloads.PayloadError, match="MESSAGE 2 is not valid base64"):
        payloads.argument_payload("a*", 2, b64=True, limit=10)


def test_arguments_keep_their_bytes_and_are_bounded() -> None:
    # argv bytes that are not UTF-8 arrive as surrogate escapes: broadcast the original bytes.
    assert payloads.argument_payload(os.fsdecode(b"\xff"), 1, b64=False, limit=1) == b"\xff"
    assert payloads.argument_payload("wörld", 1, b64=False, limit=6) == "wörld".encode()
    with pytest.raises(payloads.PayloadError, match=r"MESSAGE 3 \(7 bytes\) is larger"):
        payloads.argument_payload("abcdefg", 3, b64=False, limit=6)
    stdin = io.BytesIO(b"s1\ns2\n")
    got = list(payloads.payloads(["a", "-", "b"], stdin, b64=False, limit=10))
    assert got == [b"a", b"s1", b"s2", b"b"]
    with pytest.raises(payloads.PayloadError, match="MESSAGE 2"):
        payloads.payloads(["a", "x" * 11], io.BytesIO(), b64=False, limit=10)  # checked upfront


def test_files_are_one_payload_each_and_their_sizes_are_checked_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"\x00\x01")
    big.write_bytes(b"x" * 11)
    assert list(payloads.files([small, small], 10)) == [b"\x00\x01", b"\x00\x01"]
    opened: list[Path] = []
    real_open = Path.open

    def recording_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", recording_open)
    with pytest.raises(payloads.PayloadError, match=r"--file .*big \(11 bytes\) is larger"):
        payloads.files([small, big], 10)
    assert opened == []


def test_generated_messages_are_bounded_too() -> None:
    assert [len(p) for p in payloads.generated(3, 10, 10)] == [10, 10, 10]
    with pytest.raises(payloads.PayloadError, match="--size 11"):
        payloads.generated(3, 11, 10)


def test_broadcast_files_and_base64(cluster: ProcessCluster, tmp_path: Path) -> None:
    spec = cluster.cluster.argument()
    cluster.leader()
    blob = bytes(range(256)) * 3
    (tmp_path / "blob").write_bytes(blob)
    (tmp_path / "empty").write_bytes(b"")
    out = paxos("broadcast", "--cluster", spec, "--client-id", "bin",
                "--file", str(tmp_path / "blob"), "--file", str(tmp_path / "empty"))
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["seq"] for line in out.stdout.splitlines()] == [1, 2]
    out = paxos("broadcast", "--cluster", spec, "--client-id", "bin", "--b64", "//4=", "-",
                stdin=base64.b64encode(b"\x00line\xff").decode() + "\n")
    assert out.returncode == 0, out.stderr
    out = paxos("subscribe", "--cluster", spec, "--count", "4")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [base64.b64decode(r["payload_b64"]) if "payload_b64" in r else r["payload"].encode()
            for r in rows] == [blob, b"", b"\xff\xfe", b"\x00line\xff"]


def test_a_bad_stdin_line_ends_the_run_after_the_lines_before_it(
    cluster: ProcessCluster,
) -> None:
    spec = cluster.cluster.argument()
    cluster.leader()
    out = paxos("broadcast", "--cluster", spec, "--max-payload-bytes", "5", "-",
                stdin="one\ntwo\n" + "x" * 100_000 + "\nnever\n")
    assert [json.loads(line)["index"] for line in out.stdout.splitlines()] == [1, 2]
    error = one_error_line(out)
    assert "stdin line 3 is larger than the payload limit of 5 bytes" in error
    assert "2 payloads before it committed" in error
    error = one_error_line(paxos("broadcast", "--cluster", spec, "--b64", "-", stdin="%%%\n"))
    assert "stdin line 1 is not valid base64" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--b64", "a*"), "MESSAGE 1 is not valid base64"),
        (("--max-payload-bytes", "3", "abcd"), "larger than the payload limit of 3 bytes"),
        (("--count", "2", "--size", "2097152", "--max-payload-bytes", "1048576"),
         "--size 2097152"),
        (("--file", "/nonexistent/file"), "does not exist"),
        (("--file", "{big}", "--max-payload-bytes", "10"), "(11 bytes) is larger"),
        (("--file", "{big}", "x"), "no MESSAGE arguments"),
        (("--b64", "--count", "2"), "--b64"),
    ],
)
def test_bad_payload_arguments_are_one_line_errors(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 11)
    out = paxos("broadcast", "--cluster", "1=127.0.0.1:7410", "--timeout", "1",
                *(a.replace("{big}", str(big)) for a in args))
    assert message in one_error_line(out)


# ---------------------------------------------------------------------- paxos cluster up


class Supervisor:
    """``paxos cluster up`` as a child process, its stderr lines collected by a thread."""

    def __init__(self, tmp: Path, nodes: int = 3, base: int | None = None) -> None:
        self.base = base if base is not None else free_base_port(nodes)
        environ = {k: v for k, v in os.environ.items() if k != "PAXOS_CLUSTER"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "broadcast", "cluster", "up", "--nodes", str(nodes),
             "--base-port", str(self.base), "--data-dir", str(tmp / "data"), "--no-fsync"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environ,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.spec = self.proc.stdout.readline().strip()
        self.lines: list[str] = []
        stderr = self.proc.stderr
        self._reader = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self._reader.start()

    def messages(self) -> list[str]:
        """stderr lines other than the nodes' JSON log lines."""
        return [line.rstrip("\n") for line in list(self.lines) if not line.startswith("{")]

    def node_pids(self) -> dict[int, int]:
        """node id -> pid of the ``paxos node`` children (read from /proc)."""
        pids: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError, ValueError):
                continue  # the process is gone
            if ppid == self.proc.pid and b"--id" in argv:
                pids[int(argv[argv.index(b"--id") + 1])] = int(stat.parent.name)
        return pids

    def wait_nodes(self, count: int) -> dict[int, int]:
        def probe() -> dict[int, int] | None:
            pids = self.node_pids()
            return pids if len(pids) == count else None

        return wait_for(f"{count} node processes", probe)

    def wait_message(self, text: str) -> str:
        return wait_for(
            repr(text), lambda: next((m for m in self.messages() if text in m), None)
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self._reader.join(30)


def test_cluster_up_prints_the_spec_and_a_hint_and_stops_on_sigterm(tmp_path: Path) -> None:
    up = Supervisor(tmp_path)
    try:
        # It prints its cluster file (keys and all), whose nodes are the local ones.
        assert up.spec == str((tmp_path / "data" / "cluster.toml").resolve())
        assert parse_cluster(up.spec).spec() == local_cluster(3, up.base).spec()
        up.wait_message(f"export PAXOS_CLUSTER={up.spec}")
        pids = up.wait_nodes(3)
    finally:
        up.close()
    assert up.proc.returncode == 0, up.messages()
    wait_for("the nodes gone", lambda: not any(Path(f"/proc/{p}").exists() for p in pids.values()))


def test_cluster_up_keeps_the_other_nodes_running_when_one_dies(tmp_path: Path) -> None:
    up = Supervisor(tmp_path)
    try:
        pids = up.wait_nodes(3)
        os.kill(pids[2], signal.SIGKILL)
        up.wait_message(f"node 2 exited with code {-signal.SIGKILL}; the other nodes keep running")
        # Nodes 1 and 3 are a majority: the cluster still commits.
        out = paxos("broadcast", "--cluster", up.spec, "still", "serving")
        assert out.returncode == 0, out.stderr
        assert up.proc.poll() is None
        os.kill(pids[1], signal.SIGKILL)
        up.wait_message("node 1 exited with code")
        os.kill(pids[3], signal.SIGKILL)
        up.proc.wait(60)
    finally:
        up.close()
    assert up.proc.returncode != 0
    errors = [m for m in up.messages() if m.startswith("Error:")]
    assert len(errors) == 1 and "every node has exited" in errors[0], up.messages()
    assert not any("node 3 exited" in m for m in up.messages())


def test_cluster_up_writes_a_cluster_file_that_clients_and_its_next_run_use(
    tmp_path: Path,
) -> None:
    """The TOML spec path end to end: ``cluster up`` records its nodes and a fresh cluster id
    in DATA/cluster.toml; clients given that file reach the cluster and are checked against
    its id; a second run on the same data directory is the same cluster, its order kept;
    a run with other nodes on that directory is refused."""
    up = Supervisor(tmp_path)
    toml = tmp_path / "data" / "cluster.toml"
    try:
        up.wait_nodes(3)
        recorded = parse_cluster(str(toml))
        assert up.spec == str(toml.resolve())
        assert recorded.spec() == local_cluster(3, up.base).spec() and recorded.cluster_id
        assert recorded.secure and recorded.client_key == toml.parent / "keys" / "admin.key"
        out = paxos("broadcast", "--cluster", str(toml), "kept")
        assert out.returncode == 0, out.stderr
        # Same nodes and keys, another cluster's id: the nodes refuse this client. (Next
        # to the real file: its client key_file is relative to the file.)
        other = toml.with_name("other.toml")
        other.write_text(toml.read_text().replace(recorded.cluster_id, "another-cluster"))
        error = one_error_line(paxos("broadcast", "--cluster", str(other), "--timeout", "10", "x"))
        assert "does not belong to cluster another-cluster" in error, error
    finally:
        up.close()
    assert up.proc.returncode == 0, up.messages()

    again = Supervisor(tmp_path, base=up.base)
    try:
        assert again.spec == up.spec
        again.wait_nodes(3)
        out = paxos("subscribe", "--cluster", str(toml), "--count", "1")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["payload"] == "kept"
    finally:
        again.close()
    assert parse_cluster(str(toml)) == recorded

    error = one_error_line(
        paxos("cluster", "up", "--nodes", "5", "--base-port", str(up.base),
              "--data-dir", str(tmp_path / "data"), timeout=60)
    )
    assert "holds the cluster" in error, error


def test_demo_runs_and_checks_every_step() -> None:
    out = paxos("demo", "--messages", "2", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for step in ("was elected leader", "every node delivered the same order", "took over",
                 "the order continued", "caught up", "node 4 caught up", "hands leadership over",
                 "voters now", "demo finished"):
        assert step in out.stdout, (step, out.stdout)


def test_snapshot_command_compacts_and_status_shows_it(tmp_path: Path) -> None:
    procs = ProcessCluster(tmp_path, extra=("--snapshot-entries", "1000000"))
    try:
        spec = procs.cluster.argument()
        procs.leader()
        out = paxos("broadcast", "--cluster", spec, "--count", "40", "--size", "10")
        assert out.returncode == 0, out.stderr
        out = paxos("snapshot", "--cluster", spec, "--node", "2")
        assert out.returncode == 0, out.stderr
        index = int(re.search(r"snapshot at index (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
        assert index >= 40, out.stdout
        status = paxos("status", "--cluster", spec, "--json").stdout.splitlines()
        rows = {row["id"]: row for row in map(json.loads, status)}
        assert rows[2]["snapshot_index"] == index and rows[2]["snapshot_slot"] > 0
        # (the floor stays compact_keep_slots below the snapshot: 0 this early)
        assert rows[2]["floor"] == max(0, rows[2]["snapshot_slot"] - 256)
        assert rows[2]["log_bytes"] > 0
        assert rows[1]["snapshot_index"] == 0  # only the node asked
        out = paxos("snapshot", "--cluster", spec, "--node", "9")
        assert "node 9 is not in the cluster" in one_error_line(out)
    finally:
        procs.stop()


def test_subscribe_below_the_retention_is_a_one_line_error_naming_the_earliest(
    tmp_path: Path,
) -> None:
    """Nodes with a tiny retention delete old entries: ``subscribe --from 1`` says where
    the history now starts, and ``--from`` that index works."""
    procs = ProcessCluster(
        tmp_path, extra=("--retain", "30", "--history-segment-bytes", "1024")
    )
    try:
        cluster = procs.cluster
        procs.leader()
        with Client(cluster) as writer:
            for k in range(40):  # many turns, so many segments
                writer.broadcast_many([b"payload %d-%d" % (k, j) for j in range(5)])

        def earliest(node: int) -> int | None:
            with Client(cluster) as reader:
                try:
                    next(reader.subscribe(1, node=node, idle_timeout=2, unreachable_timeout=30))
                except Compacted as exc:
                    return exc.earliest
                return None

        firsts = [wait_for(f"node {i} to trim", lambda i=i: earliest(i)) for i in cluster.ids]
        spec = cluster.argument()
        out = paxos("subscribe", "--cluster", spec, "--from", "1", "--timeout", "20")
        first = min(firsts)
        assert one_error_line(out) == (
            f"Error: index 1 is no longer retained; the earliest available is {first} "
            f"(use --from {first}, or start from a snapshot)"
        )
        node = firsts.index(max(firsts)) + 1
        out = paxos("subscribe", "--cluster", spec, "--from", "1", "--node", str(node))
        assert f"the earliest available is {max(firsts)} " in one_error_line(out)
        out = paxos("subscribe", "--cluster", spec, "--from", str(first), "--count", "3")
        assert out.returncode == 0, out.stderr
        indexes = [json.loads(line)["index"] for line in out.stdout.splitlines()]
        assert indexes == [first, first + 1, first + 2]
    finally:
        procs.stop()
