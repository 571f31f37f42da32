"""Percentiles and uptime over time windows (store/windows.py; issue 13 item 6), from the store's
samples and transitions, through the incremental rollups (store/rollup.py, tests/store/test_rollup.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from sipqualify.store import Store
from sipqualify.store.rollup import REL_ERROR
from sipqualify.store.windows import percentile, uptime

NOW = float(int(time.time()))  # the uptime rollup is kept 31 days back from the real clock


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert [percentile(values, q) for q in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None
    assert [percentile([1.0, 2.0, 3.0, 4.0], q) for q in (50, 95)] == [2.0, 4.0]


def test_uptime_counts_observed_reachable_time() -> None:
    # OK from the start, UNREACHABLE from 60 to 90 of 100: 70 %
    assert uptime("OK", [(60.0, "UNREACHABLE"), (90.0, "OK")], 0.0, 100.0) == (70.0, 100.0)
    # LAGGED is reachable; UNKNOWN is not observed
    assert uptime("LAGGED", [(50.0, "UNKNOWN")], 0.0, 100.0) == (100.0, 50.0)
    # nothing recorded before the window: it starts at the first change
    assert uptime(None, [(40.0, "OK"), (70.0, "UNREACHABLE")], 0.0, 100.0) == (50.0, 60.0)
    assert uptime(None, [], 0.0, 100.0) == (None, 0.0)


def test_store_windows(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    # answered every 10 s for the last 24 h: RTT 10 ms, but 100 ms in the last 5 min; a few losses
    for i in range(8640):
        t = NOW - 86400 + 10 * i + 5
        rtt = None if i % 100 == 7 else (100.0 if t > NOW - 300 else 10.0)
        s.record_sample("p", t, rtt, 200 if rtt is not None else None, 1)
    s.record_sample("other", NOW - 10, 1.0, 200, 1)
    # OK 40 days ago; UNREACHABLE for one hour 2 days ago, and for the last 30 min
    s.record_transition("p", NOW - 40 * 86400, "UNKNOWN", "OK", 10, 2000, 10.0)
    s.record_transition("p", NOW - 2 * 86400, "OK", "UNREACHABLE", -1, 2000, None)
    s.record_transition("p", NOW - 2 * 86400 + 3600, "UNREACHABLE", "OK", 10, 2000, 10.0)
    s.record_transition("p", NOW - 1800, "OK", "UNREACHABLE", -1, 2000, None)
    s.flush()
    w = s.windows("p", NOW)
    assert w["rtt_windows"]["5m"] == {"samples": 30, "p50_ms": 100.0, "p95_ms": 100.0, "p99_ms": 100.0}
    h = w["rtt_windows"]["1h"]
    # the 1 h and 24 h windows come from the rollup: counts exact, percentiles within its bin resolution
    assert h["samples"] == 360 - 4
    assert h["p50_ms"] == pytest.approx(10.0, rel=REL_ERROR) and h["p99_ms"] == pytest.approx(100.0, rel=REL_ERROR)
    assert w["rtt_windows"]["24h"]["samples"] == 8640 - 87
    up = w["uptime"]
    assert up["24h"]["pct"] == pytest.approx(100 * (86400 - 1800) / 86400, abs=1e-4)
    assert up["7d"]["pct"] == pytest.approx(100 * (7 * 86400 - 3600 - 1800) / (7 * 86400), abs=1e-4)
    assert up["30d"]["observed_s"] == 30 * 86400.0
    assert s.windows("nobody", NOW)["uptime"]["24h"] == {"pct": None, "observed_s": 0.0}
