"""Retention deletes expired samples and transitions, in bounded chunks, and nothing else."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from sipqualify.store import Store
from sipqualify.store import sqlite as sqlite_module

from ..helpers import wait_until


def test_retention_deletes_only_old_rows(make_store: Callable[..., Store]) -> None:
    now = time.time()
    s = make_store(
        sample_retention_s=3600, transition_retention_s=7200, retention_interval_s=0.2, retention_chunk_rows=7
    )
    chunks = 0
    retention_chunk = s._retention_chunk  # type: ignore[attr-defined]

    def counted(db: Any, table: str) -> bool:
        nonlocal chunks
        more = retention_chunk(db, table)
        chunks += 1
        return bool(more)

    s._retention_chunk = counted  # type: ignore[attr-defined]
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
    seen = chunks
    wait_until(lambda: chunks >= seen + 4)  # further passes (two chunks at least each) find nothing more
    assert s.stats["retention_deleted"] == 50
    assert sorted(r.time for r in s.samples("p")) == sorted(now - 100 - i for i in range(5))
    assert sorted(r.time for r in s.transitions("p")) == sorted(now - 4000 - i for i in range(3))
    assert "p" in s.states()


class _SteppedTime:
    """Stands in for the `time` module inside the store: the wall clock can be stepped (an NTP
    correction, an operator's `date -s`), monotonic time and sleeps are the real ones."""

    def __init__(self) -> None:
        self.step = 0.0

    monotonic = staticmethod(time.monotonic)
    perf_counter = staticmethod(time.perf_counter)
    sleep = staticmethod(time.sleep)

    def time(self) -> float:
        return _real_time() + self.step


_real_time = time.time


DAY = 86400.0


def test_a_forward_wall_clock_step_deletes_nothing_recent(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _SteppedTime()
    monkeypatch.setattr(sqlite_module, "time", clock)
    s = make_store(sample_retention_s=7 * DAY, transition_retention_s=90 * DAY, retention_interval_s=0.05)
    s.open()
    now = clock.time()
    for i in range(5):
        s.record_sample("p", now - 60 - i, 1.0, 200, 1)  # written just before the step
    s.record_transition("p", now - 60, "UNKNOWN", "OK", 1, 2000, 1.0)
    s.flush()
    clock.step = 91 * DAY
    # rows that are expired in real time: once both are gone, retention has run after the step
    s.record_sample("p", now - 8 * DAY, 1.0, 200, 1)
    s.record_transition("p", now - 91 * DAY, "OK", "UNREACHABLE", -1, 2000, None)
    s.flush()
    wait_until(lambda: s.stats["retention_deleted"] >= 2)
    assert sorted(r.time for r in s.samples("p")) == sorted(now - 60 - i for i in range(5))
    assert [r.time for r in s.transitions("p")] == [now - 60]


def test_a_backward_wall_clock_step_does_not_keep_rows_forever(
    make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _SteppedTime()
    monkeypatch.setattr(sqlite_module, "time", clock)
    s = make_store(sample_retention_s=7 * DAY, transition_retention_s=90 * DAY, retention_interval_s=0.05)
    s.open()
    now = clock.time()
    s.record_sample("p", now - 60, 1.0, 200, 1)
    s.flush()
    clock.step = -365 * DAY
    s.record_sample("p", now - 8 * DAY, 1.0, 200, 1)  # expired in real (elapsed) time
    s.record_transition("p", now - 91 * DAY, "OK", "UNREACHABLE", -1, 2000, None)
    s.flush()
    wait_until(lambda: s.stats["retention_deleted"] >= 2)
    assert [r.time for r in s.samples("p")] == [now - 60]
    assert s.transitions("p") == []
