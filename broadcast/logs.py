"""structlog setup: readable console lines on a terminal, JSON lines otherwise; and
:class:`RateLimited`, for events that input from the network can repeat without bound."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = "info", *, json: bool | None = None, stream: object = None) -> None:
    """Configure structlog once per process.

    ``json=None`` picks JSON lines unless the stream is a terminal. Log lines
    go to stderr so that stdout stays for the CLI's own output (JSON lines).
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not getattr(out, "isatty", lambda: False)()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class RateLimited:
    """One log event that hostile or broken input can trigger thousands of times a second.

    ``limited(**fields)`` logs the first occurrence, then at most one line per
    ``interval_s``; each line carries ``suppressed``, the number of occurrences not
    logged since the previous line (so a burst shows up as one line and a count, and
    logging never becomes the bottleneck). Occurrences after the last line of a burst
    are only reported with the next line: exact totals belong in counters, not logs.
    Not thread-safe: use one instance per thread (e.g. per transport).
    """

    __slots__ = ("_clock", "_event", "_interval_s", "_last", "_log", "_suppressed")

    def __init__(
        self,
        event: str,
        interval_s: float = 10.0,
        *,
        level: str = "warning",
        logger: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        self._event = event
        self._interval_s = interval_s
        bound = logger if logger is not None else structlog.get_logger("broadcast")
        self._log: Callable[..., object] = getattr(bound, level)
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, **fields: object) -> bool:
        """Log this occurrence unless one was logged less than ``interval_s`` ago.

        Returns whether a line was written.
        """
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._suppressed += 1
            return False
        self._log(self._event, suppressed=self._suppressed, **fields)
        self._last = now
        self._suppressed = 0
        return True
