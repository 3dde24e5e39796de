"""What ``paxos viz`` serves: the visualiser page, a trace file, or live nodes' events.

* :func:`self_contained` builds one HTML file with the page, its script, its style
  and a trace inlined (``paxos viz TRACE --out page.html``);
* :class:`VizServer` serves the page and either a trace (``/trace.json``) or the
  merged live events (``/live?after=K``) on a local port, with the standard
  library's threading HTTP server: GET of a few known paths only, requests
  bounded in size (the request line and headers, by ``http.server``), in time (a
  socket timeout per read, and every connection closed 30 s after it was accepted,
  however slowly it trickles) and in number (connections handled at once);
* :class:`LiveFeed` polls every node's ``GET /events?after=SEQ`` (the event
  contract), merges their events into one buffer bounded in count and bytes, and
  adds a ``crash`` event when a node stops answering and a ``restart`` when it
  answers again (``reachable`` if the same process answers again: same incarnation).
"""

from __future__ import annotations

import http.client
import importlib.resources
import itertools
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from broadcast.httpbase import BoundedHTTPServer

#: The page's files (package data of broadcast/viz/).
PAGE_FILES = ("index.html", "viz.js", "viz.css")
_CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "viz.js": "text/javascript; charset=utf-8",
    "viz.css": "text/css; charset=utf-8",
}
_STYLE_TAG = '<link rel="stylesheet" href="viz.css">'
_SCRIPT_TAG = '<script src="viz.js"></script>'

#: A client of the viz server gets this long to send its request.
REQUEST_TIMEOUT_S = 10.0
#: Events in one /live reply at most.
LIVE_REPLY_EVENTS = 5000


def page_file(name: str) -> str:
    """One of the page's files, as text."""
    if name not in PAGE_FILES:
        raise KeyError(name)
    return (importlib.resources.files("broadcast") / "viz" / name).read_text(encoding="utf-8")


def escape_json_for_html(text: str) -> str:
    """JSON text that can sit inside a ``<script>`` element: no ``</script>``, no
    ``<!--``. In JSON these characters occur only inside strings, where the ``\\u``
    escapes mean the same."""
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def self_contained(trace_text: str) -> str:
    """The page with its script, style and the trace inlined: one file that works
    offline, opened from disk."""
    html, script, style = (page_file(name) for name in PAGE_FILES)
    for text, closing in ((script, "</script"), (style, "</style")):
        if closing in text.lower():
            raise ValueError(f"the page's own files contain {closing!r}")
    if html.count(_STYLE_TAG) != 1 or html.count(_SCRIPT_TAG) != 1:
        raise ValueError("index.html does not link viz.css and viz.js as expected")
    data = escape_json_for_html(trace_text.strip())
    html = html.replace(_STYLE_TAG, f"<style>\n{style}</style>")
    return html.replace(
        _SCRIPT_TAG,
        f'<script type="application/json" id="trace-data">{data}</script>\n'
        f"<script>\n{script}</script>",
    )


# ---------------------------------------------------------------------- live events


def now_ms() -> float:
    return time.time() * 1000.0


class _Node:
    """What the feed knows of one node."""

    __slots__ = ("address", "after", "incarnation", "last_t", "node", "seen_until", "up")

    def __init__(self, node: int, address: str) -> None:
        self.node = node
        self.address = address
        #: The last event number read from this node's ring (0: none yet).
        self.after = 0
        #: The newest event time read from it.
        self.last_t = float("-inf")
        #: Reading its ring again from the start (it came back): events up to this time
        #: were read before.
        self.seen_until = float("-inf")
        #: None until first asked; then whether it answered last time.
        self.up: bool | None = None
        #: The node process's random id (``incarnation`` in its replies): a new one is a
        #: restart, however many events either process had.
        self.incarnation: str | None = None


class LiveFeed:
    """Polls every node's ``/events`` and keeps the merged events, numbered from 1, in a
    buffer bounded in count and bytes (the oldest go first)."""

    def __init__(
        self,
        nodes: Mapping[int, str],
        *,
        interval_s: float = 0.25,
        timeout_s: float = 1.0,
        max_events: int = 100_000,
        max_bytes: int = 32 * 1024 * 1024,
        max_reply_bytes: int = 16 * 1024 * 1024,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        self.nodes = {n: _Node(n, address) for n, address in sorted(nodes.items())}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_reply_bytes = max_reply_bytes
        self.clock = clock
        self._lock = threading.Lock()
        self._buffer: deque[tuple[int, bytes]] = deque()
        self._bytes = 0
        self._next = 1
        #: True once an event was dropped to keep the buffer bounded.
        self.truncated = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ the buffer

    def add(self, event: dict[str, Any]) -> None:
        try:
            data = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        except (ValueError, TypeError, RecursionError):
            return  # (NaN or Infinity, which Python's json reads and browsers do not)
        if len(data) > 65536:
            return  # no event of the contract is this large
        with self._lock:
            self._buffer.append((self._next, data))
            self._next += 1
            self._bytes += len(data)
            while len(self._buffer) > self.max_events or self._bytes > self.max_bytes:
                _, old = self._buffer.popleft()
                self._bytes -= len(old)
                self.truncated = True

    def since(self, after: int, limit: int = LIVE_REPLY_EVENTS) -> bytes:
        """The ``/live`` reply: the events numbered after ``after`` (at most ``limit``)."""
        with self._lock:
            after = min(after, self._next - 1)  # (a reader of another viz server)
            first = self._buffer[0][0] if self._buffer else self._next
            start = max(0, after + 1 - first)
            chosen = [data for _, data in itertools.islice(self._buffer, start, start + limit)]
            nxt = first + start + len(chosen) - 1 if chosen else max(after, first - 1)
        unreachable = [n.node for n in self.nodes.values() if n.up is False]
        head = json.dumps(
            {
                "next": nxt,
                "first": first,
                "now": self.clock(),
                "nodes": list(self.nodes),
                "unreachable": unreachable,
            },
            separators=(",", ":"),
        ).encode()
        return head[:-1] + b',"events":[' + b",".join(chosen) + b"]}"

    def events(self) -> list[dict[str, Any]]:
        """Every event still in the buffer, oldest first."""
        with self._lock:
            datas = [data for _, data in self._buffer]
        return [json.loads(data) for data in datas]

    # ------------------------------------------------------------------ polling

    def start(self) -> None:
        for node in self.nodes.values():
            thread = threading.Thread(
                target=self._run, args=(node,), name=f"viz-poll-{node.node}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 1.0)

    def _run(self, node: _Node) -> None:
        while not self._stop.is_set():
            more = self.poll(node)
            if not more:
                self._stop.wait(self.interval_s)

    def poll(self, node: _Node) -> bool:
        """Ask ``node`` once; True if it has more to tell right away."""
        try:
            reply = self._fetch(node)
        except (OSError, ValueError, http.client.HTTPException):
            if node.up is not False:
                node.up = False
                self.add({"t": self.clock(), "kind": "crash", "node": node.node})
            return False
        incarnation = reply.get("incarnation")
        known = node.incarnation
        if isinstance(incarnation, str):
            node.incarnation = incarnation
            if node.up is True and known is not None and incarnation != known:
                # Another process answers (restarted between two polls): read its ring
                # from the start; what is not newer than the last event seen is a repeat.
                node.after = 0
                node.seen_until = node.last_t
                self.add({"t": self.clock(), "kind": "restart", "node": node.node})
                return True
        if node.up is False and isinstance(incarnation, str) and incarnation == known:
            # The same process answers again (it was slow, or the network was): not a
            # restart; go on reading its ring where we were.
            node.up = True
            self.add({"t": self.clock(), "kind": "reachable", "node": node.node})
        elif node.up is False:
            # Back: a new process numbers its events from 1 again. Read its ring from the
            # start; what is not newer than the last event seen is a repeat.
            node.up = True
            node.after = 0
            node.seen_until = node.last_t
            self.add({"t": self.clock(), "kind": "restart", "node": node.node})
            return True
        node.up = True
        nxt = reply.get("next")
        first = reply.get("first")
        events = reply.get("events")
        if not isinstance(nxt, int) or not isinstance(events, list):
            return False
        if nxt < node.after or (isinstance(first, int) and first <= node.after):
            # Its numbering went back (the first number it has is not above the last one
            # we read): a new process, whose old one we did not see go.
            node.after = 0
            node.seen_until = node.last_t
            self.add({"t": self.clock(), "kind": "restart", "node": node.node})
            return True
        if isinstance(first, int) and node.after and first > node.after + 1:
            missed = first - node.after - 1
            self.add({"t": self.clock(), "kind": "gap", "node": node.node, "missed": missed})
        for event in events:
            if not isinstance(event, dict):
                continue
            t = event.get("t")
            if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t):
                continue
            if not isinstance(event.get("kind"), str) or t <= node.seen_until:
                continue
            if "node" not in event and "src" not in event:
                event["node"] = node.node
            node.last_t = max(node.last_t, t)
            self.add(event)
        node.after = max(node.after, nxt)
        return len(events) >= 1000

    def _fetch(self, node: _Node) -> dict[str, Any]:
        host, _, port = node.address.rpartition(":")
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=self.timeout_s)
        try:
            conn.request("GET", f"/events?after={node.after}")
            response = conn.getresponse()
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            # (the socket timeout bounds one read; this, the whole reply)
            deadline = time.monotonic() + 4 * self.timeout_s
            chunks: list[bytes] = []
            size = 0
            while size <= self.max_reply_bytes:
                chunk = response.read1(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if time.monotonic() > deadline:
                    raise ValueError("reply too slow")
            data = b"".join(chunks)
        finally:
            conn.close()
        if len(data) > self.max_reply_bytes:
            raise ValueError("reply too large")
        try:
            reply = json.loads(data)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(reply, dict):
            raise ValueError("not a JSON object")
        return reply


# ---------------------------------------------------------------------- the server


class VizServer(BoundedHTTPServer):
    """Serves the page and a trace (``trace_text``) or a live feed (``feed``); at most
    32 connections, each closed 30 s after it was accepted (see BoundedHTTPServer)."""

    max_connections = 32
    connection_lifetime_s = 30.0

    def __init__(
        self,
        address: tuple[str, int],
        *,
        trace_text: str | None = None,
        feed: LiveFeed | None = None,
    ) -> None:
        if (trace_text is None) == (feed is None):
            raise ValueError("serve a trace or a live feed")
        self.files = {name: page_file(name).encode() for name in PAGE_FILES}
        self.trace = trace_text.encode() if trace_text is not None else None
        self.feed = feed
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def info(self) -> bytes:
        if self.feed is not None:
            return json.dumps({"mode": "live", "nodes": list(self.feed.nodes)}).encode()
        return json.dumps({"mode": "file"}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: VizServer
    timeout = REQUEST_TIMEOUT_S
    server_version = "paxos-viz"
    sys_version = ""

    def do_GET(self) -> None:
        server = self.server
        if server.expired(self.connection):
            # Closed for its lifetime while its head trickled in: nobody reads an answer.
            self.close_connection = True
            return
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            self._send(server.files["index.html"], _CONTENT_TYPES["index.html"])
        elif path[1:] in ("viz.js", "viz.css"):
            self._send(server.files[path[1:]], _CONTENT_TYPES[path[1:]])
        elif path == "/info.json":
            self._send(server.info(), "application/json")
        elif path == "/trace.json" and server.trace is not None:
            self._send(server.trace, "application/json")
        elif path == "/favicon.ico":
            self.send_response(HTTPStatus.NO_CONTENT)
            self.end_headers()
        elif path == "/live" and server.feed is not None:
            values = parse_qs(url.query).get("after", ["0"])
            try:
                after = max(0, int(values[0]))
            except ValueError:
                self.send_error(HTTPStatus.BAD_REQUEST, "after must be a number")
                return
            self._send(server.feed.since(after), "application/json")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the page polls several times a second
