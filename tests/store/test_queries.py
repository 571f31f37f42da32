"""Reads: transitions and samples by peer / time range, and the downsampled RTT series."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipqualify.store import SampleRecord, Store

from ..helpers import T0


def test_transitions_by_peer_and_time_range(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    s.record_transition("a", T0 + 100.0, "UNKNOWN", "OK", 10, 2000, 10.0)
    s.record_transition("b", T0 + 150.0, "UNKNOWN", "UNREACHABLE", -1, 2000, None)
    s.record_transition("a", T0 + 200.0, "OK", "LAGGED", 2500, 2000, 2500.0)
    s.record_transition("a", T0 + 300.0, "LAGGED", "UNREACHABLE", -1, 2000, None)
    s.flush()

    def pairs(rows: list) -> list[tuple[str, float]]:  # type: ignore[type-arg]
        return [(r.peer, r.time) for r in rows]

    assert pairs(s.transitions()) == [("a", T0 + 100.0), ("b", T0 + 150.0), ("a", T0 + 200.0), ("a", T0 + 300.0)]
    assert pairs(s.transitions("a")) == [("a", T0 + 100.0), ("a", T0 + 200.0), ("a", T0 + 300.0)]
    assert pairs(s.transitions("a", since=T0 + 200.0)) == [("a", T0 + 200.0), ("a", T0 + 300.0)]
    assert pairs(s.transitions("a", until=T0 + 200.0)) == [("a", T0 + 100.0), ("a", T0 + 200.0)]
    assert pairs(s.transitions(since=T0 + 120.0, until=T0 + 250.0)) == [("b", T0 + 150.0), ("a", T0 + 200.0)]
    assert pairs(s.transitions("a", limit=1)) == [("a", T0 + 100.0)]
    assert s.transitions("nobody") == []
    rec = s.transitions("a", since=T0 + 300.0)[0]
    assert (rec.old, rec.new, rec.lastms, rec.maxms, rec.rtt_ms) == ("LAGGED", "UNREACHABLE", -1, 2000, None)
    ids = [r.id for r in s.transitions()]
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_one_peers_state_and_last_transitions(make_store: Callable[..., Store]) -> None:
    """The reads behind another node's peer in the fleet view (cluster/member.py remote_peer)."""
    s = make_store(node="n1")
    s.open()
    for i in range(5):
        s.record_transition("a", T0 + i, "OK" if i % 2 else "UNREACHABLE", "UNREACHABLE" if i % 2 else "OK",
                            i, 2000, float(i))
    s.record_transition("b", T0 + 10, "UNKNOWN", "OK", 1, 2000, 1.0)
    s.save_state("a", "OK", 4, 2000, 4.0, T0 + 4, T0 + 5)
    s.flush()
    rec = s.state_of("a")
    assert rec is not None and (rec.state, rec.lastms, rec.changed_at, rec.updated_at, rec.node) == (
        "OK", 4, T0 + 4, T0 + 5, "n1")
    assert s.state_of("b") is None
    last = s.last_transitions("a", 3)
    assert [r.time for r in last] == [T0 + 2, T0 + 3, T0 + 4] and {r.node for r in last} == {"n1"}
    assert [r.time for r in s.last_transitions("a", 10)] == [T0 + i for i in range(5)]
    assert s.last_transitions("nobody", 3) == []


def test_samples_by_peer_and_time_range(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    for t in range(10):
        s.record_sample("a", T0 + t, 10.0 + t, 200, 1)
        s.record_sample("b", T0 + t, None, None, 7)
    s.flush()
    assert len(s.samples("a")) == 10
    assert s.samples("a", since=T0 + 3, until=T0 + 5) == [
        SampleRecord("a", T0 + 3, 13.0, 200, 1),
        SampleRecord("a", T0 + 4, 14.0, 200, 1),
        SampleRecord("a", T0 + 5, 15.0, 200, 1),
    ]
    assert s.samples("b", limit=2) == [SampleRecord("b", T0, None, None, 7), SampleRecord("b", T0 + 1, None, None, 7)]


def test_rtt_series_numbers_by_hand(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    # bucket [0, 60): 10, 20, 30 ms and one timeout   -> count 4, answered 3, min 10, avg 20, max 30, loss 25 %
    # bucket [60, 120): nothing                        -> omitted
    # bucket [120, 180): two timeouts                  -> count 2, answered 0, min/avg/max None, loss 100 %
    # bucket [180, 240): 5 ms at 180.0 (inclusive start) and 7 ms at 239.9 -> avg 6
    # 240.0 is `until`: excluded; 0 - 1 is before `since`: excluded; other peer: excluded
    base = T0
    for dt, rtt in [
        (0, 10.0),
        (10, 20.0),
        (59.9, 30.0),
        (30, None),
        (120, None),
        (179, None),
        (180, 5.0),
        (239.9, 7.0),
        (240, 1.0),
        (-1, 1.0),
    ]:
        s.record_sample("a", base + dt, rtt, 200 if rtt is not None else None, 1 if rtt is not None else 7)
    s.record_sample("b", base + 1, 99.0, 200, 1)
    s.flush()

    series = s.rtt_series("a", base, base + 240, 60)
    assert series == [
        {"time": base, "count": 4, "answered": 3, "min_ms": 10.0, "avg_ms": 20.0, "max_ms": 30.0, "loss_pct": 25.0},
        {
            "time": base + 120,
            "count": 2,
            "answered": 0,
            "min_ms": None,
            "avg_ms": None,
            "max_ms": None,
            "loss_pct": 100.0,
        },
        {"time": base + 180, "count": 2, "answered": 2, "min_ms": 5.0, "avg_ms": 6.0, "max_ms": 7.0, "loss_pct": 0.0},
    ]
    # one bucket covering everything: 8 samples, 5 answered (10, 20, 30, 5, 7)
    (whole,) = s.rtt_series("a", base, base + 240, 3600)
    assert (whole["count"], whole["answered"], whole["min_ms"], whole["max_ms"]) == (8, 5, 5.0, 30.0)
    assert whole["avg_ms"] == pytest.approx(72.0 / 5)
    assert whole["loss_pct"] == pytest.approx(37.5)
    with pytest.raises(ValueError):
        s.rtt_series("a", base, base + 240, 0)
