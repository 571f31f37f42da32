"""cluster/follow.py against a real PostgreSQL server: node "a" follows the transitions node "b"
commits (LISTEN sipqualify_transitions, then transitions_after), in commit order, each once,
also across a server restart (the rows committed while it was reconnecting come after it)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sipqualify.store.base import TransitionRecord

from ..helpers import T0, Postgres
from .fleet import until


async def test_follows_the_other_nodes_transitions_once_across_a_restart(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sipqualify.cluster")
    server = Postgres()  # its own: the test stops and starts it
    try:
        await follow_across_a_restart(server, caplog)
    finally:
        server.close()


async def follow_across_a_restart(server: Postgres, caplog: pytest.LogCaptureFixture) -> None:
    from sipqualify.cluster.follow import FleetFollower
    from sipqualify.store.postgres import Store

    a = Store(server.url(), node="a")
    b = Store(server.url(), node="b")
    await asyncio.to_thread(a.open)
    await asyncio.to_thread(b.open)
    b.record_transition("old", T0, "UNKNOWN", "OK", 5, 2000, 5.0)  # before the follower: not followed
    await asyncio.to_thread(b.flush, 30)
    got: list[TransitionRecord] = []
    following = [False]
    f = FleetFollower(server.url(), a, got.append, lambda: following[0])
    await f.start()
    try:
        await until(lambda: f.connected, 10, "the follower LISTENing")
        b.record_transition("p0", T0 + 0.5, "UNKNOWN", "OK", 5, 2000, 5.0)  # nobody follows: skipped
        await asyncio.to_thread(b.flush, 30)
        newest = await asyncio.to_thread(a.last_transition_id)
        await until(lambda: f.last_id == newest, 10, "the notification moved the follower on")
        assert got == [] and f.status()["published"] == 0
        following[0] = True
        b.record_transition("p1", T0 + 1, "UNKNOWN", "OK", 5, 2000, 5.0)
        a.record_transition("p2", T0 + 2, "UNKNOWN", "OK", 6, 2000, 6.0)
        await until(lambda: len(got) >= 2, 10, "two transitions followed")
        assert sorted((r.peer, r.node) for r in got) == [("p1", "b"), ("p2", "a")]

        await asyncio.to_thread(server.stop)  # the server goes away under the LISTEN
        await until(lambda: not f.connected and f.failures >= 1, 30, "the follower sees the server gone")
        b.record_transition("p1", T0 + 3, "OK", "UNREACHABLE", 0, 2000, None)  # queued by b's writer
        t_down = time.monotonic()
        await asyncio.to_thread(server.start)
        await until(lambda: len(got) >= 3, 30, "the transition committed after the restart followed")
        print(f"\nfollower back {time.monotonic() - t_down:.1f} s after the server restart")
        b.record_transition("p1", T0 + 4, "UNREACHABLE", "OK", 5, 2000, 5.0)
        await until(lambda: len(got) >= 4, 10, "a live one after the reconnect")
        assert [(r.peer, r.new, r.node) for r in got][2:] == [("p1", "UNREACHABLE", "b"), ("p1", "OK", "b")]
        ids = [r.id for r in got]
        assert ids == sorted(set(ids)) and len(ids) == 4  # commit order, no repeat, nothing from before
        assert f.status()["connected"] is True and f.status()["published"] == 4
        assert any("fleet events:" in r.getMessage() and "reconnecting" in r.getMessage() for r in caplog.records)
    finally:
        await f.close()
        await asyncio.to_thread(a.close)
        await asyncio.to_thread(b.close)
