"""The liveness watchdog: the engine checks that it keeps qualifying every peer.

FreeSWITCH's pings have silently stopped for years (#2489), OpenSIPS once stopped probing a
destination (#233): a monitor must notice when it itself stops. Two checks, no state per peer:

* **Lateness**, at each poke: a poke that runs later than the peer's interval after it was due
  (a stalled scheduler, an overloaded loop) is an alarm (`PokeOverdue`), counted. Between
  pokes, `lag` is how far behind the scheduler is now: the age of the earliest due timer
  (a timer the shell forgot to arm shows here too). The shell fails `/readyz` while it is large.
* **Lost pokes**, by a sampled sweep (`Watchdog.check`, a slice of the peers per call, round
  robin, so a full sweep of a million peers costs nothing noticeable at any one time): a
  qualified peer with an address that has had no result for longer than `stale_bound_s`
  (twice its interval plus its give-up time, from its last result or the end of the start-up
  stagger) has lost its poke, or its poke sits at a wrong time: it is re-armed now, counted and
  reported (`PokeRepaired`). While the scheduler is behind, late peers are late, not lost: the
  sweep repairs nothing then.

Nothing here changes a timeline that works: the checks only read, and re-arm what is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol, TypeVar

from ..addr import Addr
from ..model import PeerConfig
from .events import PokeOverdue, PokeRepaired


class Peer(Protocol):  # what the watchdog reads of qualify/engine.py's Peer (no import cycle)
    name: str
    cfg: PeerConfig
    maxms: int
    dest: Addr | None
    removed: bool
    last_qualify: float | None


P = TypeVar("P", bound=Peer)


class QualifyEngine(Protocol[P]):
    def __len__(self) -> int: ...
    def peers(self) -> Iterator[P]: ...
    def get_timer(self) -> float | None: ...
    def giveup_s(self, p: P) -> float: ...
    def rearm(self, p: P, now: float) -> None: ...
    def backlog_s(self, now: float) -> float: ...

REPOLL_S = 10.0  # chan_sip's re-poll after a LAGGED answer or a give-up: the longest interval but qualifyfreq
GRACE_S = 5.0
SWEEP_MIN = 1000  # peers looked at per check, at least
SWEEP_ROUNDS = 30  # ... or this share of them: a full sweep in about 30 checks
STALE_FLOOR_S = 2.0 * REPOLL_S + GRACE_S  # no peer's stale bound is below this (see stale_bound_s)


def interval_s(cfg: PeerConfig) -> float:
    """The longest a peer waits between pokes as configured."""
    return max(cfg.qualifyfreq_ms / 1000.0, REPOLL_S)


def stale_bound_s(cfg: PeerConfig, giveup_s: float) -> float:
    """No result for this long means the peer is not being qualified."""
    return 2.0 * interval_s(cfg) + giveup_s + GRACE_S


@dataclass(slots=True)
class WatchdogStats:
    overdue_pokes: int = 0  # pokes that ran later than their peer's interval after they were due
    repairs: int = 0  # qualified peers found without a working poke, re-armed
    overdue_peers: int = 0  # peers found stale by the last complete sweep
    lag_s: float = 0.0  # how late the earliest due timer was at the last check
    sweeps: int = 0  # complete sweeps
    deferred_pokes: int = 0  # pokes the rate cap deferred (qualify/ratecap.py)
    last_defer_s: float = 0.0  # how long the last of them was deferred


class Watchdog:
    def __init__(self) -> None:
        self.stats = WatchdogStats()
        self.stagger_end = 0.0  # first pokes after a (re)load are due until then
        self._cursor: Iterator[Any] | None = None
        self._found = 0  # stale peers in the sweep under way

    def poke_ran(self, p: Peer, due: float, now: float) -> PokeOverdue | None:
        lag = now - due
        if lag > interval_s(p.cfg):
            self.stats.overdue_pokes += 1
            return PokeOverdue(p.name, lag, now)
        return None

    def reloaded(self, stagger_end: float) -> None:
        self.stagger_end = stagger_end
        self._cursor = None
        self._found = 0

    def check(self, engine: QualifyEngine[P], now: float, behind_s: float = 5.0) -> list[PokeRepaired]:
        """One slice of the sweep, and the scheduler's lag. Repairs only while the scheduler
        is within `behind_s` of now."""
        s = self.stats
        due = engine.get_timer()
        s.lag_s = max(0.0, now - due) if due is not None else 0.0
        n = len(engine)
        budget = min(max(SWEEP_MIN, n // SWEEP_ROUNDS), n)
        repaired: list[PokeRepaired] = []
        if self._cursor is None:
            self._cursor = engine.peers()
        start, floor = self.stagger_end, STALE_FLOOR_S
        looked = 0
        try:
            for p in islice(self._cursor, budget):
                looked += 1
                # most peers answered within the floor, which no peer's bound is below: nothing
                # more is read of them (a million peers' sweep is a slice per second)
                last = p.last_qualify
                silent = now - (last if last is not None and last > start else start)
                if silent <= floor or p.maxms <= 0 or p.dest is None or p.removed:
                    continue
                if silent <= stale_bound_s(p.cfg, engine.giveup_s(p)):
                    continue
                self._found += 1
                if s.lag_s <= behind_s and engine.backlog_s(now) <= behind_s:  # late (or deferred) is not lost
                    engine.rearm(p, now)
                    s.repairs += 1
                    repaired.append(PokeRepaired(p.name, silent, now))
        except RuntimeError:  # the peer set changed under the sweep: it starts again
            looked = -1
        if looked < budget:  # the end of a sweep (or a changed peer set)
            s.overdue_peers, self._found = self._found, 0
            s.sweeps += 1
            self._cursor = engine.peers()
        return repaired
