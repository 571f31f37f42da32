"""Readers on their own connections run while the writer writes (WAL)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sipqualify.store import Store

from ..helpers import T0


def test_concurrent_reads_while_writing(make_store: Callable[..., Store]) -> None:
    s = make_store(sample_flush_interval_s=0.05)
    s.open()
    producing = threading.Event()
    producing.set()
    errors: list[BaseException] = []
    N = 30_000

    def produce() -> None:
        for i in range(N):
            t = T0 + i * 0.01
            s.record_sample(f"p{i % 10}", t, float(i % 50), 200, 1)
            if i % 10 == 0:
                s.save_state(f"p{(i // 10) % 100}", "OK", i % 50, 2000, float(i % 50), t, t)
            if i % 1000 == 0:
                s.record_transition("p0", t, "OK", "LAGGED", 3000, 2000, 3000.0)
        producing.clear()

    def read() -> None:
        seen_samples = seen_transitions = 0
        try:
            while producing.is_set():
                n = len(s.samples("p0", limit=N))
                assert n >= seen_samples
                seen_samples = n
                m = len(s.transitions("p0"))
                assert m >= seen_transitions
                seen_transitions = m
                s.states()
                s.rtt_series("p0", T0, T0 + N, 10.0)
        except BaseException as e:  # surfaced in the main thread
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for r in readers:
        r.start()
    produce()
    for r in readers:
        r.join()
    assert not errors, errors
    s.flush()
    assert len(s.samples("p0", limit=N)) == N // 10
    assert len(s.transitions("p0")) == N // 1000
    assert len(s.states()) == 100
    assert sum(b["count"] for b in s.rtt_series("p0", T0, T0 + N, 10.0)) == N // 10
