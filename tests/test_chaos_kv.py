"""``paxos chaos --service kv``: the coordination service under faults, and its checkers.

* The checkers on hand-made histories (no processes): a clean history passes every
  verdict; each classic mistake, planted by hand, fails the verdict that judges it.
* End to end (real node processes, about a minute in all): a run under kills, pauses, partitions
  and power loss passes every checker, having exercised what they check (expiries,
  grants, fenced writes refused, ephemeral keys vanishing); each planted bug of
  tests/kv_mutants.py (in the clients or in every node) fails the verdict named for it,
  with the message that says why.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kv_mutants import MUTANTS, apply
from test_chaos import NETNS, chaos, leftovers, verdicts

from chaos.checkers import Verdict
from chaos.history import Kind, Op
from chaos.kvcheck import check_kv_all, result_dict
from paxos.coord.commands import (
    Acquire,
    CoordCommand,
    Delete,
    Expire,
    Get,
    Open,
    Put,
    encode,
)
from paxos.coord.machine import Changes, CoordMachine, Result
from paxos.types import Command, Delivery

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------------- by hand


class KvBuilder:
    """A history and the log it produced: each op's commands are applied, in order, to
    a CoordMachine standing in for the service, and the clients get its results."""

    def __init__(self) -> None:
        self.machine = CoordMachine()
        self.order: list[Command] = []
        self.ops: list[Op] = []
        self.seqs: dict[str, int] = {}
        self.now = 0

    def log(self, command: CoordCommand, client: str = "node1#1") -> tuple[Command, Result]:
        """Append ``command`` to the log (as session ``client`` sends it)."""
        seq = self.seqs.get(client, 0) + 1
        self.seqs[client] = seq
        entry = Command(client, seq, encode(command))
        self.order.append(entry)
        return entry, self.machine.apply(Delivery(len(self.order), 0, entry))

    def op(
        self,
        kind: Kind,
        key: str,
        *commands: CoordCommand,
        value: str | None = None,
        client: str = "a",
        call: int | None = None,
        ret: int | None = None,
        **extra: Any,
    ) -> Op:
        """An op of client ``client`` that sent ``commands`` (ok, each with its result)."""
        self.now += 10
        invoke = self.now if call is None else call
        calls = []
        for command in commands:
            entry, result = self.log(command, f"{client}-call#1")
            calls.append({
                "payload": entry.payload.hex(), "client": entry.client, "seq": entry.seq,
                "index": len(self.order), "result": result_dict(result),
            })
        self.now += 10
        op = Op(
            len(self.ops) + 1, ord(client[0]), kind, key, value, invoke, client=client,
            complete_ns=self.now if ret is None else ret, outcome="ok",
            index=len(self.order) if commands else None, calls=calls, extra=dict(extra),
        )
        self.ops.append(op)
        return op

    def watch(self, prefix: str) -> dict[str, Any]:
        """What a watcher of ``prefix`` from index 1 would have read."""
        found = self.machine.changes(prefix, 1, 10_000)
        assert isinstance(found, Changes)
        rows = [[c.index, c.kind, c.key, c.session, c.version,
                 None if c.value is None else c.value.hex()] for c in found.changes]
        return {"prefix": prefix, "changes": rows, "gaps": [], "through": len(self.order)}

    def check(self, watches: list[dict[str, Any]] | None = None) -> dict[str, Verdict]:
        observations = {
            f"node{n}/final": {i: c for i, c in enumerate(self.order, start=1)}
            for n in (1, 2, 3)
        }
        found, _ = check_kv_all(self.ops, observations, watches or [])
        return {v.name: v for v in found}


def failing(found: dict[str, Verdict]) -> set[str]:
    return {name for name, v in found.items() if v.ok is not True}


def clean() -> KvBuilder:
    """Two clients: writes and reads, an ephemeral key, a lock with a fenced write, a
    holder whose session expires (its key vanishes, its late fenced write is refused)."""
    b = KvBuilder()
    b.op("put", "k0", Put("k0", b"v1"), value="v1", client="a")
    b.op("get", "k0", Get("k0"), value="v1", client="b")
    session = len(b.order) + 1  # (a session's id is the index of its Open)
    b.op("eput", "e/0", Open("a", 1000), Put("e/0", b"x", session), value="x", client="a")
    token = len(b.order) + 1  # (a lock's token is the index of its grant)
    b.op("lock", "lock/0", Acquire("lock/0", session), client="a", token=token,
         session=session)
    b.op("fput", "g/0", Put("g/0", b"w1", 0, ("lock/0", token)), value="w1", client="a")
    b.log(Expire(session, b.machine.session(session).last))  # the leader's lease timer
    late = b.op("fput", "g/0", Put("g/0", b"w2", 0, ("lock/0", token)), value="w2",
                client="a")
    late.extra["refused"] = "fence: lock not held"
    b.op("get", "e/0", Get("e/0"), value=None, client="b")
    b.op("delete", "k0", Delete("k0"), client="b", deleted=True)
    b.op("get", "k0", Get("k0"), value=None, client="a")
    return b


def test_a_clean_kv_history_passes_every_checker() -> None:
    b = clean()
    found = b.check([b.watch("e/"), b.watch("lock/")])
    assert not failing(found), {n: v.violations for n, v in found.items()}
    assert found["locks"].checked >= 3 and found["ephemerals"].checked >= 2
    assert "0 refused (stale token), 1 refused (not held)" in found["locks"].notes
    assert "1 expired" in found["ephemerals"].notes and "1 keys vanished" in found[
        "ephemerals"].notes


def test_a_result_that_is_not_the_logs_is_caught() -> None:
    b = clean()
    b.ops[1].calls[0]["result"]["value"] = b"v0".hex()  # a read answered from elsewhere
    found = b.check()
    assert failing(found) == {"results"}
    assert "the log gives" in found["results"].violations[0]


def test_another_commands_result_is_caught() -> None:
    b = clean()
    b.ops[1].calls[0]["result"] = dict(b.ops[0].calls[0]["result"])  # the put's result
    found = b.check()
    assert "results" in failing(found)
    assert re.search(r"names index 1, which holds .*Put\(key='k0'.*another command's result",
                     found["results"].violations[0])


def test_an_acknowledgement_of_another_command_is_caught() -> None:
    b = clean()
    b.ops[1].calls[0]["seq"] += 1  # acknowledged at an index that holds something else
    found = b.check()
    assert "results" in failing(found)
    assert "but index 2 holds" in found["results"].violations[0]


def test_a_command_applied_twice_is_caught() -> None:
    b = clean()
    op = b.ops[0]
    again, _ = b.log(Put("k0", b"v1"), "a-call#2")  # resent as new, in a fresh session
    op.calls.append({"payload": again.payload.hex(), "client": again.client, "seq": 1})
    found = b.check()
    assert "at-most-once" in failing(found)
    assert "took effect 2 times" in found["at-most-once"].violations[0]


def test_a_real_time_inversion_is_caught() -> None:
    b = clean()
    first, second = b.ops[0], b.ops[1]
    first.complete_ns, second.invoke_ns = 1, 2  # the put returned before the get began...
    first.calls[0]["index"], second.calls[0]["index"] = 2, 1  # ...yet is ordered after it
    b.order[0], b.order[1] = b.order[1], b.order[0]
    first.calls[0]["result"]["index"], second.calls[0]["result"]["index"] = 2, 1
    found = b.check()
    assert "real-time" in failing(found)


def test_a_stale_read_is_caught_by_the_register_check() -> None:
    b = clean()
    stale = b.ops[-1]  # reads k0 after the delete returned
    stale.value = "v1"
    stale.calls = []  # answered from a replica's state, not through the log
    found = b.check()
    assert failing(found) == {"linearizable"}
    assert "key 'k0': not linearizable" in found["linearizable"].violations[0]


def test_a_fenced_write_accepted_with_a_stale_token_is_caught() -> None:
    b = clean()
    late = b.ops[5]
    late.calls[0]["result"].update(ok=True, reason="", version=late.calls[0]["index"])
    del late.extra["refused"]
    found = b.check()
    assert {"locks", "results"} <= failing(found)
    assert re.search(r"the service accepted Put\(key='g/0'.* with token \d+, but lock "
                     r"'lock/0' was not held there", found["locks"].violations[0])


def test_a_lock_told_to_the_wrong_session_is_caught() -> None:
    b = clean()
    b.op("lock", "lock/0", Open("b", 1000), Acquire("lock/0", 99), client="b",
         token=len(b.order) + 2, session=99)  # (told a grant the log never made)
    found = b.check()
    assert "locks" in failing(found)
    assert re.search(r"told session 99 holds 'lock/0' with token \d+, but the log granted "
                     r"no lock", found["locks"].violations[0])


def test_an_ephemeral_key_reported_gone_at_the_wrong_index_is_caught() -> None:
    b = clean()
    watch = b.watch("e/")
    vanish = next(row for row in watch["changes"] if row[1] == "vanish")
    vanish[0] -= 1  # the service said the key vanished before its session ended
    found = b.check([watch, b.watch("lock/")])
    assert failing(found) == {"ephemerals"}
    assert "first difference" in found["ephemerals"].violations[0]


def test_malformed_records_are_violations_not_crashes() -> None:
    b = clean()
    b.ops[0].calls[0]["index"] = 0
    b.ops[1].calls[0]["index"] = 10**9  # beyond the log: undecided, not an IndexError
    b.ops[2].calls[0]["result"] = ["not", "a", "result"]
    b.ops[3].calls.append({"payload": "zz"})
    b.ops[4].extra["token"] = "seven"
    found = b.check([{"prefix": "e/", "changes": [["x"]], "through": 3}])
    assert found["results"].ok is False
    assert any("acknowledged at index 0" in m for m in found["results"].violations)
    assert sum("malformed call record" in m for m in found["results"].violations) == 2
    assert "a malformed watch record" in found["ephemerals"].violations[0]


def test_a_planted_kv_bug_is_taken_out_again() -> None:
    for name, mutant in MUTANTS.items():
        patched = mutant.patches()
        before = [owner.__dict__[attribute] for owner, attribute, _ in patched]
        remove = apply(name)
        assert [owner.__dict__[a] for owner, a, _ in patched] != before, name
        remove()
        assert [owner.__dict__[a] for owner, a, _ in patched] == before, name


# ---------------------------------------------------------------------- end to end


def chaos_kv(*args: str, mutant: str | None = None, timeout: float = 150) -> tuple[
    int, dict[str, Any], str
]:
    """``paxos chaos --service kv --json ARGS`` (with the planted bug ``mutant``, through
    tests/kv_mutants.py); its exit status, summary and stderr's tail."""
    program = (
        (sys.executable, "-m", "broadcast", "chaos") if mutant is None
        else (sys.executable, str(TESTS / "kv_mutants.py"), mutant)
    )
    return chaos("--service", "kv", *args, timeout=timeout, program=program)


@pytest.mark.integration
def test_kv_chaos_run_passes_every_checker(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, summary, stderr = chaos_kv(
        "--nodes", "3", "--duration", "8", "--seed", "3", "--lock-pause-chance", "1",
        "--faults", "kill,pause,partition,powerloss", "--run-dir", str(run_dir),
    )
    assert summary, stderr
    assert code == 0, json.dumps(summary["verdicts"], indent=1)
    found = verdicts(summary)
    assert set(found.values()) == {"PASS"}
    assert {"results", "at-most-once", "real-time", "linearizable", "locks",
            "ephemerals"} <= set(found)
    assert summary["network"] == ("netns" if NETNS else "loopback")
    assert summary["operations"]["ok"] > 200
    # What the checkers vouch for happened: sessions ended by their leases, ephemeral
    # keys vanished with them, locks were granted and late fenced writes refused.
    kv = summary["kv"]
    assert kv["expired"] > 0 and kv["vanished"] > 0, kv
    assert kv["told"] > 0 and kv["fenced_accepted"] > 0, kv
    assert kv["fenced_refused_stale"] + kv["fenced_refused_not_held"] > 0, kv
    assert (run_dir / "watches.jsonl").is_file()
    # The saved run checks again, offline, to the same verdicts.
    again = subprocess.run(
        [sys.executable, "-m", "broadcast", "chaos", "--check", str(run_dir), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert {v["name"] for v in json.loads(again.stdout)} >= {"results", "locks"}
    assert not leftovers(0, run_dir)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_the_kv_checkers_catch_the_planted_bug(name: str, tmp_path: Path) -> None:
    mutant = MUTANTS[name]
    code, summary, stderr = chaos_kv(
        "--nodes", "3", "--seed", "1", *mutant.args, "--run-dir", str(tmp_path / "run"),
        mutant=name,
    )
    assert summary, stderr
    assert code == 1, json.dumps(summary["verdicts"], indent=1)
    found = {v["name"]: v for v in summary["verdicts"]}
    # Caught for its reason, by a checker, not by a crash: the cluster ran and recovered.
    assert found["recovery"]["verdict"] == "PASS", found["recovery"]
    assert found["agreement"]["verdict"] == "PASS", found["agreement"]
    verdict = found[mutant.verdict]
    assert verdict["verdict"] == "FAIL", (
        f"'{mutant.doc}' planted, but {mutant.verdict} passed: "
        + json.dumps(summary["verdicts"], indent=1)
    )
    assert any(re.search(mutant.expect, message) for message in verdict["violations"]), (
        f"{mutant.verdict} failed with '{mutant.doc}' planted, but not for it: "
        + json.dumps(verdict["violations"], indent=1)
    )
