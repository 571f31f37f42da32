"""Who probes which static peer, and when a node may probe at all (sans-I/O: no clock, no socket).

Ownership is tooz's consistent hash ring (`tooz.hashring.HashRing`, the ring behind
`Coordinator.join_partitioned_group`): a peer name hashes to a partition, a partition to a
member. A member joining or leaving moves only the peers of the partitions it takes or gives
back (about 1/N of them), never reshuffles the rest.

Self-fencing: a member's key on the coordinator lives as long as its lease (etcd lease, Redis
key TTL) and the lease restarts when the coordinator receives a heartbeat. A heartbeat
acknowledged was received after it was sent, so the lease cannot end before `sent + lease`
on the coordinator. A node probes only until `sent + fraction * lease` of its last
acknowledged heartbeat: cut off from the coordinator, it stops before the survivors can see
its key expire and take its peers over, so no peer is probed (or reported) by two nodes.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tooz is the optional `cluster` extra: imported when a ring is built
    from tooz import hashring

#: a cut-off node stops probing at this fraction of the lease after its last acknowledged heartbeat
FENCE_FRACTION = 0.5
#: heartbeats per lease: a few can be lost before the fence (at FENCE_FRACTION) is reached
HEARTBEATS_PER_LEASE = 6
#: points per member on the ring (tooz defaults to 32: shares of 0.7x-1.45x the mean with 50 nodes)
PARTITIONS = 256


def heartbeat_interval(lease_s: float) -> float:
    """Seconds between two heartbeats (and membership polls) for a lease of `lease_s`."""
    return max(0.1, lease_s / HEARTBEATS_PER_LEASE)


def settle_time(lease_s: float) -> float:
    """How long after this node first saw a membership every other member has seen it too (each
    reads the group once per heartbeat interval; a quarter more for its own processing). Peers
    are taken only after it, given away at once: a join or a handover never has two probers."""
    return heartbeat_interval(lease_s) * 1.25


def ring_of(members: Mapping[bytes, int], partitions: int = PARTITIONS) -> hashring.HashRing:
    from tooz import hashring  # noqa: PLC0415 (optional dependency)

    ring = hashring.HashRing([], partitions=partitions)
    for m, weight in sorted(members.items()):
        ring.add_node(m, weight)
    return ring


def owned(names: Iterable[str], members: Mapping[bytes, int], me: bytes,
          partitions: int = PARTITIONS, k: int = 1) -> set[str]:
    """The names among `names` that `me` owns when `members` (member id -> weight) form the ring:
    tooz's Partitioner.belongs_to_self (the name's UTF-8 bytes on the ring), without its per-call
    set building (bench/bench_cluster.py measures it). With `k` > 1 (vantage points), the names
    `me` is one of the k probers of."""
    if k > 1:
        return set(vantage(names, members, me, k, partitions))
    if me not in members:
        return set()
    if len(members) == 1:
        return set(names)
    return {n for n, node in owners(names, ring_of(members, partitions)) if node == me}


def vantage(names: Iterable[str], members: Mapping[bytes, int], me: bytes, k: int,
            partitions: int = PARTITIONS) -> dict[str, tuple[bytes, ...]]:
    """For each name `me` probes with `k` vantage points: its probers, the ring's owner (the
    primary, who reports) first, then the next distinct members clockwise (tooz's
    `HashRing.get_nodes(name, replicas=k)`, in ring order). Fewer members than `k`: all of them."""
    if me not in members:
        return {}
    ring = ring_of(members, partitions)
    return {n: nodes for n, nodes in vantage_owners(names, ring, k) if me in nodes}


def vantage_owners(names: Iterable[str], ring: hashring.HashRing, k: int) -> Iterator[tuple[str, tuple[bytes, ...]]]:
    """(name, its k distinct nodes in ring order from the name's point): `owners` with replicas."""
    keys: list[int] = ring._partitions
    nodes = [ring._ring[k_] for k_ in keys]
    n_keys = len(keys)
    want = min(k, len(set(nodes)))
    md5, right = hashlib.md5, bisect.bisect
    cache: dict[int, tuple[bytes, ...]] = {}  # by start position: 256 points per member, so few distinct walks
    for n in names:
        pos = right(keys, int(md5(n.encode("utf8"), usedforsecurity=False).hexdigest(), 16))
        pos = pos if pos < n_keys else 0
        found = cache.get(pos)
        if found is None:
            walk: list[bytes] = []
            i = pos
            while len(walk) < want:
                if nodes[i] not in walk:
                    walk.append(nodes[i])
                i = (i + 1) % n_keys
            found = cache[pos] = tuple(walk)
        yield n, found


def owners(names: Iterable[str], ring: hashring.HashRing) -> Iterator[tuple[str, bytes]]:
    """(name, its node) for each name: HashRing.get_nodes(name) with one replica, inlined (the
    ring's sorted partition hashes and their nodes; tests hold it to get_nodes)."""
    keys: list[int] = ring._partitions
    nodes = [ring._ring[k] for k in keys]
    n_keys = len(keys)
    md5, right = hashlib.md5, bisect.bisect
    for n in names:
        pos = right(keys, int(md5(n.encode("utf8"), usedforsecurity=False).hexdigest(), 16))
        yield n, nodes[pos if pos < n_keys else 0]


@dataclass(frozen=True, slots=True)
class Moves:
    gained: list[str] = field(default_factory=list)  # to qualify from now on
    lost: list[str] = field(default_factory=list)  # handed away: stop now


def moves(old: set[str], new: set[str]) -> Moves:
    return Moves(sorted(new - old), sorted(old - new))


class Fence:
    """May this node probe its share at `now`? Yes from an acknowledged heartbeat (with this node
    in the group) until `fraction` of the lease after that heartbeat was sent."""

    def __init__(self, lease_s: float, fraction: float = FENCE_FRACTION) -> None:
        if not 0 < fraction < 1:
            raise ValueError("fence fraction must be between 0 and 1")
        self.lease_s = lease_s
        self.fraction = fraction
        self._sent: float | None = None

    def confirmed(self, sent_at: float) -> None:
        """A heartbeat sent at `sent_at` was acknowledged and the group lists this node."""
        if self._sent is None or sent_at > self._sent:
            self._sent = sent_at

    def lost(self) -> None:
        """The group no longer lists this node (its lease ended): fenced until confirmed again."""
        self._sent = None

    @property
    def deadline(self) -> float | None:
        """When probing must stop if no further heartbeat is acknowledged (None: fenced now)."""
        return None if self._sent is None else self._sent + self.fraction * self.lease_s

    def live(self, now: float) -> bool:
        d = self.deadline
        return d is not None and now < d
