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
import struct
from collections.abc import Callable
from typing import Final

from ..sip import CSIP

ALPHA = 0.9  # Kamailio ds_latency_estimator_alpha default (900 / 1000)
EST_WARMUP = 10  # Kamailio: EST is the mean until this many samples
WINDOW = 100  # polls in the loss window
_MASK = (1 << WINDOW) - 1


# A LatencyStats keeps its nine figures packed in one bytes object (105 B) instead of ten slots
# holding boxed floats and ints (112 B + 24 B per float + 28 B per int past 256): a million peers
# keep these. One unpack and one pack per result (the figures are all read and written then);
# last and reported hold NaN for None.
_FIGURES = struct.Struct("=7d2q")  # avg, m2, est, dev, jitter, last, reported, count, polls
_pack, _unpack = _FIGURES.pack, _FIGURES.unpack
_AVG, _M2, _EST, _DEV, _JITTER, _LAST, _REPORTED, _COUNT, _POLLS = range(9)
_NAN = float("nan")
_INITIAL = _pack(0.0, 0.0, 0.0, 0.0, 0.0, _NAN, _NAN, 0, 0)
#: every attribute of one peer's statistics (workers/wire.py carries them all, as `state()`)
FIELDS = ("count", "avg", "m2", "est", "dev", "jitter", "last", "window", "polls", "reported")

State = tuple[bytes, int]


def _answered(b: bytes, rtt: float) -> bytes:
    """The packed figures `b` after one more answer of `rtt` s. The reference of sip/_speedups.c
    answered, which ANSWERED is where it is built (the same arithmetic, bit for bit)."""
    # declared: unpack() gives Any, and compiled (mypyc) the arithmetic is then on C doubles
    avg: float
    m2: float
    est: float
    dev: float
    jitter: float
    last: float
    reported: float
    n: int
    polls: int
    avg, m2, est, dev, jitter, last, reported, n, polls = _unpack(b)
    n += 1
    d = rtt - avg
    avg += d / n
    m2 += d * (rtt - avg)
    if n <= EST_WARMUP:
        est = avg
    else:
        est = est * ALPHA + rtt * (1.0 - ALPHA)
    dev = dev * ALPHA + abs(rtt - est) * (1.0 - ALPHA)
    if last == last:  # not NaN: a previous RTT
        jitter += (abs(rtt - last) - jitter) / 16.0
    return _pack(avg, m2, est, dev, jitter, rtt, reported, n, polls + 1)


ANSWERED_C: Callable[[bytes, float], bytes] | None
try:  # the same in C (sip/_speedups.c), built with the compiled modules (setup.py)
    from ..sip._speedups import answered as _answered_c
    ANSWERED_C = _answered_c
except ImportError:
    ANSWERED_C = None
ANSWERED: Final = ANSWERED_C if ANSWERED_C is not None and CSIP else _answered


def _float_or_none(x: float) -> float | None:
    return None if x != x else x


class LatencyStats:
    """One peer's statistics; all times in seconds. The figures read and write as attributes
    (count, avg, m2, est, dev, jitter, last, polls, reported); the bit window of losses is a
    Python int (0, shared, while nothing is lost)."""

    __slots__ = ("_b", "window")

    def __init__(self) -> None:
        self._b = _INITIAL
        self.window = 0  # bit i set: the i-th latest poll was lost

    def state(self) -> State:
        """Everything, to be given to another LatencyStats' set_state (workers/wire.py)."""
        return self._b, self.window

    def set_state(self, state: State) -> None:
        b, window = state
        _unpack(b)  # ValueError unless nine figures
        self._b, self.window = b, window

    def _set(self, i: int, value: float | int) -> None:
        figures = list(_unpack(self._b))
        figures[i] = value
        self._b = _pack(*figures)

    @property
    def count(self) -> int:  # answered RTTs seen
        return int(_unpack(self._b)[_COUNT])

    @count.setter
    def count(self, value: int) -> None:
        self._set(_COUNT, value)

    @property
    def polls(self) -> int:  # polls seen (the window holds min(polls, WINDOW) of them)
        return int(_unpack(self._b)[_POLLS])

    @polls.setter
    def polls(self, value: int) -> None:
        self._set(_POLLS, value)

    @property
    def avg(self) -> float:
        return float(_unpack(self._b)[_AVG])

    @avg.setter
    def avg(self, value: float) -> None:
        self._set(_AVG, value)

    @property
    def m2(self) -> float:
        return float(_unpack(self._b)[_M2])

    @m2.setter
    def m2(self, value: float) -> None:
        self._set(_M2, value)

    @property
    def est(self) -> float:
        return float(_unpack(self._b)[_EST])

    @est.setter
    def est(self, value: float) -> None:
        self._set(_EST, value)

    @property
    def dev(self) -> float:
        return float(_unpack(self._b)[_DEV])

    @dev.setter
    def dev(self, value: float) -> None:
        self._set(_DEV, value)

    @property
    def jitter(self) -> float:
        return float(_unpack(self._b)[_JITTER])

    @jitter.setter
    def jitter(self, value: float) -> None:
        self._set(_JITTER, value)

    @property
    def last(self) -> float | None:  # the previous RTT (jitter)
        return _float_or_none(_unpack(self._b)[_LAST])

    @last.setter
    def last(self, value: float | None) -> None:
        self._set(_LAST, _NAN if value is None else value)

    @property
    def reported(self) -> float | None:  # EST at the last latency-change event
        return _float_or_none(_unpack(self._b)[_REPORTED])

    @reported.setter
    def reported(self, value: float | None) -> None:
        self._set(_REPORTED, _NAN if value is None else value)

    def answered(self, rtt: float) -> None:
        self.window = (self.window << 1) & _MASK
        self._b = ANSWERED(self._b, rtt)

    def lost(self) -> None:
        self.window = ((self.window << 1) | 1) & _MASK
        self._set(_POLLS, _unpack(self._b)[_POLLS] + 1)

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
        reported, est = self.reported, self.est
        if reported is None:
            self.reported = est
            return False
        if abs(est - reported) > delta_s:
            self.reported = est
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
