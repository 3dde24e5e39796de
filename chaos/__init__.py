"""Jepsen-style fault testing of the runtime: real node processes, real faults, checked histories.

* :mod:`.harness` -- runs a cluster under client load and injects faults (``paxos chaos``);
* :mod:`.network` -- network namespaces joined by a bridge, partitions by iptables;
* :mod:`.nodeproc` / :mod:`.faults` -- durability marks and power-loss simulation;
* :mod:`.history` -- the recorded client operations;
* :mod:`.checkers` / :mod:`.linearizability` -- the judges.
"""

from chaos.checkers import Verdict, build_order, check_all
from chaos.history import History, Op
from chaos.linearizability import RegisterOp, check_register

__all__ = [
    "History",
    "Op",
    "RegisterOp",
    "Verdict",
    "build_order",
    "check_all",
    "check_register",
]
