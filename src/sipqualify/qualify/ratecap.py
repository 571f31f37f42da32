"""Load hygiene: interval jitter and a global OPTIONS rate cap with per-destination spreading.

2,000 phones behind one SBC, all poked on the same second, look like a flood to it (dSIPRouter
#696): its protection blocks the monitor, and every phone goes "down" at once. Two opt-in
remedies, both off by default (chan_sip's timing, byte for byte):

* `jitter` (a fraction, e.g. 0.1): each re-poll delay is stretched or shrunk by up to that share,
  so peers loaded together drift apart instead of staying in lock-step. The factor is derived
  from the peer's name and its result count (a hash, no random state): reproducible.
* `max_rate` (pokes per second, all peers) and `max_rate_per_destination` (per destination IP
  address): a poke due when its second is full is deferred to the next free slot, spread evenly
  over that second (slot `i` of a second with room for `n` is at `i / n`). A deferred poke keeps
  its reservation: it is sent when its slot comes. Retransmissions, forced pokes and the poke
  after a REGISTER (or a new address) go at once and are not counted. Deferral is lateness, never a state: the
  peer's state only changes by its own answers.

Capacity is kept per one-second window (the window's start, an int) in dicts that only hold
windows with reservations, pruned as time passes.
"""

from __future__ import annotations

import zlib


def jitter_factor(name: str, count: int, jitter: float) -> float:
    """1 +- up to `jitter`, from the peer's name and its result count."""
    h = zlib.crc32(f"{name}:{count}".encode())
    return 1.0 + jitter * (h / 2147483648.0 - 1.0)  # h in [0, 2^32): [-1, 1)


class RateCap:
    def __init__(self, max_rate: int, per_destination: int) -> None:
        self.max_rate = max_rate  # 0: no global cap
        self.per_destination = per_destination  # 0: no cap per destination
        self._global: dict[int, int] = {}  # window -> pokes reserved in it
        self._dest: dict[tuple[str, int], int] = {}  # (ip, window) -> pokes reserved
        self._pruned = 0
        self.horizon = 0.0  # the latest reserved slot
        self.deferred = 0  # pokes deferred
        self.last_defer_s = 0.0  # how long the last deferred poke was deferred

    def admit(self, ip: str, now: float) -> float:
        """Reserve a slot for a poke to `ip` due at `now`: `now` when there is room, else the
        next free slot (later)."""
        w = int(now)
        if w > self._pruned:
            self._prune(w)
        t = now
        g, d = self.max_rate, self.per_destination
        while True:
            w = int(t)
            ng = self._global.get(w, 0)
            nd = self._dest.get((ip, w), 0)
            if (not g or ng < g) and (not d or nd < d):
                break
            t = float(w + 1)  # this second is full: the next one
        if t > now:  # spread over the second, not all at its start
            slot = max(ng / g if g else 0.0, nd / d if d else 0.0)
            t = max(t, w + slot)
            self.deferred += 1
            self.last_defer_s = t - now
        if g:
            self._global[w] = ng + 1
        if d:
            self._dest[(ip, w)] = nd + 1
        if t > self.horizon:
            self.horizon = t
        return t

    def backlog_s(self, now: float) -> float:
        return max(0.0, self.horizon - now)

    def _prune(self, w: int) -> None:
        self._pruned = w
        if self._global:
            for k in [k for k in self._global if k < w]:
                del self._global[k]
        if self._dest:
            for dk in [dk for dk in self._dest if dk[1] < w]:
                del self._dest[dk]
