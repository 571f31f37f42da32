"""Timer queues: the engine's schedule of pokes and of transaction timers (qualify/engine.py).

Entries are `(when, seq, item)`, taken in (when, seq) order. Most timers are armed at a fixed
delay from now (a transaction's first retransmission, a peer's re-poll at its qualifyfreq), so
they come due in the order they are armed: each such delay (by the millisecond, up to `fifos`
of them) has a FIFO queue, an append and a popleft instead of a heap push and a pop of
≈ log2(n) tuple comparisons (20 levels at a million peers), each touching another cache line.
Everything else (a timer due before its queue's last, the start-up stagger, forced pokes, odd
delays) goes to the heap. `first()` merges the heap's top and the queues' heads: the order is
exactly one heap's. Entries are never removed early: the engine skips dead ones when they
come up (lazy deletion), as it did with the heap alone.

`first()` is asked far more often than anything is taken (the shell re-arms its timer after
every batch of answers, ~2 `first()` per transaction at 10,000/s), so its answer is kept until
a `pop`, and a `push` only compares its entry with it.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

UNKNOWN = -3  # the earliest entry is not known: first() looks
NOWHERE = -2  # first(): no entry at all
HEAP = -1  # first(): the heap's top


class TimerQueues(Generic[T]):
    def __init__(self, fifos: int) -> None:
        self.heap: list[tuple[float, int, T]] = []
        self.fifo: dict[int, int] = {}  # delay (ms) -> the index of its queue in `queues`
        self.queues: list[deque[tuple[float, int, T]]] = []  # in creation order
        self.fifos = fifos
        self._best: tuple[float, int, T] | None = None  # first()'s answer while _src != UNKNOWN
        self._src = NOWHERE

    def push(self, entry: tuple[float, int, T], now: float | None = None) -> None:
        """`now`: the entry is due at `now` + a delay that may recur (then it may wait in that
        delay's queue, if due after everything in it); None: the heap."""
        if now is not None:
            when = entry[0]
            delay = round((when - now) * 1000.0)
            i = self.fifo.get(delay, -1)
            if i < 0 and len(self.queues) < self.fifos:
                i = self.fifo[delay] = len(self.queues)
                self.queues.append(deque())
            if i >= 0:
                q = self.queues[i]
                if not q:
                    q.append(entry)
                    self._offer(entry, i)  # the queue's new head
                    return
                if q[-1][0] <= when:
                    q.append(entry)  # behind its queue's head: not the earliest
                    return
        heapq.heappush(self.heap, entry)
        self._offer(entry, HEAP)

    def _offer(self, e: tuple[float, int, T], src: int) -> None:
        """A pushed entry that is now the head of `src`: the earliest if it is before first()'s."""
        if self._src == UNKNOWN:
            return
        best = self._best
        if best is None or e[0] < best[0] or (e[0] == best[0] and e[1] < best[1]):
            self._best, self._src = e, src

    def first(self) -> tuple[tuple[float, int, T] | None, int]:
        """The earliest entry, live or not, and where it is (HEAP, or the index of its queue;
        NOWHERE and None when there is none): what `pop(where)` takes."""
        if self._src != UNKNOWN:
            return self._best, self._src
        heap = self.heap
        best = heap[0] if heap else None
        src = HEAP if heap else NOWHERE
        i = 0
        for q in self.queues:
            if q:
                e = q[0]
                if best is None or e[0] < best[0] or (e[0] == best[0] and e[1] < best[1]):
                    best, src = e, i
            i += 1
        self._best, self._src = best, src
        return best, src

    def pop(self, where: int) -> None:
        if where == HEAP:
            heapq.heappop(self.heap)
        else:
            self.queues[where].popleft()
        self._best, self._src = None, UNKNOWN
