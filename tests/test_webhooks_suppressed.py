"""Webhooks skip transitions whose notifications were held back (flapping or silenced when they
happened, README "Flap damping" / "Silences"), counting them, and deliver the others in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .helpers import wait_for, webhook_rig


async def test_suppressed_transitions_are_not_delivered(tmp_path: Path) -> None:
    async with webhook_rig(tmp_path) as rig:
        store, hooks, got = rig.store, rig.hooks, rig.got
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
