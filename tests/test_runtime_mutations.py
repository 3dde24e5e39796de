"""Mutation check of the runtime: each planted bug of tests/runtime_mutants.py makes its
named test fail, for the planted bug's reason.

The named tests run in the suite as they are (green); here each runs once more with
its bug planted, in this process and in every node process it starts, and must fail
with an assertion whose message says what the bug broke (a test that fails some
other way, or passes, did not catch it). The tests are written so that the catch is
not luck: crash points instead of kill timing, scripted peers instead of elections.

=====================  =========================================================================
mutant                 named test
=====================  =========================================================================
send-before-sync       test_power_loss: acked broadcasts survive power loss of the whole cluster
roll-without-sync      test_wal: synced records survive power loss across segment rolls
segment-unsynced       test_wal: (the same)
compact-without-floor  test_wal: compaction survives power loss at every step
floor-rename-unsynced  test_wal: (the same)
floor-unsynced         test_wal: (the same)
snapshot-*unsynced     test_snapshots: a saved snapshot survives power loss
no-sender-check        test_scripted_peers: a message in another node's name is dropped
gate-admits-any-key    test_auth: a stranger gets no answer and moves nothing
transport-trusts-*     test_auth: a listed key cannot speak for a member
member-id-from-*       test_auth: (the same)
submit-into-any-*      test_auth: a client key is held to its grant
open-any-session-name  test_auth: (the same)
session-admits-repeat  test_scripted_peers: each session seq is delivered once and in order
session-admits-gap     test_scripted_peers: (the same)
subscribe-resumes-*    test_client: a subscription moves to another node without gap or repeat
history-*              test_compaction_crashes: a survivor that came up late installs a snapshot
metrics-*              test_metrics: the metrics of a live cluster agree with what it did
kv-fence-ignores-token test_kv_procs: a paused lock holder's stale token is refused
kv-lease-never-expires test_kv_procs: (the same: the lock never passes on)
kv-watch-skips-*       test_kv_procs: a watch resumes across a node failure, no gap or repeat
=====================  =========================================================================
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from runtime_mutants import MUTANTS, apply, planted

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_named_test_catches_the_planted_bug(name: str, tmp_path: Path) -> None:
    mutant = MUTANTS[name]
    module, function = mutant.test.split("::")
    named_test = getattr(importlib.import_module(module), function)
    with planted(name), pytest.raises(AssertionError) as caught:
        named_test(tmp_path)
    assert re.search(mutant.expect, str(caught.value)), (
        f"{mutant.test} failed with the bug '{mutant.doc}' planted, but not for it: "
        f"{caught.value}"
    )


def test_a_planted_bug_is_taken_out_again() -> None:
    for name, mutant in MUTANTS.items():
        patched = mutant.patches()
        before = [getattr(owner, attribute) for owner, attribute, _ in patched]
        remove = apply(name)
        assert [getattr(owner, a) for owner, a, _ in patched] != before, name
        remove()
        assert [getattr(owner, a) for owner, a, _ in patched] == before, name
