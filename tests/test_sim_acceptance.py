"""The simulator's acceptance runs, exactly as an operator would type them.

`paxos sim --seeds 1000 --nodes 3` and `paxos sim --seeds 300 --nodes 5` must
find no violation and no liveness failure. Together with the other simulator
tests this makes CI run well over 1000 simulated seeds.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.parametrize(("seeds", "nodes"), [(1000, 3), (300, 5)])
def test_sim_acceptance_run(seeds: int, nodes: int) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broadcast", "sim", "--seeds", str(seeds), "--nodes", str(nodes)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    totals = out.stdout.strip().splitlines()[-1]
    assert re.search(rf"seeds: {seeds}\b", totals), totals
    assert "violations: 0" in totals and "liveness failures: 0" in totals, totals
