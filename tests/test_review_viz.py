"""Review of the visualiser: hostile trace files, hostile live nodes, the live page's
bounded buffer. Each test reproduces a defect found in review.

The browser tests skip, like tests/test_viz_browser.py, where Playwright or Chromium
is missing; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, launch
from procs import wait_for

from broadcast import tracefile
from broadcast.spec import ConfigError
from broadcast.vizserver import LiveFeed, VizServer, self_contained

# ---------------------------------------------------------------------- a scripted node


class HostileNode:
    """An ``/events`` endpoint that answers what the test says: a reply object (as
    JSON), raw bytes, or an HTTP error status."""

    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.status = 200
        self.asked: list[str] = []
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                node.asked.append(self.path)
                body = node.body
                self.send_response(node.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def answer(self, reply: dict[str, Any] | bytes) -> None:
        self.status = 200
        self.body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def hostile() -> Iterator[HostileNode]:
    node = HostileNode()
    yield node
    node.close()


def _good(first: int, events: list[dict[str, Any]], incarnation: str | None = None) -> dict:
    reply: dict[str, Any] = {"node": 1, "first": first, "next": first + len(events) - 1,
                             "events": events}
    if incarnation is not None:
        reply["incarnation"] = incarnation
    return reply


# ---------------------------------------------------------------------- the live feed


@pytest.mark.parametrize(
    "body",
    [
        b'{"first":1,"next":1,"events":[{"t":1,"kind":"role","node":1,"x":NaN}]}',
        b'{"first":1,"next":1,"events":[{"t":Infinity,"kind":"role","node":1}]}',
        b'{"first":1,"next":1,"events":[{"t":1e999,"kind":"role","node":1}]}',
        b'{"first":1,"next":1,"events":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["nan-field", "infinity-t", "overflowing-t", "deeply-nested"],
)
def test_a_node_answering_hostile_json_does_not_kill_its_poller(
    hostile: HostileNode, body: bytes
) -> None:
    """A reply with NaN/Infinity (which Python's json reads) or nested 100 000 deep made
    ``poll`` raise (ValueError from ``add``'s json.dumps, RecursionError from json.loads):
    the node's poller thread died and the node was never asked again, silently."""
    hostile.answer(body)
    feed = LiveFeed({1: hostile.address}, interval_s=0.02, timeout_s=2.0)
    feed.start()
    try:
        wait_for("the feed to ask the node again", lambda: len(hostile.asked) >= 2,
                 deadline_s=20)
        # the node behaves again: what it says now reaches the feed
        hostile.answer(_good(2, [{"t": time.time() * 1000, "kind": "role", "node": 1,
                                  "role": "leader", "ballot": [1, 1], "leader": 1}]))
        wait_for("what the node says now to reach the feed",
                 lambda: any(e["kind"] == "role" for e in feed.events()), deadline_s=20)
        assert all(t.is_alive() for t in feed._threads)
    finally:
        feed.stop()


def test_a_node_slow_to_answer_once_is_not_shown_restarted(hostile: HostileNode) -> None:
    """The same process (same incarnation) answering again after one failed poll was
    taken for a restart: a ``restart`` event (the page resets its role to follower, so a
    leader is shown as a follower until its role changes) and its ring read again from
    the start."""
    now = time.time() * 1000
    events = [{"t": now, "kind": "role", "node": 1, "role": "leader", "ballot": [1, 1],
               "leader": 1}]
    hostile.answer(_good(1, events, incarnation="same"))
    feed = LiveFeed({1: hostile.address}, timeout_s=2.0)
    node = feed.nodes[1]
    feed.poll(node)
    assert node.after == 1
    hostile.status, hostile.body = 503, b"busy"  # one failed poll (a timeout, say)
    feed.poll(node)
    hostile.answer({"node": 1, "incarnation": "same", "first": 2, "next": 1, "events": []})
    while feed.poll(node):
        pass
    kinds = [e["kind"] for e in feed.events()]
    assert "restart" not in kinds, kinds
    assert node.after == 1  # not read again from the start
    assert hostile.asked[-1] == "/events?after=1"


def test_live_with_a_huge_after_is_answered(hostile: HostileNode) -> None:
    """``/live?after=10**30`` raised in ``since`` (islice beyond sys.maxsize): the
    connection was dropped without a reply and a traceback printed."""
    feed = LiveFeed({1: hostile.address})
    feed.add({"t": 1.0, "kind": "role", "node": 1})
    server = VizServer(("127.0.0.1", 0), feed=feed)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", "/live?after=" + "9" * 30)
        response = conn.getresponse()
        assert response.status in (200, 400)
        if response.status == 200:
            assert json.loads(response.read())["events"] == []
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------- trace files

_HEAD = ('{"format":"paxos-trace","version":1,"source":"sim","seed":1,"nodes":[1],'
         '"time_unit":"tick","replay":null')


@pytest.mark.parametrize(
    "text",
    [
        _HEAD + ',"events":[{"t":NaN,"kind":"role","node":1}]}',
        _HEAD + ',"events":[{"t":1,"kind":"role","node":1,"slot":Infinity}]}',
        _HEAD + ',"ticks":-Infinity,"events":[]}',
        _HEAD + ',"events":[{"t":1e999,"kind":"role","node":1}]}',
        _HEAD + ',"events":[{"t":' + "1" * 5000 + ',"kind":"role","node":1}]}',
    ],
    ids=["nan-t", "infinity-field", "minus-infinity-ticks", "overflowing-t", "5000-digits"],
)
def test_a_trace_with_non_json_numbers_is_refused(tmp_path: Path, text: str) -> None:
    """Python's json reads NaN and Infinity, the browser's JSON.parse does not: ``paxos
    viz`` took the file (and wrote an --out page) that the page then cannot open. An
    integer of 5000 digits made json.loads raise a ValueError that was not caught: a
    traceback, not a one-line error."""
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not a trace file"):
        tracefile.read(path)


# ---------------------------------------------------------------------- the page

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - CI installs it
    sync_playwright = None  # type: ignore[assignment]

DEADLINE_MS = 20_000

needs_browser = pytest.mark.skipif(
    sync_playwright is None or CHROMIUM is None, reason="playwright or chromium missing"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


@pytest.fixture
def page_errors(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, errors
    context.close()


@contextlib.contextmanager
def serving(server: VizServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _trace(events: list[dict[str, Any]]) -> str:
    return json.dumps({
        "format": "paxos-trace", "version": 1, "source": "sim", "seed": 1, "nodes": [1, 2],
        "time_unit": "tick", "replay": None, "ticks": 100, "events": events,
        "final": {"chosen": {"1": 5, "2": 0}, "delivered": {"1": 0, "2": 0}},
    })


_LEADS = [
    {"t": 1, "kind": "role", "node": 1, "role": "leader", "ballot": [1, 1], "leader": 1},
    {"t": 1, "kind": "role", "node": 2, "role": "follower", "ballot": [1, 1], "leader": 1},
    {"t": 2, "kind": "chosen", "node": 1, "slot": 1, "to": 5},
]


@needs_browser
@pytest.mark.parametrize(
    "bad",
    [
        {"t": 3, "kind": "role", "node": "__proto__", "role": "leader"},
        {"t": 3, "kind": "members", "epoch": 1, "voters": "12", "learners": []},
        {"t": 3, "kind": "burst", "types": "Accept", "links": [], "until": 9},
        {"t": 3, "kind": "partition", "groups": [[1], [2]], "bridge": 5},
    ],
    ids=["proto-node", "voters-string", "burst-types-string", "bridge-number"],
)
def test_a_malformed_event_in_a_trace_does_not_freeze_the_page(
    page_errors: tuple[Page, list[str]], tmp_path: Path, bad: dict[str, Any]
) -> None:
    """One event of a trace with a field of the wrong type (a node id "__proto__", voters
    that are a string, ...) threw in the page's render: the animation loop (frame ->
    render, rescheduled after it) stopped for good, the page frozen at the start."""
    page, errors = page_errors
    out = tmp_path / "page.html"
    out.write_text(self_contained(_trace([*_LEADS, bad])), encoding="utf-8")
    page.goto(out.as_uri())
    expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)
    page.get_by_test_id("end").click()
    expect(page.get_by_test_id("time")).to_have_text("tick 100 / 100", timeout=DEADLINE_MS)
    expect(page.get_by_test_id("leader")).to_have_text("n1 (1.1)")
    expect(page.get_by_test_id("node-chosen-1")).to_have_text("5")
    page.get_by_test_id("start").click()
    expect(page.get_by_test_id("time")).to_have_text("tick 0 / 100", timeout=DEADLINE_MS)
    assert errors == []


class _WideFeed(LiveFeed):
    """A feed that answers up to 100 000 events per /live reply (the page trims its
    events quickly)."""

    def since(self, after: int, limit: int = 0) -> bytes:
        return super().since(after, 100_000)


@needs_browser
def test_a_malformed_live_event_does_not_wedge_the_live_view(
    page_errors: tuple[Page, list[str]],
) -> None:
    """A live node's event with voters that are not a list threw in the page's poll: the
    page said "the viz server does not answer", never advanced past that reply, and
    inserted the events before the bad one again on every poll (duplicates, without
    bound); its render loop died too."""
    page, errors = page_errors
    feed = LiveFeed({1: "127.0.0.1:9", 2: "127.0.0.1:9"})  # (not started: the test feeds it)
    now = time.time() * 1000
    feed.add({"t": now - 3000, "kind": "role", "node": 1, "role": "leader",
               "ballot": [1, 1], "leader": 1})
    feed.add({"t": now - 2900, "kind": "members", "node": 1, "epoch": 1, "voters": 5})
    feed.add({"t": now - 2800, "kind": "chosen", "node": 1, "slot": 1, "to": 7})
    with serving(VizServer(("127.0.0.1", 0), feed=feed)) as url:
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("chosen-count")).to_have_text("7", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("leader")).to_have_text("n1 (1.1)")
        feed.add({"t": time.time() * 1000, "kind": "chosen", "node": 1, "slot": 8, "to": 9})
        expect(page.get_by_test_id("chosen-count")).to_have_text("9", timeout=DEADLINE_MS)
        assert page.evaluate("window.paxosViz.state().events") <= 4  # no event twice
        expect(page.get_by_test_id("status")).not_to_contain_text("does not answer")
    assert errors == []


@needs_browser
def test_the_live_page_keeps_the_state_of_the_events_it_trims(
    page_errors: tuple[Page, list[str]],
) -> None:
    """The live page keeps at most 200 000 events; trimming rebuilt the state of what it
    dropped from an empty state, not from the state of earlier trims: after a second
    trim a leader elected before the first one was shown as "unknown", "leader: none"."""
    page, errors = page_errors
    feed = _WideFeed({1: "127.0.0.1:9", 2: "127.0.0.1:9"}, max_events=400_000,
                     max_bytes=1 << 30)
    now = time.time() * 1000
    feed.add({"t": now - 60_000, "kind": "role", "node": 1, "role": "leader",
              "ballot": [1, 1], "leader": 1})
    for i in range(380_000):  # two trims' worth of events that change nothing
        feed.add({"t": now - 59_000 + i * 0.1, "kind": "noop", "node": 2})
    feed.add({"t": now - 5000, "kind": "chosen", "node": 1, "slot": 1, "to": 7})
    with serving(VizServer(("127.0.0.1", 0), feed=feed)) as url:
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("chosen-count")).to_have_text("7", timeout=60_000)
        assert page.evaluate("window.paxosViz.state().events") < 200_000  # (trimmed)
        expect(page.get_by_test_id("node-role-1")).to_have_text("leader")
        expect(page.get_by_test_id("leader")).to_have_text("n1 (1.1)")
    assert errors == []


@needs_browser
def test_the_live_page_says_when_the_feed_dropped_events_it_did_not_read(
    page_errors: tuple[Page, list[str]],
) -> None:
    """The viz server's buffer is bounded; events it dropped before the page read them
    were lost silently: its /live replies say where they start (``first``), and the page
    did not look."""
    page, errors = page_errors
    feed = LiveFeed({1: "127.0.0.1:9"}, max_events=10)  # (not started: the test feeds it)
    now = time.time() * 1000
    feed.add({"t": now - 5000, "kind": "role", "node": 1, "role": "leader",
              "ballot": [1, 1], "leader": 1})
    with serving(VizServer(("127.0.0.1", 0), feed=feed)) as url:
        page.goto(url)
        expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("leader")).to_have_text("n1 (1.1)", timeout=DEADLINE_MS)
        now = time.time() * 1000
        for i in range(50):  # between two polls of the page: 40 are dropped unread
            feed.add({"t": now + i, "kind": "chosen", "node": 1, "slot": 1, "to": i + 1})
        expect(page.get_by_test_id("chosen-count")).to_have_text("50", timeout=DEADLINE_MS)
        # (40 unless the page polled amid the adds: then fewer, never none)
        expect(page.get_by_test_id("recent")).to_contain_text(re.compile(r"missed \d+ events"))
    assert errors == []


@needs_browser
def test_a_trace_with_thousands_of_nodes_does_not_hang_the_page(
    page_errors: tuple[Page, list[str]], tmp_path: Path
) -> None:
    """The page drew a line between every pair of nodes: a trace naming 3000 nodes made
    4.5 million SVG lines (1500 nodes: 1.1 million, a 13 s freeze per layout)."""
    page, errors = page_errors
    n = 3000
    events = [{"t": 1, "kind": "role", "node": i, "role": "follower", "ballot": [1, 1],
               "leader": 1} for i in range(1, n + 1)]
    doc = json.loads(_trace(events))
    doc["nodes"] = list(range(1, n + 1))
    out = tmp_path / "page.html"
    out.write_text(self_contained(json.dumps(doc)), encoding="utf-8")
    page.goto(out.as_uri())
    expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)
    page.get_by_test_id("end").click()
    expect(page.get_by_test_id("time")).to_have_text("tick 100 / 100", timeout=DEADLINE_MS)
    assert page.locator("#links line").count() <= 1000
    assert errors == []


def test_a_node_that_drips_its_reply_does_not_hold_its_poller_forever() -> None:
    """The feed's timeout was per socket read: a node sending one byte every 0.2 s kept
    its poller in one poll for as long as it liked, the node shown up and silent (not
    unreachable) all along."""
    stop = threading.Event()

    class Drip(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(0.2)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        feed = LiveFeed({1: f"127.0.0.1:{server.server_address[1]}"}, timeout_s=1.0)
        done = threading.Event()
        threading.Thread(target=lambda: (feed.poll(feed.nodes[1]), done.set()),
                         daemon=True).start()
        assert done.wait(30), "one poll of a dripping node did not end in 30 s"
        assert feed.nodes[1].up is False
        assert [e["kind"] for e in feed.events()] == ["crash"]
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_trickling_clients_cannot_keep_the_page_out_for_long(tmp_path: Path) -> None:
    """Review finding 11: 32 connections that each send a header byte now and then held
    every slot of the viz server for as long as they liked (the timeout bounded each
    read only). Each connection now lives at most connection_lifetime_s."""
    import socket as socket_module
    import urllib.request

    from broadcast.vizserver import VizServer

    class ShortLived(VizServer):
        connection_lifetime_s = 1.0

    server = ShortLived(("127.0.0.1", 0), trace_text='{"format":"paxos-trace"}')
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    hogs = []
    stop = threading.Event()
    try:
        for _ in range(server.max_connections):
            sock = socket_module.create_connection((str(host), port))
            sock.sendall(b"GET / HTTP/1.1\r\n")
            hogs.append(sock)

        def trickle() -> None:
            while not stop.wait(0.3):
                for sock in hogs:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X")

        threading.Thread(target=trickle, daemon=True).start()
        def answered() -> bool:  # refused (closed unanswered) while the hogs hold every slot
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/info.json",
                                            timeout=5) as reply:
                    return reply.status == 200
            except OSError:
                return False

        wait_for("the page to get in past the trickling clients (kept out for 20 s)",
                 answered, deadline_s=20)
    finally:
        stop.set()
        for sock in hogs:
            sock.close()
        server.shutdown()
        server.server_close()
