"""Simulated clients: each numbers its commands 1, 2, 3, ... and retries until acknowledged."""

from __future__ import annotations

import random
from collections.abc import Sequence

from paxos.sim.checkers import Checkers
from paxos.sim.network import Address, ClientReply, ClientRequest, Network, Payload
from paxos.types import Command


class SimClient:
    """One client session.

    It keeps at most ``outstanding`` commands unacknowledged and sends each new
    command to the node it believes leads. When no acknowledgement arrives for
    ``retry_ticks``, it resends *all* its unacknowledged commands, in seq order,
    to another node: a replica skips a command whose predecessor it never
    delivered, so a lone retry of a later command could never get through.
    """

    def __init__(
        self,
        client_id: str,
        nodes: Sequence[int],
        rng: random.Random,
        network: Network,
        checkers: Checkers,
        *,
        commands: int,
        outstanding: int,
        issue_rate: float,
        retry_ticks: int,
        trace: list[str] | None = None,
    ) -> None:
        self.id = client_id
        self.nodes = tuple(nodes)
        self.rng = rng
        self.network = network
        self.checkers = checkers
        self.max_commands = commands
        self.outstanding = outstanding
        self.issue_rate = issue_rate
        self.retry_ticks = retry_ticks
        self.trace = trace
        #: False once the fault phase is over: no new commands, retries go on.
        self.issuing = True
        self.next_seq = 1
        #: seq -> command, in seq order (commands are issued in order).
        self.unacked: dict[int, Command] = {}
        #: seq -> the index the client was told.
        self.acked: dict[int, int] = {}
        self.target = rng.choice(self.nodes)
        self.deadline: int | None = None

    @property
    def done(self) -> bool:
        return not self.unacked and (not self.issuing or self.next_seq > self.max_commands)

    def tick(self, now: int) -> None:
        if self.unacked and self.deadline is not None and now >= self.deadline:
            self._retry(now)
        if not self.issuing:
            return
        rng = self.rng
        new: list[Command] = []
        while (
            len(self.unacked) < self.outstanding
            and self.next_seq <= self.max_commands
            and rng.random() < self.issue_rate
        ):
            seq = self.next_seq
            self.next_seq += 1
            command = Command(self.id, seq, f"{self.id}:{seq}".encode())
            self.unacked[seq] = command
            self.checkers.on_issue(command, now)
            new.append(command)
        if new:
            if self.deadline is None:
                self.deadline = now + self.retry_ticks
            self._send(now, tuple(new), "issue")

    def _retry(self, now: int) -> None:
        others = [n for n in self.nodes if n != self.target]
        if others:
            self.target = self.rng.choice(others)
        self.deadline = now + self.retry_ticks
        self._send(now, tuple(self.unacked.values()), "retry")

    def _send(self, now: int, commands: tuple[Command, ...], why: str) -> None:
        if self.trace is not None:
            seqs = ",".join(str(c.seq) for c in commands)
            self.trace.append(f"{now} client {self.id} {why} seq {seqs} -> {self.target}")
        self.network.send(self.id, self.target, ClientRequest(self.id, commands))

    def receive(self, src: Address, payload: Payload) -> None:
        if not isinstance(payload, ClientReply):
            return
        now = self.network.now
        progress = False
        for seq, index in payload.acks:
            # Every ack goes to the checkers, repeats too: they must all agree.
            self.checkers.on_ack(self.id, seq, index, now)
            if self.unacked.pop(seq, None) is not None:
                self.acked[seq] = index
                progress = True
                if self.trace is not None:
                    self.trace.append(f"{now} client {self.id} ack seq {seq} index {index}")
        self.target = payload.leader if payload.leader is not None else payload.src
        if progress:
            self.deadline = now + self.retry_ticks if self.unacked else None
