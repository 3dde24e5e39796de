"""Planted bugs in the coordination state machine, each caught by the simulator's
coordination checker (never by a crash), like tests/test_mutations.py.

The bugs live here, in subclasses. Each must be caught by the ``coord`` checker
within MAX_SEEDS seeds, on 3 and on 5 nodes. First catching seed at the time of
writing, on 3 / 5 nodes:

* expiry decided by a replica-local count of applies: 4 / 4
* an expiry that ignores the session's activity since (the lease rule): 2 / 4
* a lock's token from a per-replica counter, not the grant index: 6 / 6
* ephemeral keys not deleted on expiry by a replica restored from a snapshot: 4 / 31
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from paxos.coord.commands import CoordCommand
from paxos.coord.machine import EXPIRED, CoordLimits, CoordMachine, Result, _Session
from paxos.sim.runner import SimConfig, run

MAX_SEEDS = 300


class ExpiresByCountingApplies(CoordMachine):
    """Planted bug: a lease measured in this replica's own apply calls. A session that
    nothing named for IDLE commands is expired as a side effect of the next one. Every
    replica that applied the whole log counts alike, but the counts are not in the
    snapshot: a replica restored from one (a restart, an install) counts from zero."""

    IDLE = 6

    def __init__(self, limits: CoordLimits | None = None) -> None:
        super().__init__(limits)
        self._idle: dict[int, int] = {}

    def _touch(self, i: int, session: int) -> _Session | None:
        self._idle[session] = 0
        return super()._touch(i, session)

    def _dispatch(self, i: int, command: CoordCommand) -> Result:
        for session in list(self._sessions):
            idle = self._idle[session] = self._idle.get(session, 0) + 1
            if idle > self.IDLE:
                self._end_session(i, session, EXPIRED)
        return super()._dispatch(i, command)


class CountsGrants(CoordMachine):
    """Planted bug: a lock's fencing token is this replica's count of grants, which is
    not in the snapshot (a restored replica numbers from zero again)."""

    def __init__(self, limits: CoordLimits | None = None) -> None:
        super().__init__(limits)
        self._grants = 0

    def _token_at(self, i: int) -> int:
        self._grants += 1
        return self._grants


class KeepsEphemeralsAfterRestore(CoordMachine):
    """Planted bug: a replica restored from a snapshot does not delete a session's
    ephemeral keys when the session ends: they stay, as persistent keys."""

    restored = False

    def restore(self, data: bytes) -> None:
        super().restore(data)
        self.restored = True

    def _vanish(self, i: int, session: int, s: _Session) -> None:
        if not self.restored:
            super()._vanish(i, session, s)
            return
        for key in s.ephemerals:
            self._kv[key].owner = 0
        s.ephemerals.clear()


class IgnoresActivity(CoordMachine):
    """Planted bug: an expiry takes effect whatever the session did since its proposer
    looked (every replica agrees on it: only the lease rule can tell)."""

    @staticmethod
    def expiry_applies(session_last: int, proposed_last: int) -> bool:
        return True


MUTANTS = {
    "an expiry ignores the session's activity since": IgnoresActivity,
    "expiry decided by a replica-local count of applies": ExpiresByCountingApplies,
    "a lock token from a per-replica counter": CountsGrants,
    "ephemeral keys kept on expiry after a restore": KeepsEphemeralsAfterRestore,
}


def first_catch(machine: type[CoordMachine], nodes: int) -> tuple[int, set[str]] | None:
    for seed in range(1, MAX_SEEDS + 1):
        result = run(SimConfig(seed, nodes=nodes, coord_machine=machine))
        kinds = {v.checker for v in result.violations}
        assert "exception" not in kinds, (seed, result.violations[:3])
        if result.violation_count:
            return seed, kinds
    return None


@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_coordination_checker_catches_planted_bug(name: str, nodes: int) -> None:
    found = first_catch(MUTANTS[name], nodes)
    assert found is not None, f"the simulator missed the planted bug: {name}"
    seed, kinds = found
    assert "coord" in kinds, f"seed {seed} shows {kinds}, expected the coord checker"


def test_the_real_machine_passes_the_seeds_that_catch_the_mutants() -> None:
    for seed in range(1, 31):
        result = run(SimConfig(seed))
        assert result.ok, (seed, result.violations[:3])
    assert replace(SimConfig(0)).coord_machine is CoordMachine
