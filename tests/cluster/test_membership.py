"""Cluster members in-process on a real etcd and a real Redis: shares, a leave, the self-fence.

Each member runs the blocking tooz client in its thread; the test's event loop must stay free
(the members' changes arrive through it)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from sipqualify.cluster import Cluster

from ..helpers import wait_for
from .conftest import Server

NAMES = [f"p{i}" for i in range(200)]
LEASE = 2


class Node:
    def __init__(self, server: Server, node_id: str, lease: int = LEASE) -> None:
        self.changes: list[tuple[float, list[str], list[str]]] = []
        self.c = Cluster(asyncio.get_running_loop(), time.monotonic, server.url, "g", node_id, lease, self.on_change)

    async def on_change(self, gained: list[str], lost: list[str]) -> None:
        self.changes.append((time.monotonic(), gained, lost))

    async def start(self) -> None:
        await self.c.start(NAMES, timeout=10)


async def test_two_members_share_then_one_leaves(coordinator: Server) -> None:
    a, b = Node(coordinator, "a"), Node(coordinator, "b")
    await a.start()
    assert a.c.owned == set(NAMES)  # alone: everything
    await b.start()
    await wait_for(lambda: len(a.c.members) == 2 and a.c.owned and b.c.owned and
                   not (a.c.owned & b.c.owned), timeout=10)
    assert a.c.owned | b.c.owned == set(NAMES)
    assert a.changes[-1][2] and not a.changes[-1][1]  # a gave peers to b, gained none
    await b.c.close()  # a graceful leave: a takes everything at its next heartbeat
    await wait_for(lambda: a.c.owned == set(NAMES), timeout=LEASE * 2)
    assert a.c.status().members == ["a"]
    await a.c.close()


async def test_a_node_cut_off_fences_before_its_lease_ends_and_resumes(coordinator: Server) -> None:
    a = Node(coordinator, "a")
    await a.start()
    assert a.c.fence.deadline is not None and a.c.owned == set(NAMES)
    coordinator.pause()  # the coordinator stops answering (as a cut cable: requests hang)
    paused = time.monotonic()
    try:
        await wait_for(lambda: not a.c.owned, timeout=LEASE * 3)
        fenced_at, gained, lost = a.changes[-1]
        assert sorted(lost) == sorted(NAMES) and gained == []
        assert fenced_at - paused < LEASE  # stopped before the lease could end on the server
        assert not a.c.status().live
    finally:
        coordinator.resume()
    await wait_for(lambda: a.c.owned == set(NAMES), timeout=LEASE * 6)  # rejoined (or its lease survived)
    assert a.c.status().live
    await a.c.close()


async def test_a_member_that_joins_while_this_node_joins_can_leave(coordinator: Server,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (CI, netns partition test): another node joined between the two member reads
    tooz's Partitioner makes when it is created, so it was never on that ring; when it left, the
    Partitioner's leave watcher raised UnknownNode at every tick and this node fenced itself for
    good. Here a second real member joins right after this node's first read of the group (that
    window, made certain), then leaves: this node sees both changes and never fails a tick."""
    from tooz import coordination

    from sipqualify.cluster.coordinator import tooz_url

    other = coordination.get_coordinator(tooz_url(coordinator.url, LEASE), b"x")
    other.start(start_heart=True)
    real = coordination.get_coordinator
    first = threading.Event()

    def watched(url: str, member_id: bytes, *a: object, **kw: object) -> coordination.CoordinationDriver:
        coord = real(url, member_id, *a, **kw)
        if member_id == b"a":
            reads = coord.get_members

            def get_members(group_id: bytes) -> object:
                r = reads(group_id)
                if not first.is_set():  # the first read of the group: the other member joins now
                    r.get()
                    first.set()
                    other.join_group(group_id, capabilities={"weight": 1}).get()
                return r

            coord.get_members = get_members  # type: ignore[method-assign]
        return coord

    monkeypatch.setattr(coordination, "get_coordinator", watched)
    a = Node(coordinator, "a")
    try:
        await a.start()
        await wait_for(lambda: set(a.c.members) == {b"a", b"x"}, timeout=LEASE * 3)
        other.leave_group(b"g").get()
        await wait_for(lambda: set(a.c.members) == {b"a"}, timeout=LEASE * 3)
        await wait_for(lambda: a.c.owned == set(NAMES), timeout=LEASE * 3)  # x's share (if any) came back
        st = a.c.status()
        assert first.is_set() and st.failures == 0 and st.live
    finally:
        other.stop()
        await a.c.close()
