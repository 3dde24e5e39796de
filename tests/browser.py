"""Headless Chromium for the visualiser's tests: Debian's ``chromium`` driven by
Playwright through its executable path (no browser download is possible here)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

#: The Chromium binary, or None where none is installed (the tests then skip).
CHROMIUM = next(
    (p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
     if p and Path(p).exists()),
    None,
)

#: Headless, as root, and without the background requests this closed network refuses.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch(playwright: Any) -> Any:
    """A Chromium browser of ``playwright`` (a ``sync_playwright()`` context)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
