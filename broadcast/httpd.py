"""A node's HTTP port (``paxos node --metrics HOST:PORT``): metrics, health, live events.

- ``GET /metrics``: Prometheus text format (prometheus-client).
- ``GET /healthz``: 200 while the node's loop turns (it answered within 2 s), else 503.
- ``GET /readyz[?max_lag=SLOTS]``: 200 when the node sees a leader with a quorum (it
  leads one, or follows one heard from lately) and has learned the chosen prefix
  up to within ``max_lag`` slots (default 100) of the highest any node announced;
  503 with the reasons otherwise. For load balancers and orchestrators.
- ``GET /events?after=N``: the node's newest events for the live visualiser (see
  :class:`broadcast.metrics.EventRing`); the node records them only while somebody
  reads them (a request in the last 10 s).

Nothing here is authenticated: it binds to 127.0.0.1 unless told otherwise, and it
serves no payload bytes, only indexes, counts, client names and protocol state.
Every request is bounded: GET only, a 5 s socket timeout, at most 16 at a time
(more are answered 503 at once), replies of at most 1000 events. Every connection
is bounded too: at most 32 open at once (more are closed at once, before a thread
is started for them) and each is closed 10 s after it was accepted, however it
trickles its bytes (a slowloris client holds neither a thread nor a file for long).
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broadcast.httpbase import BoundedHTTPServer
from broadcast.logs import RateLimited
from broadcast.metrics import EVENTS_PER_REPLY, NodeMetrics, Reading
from broadcast.spec import ConfigError

log = structlog.get_logger("paxos.httpd")

DEFAULT_READY_LAG = 100
#: How long a health check or scrape waits for the node's loop to answer.
LOOP_ANSWER_S = 2.0
_MAX_CONCURRENT = 16
_SOCKET_TIMEOUT_S = 5.0
#: Connections open at once (each costs a thread and a file while it is open).
_MAX_CONNECTIONS = 32
#: A connection is closed this long after it was accepted, whatever it is doing.
_CONNECTION_LIFETIME_S = 10.0


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1) -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--metrics {text!r}: expected HOST:PORT or PORT") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics {text!r}: port out of range")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NodeHttp:
    """The HTTP endpoint of one node, served by a background thread."""

    def __init__(
        self,
        listen: str,
        metrics: NodeMetrics,
        read: Callable[[float], Reading | None],
        node_id: int,
        answers: Callable[[float], bool] | None = None,
    ) -> None:
        host, port = parse_listen(listen)
        self.metrics = metrics
        self.read = read
        #: Whether the loop runs a piece of work within the time given (health): a
        #: reading may fail (out of files) while the loop turns.
        self.answers = answers or (lambda timeout: read(timeout) is not None)
        self.node_id = node_id
        self._slots = threading.BoundedSemaphore(_MAX_CONCURRENT)
        self._errors = RateLimited(log, "metrics.request_failed", interval_s=5.0)
        metrics.registry.register(metrics.collector(lambda: read(LOOP_ANSWER_S)))
        try:
            self.server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"--metrics {listen}: cannot listen: {exc.strerror or exc}") from None
        self.server.owner = self
        self.address = f"{host}:{self.server.server_address[1]}"
        if not _is_loopback(host):
            log.warning(
                "metrics.exposed",
                node=node_id,
                address=self.address,
                warning="the metrics port is not loopback and has no authentication: anyone "
                "who reaches it reads this node's state (no payloads)",
            )
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"paxos-http-{node_id}", daemon=True
        )

    def start(self) -> NodeHttp:
        self._thread.start()
        log.info("metrics.listening", node=self.node_id, address=self.address)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()  # kept-alive ones too: the node is gone
        self._errors.flush()

    # ------------------------------------------------------------------ answers

    def health(self) -> tuple[int, dict[str, Any]]:
        if not self.answers(LOOP_ANSWER_S):
            return 503, {"status": "stuck", "node": self.node_id,
                         "reason": f"the node's loop did not answer within {LOOP_ANSWER_S} s"}
        return 200, {"status": "ok", "node": self.node_id}

    def readiness(self, max_lag: int) -> tuple[int, dict[str, Any]]:
        reading = self.read(LOOP_ANSWER_S)
        if reading is None:
            return 503, {"ready": False, "node": self.node_id,
                         "reasons": ["the node's loop does not answer"]}
        reasons = []
        if not reading.leader_ok:
            reasons.append(
                "no quorum: leading without hearing from a quorum"
                if reading.role == "leader"
                else "no leader heard from lately"
            )
        lag = reading.known_commit - reading.commit
        if lag > max_lag:
            reasons.append(f"behind: {lag} chosen slots not learned yet (max {max_lag})")
        body = {
            "ready": not reasons,
            "node": self.node_id,
            "role": reading.role,
            "leader": reading.leader or None,
            "commit": reading.commit,
            "known_commit": reading.known_commit,
            "delivered": reading.delivered,
            "reasons": reasons,
        }
        return (503 if reasons else 200), body

    def events_after(self, after: int) -> dict[str, Any]:
        self.metrics.want_events(time.monotonic())
        first, last, events = self.metrics.ring.after(after, EVENTS_PER_REPLY)
        return {"node": self.node_id, "incarnation": self.metrics.incarnation, "first": first,
                "next": last, "events": events}


class _Server(BoundedHTTPServer):
    allow_reuse_address = True
    max_connections = _MAX_CONNECTIONS
    connection_lifetime_s = _CONNECTION_LIFETIME_S
    owner: NodeHttp

    def report_error(self, exc: BaseException | None, request: Any, client_address: Any) -> None:
        # One line, rate-limited, not a traceback on stderr per connection.
        self.owner._errors.hit(
            node=self.owner.node_id, error=f"{type(exc).__name__}: {exc}"[:300]
        )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = _SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.server.expired(self.connection):
            # Closed for its lifetime while its head trickled in: the stream "ended",
            # so http.server would serve what it has. Nobody is left to read it.
            self.close_connection = True
            return
        if not owner._slots.acquire(blocking=False):
            self._send(503, b"busy\n", "text/plain")
            return
        try:
            self._route(owner)
        finally:
            owner._slots.release()

    def _route(self, owner: NodeHttp) -> None:
        url = urlsplit(self.path)
        try:
            query = parse_qs(url.query, max_num_fields=4)
        except ValueError:
            self._json(400, {"error": "at most 4 query parameters"})
            return
        if url.path == "/metrics":
            body = generate_latest(owner.metrics.registry)
            self._send(200, body, CONTENT_TYPE_LATEST)
        elif url.path == "/healthz":
            self._json(*owner.health())
        elif url.path == "/readyz":
            max_lag = _int_arg(query, "max_lag", DEFAULT_READY_LAG)
            if max_lag is None:
                self._json(400, {"error": "max_lag must be an integer >= 0"})
                return
            self._json(*owner.readiness(max_lag))
        elif url.path == "/events":
            after = _int_arg(query, "after", 0)
            if after is None:
                self._json(400, {"error": "after must be an integer >= 0"})
                return
            self._json(200, owner.events_after(after))
        else:
            self._json(404, {"error": "not found",
                             "paths": ["/metrics", "/healthz", "/readyz", "/events"]})

    def _json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would flood the node's log


def _int_arg(query: dict[str, list[str]], name: str, default: int) -> int | None:
    values = query.get(name)
    if not values:
        return default
    text = values[0]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # not '²', not '٣'
        return None
    return int(text)
