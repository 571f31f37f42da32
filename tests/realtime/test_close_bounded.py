"""Stopping the realtime follow tasks is bounded (the daemon's stop never hangs on them): a
task that does not end when cancelled (a database driver stuck in its cleanup) is left behind
after CLOSE_TIMEOUT_S with a warning; the ones that end are awaited as before."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sipqualify.realtime import sync


async def test_a_task_that_ignores_cancel_does_not_hang_the_close(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sync, "CLOSE_TIMEOUT_S", 0.2)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # a cleanup that never finishes

    async def polite() -> None:
        await asyncio.Event().wait()

    rt = sync.RealtimeStore("test", 1.0)
    loop = asyncio.get_running_loop()
    rt._tasks = [loop.create_task(stubborn()), loop.create_task(polite())]
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, "sipqualify"):
        await asyncio.wait_for(rt._close_tasks(), 5)
    assert rt._tasks[1].cancelled() and not rt._tasks[0].done()
    assert any("did not stop within" in r.getMessage() for r in caplog.records)
    release.set()
    await asyncio.wait_for(rt._tasks[0], 5)
