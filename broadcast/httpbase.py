"""The one HTTP server the runtime's local ports use (a node's ``--metrics`` port,
``paxos viz``): the standard library's threading server, bounded.

- At most ``max_connections`` connections open at once: one more is closed at once,
  before a thread is started for it.
- Every connection is closed ``connection_lifetime_s`` after it was accepted, however
  slowly it trickles its bytes: the socket timeout bounds one read only, and a client
  sending a header byte every few seconds would otherwise hold a thread and a file
  for as long as it liked (review findings on both ports).
- A client that goes away is not a traceback; any other handler error goes to
  :meth:`BoundedHTTPServer.report_error` (the standard library's traceback unless a
  subclass says otherwise).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any


class BoundedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` bounded in connections and in their lifetime."""

    daemon_threads = True
    request_queue_size = 64
    #: Connections open at once at most; more are closed unanswered.
    max_connections = 32
    #: A connection is closed this long after it was accepted.
    connection_lifetime_s = 10.0

    def __init__(self, address: tuple[str, int], handler: Any) -> None:
        #: Open connections -> when they are to be closed (their thread then ends).
        self._open: dict[Any, float] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open[request] = time.monotonic() + self.connection_lifetime_s
        if full:
            self.shutdown_request(request)  # no thread, no answer: over the bound
            return
        try:
            super().process_request(request, client_address)  # (a thread of its own)
        except BaseException:
            self._forget(request)  # (the thread did not start: socketserver closes it)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)

    def expired(self, request: Any) -> bool:
        """Whether ``request``'s connection is past its lifetime (or already gone): a
        handler does not serve what trickled in before it was closed."""
        with self._open_lock:
            deadline = self._open.get(request)
        return deadline is None or time.monotonic() >= deadline

    def service_actions(self) -> None:
        """Between accepts (every poll interval): close the connections past their
        lifetime."""
        self.close_connections(time.monotonic())

    def close_connections(self, now: float = float("inf")) -> None:
        """Close the connections due by ``now`` (all of them by default)."""
        with self._open_lock:
            late = [sock for sock, deadline in self._open.items() if now >= deadline]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # a client that went away (reset, broken pipe, timeout)
        self.report_error(exc, request, client_address)

    def report_error(self, exc: BaseException | None, request: Any, client_address: Any) -> None:
        super().handle_error(request, client_address)
