"""A stored transition as every surface shows it in JSON (the event stream, webhooks, the fleet
view of another node's peer). On its own, importing only the store's record and the state words,
so the cluster package can build a fleet row without importing the API's event machinery."""

from __future__ import annotations

from typing import Any

from ..qualify.state import peer_status_word
from ..store import TransitionRecord


def event_json(rec: TransitionRecord) -> dict[str, Any]:
    return {
        "id": rec.id, "peer": rec.peer, "time": rec.time, "old": rec.old, "new": rec.new,
        "peer_status": peer_status_word(rec.new), "lastms": rec.lastms, "maxms": rec.maxms,
        "rtt_ms": rec.rtt_ms, "reason": rec.reason, "suppressed": rec.suppressed,
        "silenced": rec.suppressed == "silenced", "verdict": rec.verdict, "verdict_reason": rec.verdict_reason,
        "policy": rec.policy, "node": rec.node,
    }
