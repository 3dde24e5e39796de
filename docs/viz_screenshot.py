"""Regenerate docs/viz.png: `paxos viz` on seed 36 at tick 818, just after node 4 took
over from node 1 (node 2 down, Accepts and Accepteds in flight, slots being chosen).

    python docs/viz_screenshot.py      # needs playwright (Python) and a chromium binary
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from click.testing import CliRunner
from playwright.sync_api import sync_playwright

from broadcast.cli import main
from broadcast.vizserver import VizServer

SEED, TICK = 36, 818
OUT = Path(__file__).resolve().parent / "viz.png"


def shoot() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "run.json"
        result = CliRunner().invoke(main, ["sim", "--seed", str(SEED), "--trace-json", str(trace)])
        assert result.exit_code == 0, result.output
        server = VizServer(("127.0.0.1", 0), trace_text=trace.read_text())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                    args=["--no-sandbox", "--disable-gpu"],
                )
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(server.url)
                page.wait_for_selector("body[data-ready='1']")
                page.evaluate(f"window.paxosViz.seek({TICK})")
                page.wait_for_timeout(300)
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    shoot()
