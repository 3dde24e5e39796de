"""``paxos kv``: run the coordination service and use it from a shell (like etcdctl).

``paxos kv serve`` is ``paxos node --service coord``. The other commands are
clients: ``put``, ``get``, ``del``, ``cas``, ``keys``, ``watch``, ``lock``,
``elect``, ``leader``, ``sessions``. Values are UTF-8 text on the command line;
output is one line per item.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click

from broadcast.client import ClusterUnavailable
from broadcast.commands import _cluster, client_key_option, cluster_option, node_command
from broadcast.errors import (
    Forbidden,
    PayloadTooLarge,
    QueryFailed,
    SessionExpired,
    WrongCluster,
)
from broadcast.kv.client import DEFAULT_TTL_MS, KvClient
from broadcast.kv.errors import KvError
from broadcast.kv.wire import Cursor
from broadcast.logs import configure
from broadcast.spec import ConfigError
from paxos.coord.commands import MAX_UINT
from paxos.coord.machine import Change

#: The longest lease the command line takes (about 24 days).
MAX_TTL_MS = 2**31 - 1


@click.group("kv")
def kv_group() -> None:
    """The coordination service: keys, sessions, locks, elections, watches."""


def _serve(**kwargs: Any) -> None:
    assert node_command.callback is not None
    node_command.callback(service="coord", **kwargs)


kv_group.add_command(
    click.Command(
        "serve",
        params=[p for p in node_command.params if p.name != "service"],
        callback=_serve,
        help="Run one node of the coordination service in the foreground (paxos node "
        "--service coord: same options). Every member of the cluster runs it.",
    )
)


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter("must be a number of seconds", ctx=ctx, param=param)
    return value


def _kv_options(command: Any) -> Any:
    command = client_key_option(command)
    command = click.option(
        "--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
        callback=_finite, help="Give up after this many seconds without progress.",
    )(command)
    command = click.option(
        "--ttl-ms", type=click.IntRange(100, MAX_TTL_MS), default=DEFAULT_TTL_MS,
        show_default=True, help="The session's lease, for ephemeral keys, locks and elections.",
    )(command)
    return cluster_option(command)


def _kv(spec: str | None, key_file: Path | None, insecure: bool, timeout: float,
        ttl_ms: int) -> KvClient:
    configure("warning")
    cluster = _cluster(spec)
    try:
        return KvClient(
            cluster, name=f"cli-{os.getpid()}", ttl_ms=ttl_ms, timeout=timeout,
            key_file=key_file, insecure=insecure,
        )
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _run(kv: KvClient, work: Any) -> Any:
    """``work()``, with the client's errors as one-line messages."""
    try:
        return work()
    except (
        KvError, ClusterUnavailable, Forbidden, QueryFailed, PayloadTooLarge, SessionExpired,
        WrongCluster,
    ) as exc:
        raise click.ClickException(str(exc)) from None
    except UnicodeEncodeError as exc:  # a key, prefix or name given in bytes that are not UTF-8
        raise click.ClickException(f"not UTF-8: {exc.object[exc.start:exc.end]!r}") from None
    finally:
        kv.close()


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return repr(value)


def _fence(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    name, sep, token = text.rpartition(":")
    if not sep or not name or not (token.isascii() and token.isdigit()) or int(token) > MAX_UINT:
        raise click.BadParameter("expected NAME:TOKEN", param_hint="--fence")
    return (name, int(token))


def _hold(what: str) -> None:
    """Wait for Ctrl-C, SIGTERM or the end of stdin."""
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    if not sys.stdin.isatty():

        def read_to_end() -> None:
            sys.stdin.read()
            done.set()

        threading.Thread(target=read_to_end, daemon=True).start()
    click.echo(f"{what}; Ctrl-C to let go", err=True)
    done.wait()


@kv_group.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--ephemeral", is_flag=True,
              help="The key lives as long as this command's session: it holds it until "
              "Ctrl-C (or end of stdin), then the key vanishes.")
@click.option("--fence", metavar="NAME:TOKEN", help="Refused unless lock NAME is held right "
              "now with TOKEN (from paxos kv lock).")
@_kv_options
def put_command(key: str, value: str, ephemeral: bool, fence: str | None, spec: str | None,
                key_file: Path | None, insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Set KEY to VALUE; prints the new version (the index of the write)."""
    fenced = _fence(fence)
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)

    def work() -> None:
        version = kv.put(key, value.encode(), ephemeral=ephemeral, fence=fenced)
        click.echo(version)
        if ephemeral:
            sys.stdout.flush()
            _hold(f"{key} is ephemeral (session {kv.session})")

    _run(kv, work)


@kv_group.command("get")
@click.argument("key")
@click.option("--stale", is_flag=True, help="Read one node's state (faster, maybe behind) "
              "instead of a linearizable read through the log.")
@click.option("--version", "show_version", is_flag=True, help="Print the version too.")
@_kv_options
def get_command(key: str, stale: bool, show_version: bool, spec: str | None,
                key_file: Path | None, insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Print KEY's value; exit 1 if there is none."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    found = _run(kv, lambda: kv.get(key, stale=stale))
    if found is None:
        click.echo(f"Error: no key {key!r}", err=True)
        sys.exit(1)
    value, version = found
    click.echo(f"{version} {_text(value)}" if show_version else _text(value))


@kv_group.command("del")
@click.argument("key")
@click.option("--fence", metavar="NAME:TOKEN", help="As for put.")
@_kv_options
def del_command(key: str, fence: str | None, spec: str | None, key_file: Path | None,
                insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Delete KEY; exit 1 if there was none."""
    fenced = _fence(fence)
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    if not _run(kv, lambda: kv.delete(key, fence=fenced)):
        click.echo(f"Error: no key {key!r}", err=True)
        sys.exit(1)


@kv_group.command("cas")
@click.argument("key")
@click.argument("expected", type=click.IntRange(0, MAX_UINT))
@click.argument("value")
@_kv_options
def cas_command(key: str, expected: int, value: str, spec: str | None, key_file: Path | None,
                insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Set KEY to VALUE iff its version is EXPECTED (0: iff absent); prints the new
    version, or exits 1 with the current one."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    ok, version = _run(kv, lambda: kv.cas(key, expected, value.encode()))
    if not ok:
        click.echo(f"Error: version is {version}, not {expected}", err=True)
        sys.exit(1)
    click.echo(version)


@kv_group.command("keys")
@click.argument("prefix", default="")
@_kv_options
def keys_command(prefix: str, spec: str | None, key_file: Path | None, insecure: bool,
                 timeout: float, ttl_ms: int) -> None:
    """List the keys under PREFIX (one node's view)."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    for key in _run(kv, lambda: kv.keys(prefix)):
        click.echo(key)


def _change_line(c: Change) -> str:
    parts = [str(c.index), c.kind, c.key or "-", f"session={c.session}"]
    if c.version:
        parts.append(f"version={c.version}")
    if c.value is not None:
        parts.append(_text(c.value))
    return " ".join(parts)


@kv_group.command("watch")
@click.argument("prefix", default="")
@click.option("--since", type=click.IntRange(1, MAX_UINT), default=None,
              help="From this index (default: changes from now on).")
@click.option("--count", type=click.IntRange(1), default=None, help="Stop after COUNT.")
@_kv_options
def watch_command(prefix: str, since: int | None, count: int | None, spec: str | None,
                  key_file: Path | None, insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Print each change under PREFIX, in log order: INDEX KIND KEY session=S ...

    Resumable without gap or repeat: --since the last INDEX printed (a change
    at that index printed already is not repeated... give INDEX+1 to be sure)."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)

    def work() -> None:
        start = since
        if start is None:
            start = kv.applied_index() + 1
        printed = 0
        with kv.watch(prefix, since=Cursor(start)) as watch:
            for change in watch:
                click.echo(_change_line(change))
                sys.stdout.flush()
                printed += 1
                if count is not None and printed >= count:
                    return

    _run(kv, work)


@kv_group.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--wait", type=click.FloatRange(0), default=None,
              help="Give up after this many seconds (default: wait for ever).")
@_kv_options
def lock_command(name: str, command: tuple[str, ...], wait: float | None, spec: str | None,
                 key_file: Path | None, insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Take lock NAME, print its fencing token, and hold it: while COMMAND runs (with
    PAXOS_LOCK=NAME:TOKEN in its environment, for --fence), or until Ctrl-C."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)

    def work() -> int:
        lock = kv.lock(name, timeout=wait)
        click.echo(f"locked {name} token {lock.token}")
        sys.stdout.flush()
        code = 0
        if command:
            env = dict(os.environ, PAXOS_LOCK=f"{name}:{lock.token}")
            try:
                code = subprocess.call(list(command), env=env)
            except OSError as exc:  # (the lock goes with the session, which close() ends)
                raise click.ClickException(f"cannot run {command[0]}: {exc.strerror}") from None
        else:
            _hold(f"holding {name}")
        lock.release()
        return code

    sys.exit(_run(kv, work))


@kv_group.command("elect")
@click.argument("name")
@click.argument("identity")
@click.option("--wait", type=click.FloatRange(0), default=None,
              help="Give up after this many seconds (default: wait for ever).")
@_kv_options
def elect_command(name: str, identity: str, wait: float | None, spec: str | None,
                  key_file: Path | None, insecure: bool, timeout: float, ttl_ms: int) -> None:
    """Stand for leader of NAME as IDENTITY; once elected print the term and lead until
    Ctrl-C (then resign: the next candidate is elected)."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)

    def work() -> None:
        election = kv.election(name, identity.encode())
        term = election.campaign(timeout=wait)
        click.echo(f"elected {name} term {term}")
        sys.stdout.flush()
        _hold(f"leading {name}")
        election.resign()

    _run(kv, work)


@kv_group.command("leader")
@click.argument("name")
@_kv_options
def leader_command(name: str, spec: str | None, key_file: Path | None, insecure: bool,
                   timeout: float, ttl_ms: int) -> None:
    """Print who leads NAME and the term; exit 1 if nobody does."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    found = _run(kv, lambda: kv.leader(name))
    if found is None:
        click.echo(f"Error: nobody leads {name!r}", err=True)
        sys.exit(1)
    click.echo(f"{_text(found[0])} term {found[1]}")


@kv_group.command("sessions")
@_kv_options
def sessions_command(spec: str | None, key_file: Path | None, insecure: bool, timeout: float,
                     ttl_ms: int) -> None:
    """List the live sessions: ID NAME ttl=MS last=INDEX."""
    kv = _kv(spec, key_file, insecure, timeout, ttl_ms)
    for s in _run(kv, kv.sessions):
        click.echo(f"{s.id} {s.name} ttl={s.ttl_ms} last={s.last}")
