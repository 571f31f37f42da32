"""Incremental rollups behind the time-window statistics (issue 13 item 6), backend-neutral.

The store's writer keeps two small tables up to date in the same transaction as the rows they
summarise, so `GET /api/v1/peers/NAME/stats` merges a few hundred summary rows instead of
reading every sample of the last 24 h:

- **RTT rollup**: per peer and per 5-minute bucket (`RTT_BUCKET_S`, aligned on the UNIX epoch),
  the number of samples, how many were answered, the smallest and largest answered RTT and a
  log-scaled histogram of the answered RTTs. Bins are 5 % wide (`RATIO`) from 0.1 ms to 60 s
  (273 bins, plus one below and one above); only the non-empty ones are stored, 6 bytes each
  (`encode`). A percentile read from a histogram is the geometric middle of the bin holding
  the nearest-rank sample, clamped to the smallest/largest RTT seen: for RTTs in
  [0.1 ms, 60 s] it is within `REL_ERROR` (sqrt(1.05) - 1 = 2.47 %) of the exact nearest-rank
  percentile of the same samples (`tests/store/test_rollup.py` checks it on random data).
  Below 0.1 ms the error is at most 0.1 ms; above 60 s the largest RTT is reported.
- **Uptime rollup**: per peer and per hour (`UPTIME_BUCKET_S`), the seconds observed and the
  seconds up (OK or LAGGED) of every state interval closed by a transition, split at hour
  boundaries (`split_interval`), credited when the closing transition is written.

Nothing here touches a database: bucketing, histogram encoding and merging, percentiles and
interval splitting are pure functions, shared by the SQLite store (store/sqlite.py) and any
other backend that mirrors its tables.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from .windows import REACHABLE, UNOBSERVED

RTT_BUCKET_S = 300  # 5 min: the RTT rollup's bucket (and the longest raw read of a window edge)
UPTIME_BUCKET_S = 3600  # 1 h: the uptime rollup's bucket
UPTIME_KEEP_S = 31 * 86400  # the longest uptime window (30 d) and a day of margin

LOW_MS = 0.1  # the lower edge of the first regular bin
HIGH_MS = 60_000.0  # the upper edge of the last regular bin
RATIO = 1.05  # each bin is 5 % wider than the one before
_LOG_RATIO = math.log(RATIO)
TOP = math.ceil(math.log(HIGH_MS / LOW_MS) / _LOG_RATIO) + 1  # the overflow bin (>= HIGH_MS): 274
REL_ERROR = math.sqrt(RATIO) - 1.0  # the bound on a percentile's relative error within [LOW_MS, HIGH_MS]

Histogram = dict[int, int]  # bin -> count


def bin_of(rtt_ms: float) -> int:
    """The bin of an RTT: 0 below LOW_MS, i in 1..TOP-1 for [LOW_MS * RATIO**(i-1), LOW_MS * RATIO**i),
    TOP from HIGH_MS up."""
    if rtt_ms < LOW_MS:
        return 0
    if rtt_ms >= HIGH_MS:
        return TOP
    i = int(math.log(rtt_ms / LOW_MS) / _LOG_RATIO) + 1
    return min(i, TOP - 1)


def bin_bounds(i: int) -> tuple[float, float]:
    """[low, high) of bin `i` (0 and TOP are open-ended: 0 and infinity)."""
    if i <= 0:
        return 0.0, LOW_MS
    if i >= TOP:
        return HIGH_MS, math.inf
    return LOW_MS * RATIO ** (i - 1), min(LOW_MS * RATIO**i, HIGH_MS)


def representative(i: int) -> float:
    """The value a bin stands for: its geometric middle (the arithmetic one for bin 0)."""
    low, high = bin_bounds(i)
    if i <= 0:
        return LOW_MS / 2
    if i >= TOP:
        return math.inf  # clamped to the largest RTT seen
    return math.sqrt(low * high)


def _layout(n: int) -> struct.Struct:
    """n bins then n counts, little-endian: 2 + 4 bytes a bin."""
    st = _LAYOUTS.get(n)
    if st is None:
        st = _LAYOUTS[n] = struct.Struct(f"<{n}H{n}I")
    return st


_LAYOUTS: dict[int, struct.Struct] = {}
_SINGLE = [_layout(1).pack(i, 1) for i in range(TOP + 1)]  # one sample in bin i


def encode(hist: Mapping[int, int]) -> bytes:
    """Non-empty bins in bin order: their numbers (uint16), then their counts (uint32)."""
    bins = sorted(i for i, c in hist.items() if c > 0)
    return _layout(len(bins)).pack(*bins, *(hist[i] for i in bins))


def decode(blob: bytes | None) -> Histogram:
    if not blob:
        return {}
    n = len(blob) // 6
    v = _layout(n).unpack(blob)
    return dict(zip(v[:n], v[n:], strict=True))


def add_into(into: Histogram, other: Mapping[int, int]) -> Histogram:
    for i, c in other.items():
        into[i] = into.get(i, 0) + c
    return into


def merge_blobs(a: bytes | None, b: bytes | None) -> bytes:
    """Two encoded histograms as one (the database's merge function on upsert)."""
    if not a:
        return bytes(b or b"")
    if not b:
        return bytes(a)
    return encode(add_into(decode(a), decode(b)))


def bucket_of(t: float, width: int) -> int:
    """The start (UNIX seconds) of the bucket holding time `t`. Float floor division is exact, so a
    time is below a bucket boundary exactly when it falls in an earlier bucket."""
    return int(t // width) * width


@dataclass(slots=True)
class RttCell:
    """One (peer, bucket)'s summary, or the merge of several."""

    n: int = 0  # samples, answered or not
    answered: int = 0
    min_ms: float | None = None
    max_ms: float | None = None
    hist: Histogram = field(default_factory=dict)

    def add(self, rtt_ms: float | None) -> None:
        self.n += 1
        if rtt_ms is None or rtt_ms != rtt_ms:  # NaN is stored as NULL: not answered
            return
        self.answered += 1
        i = bin_of(rtt_ms)
        self.hist[i] = self.hist.get(i, 0) + 1
        if self.min_ms is None or rtt_ms < self.min_ms:
            self.min_ms = rtt_ms
        if self.max_ms is None or rtt_ms > self.max_ms:
            self.max_ms = rtt_ms

    def merge(self, n: int, answered: int, min_ms: float | None, max_ms: float | None, hist: Mapping[int, int]) -> None:
        self.n += n
        self.answered += answered
        if min_ms is not None and (self.min_ms is None or min_ms < self.min_ms):
            self.min_ms = min_ms
        if max_ms is not None and (self.max_ms is None or max_ms > self.max_ms):
            self.max_ms = max_ms
        add_into(self.hist, hist)

    def merge_rows(self, rows: Iterable[tuple[int, int, float | None, float | None, bytes]]) -> None:
        """Merge stored rows (n, answered, min_ms, max_ms, encoded histogram): a window's buckets.
        The histograms are summed in one flat list first (cheaper than a dict per row)."""
        acc = [0] * (TOP + 1)
        for n, answered, min_ms, max_ms, blob in rows:
            self.merge(n, answered, min_ms, max_ms, {})
            k = len(blob) // 6
            v = _layout(k).unpack(blob)
            for i, c in zip(v[:k], v[k:], strict=True):
                acc[i] += c
        add_into(self.hist, {i: c for i, c in enumerate(acc) if c})

    def percentile(self, q: float) -> float | None:
        return hist_percentile(self.hist, q, self.min_ms, self.max_ms)


def hist_percentile(hist: Mapping[int, int], q: float, min_ms: float | None, max_ms: float | None) -> float | None:
    """The nearest-rank `q` percentile (within REL_ERROR) of the values counted in `hist`, whose
    smallest and largest are `min_ms` and `max_ms` (None: no values)."""
    total = sum(hist.values())
    if not total or min_ms is None or max_ms is None:
        return None
    rank = max(1, math.ceil(q / 100.0 * total))  # 1-based, as store/windows.percentile
    seen = 0
    for i in sorted(hist):
        seen += hist[i]
        if seen >= rank:
            return min(max(representative(i), min_ms), max_ms)
    return max_ms  # unreachable: seen reaches total >= rank


RollupRow = tuple[str, int, int, int, float | None, float | None, bytes]  # peer, bucket, n, answered, min, max, hist


def rollup_rows(rows: Iterable[tuple[object, ...]]) -> list[RollupRow]:
    """Sample rows (peer, time, rtt_ms, ...) summarised per (peer, 5-minute bucket), one row each:
    (peer, bucket, n, answered, min_ms, max_ms, encoded histogram). A row whose peer, time or RTT
    is not of the expected type is left out (the database decides whether it takes the row
    itself; the summary never fails on it). A bucket with one sample (the usual case within one
    batch: a peer is polled every few seconds at most) skips the general cell."""
    groups: dict[tuple[str, int], list[float | None]] = {}
    width = RTT_BUCKET_S
    for row in rows:
        peer, t, rtt = row[0], row[1], row[2]
        if not (peer.__class__ is str and t.__class__ is float and (rtt is None or rtt.__class__ is float)):
            if not (isinstance(peer, str) and _is_real(t) and (rtt is None or _is_real(rtt))):
                continue
        assert isinstance(t, int | float) and isinstance(peer, str) and (rtt is None or isinstance(rtt, int | float))
        if not math.isfinite(t):
            continue
        key = (peer, int(t // width) * width)
        group = groups.get(key)
        if group is None:
            groups[key] = [rtt]
        else:
            group.append(rtt)
    out: list[RollupRow] = []
    for (peer, bucket), rtts in groups.items():
        if len(rtts) == 1:
            r = rtts[0]
            if r is None or r != r:  # NaN is stored as NULL: not answered
                out.append((peer, bucket, 1, 0, None, None, b""))
            else:
                out.append((peer, bucket, 1, 1, r, r, _SINGLE[bin_of(r)]))
            continue
        cell = RttCell()
        for r in rtts:
            cell.add(r)
        out.append((peer, bucket, cell.n, cell.answered, cell.min_ms, cell.max_ms, encode(cell.hist)))
    return out


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def split_interval(start: float, end: float, width: int = UPTIME_BUCKET_S) -> Iterator[tuple[int, float]]:
    """(bucket start, seconds) of [start, end) cut at bucket boundaries."""
    t = start
    while t < end:
        b = bucket_of(t, width)
        stop = min(end, b + width)
        yield b, stop - t
        t = stop


def credit(state: str | None, start: float, end: float) -> Iterator[tuple[int, float, float]]:
    """(hour bucket, seconds up, seconds observed) of `state` held over [start, end): nothing for an
    unobserved state (UNKNOWN, UNMONITORED, None), as store/windows.uptime counts."""
    if state is None or state in UNOBSERVED:
        return
    up = state in REACHABLE
    for b, secs in split_interval(start, end):
        yield b, (secs if up else 0.0), secs
