"""Single-decree Paxos: one test per safety rule of each role, then randomized runs.

The scenario tests wire three acceptors, two competing proposers and a
standalone learner through a seeded, in-memory network that reorders, loses
and duplicates messages and crashes acceptors; a checker then looks at every
accept the acceptors made durable and asserts that at most one value was ever
chosen. A negative test gives acceptors amnesia (restored from a stale state)
to show the checker does catch two values being chosen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from paxos.single import (
    Accept,
    Accepted,
    Acceptor,
    AcceptorState,
    Learner,
    Message,
    MessageError,
    Nack,
    Output,
    Phase,
    Prepare,
    Promise,
    Proposer,
    Sends,
)
from paxos.types import ZERO_BALLOT, Ballot

B1 = Ballot(1, 11)
B2 = Ballot(2, 12)
B3 = Ballot(3, 11)
B5 = Ballot(5, 12)


# --- messages -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Prepare(11, ZERO_BALLOT),
        lambda: Prepare(11, Ballot(-1, 11)),
        lambda: Prepare(11, (1, 11)),  # type: ignore[arg-type]
        lambda: Prepare("11", B1),  # type: ignore[arg-type]
        lambda: Promise(1, B2, B1, None),
        lambda: Promise(1, B2, None, b"x"),
        lambda: Promise(1, B1, B2, b"x"),  # accepted above promised
        lambda: Accept(11, B1, "x"),  # type: ignore[arg-type]
        lambda: Accepted(1, B1, None),  # type: ignore[arg-type]
        lambda: Nack(1, B2, B1),  # "promised" below the refused ballot
    ],
)
def test_malformed_messages_raise_typed_error(build: object) -> None:
    with pytest.raises(MessageError):
        build()  # type: ignore[operator]


def test_messages_are_frozen_values() -> None:
    assert Accept(11, B1, b"x") == Accept(11, B1, b"x")
    assert hash(Promise(1, B2, B1, b"x")) == hash(Promise(1, B2, B1, b"x"))
    with pytest.raises(AttributeError):
        Prepare(11, B1).ballot = B2  # type: ignore[misc]


# --- acceptor -------------------------------------------------------------------------------


def test_acceptor_promise_is_persisted_before_it_is_sent() -> None:
    a = Acceptor(1)
    out = a.on_prepare(Prepare(11, B1))
    assert out == Output(AcceptorState(B1), ((11, Promise(1, B1)),))
    assert a.state == AcceptorState(B1)


def test_acceptor_refuses_lower_ballots_after_a_promise() -> None:
    a = Acceptor(1)
    a.on_prepare(Prepare(12, B2))
    out = a.on_prepare(Prepare(11, B1))
    assert out == Output(None, ((11, Nack(1, B1, B2)),))
    assert a.state.promised == B2


def test_acceptor_answers_a_repeated_prepare_without_persisting_again() -> None:
    a = Acceptor(1)
    a.on_prepare(Prepare(11, B1))
    assert a.on_prepare(Prepare(11, B1)) == Output(None, ((11, Promise(1, B1)),))


def test_acceptor_refuses_accept_below_its_promise() -> None:
    a = Acceptor(1)
    a.on_prepare(Prepare(12, B2))
    out = a.on_accept(Accept(11, B1, b"x"))
    assert out == Output(None, ((11, Nack(1, B1, B2)),))
    assert a.state == AcceptorState(B2, None)


def test_acceptor_accepts_at_or_above_its_promise_and_raises_the_promise() -> None:
    a = Acceptor(1, learners=(99, 11))
    a.on_prepare(Prepare(11, B1))
    out = a.on_accept(Accept(12, B2, b"y"))  # no Prepare at B2 reached us: still fine
    assert out.persist == AcceptorState(B2, (B2, b"y"))
    # To the proposer and the learners, the proposer only once.
    assert out.send == (
        (12, Accepted(1, B2, b"y")),
        (99, Accepted(1, B2, b"y")),
        (11, Accepted(1, B2, b"y")),
    )
    # The same Accept again: same answer, nothing new to persist.
    again = a.on_accept(Accept(12, B2, b"y"))
    assert again.persist is None and again.send == out.send
    # Now a Prepare below B2 is refused.
    assert a.on_prepare(Prepare(11, B1)).send == ((11, Nack(1, B1, B2)),)


def test_promise_reports_the_highest_accepted_proposal() -> None:
    a = Acceptor(1)
    a.on_accept(Accept(11, B1, b"x"))
    a.on_accept(Accept(12, B2, b"y"))
    out = a.on_prepare(Prepare(11, B3))
    assert out.send == ((11, Promise(1, B3, B2, b"y")),)
    assert out.persist == AcceptorState(B3, (B2, b"y"))


def test_acceptor_restored_from_persisted_state_keeps_its_vows() -> None:
    a = Acceptor(1)
    persisted = a.on_accept(Accept(11, B1, b"x")).persist
    persisted = a.on_prepare(Prepare(12, B5)).persist or persisted
    assert persisted == AcceptorState(B5, (B1, b"x"))
    restored = Acceptor(1, persisted)  # the crash lost everything but the disk
    assert restored.on_prepare(Prepare(11, B3)).send == ((11, Nack(1, B3, B5)),)
    assert restored.on_accept(Accept(11, B3, b"z")).send == ((11, Nack(1, B3, B5)),)
    assert restored.on_prepare(Prepare(12, B5)).send == ((12, Promise(1, B5, B1, b"x")),)


def test_acceptor_state_rejects_accepted_above_promised() -> None:
    with pytest.raises(ValueError):
        AcceptorState(B1, (B2, b"x"))


# --- proposer -------------------------------------------------------------------------------


def test_proposer_start_prepares_at_every_acceptor_once() -> None:
    p = Proposer(11, (1, 2, 3), b"mine")
    assert p.start() == tuple((a, Prepare(11, B1)) for a in (1, 2, 3))
    assert p.phase is Phase.PREPARE
    assert p.start() == ()


def test_proposer_uses_its_own_value_when_nobody_accepted_anything() -> None:
    p = Proposer(11, (1, 2, 3), b"mine")
    p.start()
    assert p.on_promise(Promise(1, B1)) == ()
    sent = p.on_promise(Promise(2, B1))
    assert sent == tuple((a, Accept(11, B1, b"mine")) for a in (1, 2, 3))
    assert p.phase is Phase.ACCEPT and p.proposal == b"mine"


def test_proposer_adopts_the_value_of_the_highest_reported_ballot() -> None:
    p = Proposer(11, (1, 2, 3, 4, 5), b"mine", round=7)
    b = p.ballot
    p.start()
    p.on_promise(Promise(1, b, Ballot(5, 12), b"older"))
    p.on_promise(Promise(2, b))
    sent = p.on_promise(Promise(3, b, Ballot(6, 13), b"newest"))
    assert {m for _, m in sent} == {Accept(11, b, b"newest")}


def test_proposer_counts_only_fresh_promises_from_distinct_acceptors() -> None:
    p = Proposer(11, (1, 2, 3), b"mine", round=2)
    b = p.ballot
    p.start()
    assert p.on_promise(Promise(1, b)) == ()
    assert p.on_promise(Promise(1, b)) == ()  # duplicate
    assert p.on_promise(Promise(2, Ballot(1, 11))) == ()  # an older ballot of ours
    assert p.on_promise(Promise(9, b)) == ()  # not an acceptor
    assert p.phase is Phase.PREPARE
    assert p.on_promise(Promise(3, b)) != ()


def test_proposer_nack_aborts_and_retry_goes_above_the_promised_ballot() -> None:
    p = Proposer(11, (1, 2, 3), b"mine")
    p.start()
    assert p.on_nack(Nack(1, B1, Ballot(4, 12))) is True
    assert p.phase is Phase.IDLE
    assert p.on_promise(Promise(2, B1)) == ()  # the abandoned ballot no longer counts
    assert p.on_nack(Nack(2, B1, Ballot(9, 13))) is False  # already aborted, but noted
    sent = p.retry()
    assert p.ballot == Ballot(10, 11)
    assert sent == tuple((a, Prepare(11, Ballot(10, 11))) for a in (1, 2, 3))
    assert p.on_nack(Nack(7, p.ballot, Ballot(50, 12))) is False  # not an acceptor: ignored
    assert p.retry()[0][1] == Prepare(11, Ballot(11, 11))


def test_proposer_learns_the_choice() -> None:
    p = Proposer(11, (1, 2, 3), b"mine")
    p.start()
    p.on_promise(Promise(1, B1))
    p.on_promise(Promise(2, B1))
    assert p.on_accepted(Accepted(1, B1, b"mine")) is None
    assert p.on_accepted(Accepted(3, B1, b"mine")) == b"mine"
    assert (p.chosen, p.phase) == (b"mine", Phase.CHOSEN)
    assert p.on_nack(Nack(2, B1, B5)) is False  # done: a late refusal changes nothing
    # Running again is allowed (it re-announces the choice) and forgets nothing.
    assert p.retry() and p.phase is Phase.PREPARE and p.chosen == b"mine"


def test_proposer_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        Proposer(11, (), b"x")
    with pytest.raises(ValueError):
        Proposer(11, (1, 1, 2), b"x")
    with pytest.raises(ValueError):
        Proposer(11, (1, 2, 3), b"x", round=0)


# --- learner --------------------------------------------------------------------------------


def test_learner_needs_a_majority_at_the_same_ballot() -> None:
    learner = Learner((1, 2, 3))
    assert learner.on_accepted(Accepted(1, B1, b"x")) is None
    assert learner.on_accepted(Accepted(2, B2, b"x")) is None  # same value, other ballot
    assert (learner.chosen, learner.conflicts) == (None, ())
    assert learner.on_accepted(Accepted(3, B2, b"x")) == b"x"
    assert learner.chosen == b"x"
    assert learner.on_accepted(Accepted(1, B5, b"x")) == b"x"  # stays known


def test_learner_ignores_duplicates_and_strangers() -> None:
    learner = Learner((1, 2, 3, 4, 5))
    for _ in range(3):
        assert learner.on_accepted(Accepted(1, B1, b"x")) is None
    assert learner.on_accepted(Accepted(42, B1, b"x")) is None
    assert learner.on_accepted(Accepted(2, B1, b"x")) is None
    assert learner.on_accepted(Accepted(3, B1, b"x")) == b"x"


def test_learner_reports_a_second_majority_as_a_conflict() -> None:
    # Cannot happen with honest acceptors; the learner keeps its first answer and tells.
    learner = Learner((1, 2, 3))
    learner.on_accepted(Accepted(1, B1, b"x"))
    learner.on_accepted(Accepted(2, B1, b"x"))
    learner.on_accepted(Accepted(2, B2, b"y"))
    learner.on_accepted(Accepted(3, B2, b"y"))
    learner.on_accepted(Accepted(1, B2, b"y"))  # a third vote: still one conflict
    assert learner.chosen == b"x"
    assert learner.conflicts == ((B2, b"y"),)


# --- randomized runs ------------------------------------------------------------------------

ACCEPTORS = (1, 2, 3)
VALUES = {11: b"A", 12: b"B"}
LEARNER = 99


@dataclass
class Run:
    """Three acceptors, two proposers and a learner on a seeded, faulty in-memory network.

    ``amnesia`` breaks the acceptors on purpose: a crashed acceptor comes back
    from a random earlier state instead of its last persisted one.
    """

    rng: random.Random
    loss: float
    dup: float
    crash: float
    timeout: float = 0.01
    amnesia: bool = False
    acceptor_ids: tuple[int, ...] = ACCEPTORS
    values: dict[int, bytes] = field(default_factory=lambda: dict(VALUES))
    acceptors: dict[int, Acceptor] = field(default_factory=dict)
    disk: dict[int, list[AcceptorState | None]] = field(default_factory=dict)
    proposers: dict[int, Proposer] = field(default_factory=dict)
    learner: Learner = field(init=False)
    flight: list[tuple[int, Message]] = field(default_factory=list)
    # Every accept some acceptor made durable: the ground truth for the checker.
    votes: dict[tuple[Ballot, bytes], set[int]] = field(default_factory=dict)
    faulty: bool = True

    def __post_init__(self) -> None:
        self.learner = Learner(self.acceptor_ids)
        for a in self.acceptor_ids:
            self.acceptors[a] = Acceptor(a, learners=(LEARNER,))
            self.disk[a] = [None]  # write history; the last entry is what a restart reads
        for node, value in self.values.items():
            self.proposers[node] = Proposer(node, self.acceptor_ids, value)

    def send(self, sends: Sends) -> None:
        for dst, msg in sends:
            if self.faulty and self.rng.random() < self.loss:
                continue
            self.flight.append((dst, msg))
            if self.faulty and self.rng.random() < self.dup:
                self.flight.append((dst, msg))

    def apply(self, node: int, out: Output) -> None:
        """The driver's half of the contract: persist, then (unless we crash) send."""
        if out.persist is not None:
            self.disk[node].append(out.persist)
            if out.persist.accepted is not None:
                self.votes.setdefault(out.persist.accepted, set()).add(node)
        durable = self.disk[node][-1] or AcceptorState()
        for _, msg in out.send:
            # Nothing may promise or announce more than the disk already holds.
            if isinstance(msg, Promise | Accepted):
                assert durable.promised >= msg.ballot, (node, msg, durable)
            if isinstance(msg, Accepted):
                assert durable.accepted == (msg.ballot, msg.value), (node, msg, durable)
        if self.faulty and self.rng.random() < self.crash:
            # Crash after the write, before the replies left: restart from disk.
            history = self.disk[node]
            state = history[-1]
            if self.amnesia:
                # The disk "loses" its recent writes: an earlier state is current again.
                state = self.rng.choice(history)
                history.append(state)
            self.acceptors[node] = Acceptor(node, state, learners=(LEARNER,))
            return
        self.send(out.send)

    def deliver(self, dst: int, msg: Message) -> bool:
        """Hand ``msg`` to ``dst``; True if a proposer's attempt was just refused."""
        if dst in self.acceptors:
            acceptor = self.acceptors[dst]
            if isinstance(msg, Prepare):
                self.apply(dst, acceptor.on_prepare(msg))
            elif isinstance(msg, Accept):
                self.apply(dst, acceptor.on_accept(msg))
        elif dst in self.proposers:
            proposer = self.proposers[dst]
            if isinstance(msg, Promise):
                self.send(proposer.on_promise(msg))
            elif isinstance(msg, Accepted):
                proposer.on_accepted(msg)
            elif isinstance(msg, Nack):
                return proposer.on_nack(msg)
        elif dst == LEARNER and isinstance(msg, Accepted):
            self.learner.on_accepted(msg)
        return False

    def learned_everywhere(self) -> bool:
        return self.learner.chosen is not None and all(
            p.chosen is not None for p in self.proposers.values()
        )

    def go(self, chaos_steps: int, max_steps: int) -> bool:
        """Run faults for ``chaos_steps``, then a clean network; True if everyone learned."""
        order = list(self.proposers)
        self.rng.shuffle(order)
        for node in order:
            self.send(self.proposers[node].start())
        backing_off: set[int] = set()
        for step in range(max_steps):
            self.faulty = step < chaos_steps
            if not self.faulty and self.learned_everywhere() and not self.flight:
                return True
            idle = [n for n, p in self.proposers.items() if p.chosen is None]
            if not self.flight and (idle or self.learner.chosen is None):
                # Silence: some proposer's timeout fires first. If only the
                # learner missed the outcome, a proposer that knows it runs
                # again to re-announce it (it can only re-propose that value).
                backing_off.clear()
                self.send(self.proposers[self.rng.choice(idle or order)].retry())
            elif self.faulty:
                # Under faults, timeouts also fire at random (even at proposers
                # that know the outcome: more ballots after a choice is where a
                # wrong pick_value would show), and refused proposers retry
                # after a random backoff.
                for node in order:
                    if self.rng.random() < (0.2 if node in backing_off else self.timeout):
                        backing_off.discard(node)
                        self.send(self.proposers[node].retry())
            if self.flight:
                dst, msg = self.flight.pop(self.rng.randrange(len(self.flight)))
                if self.deliver(dst, msg) and self.faulty:
                    backing_off.add(dst)
        return False

    def violations(self) -> list[str]:
        n = len(self.acceptor_ids)
        chosen = {value for (_, value), voters in self.votes.items() if 2 * len(voters) > n}
        found = []
        if len(chosen) > 1:
            found.append(f"two values chosen: {sorted(chosen)}")
        accepted = {value for _, value in self.votes}
        if not accepted <= set(self.values.values()):
            found.append(f"a value nobody proposed was accepted: {accepted}")
        learners: list[Learner | Proposer] = [self.learner, *self.proposers.values()]
        learned = {x.chosen for x in learners} - {None}
        if not learned <= chosen:
            found.append(f"learned {learned} but chosen {chosen}")
        if self.learner.conflicts:
            found.append(f"the learner saw conflicting majorities: {self.learner.conflicts}")
        return found


def run_seed(
    seed: int,
    *,
    amnesia: bool = False,
    acceptors: tuple[int, ...] = ACCEPTORS,
    values: dict[int, bytes] = VALUES,
) -> Run:
    rng = random.Random(seed)
    run = Run(
        rng,
        loss=rng.uniform(0.0, 0.4),
        dup=rng.uniform(0.0, 0.3),
        crash=rng.uniform(0.3, 0.6) if amnesia else rng.uniform(0.0, 0.1),
        timeout=rng.uniform(0.0, 0.05),
        amnesia=amnesia,
        acceptor_ids=acceptors,
        values=dict(values),
    )
    terminated = run.go(chaos_steps=rng.randrange(0, 300), max_steps=20_000)
    if not amnesia:
        assert terminated, f"seed {seed}: no value chosen after the faults stopped"
    return run


def test_happy_path_chooses_the_only_proposal() -> None:
    run = Run(random.Random(0), loss=0.0, dup=0.0, crash=0.0)
    del run.proposers[12]
    assert run.go(chaos_steps=0, max_steps=1000)
    assert run.learner.chosen == b"A" and run.proposers[11].chosen == b"A"
    assert run.violations() == []


@pytest.mark.parametrize(
    ("acceptors", "values"),
    [
        (ACCEPTORS, VALUES),  # the classic: three acceptors, two competing proposers
        ((1, 2, 3, 4, 5), {11: b"A", 12: b"B", 13: b"C"}),
    ],
    ids=["3acceptors-2proposers", "5acceptors-3proposers"],
)
def test_competing_proposers_choose_at_most_one_value(
    acceptors: tuple[int, ...], values: dict[int, bytes]
) -> None:
    outcomes: set[bytes] = set()
    for seed in range(300):
        run = run_seed(seed, acceptors=acceptors, values=values)  # asserts termination
        assert run.violations() == [], f"seed {seed}: {run.violations()}"
        chosen = run.learner.chosen
        assert chosen is not None
        assert all(p.chosen == chosen for p in run.proposers.values()), f"seed {seed}"
        outcomes.add(chosen)
    # Every proposer wins some seeds: the runs really compete.
    assert outcomes == set(values.values())


def test_checker_catches_acceptors_that_forget_their_vows() -> None:
    bad = [seed for seed in range(300) if run_seed(seed, amnesia=True).violations()]
    assert bad, "amnesiac acceptors never led to two values being chosen: the checker is blind"
    assert any("two values chosen" in v for v in run_seed(bad[0], amnesia=True).violations())


class _SkipsPersist(Acceptor):
    """A broken acceptor that replies without asking for its vows to be written."""

    def on_prepare(self, msg: Prepare) -> Output:
        return Output(None, super().on_prepare(msg).send)


def test_harness_catches_replies_that_outrun_the_disk() -> None:
    run = Run(random.Random(0), loss=0.0, dup=0.0, crash=0.0)
    run.acceptors[2] = _SkipsPersist(2, learners=(LEARNER,))
    with pytest.raises(AssertionError, match="Promise"):
        run.go(chaos_steps=0, max_steps=1000)
