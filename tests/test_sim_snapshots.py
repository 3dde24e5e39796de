"""The simulator exercises snapshots where they break things: in (almost) every run.

A fault that never happens checks nothing. These tests make sure that, with the
defaults every ``paxos sim`` run draws from, snapshots, compaction, installs and
crashes in the middle of them actually happen, and that runs with them pass.
"""

from __future__ import annotations

from functools import cache

from paxos.sim.runner import SimConfig, SimResult, run

SEEDS = range(1, 201)


@cache
def _results() -> tuple[SimResult, ...]:
    return tuple(run(SimConfig(seed)) for seed in SEEDS)


def test_runs_with_snapshots_installs_and_crashes_in_them_pass() -> None:
    bad = [(r.seed, r.violations[:2], r.liveness_failures[:2]) for r in _results() if not r.ok]
    assert not bad


def test_every_run_that_delivers_takes_snapshots() -> None:
    # (a run whose clients get nothing delivered under its faults has nothing to snapshot)
    without = [r.seed for r in _results() if r.delivered >= 20 and not r.snapshots]
    assert not without


def test_nearly_every_run_that_delivers_installs_a_snapshot() -> None:
    """One node is cut off in every run so that it comes back by install; in a few runs
    the others make no progress meanwhile (their own faults), so none is needed."""
    busy = [r for r in _results() if r.delivered >= 50]
    installed = [r for r in busy if r.installs]
    assert len(installed) >= 0.9 * len(busy), [r.seed for r in busy if not r.installs]


def test_crashes_strike_in_the_middle_of_snapshots_and_of_installs() -> None:
    results = _results()
    assert sum(r.snapshot_crashes > 0 for r in results) >= 0.1 * len(results)
    assert sum(r.install_crashes for r in results) > 0
