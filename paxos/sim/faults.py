"""The faults of one simulated run, drawn from its seed (swarm testing)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FaultRates:
    """How hostile one run's fault phase is. Drawn from the run's seed (swarm testing):
    each kind of fault is switched on or off per run, so that some runs hammer one
    fault hard while others mix a little of everything."""

    #: Probability that a message is dropped.
    loss: float = 0.0
    #: Probability that a message is delivered twice (each copy with its own delay).
    duplication: float = 0.0
    #: Every message takes a uniform number of ticks in [delay_min, delay_max].
    delay_min_ticks: int = 1
    delay_max_ticks: int = 1
    #: Per-tick probability that a symmetric partition starts (if none is active).
    partition_rate: float = 0.0
    partition_max_ticks: int = 0
    #: Per-tick probability that one directed link is cut.
    link_cut_rate: float = 0.0
    link_cut_max_ticks: int = 0
    #: Per-node, per-tick probability that a live node crashes.
    crash_rate: float = 0.0
    crash_max_down_ticks: int = 0
    #: Probability that a crash strikes in the middle of handling a Ready
    #: (between the disk write, the sync and each send) rather than between events.
    mid_ready_crash: float = 0.0
    #: Probability that a message takes a long-tail delay, up to ``tail_max_ticks``: far
    #: beyond an election timeout, so it arrives after leaders have changed.
    tail: float = 0.0
    tail_max_ticks: int = 0
    #: Per-tick probability that an old message (one of the last few hundred sent) is
    #: delivered again, long after it was first.
    replay_rate: float = 0.0
    #: Per-node, per-tick probability that a live node pauses (a stopped process: no
    #: ticks, no handling; what arrives waits) for up to ``pause_max_ticks``.
    pause_rate: float = 0.0
    pause_max_ticks: int = 0
    #: Per-tick probability that one node (the leader, mostly) keeps its links to a
    #: minority only: a deposed leader that still talks to some followers.
    partial_rate: float = 0.0
    partial_max_ticks: int = 0
    #: Nodes' clocks run at different rates: each ticks 1 +- up to this per sim tick.
    clock_skew: float = 0.0
    #: Per-tick probability that every message of one type is dropped for a while.
    burst_rate: float = 0.0
    burst_max_ticks: int = 0

    @classmethod
    def draw(cls, rng: random.Random) -> FaultRates:
        """Fault rates for one run. Every draw happens in a fixed order, whether or
        not the fault ends up enabled, so a run's other random choices do not
        shift when one rate changes."""

        def maybe(p_on: float, value: float) -> float:
            return value if rng.random() < p_on else 0.0

        def log_uniform(low: int, high: int) -> int:
            # Short durations as often as long ones: quick restarts and brief
            # partitions make the tightest races.
            return int(low * (high / low) ** rng.random())

        loss = maybe(0.7, rng.uniform(0.0, 0.3))
        duplication = maybe(0.5, rng.uniform(0.0, 0.1))
        delay_max = rng.randint(1, 12)
        delay_min = rng.randint(1, max(1, delay_max // 3))
        partition_rate = maybe(0.5, rng.uniform(0.001, 0.01))
        partition_max = log_uniform(10, 300)
        link_cut_rate = maybe(0.4, rng.uniform(0.001, 0.01))
        link_cut_max = log_uniform(10, 200)
        # Log-uniform over two decades: most runs crash now and then, some
        # crash constantly, which is what finds races around restarts.
        crash_rate = maybe(0.7, 0.0005 * 100 ** rng.random())
        crash_max_down = log_uniform(3, 300)
        mid_ready = rng.uniform(0.0, 1.0)
        # Drawn after the faults above, so that their draws do not depend on these.
        tail = maybe(0.4, rng.uniform(0.01, 0.2))
        tail_max = log_uniform(40, 600)
        replay_rate = maybe(0.4, rng.uniform(0.01, 0.3))
        pause_rate = maybe(0.4, 0.0005 * 40 ** rng.random())
        pause_max = log_uniform(10, 400)
        partial_rate = maybe(0.4, rng.uniform(0.002, 0.02))
        partial_max = log_uniform(20, 400)
        clock_skew = maybe(0.4, rng.uniform(0.1, 0.6))
        burst_rate = maybe(0.3, rng.uniform(0.002, 0.02))
        burst_max = log_uniform(5, 100)
        return cls(
            loss=loss,
            duplication=duplication,
            delay_min_ticks=delay_min,
            delay_max_ticks=delay_max,
            partition_rate=partition_rate,
            partition_max_ticks=partition_max,
            link_cut_rate=link_cut_rate,
            link_cut_max_ticks=link_cut_max,
            crash_rate=crash_rate,
            crash_max_down_ticks=crash_max_down,
            mid_ready_crash=mid_ready,
            tail=tail,
            tail_max_ticks=tail_max,
            replay_rate=replay_rate,
            pause_rate=pause_rate,
            pause_max_ticks=pause_max,
            partial_rate=partial_rate,
            partial_max_ticks=partial_max,
            clock_skew=clock_skew,
            burst_rate=burst_rate,
            burst_max_ticks=burst_max,
        )

    def describe(self) -> str:
        return (
            f"loss={self.loss:.3f} dup={self.duplication:.3f} "
            f"delay={self.delay_min_ticks}..{self.delay_max_ticks} "
            f"partition={self.partition_rate:.4f}/<={self.partition_max_ticks}t "
            f"linkcut={self.link_cut_rate:.4f}/<={self.link_cut_max_ticks}t "
            f"crash={self.crash_rate:.4f}/<={self.crash_max_down_ticks}t "
            f"midready={self.mid_ready_crash:.2f} "
            f"tail={self.tail:.3f}/<={self.tail_max_ticks}t replay={self.replay_rate:.3f} "
            f"pause={self.pause_rate:.4f}/<={self.pause_max_ticks}t "
            f"partial={self.partial_rate:.4f}/<={self.partial_max_ticks}t "
            f"skew={self.clock_skew:.2f} burst={self.burst_rate:.4f}/<={self.burst_max_ticks}t"
        )


#: The heal phase: no loss, no duplication, no partitions, small delays.
PERFECT = FaultRates(delay_min_ticks=1, delay_max_ticks=2)

