"""Latency statistics per peer, computed incrementally (O(1) per result, no history scans).

Fed by the engine with every result of a qualified peer (the RTT of an answer, or a loss):

* ``avg`` / ``std``: Kamailio dispatcher's AVG and STD (dispatch.c `latency_stats_update`):
  the running mean and standard deviation of every answered RTT, by Welford's online
  algorithm (``avg += d / n``; ``m2 += d * (x - avg)``; ``std = sqrt(m2 / (n - 1))``).
* ``est``: Kamailio's EST, an exponentially weighted moving average: the mean for the first
  10 samples, then ``est = est * alpha + x * (1 - alpha)`` with Kamailio's default alpha 0.9
  (`ds_latency_estimator_alpha` = 900).
* ``dev``: the EWMA's mean deviation, ``dev = dev * alpha + |x - est| * (1 - alpha)`` (what
  RFC 6298 keeps as RTTVAR for TCP), so a latency change is judged against its usual spread.
* ``jitter``: RFC 3550 §6.4.1's interarrival jitter applied to successive RTTs,
  ``J += (|D| - J) / 16`` where D is the difference of two successive RTTs.
* ``loss``: the share of the last ``WINDOW`` polls that went unanswered (a bit ring in one int).

A timeout feeds only the loss window (Kamailio: a 408 counts a timeout, never a latency).
"""

from __future__ import annotations

import math

ALPHA = 0.9  # Kamailio ds_latency_estimator_alpha default (900 / 1000)
EST_WARMUP = 10  # Kamailio: EST is the mean until this many samples
WINDOW = 100  # polls in the loss window
_MASK = (1 << WINDOW) - 1


class LatencyStats:
    """One peer's statistics; all times in seconds."""

    __slots__ = ("count", "avg", "m2", "est", "dev", "jitter", "last", "window", "polls", "reported")

    def __init__(self) -> None:
        self.count = 0  # answered RTTs seen
        self.avg = 0.0
        self.m2 = 0.0
        self.est = 0.0
        self.dev = 0.0
        self.jitter = 0.0
        self.last: float | None = None  # the previous RTT (jitter)
        self.window = 0  # bit i set: the i-th latest poll was lost
        self.polls = 0  # polls seen (the window holds min(polls, WINDOW) of them)
        self.reported: float | None = None  # EST at the last latency-change event

    def answered(self, rtt: float) -> None:
        self.window = (self.window << 1) & _MASK
        self.polls += 1
        n = self.count = self.count + 1
        d = rtt - self.avg
        self.avg += d / n
        self.m2 += d * (rtt - self.avg)
        if n <= EST_WARMUP:
            self.est = self.avg
        else:
            self.est = self.est * ALPHA + rtt * (1.0 - ALPHA)
        self.dev = self.dev * ALPHA + abs(rtt - self.est) * (1.0 - ALPHA)
        last = self.last
        if last is not None:
            self.jitter += (abs(rtt - last) - self.jitter) / 16.0
        self.last = rtt

    def lost(self) -> None:
        self.window = ((self.window << 1) | 1) & _MASK
        self.polls += 1

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0

    @property
    def loss_pct(self) -> float:
        """Lost polls among the last WINDOW (or fewer, at the start), in percent."""
        seen = min(self.polls, WINDOW)
        return 100.0 * self.window.bit_count() / seen if seen else 0.0

    def latency_changed(self, delta_s: float) -> bool:
        """True (once) when EST moved more than `delta_s` from where the last change was
        reported (or from the first EST after the warm-up). Off when `delta_s` is 0."""
        if not delta_s or self.count < EST_WARMUP:
            return False
        if self.reported is None:
            self.reported = self.est
            return False
        if abs(self.est - self.reported) > delta_s:
            self.reported = self.est
            return True
        return False

    def to_json(self) -> dict[str, float | int | None]:
        """Milliseconds, as the API shows them (None before the first answer)."""
        def ms(v: float) -> float | None:
            return round(v * 1000.0, 3) if self.count else None

        return {
            "samples": self.count,
            "polls": self.polls,
            "avg_ms": ms(self.avg),
            "std_ms": ms(self.std),
            "est_ms": ms(self.est),
            "dev_ms": ms(self.dev),
            "jitter_ms": ms(self.jitter),
            "loss_pct": round(self.loss_pct, 2),
            "loss_window": min(self.polls, WINDOW),
        }
