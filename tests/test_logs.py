"""The library's logging: stderr when the application configured nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path


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
    from broadcast import Node, local_cluster
    from broadcast.commands import free_base_port

    cluster = local_cluster(1, free_base_port(1))
    with Node(1, cluster, "data") as node:
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
