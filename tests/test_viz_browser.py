"""The visualiser page in a real headless Chromium (Playwright): a simulator trace
served by ``paxos viz``, the self-contained ``--out`` file opened from disk, and
live mode against stub nodes that serve ``/events``.

Skipped, with the reason, where Playwright or a Chromium binary is missing (CI
installs both). Every wait is on a condition, with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, launch
from click.testing import CliRunner
from test_viz import StubNode

from broadcast import tracefile
from broadcast.cli import main
from broadcast.vizserver import VizServer

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - CI installs it
    pytest.skip("playwright (Python) is not installed", allow_module_level=True)

if CHROMIUM is None:  # pragma: no cover - CI installs it
    pytest.skip("no chromium binary found", allow_module_level=True)

#: A seed with leader changes, crashes, restarts from snapshots, installs, pauses, link
#: cuts and dropped message types, where a node restarts with a chosen prefix below the one
#: it had learned before (the page must take what the node recovered).
SEED = 90
#: Playwright's waits (ms): generous, for a loaded 2-core machine.
DEADLINE_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == []  # no uncaught script error on the page


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A real run of a seed with crashes, restarts, partitions and leader changes."""
    path = tmp_path_factory.mktemp("vizb") / "run.json"
    result = CliRunner().invoke(main, ["sim", "--seed", str(SEED), "--trace-json", str(path)])
    assert result.exit_code == 0, result.output
    return path, json.loads(path.read_text())


@contextlib.contextmanager
def served(text: str) -> Iterator[str]:
    server = VizServer(("127.0.0.1", 0), trace_text=text)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def loaded(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=DEADLINE_MS)


def shown_node_ids(page: Page) -> list[int]:
    return sorted(int(x) for x in page.locator("svg .node").evaluate_all(
        "els => els.map(e => e.getAttribute('data-node'))"))


def nodes_at_end(doc: dict[str, Any]) -> list[int]:
    """The nodes the page draws at the end: started, disk not lost, and up or a member."""
    seen: set[int] = set()
    up: dict[int, bool] = {}
    wiped: set[int] = set()
    members: tuple[int, set[int]] | None = None
    for e in doc["events"]:
        node = e.get("node")
        kind = e["kind"]
        if kind in ("role", "accept", "chosen", "restart"):
            seen.add(node)
        if kind in ("crash", "wipe"):
            up[node] = False
        if kind == "restart":
            up[node] = True
        if kind == "wipe":
            wiped.add(node)
        if kind == "members" and (members is None or e["epoch"] >= members[0]):
            members = (e["epoch"], set(e["voters"]) | set(e["learners"]))
    return sorted(
        n for n in seen
        if n not in wiped and (up.get(n, True) or members is None or n in members[1])
    )


def check_final(page: Page, doc: dict[str, Any]) -> None:
    """The page at the end of the trace shows the run's end state."""
    final = doc["final"]
    expect(page.get_by_test_id("time")).to_have_text(f"tick {doc['ticks']} / {doc['ticks']}")
    expect(page.get_by_test_id("chosen-count")).to_have_text(str(max(final["chosen"].values())))
    expect(page.get_by_test_id("delivered-count")).to_have_text(
        str(max(final["delivered"].values())))
    shown = shown_node_ids(page)
    assert shown == nodes_at_end(doc)
    for node in shown:
        expect(page.get_by_test_id(f"node-chosen-{node}")).to_have_text(
            str(final["chosen"][str(node)]))
        expect(page.get_by_test_id(f"node-delivered-{node}")).to_have_text(
            str(final["delivered"][str(node)]))


def test_page_shows_the_run_and_ends_at_its_final_state(
    page: Page, trace: tuple[Path, dict[str, Any]]
) -> None:
    path, doc = trace
    with served(path.read_text()) as url:
        loaded(page, url)
        # at the start: the three nodes the run starts with, in a circle
        assert shown_node_ids(page) == [1, 2, 3]
        expect(page.get_by_test_id("node-role-1")).to_have_text("follower")
        expect(page.get_by_test_id("source")).to_contain_text(f"seed {SEED}")
        expect(page.get_by_test_id("replay")).to_have_text(doc["replay"])
        page.get_by_test_id("end").click()
        check_final(page, doc)
        # back to the start and played at the highest speed until done
        page.get_by_test_id("start").click()
        expect(page.get_by_test_id("chosen-count")).to_have_text("0")
        page.get_by_test_id("speed").select_option("1024")
        page.get_by_test_id("play").click()
        expect(page.locator("body")).to_have_attribute("data-done", "1", timeout=DEADLINE_MS)
        check_final(page, doc)


def test_stepping_advances_the_view(page: Page, trace: tuple[Path, dict[str, Any]]) -> None:
    path, doc = trace
    with served(path.read_text()) as url:
        loaded(page, url)
        time = page.get_by_test_id("time")
        net = page.get_by_test_id("net")
        # somewhere messages fly: step from there
        page.get_by_test_id("scrubber").fill("600")
        expect(time).to_have_attribute("data-t", "600")
        before_t = int(time.get_attribute("data-t") or 0)
        before_net = net.inner_html()
        before_applied = page.get_by_test_id("applied").inner_text()
        page.get_by_test_id("step").click()
        next_t = min(e["t"] for e in doc["events"] if e["t"] > before_t)
        expect(time).to_have_attribute("data-t", str(next_t))
        expect(time).to_have_text(f"tick {next_t} / {doc['ticks']}")
        assert page.get_by_test_id("applied").inner_text() != before_applied
        assert net.inner_html() != before_net  # dots moved, arrived or left
        for _ in range(5):
            previous = int(time.get_attribute("data-t") or 0)
            page.get_by_test_id("step").click()
            expect(time).not_to_have_attribute("data-t", str(previous))
            assert int(time.get_attribute("data-t") or 0) > previous
        # while paused, time stands still
        stopped = time.get_attribute("data-t")
        page.wait_for_timeout(300)
        assert time.get_attribute("data-t") == stopped


def test_self_contained_file_works_from_disk(
    page: Page, trace: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, doc = trace
    out = tmp_path / "page.html"
    result = CliRunner().invoke(main, ["viz", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    loaded(page, out.as_uri())
    assert shown_node_ids(page) == [1, 2, 3]
    page.get_by_test_id("end").click()
    check_final(page, doc)
    assert requests == [out.as_uri()]  # nothing else loaded, from anywhere


def test_live_mode_shows_a_leader_change(page: Page, tmp_path: Path) -> None:
    stubs = {n: StubNode(n) for n in (1, 2, 3)}
    for stub in stubs.values():
        stub.start()
    stubs[1].add("role", node=1, role="leader", ballot=[1, 1], leader=1)
    for n in (2, 3):
        stubs[n].add("role", node=n, role="follower", ballot=[1, 1], leader=1)
        stubs[1].add("sent", src=1, dst=n, type="Accept", count=3, bytes=300)
        stubs[n].add("accept", node=n, slot=1, to=3, ballot=[1, 1])
    stubs[1].add("chosen", node=1, slot=1, to=3)
    record = tmp_path / "live.json"
    args = [sys.executable, "-m", "broadcast", "viz", "--live", "--port", "0",
            "--record", str(record)]
    for n, stub in stubs.items():
        args += ["--node", f"{n}={stub.address}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, proc.stderr.read() if proc.stderr else "")
        loaded(page, match.group(1))
        assert shown_node_ids(page) == [1, 2, 3]
        expect(page.get_by_test_id("node-role-1")).to_have_text("leader", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("node-role-2")).to_have_text("follower")
        expect(page.get_by_test_id("node-chosen-1")).to_have_text("3")
        # node 1 stops answering; node 2 is elected
        stubs[1].stop()
        stubs[2].add("role", node=2, role="leader", ballot=[2, 2], leader=2)
        stubs[3].add("role", node=3, role="follower", ballot=[2, 2], leader=2)
        stubs[2].add("sent", src=2, dst=3, type="Prepare", count=1, bytes=40)
        expect(page.get_by_test_id("node-1")).to_have_attribute("data-up", "0",
                                                                timeout=DEADLINE_MS)
        expect(page.get_by_test_id("node-role-2")).to_have_text("leader", timeout=DEADLINE_MS)
        expect(page.get_by_test_id("leader")).to_have_text("n2 (2.2)")
        expect(page.get_by_test_id("recent")).to_contain_text("n1 crashed")
        expect(page.get_by_test_id("status")).to_contain_text("unreachable: n1")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for stub in stubs.values():
            stub.stop()
    assert proc.returncode == 0
    doc = tracefile.read(record)[1]  # --record kept what it saw
    assert doc["source"] == "live" and doc["time_unit"] == "ms"
    kinds = [(e["kind"], e.get("node")) for e in doc["events"]]
    assert ("crash", 1) in kinds and doc["final"]["chosen"]["1"] == 3
    # ... and the page replays the recording
    out = tmp_path / "live.html"
    result = CliRunner().invoke(main, ["viz", str(record), "--out", str(out)])
    assert result.exit_code == 0, result.output
    loaded(page, out.as_uri())
    page.get_by_test_id("end").click()
    expect(page.get_by_test_id("node-role-2")).to_have_text("leader")
    expect(page.get_by_test_id("node-1")).to_have_attribute("data-up", "0")
    expect(page.get_by_test_id("chosen-count")).to_have_text("3")


def test_live_view_of_a_real_cluster_shows_a_leader_change(page: Page, tmp_path: Path) -> None:
    """Real nodes (``paxos node --metrics``), ``paxos viz --live`` on their /events, and a
    SIGKILL of the leader: the page shows it gone and another node leading."""
    from procs import ProcessCluster

    from broadcast.local import free_base_port

    base = free_base_port(4, start=38000)  # above the nodes' ports
    cluster = ProcessCluster(tmp_path, 3, metrics_base_port=base)
    args = [sys.executable, "-m", "broadcast", "viz", "--live", "--port", "0"]
    for n in (1, 2, 3):
        args += ["--node", f"{n}=127.0.0.1:{base + n}"]
    proc: subprocess.Popen[str] | None = None
    try:
        leader = cluster.leader()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, proc.stderr.read() if proc.stderr else "")
        loaded(page, match.group(1))
        assert shown_node_ids(page) == [1, 2, 3]
        with cluster.client() as client:
            client.broadcast_many(b"v%d" % i for i in range(200))
        expect(page.get_by_test_id(f"node-role-{leader}")).to_have_text("leader",
                                                                      timeout=DEADLINE_MS)
        expect(page.get_by_test_id("leader")).to_have_text(re.compile(rf"^n{leader} "),
                                                           timeout=DEADLINE_MS)
        cluster.kill(leader, signal.SIGKILL)
        expect(page.get_by_test_id(f"node-{leader}")).to_have_attribute("data-up", "0",
                                                                       timeout=DEADLINE_MS)
        others = "|".join(str(n) for n in (1, 2, 3) if n != leader)
        expect(page.get_by_test_id("leader")).to_have_text(re.compile(rf"^n({others}) "),
                                                           timeout=DEADLINE_MS)
        new = int(page.get_by_test_id("leader").inner_text().split()[0][1:])
        expect(page.get_by_test_id(f"node-role-{new}")).to_have_text("leader")
        assert new == cluster.leader(exclude=leader)  # the page agrees with the cluster
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        cluster.stop()
