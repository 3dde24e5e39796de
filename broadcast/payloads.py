"""Where ``paxos broadcast`` gets its payloads: arguments, stdin lines, files or a generator.

Every payload is bounded by a byte limit, and nothing larger than that limit is
ever read into memory: a file's size is checked before it is read, and stdin is
read one bounded line at a time. Problems are :class:`PayloadError` with a
one-line message for the user.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


class PayloadError(ValueError):
    """A payload cannot be broadcast (too large, bad base64, unreadable file)."""


def b64_length(limit: int) -> int:
    """The length of the base64 text of ``limit`` bytes (padding included)."""
    return 4 * ((limit + 2) // 3)


def _decode_b64(text: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"{what} is not valid base64 ({exc})") from None


def _too_large(what: str, size: int | None, limit: int) -> PayloadError:
    got = f" ({size} bytes)" if size is not None else ""
    return PayloadError(f"{what}{got} is larger than the payload limit of {limit} bytes")


def argument_payload(message: str, position: int, *, b64: bool, limit: int) -> bytes:
    """MESSAGE argument number ``position`` as bytes (the bytes given on the command line)."""
    what = f"MESSAGE {position}"
    data = os.fsencode(message)  # argv's own bytes, even when they are not UTF-8
    if b64:
        if len(data) > b64_length(limit):
            raise _too_large(what, None, limit)
        data = _decode_b64(data, what)
    if len(data) > limit:
        raise _too_large(what, len(data), limit)
    return data


def check_file(path: Path, limit: int) -> None:
    """Refuse a file larger than ``limit`` from its size alone, before reading it."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PayloadError(f"--file {path}: {exc.strerror or exc}") from None
    if size > limit:
        raise _too_large(f"--file {path}", size, limit)


def read_file(path: Path, limit: int) -> bytes:
    """The whole file as one payload, reading at most ``limit + 1`` bytes."""
    check_file(path, limit)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)  # a file that grew, or a pipe with no size
    except OSError as exc:
        raise PayloadError(f"--file {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _too_large(f"--file {path}", None, limit)
    return data


def stdin_payloads(stream: BinaryIO, *, b64: bool, limit: int) -> Iterator[bytes]:
    """One payload per line of ``stream`` (``\\n`` or ``\\r\\n`` ends a line).

    Reads one line at a time and at most a payload's worth of bytes (its
    base64 text with ``b64``) plus the line end: a longer line raises
    :class:`PayloadError` without the rest of it being read.
    """
    max_line = b64_length(limit) if b64 else limit
    number = 0
    while True:
        line = stream.readline(max_line + 2)
        if not line:
            return
        number += 1
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        what = f"stdin line {number}"
        if len(line) > max_line:
            raise _too_large(what, None, limit)
        if b64:
            line = _decode_b64(line, what)
            if len(line) > limit:
                raise _too_large(what, len(line), limit)
        yield line


def generated(count: int, size: int, limit: int) -> Iterator[bytes]:
    """``count`` distinct messages of ``size`` bytes (longer if ``size`` is below the stem)."""
    largest = max(size, len(f"msg-{count}-"))
    if largest > limit:
        raise PayloadError(
            f"--count {count} --size {size} makes messages of up to {largest} bytes, "
            f"more than the payload limit of {limit} bytes"
        )
    return _generate(count, size)


def _generate(count: int, size: int) -> Iterator[bytes]:
    for i in range(1, count + 1):
        stem = f"msg-{i}-"
        yield (stem + "x" * max(0, size - len(stem))).encode()[: max(size, len(stem))]


def payloads(
    messages: Iterable[str],
    stdin: BinaryIO,
    *,
    b64: bool,
    limit: int,
) -> Iterator[bytes]:
    """The MESSAGE arguments in order, each ``-`` replaced by the lines of ``stdin``.

    Arguments are checked (size, base64) here, before the first payload is
    taken; stdin lines as they are read.
    """
    parts: list[bytes | None] = [
        None if message == "-" else argument_payload(message, n, b64=b64, limit=limit)
        for n, message in enumerate(messages, 1)
    ]
    return _interleave(parts, stdin, b64, limit)


def _interleave(
    parts: list[bytes | None], stdin: BinaryIO, b64: bool, limit: int
) -> Iterator[bytes]:
    for part in parts:
        if part is None:
            yield from stdin_payloads(stdin, b64=b64, limit=limit)
        else:
            yield part


def files(paths: Iterable[Path], limit: int) -> Iterator[bytes]:
    """Each file as one payload; every size is checked here, before any file is read."""
    checked = list(paths)
    for path in checked:
        check_file(path, limit)
    return (read_file(path, limit) for path in checked)
