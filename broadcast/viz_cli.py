"""``paxos viz``: see a run in a browser.

* ``paxos viz TRACE.json`` serves the visualiser and the trace on a local port;
* ``paxos viz TRACE.json --out page.html`` writes one self-contained HTML file;
* ``paxos viz --live --node 1=HOST:PORT ...`` serves the page animating live
  nodes, whose ``/events`` endpoints it polls (``--record FILE`` keeps what it
  saw as a trace file when it stops).
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from broadcast import tracefile
from broadcast.vizserver import LiveFeed, VizServer, self_contained

DEFAULT_PORT = 8470


def parse_node(spec: str) -> tuple[int, str]:
    """``ID=HOST:PORT`` -> (id, "HOST:PORT"); ValueError with the reason otherwise."""
    ident, sep, address = spec.partition("=")
    if not sep:
        raise ValueError(f"{spec!r}: expected ID=HOST:PORT")
    try:
        node = int(ident)
    except ValueError:
        raise ValueError(f"{spec!r}: the node id {ident!r} is not a number") from None
    if node < 1:
        raise ValueError(f"{spec!r}: node ids start at 1")
    host, colon, port_text = address.rpartition(":")
    if not colon or not host.strip("[]"):
        raise ValueError(f"{spec!r}: expected ID=HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{spec!r}: the port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"{spec!r}: port {port} is out of range")
    return node, address


def _nodes(specs: tuple[str, ...]) -> dict[int, str]:
    nodes: dict[int, str] = {}
    for spec in specs:
        try:
            node, address = parse_node(spec)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--node") from None
        if node in nodes:
            raise click.BadParameter(f"node {node} is given twice", param_hint="--node")
        nodes[node] = address
    return nodes


def _listen(
    host: str, port: int, trace_text: str | None = None, feed: LiveFeed | None = None
) -> VizServer:
    try:
        return VizServer((host, port), trace_text=trace_text, feed=feed)
    except OSError as exc:
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from None


def _serve(server: VizServer, what: str) -> None:
    """Serve until Ctrl-C or SIGTERM."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    click.echo(f"paxos viz: {what} at {server.url} (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()


@click.command("viz")
@click.argument(
    "trace", required=False, type=click.Path(dir_okay=False, path_type=Path), metavar="TRACE.json"
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write one self-contained HTML file (page and trace inlined) and exit.",
)
@click.option("--live", is_flag=True, help="Animate live nodes (give each with --node).")
@click.option(
    "--node",
    "node_specs",
    multiple=True,
    metavar="ID=HOST:PORT",
    help="A live node's metrics address, which serves /events (repeat for each node).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Live: write the events seen to FILE as a trace when stopped.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to serve on (0: any free port).",
)
def viz_command(
    trace: Path | None,
    out: Path | None,
    live: bool,
    node_specs: tuple[str, ...],
    record: Path | None,
    host: str,
    port: int,
) -> None:
    """See a run in a browser: a simulator trace (paxos sim --seed N --trace-json
    FILE), or live nodes (--live).

    Nodes in a circle with their roles and ballots, messages in flight, each
    node's log filling and being chosen, partitions, crashes, and the clients'
    commands in the total order; play, pause, step, speed and a time scrubber.
    """
    if live:
        if trace is not None or out is not None:
            raise click.UsageError("--live shows live nodes: give no trace file and no --out")
        if not node_specs:
            raise click.UsageError("--live needs the nodes: --node ID=HOST:PORT for each")
        nodes = _nodes(node_specs)
        if record is not None and not record.absolute().parent.is_dir():
            raise click.BadParameter(
                f"no directory {str(record.absolute().parent)!r}", param_hint="--record"
            )
        feed = LiveFeed(nodes)
        server = _listen(host, port, feed=feed)
        feed.start()
        try:
            _serve(server, f"live view of {len(nodes)} nodes")
        finally:
            feed.stop()
            if record is not None:
                doc = tracefile.live_trace(nodes, feed.events(), feed.truncated)
                tracefile.write(record, doc)
                click.echo(f"paxos viz: {len(doc['events'])} events recorded in {record}")
        return
    if node_specs or record is not None:
        raise click.UsageError("--node and --record go with --live")
    if trace is None:
        raise click.UsageError("give a trace file (paxos sim --seed N --trace-json FILE) or --live")
    text, _ = tracefile.read(trace)
    if out is not None:
        try:
            out.write_text(self_contained(text), encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
        click.echo(f"paxos viz: wrote {out}")
        return
    server = _listen(host, port, trace_text=text)
    with contextlib.suppress(BrokenPipeError):
        _serve(server, f"{trace}")
