"""Review findings on snapshots and installs (issue 10), each a schedule that failed.

Found by an adversarial review after the simulator's runs came back clean; each test
replays its schedule against hand-driven replicas (tests/snapnet.py) or real in-process
nodes, and failed before its fix. The simulator has grown since: its invariants check
F1's cause in every run (a leader's window holds only unchosen slots), and its state
machine's snapshots differ in bytes from node to node (F3's precondition).

* F1: a leader's window filled with slots peers had compacted; the cluster stalled.
* F2: an install never finished once the peer it started from went away.
* F3: two peers' snapshots of one slot with different bytes restarted an install forever.
* F4: a peer taking snapshots faster than one install takes restarted it forever.
* F5: a local broadcast delivered inside an installed snapshot never resolved (its test
  runs real nodes: tests/test_snapshot_runtime.py).
"""

from __future__ import annotations

from snapnet import C, M, Net

from paxos.multi.snapshot import Snapshot


def rounds(net, n, keep=lambda s, d, m: True, nodes=None):
    for _ in range(n):
        net.tick(nodes)
        bag, net.bag = net.bag, []
        for s, d, m in bag:
            if s in net.down or d in net.down:
                continue
            if keep(s, d, m):
                net.step(d, m)


def test_leader_window_stuck_on_compacted_slots() -> None:
    net = Net(3, compact_keep_slots=0)  # window 16
    W = net.cfg.window
    rounds(net, 200)
    (l0,) = net.leaders()
    n, x = [i for i in net.ids if i != l0]
    # A: l0 proposes one window of slots; everybody accepts, l0 learns them chosen,
    # but its commit notices to n and x are lost (the Accepts carried commit 0).
    for k in range(W):
        net.handle(l0, net.r[l0].propose([C(f"c{k}", 1)]))
    rounds(net, 3, keep=lambda s, d, m: not (s == l0 and isinstance(m, (M.Commit, M.Heartbeat))))
    assert net.r[l0].commit == W and net.r[n].commit == 0 and net.r[x].commit == 0
    net.bag.clear()
    # B: l0 is cut off; n and x elect a leader among them. Its takeover Accepts are lost.
    net.down.add(l0)
    no_accepts = lambda s, d, m: not isinstance(m, M.Accept)  # noqa: E731
    for _ in range(400):
        rounds(net, 1, keep=no_accepts)
        if net.leaders([n, x]):
            break
    (nl,) = net.leaders([n, x])
    f = n + x - nl
    # C: l0 is back. nl's Accepts keep being lost for a while; nl and f learn the
    # chosen prefix by catch-up (from l0, then f from nl).
    net.down.discard(l0)
    for _ in range(400):
        rounds(net, 1, keep=no_accepts)
        if all(net.r[i].commit >= W for i in net.ids):
            break
    assert all(net.r[i].commit >= W for i in net.ids), [net.r[i].commit for i in net.ids]
    (nl,) = net.leaders()  # (n and x may have swapped the lead meanwhile)
    f = n + x - nl
    # nl re-proposed l0's slots (its promisers did not know them chosen) and learned
    # them chosen by catch-up, not by Accepted. Before the fix they stayed in flight.
    assert net.r[nl].is_leader
    assert all(slot > net.r[nl].commit for slot in net.r[nl].inflight)
    # D: l0 and f take their periodic snapshot and compact (keep 0).
    net.snapshot(l0)
    net.snapshot(f)
    # E: a perfect network from now on; clients keep proposing at the leader.
    for k in range(100):
        leaders = net.leaders()
        if leaders:
            net.handle(leaders[0], net.r[leaders[0]].propose([C(f"d{k}", 1)]))
        rounds(net, 20)
    print("leaders", net.leaders(), "commits", [net.r[i].commit for i in net.ids],
          "inflight", sorted(net.r[nl].inflight), "queue", len(net.r[nl].queue))
    assert not net.violations
    assert max(net.r[i].commit for i in net.ids) > W, "nothing chosen after the takeover"


def _setup(**cfg):
    net = Net(3, snapshot_chunk_bytes=4, compact_keep_slots=0, **cfg)
    # Nodes 1 and 2 elect a leader and choose 20 slots while node 3 is cut off.
    net.run([1, 2], 200)
    (lead,) = net.leaders([1, 2])
    other = 3 - lead
    for k in range(20):
        net.handle(lead, net.r[lead].propose([C(f"c{k}", 1)]))
        net.run([1, 2], 3)
    net.run([1, 2], 20)
    assert net.r[lead].commit >= 20 and net.r[other].commit >= 20
    return net, lead, other


def _one_chunk_of_the_leaders_snapshot_then_it_goes(
    net: Net, lead: int, other: int, rounds: int
) -> Snapshot:
    """The follower snapshots at slot 20, the leader later at 30 (each on its own
    schedule); node 3 comes back and gets exactly one chunk of the leader's snapshot;
    then the leader goes away for good, while `other` and node 3 (a majority, connected)
    run ``rounds`` rounds of 40 ticks with a client command each."""
    s_other = net.snapshot(other)
    for k in range(20, 30):
        net.handle(lead, net.r[lead].propose([C(f"c{k}", 1)]))
        net.run([1, 2], 3)
    net.run([1, 2], 20)
    s_lead = net.snapshot(lead)
    assert s_lead.slot > s_other.slot
    got_chunk = False
    for _ in range(200):
        net.tick()
        bag, net.bag = net.bag, []
        for _s, d, m in bag:
            if d == 3 and isinstance(m, M.SnapshotChunk):
                if m.src == lead and not got_chunk:
                    net.step(d, m)
                    got_chunk = True
                continue
            net.step(d, m)
        if got_chunk:
            break
    assert got_chunk and net.r[3].installing is not None
    assert net.r[3].installing.slot == s_lead.slot
    net.down.add(lead)
    for k in range(30, 30 + rounds):
        net.run([other, 3], 40)
        ls = net.leaders([other, 3])
        if ls:
            net.handle(ls[0], net.r[ls[0]].propose([C(f"c{k}", 1)]))
    return s_lead


def test_install_survives_losing_its_source() -> None:
    net, lead, other = _setup(window=4, slots_ahead=8)
    s_lead = _one_chunk_of_the_leaders_snapshot_then_it_goes(net, lead, other, 30)
    assert not net.violations
    assert net.r[3].commit >= s_lead.slot, "node 3 never catches up"
    assert net.r[other].commit > s_lead.slot, "the majority {other, 3} chooses nothing new"


def test_install_survives_losing_its_source_default_slots_ahead() -> None:
    """Same, default slots_ahead: the majority went on, node 3 stayed at commit 0."""
    net, lead, other = _setup()
    s_lead = _one_chunk_of_the_leaders_snapshot_then_it_goes(net, lead, other, 100)
    assert net.r[3].commit >= s_lead.slot, "node 3 never catches up"


def test_two_sources_of_the_same_slot() -> None:
    net = Net(3, snapshot_chunk_bytes=8, compact_keep_slots=0)
    net.run([1, 2], 200)
    (lead,) = net.leaders([1, 2])
    for k in range(20):
        net.handle(lead, net.r[lead].propose([C(f"c{k}", 1)]))
        net.run([1, 2], 3)
    net.run([1, 2], 20)
    assert net.r[1].commit == net.r[2].commit >= 20
    # Both compact at the same slot; their application bytes differ (same state).
    for i, app in ((1, b"A" * 64), (2, b"B" * 64)):
        s = net.r[i].take_snapshot(app)
        net.snap[i] = s
        net.handle(i, net.r[i].compacted(s))
    assert net.snap[1].slot == net.snap[2].slot and net.snap[1].crc != net.snap[2].crc
    # Node 3 (commit 0) asks both peers for the slots it misses (e.g. it came back
    # during an election: _tick_catchup picks a random peer per retry).
    for peer in (1, 2):
        net.bag.append((3, peer, M.CatchupRequest(3, 1, 20)))
    # From here on, a perfect network: every message is delivered the next round.
    for _ in range(3000):
        net.tick()
        bag, net.bag = net.bag, []
        for _, d, m in bag:
            net.step(d, m)
        if net.r[3].commit >= 20:
            break
    print("node 3 commit", net.r[3].commit, "installing",
          net.r[3].installing and (net.r[3].installing.src, len(net.r[3].installing.data)))
    assert net.r[3].commit >= 20, "the install never completes"


if __name__ == "__main__":
    import harness
    orig = harness.Net.step
    log = []
    def step(self, d, m):
        if d == 3 and isinstance(m, (M.SnapshotChunk,)):
            log.append(f"3 <- {m.src}: chunk crc={m.crc:#x} off={m.offset}")
        if isinstance(m, M.SnapshotRequest):
            log.append(f"{d} <- 3: request off={m.offset} crc={m.crc:#x}")
        orig(self, d, m)
    harness.Net.step = step
    try:
        test_two_sources_of_the_same_slot()
    except AssertionError as e:
        print(e)
    print("\n".join(log[:30]))
    print(len(log), "chunk/request messages")


def test_install_completes_under_load() -> None:
    net = Net(3, snapshot_chunk_bytes=2, compact_keep_slots=0)
    rounds(net, 200)
    (lead,) = net.leaders()
    lag = next(i for i in net.ids if i != lead)
    other = next(i for i in net.ids if i not in (lead, lag))
    # lag is cut off while the others choose 20 slots and compact.
    net.down.add(lag)
    for k in range(20):
        net.handle(lead, net.r[lead].propose([C(f"c{k}", 1)]))
        rounds(net, 3)
    net.snapshot(lead, b"s" * 64)
    net.snapshot(other, b"s" * 64)
    net.down.discard(lag)
    # Steady load: one slot per round; the leader and the other node snapshot every
    # 10 rounds (their periodic snapshots), one transfer takes ~38 chunks (76 B in 2 B chunks).
    restarts = 0
    last = None
    for k in range(3000):
        net.handle(lead, net.r[lead].propose([C(f"d{k}", 1)]))
        rounds(net, 1)
        if k % 10 == 0:
            for i in (lead, other):
                if net.r[i].commit > (net.snap[i].slot if net.snap[i] else 0):
                    net.snapshot(i, b"s" * 64)
        inst = net.r[lag].installing
        if inst is not None and last is not None and inst.slot != last:
            restarts += 1
        last = inst.slot if inst is not None else None
    print("lag commit", net.r[lag].commit, "leader commit", net.r[lead].commit,
          "install restarts", restarts, "installs done", net.installs[lag],
          "snapshot bytes", net.snap[lead].size)
    assert net.r[lag].commit > 20, "the lagging node never installs"
