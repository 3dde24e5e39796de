"""The deterministic simulator: its parts, its determinism, seed batches and ``paxos sim``."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace

import pytest
from click.testing import CliRunner

from broadcast.cli import main
from paxos.messages import Heartbeat, Message
from paxos.multi.config import ReplicaConfig
from paxos.multi.membership import Membership
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica
from paxos.records import PromiseRecord, Record
from paxos.sim.checkers import Checkers
from paxos.sim.disk import Disk
from paxos.sim.faults import FaultRates
from paxos.sim.network import ClientReply, ClientRequest, Network
from paxos.sim.node import NodeDriver
from paxos.sim.runner import SimConfig, SimResult, run, run_many
from paxos.types import Ballot, Command, Delivery

B1 = Ballot(1, 1)


class QuorumOneReplica(Replica):
    """Planted bug: a single Accepted (its own) makes a slot chosen."""

    def _quorum2(self, members: Membership) -> int:
        return 1


# ---------------------------------------------------------------------- parts


def test_disk_crash_loses_only_unsynced_records() -> None:
    disk = Disk()
    disk.write([PromiseRecord(Ballot(1, 1))])
    disk.sync()
    disk.write([PromiseRecord(Ballot(2, 1))])
    assert disk.unsynced == 1
    assert disk.crash() == 1
    assert disk.records() == (PromiseRecord(Ballot(1, 1)),)


def network(rates: FaultRates, seed: int = 1) -> Network:
    return Network(random.Random(seed), rates, (1, 2, 3), ("c1",))


def test_network_delivers_in_tick_then_send_order() -> None:
    net = network(FaultRates(delay_min_ticks=1, delay_max_ticks=5))
    for i in range(50):
        net.send(1, 2, Heartbeat(1, B1, i))
    arrivals: list[int] = []
    for now in range(1, 6):
        net.now = now
        arrivals.extend(m.commit for _, _, m in net.due() if isinstance(m, Heartbeat))
    assert sorted(arrivals) == list(range(50))
    assert arrivals != sorted(arrivals)  # random delays reorder...
    same_delay = network(FaultRates())
    for i in range(5):
        same_delay.send(1, 2, Heartbeat(1, B1, i))
    same_delay.now = 1  # ...but messages due in one tick keep their send order
    assert [m.commit for _, _, m in same_delay.due() if isinstance(m, Heartbeat)] == list(range(5))


def test_network_loss_and_duplication() -> None:
    lossy = network(FaultRates(loss=1.0))
    lossy.send(1, 2, Heartbeat(1, B1, 0))
    lossy.now = 10
    assert lossy.due() == [] and lossy.dropped == 1
    dup = network(FaultRates(duplication=1.0))
    dup.send("c1", 2, ClientRequest("c1", ()))
    dup.now = 10
    assert len(dup.due()) == 2


def test_network_partitions_cut_both_ways_and_heal() -> None:
    net = network(FaultRates(partition_rate=1.0, partition_max_ticks=50))
    net.now = 1
    net.update_faults()  # starts a partition for sure
    cut = [(a, b) for a in (1, 2, 3) for b in (1, 2, 3) if a != b and net._blocked(a, b)]
    assert cut and all((b, a) in cut for a, b in cut)
    net.heal()
    assert not any(net._blocked(a, b) for a in (1, 2, 3) for b in (1, 2, 3))


class ScriptedReplica:
    """A fake replica whose every tick returns one prepared Ready."""

    def __init__(self, ready: Ready, outcome: int | None = None) -> None:
        self.ready = ready
        self.leader: int | None = 2
        self._outcome = outcome
        self.proposed: list[Command] = []

    def step(self, msg: Message) -> Ready:
        return Ready()

    def tick(self) -> Ready:
        return self.ready

    def propose(self, commands: Sequence[Command]) -> Ready:
        self.proposed.extend(commands)
        return Ready()

    def outcome(self, client: str, seq: int) -> int | None:
        return self._outcome

    def session_status(self, key: str) -> tuple[str, int | None]:
        return "live", 0

    def session_key(self, name: str, nonce: bytes) -> str | None:
        return None


def driver_for(replica: ScriptedReplica) -> tuple[NodeDriver, Network]:
    net = network(FaultRates())
    driver = NodeDriver(
        1, ReplicaConfig(nodes=(1, 2, 3)), lambda *_: replica, net, Checkers(), trace=None
    )
    driver.start(random.Random(0))
    return driver, net


def test_driver_persists_before_sending_and_crash_points_respect_it() -> None:
    ready = Ready(records=[PromiseRecord(B1)], messages=[(2, Heartbeat(1, B1, 0))])
    for points, durable, sent in ((1, 0, 0), (2, 1, 0), (3, 1, 1)):
        driver, net = driver_for(ScriptedReplica(ready))
        driver.arm_crash(points)
        driver.tick()
        assert not driver.up
        assert (len(driver.disk.records()), net.in_flight()) == (durable, sent)
    driver, net = driver_for(ScriptedReplica(ready))
    driver.tick()
    assert driver.up and len(driver.disk.records()) == 1 and net.in_flight() == 1


def test_driver_restart_rebuilds_from_durable_records_only() -> None:
    seen: list[tuple[Record, ...]] = []

    def factory(
        node: int,
        config: ReplicaConfig,
        rng: random.Random,
        records: Sequence[Record],
        snapshot: object = None,
    ) -> ScriptedReplica:
        seen.append(tuple(records))
        return ScriptedReplica(Ready())

    config = ReplicaConfig(nodes=(1, 2, 3))
    driver = NodeDriver(1, config, factory, network(FaultRates()), Checkers())
    driver.start(random.Random(0))
    driver.disk.write([PromiseRecord(B1)])
    driver.disk.sync()
    driver.disk.write([PromiseRecord(Ballot(2, 1))])
    driver.crash()
    driver.start(random.Random(1))
    assert seen == [(), (PromiseRecord(B1),)]
    assert driver.incarnation == 2


def test_driver_answers_clients_when_delivered() -> None:
    command = Command("c1", 1, b"x")
    replica = ScriptedReplica(Ready(deliveries=[Delivery(1, 1, command)]))
    driver, net = driver_for(replica)
    driver.receive("c1", ClientRequest("c1", (command,)))
    assert replica.proposed == [command] and net.in_flight() == 0
    driver.tick()  # the delivery comes: the client hears back, with a leader hint
    net.now = 10
    [(src, dst, reply)] = net.due()
    assert (src, dst, reply) == (1, "c1", ClientReply(1, "c1", ((1, 1),), 2))
    # Already delivered here: answered at once, not proposed again.
    known, net2 = driver_for(ScriptedReplica(Ready(), outcome=7))
    known.receive("c1", ClientRequest("c1", (command,)))
    net2.now = 10
    assert [p for _, _, p in net2.due()] == [ClientReply(1, "c1", ((1, 7),), 2)]


# ---------------------------------------------------------------------- determinism


def trace_of(seed: int, nodes: int = 3) -> str:
    result = run(SimConfig(seed=seed, nodes=nodes, trace=True))
    return "\n".join(result.trace)


def test_a_seed_replays_byte_identically() -> None:
    first = trace_of(11)
    assert first == trace_of(11)
    assert len(first.splitlines()) > 1000
    assert " crash " in first or " partition " in first or " lost " in first
    assert first != trace_of(12)


def test_replay_does_not_depend_on_hash_seed() -> None:
    script = (
        "import hashlib, sys\n"
        "from paxos.sim.runner import SimConfig, run\n"
        "r = run(SimConfig(seed=5, nodes=5, trace=True))\n"
        "print(hashlib.sha256('\\n'.join(r.trace).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    assert digests == {hashlib.sha256(trace_of(5, nodes=5).encode()).hexdigest()}


def test_run_many_reports_progress_and_matches_single_runs() -> None:
    seen: list[SimResult] = []
    results = run_many(SimConfig(seed=0, nodes=3), [4, 9], progress=seen.append)
    assert [r.seed for r in results] == [4, 9] and seen == results
    assert results[1] == run(SimConfig(seed=9))


# ---------------------------------------------------------------------- batches


@pytest.mark.slow
@pytest.mark.parametrize(("nodes", "seeds"), [(3, range(1, 201)), (5, range(1, 51))])
def test_seed_batch_is_safe_and_live(nodes: int, seeds: range) -> None:
    failing = {}
    delivered = crashes = 0
    for seed in seeds:
        result = run(SimConfig(seed=seed, nodes=nodes))
        delivered += result.delivered
        crashes += result.crashes
        if not result.ok:
            failing[seed] = [str(v) for v in result.violations + result.liveness_failures][:3]
    assert failing == {}
    assert delivered > 50 * len(seeds) and crashes > len(seeds)  # the runs did work, under faults


def test_planted_bug_is_found_with_its_seed() -> None:
    base = SimConfig(seed=0, replica_factory=QuorumOneReplica)
    found = [s for s in range(1, 11) if not run(replace(base, seed=s)).ok]
    assert found
    again = run(replace(base, seed=found[0]))
    assert again.violations and not again.ok


class ExplodingReplica(Replica):
    """A replica that raises on its 100th tick."""

    def tick(self) -> Ready:
        if self.now == 99:
            raise RuntimeError("boom")
        return super().tick()


def test_a_replica_exception_is_reported_not_raised() -> None:
    result = run(SimConfig(seed=3, replica_factory=ExplodingReplica))
    assert not result.ok
    [violation] = [v for v in result.violations if v.checker == "exception"]
    assert violation.tick == 100
    assert "RuntimeError: boom" in violation.message and "test_sim.py" in violation.message


# ---------------------------------------------------------------------- CLI


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["sim", *args])
    return result.exit_code, result.output


def test_cli_runs_seeds_and_reports_totals() -> None:
    code, out = cli("--seeds", "3", "--jobs", "1")
    assert code == 0, out
    assert re.search(r"seeds: 3 .*violations: 0 .*liveness failures: 0 .*wall: ", out)


def test_cli_output_does_not_depend_on_jobs() -> None:
    def strip(out: str) -> str:
        return re.sub(r"wall: \S+", "", out.splitlines()[-1])

    code1, out1 = cli("--seeds", "4", "--seed", "20", "--jobs", "1")
    code2, out2 = cli("--seeds", "4", "--seed", "20", "--jobs", "2")
    assert code1 == code2 == 0
    assert strip(out1) == strip(out2)


def test_cli_prints_a_trace_for_one_seed() -> None:
    code, out = cli("--seed", "7", "--trace")
    assert code == 0
    assert out.startswith("0 sim seed 7 nodes 3 faults ")
    assert "seeds: 1 " in out.splitlines()[-1]


def test_cli_fails_with_replay_command_on_a_planted_bug() -> None:
    spec = f"{__name__}:QuorumOneReplica"
    code, out = cli("--seeds", "10", "--jobs", "1", "--replica", spec)
    assert code == 1
    match = re.search(r"FAILED seed (\d+)", out)
    assert match, out
    seed = match.group(1)
    replay = f"paxos sim --seed {seed} --nodes 3 --ticks 1500 --replica {spec} --trace"
    assert f"replay: {replay}" in out
    assert "[agreement]" in out or "[total-order]" in out
    # The replay command reproduces the failure on its own.
    code, out = cli(*replay.split()[2:])
    assert code == 1 and f"FAILED seed {seed}" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "--nodes"),
        (["--seeds", "0"], "--seeds"),
        (["--ticks", "x"], "--ticks"),
        (["--seeds", "5", "--trace"], "--trace"),
        (["--replica", "nonsense"], "--replica"),
        (["--replica", "no_such_module_xyz:Replica"], "--replica"),
    ],
)
def test_cli_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    code, out = cli(*args)
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in out
