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
        )

    def describe(self) -> str:
        return (
            f"loss={self.loss:.3f} dup={self.duplication:.3f} "
            f"delay={self.delay_min_ticks}..{self.delay_max_ticks} "
            f"partition={self.partition_rate:.4f}/<={self.partition_max_ticks}t "
            f"linkcut={self.link_cut_rate:.4f}/<={self.link_cut_max_ticks}t "
            f"crash={self.crash_rate:.4f}/<={self.crash_max_down_ticks}t "
            f"midready={self.mid_ready_crash:.2f}"
        )


#: The heal phase: no loss, no duplication, no partitions, small delays.
PERFECT = FaultRates(delay_min_ticks=1, delay_max_ticks=2)

