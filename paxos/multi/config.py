"""Static configuration of a Multi-Paxos replica. All times are in ticks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Cluster membership and protocol tuning.

    The runtime maps one tick to ``tick_ms`` of wall-clock time (10 ms by
    default), so the defaults give a 50 ms heartbeat and a 150-300 ms
    election timeout.
    """

    nodes: tuple[int, ...]
    #: The leader sends a Heartbeat every this many ticks.
    heartbeat_ticks: int = 5
    #: A follower that hears no leader for a random number of ticks in
    #: [election_min_ticks, election_max_ticks) starts a campaign.
    election_min_ticks: int = 15
    election_max_ticks: int = 30
    #: Unanswered Prepare/Accept/CatchupRequest messages are resent this often.
    retransmit_ticks: int = 4
    #: At most this many slots proposed and not yet chosen (phase 2 pipeline).
    window: int = 16
    #: At most this many commands per slot.
    batch_max: int = 256
    #: Commands a replica queues while it has no leader to send them to, or
    #: while the window is full; beyond this, propose() drops them (the client retries).
    queue_max: int = 100_000
    #: At most this many entries per CatchupReply.
    catchup_max: int = 64
    #: A CommitRecord (the chosen prefix, for a fast restart) is written at most this often.
    commit_record_ticks: int = 50

    def __post_init__(self) -> None:
        if len(self.nodes) < 1 or len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes must be distinct node ids")
        if any(n <= 0 for n in self.nodes):
            raise ValueError("node ids must be positive integers")
        if not 0 < self.heartbeat_ticks < self.election_min_ticks < self.election_max_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_min_ticks < election_max_ticks")
        if self.window < 1 or self.batch_max < 1 or self.retransmit_ticks < 1:
            raise ValueError("window, batch_max and retransmit_ticks must be >= 1")

    @property
    def majority(self) -> int:
        """The smallest number of nodes that any two such sets share one of."""
        return len(self.nodes) // 2 + 1
