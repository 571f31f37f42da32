"""Flap damping (qualify/flap.py, RFC 2439's idea) on the virtual clock; issue 13 item 3."""

from __future__ import annotations

import math

import pytest

from sipqualify.qualify import flap as fl
from sipqualify.qualify.events import FlapChanged, QualifyResult, VerdictChanged

from .sim import Responder, answer, build, header, peer

A = ("127.0.0.1", 15091)
DAMPED = {"flap_suppress": 2000, "flap_reuse": 750, "flap_penalty": 1000, "flap_half_life_s": 60}


def script(*steps: int | None) -> Responder:
    """Poke n gets steps[n] (None: no answer); the last step repeats."""
    seen: dict[str, int] = {}

    def respond(req: bytes, t: float) -> list[tuple[float, bytes]]:
        n = seen.setdefault(header(req, "Call-ID"), len(seen))
        code = steps[min(n, len(steps) - 1)]
        return [] if code is None else [(0.005, answer(req, code, "X"))]

    return respond


def test_penalty_halves_each_half_life_and_is_capped() -> None:
    pol = fl.FlapPolicy(penalty=1000, suppress=2000, reuse=750, half_life_s=900)
    f = fl.FlapState(0.0)
    assert f.change(pol, 0.0) is None
    assert f.penalty_at(pol, 900.0) == pytest.approx(500.0)
    assert f.penalty_at(pol, 1800.0) == pytest.approx(250.0)
    assert f.change(pol, 900.0) is None  # 500 + 1000 = 1500 < 2000
    assert f.change(pol, 900.0) == fl.STARTED  # 2500
    for _ in range(20):
        f.change(pol, 900.0)
    assert f.penalty == pol.ceiling == 8000.0
    # settles once decayed below reuse: log2(8000 / 750) half-lives later, not before
    t_reuse = 900.0 + 900.0 * math.log2(8000 / 750)
    assert f.check(pol, t_reuse - 1.0) is None and f.flapping
    assert f.check(pol, t_reuse + 1.0) == fl.SETTLED and not f.flapping


def test_off_by_default_keeps_no_state() -> None:
    assert fl.flap_policy(1000, 0, 750, 900) is None
    sim = build([peer("p", A[1], 500, freq_s=5)], {A: script(200, None)})
    sim.run_until(60.0)
    p = sim.engine.peer("p")
    assert p is not None and p.verdict.flap is None and p.verdict.policy.flap is None
    assert not any(isinstance(e, FlapChanged) for _, e in sim.events)


def test_flapping_peer_holds_verdict_events_back_then_settles_once() -> None:
    """up, down, up, down: the third change reaches 2000 (half-life 60 s); from then on no
    verdict event until the penalty decays below 750, at a result, with the verdict of then.
    The chan_sip transitions (compat outputs) are all still reported."""
    cfg = peer("p", A[1], 500, freq_s=5, **DAMPED)
    sim = build([cfg], {A: script(200, None, 200, None, 200, None, 200)})
    sim.run_until(400.0)
    verdicts = [(round(t * 1000), e.new) for t, e in sim.events if isinstance(e, VerdictChanged)]
    flaps = [(t, e) for t, e in sim.events if isinstance(e, FlapChanged)]
    # poke 0 answered (up), poke at 5.005 lost (down at its give-up 6.005), 16.010 answered (up),
    # 21.010 lost (down at 22.010: 1000 * 2^(-16/60 + ...) + 2 changes >= 2000: flapping)
    assert verdicts[:3] == [(5, "up"), (6005, "down"), (16010, "up")]
    assert [(round(t * 1000), e.flapping, e.verdict) for t, e in flaps][0] == (22010, True, "down")
    t_start = flaps[0][0]
    assert len(flaps) == 2
    t_settle, settle = flaps[1]
    assert (settle.flapping, settle.verdict) == (False, "up")
    assert settle.penalty < 750
    # the result before the settling still had a penalty of at least 750: reported at the first
    # result after the crossing, not later
    results = [t for t, e in sim.events if isinstance(e, QualifyResult) and t < t_settle]
    before = settle.penalty * 2 ** ((t_settle - results[-1]) / 60)
    assert before >= 750
    # nothing between the start and the settling; the chan_sip transitions all there
    assert not [t for t, e in sim.events if isinstance(e, VerdictChanged) and t_start <= t <= t_settle]
    assert [c[1] for c in sim.changes("p")][:7] == ["OK", "UNREACHABLE", "OK", "UNREACHABLE", "OK",
                                                     "UNREACHABLE", "OK"]
    # once settled, a change is reported again; the decayed penalty is forgotten in time
    p = sim.engine.peer("p")
    assert p is not None and not p.verdict.flapping
    sim.run_until(2000.0)
    assert p.verdict.flap is None


def test_pending_counts_are_no_flaps() -> None:
    """With down_after=3, single losses only make the verdict pending: never a change, no penalty."""
    cfg = peer("p", A[1], 500, freq_s=5, down_after=3, **DAMPED)
    sim = build([cfg], {A: script(200, None, 200, None, 200, None, 200)})
    sim.run_until(120.0)
    p = sim.engine.peer("p")
    assert p is not None and p.verdict.flap is None
    assert [e.new for _, e in sim.events if isinstance(e, VerdictChanged)] == [
        "up", "pending", "up", "pending", "up", "pending", "up"]
