#!/usr/bin/env python3
"""Vantage points (cluster/vantage.py) through a real PostgreSQL server: how long after two
vantage points see a peer go down its primary reports it, and how fast a mass outage goes
through (observations upserted and NOTIFY'd in batches, LISTENed by every node).

Three `Vantage` shells ("a", "b", "c") in one process, as three nodes would run them, each on
its own two connections, every peer probed by all three (k = 3), the primaries spread evenly.
All peers are first seen OK by the three (the primaries report UNKNOWN -> OK), then:

- paced: for `--paced` peers one after the other (every `--gap` s), the two non-primary
  vantage points see the peer UNREACHABLE: the time from the second observation to the
  primary's report, p50 / p99 / max;
- burst: b and c see all `--peers` peers UNREACHABLE at once (a network outage between the
  peers and two nodes): the time from the first observation to the last of the primaries'
  reports, and the observations written and received.

    python bench/bench_vantage.py                     # a temp PostgreSQL 15 server, fsync on
    python bench/bench_vantage.py --peers 100000
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

from sipqualify.cluster.vantage import Agreed, Held, Vantage  # noqa: E402
from sipqualify.store.postgres import Store  # noqa: E402

NODES = ("a", "b", "c")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run(url: str, n: int, paced: int, gap: float) -> None:
    store = Store(url, node="a")  # migrates the schema (the observations table)
    await asyncio.to_thread(store.open)
    await asyncio.to_thread(store.close)
    peers = [f"p{i:07d}" for i in range(n)]
    probers = {p: tuple(NODES[(i + j) % 3].encode() for j in range(3)) for i, p in enumerate(peers)}
    reports: dict[str, list[tuple[float, Agreed]]] = {m: [] for m in NODES}
    shells: dict[str, Vantage] = {}

    def nothing_stored(names: list[str]) -> dict[str, Held]:
        return {}

    for m in NODES:
        shells[m] = Vantage(url, m, lambda ch, m=m: reports[m].append((time.monotonic(), ch)), nothing_stored)
        await shells[m].set_probers(probers)
        shells[m].start()
    while not all(v.connected for v in shells.values()):
        await asyncio.sleep(0.05)

    def reported(new: str) -> int:
        return sum(1 for r in reports.values() for _, ch in r if ch.new == new)

    async def until(pred: object, timeout: float) -> None:
        t_end = time.monotonic() + timeout
        while not pred():  # type: ignore[operator]
            if time.monotonic() > t_end:
                raise SystemExit(f"not reached in {timeout} s")
            await asyncio.sleep(0.005)

    t0 = time.monotonic()
    for v in shells.values():
        for p in peers:
            v.local(p, "OK", 1, 0.5)
    await until(lambda: reported("OK") == n, 600)
    t_ok = time.monotonic() - t0

    def all_seen() -> bool:  # every node holds the other two's OK of every peer
        return all(len(seen) == 3 and all(o.state == "OK" for o in seen.values())
                   for v in shells.values() for seen in v.agreement.seen.values())

    await until(all_seen, 600)
    print(f"start: {n:,} peers seen OK by 3 nodes: every primary reported its share in {t_ok:.2f} s (its own "
          f"observation decides), every node had the others' {time.monotonic() - t0:.2f} s after the first")

    lat: list[float] = []
    for i in range(min(paced, n)):
        p = peers[i]
        primary, second, third = (NODES[(i + j) % 3] for j in range(3))
        before = len(reports[primary])
        shells[second].local(p, "UNREACHABLE", -1, None)
        t1 = time.monotonic()
        shells[third].local(p, "UNREACHABLE", -1, None)
        await until(lambda primary=primary, before=before: len(reports[primary]) > before, 30)
        lat.append((reports[primary][-1][0] - t1) * 1000)
        await asyncio.sleep(gap)
    print(f"paced: {len(lat)} peers, one every {gap * 1000:.0f} ms: second UNREACHABLE observation -> primary's "
          f"report p50 {statistics.median(lat):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms")

    rest = peers[len(lat):]
    down_before = reported("UNREACHABLE")
    written = sum(v.written for v in shells.values())
    received = sum(v.received for v in shells.values())
    t2 = time.monotonic()
    for m in ("b", "c"):
        for p in rest:
            shells[m].local(p, "UNREACHABLE", -1, None)
    await until(lambda: reported("UNREACHABLE") - down_before == len(rest), 600)
    span = max(t for r in reports.values() for t, ch in r if ch.new == "UNREACHABLE") - t2
    print(f"burst: {len(rest):,} peers seen UNREACHABLE by b and c at once: all {len(rest):,} reported by their "
          f"primaries {span:.2f} s after the first observation ({len(rest) / span:,.0f} peers/s); "
          f"{sum(v.written for v in shells.values()) - written:,} observations written, "
          f"{sum(v.received for v in shells.values()) - received:,} received")
    held = sum(v.agreement.held_back for v in shells.values())
    print(f"held back (a node's own UNREACHABLE not confirmed): {held}; failures: "
          f"{sum(v.failures for v in shells.values())}")
    for v in shells.values():
        await v.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=20_000)
    ap.add_argument("--paced", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds between paced peers")
    ap.add_argument("--short", action="store_true", help="CI mode: 2,000 peers, 50 paced")
    ap.add_argument("--url", default=None, help="an existing (empty) database instead of a temp server")
    args = ap.parse_args()
    if args.short:
        args.peers, args.paced = 2000, 50
    run_on_postgres(args.url, lambda u: run(u, args.peers, args.paced, args.gap))


if __name__ == "__main__":
    main()
