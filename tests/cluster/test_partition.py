"""Partition moves on tooz's hash ring and the self-fence, with no coordinator and no clock."""

from __future__ import annotations

import pytest
from tooz import hashring

from sipqualify.cluster import Fence, heartbeat_interval, moves, owned
from sipqualify.cluster.coordinator import tooz_url
from sipqualify.cluster.partition import PARTITIONS, owners, ring_of

NAMES = [f"peer{i:04d}" for i in range(3000)]
THREE = {b"a": 1, b"b": 1, b"c": 1}


def shares(members: dict[bytes, int]) -> dict[bytes, set[str]]:
    return {m: owned(NAMES, members, m) for m in members}


def test_every_peer_has_exactly_one_owner_and_shares_are_even() -> None:
    s = shares(THREE)
    assert set().union(*s.values()) == set(NAMES)
    assert sum(len(v) for v in s.values()) == len(NAMES)  # disjoint
    assert all(700 < len(v) < 1300 for v in s.values()), {m: len(v) for m, v in s.items()}


def test_the_same_owner_as_tooz_partitioner_ring() -> None:
    """What owned() computes is what tooz's Partitioner (a HashRing of the members) says."""
    ring = hashring.HashRing([b"a", b"b", b"c"], partitions=PARTITIONS)  # as join_partitioned_group is called
    s = shares(THREE)
    for n in NAMES[:500]:
        (node,) = ring.get_nodes(n.encode())
        assert n in s[node]


def test_owners_is_tooz_get_nodes_with_fifty_weighted_members() -> None:
    members = {f"node-{i}".encode(): 1 + i % 3 for i in range(50)}
    ring = hashring.HashRing([], partitions=PARTITIONS)
    for m, w in members.items():
        ring.add_node(m, w)
    found = dict(owners(NAMES, ring_of(members)))
    assert all(found[n] == next(iter(ring.get_nodes(n.encode()))) for n in NAMES)
    assert len(set(found.values())) == 50


def test_a_leaving_node_moves_only_its_own_peers() -> None:
    before = shares(THREE)
    after = shares({b"a": 1, b"b": 1})
    for m in (b"a", b"b"):
        m_moves = moves(before[m], after[m])
        assert m_moves.lost == []  # survivors keep all they had
        assert set(m_moves.gained) <= before[b"c"]
    assert after[b"a"] | after[b"b"] == set(NAMES)


def test_a_joining_node_takes_a_share_from_the_others_only() -> None:
    before = shares({b"a": 1, b"b": 1})
    after = shares(THREE)
    taken = set()
    for m in (b"a", b"b"):
        mv = moves(before[m], after[m])
        assert mv.gained == []
        taken |= set(mv.lost)
    assert taken == after[b"c"]
    assert 700 < len(taken) < 1300  # about a third moves, not a reshuffle


def test_a_node_not_in_the_group_owns_nothing_and_a_lone_node_owns_all() -> None:
    assert owned(NAMES, {b"a": 1}, b"z") == set()
    assert owned(NAMES, {b"a": 1}, b"a") == set(NAMES)


def test_fence_on_a_virtual_clock() -> None:
    f = Fence(lease_s=10)
    assert not f.live(0.0) and f.deadline is None  # fenced until the first acknowledged heartbeat
    f.confirmed(sent_at=100.0)
    assert f.live(104.9) and not f.live(105.0)  # half the lease after the heartbeat was *sent*
    f.confirmed(sent_at=99.0)  # a late answer to an older heartbeat does not move the fence back
    assert f.deadline == 105.0
    f.confirmed(sent_at=103.0)
    assert f.deadline == 108.0
    f.lost()
    assert not f.live(103.5)
    with pytest.raises(ValueError):
        Fence(10, fraction=1.0)


def test_fence_comes_before_lease_expiry_with_heartbeats_to_spare() -> None:
    lease = 20
    f = Fence(lease)
    f.confirmed(0.0)
    assert f.deadline is not None and f.deadline < lease  # the server's lease lives at least `lease` after send
    assert f.deadline / heartbeat_interval(lease) >= 2.9  # ≥ 3 heartbeat ticks may fail before fencing


def test_tooz_url_options() -> None:
    assert tooz_url("etcd3+http://127.0.0.1:2379", 20) == \
        "etcd3+http://127.0.0.1:2379?membership_timeout=20&timeout=5"
    u = tooz_url("redis://h:6379?timeout=2", 8)
    assert "membership_timeout=8" in u and "timeout=2" in u and "socket_timeout=2" in u
