"""``paxos kv`` as operators use it, and the kv examples, against one cluster of real node
processes run with ``--service coord`` (CURVE on: commands get the cluster file).

Every command runs as its own process: its output, its exit code, and its errors as a
single ``Error:`` line. Reads of one node (``--stale``, ``keys``, ``sessions``,
``leader``) may lag a write just made: those are asked again until they show it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from procs import ProcessCluster, wait_for

from broadcast.kv import KvClient
from broadcast.local import free_base_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def coord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    procs = ProcessCluster(tmp_path_factory.mktemp("kv"), extra=("--service", "coord"))
    try:
        procs.leader()
        yield procs
    finally:
        procs.stop()


def run(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True,
        timeout=timeout, env=environment(),
    )


def environment() -> dict[str, str]:
    """This checkout first on the path (the examples import it), no default cluster."""
    environ = {k: v for k, v in os.environ.items() if k != "PAXOS_CLUSTER"}
    path = environ.get("PYTHONPATH")
    environ["PYTHONPATH"] = str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"
    return environ


def paxos_kv(coord: ProcessCluster, command: str, *args: str,
             stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run("-m", "broadcast", "kv", command, "--cluster", coord.cluster.argument(), *args,
               stdin=stdin)


def until(coord: ProcessCluster, check: Callable[[subprocess.CompletedProcess[str]], bool],
          command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command that reads one node's state until ``check`` accepts its outcome."""
    outcome: list[subprocess.CompletedProcess[str]] = []

    def probe() -> bool:
        outcome[:] = [paxos_kv(coord, command, *args)]
        return check(outcome[0])

    wait_for(f"paxos kv {command} {' '.join(args)}", probe)
    return outcome[0]


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The failed command's single ``Error:`` line (JSON log lines aside)."""
    assert out.returncode != 0, out.stdout
    errors = [line for line in out.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1 and errors[0].startswith("Error:"), out.stderr
    return errors[0]


def lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def client(coord: ProcessCluster, **kwargs: object) -> KvClient:
    return KvClient(coord.cluster, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- paxos kv


def test_put_get_cas_del_and_keys(coord: ProcessCluster) -> None:
    (v1,) = lines(paxos_kv(coord, "put", "cli/a", "one"))
    assert lines(paxos_kv(coord, "get", "cli/a")) == ["one"]
    assert lines(paxos_kv(coord, "get", "cli/a", "--version")) == [f"{v1} one"]
    until(coord, lambda o: o.stdout == "one\n", "get", "--stale", "cli/a")
    (v2,) = lines(paxos_kv(coord, "cas", "cli/a", v1, "two"))
    assert int(v2) > int(v1)
    stale = paxos_kv(coord, "cas", "cli/a", v1, "three")
    assert stale.returncode == 1
    assert one_error_line(stale) == f"Error: version is {v2}, not {v1}"
    assert lines(paxos_kv(coord, "cas", "cli/new", "0", "fresh")) != []
    until(coord, lambda o: o.stdout == "cli/a\ncli/new\n", "keys", "cli/")
    assert lines(paxos_kv(coord, "del", "cli/a")) == []
    gone = paxos_kv(coord, "del", "cli/a")
    assert gone.returncode == 1 and one_error_line(gone) == "Error: no key 'cli/a'"
    missing = paxos_kv(coord, "get", "cli/a")
    assert missing.returncode == 1 and one_error_line(missing) == "Error: no key 'cli/a'"


def test_leader_and_sessions(coord: ProcessCluster) -> None:
    with client(coord, name="cli-test-session", ttl_ms=30_000) as kv:
        term = kv.election("cli-elect", b"host:1").campaign(timeout=30)
        out = until(coord, lambda o: o.returncode == 0, "leader", "cli-elect")
        assert lines(out) == [f"host:1 term {term}"]
        nobody = paxos_kv(coord, "leader", "cli-nobody")
        assert nobody.returncode == 1
        assert one_error_line(nobody) == "Error: nobody leads 'cli-nobody'"
        sessions = until(coord, lambda o: " cli-test-session ttl=30000 " in o.stdout,
                         "sessions")
        mine = [line for line in lines(sessions) if f"{kv.session} cli-test-session" in line]
        assert len(mine) == 1 and mine[0].startswith(f"{kv.session} cli-test-session ttl=30000 "
                                                     "last=")


def test_lock_runs_a_command_holding_it_and_fenced_writes(coord: ProcessCluster) -> None:
    script = "import os, sys; print('fence', os.environ['PAXOS_LOCK'], flush=True); sys.exit(3)"
    held = paxos_kv(coord, "lock", "--wait", "30", "cli-lock", sys.executable, "-c", script)
    assert held.returncode == 3, held.stderr  # the command's own exit code
    first, second = held.stdout.splitlines()
    token = first.removeprefix("locked cli-lock token ")
    assert token.isdigit() and second == f"fence cli-lock:{token}"
    # Released once the command ended: a write fenced with it is refused.
    late = paxos_kv(coord, "put", "cli/fenced", "late", "--fence", f"cli-lock:{token}")
    assert late.returncode == 1 and "fence: lock not held" in one_error_line(late)
    with client(coord) as kv, kv.lock("cli-lock2") as lock:
        ok = paxos_kv(coord, "put", "cli/fenced", "ok", "--fence", f"cli-lock2:{lock.token}")
        assert ok.returncode == 0, ok.stderr
        stale = paxos_kv(coord, "del", "cli/fenced", "--fence", f"cli-lock2:{lock.token - 1}")
        assert stale.returncode == 1 and "fence: stale token" in one_error_line(stale)
        assert kv.get("cli/fenced") is not None and kv.get("cli/fenced")[0] == b"ok"  # type: ignore[index]


def test_an_ephemeral_put_holds_its_key_until_stdin_ends(coord: ProcessCluster) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "broadcast", "kv", "put", "--cluster", coord.cluster.argument(),
         "--ephemeral", "cli/eph", "here"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment(),
    )
    try:
        with client(coord) as kv:
            wait_for("the ephemeral key", lambda: kv.get("cli/eph") is not None)
            assert proc.poll() is None  # it holds the key while its stdin is open
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(30) == 0
            assert kv.get("cli/eph") is None  # its session closed: the key vanished
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None and proc.stdout.read().strip().isdigit()


def test_elect_leads_until_stdin_ends_then_resigns(coord: ProcessCluster) -> None:
    out = paxos_kv(coord, "elect", "cli-e", "host:9", "--wait", "30")
    (line,) = lines(out)
    assert line.startswith("elected cli-e term ")
    with client(coord) as kv:
        wait_for("nobody leads", lambda: kv.leader("cli-e") is None)


def test_watch_prints_each_change_from_an_index(coord: ProcessCluster) -> None:
    with client(coord) as kv:
        first = kv.put("cli/w/a", b"1")
        second = kv.put("cli/w/b", b"2")
        kv.put("cli/elsewhere", b"x")
    out = paxos_kv(coord, "watch", "cli/w/", "--since", str(first), "--count", "2")
    assert lines(out) == [f"{first} put cli/w/a session=0 version={first} 1",
                          f"{second} put cli/w/b session=0 version={second} 2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("put", "k", "v", "--fence", "nonsense"), "--fence"),
        (("cas", "k", "one", "v"), "EXPECTED"),
        (("cas", "k", "1.5", "v"), "EXPECTED"),
        (("put", "k", "v", "--ttl-ms", "5"), "--ttl-ms"),
        (("watch", "--since", "0"), "--since"),
        (("get",), "KEY"),
        (("lock", "L", "--wait", "-1"), "--wait"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    out = run("-m", "broadcast", "kv", *args, "--cluster", "1=127.0.0.1:7499", "--insecure")
    assert out.returncode == 2
    assert message in one_error_line(out)


def test_an_unreachable_cluster_is_a_one_line_error() -> None:
    spec = f"1=127.0.0.1:{free_base_port(1)}"
    out = run("-m", "broadcast", "kv", "keys", "--cluster", spec, "--insecure",
              "--timeout", "0.5")
    assert out.returncode == 1 and "no node answered" in one_error_line(out)
    missing = run("-m", "broadcast", "kv", "get", "k", "--cluster", "/nonexistent/cluster.toml")
    assert missing.returncode != 0 and "nonexistent" in one_error_line(missing)


def test_kv_serve_help_and_the_commands() -> None:
    serve = run("-m", "broadcast", "kv", "serve", "--help")
    assert serve.returncode == 0
    assert "--data-dir" in serve.stdout and "--id" in serve.stdout
    listed = serve.stdout.split("\nOptions:\n")[1].splitlines()
    options = [line.split()[0] for line in listed if line.startswith("  -")]
    assert "--service" not in options  # serve is the coordination service
    group = run("-m", "broadcast", "kv", "--help")
    for command in ("serve", "put", "get", "del", "cas", "keys", "watch", "lock", "elect",
                    "leader", "sessions"):
        assert f"  {command} " in group.stdout, command


# ---------------------------------------------------------------------- the examples


def example(coord: ProcessCluster, name: str, *args: str) -> list[str]:
    out = run(str(EXAMPLES / name), "--cluster", coord.cluster.argument(), *args, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.splitlines()


def test_the_lock_example_loses_no_append(coord: ProcessCluster) -> None:
    out = example(coord, "kv_lock.py", "--workers", "3", "--rounds", "3")
    assert out[-1] == "ok: 9 appends, none lost"
    ledger = out[-2].removeprefix("ledger: ").split()
    assert sorted(ledger) == ["w1"] * 3 + ["w2"] * 3 + ["w3"] * 3
    tokens = [int(line.split("token ")[1].split(",")[0]) for line in out if "token" in line]
    assert len(tokens) == 9 and len(set(tokens)) == 9  # a fresh grant each round


def test_the_election_example_hands_over_twice(coord: ProcessCluster) -> None:
    out = example(coord, "kv_election.py", "--candidates", "3", "--handovers", "2")
    leads = [line for line in out if " leads (term " in line]
    assert len(leads) == 3 and len({line.split()[0] for line in leads}) == 3
    terms = [int(line.split("term ")[1].rstrip(")")) for line in leads]
    assert terms == sorted(terms) and len(set(terms)) == 3
    assert sum(line.startswith("handed over: ") for line in out) == 2
    assert out[-1] == "ok: 3 leaders, 2 hand-overs"


def test_the_watch_example_sees_every_write_in_order(coord: ProcessCluster) -> None:
    out = example(coord, "kv_watch.py", "demo", "--prefix", "ex/watch/", "--count", "3")
    start = int(out[0].removeprefix("watching ex/watch/ from "))
    changes = [line.split() for line in out if line[:1].isdigit()]
    assert [c[1:] for c in changes] == [
        ["put", "ex/watch/k0", "=", "v0"], ["put", "ex/watch/k1", "=", "v1"],
        ["put", "ex/watch/k2", "=", "v2"], ["delete", "ex/watch/k0"],
    ]
    indexes = [int(c[0]) for c in changes]
    assert indexes == sorted(indexes) and indexes[0] >= start
    assert out[-1] == "ok: the watcher saw 4 changes"
