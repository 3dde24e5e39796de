"""structlog setup: readable console lines on a terminal, JSON lines otherwise.

Two rules for the library's own log lines:

* They go to stderr, never stdout, even when the application never configured
  structlog (whose default prints to stdout). Library modules get their loggers
  from :func:`get_logger`; once the application configures structlog (itself or
  through :func:`configure`), those loggers follow its configuration.
* A warning that can repeat thousands of times a second (a flood of junk frames)
  goes through :class:`RateLimited`: one line at once, then at most one line per
  interval carrying how many were suppressed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import structlog

LEVELS = ("debug", "info", "warning", "error")


def _processors(json: bool) -> list[structlog.typing.Processor]:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]


def _is_tty(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def configure(level: str = "info", *, json: bool | None = None, stream: object = None) -> None:
    """Configure structlog once per process.

    ``json=None`` picks JSON lines unless the stream is a terminal. Log lines
    go to stderr so that stdout stays for the CLI's own output (JSON lines).
    """
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not _is_tty(out)
    structlog.configure(
        processors=_processors(json),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (a test may swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class LibraryLogger:
    """A library module's logger: stderr while structlog is unconfigured, else structlog's own.

    The choice is made at every call (reading one flag), so an application that
    configures structlog after importing this package is followed from then on.
    Unconfigured, lines at ``info`` and above go to stderr, as JSON unless
    stderr is a terminal.
    """

    __slots__ = ("_configured", "_fallback", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        # structlog's lazy proxy: it reads the application's configuration on each use.
        self._configured: Any = structlog.get_logger(name)
        self._fallback: Any = None

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._configured
        if self._fallback is None:
            self._fallback = structlog.wrap_logger(
                structlog.PrintLogger(_CurrentStderr()),  # type: ignore[arg-type]
                processors=_processors(json=not _is_tty(sys.stderr)),
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                cache_logger_on_first_use=True,
            )
        return self._fallback

    def debug(self, event: str, **fields: Any) -> Any:
        return self._target().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> Any:
        return self._target().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> Any:
        return self._target().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> Any:
        return self._target().error(event, **fields)

    def exception(self, event: str, **fields: Any) -> Any:
        return self._target().exception(event, **fields)


def get_logger(name: str) -> LibraryLogger:
    """The logger every module of this package uses (see :class:`LibraryLogger`)."""
    return LibraryLogger(name)


class RateLimited:
    """Log a repetitive event at most once per ``interval_s``, counting what was left out.

    The first :meth:`hit` logs at once; later hits log only when ``interval_s``
    has passed since the last line. Every line carries the hit's fields plus
    ``suppressed`` (hits not logged since the previous line) and ``total``
    (all hits so far). :meth:`flush` writes a last line for hits suppressed
    since the previous one (call it when shutting down).
    """

    def __init__(
        self,
        logger: Any,
        event: str,
        interval_s: float = 5.0,
        *,
        level: str = "warning",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}")
        self.logger = logger
        self.event = event
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        self.total = 0
        self.suppressed = 0
        self._last_line: float | None = None
        self._last_fields: dict[str, Any] = {}

    def hit(self, **fields: Any) -> bool:
        """Count one occurrence; log it if the interval allows. True if a line was written."""
        self.total += 1
        now = self.clock()
        if self._last_line is not None and now - self._last_line < self.interval_s:
            self.suppressed += 1
            self._last_fields = fields
            return False
        self._emit(now, fields)
        return True

    def flush(self) -> bool:
        """Log the hits suppressed since the last line, if any. True if a line was written."""
        if not self.suppressed:
            return False
        self._emit(self.clock(), self._last_fields)
        return True

    def _emit(self, now: float, fields: dict[str, Any]) -> None:
        getattr(self.logger, self.level)(
            self.event, **fields, suppressed=self.suppressed, total=self.total
        )
        self.suppressed = 0
        self._last_line = now
        self._last_fields = {}
