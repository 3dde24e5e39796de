"""Each checker, fed hand-made histories: a bad one is reported, a good one is not."""

from __future__ import annotations

from paxos.sim.checkers import (
    AckedDelivered,
    Agreement,
    Checker,
    Checkers,
    FifoOrder,
    Integrity,
    Liveness,
    TotalOrder,
    Validity,
)
from paxos.types import NOOP, Command, Delivery


def cmd(client: str, seq: int) -> Command:
    return Command(client, seq, f"{client}:{seq}".encode())


A1, A2, A3 = cmd("a", 1), cmd("a", 2), cmd("a", 3)
B1, B2 = cmd("b", 1), cmd("b", 2)
#: A good global order: (slot, command) per index 1, 2, 3, ...
ORDER = [(1, A1), (1, B1), (2, A2), (3, B2), (3, A3)]


def deliver_order(checker: Checker, node: int, incarnation: int, n: int | None = None) -> None:
    checker.on_incarnation(node, incarnation, 0)
    for i, (slot, command) in enumerate(ORDER[:n], start=1):
        checker.on_delivery(node, incarnation, Delivery(i, slot, command), i)


def messages(checker: Checker) -> list[str]:
    return [v.message for v in checker.violations]


def test_good_history_passes_every_checker() -> None:
    checkers = Checkers()
    for command in (A1, A2, A3, B1, B2):
        checkers.on_issue(command, 0)
    for node, incarnation in ((1, 1), (2, 1), (3, 1), (3, 2)):
        checkers.on_session_opened(node, incarnation, "a", b"na", "a", 1)
        checkers.on_session_opened(node, incarnation, "b", b"nb", "b", 1)
    for node in (1, 2, 3):
        checkers.on_chosen(node, 1, 1, (A1, B1), 5)
        checkers.on_chosen(node, 1, 2, (A2,), 6)
        checkers.on_chosen(node, 1, 3, (B2, A3), 7)
        checkers.on_chosen(node, 1, 4, NOOP, 8)
    # Node 3 restarts and re-delivers a prefix; node 2 lags.
    for node, incarnation, n in ((1, 1, None), (2, 1, None), (3, 1, 2), (3, 2, None)):
        checkers.on_incarnation(node, incarnation, 0)
        for i, (slot, command) in enumerate(ORDER[:n], start=1):
            checkers.on_delivery(node, incarnation, Delivery(i, slot, command), 10 + i)
    for i, (_, command) in enumerate(ORDER, start=1):
        checkers.on_ack(command.client, command.seq, i, 20)
    checkers.on_ack("a", 1, 0, 21)  # "delivered, index forgotten" is fine too
    checkers.on_ack("a", 1, 1, 22)  # and so is a repeated ack
    checkers.finish(30, [1, 2, 3])
    assert checkers.violations == []
    assert checkers.liveness_failures == []
    assert checkers.violation_count == 0


def test_agreement_two_values_in_a_slot() -> None:
    checker = Agreement()
    checker.on_chosen(1, 1, 7, (A1,), 10)
    checker.on_chosen(2, 1, 7, (A1,), 11)
    assert checker.violations == []
    checker.on_chosen(3, 2, 7, NOOP, 12)
    [violation] = checker.violations
    assert violation.checker == "agreement" and violation.tick == 12
    assert "slot 7" in violation.message and "NOOP" in violation.message


def test_agreement_across_incarnations_of_one_node() -> None:
    checker = Agreement()
    checker.on_chosen(1, 1, 3, (A1,), 10)
    checker.on_chosen(1, 2, 3, (B1,), 50)
    assert len(checker.violations) == 1


def test_integrity_duplicate_command_and_index() -> None:
    checker = Integrity()
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    checker.on_delivery(1, 1, Delivery(2, 2, A1), 2)  # same (client, seq) again
    checker.on_delivery(1, 1, Delivery(2, 3, B1), 3)  # same index again
    assert len(checker.violations) == 2
    assert "delivered a#1 twice" in checker.violations[0].message
    assert "index 2 twice" in checker.violations[1].message


def test_integrity_allows_redelivery_in_a_new_incarnation() -> None:
    checker = Integrity()
    deliver_order(checker, 1, 1)
    deliver_order(checker, 1, 2)
    assert checker.violations == []


def test_validity_invented_command_and_forged_payload() -> None:
    checker = Validity()
    checker.on_issue(A1, 0)
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    assert checker.violations == []
    checker.on_delivery(1, 1, Delivery(2, 1, cmd("z", 1)), 2)
    checker.on_delivery(1, 1, Delivery(3, 2, Command("a", 1, b"forged")), 3)
    checker.on_chosen(2, 1, 9, (cmd("y", 4),), 4)
    found = messages(checker)
    assert len(found) == 3
    assert "z#1 was never issued" in found[0]
    assert "payload" in found[1]
    assert "slot 9" in found[2] and "y#4" in found[2]


def test_total_order_non_prefix() -> None:
    checker = TotalOrder()
    deliver_order(checker, 1, 1)
    checker.on_delivery(2, 1, Delivery(1, 1, A1), 10)
    checker.on_delivery(2, 1, Delivery(2, 2, A2), 11)  # index 2 is b#1 elsewhere
    checker.on_delivery(2, 1, Delivery(3, 3, B1), 12)  # diverged already: not repeated
    [violation] = checker.violations
    assert "a#2" in violation.message and "b#1" in violation.message


def test_total_order_divergence_found_from_either_side() -> None:
    checker = TotalOrder()
    checker.on_delivery(2, 1, Delivery(1, 1, B1), 1)  # the first to deliver sets the order
    deliver_order(checker, 1, 1)
    assert len(checker.violations) == 1


def test_total_order_index_field_must_be_position() -> None:
    checker = TotalOrder()
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    checker.on_delivery(1, 1, Delivery(3, 1, B1), 2)  # second delivery claims index 3
    [violation] = checker.violations
    assert "index 3" in violation.message and "delivery number 2" in violation.message


def test_total_order_restart_starts_from_index_one() -> None:
    checker = TotalOrder()
    deliver_order(checker, 1, 1)
    deliver_order(checker, 1, 2, n=3)
    assert checker.violations == []
    assert checker.order == ORDER
    # A new incarnation that continues the old numbering is wrong.
    checker.on_incarnation(1, 3, 0)
    checker.on_delivery(1, 3, Delivery(6, 4, cmd("b", 3)), 50)
    found = messages(checker)
    assert len(found) == 2
    assert "as index 6 but it is its delivery number 1" in found[0]
    assert "where another delivered a#1" in found[1]


def test_fifo_gap_and_reorder() -> None:
    checker = FifoOrder()
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    checker.on_delivery(1, 1, Delivery(2, 1, A3), 2)  # a#2 skipped
    assert "a#3 right after a#1" in checker.violations[0].message
    checker.on_delivery(2, 1, Delivery(1, 1, B2), 3)  # b#1 never came first
    checker.on_delivery(2, 1, Delivery(2, 1, B1), 4)
    assert len(checker.violations) == 3


def test_acked_command_lost() -> None:
    checker = AckedDelivered()
    deliver_order(checker, 1, 1, n=2)
    checker.on_ack("a", 1, 1, 5)  # right
    checker.on_ack("a", 2, 3, 6)  # index 3 was never delivered anywhere
    checker.on_ack("b", 1, 1, 7)  # index 1 holds a#1, not b#1
    checker.on_ack("b", 2, 0, 8)  # "delivered" but nobody delivered it
    checker.on_ack("a", 1, 2, 9)  # acked at two different indexes
    checker.finish(10, [1])
    found = messages(checker)
    assert len(found) == 5
    assert "a#2 acknowledged at index 3, but nothing is there" in found[0]
    assert "b#1 acknowledged at index 1, but a#1 is there" in found[1]
    assert "b#2 acknowledged but never delivered" in found[2]
    assert "at index 1 and 2" in found[3]


def test_liveness_node_missing_commands_and_unacked() -> None:
    checker = Liveness()
    assert checker.liveness
    for command in (A1, A2, B1):
        checker.on_issue(command, 0)
    for node in (1, 2):
        checker.on_incarnation(node, 1, 0)
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    checker.on_delivery(1, 1, Delivery(2, 1, B1), 1)
    checker.on_delivery(1, 1, Delivery(3, 2, A2), 2)
    checker.on_delivery(2, 1, Delivery(1, 1, A1), 2)
    checker.on_ack("a", 1, 1, 3)
    checker.on_ack("b", 1, 2, 3)
    assert not checker.satisfied([1, 2])
    checker.finish(100, [1, 2])
    found = messages(checker)
    assert len(found) == 2
    assert "1 issued commands never acknowledged (a#2)" in found[0]
    assert "node 2 has not delivered 2 of 3" in found[1]


def test_liveness_restart_forgets_old_incarnation() -> None:
    checker = Liveness()
    checker.on_issue(A1, 0)
    checker.on_delivery(1, 1, Delivery(1, 1, A1), 1)
    checker.on_ack("a", 1, 1, 2)
    assert checker.satisfied([1])
    checker.on_incarnation(1, 2, 3)  # restarted: must deliver it again
    assert not checker.satisfied([1])
    checker.on_delivery(1, 2, Delivery(1, 1, A1), 4)
    assert checker.satisfied([1])
    checker.finish(5, [1])
    assert checker.violations == []


def test_violations_are_counted_beyond_the_ones_kept() -> None:
    checker = Agreement()
    for slot in range(100):
        checker.on_chosen(1, 1, slot, (A1,), 1)
        checker.on_chosen(2, 1, slot, (B1,), 2)
    assert checker.count == 100
    assert 0 < len(checker.violations) < 100


def test_checkers_split_safety_from_liveness() -> None:
    checkers = Checkers([Agreement(), Liveness()])
    checkers.on_issue(A1, 0)
    checkers.on_chosen(1, 1, 1, (A1,), 1)
    checkers.on_chosen(2, 1, 1, NOOP, 1)
    checkers.finish(10, [1])
    assert [v.checker for v in checkers.violations] == ["agreement"]
    assert [v.checker for v in checkers.liveness_failures] == ["liveness", "liveness"]
