"""Reported implies stored: the commit-before-callback rule, and a real `kill -9`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sipqualify.store import Store, TransitionRecord

from ..helpers import T0

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_transition_callback_runs_after_commit(make_store: Callable[..., Store]) -> None:
    seen: list[tuple[int, str, int, bool]] = []
    done = threading.Event()
    caller = threading.current_thread()

    def cb(rec: TransitionRecord) -> None:
        # a reader (its own connection) must already see the row: the COMMIT happened before the callback
        n = sum(1 for t in s.transitions(rec.peer) if t.id == rec.id)
        seen.append((rec.id, rec.peer, n, threading.current_thread() is caller))
        if len(seen) == 50:
            done.set()
        if rec.peer == "p3":
            raise RuntimeError("a failing subscriber must not stop the writer")

    s = make_store(on_transition_committed=cb)
    s.open()
    for i in range(50):
        s.record_transition(f"p{i}", T0 + i, "UNKNOWN", "OK", 1, 2000, 0.5)
    assert done.wait(10)
    assert [(peer, n, on_caller) for _id, peer, n, on_caller in seen] == [(f"p{i}", 1, False) for i in range(50)]
    assert [i for i, *_ in seen] == sorted(i for i, *_ in seen)
    assert s.stats["callback_errors"] == 1 and s.stats["writer_alive"]


# The child reports like the service does: a transition line only from the committed-callback;
# a sample line after each loop's samples were enqueued (51 per loop, all with the loop's time).
# Two threads write lines (the writer's callback, the main loop): one lock, one write per line,
# or a line can be torn in two ("T 2 t40S 1795..." then an empty line) and be lost.
CHILD = textwrap.dedent("""
    import sys, threading, time
    sys.path.insert(0, sys.argv[2])
    if sys.argv[1].startswith("postgresql://"):
        from sipqualify.store.postgres import Store
    else:
        from sipqualify.store import Store

    out = threading.Lock()

    def say(line):
        with out:
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()

    def committed(rec):
        say(f"T {rec.id} {rec.peer}")

    s = Store(sys.argv[1], on_transition_committed=committed)
    s.open()
    i = 0
    while True:
        i += 1
        t = time.time()
        s.record_sample("p", t, float(i), 200, 1)
        for k in range(50):
            s.record_sample(f"bulk{k}", t, 1.0, 200, 1)
            s.save_state(f"bulk{k}", "OK", 1, 2000, 1.0, t, t)
        say(f"S {t!r}")
        if i % 20 == 0:
            s.record_transition(f"t{i}", t, "OK", "UNREACHABLE", -1, 2000, None)
        time.sleep(0.005)
""")


def test_kill_9_loses_no_reported_transition_and_at_most_one_second_of_samples(
        store_location: str, make_store: Callable[..., Store]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_location, SRC], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    reported: list[tuple[int, str]] = []
    sample_times: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, *rest = line.split()
            if kind == "T":
                reported.append((int(rest[0]), rest[1]))
            elif kind == "S":
                sample_times.append(float(rest[0]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while len(reported) < 15 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        kill_time = time.time()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        reader.join()
    assert proc.returncode == -signal.SIGKILL
    assert len(reported) >= 15, proc.stderr.read() if proc.stderr else ""

    s = make_store()
    s.open()
    stored = {(t.id, t.peer) for t in s.transitions(limit=100_000)}
    assert set(reported) <= stored  # every reported transition survived, with its id
    old = [t for t in sample_times if t < kill_time - 1.0]
    assert len(old) > 100
    counts = dict(s._query("SELECT time, COUNT(*) FROM samples WHERE time < ? GROUP BY time", (kill_time - 1.0,)))
    missing = [t for t in old if counts.get(t) != 51]
    assert not missing, f"{len(missing)} of {len(old)} sample loops older than 1 s before the kill are incomplete"
    assert len(s.states()) == 50


def test_batched_transition_ids_are_the_stored_ids(make_store: Callable[..., Store]) -> None:
    """Transitions pending together are inserted with one executemany: the ids handed to the
    callback (read back from sqlite_sequence; RETURNING for PostgreSQL) must be exactly the rows' ids."""
    got: list[TransitionRecord] = []
    done = threading.Event()

    def cb(rec: TransitionRecord) -> None:
        got.append(rec)
        if len(got) == 301:
            done.set()

    s = make_store(on_transition_committed=cb)
    s.open()
    s.record_transition("first", T0, "UNKNOWN", "OK", 1, 2000, 0.5)  # ids do not start at 1
    with s._wake:  # hold the writer: all 300 are pending together, so they go in one batch
        for i in range(300):
            s._transitions.append((f"p{i}", T0 + 1 + i, "OK", "UNREACHABLE", -1, 2000, None, None, None, None, None,
                                   None))
        s._wake.notify()
    assert done.wait(10)
    stored = {t.id: t.peer for t in s.transitions(limit=1000)}
    assert {r.id: r.peer for r in got} == stored and len(stored) == 301
