"""The library's logging: stderr when the application configured nothing, and rate limiting."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from broadcast.logs import RateLimited


class Recorder:
    """A logger that keeps (level, event, fields) of every call."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limited_logs_the_first_hit_then_one_line_per_interval() -> None:
    logger, clock = Recorder(), FakeClock()
    drops = RateLimited(logger, "frame.dropped", interval_s=5.0, clock=clock)
    assert drops.hit(reason="a") is True
    for _ in range(99):  # a flood within the interval: nothing more is written
        clock.now += 0.01
        assert drops.hit(reason="b") is False
    clock.now += 5.0
    assert drops.hit(reason="c") is True
    clock.now += 1.0
    drops.hit(reason="d")
    drops.hit(reason="e")
    assert logger.lines == [
        ("warning", "frame.dropped", {"reason": "a", "suppressed": 0, "total": 1}),
        ("warning", "frame.dropped", {"reason": "c", "suppressed": 99, "total": 101}),
    ]
    assert drops.total == 103 and drops.suppressed == 2
    # Shutting down: the last suppressed hits are reported once, with the latest fields.
    assert drops.flush() is True
    assert logger.lines[-1] == (
        "warning", "frame.dropped", {"reason": "e", "suppressed": 2, "total": 103}
    )
    assert drops.flush() is False
    # The interval counts from the last line written, flush included.
    clock.now += 4.9
    assert drops.hit(reason="f") is False
    clock.now += 0.1
    assert drops.hit(reason="g") is True
    assert logger.lines[-1][2] == {"reason": "g", "suppressed": 1, "total": 105}


def test_rate_limited_level_and_arguments() -> None:
    logger = Recorder()
    RateLimited(logger, "slow", 0.0, level="info", clock=FakeClock()).hit()
    assert logger.lines == [("info", "slow", {"suppressed": 0, "total": 1})]
    with pytest.raises(ValueError):
        RateLimited(logger, "x", -1.0)
    with pytest.raises(ValueError):
        RateLimited(logger, "x", level="loud")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


EMBEDDED_NODE = textwrap.dedent(
    """
    from pathlib import Path

    from broadcast import Node, local_cluster
    from broadcast.local import cluster_file, free_base_port

    cluster = cluster_file(Path("."), local_cluster(1, free_base_port(1)))  # CURVE keys
    with Node(1, cluster, "node1") as node:
        assert node.broadcast(b"x", timeout=60).index == 1
    """
)


def test_an_embedded_node_logs_to_stderr_when_the_application_configured_nothing(
    tmp_path: Path,
) -> None:
    out = run_python(EMBEDDED_NODE, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    events = [json.loads(line)["event"] for line in out.stderr.splitlines()]
    assert "node.recovered" in events and "node.stopped" in events


def test_an_application_s_structlog_configuration_is_respected(tmp_path: Path) -> None:
    # The application sends log lines to stdout on purpose, in its own format.
    out = run_python(
        textwrap.dedent(
            """
            import structlog, sys
            structlog.configure(
                processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
                logger_factory=structlog.PrintLoggerFactory(sys.stdout),
            )
            """
        )
        + EMBEDDED_NODE,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "event='node.recovered'" in out.stdout
    assert "node.recovered" not in out.stderr
