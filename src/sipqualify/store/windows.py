"""Statistics over time windows, from what the store keeps (issue 13 item 6): RTT percentiles
over the samples of the last 5 min / 1 h / 24 h, and uptime over the last 24 h / 7 d / 30 d.
The exact definitions are here (nearest rank; observed and reachable time from the state
timeline); the store computes them from its incremental rollups (store/rollup.py) plus the raw
rows of the windows' partial edge buckets, done when asked (`GET /api/v1/peers/NAME/stats`).
Pure functions here; the reads are `Store.windows` and `Store.uptime_window`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 95, 99)
RTT_WINDOWS = (("5m", 300.0), ("1h", 3600.0), ("24h", 86400.0))
UPTIME_WINDOWS = (("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0))
REACHABLE = frozenset(("OK", "LAGGED"))  # chan_sip: the peer answered
UNOBSERVED = frozenset(("UNKNOWN", "UNMONITORED"))  # nothing known: not counted either way


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ascending values (None when there are none)."""
    n = len(sorted_values)
    if not n:
        return None
    return sorted_values[max(0, math.ceil(q / 100.0 * n) - 1)]


def uptime(start_state: str | None, changes: Sequence[tuple[float, str]], since: float,
           until: float) -> tuple[float | None, float]:
    """(uptime %, seconds observed) over [since, until]: the share of the observed time the peer
    was reachable (OK or LAGGED). `start_state` is the state at `since` (None: nothing recorded
    before, so the window starts at the first change); `changes` are (time, new state) in time
    order within the window. Time in UNKNOWN or UNMONITORED is not observed."""
    up, seen = uptime_seconds(start_state, changes, since, until)
    return (100.0 * up / seen if seen > 0 else None), seen


def uptime_seconds(start_state: str | None, changes: Sequence[tuple[float, str]], since: float,
                   until: float) -> tuple[float, float]:
    """(seconds up, seconds observed) over [since, until], as `uptime` counts them."""
    up = seen = 0.0
    state, t = start_state, since
    for when, new in changes:
        if state is not None and state not in UNOBSERVED:
            seen += when - t
            if state in REACHABLE:
                up += when - t
        state, t = new, when
    if state is not None and state not in UNOBSERVED and until > t:
        seen += until - t
        if state in REACHABLE:
            up += until - t
    return up, seen
