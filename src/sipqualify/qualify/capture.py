"""The last OPTIONS exchange of a peer somebody is looking at, captured on demand, sans-I/O.

A million peers cannot each keep their last request and response (1-2 KiB more per peer), and
nobody reads them all: the peer page asks to *watch* a peer (`watch`), and only then does the
engine keep that peer's next exchange, as sent and as received. On the hot path an unwatched
peer costs one truthiness test of `watched` (empty: nobody watches) and, while somebody watches
anyone, one dict lookup (`wants`). At most `max_watched` peers are watched at a time, each until
`watch_s` after the last `watch` for it; then its exchange is forgotten.

Times are the engine's (monotonic) `now`; the shell turns them into wall-clock times.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..addr import Addr

MAX_WATCHED = 100  # peers watched at once (each keeps at most one request and one response)
WATCH_S = 900.0  # a peer is watched this long after the last request to watch it


class CaptureFull(Exception):
    """`max_watched` peers are already watched."""


@dataclass(slots=True)
class Sent:
    time: float
    dest: Addr
    data: bytes


@dataclass(slots=True)
class Received:
    time: float
    source: Addr
    status: int
    data: bytes


@dataclass(slots=True)
class Exchange:
    """One poke's first transmission, how many times it went out, and the last response to it
    that was not a retransmission (a 100 Trying is replaced by the final answer)."""

    branch: str
    request: Sent
    transmissions: int = 1
    response: Received | None = None


class Capture:
    def __init__(self, max_watched: int = MAX_WATCHED, watch_s: float = WATCH_S) -> None:
        self.max_watched = max_watched
        self.watch_s = watch_s
        self.watched: dict[str, float] = {}  # peer -> watched until (engine time)
        self._last: dict[str, Exchange] = {}

    def watch(self, name: str, now: float) -> float:
        """Start or extend watching `name`: until `now + watch_s`, returned. CaptureFull when
        `max_watched` other peers are watched."""
        self._expire(now)
        if name not in self.watched and len(self.watched) >= self.max_watched:
            raise CaptureFull(f"{self.max_watched} peers are watched already")
        until = self.watched[name] = now + self.watch_s
        return until

    def wants(self, name: str, now: float) -> bool:
        until = self.watched.get(name)
        if until is None:
            return False
        if until > now:
            return True
        self._forget(name)
        return False

    def until(self, name: str, now: float) -> float | None:
        return self.watched[name] if self.wants(name, now) else None

    def exchange(self, name: str, now: float) -> Exchange | None:
        return self._last.get(name) if self.wants(name, now) else None

    def sent(self, name: str, branch: str, data: bytes, dest: Addr, now: float) -> None:
        """A poke's first transmission (its authenticated retry is a new poke: it replaces it)."""
        self._last[name] = Exchange(branch, Sent(now, dest, data))

    def retransmitted(self, name: str, branch: str) -> None:
        x = self._last.get(name)
        if x is not None and x.branch == branch:
            x.transmissions += 1

    def received(self, name: str, branch: str, data: bytes, source: Addr, status: int, now: float) -> None:
        x = self._last.get(name)
        if x is not None and x.branch == branch:
            x.response = Received(now, source, status, data)

    def forget(self, name: str) -> None:
        """A peer removed (reload): nothing of it is kept."""
        self._forget(name)

    def _forget(self, name: str) -> None:
        self.watched.pop(name, None)
        self._last.pop(name, None)

    def _expire(self, now: float) -> None:
        for name, until in list(self.watched.items()):
            if until <= now:
                self._forget(name)
