"""Rendezvous (highest random weight) hashing: which worker owns a peer.

Pure and stable across processes, runs and Python versions (no `hash()`, which is salted per
process): the score of (worker, name) is the first 8 bytes of BLAKE2b over both, and the worker
with the highest score owns the name. Properties the tests hold it to (tests/workers/test_hrw.py):

* balance: with many names every worker gets close to 1/N of them;
* minimal movement: going from N to N+1 workers moves only the names the new worker wins
  (about 1/(N+1) of them), and no name moves between two old workers; from N+1 back to N only
  the removed worker's names move.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b


def score(worker: int, name: str) -> int:
    return int.from_bytes(blake2b(name.encode(), digest_size=8, key=worker.to_bytes(4, "big")).digest(), "big")


def owner(name: str, workers: int) -> int:
    """The worker (0 .. workers-1) that owns `name`."""
    if workers <= 1:
        return 0
    best, best_score = 0, -1
    for w in range(workers):
        s = score(w, name)
        if s > best_score:
            best, best_score = w, s
    return best


def partition(names: Iterable[str], workers: int) -> list[list[str]]:
    """`names` split by owner: one list per worker, in the order given."""
    out: list[list[str]] = [[] for _ in range(max(1, workers))]
    for name in names:
        out[owner(name, workers)].append(name)
    return out
