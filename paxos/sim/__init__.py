"""A deterministic fault simulator for the Multi-Paxos replica (``paxos sim``).

One seed fixes a whole run: fault rates, losses, delays, partitions, crashes,
pauses, clock rates, the workload and every replica's rng. The parts:
:mod:`~paxos.sim.network` (virtual network), :mod:`~paxos.sim.disk`
(write/sync/crash), :mod:`~paxos.sim.node` (drives a replica through the
runtime's own :class:`~paxos.multi.driver.ReadyDriver`), :mod:`~paxos.sim.client`
(clients with sessions opened through the log), :mod:`~paxos.sim.checkers`
(safety and liveness judges of outcomes), :mod:`~paxos.sim.invariants` (state
invariants at every step) and :mod:`~paxos.sim.runner` (the run itself).
"""

from paxos.sim.runner import SimConfig, SimResult, run, run_many

__all__ = ["SimConfig", "SimResult", "run", "run_many"]
