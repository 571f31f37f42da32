"""Webhooks: every committed transition POSTed to each configured receiver, durably, in order.

The outbox is the transitions table itself (committed before anything is reported) plus, per
receiver, a durable cursor: the id of the last transition that receiver acknowledged with a
2xx. A receiver that is down for ten minutes, or a daemon restart (even `kill -9`) in between,
loses nothing: delivery resumes after the cursor, in id order (so in order per peer). Each
request carries `Idempotency-Key: <receiver>-<event id>`: if the daemon dies between a 2xx and
the cursor write, the one redelivered event has the same key and the receiver drops it, so
each event is processed exactly once per receiver. Failures are retried with exponential
backoff (1 s doubling to 60 s); a receiver never blocks another or the daemon.
Body: the event JSON of /events plus `receiver`; signature header
`X-Sipqualify-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from .transition_json import event_json

if TYPE_CHECKING:
    from ..model import ServiceConfig
    from ..readmodel import ReadModel
    from ..store import TransitionRecord

log = logging.getLogger("sipqualify.webhooks")


@dataclass(slots=True)
class Webhook:
    id: str
    url: str
    secret: str = ""
    peers: list[str] = field(default_factory=list)  # glob patterns; empty = all
    states: list[str] = field(default_factory=list)  # e.g. ["UNREACHABLE", "OK"]; empty = all
    timeout_s: float = 5.0

    def wants(self, rec: TransitionRecord) -> bool:
        if self.peers and not any(fnmatch.fnmatchcase(rec.peer, p) for p in self.peers):
            return False
        return not self.states or rec.new in self.states


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Cursors:
    """Per-receiver delivery cursors, committed synchronously (called via to_thread)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS webhook_cursor (receiver TEXT PRIMARY KEY, last_id INTEGER)")

    def get(self, receiver: str) -> int | None:
        row = self.db.execute("SELECT last_id FROM webhook_cursor WHERE receiver=?", (receiver,)).fetchone()
        return None if row is None else int(row[0])

    def set(self, receiver: str, last_id: int) -> None:
        self.db.execute("INSERT INTO webhook_cursor(receiver, last_id) VALUES (?, ?) ON CONFLICT(receiver) "
                        "DO UPDATE SET last_id=excluded.last_id", (receiver, last_id))

    def close(self) -> None:
        self.db.close()


class WebhookDispatcher:
    def __init__(self, model: ReadModel, hooks: list[Webhook], path: Path) -> None:
        self.model = model
        self.hooks = hooks
        self.cursors = Cursors(path)
        self.wake: dict[str, asyncio.Event] = {h.id: asyncio.Event() for h in hooks}
        self.tasks: list[asyncio.Task[None]] = []
        self.stats: dict[str, dict[str, int]] = {h.id: {"delivered": 0, "failures": 0, "skipped": 0, "suppressed": 0,
                                                      "other_nodes": 0}
                                                 for h in hooks}
        self.http: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, model: ReadModel, svc: ServiceConfig, path: Path) -> WebhookDispatcher | None:
        """The [[webhooks]] receivers as configured; None when there are none."""
        hooks = []
        for raw in svc.webhooks:
            hooks.append(Webhook(
                id=str(raw["id"]), url=str(raw["url"]), secret=str(raw.get("secret", "")),
                peers=[str(x) for x in raw.get("peers", [])],  # type: ignore[attr-defined]
                states=[str(x).upper() for x in raw.get("states", [])],  # type: ignore[attr-defined]
                timeout_s=float(raw.get("timeout", 5.0)),  # type: ignore[arg-type]
            ))
        return cls(model, hooks, path) if hooks else None

    async def start(self) -> None:
        store = self.model.store
        assert store is not None
        self.http = aiohttp.ClientSession()
        newest = await asyncio.to_thread(store.last_transition_id)
        for h in self.hooks:
            if await asyncio.to_thread(self.cursors.get, h.id) is None:
                # a new receiver starts at "now", not with the whole history
                await asyncio.to_thread(self.cursors.set, h.id, newest)
            self.tasks.append(asyncio.get_running_loop().create_task(self._run(h)))
        self.model.add_record_listener(lambda rec: self.notify())

    def notify(self) -> None:
        for ev in self.wake.values():
            ev.set()

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self.http is not None:
            await self.http.close()
        self.cursors.close()

    async def _run(self, h: Webhook) -> None:
        store = self.model.store
        assert store is not None and self.http is not None
        wake = self.wake[h.id]
        while True:
            cursor = await asyncio.to_thread(self.cursors.get, h.id) or 0
            rows = await asyncio.to_thread(store.transitions_after, cursor, 500)
            if not rows:
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 5.0)
                except TimeoutError:
                    pass
                continue
            for rec in rows:
                if rec.node is not None and rec.node != store.node:
                    # a shared store ([store] url): another node's transition, reported by that node
                    self.stats[h.id]["other_nodes"] += 1
                elif rec.suppressed:  # flapping or silenced when it happened (README)
                    self.stats[h.id]["suppressed"] += 1
                elif h.wants(rec):
                    await self._deliver(h, rec)
                else:
                    self.stats[h.id]["skipped"] += 1
                await asyncio.to_thread(self.cursors.set, h.id, rec.id)

    async def _deliver(self, h: Webhook, rec: TransitionRecord) -> None:
        assert self.http is not None
        body = json.dumps({**event_json(rec), "receiver": h.id}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{h.id}-{rec.id}",
                   "X-Sipqualify-Event-Id": str(rec.id), "User-Agent": "sipqualify-webhook"}
        if h.secret:
            headers["X-Sipqualify-Signature"] = sign(h.secret, body)
        delay = 1.0
        while True:
            try:
                async with self.http.post(h.url, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=h.timeout_s)) as r:
                    if 200 <= r.status < 300:
                        self.stats[h.id]["delivered"] += 1
                        return
                    reason = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                reason = type(e).__name__
            self.stats[h.id]["failures"] += 1
            log.warning("webhook %s: event %d not delivered (%s); retrying in %.0f s", h.id, rec.id, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
