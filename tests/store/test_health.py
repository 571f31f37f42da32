"""Storage faults are reported: a health flag with the real cause (logged once per episode),
cleared by the next successful commit; a database file removed under the running store is noticed."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest

from sipqualify.store import Store

from ..helpers import T0, wait_until


def _fill(s: Store, n: int) -> None:
    for i in range(n):
        s.record_sample("p" * 200, T0 + i, 1.0, 200, 1)
        s.record_transition("p" * 200, T0 + i, "OK", "UNREACHABLE", -1, 2000, None)


@pytest.mark.sqlite_only
def test_disk_full_makes_the_store_unhealthy_until_it_recovers(
    make_store: Callable[..., Store], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sipqualify.store")
    s = make_store(sample_flush_interval_s=0.05)
    s.open()
    assert s.health() == {"ok": True, "cause": None, "since": None}
    assert s._db is not None
    pages = s._db.execute("PRAGMA page_count").fetchone()[0]
    s._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's real SQLITE_FULL path, no privileges
    _fill(s, 2000)
    wait_until(lambda: not s.health()["ok"])
    h = s.health()
    assert "database or disk is full" in h["cause"] and h["since"] is not None
    wait_until(lambda: s.stats["errors"] >= 3)  # retried several times: still one log line
    full = [r for r in caplog.records if "database or disk is full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.ERROR
    s._db.execute("PRAGMA max_page_count=1073741823")
    wait_until(lambda: s.health()["ok"], timeout=30)
    s.flush()
    assert len(s.transitions(limit=5000)) == 2000


def test_a_removed_database_file_is_detected(
    make_store: Callable[..., Store], db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sipqualify.store")
    s = make_store(sample_flush_interval_s=0.05)
    s.open()
    _fill(s, 10)
    s.flush()
    assert s.health()["ok"]
    os.remove(db_path)
    wait_until(lambda: not s.health()["ok"])
    assert "removed or replaced" in s.health()["cause"]
    _fill(s, 10)  # commits still succeed (into the deleted inode): the file stays reported
    s.flush()
    assert not s.health()["ok"]
    assert len([r for r in caplog.records if "removed or replaced" in r.getMessage()]) == 1
