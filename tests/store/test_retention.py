"""Retention deletes expired samples and transitions, in bounded chunks, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable

from sipqualify.store import Store

from .conftest import wait_until


def test_retention_deletes_only_old_rows(make_store: Callable[..., Store]) -> None:
    now = time.time()
    s = make_store(
        sample_retention_s=3600, transition_retention_s=7200, retention_interval_s=0.2, retention_chunk_rows=7
    )
    s.open()
    for i in range(30):
        s.record_sample("p", now - 4000 - i, 1.0, 200, 1)  # expired
    for i in range(5):
        s.record_sample("p", now - 100 - i, 2.0, 200, 1)  # kept
    for i in range(20):
        s.record_transition("p", now - 8000 - i, "OK", "UNREACHABLE", -1, 2000, None)  # expired
    for i in range(3):
        s.record_transition("p", now - 4000 - i, "UNREACHABLE", "OK", 1, 2000, 1.0)  # older than samples keep, kept
    s.save_state("p", "OK", 1, 2000, 1.0, now - 1_000_000, now - 1_000_000)  # current state never expires
    s.flush()
    wait_until(lambda: s.stats["retention_deleted"] == 50)
    time.sleep(0.5)  # further passes find nothing more
    assert s.stats["retention_deleted"] == 50
    assert sorted(r.time for r in s.samples("p")) == sorted(now - 100 - i for i in range(5))
    assert sorted(r.time for r in s.transitions("p")) == sorted(now - 4000 - i for i in range(3))
    assert "p" in s.states()
