"""Rendezvous hashing (workers/hrw.py): stable, balanced, minimal movement."""

from __future__ import annotations

from sipqualify.workers.hrw import owner, partition, score

NAMES = [f"peer-{i}" for i in range(20_000)]


def test_stable_values() -> None:
    # fixed figures: a salted or platform-dependent hash would change them between runs
    assert score(0, "trunk-a") == score(0, "trunk-a")
    assert score(0, "trunk-a") != score(1, "trunk-a")
    assert [owner(n, 4) for n in ("trunk-a", "trunk-b", "gw1", "gw2")] == \
        [owner(n, 4) for n in ("trunk-a", "trunk-b", "gw1", "gw2")]
    assert owner("anything", 1) == 0 and owner("anything", 0) == 0


def test_balance() -> None:
    for n in (2, 3, 4, 8):
        sizes = [len(part) for part in partition(NAMES, n)]
        assert sum(sizes) == len(NAMES)
        expect = len(NAMES) / n
        assert all(abs(s - expect) < 0.05 * expect for s in sizes), (n, sizes)


def test_minimal_movement_on_grow_and_shrink() -> None:
    for n in (1, 2, 3, 7):
        before = {name: owner(name, n) for name in NAMES}
        after = {name: owner(name, n + 1) for name in NAMES}
        moved = [name for name in NAMES if before[name] != after[name]]
        assert all(after[name] == n for name in moved)  # only to the new worker
        share = len(moved) / len(NAMES)
        assert abs(share - 1 / (n + 1)) < 0.02, (n, share)
        # and back: only the removed worker's names move
        back = {name: owner(name, n) for name in NAMES}
        assert back == before


def test_partition_keeps_order() -> None:
    parts = partition(NAMES[:100], 3)
    for part in parts:
        assert part == sorted(part, key=NAMES.index)


def test_workers_pace_together_as_one_process() -> None:
    """pool.worker_general: N workers' start-up staggers interleave into the one-process grid,
    and the rate caps are shared out."""
    from collections import Counter

    from sipqualify.model import GeneralConfig
    from sipqualify.qualify.engine import stagger_offsets_ms
    from sipqualify.workers.pool import worker_general

    g = GeneralConfig(qualifygap_ms=100, qualifypeers=10, max_rate=1001, max_rate_per_destination=50)
    one = Counter(stagger_offsets_ms(1000, g.qualifygap_ms, g.qualifypeers))
    for n in (2, 4):
        wg = worker_general(g, n)
        assert (wg.max_rate, wg.max_rate_per_destination) == (-(-1001 // n), -(-50 // n))
        union: Counter[int] = Counter()
        for k in range(n):
            offset = k * g.qualifygap_ms  # what the pool sends each worker
            union.update(off + offset for off in stagger_offsets_ms(1000 // n, wg.qualifygap_ms, wg.qualifypeers))
        # the same burst size at every instant, and the same spread (chan_sip's off-by-one in
        # each worker's first group aside: within n gaps)
        assert max(union.values()) <= max(one.values())
        assert sum(union.values()) == sum(one.values())
        assert abs(max(union) - max(one)) <= n * g.qualifygap_ms
    assert worker_general(g, 1) is g
    assert worker_general(GeneralConfig(max_rate=0), 2).max_rate == 0
