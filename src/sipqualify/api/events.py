"""Server-Sent Events at /events: every committed state transition as JSON, resumable.

Each event's `id:` is the transition's row id in SQLite, and events are published only after
their COMMIT, so a client that reconnects with `Last-Event-ID` (the EventSource standard)
gets exactly what it missed, from the database, then the live stream, with no gap and no
duplicate. Filters: `?peer=a,b` and `?status=Unreachable,Reachable` (PeerStatus words) or
`?state=UNREACHABLE,OK`. A subscriber that cannot keep up (queue of 10,000 events) is cut off;
it can resume with its last id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..store import TransitionRecord

if TYPE_CHECKING:
    from ..service import Service

log = logging.getLogger("sipqualify.events")

PEER_STATUS = {"OK": "Reachable", "LAGGED": "Lagged", "UNREACHABLE": "Unreachable", "UNKNOWN": "Unknown"}
QUEUE_MAX = 10_000
KEEPALIVE_S = 15.0


def event_json(rec: TransitionRecord) -> dict[str, Any]:
    return {
        "id": rec.id, "peer": rec.peer, "time": rec.time, "old": rec.old, "new": rec.new,
        "peer_status": PEER_STATUS.get(rec.new, "Unknown"), "lastms": rec.lastms, "maxms": rec.maxms,
        "rtt_ms": rec.rtt_ms,
    }


class EventHub:
    """Fan-out of committed transitions to SSE subscribers (and anything else in-process)."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue[TransitionRecord | dict[str, Any] | None]] = set()
        self.dropped_subscribers = 0

    def publish(self, rec: TransitionRecord | dict[str, Any]) -> None:
        """A committed transition, or a registry event (a dict: live only, no id to resume by)."""
        for q in list(self.subscribers):
            try:
                q.put_nowait(rec)
            except asyncio.QueueFull:
                self.subscribers.discard(q)
                self.dropped_subscribers += 1
                q._queue.clear()  # type: ignore[attr-defined]
                q.put_nowait(None)  # tells the handler to end the stream

    def close(self) -> None:
        """End every stream (daemon shutdown); clients resume with their last id."""
        for q in list(self.subscribers):
            self.subscribers.discard(q)
            q._queue.clear()  # type: ignore[attr-defined]
            q.put_nowait(None)

    def subscribe(self) -> asyncio.Queue[TransitionRecord | dict[str, Any] | None]:
        q: asyncio.Queue[TransitionRecord | dict[str, Any] | None] = asyncio.Queue(QUEUE_MAX)
        self.subscribers.add(q)
        return q


def _filter(request: web.Request) -> tuple[set[str] | None, set[str] | None]:
    peers = {p for p in request.query.get("peer", "").split(",") if p} or None
    states: set[str] | None = set()
    for s in request.query.get("status", "").split(","):
        s = s.strip()
        for k, v in PEER_STATUS.items():
            if s.lower() == v.lower():
                states.add(k)  # type: ignore[union-attr]
    for s in request.query.get("state", "").split(","):
        if s.strip():
            states.add(s.strip().upper())  # type: ignore[union-attr]
    return peers, states or None


async def events_handler(request: web.Request) -> web.StreamResponse:
    from .http import SERVICE_KEY

    svc: Service = request.app[SERVICE_KEY]  # type: ignore[assignment]
    hub = svc.events
    peers, states = _filter(request)
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    try:
        last_id = int(last) if last else None
    except ValueError:
        raise web.HTTPBadRequest(text="Last-Event-ID must be a number") from None
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    q = hub.subscribe()  # before the replay: nothing committed meanwhile is missed

    def wanted(rec: TransitionRecord) -> bool:
        return (peers is None or rec.peer in peers) and (states is None or rec.new in states)

    async def send(rec: TransitionRecord) -> None:
        await resp.write(f"id: {rec.id}\nevent: transition\ndata: {json.dumps(event_json(rec))}\n\n".encode())

    try:
        await resp.write(b": sipqualify event stream\nretry: 2000\n\n")
        sent = last_id or 0
        if last_id is not None and svc.store is not None:
            while True:
                rows = await asyncio.to_thread(svc.store.transitions_after, sent, 5000)
                for rec in rows:
                    if wanted(rec):
                        await send(rec)
                    sent = rec.id
                if len(rows) < 5000:
                    break
        while True:
            try:
                item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if item is None:
                if q not in hub.subscribers and hub.dropped_subscribers:
                    log.warning("event stream subscriber %s ended (too slow, or shutdown)", request.remote)
                break
            if isinstance(item, dict):  # registry: Registered / Unregistered / Rejected
                if (peers is None or item["peer"] in peers) and (
                        states is None or str(item["peer_status"]).upper() in states):
                    await resp.write(f"event: registry\ndata: {json.dumps(item)}\n\n".encode())
                continue
            if item.id <= sent:
                continue
            sent = item.id
            if wanted(item):
                await send(item)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.subscribers.discard(q)
    return resp
