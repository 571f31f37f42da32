"""Latency statistics (qualify/stats.py), incremental, against direct computation (issue 13 item 6)."""

from __future__ import annotations

import random
import statistics

import pytest

from sipqualify.qualify.stats import ALPHA, EST_WARMUP, WINDOW, LatencyStats


def test_avg_and_std_are_the_running_mean_and_sample_deviation() -> None:
    rng = random.Random(7)
    xs = [rng.uniform(0.005, 0.080) for _ in range(500)]
    s = LatencyStats()
    for x in xs:
        s.answered(x)
    assert s.avg == pytest.approx(statistics.fmean(xs), rel=1e-12)
    assert s.std == pytest.approx(statistics.stdev(xs), rel=1e-9)


def test_est_is_the_mean_for_ten_samples_then_kamailios_ewma() -> None:
    xs = [0.010] * EST_WARMUP + [0.110, 0.110]
    s = LatencyStats()
    for x in xs[:EST_WARMUP]:
        s.answered(x)
    assert s.est == pytest.approx(0.010)
    s.answered(xs[EST_WARMUP])
    assert s.est == pytest.approx(0.010 * ALPHA + 0.110 * (1 - ALPHA))  # 0.020
    s.answered(xs[EST_WARMUP + 1])
    assert s.est == pytest.approx(0.020 * ALPHA + 0.110 * (1 - ALPHA))  # 0.029


def test_jitter_is_rfc3550_mean_deviation_of_successive_rtts() -> None:
    s = LatencyStats()
    s.answered(0.020)
    assert s.jitter == 0.0
    s.answered(0.036)  # |D| = 16 ms -> J = 1 ms
    assert s.jitter == pytest.approx(0.001)
    s.answered(0.036)  # |D| = 0 -> J = 1 - 1/16 ms
    assert s.jitter == pytest.approx(0.001 * 15 / 16)


def test_loss_over_the_sliding_window() -> None:
    s = LatencyStats()
    assert s.loss_pct == 0.0
    s.lost()
    s.answered(0.01)
    assert s.loss_pct == 50.0
    for _ in range(WINDOW - 1):
        s.answered(0.01)
    assert s.loss_pct == 0.0  # the loss slid out of the last WINDOW polls
    for i in range(WINDOW):
        s.lost() if i % 5 == 0 else s.answered(0.01)
    assert s.loss_pct == 20.0
    assert s.count == WINDOW * 2 - 20  # a loss is no latency sample


def test_latency_change_once_per_move_beyond_delta() -> None:
    s = LatencyStats()
    for _ in range(EST_WARMUP):
        s.answered(0.010)
        assert not s.latency_changed(0.005)
    fired = []
    for _ in range(30):
        s.answered(0.050)
        fired.append(s.latency_changed(0.005))
    # 10 -> 50 ms: EST 14, 17.6, ... passes 15 ms at the second sample, 20 at the 4th ...
    assert fired[:2] == [False, True] and sum(fired) >= 3
    assert not LatencyStats().latency_changed(0.0)


def test_json_in_milliseconds() -> None:
    s = LatencyStats()
    assert s.to_json()["avg_ms"] is None
    s.answered(0.012)
    s.answered(0.014)
    j = s.to_json()
    assert (j["samples"], j["avg_ms"], j["est_ms"], j["jitter_ms"], j["loss_pct"]) == (2, 13.0, 13.0, 0.125, 0.0)


# ------------------------------------------------------------------ in the engine, on the virtual clock

def test_engine_feeds_stats_and_raises_latency_events() -> None:
    """RTT 10 ms for 12 polls, then 60 ms: with latency_delta=20 the first latency event comes at
    the answer that moves the EWMA (10 -> 15 -> 19.5 -> 23.6 -> 27.2 -> 30.5 ms ...) more than
    20 ms away from the 10 ms it had after the warm-up."""
    from sipqualify.qualify.events import LatencyChanged

    from .sim import answer, build, peer

    A = ("127.0.0.1", 15095)
    polls: list[float] = []

    def respond(req: bytes, t: float) -> list[tuple[float, bytes]]:
        polls.append(t)
        return [(0.010 if len(polls) <= 12 else 0.060, answer(req))]

    sim = build([peer("p", A[1], 2000, freq_s=1, latency_delta_ms=20)], {A: respond})
    sim.run_until(30.0)
    p = sim.engine.peer("p")
    assert p is not None and p.stats is not None
    assert p.stats.count == len(polls) and p.stats.loss_pct == 0.0
    lat = [e for _, e in sim.events if isinstance(e, LatencyChanged)]
    ests = [0.010]
    for _ in range(len(polls) - 12):
        ests.append(ests[-1] * ALPHA + 0.060 * (1 - ALPHA))
    first = next(i for i, e in enumerate(ests) if e - 0.010 > 0.020)
    assert len(lat) >= 1 and lat[0].est == pytest.approx(ests[first]) and lat[0].previous == pytest.approx(0.010)


def test_engine_counts_losses_in_the_window() -> None:
    from .sim import build, peer, silent

    A = ("127.0.0.1", 15096)
    sim = build([peer("p", A[1], 500, freq_s=1)], {A: silent})
    sim.run_until(25.0)
    p = sim.engine.peer("p")
    assert p is not None and p.stats is not None
    assert (p.stats.count, p.stats.loss_pct, p.stats.polls) == (0, 100.0, 3)  # give-ups at 1, 12, 23 s


class _Reference:
    """The statistics as plain Python numbers (LatencyStats kept them so before it packed them in
    one bytes object): the packed figures must be exactly the same, not approximately."""

    def __init__(self) -> None:
        self.count = self.polls = self.window = 0
        self.avg = self.m2 = self.est = self.dev = self.jitter = 0.0
        self.last: float | None = None
        self.reported: float | None = None

    def answered(self, rtt: float) -> None:
        self.window, self.polls = (self.window << 1) & ((1 << WINDOW) - 1), self.polls + 1
        n = self.count = self.count + 1
        d = rtt - self.avg
        self.avg += d / n
        self.m2 += d * (rtt - self.avg)
        self.est = self.avg if n <= EST_WARMUP else self.est * ALPHA + rtt * (1.0 - ALPHA)
        self.dev = self.dev * ALPHA + abs(rtt - self.est) * (1.0 - ALPHA)
        if self.last is not None:
            self.jitter += (abs(rtt - self.last) - self.jitter) / 16.0
        self.last = rtt

    def lost(self) -> None:
        self.window, self.polls = ((self.window << 1) | 1) & ((1 << WINDOW) - 1), self.polls + 1

    def latency_changed(self, delta_s: float) -> bool:
        if not delta_s or self.count < EST_WARMUP:
            return False
        if self.reported is None or abs(self.est - self.reported) > delta_s:
            changed, self.reported = self.reported is not None, self.est
            return changed
        return False


@pytest.mark.parametrize("seed", range(5))
def test_the_packed_figures_are_exactly_the_plain_numbers(seed: int) -> None:
    rng = random.Random(seed)
    s, ref = LatencyStats(), _Reference()
    names = ("count", "polls", "window", "avg", "m2", "est", "dev", "jitter", "last", "reported")
    for _ in range(600):
        if rng.random() < 0.2:
            s.lost()
            ref.lost()
        else:
            rtt = rng.choice((0.0, rng.uniform(0.001, 0.2), rng.uniform(0.5, 3.0)))
            s.answered(rtt)
            ref.answered(rtt)
            assert s.latency_changed(0.02) == ref.latency_changed(0.02)
        assert [getattr(s, n) for n in names] == [getattr(ref, n) for n in names]
        assert type(s.count) is int and type(s.polls) is int
    assert s.to_json()["samples"] == ref.count and s.to_json()["polls"] == ref.polls
    s.last, s.reported = None, None  # set as attributes (workers/wire.py restores them so)
    assert (s.last, s.reported) == (None, None)
