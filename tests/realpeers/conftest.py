"""Fixtures for the real-peer tests (SIPp, Kamailio, sipsak against `sipqualify run`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import Lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """Starts real peers and daemons for one test; kills every one of them at teardown."""
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()
