"""A deterministic fault simulator for the Multi-Paxos replica (``paxos sim``).

One seed fixes a whole run: fault rates, losses, delays, partitions, crashes,
client pacing and every replica's rng. The parts: :mod:`~paxos.sim.network`
(virtual network), :mod:`~paxos.sim.disk` (write/sync/crash),
:mod:`~paxos.sim.node` (drives a replica through the Ready contract),
:mod:`~paxos.sim.client` (retrying client sessions), :mod:`~paxos.sim.checkers`
(safety and liveness judges) and :mod:`~paxos.sim.runner` (the run itself).
"""

from paxos.sim.runner import SimConfig, SimResult, run, run_many

__all__ = ["SimConfig", "SimResult", "run", "run_many"]
