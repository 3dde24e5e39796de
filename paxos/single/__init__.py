"""Single-decree Paxos: one value chosen by acceptors, proposers and learners.

Pure and sans-IO: each role takes messages in and hands back what to persist
and what to send. The safety rules themselves live in :mod:`paxos.single.rules`
and are shared with the Multi-Paxos replica.
"""

from paxos.single.acceptor import Acceptor, AcceptorState, Output
from paxos.single.learner import Learner
from paxos.single.messages import (
    Accept,
    Accepted,
    Message,
    MessageError,
    Nack,
    Prepare,
    Promise,
    Sends,
)
from paxos.single.proposer import Phase, Proposer
from paxos.single.rules import is_quorum, may_accept, may_promise, pick_value

__all__ = [
    "Accept",
    "Accepted",
    "Acceptor",
    "AcceptorState",
    "Learner",
    "Message",
    "MessageError",
    "Nack",
    "Output",
    "Phase",
    "Prepare",
    "Promise",
    "Proposer",
    "Sends",
    "is_quorum",
    "may_accept",
    "may_promise",
    "pick_value",
]
