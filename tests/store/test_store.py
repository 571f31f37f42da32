"""SQLite store: round trip, ordering, retention, commit-before-report, kill -9, non-blocking enqueue."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from sipqualify.store import Store, TransitionRecord

T0 = time.time() - 10_000  # recent enough that retention (7 d / 90 d) keeps it


def test_round_trip_and_restore(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    s = Store(path)
    assert s.open() == {}
    s.save_state("a", "OK", 12, 2000, 12.3, T0 + 100, T0 + 101)
    s.save_state("a", "LAGGED", 2500, 2000, 2500.1, T0 + 102, T0 + 103)  # coalesced: last wins
    s.save_state("b", "UNREACHABLE", -1, 500, None, T0 + 99, T0 + 103)
    s.record_transition("a", T0 + 102, "OK", "LAGGED", 2500, 2000, 2500.1)
    s.record_sample("a", T0 + 103, 2500.1, 200, 1)
    s.close()
    s2 = Store(path)
    states = s2.open()
    assert states["a"].state == "LAGGED" and states["a"].lastms == 2500
    assert states["b"].lastms == -1 and states["b"].rtt_ms is None
    assert [(t.peer, t.old, t.new) for t in s2.transitions()] == [("a", "OK", "LAGGED")]
    assert s2.samples("a")[0].rtt_ms == 2500.1
    s2.forget_peers(["b"])
    s2.flush()
    assert "b" not in s2.states()
    assert s2.transitions("a")  # history kept
    s2.close()


def test_queries_by_peer_and_time(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.sqlite"))
    s.open()
    for i in range(10):
        s.record_transition("p" if i % 2 else "q", T0 + i, "OK", "UNREACHABLE", -1, 2000, None)
    s.flush()
    assert [t.time - T0 for t in s.transitions("p", since=T0 + 3, until=T0 + 7)] == [3.0, 5.0, 7.0]
    assert len(s.transitions(limit=4)) == 4
    s.close()


def test_rtt_series_downsampling(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "s.sqlite"))
    s.open()
    for t, rtt in [(0, 1.0), (10, 3.0), (59, None), (60, 10.0), (70, 20.0), (130, 5.0)]:
        s.record_sample("p", T0 + t, rtt, 200 if rtt else None, 1)
    s.flush()
    series = s.rtt_series("p", T0, T0 + 200, 60.0)
    assert [b["time"] - T0 for b in series] == [0.0, 60.0, 120.0]
    b0 = series[0]
    assert (b0["count"], b0["answered"], b0["min_ms"], b0["avg_ms"], b0["max_ms"]) == (3, 2, 1.0, 2.0, 3.0)
    assert abs(b0["loss_pct"] - 100 / 3) < 1e-9
    assert series[1]["avg_ms"] == 15.0 and series[2]["loss_pct"] == 0.0
    s.close()


def test_retention_deletes_only_old_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    now = time.time()
    s = Store(path, sample_retention_s=3600, transition_retention_s=7200)
    s.open()
    s.record_sample("p", now - 4000, 1.0, 200, 1)
    s.record_sample("p", now - 100, 1.0, 200, 1)
    s.record_transition("p", now - 8000, "OK", "UNREACHABLE", -1, 2000, None)
    s.record_transition("p", now - 4000, "UNREACHABLE", "OK", 1, 2000, 1.0)
    s.flush()
    assert s._db is not None
    s._retention(s._db, now)  # what the writer does every minute
    assert [r.time for r in s.samples("p")] == [now - 100]
    assert [r.time for r in s.transitions("p")] == [now - 4000]
    s.close()


def test_transition_callback_runs_after_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def cb(rec: TransitionRecord) -> None:
        with sqlite3.connect(path) as other:
            n = other.execute("SELECT COUNT(*) FROM transitions WHERE id=?", (rec.id,)).fetchone()[0]
        seen.append((rec.id, n))
        done.set()

    s = Store(path, on_transition_committed=cb)
    s.open()
    s.record_transition("p", T0, "UNKNOWN", "OK", 1, 2000, 0.5)
    assert done.wait(5)
    assert seen == [(1, 1)]  # a second connection already sees the row
    s.close()


CHILD = textwrap.dedent("""
    import sys, time
    from sipqualify.store import Store
    path = sys.argv[1]
    def cb(rec):
        print(f"T {rec.peer}", flush=True)
    s = Store(path, on_transition_committed=cb, sample_flush_interval_s=0.2)
    s.open()
    i = 0
    while True:
        i += 1
        s.record_sample("p", time.time(), float(i), 200, 1)
        if i % 50 == 0:
            s.record_transition(f"t{i}", time.time(), "OK", "UNREACHABLE", -1, 2000, None)
        if i == 200:
            print(f"S {time.time()}", flush=True)
        time.sleep(0.005)
""")


def test_kill_9_loses_no_reported_transition(tmp_path: Path) -> None:
    """A real SIGKILL: every transition the child reported (after commit) is on disk, and
    samples older than one second before the kill are too."""
    path = str(tmp_path / "s.sqlite")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, text=True)
    reported: list[str] = []
    sample_mark = None
    assert proc.stdout is not None
    t_end = time.time() + 6
    while time.time() < t_end:
        line = proc.stdout.readline()
        if line.startswith("T "):
            reported.append(line.split()[1])
        elif line.startswith("S "):
            sample_mark = float(line.split()[1])
        if len(reported) >= 8:
            break
    time.sleep(1.5)
    kill_time = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(reported) >= 8 and sample_mark is not None
    s = Store(path)
    s.open()
    stored = {t.peer for t in s.transitions(limit=100000)}
    assert set(reported) <= stored
    samples = s.samples("p", limit=100000)
    assert samples and max(r.time for r in samples) >= kill_time - 1.0
    assert min(r.time for r in samples) <= sample_mark
    s.close()


def test_enqueue_never_blocks_when_disk_stalls(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    s = Store(path, max_queue=20_000)
    s.open()
    blocker = sqlite3.connect(path, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # hold the write lock: the writer thread stalls
    try:
        t0 = time.perf_counter()
        for i in range(100_000):
            s.record_sample("p", T0 + i, 1.0, 200, 1)
        s.record_transition("p", T0, "OK", "UNREACHABLE", -1, 2000, None)
        per_call_us = (time.perf_counter() - t0) / 100_001 * 1e6
        assert per_call_us < 100, per_call_us  # generous bound for slow CI: it must not wait on disk
        assert s.stats["samples_dropped"] >= 80_000 - 1000
    finally:
        blocker.rollback()
        blocker.close()
    s.flush(timeout=30)
    assert [t.new for t in s.transitions("p")] == ["UNREACHABLE"]  # transitions are never dropped
    s.close()
