"""Server-Sent Events at /events: every committed state transition as JSON, resumable.

Each event's `id:` is the transition's row id in SQLite, and events are published only after
their COMMIT, so a client that reconnects with `Last-Event-ID` (the EventSource standard)
gets exactly what it missed, from the database, then the live stream, with no gap and no
duplicate. Filters: `?peer=a,b` and `?status=Unreachable,Reachable` (PeerStatus words) or
`?state=UNREACHABLE,OK`.

Fan-out is bounded: publishing appends to each subscriber's queue and never waits on a socket,
so its cost does not depend on how slow subscribers are. A subscriber whose queue is full
(`queue_max` events or `queue_bytes_max` bytes), or whose connection holds more than
`write_buffer_max` unsent bytes, is dropped: it gets (best effort) a final `event: overflow`
carrying the id of the last transition it was sent, and the connection is closed; it resumes
with that id. At most `max_subscribers` streams run at once; more are refused with 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..qualify.events import FlapChanged, LiveEvent, PokeOverdue, PokeRepaired, VerdictChanged
from ..qualify.state import PEER_STATUS
from ..store import TransitionRecord
from .transition_json import event_json

if TYPE_CHECKING:
    from ..addr import Addr
    from ..qualify.targets import TargetChanged

log = logging.getLogger("sipqualify.events")

QUEUE_MAX = 10_000
QUEUE_BYTES_MAX = 4 * 1024 * 1024
WRITE_BUFFER_MAX = 256 * 1024
# a stream's socket send buffer: the kernel's autotuning grows it to megabytes for a peer that
# never reads (1,000 such streams held 219 MB); this is plenty for a stream of small events
SNDBUF = 16 * 1024  # the kernel doubles it
OVERFLOW_GRACE_S = 5.0  # a dropped subscriber's connection is aborted if not closed by then
DEFAULT_MAX_SUBSCRIBERS = 100
KEEPALIVE_S = 15.0


@dataclass(frozen=True, slots=True)
class FleetTransition:
    """A transition of any node of the fleet, read back from the shared store in commit order
    (cluster/follow.py): for `?fleet=1` streams only."""
    rec: TransitionRecord


Item = TransitionRecord | FleetTransition | dict[str, Any]


def _cost(item: Item) -> int:
    """About what the event takes on the wire, without encoding it (publish stays cheap)."""
    if isinstance(item, TransitionRecord):
        return 270 + len(item.peer)
    if isinstance(item, FleetTransition):
        return 280 + len(item.rec.peer)
    return 120 + sum(len(str(v)) for v in item.values())


class Subscriber:
    """One stream's bounded queue. `dropped` ends the stream; `overflowed` says why."""

    __slots__ = ("items", "size", "wake", "dropped", "overflowed", "transport", "fleet")

    def __init__(self, transport: asyncio.BaseTransport | None, fleet: bool = False) -> None:
        self.fleet = fleet  # `?fleet=1`: its transitions are the fleet's (FleetTransition), not this node's
        self.items: deque[tuple[Item, int]] = deque()
        self.size = 0
        self.wake = asyncio.Event()
        self.dropped = False
        self.overflowed = False
        self.transport = transport

    def pop(self) -> Item:
        item, cost = self.items.popleft()
        self.size -= cost
        return item


class EventHub:
    """Fan-out of committed transitions to SSE subscribers (and anything else in-process)."""

    def __init__(self, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS) -> None:
        self.subscribers: set[Subscriber] = set()
        self.max_subscribers = max_subscribers
        self.queue_max = QUEUE_MAX
        self.queue_bytes_max = QUEUE_BYTES_MAX
        self.write_buffer_max = WRITE_BUFFER_MAX
        self.overflow_grace_s = OVERFLOW_GRACE_S
        self.dropped_subscribers = 0
        self.refused_subscribers = 0
        self.max_queued = 0  # high-water mark of any subscriber's queue (events)
        self.fleet = False  # a follower publishes the fleet's transitions (cluster/follow.py)

    def publish(self, rec: Item) -> None:
        """A committed transition, or a registry event (a dict: live only, no id to resume by).
        This node's transitions go to the streams of this node, the fleet's to `?fleet=1` ones."""
        if not self.subscribers:
            return
        cost = _cost(rec)
        for sub in list(self.subscribers):
            if sub.fleet and isinstance(rec, TransitionRecord) or not sub.fleet and isinstance(rec, FleetTransition):
                continue
            t = sub.transport
            if (len(sub.items) >= self.queue_max or sub.size + cost > self.queue_bytes_max
                    or (isinstance(t, asyncio.WriteTransport) and t.get_write_buffer_size() > self.write_buffer_max)):
                self._drop(sub, overflow=True)
                continue
            sub.items.append((rec, cost))
            sub.size += cost
            if len(sub.items) > self.max_queued:
                self.max_queued = len(sub.items)
            sub.wake.set()

    def publish_registry(self, peer: str, status: str, cause: str, addr: Addr | None) -> None:
        """Registered / Unregistered / Rejected, as the `registry` event."""
        self.publish({"peer": peer, "peer_status": status, "cause": cause, "time": time.time(),
                      "address": f"{addr[0]}:{addr[1]}" if addr else None})

    def publish_tls_expiry(self, peer: str, days: float, addr: Addr | None) -> None:
        """A TLS peer's certificate fell under `tls_expiry_warn_days`, as the `tls_expiry` event."""
        self.publish({"event": "tls_expiry", "peer": peer, "days_left": round(days, 3), "time": time.time(),
                      "address": f"{addr[0]}:{addr[1]}" if addr else None})

    def publish_dns(self, peer: str, what: str, addr: Addr | None, previous: Addr | None, path: str | None,
                    reason: str | None) -> None:
        """A static peer's name resolved to a new address (`changed`) or stopped resolving (`failed`)."""
        self.publish({"peer": peer, "dns": what, "address": f"{addr[0]}:{addr[1]}" if addr else None,
                      "previous": f"{previous[0]}:{previous[1]}" if previous else None, "path": path,
                      "reason": reason, "time": time.time()})

    def publish_live(self, ev: LiveEvent) -> None:
        """A verdict change (qualify/verdict.py) as the `verdict` event, a latency change
        (qualify/stats.py) as the `latency` event, flap damping starting or ending
        (qualify/flap.py) as the `flap` event."""
        if isinstance(ev, PokeOverdue):
            self.publish({"event": "watchdog", "peer": ev.peer, "alarm": "overdue", "lag_s": round(ev.lag, 3),
                          "time": time.time()})
        elif isinstance(ev, PokeRepaired):
            self.publish({"event": "watchdog", "peer": ev.peer, "alarm": "repaired",
                          "silent_s": round(ev.silent_for, 3), "time": time.time()})
        elif isinstance(ev, FlapChanged):
            self.publish({"event": "flap", "peer": ev.peer, "flapping": ev.flapping, "penalty": round(ev.penalty, 1),
                          "verdict": ev.verdict, "reason": ev.reason, "policy": ev.policy, "time": time.time()})
        elif isinstance(ev, VerdictChanged):
            self.publish({"event": "verdict", "peer": ev.peer, "old": ev.old, "verdict": ev.new, "reason": ev.reason,
                          "policy": ev.policy, "count": ev.count, "threshold": ev.threshold, "time": time.time()})
        else:
            self.publish({"event": "latency", "peer": ev.peer, "est_ms": round(ev.est * 1000, 3),
                          "previous_ms": round(ev.previous * 1000, 3), "avg_ms": round(ev.avg * 1000, 3),
                          "dev_ms": round(ev.dev * 1000, 3), "time": time.time()})

    def publish_targets(self, peer: str, added: list[str], removed: list[str], path: str) -> None:
        """A `qualify_targets = all` peer's DNS targets were added or removed, as `event: dns`."""
        self.publish({"peer": peer, "dns": "targets", "added": added, "removed": removed, "path": path,
                      "time": time.time()})

    def publish_target(self, ev: TargetChanged) -> None:
        """One target of a `qualify_targets = all` peer changed state, as `event: target`."""
        self.publish({"event": "target", "peer": ev.peer, "target": ev.target, "old": ev.old, "new": ev.new,
                      "lastms": ev.lastms, "rtt_ms": ev.rtt * 1000 if ev.rtt is not None else None,
                      "reason": ev.reason, "time": time.time()})

    def _drop(self, sub: Subscriber, *, overflow: bool) -> None:
        self.subscribers.discard(sub)
        sub.dropped = True
        sub.overflowed = overflow
        sub.items.clear()
        sub.size = 0
        sub.wake.set()
        if overflow:
            self.dropped_subscribers += 1
            t = sub.transport
            if t is not None:
                # the handler may be stuck waiting for this peer to read: do not wait for ever
                asyncio.get_running_loop().call_later(self.overflow_grace_s, _abort, t)

    def close(self) -> None:
        """End every stream (daemon shutdown); clients resume with their last id."""
        for sub in list(self.subscribers):
            self._drop(sub, overflow=False)

    def publish_fleet(self, rec: TransitionRecord) -> None:
        """A transition of any node (this one's included), in commit order: `?fleet=1` streams."""
        self.publish(FleetTransition(rec))

    def subscribe(self, transport: asyncio.BaseTransport | None = None, fleet: bool = False) -> Subscriber:
        sub = Subscriber(transport, fleet)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)


def _abort(t: asyncio.BaseTransport) -> None:
    if isinstance(t, asyncio.WriteTransport):
        t.abort()  # also when closing: close() waits for a peer that may never read


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


HUB_KEY: web.AppKey[EventHub] = web.AppKey("events")
LIVE_EVENTS = frozenset(("verdict", "latency", "flap", "watchdog"))  # `/events?include=verdict,latency,...`


async def events_handler(request: web.Request) -> web.StreamResponse:
    from .keys import MODEL_KEY

    store = request.app[MODEL_KEY].store
    hub = request.app[HUB_KEY]
    peers, states = _filter(request)
    # live verdict / latency events only for streams that ask for them: a stream without
    # `include` is what it always was (transitions, registry events)
    include = {w.strip() for w in request.query.get("include", "").split(",")} & LIVE_EVENTS
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    try:
        last_id = int(last) if last else None
    except ValueError:
        raise web.HTTPBadRequest(text="Last-Event-ID must be a number") from None
    if len(hub.subscribers) >= hub.max_subscribers:
        hub.refused_subscribers += 1
        return web.json_response({"error": f"too many event stream subscribers ({hub.max_subscribers})"},
                                 status=503, headers={"Retry-After": "10"})
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        except OSError:
            pass
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    # `?fleet=1` with [cluster] and a PostgreSQL store: every node's transitions, each with its node
    fleet = request.query.get("fleet", "").lower() in ("1", "true", "yes") and hub.fleet
    sub = hub.subscribe(transport, fleet)  # before the replay: nothing committed meanwhile is missed
    node = getattr(store, "node", None)

    def wanted(rec: TransitionRecord) -> bool:
        return ((fleet or rec.node is None or rec.node == node)  # a shared store holds the other nodes' too
                and (peers is None or rec.peer in peers) and (states is None or rec.new in states))

    async def send(rec: TransitionRecord) -> None:
        await resp.write(f"id: {rec.id}\nevent: transition\ndata: {json.dumps(event_json(rec))}\n\n".encode())

    sent = last_id or 0
    try:
        await resp.write(b": sipqualify event stream" + (b" (fleet)" if fleet else b"") + b"\nretry: 2000\n\n")
        if last_id is not None and store is not None:
            while not sub.dropped:
                rows = await asyncio.to_thread(store.transitions_after, sent, 5000)
                for rec in rows:
                    if wanted(rec):
                        await send(rec)
                    sent = rec.id
                if len(rows) < 5000:
                    break
        loop = asyncio.get_running_loop()
        keepalive_at = loop.time() + KEEPALIVE_S
        while True:
            if not sub.items and not sub.dropped:
                sub.wake.clear()
                try:
                    # aiohttp does not cancel a handler whose client went away: look every second,
                    # so a closed stream does not hold a subscriber slot until its next keepalive
                    await asyncio.wait_for(sub.wake.wait(), min(1.0, max(0.0, keepalive_at - loop.time())))
                except TimeoutError:
                    if transport is None or transport.is_closing():
                        break
                    if loop.time() >= keepalive_at:
                        keepalive_at = loop.time() + KEEPALIVE_S
                        await resp.write(b": keepalive\n\n")
                    continue
            if sub.dropped:
                if sub.overflowed:
                    log.warning("event stream subscriber %s too slow: dropped after id %d", request.remote, sent)
                    await _overflow(resp, sent, hub.overflow_grace_s)
                break
            item = sub.pop()
            if isinstance(item, dict):  # live only: TLS expiry, DNS, verdict/latency, registry
                if peers is not None and item["peer"] not in peers:
                    continue
                kind = item.get("event")
                if kind == "tls_expiry":  # certificate expiry warning
                    body = {k: v for k, v in item.items() if k != "event"}
                    await resp.write(f"event: tls_expiry\ndata: {json.dumps(body)}\n\n".encode())
                elif kind == "target":  # one DNS target of a qualify_targets = all peer
                    if states is None or item["new"] in states:
                        body = {k: v for k, v in item.items() if k != "event"}
                        await resp.write(f"event: target\ndata: {json.dumps(body)}\n\n".encode())
                elif "dns" in item:  # a host name resolved to a new address, or stopped resolving
                    if states is None:
                        await resp.write(f"event: dns\ndata: {json.dumps(item)}\n\n".encode())
                elif kind in LIVE_EVENTS:
                    if kind in include:
                        await resp.write(f"event: {kind}\ndata: {json.dumps(item)}\n\n".encode())
                elif states is None or str(item["peer_status"]).upper() in states:
                    await resp.write(f"event: registry\ndata: {json.dumps(item)}\n\n".encode())
                continue
            if isinstance(item, FleetTransition):
                item = item.rec
            if item.id <= sent:
                continue
            sent = item.id
            if wanted(item):
                await send(item)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(sub)
    return resp


async def _overflow(resp: web.StreamResponse, sent: int, grace: float) -> None:
    """Best effort: tell the subscriber where to resume, end the stream, close the connection."""
    resp.force_close()
    data = json.dumps({"last_id": sent, "reason": "subscriber too slow; resume with Last-Event-ID"})
    head = f"id: {sent}\n" if sent else ""
    try:
        await asyncio.wait_for(_finish(resp, f"{head}event: overflow\ndata: {data}\n\n".encode()), grace)
    except (TimeoutError, ConnectionError):
        pass


async def _finish(resp: web.StreamResponse, data: bytes) -> None:
    await resp.write(data)
    await resp.write_eof()
