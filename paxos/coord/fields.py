"""Type checks of decoded msgpack fields, shared by the coordination service's decoders
(commands, snapshots, answers on the wire): each raises its decoder's own error."""

from __future__ import annotations


def natural(x: object, error: type[Exception]) -> int:
    if type(x) is not int or x < 0:
        raise error(f"expected a natural number, got {type(x).__name__}")
    return x


def text(x: object, error: type[Exception]) -> str:
    if type(x) is not str:
        raise error(f"expected str, got {type(x).__name__}")
    return x


def blob(x: object, error: type[Exception]) -> bytes:
    if type(x) is not bytes:
        raise error(f"expected bytes, got {type(x).__name__}")
    return x
