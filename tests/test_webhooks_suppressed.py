"""Webhooks skip transitions whose notifications were held back (flapping or silenced when they
happened, README "Flap damping" / "Silences"), counting them, and deliver the others in order."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from sipqualify.api.webhooks import Webhook, WebhookDispatcher
from sipqualify.store import Store

from .helpers import free_port, wait_for


async def test_suppressed_transitions_are_not_delivered(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(socket.SOCK_STREAM)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store = Store(str(tmp_path / "sipqualify.sqlite"))
    await asyncio.to_thread(store.open)
    listeners: list[Any] = []
    model = SimpleNamespace(store=store, add_record_listener=listeners.append)
    hooks = WebhookDispatcher(model, [Webhook("rx", f"http://127.0.0.1:{port}/hook")],  # type: ignore[arg-type]
                              tmp_path / "webhooks.sqlite")
    await hooks.start()
    try:
        for i, (new, why) in enumerate([("UNREACHABLE", None), ("OK", "flapping"), ("UNREACHABLE", "silenced"),
                                        ("OK", None)]):
            store.record_transition("p", 1_796_000_000.0 + i, "OK", new, -1 if new == "UNREACHABLE" else 5, 2000,
                                    None, None, why)
        await asyncio.to_thread(store.flush)
        hooks.notify()
        await wait_for(lambda: len(got) == 2)
        assert [(g["new"], g["suppressed"], g["silenced"]) for g in got] == [
            ("UNREACHABLE", None, False), ("OK", None, False)]
        await wait_for(lambda: hooks.stats["rx"]["suppressed"] == 2)
        assert hooks.stats["rx"]["delivered"] == 2
    finally:
        await hooks.close()
        await asyncio.to_thread(store.close)
        await runner.cleanup()
