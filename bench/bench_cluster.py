#!/usr/bin/env python3
"""Many nodes, simulated (no sockets, no coordinator; a virtual clock): what the design of
cluster/ costs and guarantees at fleet scale.

- peers moved per leave and per join on tooz's hash ring (a sample of names, scaled to the fleet);
- the ownership recompute a node runs on every membership change (cluster/partition.owned, on
  this machine), extrapolated to the names a node's configuration holds;
- handover after a node dies, on a virtual clock: its last acknowledged heartbeat, the lease,
  the survivors' polls (each at its own phase), the settle time (peers are taken only once every
  member has seen the change), the spread of the pokes of the peers taken over (a quarter of
  `qualifyfreq`); and the longest time one of its peers goes unprobed;
- coordination traffic: requests per second on the coordinator (per tick and node: the lease
  keep-alive, tooz's watcher read of the group, our read of the members).

    python bench/bench_cluster.py                         # 50 nodes, 50,000,000 peers (docs/scaling.md)
    python bench/bench_cluster.py --nodes 3 --peers 300 --lease 2 --qualifyfreq 5
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

from sipqualify.cluster.partition import (  # noqa: E402
    FENCE_FRACTION,
    Fence,
    heartbeat_interval,
    owners,
    ring_of,
    settle_time,
)

REQUESTS_PER_TICK = 3  # keep-alive (etcd lease / Redis PSETEX), run_watchers' group read, our member read


def moved(sample: list[str], members: dict[bytes, int], change: dict[bytes, int]) -> float:
    """Share of `sample` whose owner differs between the two memberships."""
    a = dict(owners(sample, ring_of(members)))
    b = dict(owners(sample, ring_of(change)))
    return sum(1 for n in sample if a[n] != b[n]) / len(sample)


def handover(rng: random.Random, nodes: int, lease: float, freq: float, trials: int) -> tuple[list[float], list[float]]:
    """Per trial: (time from death until the last of its peers is probed by a survivor, the
    longest a peer of it went unprobed). Virtual clock; death at t = 0."""
    hb = heartbeat_interval(lease)
    spread = freq / 4
    done, gaps = [], []
    for _ in range(trials):
        f = Fence(lease)
        f.confirmed(-rng.uniform(0, hb))  # its last acknowledged heartbeat, sent before it died
        assert f.deadline is not None
        expiry = f.deadline + (1 - FENCE_FRACTION) * lease  # the server drops it a lease after that heartbeat
        # each survivor sees the member gone at its first poll after the expiry, takes its new peers
        # once every member has seen it (settle_time) and pokes them spread over `spread`; the last
        # poke of the last survivor ends the handover
        seen = [expiry + rng.uniform(0, hb) + settle_time(lease) for _ in range(nodes - 1)]
        last = max(s + spread for s in seen)
        done.append(last)
        gaps.append(rng.uniform(0, freq) + last)  # its last probe came up to a period before the death
    return done, gaps


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--peers", type=int, default=50_000_000)
    ap.add_argument("--sample", type=int, default=200_000, help="names hashed to measure moves and cost")
    ap.add_argument("--lease", type=float, default=20)
    ap.add_argument("--qualifyfreq", type=float, default=60)
    ap.add_argument("--trials", type=int, default=10_000)
    a = ap.parse_args()
    rng = random.Random(1)
    sample = [f"peer-{i}" for i in range(min(a.sample, a.peers))]
    members = {f"node-{i:02d}".encode(): 1 for i in range(a.nodes)}
    print(f"{a.nodes} nodes, {a.peers:,} static peers, lease {a.lease:g} s, qualifyfreq {a.qualifyfreq:g} s")

    left = dict(members)
    left.pop(next(iter(members)))
    joined = {**members, b"node-new": 1}
    f_leave, f_join = moved(sample, members, left), moved(sample, members, joined)
    print(f"peers moved when one node leaves: {f_leave:.2%} ({f_leave * a.peers:,.0f}; ideal 1/{a.nodes} = "
          f"{1 / a.nodes:.2%})")
    print(f"peers moved when one node joins:  {f_join:.2%} ({f_join * a.peers:,.0f}; ideal 1/{a.nodes + 1} = "
          f"{1 / (a.nodes + 1):.2%})")
    shares = {}
    for _, node in owners(sample, ring_of(members)):
        shares[node] = shares.get(node, 0) + 1
    mean = len(sample) / a.nodes
    print(f"share per node: min {min(shares.values()) / mean:.2f}x, max {max(shares.values()) / mean:.2f}x the mean")

    t = time.perf_counter()
    for _ in owners(sample, ring_of(members)):
        pass
    per_name = (time.perf_counter() - t) / len(sample)
    print(f"ownership recompute: {per_name * 1e6:.2f} us per name on this machine; a node whose configuration "
          f"holds all {a.peers:,} names spends {per_name * a.peers:,.0f} s of one core (a worker thread) per "
          f"membership change")

    done, gaps = handover(rng, a.nodes, a.lease, a.qualifyfreq, a.trials)
    print(f"handover after a node dies (virtual clock, {a.trials} trials): all its peers probed by survivors "
          f"p50 {pct(done, .5):.1f} s, p99 {pct(done, .99):.1f} s, max {max(done):.1f} s "
          f"({max(done) / a.qualifyfreq:.2f} qualify periods)")
    print(f"longest a peer goes unprobed: p50 {pct(gaps, .5):.1f} s, max {max(gaps):.1f} s "
          f"({max(gaps) / a.qualifyfreq:.2f} qualify periods; bound 2)")
    hb = heartbeat_interval(a.lease)
    rps = a.nodes * REQUESTS_PER_TICK / hb
    print(f"coordination traffic: {REQUESTS_PER_TICK} requests per node every {hb:.2f} s = {rps:,.0f} requests/s "
          f"on the coordinator; each group read returns {a.nodes} member keys; no traffic per peer")
    print(f"self-fence: a cut-off node stops {FENCE_FRACTION * a.lease:.1f} s after its last acknowledged "
          f"heartbeat, the survivors can take over {a.lease:g} s after it at the earliest")


if __name__ == "__main__":
    main()
