"""A peer's latency statistics after each answer (qualify/stats.py `_answered`, and `answered` in
sip/_speedups.c where it is built, which LatencyStats then calls): the C arithmetic gives the
Python figures bit for bit, from the first answer on and from any stored state (NaN for no
previous RTT), over long runs of RTTs."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from sipqualify.qualify import stats
from sipqualify.qualify.stats import _INITIAL, ANSWERED_C, LatencyStats, _answered, _pack

pytestmark = pytest.mark.skipif(ANSWERED_C is None, reason="sip/_speedups.c not built")
RTT = hs.floats(0.0, 100.0) | hs.sampled_from([0.0, 5e-324, 1e-9, 0.0005, 2.5, 1e300])
ANY = hs.floats(allow_nan=True, allow_infinity=True)
BUDGET = settings(max_examples=400, deadline=None, derandomize=True, database=None)


@BUDGET
@given(rtts=hs.lists(RTT, min_size=1, max_size=40))
def test_c_figures_are_the_python_ones_from_the_start(rtts: list[float]) -> None:
    assert ANSWERED_C is not None
    c = py = _INITIAL
    for rtt in rtts:
        c, py = ANSWERED_C(c, rtt), _answered(py, rtt)
        assert c == py, rtts


@BUDGET
@given(state=hs.tuples(ANY, ANY, ANY, ANY, ANY, ANY, ANY, hs.integers(0, 2**40), hs.integers(0, 2**40)),
       rtts=hs.lists(RTT, min_size=1, max_size=12))
def test_c_figures_are_the_python_ones_from_any_state(state: tuple, rtts: list[float]) -> None:  # type: ignore[type-arg]
    assert ANSWERED_C is not None
    c = py = _pack(*state)
    for rtt in rtts:
        c, py = ANSWERED_C(c, rtt), _answered(py, rtt)
        assert c == py, (state, rtts)


def test_the_figures_kamailio_would_give() -> None:
    s = LatencyStats()
    for rtt in (0.010, 0.012, 0.011):
        s.answered(rtt)
    assert (s.count, s.polls, s.last) == (3, 3, 0.011)
    assert math.isclose(s.avg, 0.011) and math.isclose(s.est, 0.011) and math.isclose(s.std, 0.001)
    assert math.isclose(s.jitter, (0.002 / 16) + (0.001 - 0.002 / 16) / 16)


def test_bad_figures_are_refused() -> None:
    assert ANSWERED_C is not None
    with pytest.raises(TypeError):
        ANSWERED_C(b"\0" * 71, 0.1)
    with pytest.raises(TypeError):
        ANSWERED_C(_INITIAL, "0.1")  # type: ignore[arg-type]
    assert struct.calcsize("=7d2q") == len(_INITIAL) == 72


def test_latency_stats_call_the_c_arithmetic_where_built() -> None:
    assert stats.ANSWERED is ANSWERED_C
