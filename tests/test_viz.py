"""``paxos sim --trace-json`` and ``paxos viz`` without a browser: the trace file (its
schema, determinism, bounds, and that its ``final`` is the run's end state), the
self-contained page, the server, the live feed and the one-line errors.

The page itself runs in a real browser in tests/test_viz_browser.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner
from procs import wait_for

from broadcast import tracefile
from broadcast.cli import main
from broadcast.viz_cli import parse_node
from broadcast.vizserver import LiveFeed, VizServer, escape_json_for_html, self_contained
from paxos.multi.membership import Membership
from paxos.multi.replica import Replica
from paxos.sim.runner import SimConfig, _Run, run

#: A seed with crashes, restarts, partitions, installs and leader changes (3 nodes).
SEED = 42


class QuorumOneReplica(Replica):
    """Planted bug: a single Accepted (its own) makes a slot chosen."""

    def _quorum2(self, members: Membership) -> int:
        return 1


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def one_error(code: int, out: str) -> str:
    assert code != 0, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    assert "Traceback" not in out
    return errors[0]


def reduce(events: list[dict[str, Any]]) -> tuple[dict[int, int], dict[int, int]]:
    """Every node's chosen prefix and delivery index as a reader of the events
    (the page) computes them."""
    chosen: dict[int, int] = {}
    delivered: dict[int, int] = {}
    for e in events:
        kind, node = e["kind"], e.get("node")
        if kind == "chosen":
            chosen[node] = max(chosen.get(node, 0), e.get("to", e["slot"]))
        elif kind == "restart":
            chosen[node], delivered[node] = e["chosen"], e["delivered"]
        elif kind == "install":
            chosen[node] = max(chosen.get(node, 0), e["slot"])
            delivered[node] = e["index"]
        elif kind == "deliver":
            delivered[node] = max(delivered.get(node, 0), e["index"] + e["count"] - 1)
    return chosen, delivered


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("viz") / "run.json"
    code, out = cli("sim", "--seed", str(SEED), "--trace-json", str(path))
    assert code == 0, out
    return path


# ---------------------------------------------------------------------- the trace file


def test_trace_file_follows_the_contract(trace_path: Path) -> None:
    doc = json.loads(trace_path.read_text())
    assert tracefile.check(doc) is None
    assert doc["format"] == "paxos-trace" and doc["version"] == 1
    assert doc["source"] == "sim" and doc["time_unit"] == "tick" and doc["seed"] == SEED
    assert doc["replay"] == f"paxos sim --seed {SEED} --nodes 3 --ticks 1500 --trace"
    assert "truncated" not in doc
    assert doc["nodes"] == sorted(doc["nodes"]) and doc["nodes"][:3] == [1, 2, 3]
    assert set(doc["final"]) == {"chosen", "delivered"}
    assert set(doc["final"]["chosen"]) == {str(n) for n in doc["nodes"]}
    events = doc["events"]
    kinds = {e["kind"] for e in events}
    # what a viewer needs of a run with faults
    assert {"role", "send", "drop", "accept", "chosen", "deliver", "crash", "restart",
            "submit", "ack", "members", "phase"} <= kinds
    last = 0
    for e in events:
        assert isinstance(e["t"], int) and e["t"] >= last  # in time order
        last = e["t"]
        for field in ("node", "slot", "to", "index", "count", "seq", "epoch"):
            assert field not in e or isinstance(e[field], int), e
        if "ballot" in e and e["ballot"] is not None:
            assert isinstance(e["ballot"], list) and len(e["ballot"]) == 2, e
        if e["kind"] == "send":
            assert e["arrive"] is None or e["arrive"] > e["t"], e
            assert isinstance(e["type"], str)
        if e["kind"] == "role":
            assert e["role"] in ("leader", "follower", "candidate"), e
    assert any(e["kind"] == "role" and e["role"] == "leader" for e in events)
    assert any(e["kind"] == "send" and e["arrive"] is None for e in events)


def test_same_seed_writes_the_same_bytes(tmp_path: Path, trace_path: Path) -> None:
    again = tmp_path / "again.json"
    code, out = cli("sim", "--seed", str(SEED), "--trace-json", str(again))
    assert code == 0, out
    assert again.read_bytes() == trace_path.read_bytes()
    other = tmp_path / "other.json"
    assert cli("sim", "--seed", str(SEED + 1), "--trace-json", str(other))[0] == 0
    assert other.read_bytes() != trace_path.read_bytes()


def test_trace_file_does_not_depend_on_the_hash_seed(tmp_path: Path, trace_path: Path) -> None:
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run-{hash_seed}.json"
        subprocess.run(
            [sys.executable, "-m", "broadcast", "sim", "--seed", str(SEED), "--trace-json",
             str(out)],
            check=True, capture_output=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        assert out.read_bytes() == trace_path.read_bytes()


@pytest.mark.parametrize("seed", range(1, 21))
def test_final_is_the_runs_end_state_and_what_the_events_say(seed: int) -> None:
    sim = _Run(SimConfig(seed=seed, events=True))
    result = sim.run()
    for driver in sim.drivers:
        node = driver.node_id
        assert result.delivered_upto[node] == driver.app.index
        if driver.replica is not None:
            assert result.chosen_upto[node] == driver.replica.commit
    chosen, delivered = reduce(result.events)
    assert {n: chosen.get(n, 0) for n in result.chosen_upto} == result.chosen_upto
    assert {n: delivered.get(n, 0) for n in result.delivered_upto} == result.delivered_upto


def test_recording_events_changes_nothing_else() -> None:
    plain = run(SimConfig(seed=SEED, trace=True))
    recorded = run(SimConfig(seed=SEED, trace=True, events=True))
    assert recorded.trace == plain.trace  # the text trace is untouched
    assert (recorded.messages, recorded.delivered, recorded.ticks, recorded.crashes) == (
        plain.messages, plain.delivered, plain.ticks, plain.crashes
    )
    assert plain.events == [] and recorded.events


def test_recording_stops_at_the_cap(tmp_path: Path) -> None:
    result = run(SimConfig(seed=SEED, events=True, max_events=100))
    assert len(result.events) == 100 and result.events_truncated
    doc = tracefile.sim_trace(result, None)
    assert doc["truncated"] is True and "100 events" in doc["note"]
    path = tmp_path / "capped.json"
    tracefile.write(path, doc)
    assert tracefile.read(path)[1]["truncated"] is True


def test_replay_command_of_a_failing_seed_takes_trace_json(tmp_path: Path) -> None:
    spec = f"{__name__}:QuorumOneReplica"
    code, out = cli("sim", "--seeds", "10", "--jobs", "1", "--replica", spec)
    assert code == 1
    match = re.search(r"replay: paxos sim (.*)", out)
    assert match, out
    path = tmp_path / "failing.json"
    code, out = cli("sim", *match.group(1).split(), "--trace-json", str(path))
    assert code == 1 and "FAILED seed" in out
    doc = tracefile.read(path)[1]
    assert doc["replay"] == "paxos sim " + match.group(1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5", "--trace-json", "x.json"], "--trace-json"),
        (["--minutes", "1", "--trace-json", "x.json"], "--trace-json"),
        (["--seed", "1", "--trace-json", "/no/such/dir/x.json"], "--trace-json"),
    ],
)
def test_trace_json_bad_uses_are_one_line_errors(args: list[str], message: str) -> None:
    assert message in one_error(*cli("sim", *args))


# ---------------------------------------------------------------------- the page file


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "data", "poster"):
                self.refs.append((tag, name, value or ""))
        if tag == "script":
            self.scripts.append(dict(attrs))


def test_out_file_is_self_contained(tmp_path: Path, trace_path: Path) -> None:
    out = tmp_path / "page.html"
    code, output = cli("viz", str(trace_path), "--out", str(out))
    assert code == 0, output
    html = out.read_text()
    parser = _Refs()
    parser.feed(html)
    assert parser.refs == []  # no script, style, image or link loaded from anywhere
    assert len(parser.scripts) == 2 and all("src" not in s for s in parser.scripts)
    assert "@import" not in html and "url(" not in html
    inline = re.search(
        r'<script type="application/json" id="trace-data">(.*?)</script>', html, re.S
    )
    assert inline is not None
    assert json.loads(inline.group(1)) == json.loads(trace_path.read_text())


def test_out_file_escapes_script_ends_in_the_trace(tmp_path: Path) -> None:
    nasty = "</script><script>alert(1)</script><!-- \u2028 & </SCRIPT >"
    doc = {
        "format": "paxos-trace", "version": 1, "source": "live", "seed": None, "nodes": [1],
        "time_unit": "ms", "replay": None,
        "events": [{"t": 1.5, "kind": "deliver", "node": 1, "index": 1, "count": 1,
                    "client": nasty, "seq": 1}],
        "final": {"chosen": {"1": 0}, "delivered": {"1": 1}},
    }
    path = tmp_path / "nasty.json"
    tracefile.write(path, doc)
    html = self_contained(path.read_text())
    assert html.lower().count("</script") == 2  # the two script elements' own ends
    assert "<!--" not in html
    inline = re.search(r'id="trace-data">(.*?)</script>', html, re.S)
    assert inline is not None
    assert json.loads(inline.group(1)) == doc
    assert escape_json_for_html('"<>&"') == '"\\u003c\\u003e\\u0026"'


# ---------------------------------------------------------------------- bad input


def test_bad_trace_files_are_one_line_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert "cannot read" in one_error(*cli("viz", str(missing)))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"format": "paxos-trace", ')
    assert "invalid JSON" in one_error(*cli("viz", str(bad_json)))
    not_trace = tmp_path / "other.json"
    not_trace.write_text('{"hello": 1}')
    assert "not a trace file" in one_error(*cli("viz", str(not_trace), "--out", "x.html"))
    bad_event = tmp_path / "event.json"
    bad_event.write_text(json.dumps({
        "format": "paxos-trace", "version": 1, "source": "sim", "nodes": [1],
        "time_unit": "tick", "events": [{"kind": "role"}],
    }))
    assert 'no numeric "t"' in one_error(*cli("viz", str(bad_event)))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not a trace file" in one_error(*cli("viz", str(binary)))
    assert "is a directory" in one_error(*cli("viz", str(tmp_path)))


@pytest.mark.parametrize(
    "spec", ["1", "x=127.0.0.1:9101", "0=127.0.0.1:9101", "1=127.0.0.1", "1=:9101",
             "1=127.0.0.1:http", "1=127.0.0.1:70000"],
)
def test_bad_node_specs_are_one_line_errors(spec: str) -> None:
    assert "--node" in one_error(*cli("viz", "--live", "--node", spec))


def test_parse_node() -> None:
    assert parse_node("3=127.0.0.1:9103") == (3, "127.0.0.1:9103")
    assert parse_node("2=[::1]:9102") == (2, "[::1]:9102")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--live"], "--node"),
        (["--live", "--node", "1=127.0.0.1:1", "--node", "1=127.0.0.1:2"], "twice"),
        (["--node", "1=127.0.0.1:1"], "--live"),
        ([], "trace file"),
    ],
)
def test_viz_usage_errors_are_one_line(args: list[str], message: str) -> None:
    assert message in one_error(*cli("viz", *args))


def test_port_in_use_is_a_one_line_error(trace_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_error(*cli("viz", str(trace_path), "--port", str(port)))
        assert f"127.0.0.1:{port}" in error and "in use" in error
        error = one_error(*cli("viz", "--live", "--node", "1=127.0.0.1:9", "--port", str(port)))
        assert "in use" in error


# ---------------------------------------------------------------------- the server


@contextlib.contextmanager
def serve(server: VizServer) -> Iterator[VizServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url: str, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def test_server_serves_the_page_and_the_trace_only(trace_path: Path) -> None:
    text, _ = tracefile.read(trace_path)
    with serve(VizServer(("127.0.0.1", 0), trace_text=text)) as server:
        status, body, headers = get(server.url, "/")
        assert status == 200 and b'<script src="viz.js">' in body
        assert headers["Content-Type"].startswith("text/html")
        assert get(server.url, "/viz.js")[0] == 200
        assert get(server.url, "/viz.css")[0] == 200
        assert json.loads(get(server.url, "/info.json")[1]) == {"mode": "file"}
        assert get(server.url, "/trace.json")[1] == text.encode()
        for path in ("/live?after=0", "/../broadcast/cli.py", "/etc/passwd", "/viz"):
            assert get(server.url, path)[0] == 404, path
        assert get(server.url, "/", "POST")[0] == 501
        assert get(server.url, "/", "PUT")[0] == 501


def test_server_handles_a_bounded_number_of_connections(trace_path: Path) -> None:
    class Small(VizServer):
        max_connections = 2

    with serve(Small(("127.0.0.1", 0), trace_text="{}")) as server:
        address = server.server_address[:2]
        idle = [socket.create_connection(address, timeout=10) for _ in range(2)]
        try:
            with (
                socket.create_connection(address, timeout=10) as third,
                contextlib.suppress(ConnectionResetError),
            ):
                assert third.recv(100) == b""  # closed unanswered
        finally:
            for conn in idle:
                conn.close()

        def answers() -> bool:
            try:
                return get(server.url, "/info.json")[0] == 200
            except (OSError, http.client.HTTPException):
                return False

        wait_for("the slots to be free again", answers, deadline_s=30)


def test_paxos_viz_prints_its_url_and_serves(trace_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "broadcast", "viz", str(trace_path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, line
        assert get(match.group(1), "/trace.json")[1] == trace_path.read_bytes()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


# ---------------------------------------------------------------------- the live feed


class StubNode:
    """A node's ``/events`` endpoint as the contract describes it, scripted by the test."""

    def __init__(self, node: int) -> None:
        self.node = node
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        #: Sent as the reply's ``incarnation`` when set (as a real node does).
        self.incarnation: str | None = None

    def add(self, kind: str, **fields: Any) -> None:
        with self.lock:
            self.events.append({"t": time.time() * 1000, "kind": kind, **fields})

    def reply(self, after: int) -> dict[str, Any]:
        out = self._reply(after)
        if self.incarnation is not None:
            out["incarnation"] = self.incarnation
        return out

    def _reply(self, after: int) -> dict[str, Any]:
        """``first``: the number of the first event returned, or of the next event to
        come if none is; ``next``: the number to ask after next time."""
        with self.lock:
            events = self.events[after : after + 1000]
            if events:
                return {"node": self.node, "first": after + 1, "next": after + len(events),
                        "events": events}
            return {"node": self.node, "first": len(self.events) + 1,
                    "next": max(after, len(self.events)), "events": []}

    def start(self, port: int = 0) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/events":
                    self.send_error(404)
                    return
                after = int(parse_qs(url.query).get("after", ["0"])[0])
                body = json.dumps(stub.reply(after)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        self.server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def test_live_feed_merges_and_marks_nodes_that_stop_answering(tmp_path: Path) -> None:
    stubs = {n: StubNode(n) for n in (1, 2)}
    for stub in stubs.values():
        stub.start()
    stubs[1].add("role", node=1, role="leader", ballot=[1, 1], leader=1)
    stubs[2].add("role", node=2, role="follower", ballot=[1, 1], leader=1)
    stubs[2].events.append(dict(stubs[2].events[0], kind="accept", slot=1))  # (the same ms)
    feed = LiveFeed({n: s.address for n, s in stubs.items()}, interval_s=0.02, timeout_s=0.5)
    try:
        for stub in stubs.values():
            feed.poll(feed.nodes[stub.node])
        assert [(e["kind"], e["node"]) for e in feed.events()] == [
            ("role", 1), ("role", 2), ("accept", 2)]
        port = stubs[1].port
        stubs[1].stop()
        feed.poll(feed.nodes[1])
        feed.poll(feed.nodes[1])  # (a crash is said once)
        assert [e["kind"] for e in feed.events()][-1:] == ["crash"]
        assert sum(e["kind"] == "crash" for e in feed.events()) == 1
        reply = json.loads(feed.since(0))
        assert reply["unreachable"] == [1] and reply["next"] == 4
        assert json.loads(feed.since(4))["events"] == []
        # back (a new process: its events numbered from 1 again; old ones are not repeated)
        stubs[1].events = []
        stubs[1].start(port)
        stubs[1].add("role", node=1, role="follower", ballot=[2, 2], leader=2)
        while feed.poll(feed.nodes[1]):
            pass
        kinds = [(e["kind"], e.get("role")) for e in feed.events()]
        assert kinds[-2:] == [("restart", None), ("role", "follower")]
        # unreachable a while, same process: what was read before is not repeated
        port2 = stubs[2].port
        stubs[2].stop()
        feed.poll(feed.nodes[2])
        stubs[2].start(port2)
        stubs[2].add("chosen", node=2, slot=1, to=1)
        while feed.poll(feed.nodes[2]):
            pass
        kinds = [(e["kind"], e.get("node")) for e in feed.events()]
        assert kinds[-3:] == [("crash", 2), ("restart", 2), ("chosen", 2)]
        assert kinds.count(("accept", 2)) == 1
        # restarted between two polls: its numbers start again from 1
        stubs[2].events = []
        stubs[2].add("role", node=2, role="candidate", ballot=[3, 2], leader=None)
        while feed.poll(feed.nodes[2]):
            pass
        kinds = [(e["kind"], e.get("node"), e.get("role")) for e in feed.events()]
        assert kinds[-2:] == [("restart", 2, None), ("role", 2, "candidate")]
        # --record's trace
        doc = tracefile.live_trace(feed.nodes, feed.events(), feed.truncated)
        path = tmp_path / "live.json"
        tracefile.write(path, doc)
        assert tracefile.read(path)[1]["source"] == "live"
    finally:
        for stub in stubs.values():
            stub.stop()


def test_live_feed_buffer_is_bounded() -> None:
    feed = LiveFeed({}, max_events=10, max_bytes=10_000)
    for i in range(25):
        feed.add({"t": i, "kind": "x", "n": i})
    assert [e["n"] for e in feed.events()] == list(range(15, 25)) and feed.truncated
    reply = json.loads(feed.since(0, limit=4))
    assert reply["first"] == 16 and [e["n"] for e in reply["events"]] == [15, 16, 17, 18]
    assert reply["next"] == 19
    assert json.loads(feed.since(reply["next"]))["events"][0]["n"] == 19
    feed.add({"t": 99, "kind": "x", "pad": "y" * 9900})
    kept = feed.events()  # bounded in bytes too
    assert len(kept) < 10 and kept[-1]["t"] == 99
    assert sum(len(json.dumps(e, separators=(",", ":"))) for e in kept) <= 10_000
    feed.add({"t": 100, "kind": "x", "pad": "y" * 70000})  # no event is that large
    assert feed.events() == kept


def test_live_feed_tells_a_restart_by_the_nodes_incarnation() -> None:
    """A node that restarted between two polls and already has as many events as were
    read from its old process: its numbering does not go back, its incarnation does."""
    stub = StubNode(1)
    stub.incarnation = "old"
    stub.start()
    stub.add("role", node=1, role="leader", ballot=[1, 1], leader=1)
    feed = LiveFeed({1: stub.address}, interval_s=0.02, timeout_s=0.5)
    try:
        node = feed.nodes[1]
        while feed.poll(node):
            pass
        assert [e["kind"] for e in feed.events()] == ["role"]
        with stub.lock:  # the new process: one event, numbered 1 like the old one's
            stub.events = [{"t": time.time() * 1000 + 1, "kind": "role", "node": 1,
                            "role": "follower", "ballot": [1, 1], "leader": None}]
            stub.incarnation = "new"
        while feed.poll(node):
            pass
        kinds = [(e["kind"], e.get("role")) for e in feed.events()]
        assert kinds == [("role", "leader"), ("restart", None), ("role", "follower")], kinds
    finally:
        stub.stop()
