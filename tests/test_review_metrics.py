"""Review of the metrics and health endpoints (broadcast/httpd.py, broadcast/metrics.py):
hostile HTTP clients and scrapes must not take a node down, and the counters must count
what happened, not who watched.

Every node here runs in this process (one-node clusters: they elect themselves) with its
HTTP port on an ephemeral loopback port.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import secure_cluster, wait_for

from broadcast import Node
from broadcast.metrics import EventRing, NodeMetrics


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    cluster = secure_cluster(tmp_path, 1)
    started = Node(1, cluster, tmp_path / "node1", fsync=False, metrics="127.0.0.1:0").start()
    try:
        wait_for("the node to lead", lambda: started.replica.role.value == "leader")
        yield started
    finally:
        started.stop()


def _port(node: Node) -> int:
    assert node._http is not None
    return int(node._http.address.rsplit(":", 1)[1])


def _get(node: Node, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{_port(node)}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _raw(node: Node, request: bytes) -> bytes:
    """Send ``request`` as it is; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", _port(node)), timeout=10) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _one_reply(s: socket.socket) -> bytes:
    """One whole HTTP reply from ``s`` (head and Content-Length body); b"" at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, val = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(val)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _serving(node: Node) -> None:
    """The node's loop runs and it still commits."""
    assert node.failure is None, f"the node's loop died: {node.failure!r}"
    assert node._thread is not None and node._thread.is_alive()
    assert node.broadcast(b"still here", timeout=10).index >= 1


def test_a_scrape_whose_reading_fails_does_not_kill_the_node(node: Node) -> None:
    """``_reading`` runs in the node's loop; what it raises must not end the loop.

    Seen for real: a node whose open files an HTTP client had used up (see the next
    test) died of ``OSError: [Errno 24] Too many open files: '.../wal'`` raised by
    ``wal.disk_bytes()`` (os.scandir) inside a /metrics scrape.
    """

    def out_of_files() -> int:
        raise OSError(errno.EMFILE, "Too many open files", str(node.data_dir / "wal"))

    node.wal.disk_bytes = out_of_files  # type: ignore[method-assign]
    status, _ = _get(node, "/metrics")
    assert status in (200, 500, 503)
    _serving(node)
    # and its health check still answers, and says the loop turns: it does
    assert _get(node, "/healthz")[0] == 200
    _serving(node)


def test_idle_and_trickling_http_clients_cost_a_bounded_number_of_threads(node: Node) -> None:
    """ThreadingHTTPServer starts a thread per connection with no limit; the 16-request
    semaphore is taken only once a whole request head has arrived. A client that sends
    half a request and then one byte a second (never 5 s of silence) holds its thread
    and its file descriptor for as long as it likes: with enough of them the node runs
    out of files (it then cannot open its next log segment, and died of it in a
    scrape, see above) and of threads."""
    port = _port(node)
    clients = 48
    socks: list[socket.socket] = []
    lock = threading.Lock()
    stop = threading.Event()

    def open_some(n: int) -> None:
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
            except OSError:
                continue  # refused or reset: fine, that is a bound
            with lock:
                socks.append(s)

    def trickle() -> None:
        while not stop.wait(1.0):
            with lock:
                current = list(socks)
            for s in current:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")

    def handler_threads() -> int:
        return sum(1 for t in threading.enumerate() if "process_request" in t.name)

    before = handler_threads()
    keeper = threading.Thread(target=trickle, daemon=True)
    keeper.start()
    openers = [threading.Thread(target=open_some, args=(clients // 8,)) for _ in range(8)]
    try:
        for t in openers:
            t.start()
        for t in openers:
            t.join(120)
        # every connect returned: the server accepted each (or refused it)
        held = handler_threads() - before
        assert held <= 32, f"{held} HTTP threads for {clients} idle clients: unbounded"
        _serving(node)

        # They are cut off in bounded time, trickle as they may: the health check
        # gets through again while they still trickle.
        def healthy() -> bool:
            try:
                return _get(node, "/healthz", timeout=2)[0] == 200
            except OSError:
                return False  # refused while the bound is full

        wait_for("/healthz to answer while the slow clients still trickle", healthy, 30)
        assert not stop.is_set() and keeper.is_alive()
    finally:
        stop.set()
        keeper.join(5)
        for s in socks:
            s.close()


@pytest.mark.parametrize(
    "query",
    [
        "/readyz?max_lag=%C2%B2",  # '²'.isdigit() is True, int('²') raises
        "/events?after=%D9%A3%C2%B9",  # likewise
        "/metrics?a=1&b=2&c=3&d=4&e=5",  # parse_qs(max_num_fields=4) raises
    ],
)
def test_hostile_query_strings_are_answered_with_an_error(node: Node, query: str) -> None:
    """A malformed request is answered with an error, not dropped with a traceback on
    the node's stderr (one per request: a client can flood the node's log)."""
    reply = _raw(node, f"GET {query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 4"), f"{query}: answered {reply[:60]!r}"
    _serving(node)


def test_a_new_events_reader_does_not_count_an_election() -> None:
    """NodeMetrics.end_turn resets its remembered role when a reader of /events turns
    the ring on (so that the reader gets a role event), and then counts that as a role
    change: every viewer that starts (or comes back after LIVE_S) adds an election won
    (and started) to a leader that has been leading all along."""
    m = NodeMetrics(1)
    now = 100.0
    m.end_turn("candidate", 0, (1, 1), 0, now)
    m.end_turn("leader", 1, (1, 1), 0, now)
    assert (m.elections_started, m.elections_won) == (1, 1)
    for viewer in range(3):
        now += 100.0  # each viewer after the last one's LIVE_S ran out
        m.end_turn("leader", 1, (1, 1), 5, now)  # the ring goes off
        m.want_events(now)
        m.end_turn("leader", 1, (1, 1), 5, now)  # and on again, for this viewer
        assert (m.elections_started, m.elections_won) == (1, 1), (
            f"after viewer {viewer + 1}: {m.elections_started} elections started, "
            f"{m.elections_won} won, for one election"
        )
    _, _, events = m.ring.after(0)
    assert any(e["kind"] == "role" and e["role"] == "leader" for e in events)


def test_elections_won_does_not_move_when_a_viewer_opens_events(node: Node) -> None:
    """The same, end to end: /metrics before and after a first /events request."""

    def won() -> float:
        status, body = _get(node, "/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith("paxos_elections_won_total{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError("no paxos_elections_won_total")

    before = won()
    status, _ = _get(node, "/events?after=0")
    assert status == 200
    # the ring is on once the loop turned: the role event for the viewer is there
    wait_for(
        "the role event for the new viewer",
        lambda: any(e["kind"] == "role" for e in json.loads(_get(node, "/events?after=0")[1])
                    ["events"]),
    )
    assert won() == before, "opening the live view counted an election"


def test_an_events_reader_from_before_a_restart_is_not_stalled_silently() -> None:
    """The ring numbers events from 1 in every process. A viewer that polled a node
    up to event 500 and asks ``after=500`` from the restarted node (which has 3 events)
    is told ``next=500`` with no events, and so misses every event until the new
    numbering passes 500, without any sign of it (``first`` is the way to see a gap:
    it must be <= after when the numbering went back)."""
    ring = EventRing()
    for i in range(3):
        ring.add({"kind": "x", "i": i})
    first, last, events = ring.after(500)
    assert events, (
        f"after=500 on a ring numbered 1..3: first={first} next={last} and no events; "
        "the viewer waits for event 501 while the node records 4, 5, ..."
    )
    assert first <= 500  # the viewer can tell that the numbering went back


def test_a_stopped_node_closes_its_keep_alive_http_connections(tmp_path: Path) -> None:
    """After Node.stop() the port is closed and kept-alive connections are not served by
    a node that is gone."""
    cluster = secure_cluster(tmp_path, 1)
    n = Node(1, cluster, tmp_path / "node1", fsync=False, metrics="127.0.0.1:0").start()
    try:
        port = _port(n)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _one_reply(s).startswith(b"HTTP/1.1 200")
    finally:
        n.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # the kept-alive connection: closed with the node, or at most its answer is "stuck"
    s.settimeout(10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = _one_reply(s)
    except OSError:
        reply = b""
    finally:
        s.close()
    assert reply == b"" or b" 503 " in reply.split(b"\r\n", 1)[0], reply[:80]


def test_the_reading_is_taken_in_the_loop_quickly_under_many_scrapes(node: Node) -> None:
    """Many parallel scrapes: every one is answered (200 or 503 busy), none waits for
    the loop more than LOOP_ANSWER_S, and the node keeps committing meanwhile."""
    results: list[int] = []
    lock = threading.Lock()

    def scrape() -> None:
        for _ in range(10):
            code, _ = _get(node, "/metrics")
            with lock:
                results.append(code)

    scrapers = [threading.Thread(target=scrape) for _ in range(24)]
    for t in scrapers:
        t.start()
    committed = 0
    started = time.monotonic()
    while any(t.is_alive() for t in scrapers) and time.monotonic() - started < 60:
        node.broadcast(b"x", timeout=10)
        committed += 1
    for t in scrapers:
        t.join(60)
    assert committed > 0
    assert set(results) <= {200, 503} and results.count(200) > 0
    _serving(node)
