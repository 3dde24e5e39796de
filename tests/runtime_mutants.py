"""Planted bugs in the runtime, and the test that must catch each (tests/test_runtime_mutations.py).

The simulator's planted bugs (tests/test_mutations.py) break the core; these break
what only real processes, sockets and disks exercise: the node's order of disk and
network, the write-ahead log's syncs, the node's check of who speaks, the transport's
check of which key speaks (CURVE), a client key's grant, the session rule as the node
runs it, the client's resumption of a subscription, and the history of deliveries a
node keeps for subscribers (its retention, its restart after a snapshot install).

Like the core's, they live here and never behind switches in production code. Each
is a subclass or a *one-line rewrite* of the shipped function: the function's own
source with one line replaced (:func:`rewrite`), so a mutant is exactly "the code
as it ships, but for this line", and a mutant whose line no longer exists fails
loudly instead of silently testing nothing.

A mutant is applied in the test process (:func:`planted`) and, through the
environment variable :data:`ENV`, in every node process the test starts
(:class:`procs.ProcessCluster` then runs its nodes through ``tests/mutant_node.py``).
"""

from __future__ import annotations
import __future__

import contextlib
import inspect
import os
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FunctionType
from typing import Any

import broadcast.auth
import broadcast.history
import broadcast.kv.service
import broadcast.kv.wire
import broadcast.metrics
import broadcast.snapshots
import broadcast.wal
import paxos.coord.machine
from broadcast import client, node, transport
from paxos.multi.driver import ReadyDriver
from paxos.multi.ready import Ready
from paxos.multi.replica import Replica

#: The environment variable naming the mutant a node process applies before it starts.
ENV = "PAXOS_TEST_MUTANT"


def rewrite(func: Callable[..., Any], old: str, new: str) -> FunctionType:
    """``func`` compiled from its own source with the one occurrence of ``old`` replaced
    by ``new``, in its own module's globals."""
    source = textwrap.dedent(inspect.getsource(func))
    count = source.count(old)
    assert count == 1, f"mutant out of date: {old!r} occurs {count} times in {func.__qualname__}"
    code = compile(
        source.replace(old, new),
        f"<mutant of {func.__module__}.{func.__qualname__}>",
        "exec",
        flags=__future__.annotations.compiler_flag,
        dont_inherit=True,
    )
    namespace: dict[str, Any] = {}
    exec(code, func.__globals__, namespace)
    mutated = namespace[func.__name__]
    assert isinstance(mutated, FunctionType)
    mutated.__qualname__ = func.__qualname__
    return mutated


class SendsBeforeSync(ReadyDriver):
    """The node's driver with the contract's two middle steps swapped: a turn's messages
    leave before its records are appended and synced (an Accepted before its accept)."""

    def handle(self, ready: Ready) -> None:
        if ready.eager:
            self.outbox.send(ready.eager)
        if ready.messages:
            self.outbox.send(ready.messages)
        if ready.records:
            self.storage.append(ready.records)
            self.storage.sync()
        self.applier.apply(ready)


# A patch: (object, attribute, what to put there).
Patch = tuple[object, str, object]


@dataclass(frozen=True)
class Mutant:
    """A planted runtime bug, the test that must catch it, and what its failure must say
    (a run that fails for another reason, a crash say, is not a catch)."""

    doc: str
    patches: Callable[[], list[Patch]]
    #: ``module::function`` of the named test, a function of ``tmp_path`` alone.
    test: str
    #: A regular expression the failure's message must match.
    expect: str


_ROLL = broadcast.wal.WriteAheadLog._roll
_CREATE_SEGMENT = broadcast.wal._create_segment
_COMPACT = broadcast.wal.WriteAheadLog.compact
_WRITE_FLOOR = broadcast.wal._write_floor
_SNAPSHOT_SAVE = broadcast.snapshots.SnapshotStore.save
_SNAPSHOT_WRITE = broadcast.snapshots.SnapshotStore._write_tmp
_ON_FRAME = node.Node._on_frame
_ON_SUBMIT = node.Node._on_submit
_MAY_USE = node.Node._may_use
_DRAIN_AUTHENTICATED = transport.NodeTransport._drain_authenticated
_PRINCIPAL = broadcast.auth.Gatekeeper._principal
_SNAPSHOT_TURN = node.Node._snapshot_turn
_DELIVER = Replica._deliver
_SUBSCRIBE = client.Client.subscribe
_ADMISSION = "if seq != last_seq.get(client, -2) + 1:"
_COUNT_DELIVERED = broadcast.metrics.NodeMetrics.count_delivered
_END_TURN = broadcast.metrics.NodeMetrics.end_turn
_METRICS_TEST = "test_metrics::test_metrics_of_a_live_cluster_agree_with_what_it_did"
_FENCED = paxos.coord.machine.CoordMachine._fenced
_DUE = broadcast.kv.service.CoordService.due
_PAGE_OF = broadcast.kv.wire.page_of
_LOCK_TEST = (
    "test_kv_procs::test_a_paused_lock_holder_loses_the_lock_and_its_stale_token_is_refused"
)
_HISTORY_APPEND = broadcast.history.History.append
_HISTORY_TRIM = broadcast.history.History._trim
_HISTORY_TEST = (
    "test_compaction_crashes::"
    "test_a_survivor_that_came_up_late_installs_a_snapshot_and_serves_from_there"
)

MUTANTS: dict[str, Mutant] = {
    "kv-fence-ignores-token": Mutant(
        "the coordination service accepts a fenced write whatever its token",
        lambda: [
            (
                paxos.coord.machine.CoordMachine,
                "_fenced",
                rewrite(_FENCED, "if lock.token != fence[1]:", "if False:"),
            )
        ],
        _LOCK_TEST,
        r"stale token was not refused",
    ),
    "kv-lease-never-expires": Mutant(
        "the leader's lease timer never proposes an expiry",
        lambda: [
            (
                broadcast.kv.service.CoordService,
                "due",
                rewrite(_DUE, "out.append(encode(Expire(info.id, info.last)))", "pass"),
            )
        ],
        _LOCK_TEST,
        r"no grant after the holder's lease ran out",
    ),
    "kv-watch-skips-a-change": Mutant(
        "a watch answer drops the first change at its cursor",
        lambda: [
            (
                broadcast.kv.service,
                "page_of",
                rewrite(
                    _PAGE_OF,
                    "if change.index == cursor.index and skipped < cursor.skip:",
                    "if change.index == cursor.index and skipped <= cursor.skip:",
                ),
            )
        ],
        "test_kv_procs::test_a_watch_resumes_after_its_node_fails_without_a_gap_or_a_repeat",
        r"the watch saw",
    ),
    "metrics-batch-counted-once": Mutant(
        "the node's metrics count a batch of deliveries as one delivery",
        lambda: [
            (
                broadcast.metrics.NodeMetrics,
                "count_delivered",
                rewrite(_COUNT_DELIVERED, "self.delivered_total += count",
                        "self.delivered_total += 1"),
            )
        ],
        _METRICS_TEST,
        r"counted [0-9.]+ deliveries, but its delivered index is",
    ),
    "metrics-election-won-uncounted": Mutant(
        "the node's metrics do not count an election won after a candidate turn",
        lambda: [
            (
                broadcast.metrics.NodeMetrics,
                "end_turn",
                rewrite(_END_TURN, "self.elections_won += 1", "pass"),
            )
        ],
        _METRICS_TEST,
        r"became leader, but its elections won went",
    ),
    "send-before-sync": Mutant(
        "the node sends a turn's messages before it appends and syncs its records",
        lambda: [(node, "ReadyDriver", SendsBeforeSync)],
        "test_power_loss::test_acknowledged_broadcasts_survive_power_loss_of_the_whole_cluster",
        r"lost the acknowledged broadcast",
    ),
    "roll-without-sync": Mutant(
        "the WAL starts a new segment without syncing the one it leaves",
        lambda: [(broadcast.wal.WriteAheadLog, "_roll", rewrite(_ROLL, "self.sync()", "pass"))],
        "test_wal::test_synced_records_survive_power_loss_across_segment_rolls",
        r"synced records lost",
    ),
    "segment-unsynced": Mutant(
        "the WAL creates a segment without syncing its header and its directory entry",
        lambda: [
            (broadcast.wal, "_create_segment", rewrite(_CREATE_SEGMENT, "if fsync:", "if False:"))
        ],
        "test_wal::test_synced_records_survive_power_loss_across_segment_rolls",
        r"synced records lost",
    ),
    "compact-without-floor": Mutant(
        "the WAL's compaction unlinks old segments without recording the floor first",
        lambda: [
            (
                broadcast.wal.WriteAheadLog,
                "compact",
                rewrite(
                    _COMPACT,
                    "_write_floor(self._directory, self._dir_fd, keep_from, self._fsync)",
                    "pass",
                ),
            )
        ],
        "test_wal::test_compaction_survives_power_loss_at_every_step",
        r"no longer opens",
    ),
    "floor-rename-unsynced": Mutant(
        "the WAL renames FLOOR into place without syncing the directory before the unlinks",
        lambda: [
            (broadcast.wal, "_write_floor", rewrite(_WRITE_FLOOR, "os.fsync(dir_fd)", "pass"))
        ],
        "test_wal::test_compaction_survives_power_loss_at_every_step",
        r"no longer opens",
    ),
    "floor-unsynced": Mutant(
        "the WAL renames FLOOR's temporary file into place without syncing its contents",
        lambda: [(broadcast.wal, "_write_floor", rewrite(_WRITE_FLOOR, "os.fsync(fd)", "pass"))],
        "test_wal::test_compaction_survives_power_loss_at_every_step",
        r"no longer opens",
    ),
    "snapshot-rename-unsynced": Mutant(
        "a snapshot save returns before the directory holding its new name is synced",
        lambda: [
            (
                broadcast.snapshots.SnapshotStore,
                "save",
                rewrite(_SNAPSHOT_SAVE, "fsync_dir(self._directory)", "pass"),
            )
        ],
        "test_snapshots::test_a_saved_snapshot_survives_power_loss",
        r"saved snapshot",
    ),
    "snapshot-unsynced": Mutant(
        "a snapshot's temporary file is renamed into place without syncing its contents",
        lambda: [
            (
                broadcast.snapshots.SnapshotStore,
                "_write_tmp",
                rewrite(_SNAPSHOT_WRITE, "os.fsync(fd)", "pass"),
            )
        ],
        "test_snapshots::test_a_saved_snapshot_survives_power_loss",
        r"saved snapshot",
    ),
    "compact-before-snapshot-durable": Mutant(
        "the node compacts its log as soon as it takes a snapshot, before the file is durable",
        lambda: [
            (
                node.Node,
                "_snapshot_turn",
                rewrite(
                    _SNAPSHOT_TURN,
                    "snapshot = replica.take_snapshot(app)",
                    "snapshot = replica.take_snapshot(app); self._compact(snapshot)",
                ),
            )
        ],
        "test_compaction_crashes::test_a_node_killed_before_its_snapshot_is_renamed_recovers",
        r"timed out .* node 2 to deliver|no snapshot",
    ),
    "no-sender-check": Mutant(
        "the node steps a Paxos message whatever connection it came on (the src check gone)",
        lambda: [
            (
                node.Node,
                "_on_frame",
                rewrite(_ON_FRAME, "if node_id_of(identity) != msg.src:", "if False:"),
            )
        ],
        "test_scripted_peers::test_a_message_in_another_nodes_name_is_dropped",
        r"forged",
    ),
    "gate-admits-any-key": Mutant(
        "the ZAP handler lets in every CURVE key, one on no list as a client without a grant",
        lambda: [
            (
                broadcast.auth.Gatekeeper,
                "_principal",
                rewrite(
                    _PRINCIPAL,
                    "return self._principals.get(credentials[0])",
                    'return self._principals.get(credentials[0], "c:stranger")',
                ),
            )
        ],
        "test_auth::test_a_stranger_gets_no_answer_and_moves_nothing",
        r"unlisted key .* was let in",
    ),
    "transport-trusts-routing-identity": Mutant(
        "with CURVE, the transport takes whoever picks a member's routing identity (n:<id>) "
        "for that member, whatever its key (a client's key speaks Paxos)",
        lambda: [
            (
                transport.NodeTransport,
                "_drain_authenticated",
                rewrite(
                    _DRAIN_AUTHENTICATED,
                    "identity = parts[0]",
                    "identity = parts[0]; principal = (self._node_identity(identity) "
                    "or principal.encode()).decode()",
                ),
            )
        ],
        "test_auth::test_a_listed_key_cannot_speak_for_a_member",
        r"forged",
    ),
    "member-id-from-routing-identity": Mutant(
        "with CURVE, a member's frames are reported under the member id of the routing "
        "identity it picked, not of its key (one member speaks for another)",
        lambda: [
            (
                transport.NodeTransport,
                "_drain_authenticated",
                rewrite(
                    _DRAIN_AUTHENTICATED,
                    "self._envelope(out, identity, principal.encode(), parts)",
                    "self._envelope(out, identity, self._node_identity(identity) "
                    "or principal.encode(), parts)",
                ),
            )
        ],
        "test_auth::test_a_listed_key_cannot_speak_for_a_member",
        r"forged",
    ),
    "submit-into-any-session": Mutant(
        "a client key may submit into (and ask about) sessions its grant does not name",
        lambda: [
            (
                node.Node,
                "_on_submit",
                rewrite(
                    _ON_SUBMIT,
                    "if grant is not None and not grant.may_use(session_name(key)):",
                    "if False:",
                ),
            )
        ],
        "test_auth::test_a_client_key_is_held_to_its_grant",
        r"alice wrote into, closed or learnt about the admin's session",
    ),
    "open-any-session-name": Mutant(
        "a client key may open and close sessions under names its grant does not name",
        lambda: [
            (
                node.Node,
                "_may_use",
                rewrite(_MAY_USE, "if grant is not None and grant.may_use(name):",
                        "if grant is not None:"),
            )
        ],
        "test_auth::test_a_client_key_is_held_to_its_grant",
        r"alice opening a session named bob was allowed",
    ),
    "session-admits-repeat": Mutant(
        "the session rule delivers a seq at or below the session's last (a repeat)",
        lambda: [
            (
                Replica,
                "_deliver",
                rewrite(
                    _DELIVER,
                    _ADMISSION,
                    "if client not in last_seq or seq == 0 or seq > last_seq[client] + 1:",
                ),
            )
        ],
        "test_scripted_peers::test_each_session_seq_is_delivered_once_and_in_order",
        r"delivered",
    ),
    "session-admits-gap": Mutant(
        "the session rule delivers a seq beyond the session's next (a gap)",
        lambda: [
            (
                Replica,
                "_deliver",
                rewrite(
                    _DELIVER, _ADMISSION, "if client not in last_seq or seq <= last_seq[client]:"
                ),
            )
        ],
        "test_scripted_peers::test_each_session_seq_is_delivered_once_and_in_order",
        r"delivered",
    ),
    "history-trim-ignores-retention": Mutant(
        "the history deletes its old segments whatever the retention says",
        lambda: [
            (
                broadcast.history.History,
                "_trim",
                rewrite(
                    _HISTORY_TRIM,
                    "if self._entries - oldest.count < self.retain_entries:",
                    "if False:",
                ),
            )
        ],
        _HISTORY_TEST,
        r"serves its history from \d+ on, but installed no snapshot",
    ),
    "history-restarts-late-after-install": Mutant(
        "after a snapshot install the history restarts one index late (one delivery lost)",
        lambda: [
            (
                broadcast.history.History,
                "append",
                rewrite(_HISTORY_APPEND, "self._restart(first_index)",
                        "self._restart(first_index + 1)"),
            )
        ],
        _HISTORY_TEST,
        r"serves its history from \d+ on, but installed no snapshot",
    ),
    "subscribe-resumes-early": Mutant(
        "a subscription moving to another node resumes one index early",
        lambda: [
            (
                client.Client,
                "subscribe",
                rewrite(
                    _SUBSCRIBE,
                    "source = self._after(source)",
                    "source, next_index = self._after(source), next_index - 1",
                ),
            )
        ],
        "test_client::test_a_subscription_moves_to_another_node_without_gap_or_repeat",
        r"index",
    ),
    "subscribe-resumes-late": Mutant(
        "a subscription moving to another node resumes one index late",
        lambda: [
            (
                client.Client,
                "subscribe",
                rewrite(
                    _SUBSCRIBE,
                    "source = self._after(source)",
                    "source, next_index = self._after(source), next_index + 1",
                ),
            )
        ],
        "test_client::test_a_subscription_moves_to_another_node_without_gap_or_repeat",
        r"index",
    ),
}


def apply(name: str) -> Callable[[], None]:
    """Plant mutant ``name`` in this process; returns what takes it out again."""
    undo: list[Patch] = []
    for owner, attribute, replacement in MUTANTS[name].patches():
        undo.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, replacement)

    def remove() -> None:
        for owner, attribute, original in reversed(undo):
            setattr(owner, attribute, original)

    return remove


@contextlib.contextmanager
def planted(name: str) -> Iterator[Mutant]:
    """Mutant ``name`` in this process and in every node process started meanwhile."""
    previous = os.environ.get(ENV)
    os.environ[ENV] = name
    remove = apply(name)
    try:
        yield MUTANTS[name]
    finally:
        remove()
        if previous is None:
            del os.environ[ENV]
        else:
            os.environ[ENV] = previous
