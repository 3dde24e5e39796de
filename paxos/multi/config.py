"""Static configuration of a Multi-Paxos replica. All times are in ticks."""

from __future__ import annotations

from dataclasses import dataclass

from paxos.codec import MAX_CLIENT_ID_LEN, MAX_FRAME_BYTES

#: Bytes a command costs in a frame beyond its payload and client id (array header, seq).
COMMAND_OVERHEAD = 16
#: Bytes of a frame beyond its values (version, type code, src, ballot, slot, commit, ...).
FRAME_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """The starting membership (``nodes``: the voters every replica of the cluster
    starts from; the log changes it, see paxos.multi.membership) and protocol tuning.

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
    #: A membership change chosen at slot i governs slots i + alpha and up (see
    #: paxos.multi.membership), so a leader proposes no slot more than alpha beyond its
    #: chosen prefix. At least ``window``. Safety: every member must use the same alpha
    #: for the whole life of the cluster (it decides which membership governs a slot),
    #: so it is a constant, not derived from the window (a tuning knob); the runtime
    #: records it in the data directory and refuses another (review finding).
    alpha: int = 16
    #: The phase-2 quorum of the starting membership (flexible quorums; 0: a majority).
    #: Phase 1 then needs the rest plus one: any two such quorums meet.
    phase2_quorum: int = 0
    #: A learner is promoted only once its chosen prefix is at most this many slots
    #: behind the leader's, so that a promotion never stalls the cluster.
    promote_lag: int = 64
    #: At most this many commands per slot.
    batch_max: int = 256
    #: At most this many bytes of payloads per slot (a single larger command still
    #: gets a slot of its own: it is at most ``max_payload_bytes``).
    batch_max_bytes: int = 1024 * 1024
    #: Commands a replica queues while it has no leader to send them to, or
    #: while the window is full; beyond this, propose() drops them (the client retries).
    queue_max: int = 100_000
    #: The same bound in bytes of queued payloads.
    queue_max_bytes: int = 64 * 1024 * 1024
    #: Largest payload a replica takes from a client (the cluster's request limit, like
    #: etcd's --max-request-bytes). Larger ones never enter the log.
    max_payload_bytes: int = 1024 * 1024
    #: At most this many entries, and about this many bytes, per CatchupReply.
    catchup_max: int = 64
    catchup_max_bytes: int = 1024 * 1024
    #: About this many bytes of accepted values per Promise; an acceptor with more
    #: sends the rest when the candidate asks for it.
    promise_max_bytes: int = 1024 * 1024
    #: A CommitRecord (the chosen prefix, for a fast restart) is written at most this often.
    commit_record_ticks: int = 50
    #: An acceptor accepts no slot further than this beyond its chosen prefix. Honest
    #: leaders stay within a few windows of it; the bound limits what a forged or corrupt
    #: slot number can make a new leader do at takeover (fill the gap with no-ops).
    slots_ahead: int = 2**14
    #: At most this many live client sessions; opening one more evicts the session
    #: idle the longest (in log order).
    max_sessions: int = 4096
    #: A client keeps at most this many commands unacknowledged; sessions remember
    #: where at least their last this many commands went.
    session_window: int = 4096
    #: The leader expires a session it has not seen active for this long (through the
    #: log: every replica ends it at the same point of the order).
    session_timeout_ticks: int = 6000
    #: ... and looks for idle sessions this often.
    session_check_ticks: int = 100
    #: A snapshot install moves this many bytes per SnapshotChunk (one chunk in flight:
    #: the learner asks for the next when one arrives).
    snapshot_chunk_bytes: int = 1024 * 1024
    #: Largest snapshot a replica accepts to install (it is held in memory while it
    #: arrives, and a peer's claim of a larger one is refused).
    max_snapshot_bytes: int = 4 * 1024**3
    #: After a durable snapshot at slot F, chosen values above F - compact_keep_slots stay
    #: in memory (and in the log), so a follower a little behind catches up from the log
    #: instead of installing the whole snapshot.
    compact_keep_slots: int = 256

    def __post_init__(self) -> None:
        if len(self.nodes) < 1 or len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes must be distinct node ids")
        if any(n <= 0 for n in self.nodes):
            raise ValueError("node ids must be positive integers")
        if not 0 < self.heartbeat_ticks < self.election_min_ticks < self.election_max_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_min_ticks < election_max_ticks")
        if self.window < 1 or self.batch_max < 1 or self.retransmit_ticks < 1:
            raise ValueError("window, batch_max and retransmit_ticks must be >= 1")
        if self.slots_ahead < self.window:
            raise ValueError("slots_ahead must be at least the window")
        if self.alpha < self.window:
            raise ValueError("alpha must be at least the window (the leader's pipeline)")
        if not 0 <= self.phase2_quorum <= len(self.nodes) or self.promote_lag < 0:
            raise ValueError("need 0 <= phase2_quorum <= nodes and promote_lag >= 0")
        if min(self.catchup_max, self.max_sessions, self.session_window) < 1:
            raise ValueError("catchup_max, max_sessions and session_window must be >= 1")
        if not 0 < self.session_check_ticks <= self.session_timeout_ticks:
            raise ValueError("need 0 < session_check_ticks <= session_timeout_ticks")
        if self.snapshot_chunk_bytes < 1 or self.compact_keep_slots < 0:
            raise ValueError("need snapshot_chunk_bytes >= 1 and compact_keep_slots >= 0")
        if self.max_snapshot_bytes < 1:
            raise ValueError("max_snapshot_bytes must be >= 1")
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be >= 1")
        # Every frame a replica builds holds at most one budget's worth of values plus
        # one more command (a budget is exceeded by at most one command), plus headers;
        # a slot's budget counts payloads only, its commands' other bytes are bounded
        # per command. All that must fit the codec's frame limit, or some frame could
        # never be sent.
        if min(self.batch_max_bytes, self.catchup_max_bytes, self.promise_max_bytes) < 1:
            raise ValueError("byte budgets must be >= 1")
        if self.queue_max_bytes < 1:
            raise ValueError("queue_max_bytes must be >= 1")
        if self.max_frame_bytes > MAX_FRAME_BYTES:
            raise ValueError(
                f"max_payload_bytes plus the byte budgets must fit a frame "
                f"({self.max_frame_bytes} > {MAX_FRAME_BYTES} bytes)"
            )

    @property
    def max_frame_bytes(self) -> int:
        """The largest frame a replica with this config can build."""
        command = self.max_command_bytes
        slot = self.batch_max_bytes + self.batch_max * (command - self.max_payload_bytes)
        budget = max(
            slot, self.catchup_max_bytes, self.promise_max_bytes, self.snapshot_chunk_bytes
        )
        return budget + command + FRAME_OVERHEAD

    @property
    def max_command_bytes(self) -> int:
        """The most bytes one command can take in a frame (client ids are UTF-8: up to
        four bytes per character)."""
        return self.max_payload_bytes + 4 * MAX_CLIENT_ID_LEN + COMMAND_OVERHEAD
