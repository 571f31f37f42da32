"""Vantage points' exchange through a real PostgreSQL (cluster/vantage.py `Vantage`), two
shells in one process as two nodes would run them, k = 2 (both must agree):

- a peer's primary reports what both saw, through the observations table and NOTIFY;
- the server goes away (`pg_ctl stop`): an observation made meanwhile is kept, and once the
  server is back it is written, followed, and the quorum it completes is reported once;
- a peer handed away loses its node's row; a peer gained gets a fresh UNKNOWN row first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sipqualify.cluster.vantage import Agreed, Held, Vantage
from sipqualify.store.postgres import Store

from ..helpers import Postgres


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    t_end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > t_end:
            raise AssertionError(f"not in {timeout} s: {what}")
        await asyncio.sleep(0.02)


def nothing_stored(names: list[str]) -> dict[str, Held]:
    return {}


async def test_observations_go_through_the_store_and_survive_an_outage() -> None:
    pg = Postgres()
    shells: list[Vantage] = []
    try:
        store = Store(pg.url(), node="a")
        await asyncio.to_thread(store.open)  # the schema, observations included
        await asyncio.to_thread(store.close)
        reports: list[Agreed] = []
        a = Vantage(pg.url(), "a", reports.append, nothing_stored)
        b = Vantage(pg.url(), "b", lambda ch: reports.append(ch), nothing_stored)
        shells = [a, b]
        probers = {"p": (b"a", b"b"), "q": (b"a", b"b")}
        for v in shells:
            await v.set_probers(probers)
            v.start()
        await until(lambda: a.connected and b.connected, 30, "both LISTENing")

        def rows() -> list[tuple[Any, ...]]:
            return pg.sql("SELECT peer, node, state FROM observations ORDER BY peer, node")

        await until(lambda: rows() == [("p", "a", "UNKNOWN"), ("p", "b", "UNKNOWN"), ("q", "a", "UNKNOWN"),
                                       ("q", "b", "UNKNOWN")], 10, "a fresh UNKNOWN row of each node")
        a.local("p", "OK", 3, 3.0)
        b.local("p", "OK", 4, 4.0)
        assert [(r.peer, r.old, r.new) for r in reports] == [("p", "UNKNOWN", "OK")]  # a's own decides at once
        await until(lambda: a.agreement.seen["p"].get("b") is not None and a.agreement.seen["p"]["b"].state == "OK",
                    10, "b's OK at a")

        b.local("p", "UNREACHABLE", -1, None)  # b alone: no quorum of 2
        await until(lambda: a.agreement.seen["p"]["b"].state == "UNREACHABLE", 10, "b's UNREACHABLE at a")
        assert len(reports) == 1

        # the server goes away; a sees the peer gone too: its own is weighed at once, b's old one already was
        b.local("p", "OK", 5, 5.0)
        await until(lambda: a.agreement.seen["p"]["b"].state == "OK", 10, "b's OK again at a")
        await asyncio.to_thread(pg.stop)
        b.local("p", "UNREACHABLE", -1, None)  # kept: the server is down
        a.local("p", "UNREACHABLE", -1, None)
        assert len(reports) == 1 and a.agreement.held_back >= 1  # b's newest has not reached a
        await asyncio.sleep(0.5)
        await asyncio.to_thread(pg.start)
        await until(lambda: len(reports) == 2, 60, "the quorum reported once the server is back")
        assert (reports[1].peer, reports[1].old, reports[1].new) == ("p", "OK", "UNREACHABLE")
        assert reports[1].reason == "2 of 2 vantage points: a, b"
        await until(lambda: ("p", "b", "UNREACHABLE") in rows(), 30, "b's kept observation written")
        assert a.failures + b.failures > 0  # the outage was seen, and gone through

        # q moves away from a: its row goes; r comes: a fresh row
        await a.set_probers({"p": (b"a", b"b"), "r": (b"a", b"b")})
        await until(lambda: ("q", "a", "UNKNOWN") not in rows() and ("r", "a", "UNKNOWN") in rows(), 30,
                    "q's row of a deleted, r's written")
        assert ("q", "b", "UNKNOWN") in rows()  # b's own rows are b's
        assert len(reports) == 2
    finally:
        for v in shells:
            await v.close()
        pg.close()
