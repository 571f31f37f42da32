#!/usr/bin/env python3
"""The screenshots in docs/img/: `sipqualify demo` runs for a while (so the charts and heartbeat
bars have history), then Debian's Chromium (Playwright) logs in with the demo's one-time link and
photographs each page. Run once after a visible change to the dashboard:

    PYTHONPATH=src python3 scripts/dashboard-screenshots.py docs/img 120
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(out: str, warmup_s: int) -> None:
    tmp = tempfile.mkdtemp()
    demo = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "demo", "--state-dir", f"{tmp}/state"],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "SIPQUALIFY_DEMO_QUIET": "1"})
    try:
        assert demo.stdout is not None
        link = next(m.group(1) for line in demo.stdout if (m := re.search(r"dashboard: (\S+)", line)))
        base = link.split("login")[0]
        time.sleep(warmup_s)  # history to show, not synchronisation
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(f"{tmp}/profile", executable_path="/usr/bin/chromium",
                                                        args=ARGS, headless=True,
                                                        viewport={"width": 1280, "height": 760})
            page = ctx.pages[0]
            page.goto(link)
            page.wait_for_selector("#peers tbody tr")
            page.wait_for_selector("#live.on")
            page.screenshot(path=f"{out}/dashboard-overview.png")
            page.goto(base + "#/peer/trunk-flaky")
            page.wait_for_selector('#chart[data-points]:not([data-points="0"])')
            page.screenshot(path=f"{out}/dashboard-peer.png", full_page=True)
            page.goto(base + "#/health")
            page.wait_for_selector("#health dl")
            page.screenshot(path=f"{out}/dashboard-health.png")
            page.emulate_media(color_scheme="dark")
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(base + "#/")
            page.wait_for_selector("#peers tbody tr")
            page.screenshot(path=f"{out}/dashboard-phone-dark.png")
            ctx.close()
    finally:
        demo.terminate()
        demo.wait()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 120)
