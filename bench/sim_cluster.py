"""Scale-out simulation: N nodes sharing P static peers through tooz's consistent hash ring,
on a virtual clock, no sockets (issue 15, docs/scaling.md).

What it computes, with tooz's own `HashRing` for the ring (md5 of the member id, `partitions`
virtual points per member; a peer goes to the first point at or after md5(peer name)):

1. Balance: peers per node (max / mean, min / mean) for several `partitions` values, tooz's
   default 32 among them.
2. Peers moved when one node leaves (dies) and when one joins: how many, to whom, and that no
   peer moves between two nodes that stayed (the consistent-hashing promise, checked peer by peer).
3. Handover on a virtual clock: a node dies at t0; its lease expires at t0 + lease; the
   survivors see the new membership after one watcher poll; each survivor sends the first OPTIONS
   of the peers it took over, spread over `spread` seconds (the engine's stagger); per peer the
   gap is (first probe by the new owner) - (last probe by the dead node), the dead node having
   probed each peer at its own phase in the qualify period. Reported: max and p99 gap, as
   seconds and as qualify periods (the issue's bound: two periods).
4. Fencing: a node cut from the coordinator stops probing after `fence` x lease without a
   heartbeat; the survivors start at lease + poll. The margin between the two is the window
   in which no peer is probed twice (it must be positive).
5. Coordination traffic: heartbeats (lease refreshes) and membership reads per second for the
   whole fleet, and bytes per membership change: independent of the number of peers, because
   every node computes the ring itself from the member list.

Peers are hashed in full with md5 (tooz's hash) and looked up with numpy.searchsorted on the
top 64 bits of the ring points; a sample is checked against `HashRing.get_nodes` itself.

    python bench/sim_cluster.py --short                       # 1,000,000 peers, 50 nodes (CI)
    python bench/sim_cluster.py --nodes 50 --peers 50000000   # the issue's 50 x 50,000,000
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Iterator

import numpy as np
from tooz.hashring import HashRing

from sipqualify.cluster.partition import PARTITIONS, owned

MEMBER = "node-{:03d}"


def peer_names(n: int) -> Iterator[bytes]:
    """Names as operators write them: trunk/phone names with a number (realistic entropy)."""
    for i in range(n):
        yield b"peer-%d" % i


def peer_hashes(n: int, chunk: int = 1_000_000) -> np.ndarray:
    """Top 64 bits of md5(name) for every peer (what tooz bisects on, truncated)."""
    out = np.empty(n, dtype=np.uint64)
    md5 = hashlib.md5
    done = 0
    names = peer_names(n)
    while done < n:
        k = min(chunk, n - done)
        out[done:done + k] = np.fromiter(
            (int.from_bytes(md5(next(names), usedforsecurity=False).digest()[:8], "big") for _ in range(k)),
            dtype=np.uint64, count=k)
        done += k
    return out


class Ring:
    """tooz's ring, with a vectorised lookup."""

    def __init__(self, members: list[str], partitions: int) -> None:
        self.tooz = HashRing(members, partitions=partitions)
        self.members = sorted(members)
        self._index = {m: i for i, m in enumerate(self.members)}
        points = self.tooz._partitions  # sorted 128-bit ints
        self.points = np.array([p >> 64 for p in points], dtype=np.uint64)
        self.owner = np.array([self._index[self.tooz._ring[p]] for p in points], dtype=np.int32)

    def assign(self, hashes: np.ndarray) -> np.ndarray:
        """Member index per peer: the first ring point strictly after the peer's hash, wrapping
        (bisect.bisect in tooz's _get_partition)."""
        pos = np.searchsorted(self.points, hashes, side="right")
        pos[pos == len(self.points)] = 0
        return self.owner[pos]

    def name(self, idx: int) -> str:
        return self.members[idx]


def check_against_tooz(ring: Ring, n: int = 20000) -> int:
    """Peers (of the first n) where the vectorised lookup differs from tooz's get_nodes."""
    names = list(peer_names(n))
    mine = ring.assign(peer_hashes(n))
    return sum(1 for i, nm in enumerate(names) if ring.name(int(mine[i])) != next(iter(ring.tooz.get_nodes(nm))))


def balance(assign: np.ndarray, nodes: int) -> tuple[float, float, float]:
    counts = np.bincount(assign, minlength=nodes)
    mean = counts.mean()
    return float(counts.max() / mean), float(counts.min() / mean), float(counts.std() / mean)


def handover(rng: np.random.Generator, moved_per_survivor: np.ndarray, freq: float, lease: float,
             poll: float, spread_rate: float) -> tuple[float, float]:
    """(max gap, p99 gap) in seconds between the dead node's last probe of a peer and its new
    owner's first one. The dead node probed each peer at its phase in [0, freq); it dies at t0,
    uniformly within a period. Survivor s spreads its k taken-over peers over k / spread_rate s."""
    gaps: list[np.ndarray] = []
    t0 = freq * rng.random()
    detect = t0 + lease + poll
    for k in moved_per_survivor:
        k = int(k)
        if not k:
            continue
        phase = rng.random(k) * freq
        last = np.where(phase <= t0, phase, phase - freq)  # last probe before t0
        first = detect + np.sort(rng.random(k)) * (k / spread_rate)
        gaps.append(first - last)
    g = np.concatenate(gaps)
    return float(g.max()), float(np.percentile(g, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--peers", type=int, default=50_000_000)
    ap.add_argument("--partitions", type=int, nargs="*", default=[32, 128, PARTITIONS, 512, 2048],
                    help="tooz ring points per member to compare (tooz's default: 32)")
    ap.add_argument("--ring-points", type=int, default=PARTITIONS,
                    help="ring points per member for the leave/join/handover runs (sipqualify's: "
                         "cluster/partition.py PARTITIONS)")
    ap.add_argument("--freq", type=float, default=60.0, help="qualifyfreq, seconds")
    ap.add_argument("--lease", type=float, default=20.0, help="coordinator lease (TTL), seconds")
    ap.add_argument("--heartbeat", type=float, default=5.0, help="lease refresh interval, seconds")
    ap.add_argument("--poll", type=float, default=1.0, help="membership watcher poll, seconds")
    ap.add_argument("--fence", type=float, default=0.5,
                    help="a node without a heartbeat for fence x lease stops probing")
    ap.add_argument("--spread-rate", type=float, default=2000.0,
                    help="first OPTIONS/s a survivor sends to the peers it took over (its spare capacity)")
    ap.add_argument("--short", action="store_true", help="1,000,000 peers (CI)")
    args = ap.parse_args()
    if args.short:
        args.peers = 1_000_000
    n, p = args.nodes, args.peers
    rng = np.random.default_rng(1)

    t = time.perf_counter()
    hashes = peer_hashes(p)
    t_hash = time.perf_counter() - t
    print(f"fleet                         {n} nodes, {p:,} static peers (md5 of {p:,} names in {t_hash:.1f} s)")
    members = [MEMBER.format(i) for i in range(n)]
    for parts in args.partitions:
        ring = Ring(members, parts)
        mx, mn, cv = balance(ring.assign(hashes), n)
        print(f"balance, {parts:4d} points/node     max {mx:.2f} x mean, min {mn:.2f} x mean, "
              f"stddev {100 * cv:.1f} % ({p // n:,} peers per node on average)")
    chosen = args.ring_points
    print(f"(the ring below: {chosen} points per node)")
    ring = Ring(members, chosen)
    print(f"lookup check                  {check_against_tooz(ring)} of 20,000 peers differ from tooz's get_nodes")
    before = ring.assign(hashes)

    # one node dies
    dead = int(np.bincount(before, minlength=n).argmax())
    survivors = [m for i, m in enumerate(members) if i != dead]
    after_leave = Ring(survivors, chosen)
    remap = np.array([after_leave._index.get(m, -1) for m in ring.members], dtype=np.int32)
    a2 = after_leave.assign(hashes)
    moved = before == dead
    stray = int(np.count_nonzero(remap[before[~moved]] != a2[~moved]))
    per_survivor = np.bincount(a2[moved], minlength=n - 1)
    print(f"leave (the largest node dies) {int(moved.sum()):,} peers move ({100 * moved.mean():.2f} %), "
          f"{stray} between two survivors; spread over {np.count_nonzero(per_survivor)} survivors, "
          f"at most {int(per_survivor.max()):,} to one")

    # one node joins
    joined = MEMBER.format(n)
    after_join = Ring(members + [joined], chosen)
    a3 = after_join.assign(hashes)
    new_idx = after_join._index[joined]
    remap_j = np.array([after_join._index[m] for m in ring.members], dtype=np.int32)
    to_new = a3 == new_idx
    stray_j = int(np.count_nonzero(remap_j[before[~to_new]] != a3[~to_new]))
    print(f"join (one node added)         {int(to_new.sum()):,} peers move to it ({100 * to_new.mean():.2f} %), "
          f"{stray_j} between two old nodes")

    # handover on the virtual clock
    gmax, g99 = handover(rng, per_survivor, args.freq, args.lease, args.poll, args.spread_rate)
    print(f"handover                      lease {args.lease:.0f} s + poll {args.poll:.0f} s, survivors send at "
          f"{args.spread_rate:,.0f}/s: longest gap between two probes of a moved peer {gmax:.1f} s "
          f"({gmax / args.freq:.2f} periods), p99 {g99:.1f} s ({g99 / args.freq:.2f} periods); bound 2 periods = "
          f"{2 * args.freq:.0f} s")
    stop = args.fence * args.lease
    start = args.lease + args.poll
    print(f"fencing                       a cut node stops at {stop:.0f} s without a heartbeat, survivors start "
          f"at {start:.0f} s: {start - stop:.0f} s margin with nobody double-probing")

    # what a membership change costs one node: finding its peers again
    names = list(peer_names(100_000))
    t = time.perf_counter()
    for nm in names:
        ring.tooz.get_nodes(nm)
    per = (time.perf_counter() - t) / len(names)
    members_w = {m.encode(): 1 for m in members}
    t = time.perf_counter()
    owned(names_s := [nm.decode() for nm in names], members_w, members[0].encode(), chosen)
    ours = (time.perf_counter() - t) / len(names_s)
    t = time.perf_counter()
    ring.assign(hashes[:1_000_000])
    vec = (time.perf_counter() - t) / min(p, 1_000_000)
    print(f"re-partition cost             tooz get_nodes {per * 1e6:.1f} us per peer: {per * p:.0f} s of CPU for all "
          f"{p:,} peers on every node at every change; sipqualify's cluster/partition.owned {ours * 1e6:.1f} us "
          f"per peer ({ours * p:.0f} s); vectorised (numpy) {vec * 1e9:.0f} ns per peer")

    # coordination traffic
    hb = n / args.heartbeat
    reads = n / args.poll
    member_bytes = 120  # one member key + capabilities as the etcd3gw driver stores them, approx.
    print(f"coordination                  {hb:.1f} lease refreshes/s + {reads:.0f} membership polls/s for the "
          f"fleet, {n * n * member_bytes / 1e6:.2f} MB read per membership change in all; "
          f"0 per peer ({p:,} peers change nothing)")


if __name__ == "__main__":
    main()
