"""Webhook and `/events` payloads carry the peer's verdict, its reason and its policy at the
transition (issue 13 "Webhook and SSE payloads carry verdict, reason and policy"): from the
engine's Peer through StateRecorder, the SQLite row, event_json and a webhook delivery."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sipqualify.api.events import event_json
from sipqualify.qualify.events import StateChanged
from sipqualify.store.recorder import StateRecorder

from .helpers import wait_for, webhook_rig
from .qualify.sim import build, ok_after, peer, silent

A = ("127.0.0.1", 15072)
B = ("127.0.0.1", 15073)


async def test_transition_payload_has_verdict_reason_and_policy(tmp_path: Path) -> None:
    async with webhook_rig(tmp_path) as rig:
        store, hooks, got = rig.store, rig.hooks, rig.got
        # on the virtual clock: a 404 is OK for chan_sip but down for the "trunks" policy; a
        # silent peer without a policy goes UNREACHABLE with the verdict down / timeout
        sim = build([peer("t", A[1], 2000, freq_s=5, reply_up="2xx", policy="trunks"),
                     peer("q", B[1], 2000, freq_s=5)], {A: ok_after(0.01, 404, "Not Found"), B: silent})
        sim.run_until(5.0)
        recorder = StateRecorder(store, 1_796_000_000.0)
        changes = [e for _, e in sim.events if isinstance(e, StateChanged)]
        assert [(e.peer, e.new) for e in changes] == [("t", "OK"), ("q", "UNREACHABLE")]
        for e in changes:
            recorder.transition(e, sim.engine.peer(e.peer))
        recorder.transition(StateChanged("gone", "OK", "UNREACHABLE", -1, 2000, None, 1.0), None)
        await asyncio.to_thread(store.flush)
        rows = await asyncio.to_thread(store.transitions_after, 0)
        assert [(r.peer, r.verdict, r.verdict_reason, r.policy) for r in rows] == [
            ("t", "down", "reply:404", "trunks"), ("q", "down", "timeout", ""), ("gone", None, None, None)]
        ev = event_json(rows[0])
        assert (ev["new"], ev["verdict"], ev["verdict_reason"], ev["policy"]) == ("OK", "down", "reply:404", "trunks")
        hooks.notify()
        await wait_for(lambda: len(got) == 3)
        assert [(g["peer"], g["verdict"], g["verdict_reason"], g["policy"]) for g in got] == [
            ("t", "down", "reply:404", "trunks"), ("q", "down", "timeout", ""), ("gone", None, None, None)]
        assert got[0] == {**event_json(rows[0]), "receiver": "rx"}
