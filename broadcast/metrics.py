"""What one node counts, for Prometheus and for the live visualiser.

The node's loop is the only writer. On the hot path it touches plain ints and
dicts (a message counted is one dict update; nothing takes a lock per message):

- per message sent, ``sent[(dst, type)]`` (count, bytes), and per frame received,
  ``received[type]``;
- per turn, :meth:`NodeMetrics.end_turn` folds the turn's sends into the totals
  and the event ring, and notes role, commit and election changes;
- per batch, histograms of fsync time, of commands per delivery batch, and of
  commit latency (from the leader's first Accept of a slot to learning it
  chosen), through prometheus-client (one lock per batch, not per message).

Gauges (role, ballot, indexes, queue depths, sessions, snapshot, membership)
are not kept up to date at all: a scrape asks the loop for a :class:`Reading`
(see :mod:`broadcast.httpd`), so between scrapes they cost nothing.

The event ring (:class:`EventRing`) holds this node's newest events in the
schema the visualiser reads (role, accept and chosen ranges, delivery runs,
per-turn send summaries, memberships, snapshots), bounded in count; every event
is bounded in size (client names are cut to 64 characters), so the ring is
bounded in bytes. Events are recorded only while somebody reads them: for
:data:`LIVE_S` seconds after each ``/events`` request (a Prometheus scrape alone
costs no events).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from paxos.messages import Accept

#: Events kept for the live view; about 200 bytes each as JSON.
EVENT_RING_EVENTS = 4096
#: Events in one /events reply.
EVENTS_PER_REPLY = 1000
#: Events are recorded for this long after a reader last asked for them.
LIVE_S = 10.0
#: Sends, accepts, chosen slots and deliveries are summed over this long per event (a
#: loop turn may last 100 µs under load: per-turn events would cost more than the turns).
EVENT_WINDOW_S = 0.05
#: Delivery runs held for one window at most (more: the window ends early).
_MAX_WINDOW_RUNS = 256
#: Leader proposals waiting to be chosen that we time (a window's worth is tens).
_MAX_TIMED_SLOTS = 10_000

_FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class EventRing:
    """The newest events, numbered from 1; readers ask for those after a number."""

    def __init__(self, capacity: int = EVENT_RING_EVENTS) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=capacity)
        self._next = 1

    def add(self, event: dict[str, Any]) -> None:
        event["t"] = round(time.time() * 1000.0, 3)
        self._events.append((self._next, event))
        self._next += 1

    def add_many(self, events: list[dict[str, Any]]) -> None:
        """Events of one moment (a turn), with one clock reading."""
        t = round(time.time() * 1000.0, 3)
        number = self._next
        append = self._events.append
        for event in events:
            event["t"] = t
            append((number, event))
            number += 1
        self._next = number

    def after(
        self, seq: int, limit: int = EVENTS_PER_REPLY
    ) -> tuple[int, int, list[dict[str, Any]]]:
        """``(first, next, events)``: events numbered above ``seq`` (at most ``limit``),
        the number of the first one returned (more than seq + 1 if some were
        overwritten; at most seq if ``seq`` is beyond the newest, i.e. from before a
        restart: the events from the oldest) and the number to ask after next time."""
        events = list(self._events.copy())  # copy() is atomic: the loop may append meanwhile
        if not events:
            return self._next, self._next - 1, []
        if seq > events[-1][0]:
            # A number this ring never gave: the reader read another incarnation of
            # this node (it restarted, numbering from 1 again). From the oldest, then:
            # ``first`` <= seq tells the reader that the numbering went back.
            seq = 0
        oldest = events[0][0]
        start = max(0, seq + 1 - oldest)
        chosen = events[start : start + limit]
        if not chosen:
            return self._next, max(seq, events[-1][0]), []
        return chosen[0][0], chosen[-1][0], [e for _, e in chosen]


@dataclass(slots=True)
class Reading:
    """The gauges of one scrape, read in the node's loop (so they agree with each other)."""

    node: int
    role: str
    ballot: tuple[int, int]
    leader: int
    commit: int
    known_commit: int
    delivered: int
    leader_ok: bool
    sessions: int
    connections: int
    backlog_commands: int
    backlog_bytes: int
    held_fetches: int
    owed_reply_bytes: int
    paused_clients: int
    local_waiting: int
    snapshot_slot: int
    snapshot_index: int
    floor: int
    wal_bytes: int
    history_first: int
    history_last: int
    epoch: int
    voters: int
    learners: int
    transport: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)


class NodeMetrics:
    """A node's counters and histograms, and its event ring (see the module doc)."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        node = [str(node_id)]
        self.fsync_seconds = Histogram(
            "paxos_fsync_seconds", "Time to make one batch of log records durable.",
            ["node"], registry=self.registry, buckets=_FSYNC_BUCKETS,
        ).labels(*node)
        self.commit_seconds = Histogram(
            "paxos_commit_latency_seconds",
            "Leader: from its first Accept of a slot to learning the slot chosen.",
            ["node"], registry=self.registry, buckets=_LATENCY_BUCKETS,
        ).labels(*node)
        self.batch_entries = Histogram(
            "paxos_delivery_batch_entries", "Commands delivered per batch (one loop turn).",
            ["node"], registry=self.registry, buckets=_BATCH_BUCKETS,
        ).labels(*node)
        #: (destination, message type) -> [count, bytes], for this turn only.
        self.sent: dict[tuple[int, type], list[int]] = {}
        #: message type -> [count, bytes]: totals out and in.
        self.sent_total: dict[type, list[int]] = {}
        self.received: dict[type, list[int]] = {}
        self.delivered_total = 0
        self.elections_started = 0
        self.elections_won = 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.membership_changes = 0
        #: Leader: slot -> when its first Accept left.
        self.proposed: dict[int, float] = {}
        self.ring = EventRing()
        #: This process's random id in /events replies: a reader tells a restart by it.
        self.incarnation = os.urandom(8).hex()
        #: The ring while somebody reads it (see LIVE_S), else None: nothing recorded.
        self.events: EventRing | None = None
        self._wanted_until = 0.0  # written by the HTTP thread (one float: atomic)
        # The current event window (see EVENT_WINDOW_S): sends per (destination, type),
        # the accepted slot range, delivery runs, and the chosen prefix last reported.
        self._window_ends = 0.0
        self._win_sent: dict[tuple[int, type], list[int]] = {}
        self._win_accept: list[Any] | None = None
        self._win_runs: list[list[Any]] = []
        self._reported_commit = 0
        self._role: tuple[str, int] = ("", -1)
        self._ballot: tuple[int, int] = (-1, -1)
        self._commit = -1
        self.last_reading: Reading | None = None

    # ---------------------------------------------------------------- hot path

    def count_sent(self, messages: Sequence[tuple[int, Any]], frames: dict[int, bytes | None],
                   now: float) -> None:
        """One turn's ``_send`` batch: ``frames`` maps id(message) to its frame."""
        sent = self.sent
        proposed = self.proposed
        for dst, msg in messages:
            frame = frames.get(id(msg))
            if frame is None:
                continue
            cls = type(msg)
            key = (dst, cls)
            entry = sent.get(key)
            if entry is None:
                sent[key] = [1, len(frame)]
            else:
                entry[0] += 1
                entry[1] += len(frame)
            if cls is Accept and msg.slot not in proposed:
                proposed[msg.slot] = now

    def count_received(self, cls: type, size: int) -> None:
        entry = self.received.get(cls)
        if entry is None:
            self.received[cls] = [1, size]
        else:
            entry[0] += 1
            entry[1] += size

    def count_delivered(self, count: int, runs: Sequence[tuple[str, int, int, int]]) -> None:
        self.delivered_total += count
        self.batch_entries.observe(count)
        if self.events is not None:
            window = self._win_runs
            for client, first_seq, first_index, n in runs:
                last = window[-1] if window else None
                if (last is not None and last[0] == client and last[1] + last[3] == first_seq
                        and last[2] + last[3] == first_index):
                    last[3] += n  # the same client's next commands at the next indexes
                else:
                    window.append([client, first_seq, first_index, n])

    def count_accepts(self, first: int, last: int, ballot: tuple[int, int]) -> None:
        if self.events is None or not last:
            return
        window = self._win_accept
        if window is not None and window[2] == ballot:
            window[0] = min(window[0], first)
            window[1] = max(window[1], last)
        else:
            if window is not None:  # another ballot: the range so far is its own event
                self.events.add(self._accept_event(window))
            self._win_accept = [first, last, ballot]

    def _accept_event(self, window: list[Any]) -> dict[str, Any]:
        first, last, ballot = window
        return {"kind": "accept", "node": self.node_id, "slot": first, "to": last,
                "ballot": list(ballot)}

    def _flush_window(self, commit: int, now: float) -> None:
        """The window's sums as events (one clock reading), and a new window."""
        events = self.events
        self._window_ends = now + EVENT_WINDOW_S
        if events is None:
            return
        batch: list[dict[str, Any]] = []
        node = self.node_id
        for (dst, cls), (count, size) in self._win_sent.items():
            batch.append({"kind": "sent", "src": node, "dst": dst, "type": cls.__name__,
                          "count": count, "bytes": size})
        self._win_sent.clear()
        if self._win_accept is not None:
            batch.append(self._accept_event(self._win_accept))
            self._win_accept = None
        if commit > self._reported_commit:
            batch.append({"kind": "chosen", "node": node, "slot": self._reported_commit + 1,
                          "to": commit})
        self._reported_commit = commit
        for client, first_seq, first_index, n in self._win_runs:
            batch.append({"kind": "deliver", "node": node, "index": first_index, "count": n,
                          "client": client[:64], "seq": first_seq})
        self._win_runs.clear()
        if batch:
            events.add_many(batch)

    def want_events(self, now: float) -> None:
        """A reader asked for events (the HTTP thread): record them for LIVE_S more."""
        self._wanted_until = now + LIVE_S

    def end_turn(self, role: str, leader: int, ballot: tuple[int, int], commit: int,
                 now: float) -> None:
        """Fold the turn's sends into the totals and events; note changes of role,
        ballot and commit."""
        events = self.events
        if self.sent:
            totals = self.sent_total
            window = self._win_sent if events is not None else None
            for key, (count, size) in self.sent.items():
                cls = key[1]
                entry = totals.get(cls)
                if entry is None:
                    totals[cls] = [count, size]
                else:
                    entry[0] += count
                    entry[1] += size
                if window is not None:
                    summed = window.get(key)
                    if summed is None:
                        window[key] = [count, size]
                    else:
                        summed[0] += count
                        summed[1] += size
            self.sent.clear()
        announce = False
        if (now < self._wanted_until) != (events is not None):
            if events is not None:
                self._flush_window(commit, now)  # the last window of this reader
            self.events = events = self.ring if now < self._wanted_until else None
            if events is not None:
                # A new reader learns where this node stands first: its role (below,
                # changed or not; only a change is counted), and the chosen prefix
                # (from slot 1) as one range.
                announce = True
                self._win_sent.clear()
                self._win_accept = None
                self._win_runs.clear()
                self._reported_commit = 0
                self._flush_window(commit, now)
        changed = (role, leader) != self._role or ballot != self._ballot
        if events is not None and (
            changed or now >= self._window_ends or len(self._win_runs) >= _MAX_WINDOW_RUNS
        ):
            self._flush_window(commit, now)  # (before a role event: what came before it)
        if changed or announce:
            if changed and role != self._role[0]:
                if role == "candidate":
                    self.elections_started += 1
                elif role == "leader":
                    self.elections_won += 1
                    if self._role[0] != "candidate":
                        self.elections_started += 1  # won in one step (no candidate turn)
                if role != "leader":
                    self.proposed.clear()
            self._role = (role, leader)
            self._ballot = ballot
            if events is not None:
                events.add({"kind": "role", "node": self.node_id, "role": role,
                            "ballot": list(ballot), "leader": leader or None})
        if commit != self._commit:
            self._commit = commit
            proposed = self.proposed
            if proposed:
                done = [slot for slot in proposed if slot <= commit]
                for slot in done:
                    self.commit_seconds.observe(now - proposed.pop(slot))
                if len(proposed) > _MAX_TIMED_SLOTS:
                    proposed.clear()

    def note(self, event: dict[str, Any]) -> None:
        """A rare event (membership, snapshot, install) for the live view."""
        if self.events is not None:
            self.events.add(event)

    # ---------------------------------------------------------------- scrape

    def collector(self, read: Any) -> Collector:
        """A collector that exports the counters and a fresh :class:`Reading` from
        ``read()`` (None: the loop did not answer; the last one is used, marked stale)."""
        return _NodeCollector(self, read)


def _names(table: dict[type, list[int]]) -> list[tuple[str, int, int]]:
    return [(cls.__name__, count, size) for cls, (count, size) in list(table.items())]


class _NodeCollector(Collector):
    def __init__(self, metrics: NodeMetrics, read: Any) -> None:
        self.metrics = metrics
        self.read = read

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: collect() is called only to scrape

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        reading: Reading | None = self.read()
        fresh = reading is not None
        if reading is None:
            reading = m.last_reading
        else:
            m.last_reading = reading
        node = str(m.node_id)
        g = GaugeMetricFamily("paxos_loop_responsive",
                              "1 if the node's loop answered this scrape, 0 if it did not "
                              "(the other gauges are then from the last answer).",
                              labels=["node"])
        g.add_metric([node], 1.0 if fresh else 0.0)
        yield g
        yield _counter("paxos_elections_started", "Elections this node started (phase 1).",
                       node, m.elections_started)
        yield _counter("paxos_elections_won", "Elections this node won (it became leader).",
                       node, m.elections_won)
        yield _counter("paxos_delivered_commands", "Commands delivered (applied) here.",
                       node, m.delivered_total)
        yield _counter("paxos_snapshots_taken", "Snapshots this node took.", node,
                       m.snapshots_taken)
        yield _counter("paxos_snapshots_installed", "Snapshots installed from a peer.", node,
                       m.snapshots_installed)
        yield _counter("paxos_membership_changes", "Membership changes applied here.", node,
                       m.membership_changes)
        for name, table, what in (
            ("paxos_messages_sent", m.sent_total, "Protocol messages sent, by type."),
            ("paxos_messages_received", m.received, "Frames received, by message type."),
        ):
            counts = CounterMetricFamily(name, what, labels=["node", "type"])
            sizes = CounterMetricFamily(name.replace("messages", "bytes"),
                                        what.replace("messages", "bytes of messages")
                                        .replace("Frames", "Bytes of frames"),
                                        labels=["node", "type"])
            for type_name, count, size in _names(table):
                counts.add_metric([node, type_name], count)
                sizes.add_metric([node, type_name], size)
            yield counts
            yield sizes
        if reading is None:
            return
        drops = CounterMetricFamily("paxos_frames_dropped", "Frames dropped, by reason.",
                                    labels=["node", "reason"])
        for reason, count in sorted(reading.drops.items()):
            drops.add_metric([node, reason], count)
        yield drops
        transport = CounterMetricFamily(
            "paxos_transport_events", "Transport counters (sent, received, dropped to peers, "
            "replies dropped, malformed, foreign cluster, unauthorised).",
            labels=["node", "what"])
        for what, count in sorted(reading.transport.items()):
            transport.add_metric([node, what], count)
        yield transport
        role = GaugeMetricFamily("paxos_role", "1 for this node's current role.",
                                 labels=["node", "role"])
        for name in ("follower", "candidate", "leader"):
            role.add_metric([node, name], 1.0 if reading.role == name else 0.0)
        yield role
        for name, what, value in (
            ("paxos_ballot_round", "The round of the highest ballot promised.", reading.ballot[0]),
            ("paxos_ballot_node", "The node of the highest ballot promised.", reading.ballot[1]),
            ("paxos_leader", "The leader this node knows (0: none).", reading.leader),
            ("paxos_leader_ok", "1 if it leads with a quorum or follows a live leader.",
             int(reading.leader_ok)),
            ("paxos_commit_slot", "Highest slot of the chosen prefix known here.", reading.commit),
            ("paxos_known_commit_slot", "Highest chosen prefix any node announced.",
             reading.known_commit),
            ("paxos_delivered_index", "Index of the last command delivered here.",
             reading.delivered),
            ("paxos_apply_lag_slots", "Chosen slots announced but not yet applied here.",
             max(0, reading.known_commit - reading.commit)),
            ("paxos_client_sessions", "Client sessions live in the replicated table.",
             reading.sessions),
            ("paxos_connections", "Connections the gate counts in use.", reading.connections),
            ("paxos_queue_commands", "Commands queued here, not yet proposed.",
             reading.backlog_commands),
            ("paxos_queue_bytes", "Payload bytes queued here, not yet proposed.",
             reading.backlog_bytes),
            ("paxos_held_fetches", "Subscriber fetches waiting for new deliveries.",
             reading.held_fetches),
            ("paxos_owed_reply_bytes", "Reply bytes sent to clients and not yet read.",
             reading.owed_reply_bytes),
            ("paxos_paused_clients", "Clients over their reply budget.", reading.paused_clients),
            ("paxos_local_waiting", "Local broadcasts waiting for their commit.",
             reading.local_waiting),
            ("paxos_snapshot_slot", "Slot of the newest durable snapshot.", reading.snapshot_slot),
            ("paxos_snapshot_index", "Index of the newest durable snapshot.",
             reading.snapshot_index),
            ("paxos_log_floor_slot", "Slots below this were compacted away.", reading.floor),
            ("paxos_wal_bytes", "Bytes of write-ahead log on disk.", reading.wal_bytes),
            ("paxos_history_first_index", "Earliest index subscribers can read.",
             reading.history_first),
            ("paxos_history_last_index", "Latest index in the history.", reading.history_last),
            ("paxos_membership_epoch", "Epoch of the membership in effect.", reading.epoch),
            ("paxos_voters", "Voters in the membership in effect.", reading.voters),
            ("paxos_learners", "Learners in the membership in effect.", reading.learners),
        ):
            family = GaugeMetricFamily(name, what, labels=["node"])
            family.add_metric([node], float(value))
            yield family


def _counter(name: str, what: str, node: str, value: int) -> CounterMetricFamily:
    family = CounterMetricFamily(name, what, labels=["node"])
    family.add_metric([node], value)
    return family
