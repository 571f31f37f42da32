"""Headless Chromium from Debian (/usr/bin/chromium) driven by Playwright for Python, for the
tests that run real browser code (JsSIP). Playwright's own browser downloads are never used.
Missing Chromium or Playwright skips the test, or fails it when `CI` is set."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .realpeers.peers import require_binary

ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--ignore-certificate-errors"]


@contextmanager
def chromium_page(user_data_dir: Path) -> Iterator[Any]:
    """A blank page in a fresh Chromium profile; the browser is closed afterwards."""
    chromium = require_binary("chromium", "chromium")
    if importlib.util.find_spec("playwright") is None:
        msg = "playwright not installed: pip install playwright (the [test] extra; never `playwright install`)"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(user_data_dir), executable_path=chromium, args=ARGS,
                                                    headless=True)
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()

