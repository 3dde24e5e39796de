"""``python -m bench.speed_checks``: the speed limits that used to be asserted in tests.

A test that asserts "this takes under a second" fails on a loaded machine and
passes on a fast one for the wrong reasons, so the tests check what these
operations do (and bound their work where that can be counted: search steps,
memory) and the wall-clock limits live here, run on purpose, on a quiet machine:

* ``register-checker``: the linearizability checker decides a 5000-operation
  linearizable register history in under 10 s;
* ``codec-bombs``: each msgpack bomb (a length field claiming gigabytes, nesting
  beyond the unpacker's stack) is refused in under 1 s;
* ``transport-hwm``: a node's send to a peer whose queue is full returns in
  under 1 s (it drops the frame, it never blocks).

Prints one JSON object per check on stdout; exits 1 if any limit is exceeded.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable

from chaos.linearizability import RegisterOp, check_register
from paxos.codec import CodecError, decode

#: The bombs of tests/test_codec.py (the test checks they are refused without allocating).
BOMBS = [
    b"\xdd\x80\x00\x00\x00",
    b"\xdd\xff\xff\xff\xff",
    b"\x97\x01\x03\x01\x92\x03\x02\x01\xdd\x80\x00\x00\x00",
    b"\xc6\x7f\xff\xff\xff",
    b"\xdb\x7f\xff\xff\xff",
    b"\xdf\x7f\xff\xff\xff",
    b"\xc9\x7f\xff\xff\xff\x01",
    b"\x91" * 100_000,
]


def _register_history(rng: random.Random, n: int) -> list[RegisterOp]:
    """A linearizable history: each op takes effect at a distinct instant in its window."""
    ops = []
    value: str | None = None
    for i in range(n):
        point = i * 10 + 5
        call = point - rng.randint(0, 40)
        ret: int | None = point + rng.randint(0, 40)
        if rng.random() < 0.5:
            value = f"v{i}"
            if rng.random() < 0.1:
                ret = None
            ops.append(RegisterOp(i, call, ret, True, value))
        else:
            ops.append(RegisterOp(i, call, ret, False, value))
    return ops


def register_checker() -> tuple[float, float]:
    result = check_register(_register_history(random.Random(1), 5000))
    assert result.ok is True, result
    return result.seconds, 10.0


def codec_bombs() -> tuple[float, float]:
    slowest = 0.0
    for bomb in BOMBS:
        start = time.perf_counter()
        try:
            decode(bomb)
        except CodecError:
            pass
        else:
            raise AssertionError(f"bomb {bomb[:16]!r} decoded")
        slowest = max(slowest, time.perf_counter() - start)
    return slowest, 1.0


def transport_hwm() -> tuple[float, float]:
    from broadcast.local import free_base_port
    from broadcast.transport import NodeTransport, TransportConfig

    base = free_base_port(2)
    addresses = {1: f"127.0.0.1:{base + 1}", 2: f"127.0.0.1:{base + 2}"}
    tiny = TransportConfig(sndhwm=2, rcvhwm=2)
    cluster = bytes(16)
    a = NodeTransport(1, addresses[1], {2: addresses[2]}, tiny, cluster_id=cluster)
    b = NodeTransport(2, addresses[2], {1: addresses[1]}, tiny, cluster_id=cluster)
    try:
        deadline = time.monotonic() + 15
        while not b.poll(10):  # connected once a frame gets through
            a.send(2, b"ping")
            assert time.monotonic() < deadline, "the transports never connected"
        frame = b"z" * (256 * 1024)
        refused = 0
        slowest = 0.0
        while refused < 10:  # b does not read: queues and TCP buffers fill up
            assert time.monotonic() < deadline, "sends never hit the high-water mark"
            start = time.perf_counter()
            refused += not a.send(2, frame)
            slowest = max(slowest, time.perf_counter() - start)
        return slowest, 1.0
    finally:
        a.close()
        b.close()


CHECKS: dict[str, Callable[[], tuple[float, float]]] = {
    "register-checker": register_checker,
    "codec-bombs": codec_bombs,
    "transport-hwm": transport_hwm,
}


def main() -> int:
    from broadcast.logs import configure

    configure("warning")  # stdout is for the results
    failed = 0
    for name, check in CHECKS.items():
        seconds, limit = check()
        ok = seconds < limit
        failed += not ok
        print(json.dumps({"check": name, "seconds": round(seconds, 4), "limit_s": limit,
                          "ok": ok}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
