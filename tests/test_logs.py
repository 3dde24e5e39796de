"""broadcast.logs.RateLimited: one line per interval, carrying the count it suppressed."""

from __future__ import annotations

import pytest

from broadcast.logs import RateLimited


class Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def warning(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))

    info = warning


def test_first_occurrence_then_one_line_per_interval_with_the_suppressed_count() -> None:
    now = [100.0]
    out = Recorder()
    limited = RateLimited("x.dropped", 10.0, logger=out, clock=lambda: now[0])
    assert limited(peer="a")
    assert not limited(peer="b")
    assert not limited(peer="c")
    now[0] = 109.9
    assert not limited(peer="d")
    now[0] = 110.0
    assert limited(peer="e")
    now[0] = 500.0
    assert limited(peer="f")  # a quiet spell: the next occurrence is logged at once
    assert out.lines == [
        ("x.dropped", {"suppressed": 0, "peer": "a"}),
        ("x.dropped", {"suppressed": 3, "peer": "e"}),
        ("x.dropped", {"suppressed": 0, "peer": "f"}),
    ]


def test_level_is_checked() -> None:
    out = Recorder()
    RateLimited("y", level="info", logger=out)(k=1)
    assert out.lines == [("y", {"suppressed": 0, "k": 1})]
    with pytest.raises(ValueError):
        RateLimited("z", level="loud")
