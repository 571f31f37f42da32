#!/usr/bin/env python3
"""The fleet's event stream (cluster/follow.py): how long after node "b" commits a transition
node "a"'s follower has it (LISTEN sipqualify_transitions + transitions_after), and how many
transitions per second one follower reads in a burst.

Prints
- latency from b's commit (its `on_transition_committed`) to a's publish, p50 / p99 / max,
  over `--paced` transitions committed one every `--gap` seconds;
- a burst of `--burst` transitions enqueued at once on b: the time from the first commit to
  the last one published on a, and so the follower's rows/s.

    python bench/bench_fleet_events.py                         # a temp PostgreSQL server (fsync on)
    python bench/bench_fleet_events.py --paced 200 --burst 20000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import run_on_postgres  # noqa: E402

from sipqualify.cluster.follow import FleetFollower  # noqa: E402
from sipqualify.store.base import TransitionRecord  # noqa: E402
from sipqualify.store.postgres import Store  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(url: str, paced: int, gap: float, burst: int) -> None:
    committed: dict[int, float] = {}
    published: dict[int, float] = {}
    b = Store(url, node="b", on_transition_committed=lambda r: committed.__setitem__(r.id, time.monotonic()))
    a = Store(url, node="a")
    await asyncio.to_thread(a.open)
    await asyncio.to_thread(b.open)
    done = asyncio.Event()
    want = [paced]

    def publish(rec: TransitionRecord) -> None:
        published[rec.id] = time.monotonic()
        if len(published) >= want[0]:
            done.set()

    f = FleetFollower(url, a, publish)
    await f.start()
    while not f.connected:
        await asyncio.sleep(0.05)
    t = 1.8e9
    for i in range(paced):
        b.record_transition(f"p{i}", t + i, "OK", "UNREACHABLE", 0, 2000, None)
        await asyncio.sleep(gap)
    await asyncio.wait_for(done.wait(), 60)
    lat = [(published[i] - committed[i]) * 1000 for i in committed if i in published]
    print(f"paced: {len(lat)} transitions, one every {gap * 1000:.0f} ms: commit -> follower "
          f"p50 {statistics.median(lat):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms")

    committed.clear()
    published.clear()
    done.clear()
    want[0] = burst
    for i in range(burst):
        b.record_transition(f"q{i % 1000}", t + paced + i, "OK", "UNREACHABLE", 0, 2000, None)
    await asyncio.wait_for(done.wait(), 300)
    span = max(published.values()) - min(committed.values())
    print(f"burst: {burst} transitions enqueued at once: all followed {span:.2f} s after the first commit "
          f"({burst / span:,.0f} rows/s; b's writer commits included)")
    await f.close()
    await asyncio.to_thread(a.close)
    await asyncio.to_thread(b.close)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--paced", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between paced transitions")
    ap.add_argument("--burst", type=int, default=20_000)
    ap.add_argument("--url", default=None, help="an existing (empty) database instead of a temp server")
    args = ap.parse_args()
    run_on_postgres(args.url, lambda u: run(u, args.paced, args.gap, args.burst))


if __name__ == "__main__":
    main()
