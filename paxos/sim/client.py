"""Simulated clients: each opens a session, numbers its commands 1, 2, 3, ... and retries
until they are acknowledged; sessions end (closed, expired, evicted) and are reopened."""

from __future__ import annotations

import random
from collections.abc import Sequence

from paxos.multi.sessions import NONCE_BYTES
from paxos.sim.checkers import Checkers
from paxos.sim.coordload import CoordLoad
from paxos.sim.events import EventLog
from paxos.sim.network import (
    Address,
    ClientReply,
    ClientRequest,
    CloseRequest,
    Network,
    OpenReply,
    OpenRequest,
    Payload,
    SessionEnded,
)
from paxos.types import Command


class SimClient:
    """One client process, at network address ``client_id``, using sessions named ``name``
    (several clients may share a name, like two copies of one app).

    It first opens a session through the log (resending its open request, with the
    same nonce, to another node until one answers with the session's key). Then it
    keeps at most ``outstanding`` commands unacknowledged and sends each new command
    to the node it believes leads. When no acknowledgement arrives for
    ``retry_ticks``, it resends *all* its unacknowledged commands, in seq order, to
    another node: a replica skips a command whose predecessor it never delivered,
    so a lone retry of a later command could never get through.

    When a node says its session has ended, the commands still unacknowledged are
    abandoned (they may or may not have been delivered before the end; they never
    will be after it) and the client opens a new session for the rest of its work.
    With ``close_rate`` it also closes its session now and then while it has nothing
    unacknowledged, and opens a new one when it next has work.
    """

    def __init__(
        self,
        client_id: str,
        name: str,
        nodes: Sequence[int],
        rng: random.Random,
        network: Network,
        checkers: Checkers,
        *,
        commands: int,
        outstanding: int,
        issue_rate: float,
        retry_ticks: int,
        close_rate: float = 0.0,
        bursty: bool = False,
        trace: list[str] | None = None,
        events: EventLog | None = None,
        coord: CoordLoad | None = None,
    ) -> None:
        self.id = client_id
        #: Makes some of its commands coordination commands (shared by the run's clients).
        self.coord = coord
        self.name = name
        self.nodes = tuple(nodes)
        self.rng = rng
        self.network = network
        self.checkers = checkers
        self.max_commands = commands
        self.outstanding = outstanding
        self.issue_rate = issue_rate
        self.retry_ticks = retry_ticks
        self.close_rate = close_rate
        #: Issue a whole pipeline's worth at once, now and then, instead of one at a time.
        self.bursty = bursty
        self.trace = trace
        self.events = events
        #: False once the fault phase is over: no new commands, retries go on.
        self.issuing = True
        #: Commands issued so far, over all sessions.
        self.issued = 0
        #: The live session's key (None while opening or closed), and its open nonce.
        self.key: str | None = None
        self.nonce: bytes | None = None
        self.next_seq = 1
        #: seq -> command, in seq order (commands are issued in order).
        self.unacked: dict[int, Command] = {}
        #: (key, seq) -> the index the client was told.
        self.acked: dict[tuple[str, int], int] = {}
        self.abandoned = 0
        self.target = rng.choice(self.nodes)
        self.deadline: int | None = None

    @property
    def done(self) -> bool:
        return not self.unacked and (not self.issuing or self.issued >= self.max_commands)

    def tick(self, now: int) -> None:
        if self.deadline is not None and now >= self.deadline:
            if self.nonce is not None and self.key is None:
                self._send_open(now, retry=True)
            elif self.unacked:
                self._retry(now)
            else:
                self.deadline = None
        if not self.issuing or self.issued >= self.max_commands:
            return
        rng = self.rng
        if self.key is None:
            if self.nonce is None and rng.random() < self.issue_rate:
                self.nonce = rng.randbytes(NONCE_BYTES)
                self._send_open(now, retry=False)
            return
        if self.close_rate and not self.unacked and rng.random() < self.close_rate:
            self._close(now)
            return
        new: list[Command] = []
        # A burst: with the same average rate, a full pipeline at once.
        burst = self.bursty and rng.random() < self.issue_rate / self.outstanding
        while (
            len(self.unacked) < self.outstanding
            and self.issued < self.max_commands
            and (burst or (not self.bursty and rng.random() < self.issue_rate))
        ):
            seq = self.next_seq
            self.next_seq += 1
            self.issued += 1
            payload = self.coord.payload(self.id, self.key, seq) if self.coord else None
            command = Command(
                self.key, seq, payload or f"{self.id}:{self.key}:{seq}".encode()
            )
            self.unacked[seq] = command
            self.checkers.on_issue(command, now)
            new.append(command)
        if new:
            if self.deadline is None:
                self.deadline = now + self.retry_ticks
            if self.events is not None:
                for command in new:
                    self.events.emit(
                        now, "submit", client=self.key, seq=command.seq, node=self.target,
                        **{"from": self.id},
                    )
            self._send(now, tuple(new), "issue")

    # ------------------------------------------------------------------ sessions

    def _send_open(self, now: int, retry: bool) -> None:
        assert self.nonce is not None
        if retry:
            self._rotate()
        self.deadline = now + self.retry_ticks
        if self.trace is not None:
            self.trace.append(f"{now} client {self.id} open {self.name} -> {self.target}")
        self.network.send(self.id, self.target, OpenRequest(self.id, self.name, self.nonce))

    def _close(self, now: int) -> None:
        assert self.key is not None
        if self.trace is not None:
            self.trace.append(f"{now} client {self.id} close {self.key} -> {self.target}")
        self.network.send(self.id, self.target, CloseRequest(self.id, self.key))
        self.checkers.on_close_sent(self.id, self.key, now)
        self.key = None
        self.nonce = None
        self.deadline = None

    def _session_ended(self, now: int, key: str) -> None:
        if self.trace is not None:
            self.trace.append(
                f"{now} client {self.id} session {key} ended, abandons {len(self.unacked)}"
            )
        for seq in self.unacked:
            self.checkers.on_abandon(key, seq, now)
            if self.coord is not None:
                self.coord.abandoned(key, seq)
        self.abandoned += len(self.unacked)
        self.unacked = {}
        self.key = None
        self.nonce = None
        self.deadline = None

    # ------------------------------------------------------------------ commands

    def _rotate(self) -> None:
        others = [n for n in self.nodes if n != self.target]
        if others:
            self.target = self.rng.choice(others)

    def _retry(self, now: int) -> None:
        self._rotate()
        self.deadline = now + self.retry_ticks
        self._send(now, tuple(self.unacked.values()), "retry")

    def _send(self, now: int, commands: tuple[Command, ...], why: str) -> None:
        if self.trace is not None:
            seqs = ",".join(str(c.seq) for c in commands)
            self.trace.append(
                f"{now} client {self.id} {why} {self.key} seq {seqs} -> {self.target}"
            )
        self.network.send(self.id, self.target, ClientRequest(self.id, commands))

    def receive(self, src: Address, payload: Payload) -> None:
        now = self.network.now
        if isinstance(payload, OpenReply):
            self.checkers.on_open_reply(self.id, payload.nonce, payload.key, now)
            if self.key is None and payload.nonce == self.nonce:
                self.key = payload.key
                self.next_seq = 1
                self.deadline = None
                self.target = payload.src
                if self.trace is not None:
                    self.trace.append(f"{now} client {self.id} opened {payload.key}")
            return
        if isinstance(payload, SessionEnded):
            if payload.key == self.key:
                self._session_ended(now, payload.key)
            return
        if not isinstance(payload, ClientReply):
            return
        key = payload.key
        progress = False
        for seq, index in payload.acks:
            # Every ack goes to the checkers, repeats too: they must all agree.
            self.checkers.on_ack(key, seq, index, now)
            if key == self.key and self.unacked.pop(seq, None) is not None:
                self.acked[(key, seq)] = index
                progress = True
                if self.coord is not None:
                    self.coord.acked(self.id, key, seq, index)
                if self.trace is not None:
                    self.trace.append(f"{now} client {self.id} ack {key} seq {seq} index {index}")
                if self.events is not None:
                    self.events.emit(now, "ack", client=key, seq=seq, index=index)
        self.target = payload.leader if payload.leader is not None else payload.src
        if progress:
            self.deadline = now + self.retry_ticks if self.unacked else None
