"""An ownership change the service fails to apply (cluster/member.py `_reconcile`) is tried again
until it lands: the member's `owned` keeps saying what the engine has until then, so gained peers
are never silently left unprobed (a survivor of a kill -9 that hit one failure kept none of them)."""

from __future__ import annotations

import asyncio
import time

from sipqualify.cluster.member import Cluster


async def test_a_failed_change_is_applied_again() -> None:
    loop = asyncio.get_running_loop()
    calls: list[tuple[list[str], list[str]]] = []

    async def on_change(gained: list[str], lost: list[str]) -> None:
        calls.append((sorted(gained), sorted(lost)))
        if len(calls) == 1:
            raise RuntimeError("store down")  # the first attempt fails

    c = Cluster(loop, time.monotonic, "redis://127.0.0.1:1", "g", "a", 20.0, on_change)  # never started
    c.names = {"p1", "p2", "p3"}
    c.members = {b"a": 1}  # alone in the group: every peer is ours
    c.fence.confirmed(time.monotonic())
    task = loop.create_task(c._reconcile())
    try:
        c._dirty.set()
        for _ in range(100):  # the retry comes 1 s after the failure
            if len(calls) >= 2 and c.owned:
                break
            await asyncio.sleep(0.05)
        assert calls[:2] == [(["p1", "p2", "p3"], []), (["p1", "p2", "p3"], [])]
        assert c.owned == {"p1", "p2", "p3"} and c.moves == 1
    finally:
        task.cancel()
