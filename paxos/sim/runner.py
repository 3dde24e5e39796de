"""One deterministic simulated run: a fault phase, then a heal phase, judged by checkers.

Everything random comes from ``random.Random(seed)``: the fault rates of the
run (swarm testing), the network's losses and delays, crashes and downtimes,
the clients' pacing and every replica's own rng. Nothing reads a clock or the
environment, iteration is over lists and insertion-ordered dicts, so a seed
replays byte-identically (trace included) on any machine and any
``PYTHONHASHSEED``.

* **Fault phase** (``fault_ticks``): clients issue commands; nodes crash (any
  number of them, also all at once, also in the middle of handling a Ready)
  and restart after a random downtime from their durable records; nodes pause
  (no ticks, no handling; what arrives waits) and their clocks run at
  different rates; the network loses, duplicates, delays (some messages far
  beyond an election timeout), replays old messages, drops bursts of one
  message type, partitions and cuts links (also leaving a deposed leader
  talking to a minority). Safety must hold throughout.
  The operator (:mod:`paxos.sim.operator`) changes the membership meanwhile:
  nodes are added (as learners, then promoted), removed (the leader too),
  replaced after a lost disk, and the phase-2 quorum changes.
* **Heal phase** (at most ``heal_ticks``): every node is up (but one whose disk
  was lost), the network is perfect but for small delays, clients issue nothing
  new and retry what is unacknowledged, the operator finishes its operation. It
  ends as soon as every issued command is acknowledged and delivered on every
  member; if the bound passes first, that is a liveness failure.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from paxos.coord.machine import CoordLimits, CoordMachine
from paxos.multi.config import ReplicaConfig
from paxos.multi.driver import ReadyDriver
from paxos.multi.snapshot import Snapshot
from paxos.records import Record
from paxos.sim.checkers import Checker, Checkers, Liveness, TotalOrder, Violation
from paxos.sim.client import SimClient
from paxos.sim.coordload import CoordLoad, CoordPlan
from paxos.sim.events import MAX_EVENTS, Event, EventLog
from paxos.sim.faults import FaultRates
from paxos.sim.network import Address, Network, Payload
from paxos.sim.node import NodeDriver, ReplicaFactory, ReplicaLike
from paxos.sim.operator import Operator

DEFAULT_FAULT_TICKS = 1500
DEFAULT_HEAL_TICKS = 1500

#: A node armed to crash mid-Ready that meets no crash point this long crashes anyway.
_ARMED_CRASH_MAX_TICKS = 20


def default_replica_factory(
    node_id: int,
    config: ReplicaConfig,
    rng: random.Random,
    records: Sequence[Record],
    snapshot: Snapshot | None = None,
) -> ReplicaLike:
    """The real :class:`paxos.multi.replica.Replica` (imported on first use)."""
    from paxos.multi.replica import Replica

    return Replica(node_id, config, rng, records, snapshot)


@dataclass(frozen=True)
class SimConfig:
    """Everything one run depends on. Rates left as ``None`` are drawn from the seed."""

    seed: int
    nodes: int = 3
    fault_ticks: int = DEFAULT_FAULT_TICKS
    #: The liveness bound: ticks the healed cluster gets to converge.
    heal_ticks: int = DEFAULT_HEAL_TICKS
    #: The workload; None: drawn from the seed (2-6 clients, 20-80 commands each, up to
    #: 1-16 unacknowledged at once, some of them in bursts).
    clients: int | None = None
    commands_per_client: int | None = None
    #: Unacknowledged commands a client may have at once.
    outstanding: int | None = None
    #: Per-node, per-tick crash probability; None: drawn from the seed.
    crash_rate: float | None = None
    #: Fault rates fixed whatever the seed draws: (FaultRates field, value) pairs.
    overrides: tuple[tuple[str, float], ...] = ()
    #: All fault rates; None: drawn from the seed (crash_rate, if set, still wins).
    faults: FaultRates | None = None
    #: Replica tuning; its ``nodes`` must be 1..nodes. None: ReplicaConfig defaults.
    replica_config: ReplicaConfig | None = None
    #: Builds each replica; tests plant bugs by passing a Replica subclass.
    replica_factory: ReplicaFactory = default_replica_factory
    #: Runs each node (its clients' answers, crashes, restarts).
    driver_cls: type[NodeDriver] = NodeDriver
    #: Keeps the Ready contract; tests plant bugs in it by subclassing (the runtime
    #: uses the same class).
    ready_driver: type[ReadyDriver] = ReadyDriver
    #: Builds the checkers; None: all of :func:`~paxos.sim.checkers.default_checkers`.
    checkers: Callable[[], list[Checker]] | None = None
    trace: bool = False
    #: Record structured events for the visualiser (SimResult.events), at most this many.
    events: bool = False
    max_events: int = MAX_EVENTS
    #: Snapshot every this many chosen slots (each node on its own); None: drawn from
    #: the seed (small, so that snapshots, compactions and installs happen in every
    #: run); 0: never.
    snapshot_every: int | None = None
    #: Membership changes by the simulated operator (at least one per run).
    reconfigure: bool = True
    #: Nodes run the coordination service's state machine too, and clients use it
    #: (:mod:`paxos.sim.coordload`).
    coord: bool = True
    #: Builds each node's coordination machine; tests plant bugs with a subclass.
    coord_machine: Callable[[CoordLimits], CoordMachine] = CoordMachine


@dataclass
class SimResult:
    """What one run found."""

    seed: int
    nodes: int
    fault_ticks: int
    faults: FaultRates
    violations: list[Violation] = field(default_factory=list)
    liveness_failures: list[Violation] = field(default_factory=list)
    #: Totals, including violations beyond the ones kept.
    violation_count: int = 0
    liveness_count: int = 0
    issued: int = 0
    acked: int = 0
    #: Length of the global total order (commands delivered, counted once).
    delivered: int = 0
    ticks: int = 0
    #: The tick at which the healed cluster had everything delivered, if it did.
    converged_tick: int | None = None
    crashes: int = 0
    messages: int = 0
    #: Snapshots taken and installed (from a peer), over all nodes.
    snapshots: int = 0
    installs: int = 0
    #: Crashes that struck in the middle of snapshot-then-compact, or of saving an install.
    snapshot_crashes: int = 0
    install_crashes: int = 0
    #: Membership operations started and changes applied; nodes at the end of the run.
    operations: int = 0
    changes: int = 0
    final_members: tuple[int, ...] = ()
    trace: list[str] = field(default_factory=list)
    #: Structured events (SimConfig.events), and whether recording stopped at the cap.
    events: list[Event] = field(default_factory=list)
    events_truncated: bool = False
    #: Every node's chosen prefix and delivery index at the end (what its application
    #: saw last; a node that is down keeps the values it had), by node id.
    chosen_upto: dict[int, int] = field(default_factory=dict)
    delivered_upto: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violation_count and not self.liveness_count


def run(config: SimConfig) -> SimResult:
    """Run one simulation; deterministic in ``config`` (and the replica code)."""
    return _Run(config).run()


def run_many(
    base: SimConfig,
    seeds: Iterable[int],
    progress: Callable[[SimResult], None] | None = None,
) -> list[SimResult]:
    """Run ``base`` once per seed, in order, calling ``progress`` after each run."""
    results = []
    for seed in seeds:
        result = run(replace(base, seed=seed))
        results.append(result)
        if progress is not None:
            progress(result)
    return results


class _Run:
    def __init__(self, config: SimConfig) -> None:
        if config.nodes < 1 or (config.clients is not None and config.clients < 1):
            raise ValueError("need at least one node and one client")
        if config.fault_ticks < 0 or config.heal_ticks < 1:
            raise ValueError("fault_ticks must be >= 0 and heal_ticks >= 1")
        self.config = config
        rng = random.Random(config.seed)
        # Always drawn, so the rest of the run's draws do not depend on overrides.
        rates = FaultRates.draw(rng)
        if config.faults is not None:
            rates = config.faults
        if config.crash_rate is not None:
            rates = replace(rates, crash_rate=config.crash_rate)
        for name, value in config.overrides:
            kind = type(getattr(rates, name))  # an unknown field raises: a typo is an error
            rates = replace(rates, **{name: kind(value)})
        self.rates = rates
        # Independent streams: how much one part draws never shifts another.
        self.fault_rng = random.Random(rng.getrandbits(64))
        self.replica_rngs = random.Random(rng.getrandbits(64))
        net_rng = random.Random(rng.getrandbits(64))
        client_rng = random.Random(rng.getrandbits(64))
        session_rng = random.Random(rng.getrandbits(64))
        workload_rng = random.Random(rng.getrandbits(64))
        snap_rng = random.Random(rng.getrandbits(64))
        op_rng = random.Random(rng.getrandbits(64))
        # (drawn last: the streams above are what they were before coordination came)
        coord_rng = random.Random(rng.getrandbits(64))
        self.coord_plan = CoordPlan.draw(coord_rng) if config.coord else None
        # The workload: many slots open at every leader change needs many clients with
        # deep pipelines; bursts open many at once.
        self.workload = Workload.draw(workload_rng, config)
        # Clocks: each node ticks at its own rate (swarm: the same rate, in most runs).
        skew = rates.clock_skew
        self.clock_rate = {
            n: 1.0 + self.fault_rng.uniform(-skew, skew) if skew else 1.0
            for n in range(1, config.nodes + 1)
        }
        self.clock: dict[int, float] = dict.fromkeys(self.clock_rate, 0.0)
        #: Paused nodes: node -> the tick it resumes; what arrives for it meanwhile waits.
        self.paused_until: dict[int, int] = {}
        self.held: dict[int, list[tuple[Address, Payload]]] = {}

        self.trace: list[str] | None = [] if config.trace else None
        self.events = EventLog(config.max_events) if config.events else None
        node_ids = tuple(range(1, config.nodes + 1))
        self.node_ids = node_ids
        client_ids = [f"c{i}" for i in range(1, self.workload.clients + 1)]
        sessions = SessionPlan.draw(session_rng, client_ids)
        self.sessions = sessions
        # Small bounds in some runs, so that schedules that reach them are short enough
        # to happen here (a node catching up further than slots_ahead in one
        # CommitRecord interval, say); the defaults in the others.
        small = session_rng.random() < 0.4
        window = session_rng.choice((1, 2, 4, 8, 16)) if small else 16
        replica_config = config.replica_config or ReplicaConfig(
            nodes=node_ids,
            max_sessions=sessions.max_sessions,
            session_timeout_ticks=sessions.timeout_ticks,
            session_check_ticks=sessions.check_ticks,
            window=window,
            # The alpha rule's distance: the window itself (the tightest), a few windows,
            # or the default (one per run: every replica of a run uses the same).
            alpha=op_rng.choice((window, 4 * window, max(16, window))),
            # The starting phase-2 quorum: a majority mostly, any size sometimes.
            phase2_quorum=op_rng.choice((0, 0, 0, op_rng.randint(1, config.nodes))),
            slots_ahead=int(window * 16 ** session_rng.random()) if small else 2**14,
            # A chosen prefix recorded rarely lags far behind one learned by messages.
            commit_record_ticks=int(10 * 50 ** session_rng.random()) if small else 50,
            # Snapshots in parts, and few slots kept past them: installs in every run.
            snapshot_chunk_bytes=snap_rng.choice((64, 256, 1024, 1 << 20)),
            compact_keep_slots=snap_rng.choice((0, 1, 2, 4)),
        )
        self.snapshot_every = (
            config.snapshot_every
            if config.snapshot_every is not None
            else snap_rng.choice((2, 3, 4, 8))
        )
        self.segment_records = snap_rng.choice((4, 16, 64))
        # One node is cut off for a while in every run, so that it falls behind the
        # others' floors and comes back by installing a snapshot.
        self.lag_node = snap_rng.choice(node_ids)
        self.lag_at = snap_rng.randint(config.fault_ticks // 10, max(1, config.fault_ticks // 2))
        self.lag_ticks = snap_rng.randint(150, 500)
        if tuple(replica_config.nodes) != node_ids:
            raise ValueError(f"replica_config.nodes must be {node_ids}")
        self.checkers = Checkers(config.checkers() if config.checkers is not None else None)
        self.network = Network(net_rng, rates, node_ids, client_ids, self.trace, self.events)
        self.replica_config = replica_config
        self.drivers = [self._new_driver(n) for n in node_ids]
        plan = self.coord_plan
        self.coord = CoordLoad(plan, coord_rng, self.drivers) if plan is not None else None
        # Clients spread their commands over the fault phase (at 1-4x the even pace).
        workload = self.workload
        even_rate = workload.commands / max(1, config.fault_ticks)
        self.clients = [
            SimClient(
                cid,
                sessions.names[cid],
                node_ids,
                random.Random(client_rng.getrandbits(64)),
                self.network,
                self.checkers,
                commands=workload.commands,
                outstanding=workload.outstanding,
                issue_rate=min(1.0, even_rate * client_rng.uniform(1.0, 4.0)),
                retry_ticks=client_rng.randint(30, 60),
                close_rate=sessions.close_rate,
                bursty=workload.bursty,
                trace=self.trace,
                events=self.events,
                coord=self.coord,
            )
            for cid in client_ids
        ]
        self.endpoints: dict[Address, NodeDriver | SimClient] = {}
        for driver in self.drivers:
            self.endpoints[driver.node_id] = driver
        for client in self.clients:
            self.endpoints[client.id] = client
        self.restart_at: dict[int, int] = {}
        self.result = SimResult(config.seed, config.nodes, config.fault_ticks, rates)
        self.operator = (
            Operator(op_rng, self.drivers, self._add_node, config.fault_ticks, self._log)
            if config.reconfigure and config.nodes > 1
            else None
        )

    def _new_driver(self, node: int) -> NodeDriver:
        driver = self.config.driver_cls(
            node,
            self.replica_config,
            self.config.replica_factory,
            self.network,
            self.checkers,
            self.trace,
            self.config.ready_driver,
            snapshot_every=self.snapshot_every,
            segment_records=self.segment_records,
            coord_factory=self._coord_factory(),
        )
        driver.events = self.events
        return driver

    def _coord_factory(self) -> Callable[[], CoordMachine] | None:
        plan = self.coord_plan
        if plan is None:
            return None
        build, limits = self.config.coord_machine, plan.limits
        return lambda: build(limits)

    def _add_node(self) -> NodeDriver:
        """A new machine with an empty disk and a new id, started (a member once the
        log adds it)."""
        node = len(self.drivers) + 1
        driver = self._new_driver(node)
        self.drivers.append(driver)
        self.network.add_node(node)
        self.endpoints[node] = driver
        self.clock_rate[node] = 1.0
        self.clock[node] = 0.0
        for client in self.clients:
            client.nodes = (*client.nodes, node)
        driver.start(random.Random(self.replica_rngs.getrandbits(64)))
        self._log(self.network.now, f"node {node} added (empty disk)")
        return driver

    def _members(self) -> list[int]:
        """The nodes that must deliver everything: the members of the newest membership
        (all nodes without an operator)."""
        latest = self.operator.latest() if self.operator is not None else None
        if latest is None:
            return [d.node_id for d in self.drivers if d.up]
        return list(latest.members)

    def _log(self, now: int, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{now} sim {text}")

    def run(self) -> SimResult:
        config = self.config
        result = self.result
        network = self.network
        liveness = next(
            (c for c in self.checkers.checkers if isinstance(c, Liveness)), None
        )
        self._log(0, f"seed {config.seed} nodes {config.nodes} faults {self.rates.describe()}")
        self._log(0, f"sessions {self.sessions.describe()} workload {self.workload.describe()}")
        self._log(0, f"snapshot every {self.snapshot_every} slots, {self.segment_records} "
                  f"records per segment")
        if self.coord_plan is not None:
            self._log(0, f"coordination {self.coord_plan.describe()}")
        now = 0
        try:
            for driver in self.drivers:
                driver.start(random.Random(self.replica_rngs.getrandbits(64)))
            end = config.fault_ticks + config.heal_ticks
            healed = False
            while now < end:
                now += 1
                network.now = now
                if now <= config.fault_ticks:
                    if now == self.lag_at and config.nodes > 1 and self.snapshot_every:
                        network.isolate(self.lag_node, self.lag_ticks)
                    network.update_faults(self._a_leader())
                    self._crashes_and_restarts(now)
                    self._pauses(now)
                elif not healed:
                    healed = True
                    self._heal(now)
                endpoints = self.endpoints
                paused = self.paused_until
                for src, dst, payload in network.due():
                    if dst in paused:
                        self.held[dst].append((src, payload))  # a stopped process reads later
                        continue
                    endpoint = endpoints.get(dst)
                    if endpoint is None:
                        raise ValueError(f"{src!r} sent {payload!r} to unknown endpoint {dst!r}")
                    endpoint.receive(src, payload)
                clock, rate = self.clock, self.clock_rate
                for driver in self.drivers:
                    node = driver.node_id
                    if node in paused:
                        continue
                    clock[node] += rate[node]
                    ticks = int(clock[node])
                    clock[node] -= ticks
                    driver.tick(ticks)
                for client in self.clients:
                    client.tick(now)
                operator = self.operator
                if operator is not None:
                    operator.tick(now, issuing=now <= config.fault_ticks)
                if healed and (operator is None or not operator.busy) and (
                    liveness.satisfied(self._members())
                    if liveness is not None
                    else all(c.done for c in self.clients)
                ):
                    result.converged_tick = now
                    break
        except Exception as exc:  # a replica bug must become a report, not a crash of the sim
            result.violations.append(_exception_violation(now, exc))
            result.violation_count += 1
            self._log(now, f"exception {exc!r}")
        live = self._members()
        self.checkers.finish(now, live)
        result.final_members = tuple(live)
        result.violations.extend(self.checkers.violations)
        result.liveness_failures = self.checkers.liveness_failures
        result.violation_count += self.checkers.violation_count
        result.liveness_count = self.checkers.liveness_count
        if self.operator is not None:
            result.operations = self.operator.operations
            result.changes = self.operator.changes
            if self.operator.busy:
                result.liveness_failures.append(Violation(
                    "operator", now, f"{self.operator.kind} not done: "
                    f"{[(op.name, n) for op, n in self.operator.steps]}"))
                result.liveness_count += 1
        result.issued = sum(c.issued for c in self.clients)
        result.acked = sum(len(c.acked) for c in self.clients)
        order = next((c for c in self.checkers.checkers if isinstance(c, TotalOrder)), None)
        result.delivered = len(order.order) if order is not None else 0
        result.ticks = now
        result.crashes = sum(d.crashes for d in self.drivers)
        result.snapshots = sum(d.snapshots_taken for d in self.drivers)
        result.installs = sum(d.installs for d in self.drivers)
        result.snapshot_crashes = sum(d.snapshot_crashes for d in self.drivers)
        result.install_crashes = sum(d.install_crashes for d in self.drivers)
        result.messages = network.sent
        self._log(now, f"end: {result.delivered} delivered, {result.acked}/{result.issued} acked")
        if self.trace is not None:
            result.trace = self.trace
        if self.events is not None:
            result.events = self.events.events
            result.events_truncated = self.events.truncated
        for driver in self.drivers:
            result.chosen_upto[driver.node_id] = driver.chosen_upto
            result.delivered_upto[driver.node_id] = driver.app.index
        return result

    def _crashes_and_restarts(self, now: int) -> None:
        rates = self.rates
        rng = self.fault_rng
        for driver in self.drivers:
            if driver.up:
                if driver.crash_countdown:
                    if now - driver.armed_at >= _ARMED_CRASH_MAX_TICKS:
                        driver.crash()
                elif rates.crash_rate and rng.random() < rates.crash_rate:
                    if rng.random() < rates.mid_ready_crash:
                        driver.arm_crash(rng.randint(1, 4))
                    else:
                        driver.crash()
            if not driver.up and driver.may_start():
                node = driver.node_id
                restart = self.restart_at.get(node)
                if restart is None:
                    self.restart_at[node] = now + rng.randint(1, max(1, rates.crash_max_down_ticks))
                elif now >= restart:
                    del self.restart_at[node]
                    driver.start(random.Random(self.replica_rngs.getrandbits(64)))

    def _a_leader(self) -> int | None:
        """A node that believes it leads (the first found), if any."""
        for driver in self.drivers:
            replica = driver.replica
            if replica is not None and replica.leader == driver.node_id:
                return driver.node_id
        return None

    def _pauses(self, now: int) -> None:
        rates = self.rates
        for driver in self.drivers:
            node = driver.node_id
            until = self.paused_until.get(node)
            if until is not None:
                if now >= until or not driver.up:
                    self._resume(node)
            elif rates.pause_rate and driver.up and self.fault_rng.random() < rates.pause_rate:
                rng = self.fault_rng
                until = now + rng.randint(1, rates.pause_max_ticks)
                replica = driver.replica
                stale = replica is not None and replica.leader == node and rng.random() < 0.5
                if stale:
                    # A leader stopped long enough for the others to elect another, while
                    # the network around it fails: it resumes still leading (its clock
                    # stood still) and hears the others only through one follower.
                    until = max(until, now + 60)
                    self.network.stale_leader(node, until - now + rng.randint(20, 200))
                self.paused_until[node] = until
                self.held[node] = []
                self._log(now, f"node {node} paused until {until}")
                if self.events is not None:
                    self.events.emit(now, "pause", node=node, until=until)

    def _resume(self, node: int) -> None:
        """A paused node goes on: it reads, in order, what arrived while it was stopped
        (a crashed one lost it)."""
        del self.paused_until[node]
        waiting = self.held.pop(node, [])
        driver = self.drivers[node - 1]
        self._log(self.network.now, f"node {node} resumes with {len(waiting)} waiting")
        if self.events is not None:
            self.events.emit(self.network.now, "resume", node=node)
        if driver.up:
            for src, payload in waiting:
                driver.receive(src, payload)

    def _heal(self, now: int) -> None:
        self._log(now, "heal: all nodes up, network perfect, clients stop issuing")
        if self.events is not None:
            self.events.emit(now, "phase", phase="heal")
        self.network.heal()
        for node in list(self.paused_until):
            self._resume(node)
        for node in self.clock_rate:
            self.clock_rate[node] = 1.0
        self.restart_at.clear()
        for driver in self.drivers:
            driver.crash_countdown = 0
            if not driver.up and driver.may_start():
                driver.start(random.Random(self.replica_rngs.getrandbits(64)))
        for client in self.clients:
            client.issuing = False


@dataclass(frozen=True, slots=True)
class Workload:
    """How much the clients of one run do, drawn from its seed unless SimConfig fixes it."""

    clients: int
    commands: int
    outstanding: int
    bursty: bool

    @classmethod
    def draw(cls, rng: random.Random, config: SimConfig) -> Workload:
        clients = rng.randint(2, 6)
        commands = rng.randint(20, 80)
        outstanding = rng.choice((1, 2, 4, 8, 16))
        bursty = rng.random() < 0.4
        return cls(
            clients=config.clients if config.clients is not None else clients,
            commands=(
                config.commands_per_client if config.commands_per_client is not None
                else commands
            ),
            outstanding=config.outstanding if config.outstanding is not None else outstanding,
            bursty=bursty,
        )

    def describe(self) -> str:
        return (
            f"clients={self.clients} commands={self.commands} "
            f"outstanding={self.outstanding} bursty={self.bursty}"
        )


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """How one run exercises sessions, drawn from its seed like the fault rates: clients
    that share a name (two copies of one app), a table small enough to evict, timeouts
    short enough to expire idle (or cut-off) clients, clients that close and reopen."""

    names: dict[str, str]
    max_sessions: int
    timeout_ticks: int
    check_ticks: int
    close_rate: float

    @classmethod
    def draw(cls, rng: random.Random, clients: Sequence[str]) -> SessionPlan:
        sharing = rng.random()
        if sharing < 0.4:
            names = dict.fromkeys(clients, "app")
        elif sharing < 0.7:
            names = {c: "app" if i < 2 else c for i, c in enumerate(clients)}
        else:
            names = {c: c for c in clients}
        small_table = rng.random() < 0.3
        max_sessions = rng.randint(1, len(clients)) if small_table else 4096
        short = rng.random() < 0.35
        timeout = int(20 * 50 ** rng.random()) if short else 6000
        check = max(1, min(timeout // 4, rng.randint(5, 50)))
        close_rate = rng.uniform(0.001, 0.02) if rng.random() < 0.3 else 0.0
        return cls(names, max_sessions, timeout, check, close_rate)

    def describe(self) -> str:
        shared = len(self.names) - len(set(self.names.values()))
        return (
            f"shared-names={shared} max={self.max_sessions} timeout={self.timeout_ticks}t "
            f"check={self.check_ticks}t close={self.close_rate:.3f}"
        )


def _exception_violation(now: int, exc: Exception) -> Violation:
    if exc.__cause__ is not None and isinstance(exc.__cause__, Exception):
        exc = exc.__cause__  # a StepFailed: where the handler itself failed
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" at {last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"
    return Violation("exception", now, f"{type(exc).__name__}: {exc}{where}")
