"""The chaos checkers on hand-made histories: clean ones pass, planted violations are reported."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.checkers import (
    Verdict,
    check_all,
    check_linearizable,
)
from chaos.harness import kv_payload, load_observations, save_observations
from chaos.history import History, Kind, Op, Outcome
from chaos.linearizability import RegisterOp, check_register
from paxos.types import Command


class Builder:
    """A history and the order the nodes delivered, written by hand."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.order: list[Command] = []
        self.seqs: dict[str, int] = {}

    def op(
        self,
        kind: Kind,
        key: str,
        value: str | None = None,
        *,
        call: int,
        ret: int,
        client: str = "a",
        outcome: Outcome = "ok",
        deliver: bool = True,
    ) -> Op:
        seq = self.seqs.get(client, 0) + 1
        self.seqs[client] = seq
        payload = kv_payload(kind, key, value, f"{len(self.ops) + 1}")
        op = Op(
            len(self.ops) + 1, ord(client[0]), kind, key, value, call, payload, client, seq,
            complete_ns=ret, outcome=outcome,
        )
        if deliver:
            self.order.append(Command(client, seq, payload))
            op.index = len(self.order) if outcome == "ok" else None
        self.ops.append(op)
        return op

    def stale(self, key: str, value: str | None, prefix: int, *, at: int) -> Op:
        op = Op(len(self.ops) + 1, 99, "stale_get", key, value, at, complete_ns=at,
                outcome="ok", index=prefix, node=1)
        self.ops.append(op)
        return op

    def observations(self, nodes: int = 3) -> dict[str, dict[int, Command]]:
        return {
            f"node{n}/final": {i: c for i, c in enumerate(self.order, start=1)}
            for n in range(1, nodes + 1)
        }

    def check(self) -> dict[str, Verdict]:
        return {v.name: v for v in check_all(self.ops, self.observations())}


def failing(verdicts: dict[str, Verdict]) -> set[str]:
    return {name for name, v in verdicts.items() if v.ok is not True}


def clean() -> Builder:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10, client="a")
    b.op("put", "y", "2", call=5, ret=15, client="b")  # concurrent with the first
    b.op("get", "x", call=20, ret=30, client="a")
    b.op("put", "x", "3", call=25, ret=40, client="b")
    b.op("get", "x", call=35, ret=50, client="a")  # concurrent with put 3: either is fine
    b.op("delete", "y", call=55, ret=60, client="b")
    b.op("get", "y", call=65, ret=70, client="a")
    b.stale("x", "1", 1, at=75)  # old, but exactly the state after index 1: allowed
    return b


def test_clean_history_passes_every_checker() -> None:
    verdicts = clean().check()
    assert failing(verdicts) == set(), {n: v.violations for n, v in verdicts.items()}
    assert verdicts["linearizable"].checked == 7
    assert verdicts["stale-reads"].checked == 1


def test_reads_get_their_values_from_the_order() -> None:
    b = clean()
    b.check()
    reads = [op.value for op in b.ops if op.kind == "get"]
    assert reads == ["1", "3", None]  # in builder order: put 3 comes before the second read


def test_lost_acknowledged_write_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10)
    lost = b.op("put", "x", "2", call=20, ret=30, client="b")
    b.op("get", "x", call=40, ret=50)
    b.order.remove(Command(lost.client, lost.seq, lost.payload or b""))
    # The later read now (correctly, for that order) returns "1": not linearizable either.
    verdicts = b.check()
    assert {"acknowledged", "linearizable"} <= failing(verdicts)
    assert "lost" in verdicts["acknowledged"].violations[0]


def test_duplicate_delivery_is_reported() -> None:
    b = clean()
    b.order.append(b.order[1])
    verdicts = b.check()
    assert "integrity" in failing(verdicts)
    assert "delivered 2 times" in " ".join(verdicts["integrity"].violations)


def test_reorder_against_real_time_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10, client="a")
    b.op("put", "y", "2", call=20, ret=30, client="b")  # began after the first completed
    b.order.reverse()
    for op, index in zip(b.ops, (2, 1), strict=True):
        op.index = index
    verdicts = b.check()
    assert failing(verdicts) == {"real-time"}


def test_fifo_break_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=100, client="a")
    b.op("put", "y", "2", call=0, ret=100, client="a")  # pipelined: same session, concurrent
    b.order.reverse()
    for op, index in zip(b.ops, (2, 1), strict=True):
        op.index = index
    verdicts = b.check()
    assert "fifo" in failing(verdicts)
    assert "out of order" in " ".join(verdicts["fifo"].violations)


def test_session_gap_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10)
    b.op("put", "x", "2", call=20, ret=30, outcome="unknown", deliver=False)
    b.op("put", "x", "3", call=40, ret=50)  # seq 3 delivered without seq 2
    assert "fifo" in failing(b.check())


def test_stale_linearizable_read_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10)
    b.op("put", "x", "2", call=20, ret=30)
    read = b.op("get", "x", call=40, ret=50)
    verdicts = b.check()
    assert read.value == "2" and failing(verdicts) == set()
    # The same history with the read answering from a stale replica's state:
    stale = replace(read, value="1")
    ops = [*b.ops[:2], stale]
    verdict = check_linearizable(ops)
    assert verdict.ok is False
    assert "read returning '1'" in verdict.violations[0]


def test_read_ordered_before_a_completed_write_is_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10)
    b.op("put", "x", "2", call=20, ret=30)
    b.op("get", "x", call=40, ret=50)
    b.order[1], b.order[2] = b.order[2], b.order[1]  # the read took effect before put 2
    b.ops[1].index, b.ops[2].index = 3, 2
    verdicts = b.check()
    assert {"real-time", "linearizable"} <= failing(verdicts)


def test_divergent_nodes_are_reported() -> None:
    b = clean()
    obs = b.observations()
    obs["node2/final"][3] = Command("intruder", 1, b"{}")
    verdicts = {v.name: v for v in check_all(b.ops, obs)}
    assert "agreement" in failing(verdicts)
    assert "index 3" in verdicts["agreement"].violations[0]


def test_failed_but_delivered_and_wrong_index_and_invented_are_reported() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10, outcome="failed")
    b.op("put", "x", "2", call=20, ret=30)
    b.ops[1].index = 7
    b.order.append(Command("nobody", 1, b'{"op":"put","key":"x","value":"9"}'))
    verdicts = b.check()
    assert {"acknowledged", "integrity"} <= failing(verdicts)
    text = " ".join(verdicts["acknowledged"].violations)
    assert "failed but is delivered" in text and "acknowledged at index 7" in text


def test_stale_read_inconsistent_with_its_prefix_is_reported() -> None:
    b = clean()
    b.stale("x", "3", 1, at=80)  # says it read prefix 1, but "3" was written later
    verdicts = b.check()
    assert failing(verdicts) == {"stale-reads"}


def test_unknown_operations_may_or_may_not_take_effect() -> None:
    b = Builder()
    b.op("put", "x", "1", call=0, ret=10)
    b.op("put", "x", "lost", call=20, ret=30, client="b", outcome="unknown", deliver=False)
    b.op("put", "x", "late", call=40, ret=45, client="c", outcome="unknown")
    b.op("get", "x", call=50, ret=60)  # sees "late", committed though its client gave up
    verdicts = b.check()
    assert failing(verdicts) == set()
    assert b.ops[-1].value == "late"
    assert "1 of 2 unknown" in verdicts["acknowledged"].notes


def test_history_round_trips_through_json(tmp_path: Path) -> None:
    b = clean()
    history = History(b.ops)
    path = tmp_path / "h.jsonl"
    history.save(path)
    loaded = History.load(path).ops()
    assert loaded == b.ops


def test_observations_round_trip_compactly(tmp_path: Path) -> None:
    b = clean()
    obs = b.observations()
    obs["node2/final"][3] = Command("intruder", 1, b"\xff{}")  # divergent, not UTF-8
    del obs["node3/final"][5]  # a hole
    obs["node1/stream"] = {1: b.order[0], 2: b.order[1]}  # a prefix
    save_observations(tmp_path / "obs.jsonl", obs)
    assert load_observations(tmp_path / "obs.jsonl") == obs


# ---------------------------------------------------------------------- the WGL search


def w(i: int, call: int, ret: int | None, value: str | None) -> RegisterOp:
    return RegisterOp(i, call, ret, True, value)


def r(i: int, call: int, ret: int | None, value: str | None) -> RegisterOp:
    return RegisterOp(i, call, ret, False, value)


def test_register_concurrent_read_may_see_either_value() -> None:
    assert check_register([w(1, 0, 10, "a"), w(2, 20, 40, "b"), r(3, 25, 35, "a")]).ok
    assert check_register([w(1, 0, 10, "a"), w(2, 20, 40, "b"), r(3, 25, 35, "b")]).ok


def test_register_read_after_write_must_see_it() -> None:
    assert check_register([w(1, 0, 10, "a"), r(2, 20, 30, None)]).ok is False
    assert check_register([r(1, 0, 5, "ghost")]).ok is False


def test_register_reads_cannot_go_back_in_time() -> None:
    # Two sequential reads, both concurrent with a write: new then old is not linearizable.
    ops = [w(1, 0, 5, "a"), w(2, 10, 100, "b"), r(3, 20, 30, "b"), r(4, 40, 50, "a")]
    assert check_register(ops).ok is False
    ops[3] = r(4, 40, 50, "b")
    assert check_register(ops).ok


def test_register_unknown_writes() -> None:
    # Never returned, yet read: it took effect at some point after its call.
    assert check_register([w(1, 0, None, "a"), r(2, 50, 60, "a")]).ok
    # ... but not before its call.
    assert check_register([r(2, 0, 10, "a"), w(1, 50, None, "a")]).ok is False
    # Never read: it may never have taken effect.
    assert check_register([w(1, 0, 10, "a"), w(2, 5, None, "b"), r(3, 50, 60, "a")]).ok


def test_register_search_budget_gives_undecided() -> None:
    ops = [w(i, 0, 1000, f"v{i}") for i in range(12)] + [r(99, 2000, 2001, "nope")]
    result = check_register(ops, max_steps=50)
    assert result.ok is None


def _random_history(rng: random.Random, n: int) -> list[RegisterOp]:
    """A linearizable history: each op takes effect at a distinct instant inside its window."""
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
            ops.append(w(i, call, ret, value))
        else:
            ops.append(r(i, call, ret, value))
    return ops


@pytest.mark.parametrize("seed", range(40))
def test_register_random_linearizable_histories_pass(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_history(rng, 60)
    assert check_register(ops).ok is True
    # A read of a value nobody wrote can never be explained.
    reads = [i for i, op in enumerate(ops) if not op.write and op.ret is not None]
    if reads:
        victim = rng.choice(reads)
        ops[victim] = replace(ops[victim], value="never-written")
        assert check_register(ops).ok is False


def test_checker_search_stays_linear_on_a_long_history() -> None:
    """Counted in search steps, not seconds (the time limit is in bench/speed_checks.py):
    a 5000-operation history is decided in a few steps per operation."""
    rng = random.Random(1)
    ops = _random_history(rng, 5000)
    result = check_register(ops)
    assert result.ok is True
    assert result.steps <= 20 * len(ops), result
