"""Metrics, health and live events of real node processes (``paxos node --metrics``).

The counters must agree with what the cluster did: every node's delivered index
equals the deliveries it counted (and the sum of its delivery batches), a killed
leader's successor counts the election it won, and /readyz follows the quorum.
Planted bugs in tests/runtime_mutants.py (metrics-*) show these checks catch a
miscount.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from procs import ProcessCluster, wait_for

from broadcast.httpd import parse_listen
from broadcast.local import free_base_port
from broadcast.metrics import EventRing
from broadcast.spec import ConfigError

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? ([-+0-9.eEinfNa]+)$')


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One /metrics scrape: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not the Prometheus text format: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(
            tuple(part.split("=", 1)) for part in re.findall(r'[a-z_]+="[^"]*"', labels or "")
        )
        out[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return out


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    """The sample ``name`` whose labels include ``labels`` (exactly one must match)."""
    found = [v for (n, ls), v in samples.items()
             if n == name and set(labels.items()) <= {(k, v) for k, v in ls}]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _check_counts_agree(c: ProcessCluster, nodes: list[int], total: int) -> None:
    """Every node in ``nodes`` delivered ``total`` commands and counted every one."""
    for node in nodes:
        s = scrape(c.metrics_url(node))
        delivered = value(s, "paxos_delivered_index")
        counted = value(s, "paxos_delivered_commands_total")
        batches = value(s, "paxos_delivery_batch_entries_sum")
        assert delivered == total, f"node {node} delivered {delivered} of {total}"
        assert counted == delivered, (
            f"node {node} counted {counted} deliveries, but its delivered index is {delivered}"
        )
        assert batches == delivered, (
            f"node {node}'s delivery batches counted {batches} commands of {delivered}"
        )
        assert value(s, "paxos_commit_slot") == value(s, "paxos_known_commit_slot")
        assert value(s, "paxos_fsync_seconds_count") > 0


def test_metrics_of_a_live_cluster_agree_with_what_it_did(tmp_path: Path) -> None:
    base = free_base_port(4, start=38000)  # above the nodes ports
    # Snapshots every 100 deliveries: the snapshot and compaction figures move too.
    c = ProcessCluster(tmp_path, 3, metrics_base_port=base, extra=("--snapshot-entries", "100"))
    try:
        leader = c.leader()
        # A reader of the live events (paxos viz --live): from now on the leader records.
        status, first = get(c.metrics_url(leader, "/events?after=0"))
        assert status == 200
        with c.client(window=256) as client:
            acked = client.broadcast_many(b"m%d" % i for i in range(1, 601))
        total = len(acked)
        assert [a.index for a in acked] == list(range(1, total + 1))

        def caught_up() -> bool | None:
            return all(
                value(scrape(c.metrics_url(n)), "paxos_delivered_index") >= total
                for n in (1, 2, 3)
            ) or None

        wait_for("every node to deliver 600", caught_up)
        _check_counts_agree(c, [1, 2, 3], total)
        s = scrape(c.metrics_url(leader))
        assert value(s, "paxos_role", role="leader") == 1
        won = value(s, "paxos_elections_won_total")
        assert won >= 1, f"node {leader} became leader, but its elections won went 0 -> {won}"
        # Batched: 600 commands in fewer slots than commands, each one timed.
        accepts = value(s, "paxos_messages_sent_total", type="Accept")
        slots = value(s, "paxos_commit_slot")
        assert 0 < slots < total and accepts >= 2 * (slots - 1)
        assert value(s, "paxos_commit_latency_seconds_count") > 0
        assert value(s, "paxos_bytes_sent_total", type="Accept") > 600 * 2
        assert value(s, "paxos_voters") == 3 and value(s, "paxos_learners") == 0

        def snapshotted() -> bool | None:
            s = scrape(c.metrics_url(leader))
            return (value(s, "paxos_snapshots_taken_total") >= 1
                    and value(s, "paxos_snapshot_index") >= 100
                    and value(s, "paxos_log_floor_slot") >= 0) or None

        wait_for("a snapshot counted", snapshotted)
        for n in (1, 2, 3):
            assert get(c.metrics_url(n, "/healthz"))[0] == 200
            status, body = get(c.metrics_url(n, "/readyz"))
            assert status == 200, body
        # The live view's events: this node's role, what it sent, what it delivered.
        # (Sends, chosen ranges and deliveries are summed per 50 ms window and reach the
        # ring when a window ends, at the node's next turn: a whole broadcast can fit in
        # one window, still open when the snapshot event, written at once, is read.)
        seen: list[dict[str, object]] = []
        after = first["next"]

        def all_delivered() -> bool:
            nonlocal after
            while True:  # pages of at most 1000 events
                _status, page = get(c.metrics_url(leader, f"/events?after={after}"))
                assert page["first"] == after + 1 or not page["events"], "events were lost"
                if not page["events"]:
                    break
                seen.extend(page["events"])  # type: ignore[arg-type]
                after = page["next"]
            return sum(e["count"] for e in seen if e["kind"] == "deliver") >= total  # type: ignore[misc]

        wait_for("the live events to show every delivery", all_delivered, deadline_s=30)
        kinds = {e["kind"] for e in seen}
        assert {"role", "sent", "deliver", "chosen"} <= kinds, kinds
        delivered = sum(e["count"] for e in seen if e["kind"] == "deliver")  # type: ignore[misc]
        assert delivered == total, f"the live events show {delivered} deliveries of {total}"

        won_before = {n: value(scrape(c.metrics_url(n)), "paxos_elections_won_total")
                      for n in (1, 2, 3)}
        c.kill(leader, signal.SIGKILL)
        survivors = [n for n in (1, 2, 3) if n != leader]

        def new_leader() -> int | None:
            for n in survivors:
                s = scrape(c.metrics_url(n))
                if value(s, "paxos_role", role="leader") == 1 and value(s, "paxos_leader_ok"):
                    return n
            return None

        successor = wait_for("a new leader, seen in the metrics", new_leader)
        won = value(scrape(c.metrics_url(successor)), "paxos_elections_won_total")
        assert won == won_before[successor] + 1, (
            f"node {successor} became leader, but its elections won went "
            f"{won_before[successor]} -> {won}"
        )
        with c.client(window=256) as client:
            more = client.broadcast_many(b"n%d" % i for i in range(1, 201))
        total = more[-1].index

        def survivors_caught_up() -> bool | None:
            return all(
                value(scrape(c.metrics_url(n)), "paxos_delivered_index") >= total
                for n in survivors
            ) or None

        wait_for("the survivors to deliver the rest", survivors_caught_up)
        _check_counts_agree(c, survivors, total)

        # A minority is alive (the loop turns) but not ready (no quorum).
        c.kill(successor, signal.SIGKILL)
        last = next(n for n in survivors if n != successor)

        def unready() -> dict[str, object] | None:
            status, body = get(c.metrics_url(last, "/readyz"))
            return body if status == 503 else None

        body = wait_for("the last node to say it is not ready", unready)
        assert body["ready"] is False and body["reasons"], body
        assert get(c.metrics_url(last, "/healthz"))[0] == 200
    finally:
        c.stop()


def test_the_event_ring_keeps_the_newest_and_says_what_was_missed() -> None:
    ring = EventRing(capacity=4)
    for i in range(1, 7):
        ring.add({"kind": "x", "i": i})
    first, last, events = ring.after(0)
    assert (first, last) == (3, 6)  # 1 and 2 were overwritten: the reader sees it
    assert [e["i"] for e in events] == [3, 4, 5, 6]
    first, last, events = ring.after(4, limit=1)
    assert (first, last, [e["i"] for e in events]) == (5, 5, [5])
    first, last, events = ring.after(6)
    assert events == [] and last == 6


def test_the_listen_address_defaults_to_loopback_and_bad_ones_are_one_line_errors() -> None:
    assert parse_listen("9100") == ("127.0.0.1", 9100)
    assert parse_listen(":9100") == ("127.0.0.1", 9100)
    assert parse_listen("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert parse_listen("[::1]:9100") == ("::1", 9100)
    for bad in ("x", "1.2.3.4:http", "70000"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_live_events_are_summed_per_window_not_per_turn() -> None:
    """Under load a loop turn may last 100 µs: a viewer gets one summary per window of
    EVENT_WINDOW_S (sends per peer and type, accepted and chosen ranges, delivery runs
    merged), with nothing lost from the sums."""
    from broadcast.metrics import EVENT_WINDOW_S, NodeMetrics
    from paxos.messages import Accept

    m = NodeMetrics(1)
    m.want_events(0.0)
    m.end_turn("leader", 1, (1, 1), 0, now=0.0)  # the reader arrives: events on
    first = m.ring.after(0)[1]
    accept = Accept(1, (1, 1), 1, None, 0)  # type: ignore[arg-type]
    frames = {id(accept): b"x" * 10}
    turns = 100
    for turn in range(turns):
        now = turn * EVENT_WINDOW_S / turns  # all within one window
        m.count_sent([(2, accept), (3, accept)], frames, now)
        m.count_accepts(turn + 1, turn + 1, (1, 1))
        m.count_delivered(2, [("c#1", 2 * turn + 1, 2 * turn + 1, 2)])
        m.end_turn("leader", 1, (1, 1), turn + 1, now=now)
    m.end_turn("leader", 1, (1, 1), turns, now=EVENT_WINDOW_S)  # the window ends
    events = m.ring.after(first)[2]
    sent = [e for e in events if e["kind"] == "sent"]
    assert sorted((e["dst"], e["count"], e["bytes"]) for e in sent) == [
        (2, turns, 10 * turns), (3, turns, 10 * turns)]
    delivers = [e for e in events if e["kind"] == "deliver"]
    assert [(e["index"], e["count"], e["seq"]) for e in delivers] == [(1, 2 * turns, 1)]
    chosen = [(e["slot"], e["to"]) for e in events if e["kind"] == "chosen"]
    accepts = [(e["slot"], e["to"]) for e in events if e["kind"] == "accept"]
    assert chosen == [(1, turns)] and accepts == [(1, turns)]
    assert len(events) <= 6, events


def test_a_bad_metrics_address_is_a_one_line_error_before_the_data_directory(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    data = tmp_path / "node1"
    out = subprocess.run(
        [sys.executable, "-m", "broadcast", "node", "--id", "1", "--insecure",
         "--cluster", "1=127.0.0.1:7001", "--data-dir", str(data), "--metrics", "nope",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "Error: --metrics 'nope': expected HOST:PORT or PORT"
    ), out.stderr
    assert not data.exists()
