"""A stalled disk stalls only the writer thread: enqueue stays fast, samples are dropped first
(and counted), transitions are kept, the writer survives and catches up."""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable

from sipqualify.store import Store

from ..helpers import T0, wait_until


def test_enqueue_never_blocks_when_the_database_is_locked(make_store: Callable[..., Store], db_path: str) -> None:
    s = make_store(max_queued_samples=10_000, busy_timeout_s=1.0)
    s.open()
    blocker = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock: every write of ours stalls
    try:
        s.record_transition("first", T0, "UNKNOWN", "OK", 1, 2000, 1.0)
        # the writer has taken "first" (nothing queued) and a write of it has failed: from here it
        # retries that one transaction until the lock goes, so nothing queued below is taken.
        # (`failing` alone is not enough: a failed retention pass at start-up sets it too, and the
        # writer would then still take some of the transitions queued below.)
        wait_until(lambda: s.stats["failing"] and s.stats["queued_transitions"] == 0)
        costs: list[float] = []
        clock = time.perf_counter
        for i in range(100_000):
            t0 = clock()
            s.record_sample("p", T0 + i * 0.001, 1.0, 200, 1)
            if i % 1000 == 0:
                s.record_transition(f"t{i}", T0 + i * 0.001, "OK", "UNREACHABLE", -1, 2000, None)
                s.save_state(f"t{i}", "UNREACHABLE", -1, 2000, None, T0, T0)
            costs.append(clock() - t0)
        # a call that waited on the disk would take at least busy_timeout (1 s); margins hold on
        # a loaded 2-core machine (a scheduling pause is not a wait on the database)
        assert max(costs) < 0.5, max(costs)
        assert statistics.median(costs) < 200e-6, statistics.median(costs)
        st = s.stats
        assert st["samples_dropped"] >= 80_000
        assert st["queued_transitions"] == 100 and st["queued_states"] == 100
        assert st["errors"] >= 1 and st["writer_alive"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    s.flush(timeout=30)
    st = s.stats
    assert not st["failing"]
    assert st["samples_written"] + st["samples_dropped"] == 100_000
    assert len(s.transitions(limit=1000)) == 101  # transitions are never dropped
    assert len(s.states()) == 100


def test_a_row_the_database_refuses_is_dropped_alone(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    s.record_sample("p", T0, 1.0, 200, 1)
    s.record_sample("p", T0 + 1, object(), 200, 1)  # type: ignore[arg-type]  # cannot be bound
    s.record_sample("p", T0 + 2, 3.0, 200, 1)
    s.record_transition("p", T0 + 3, "OK", "UNREACHABLE", 2**70, 2000, None)  # integer overflow
    s.record_transition("p", T0 + 4, "UNREACHABLE", "OK", 1, 2000, 1.0)
    s.flush()
    assert [r.time for r in s.samples("p")] == [T0, T0 + 2]
    assert [r.time for r in s.transitions("p")] == [T0 + 4]
    st = s.stats
    assert st["rows_rejected"] == 2 and st["writer_alive"]
