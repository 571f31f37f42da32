"""The fleet's transitions, followed from the shared PostgreSQL store (issue 15).

Every node that commits transitions NOTIFYs `sipqualify_transitions` with "<node> <last id>"
(store/postgres.py). The follower LISTENs there on its own psycopg async connection (the loop
never blocks on it) and, on each notification whose id is past what it has seen, reads the
new rows with `transitions_after(last_id)` (in a worker thread) and hands them, in id
(= commit) order, to `publish`: the event stream's `?fleet=1` subscribers. Ids are drawn in
commit order across nodes, so following `id > last_id` neither skips nor repeats a row.

While no `?fleet=1` stream is open (`wanted()` false) no row is read: a notification only
moves `last_id` on (a stream sends what is committed after it opened, or resumes from the
store with `Last-Event-ID`).

Only the SSE stream gets these: a transition is reported (webhook, log line, AMI PeerStatus)
by the node that owns the peer, from its own engine, never from here.

The server can go away: the connection is rebuilt with a backoff (0.5 s doubling to 10 s,
forever) and, once LISTENing again, the rows committed meanwhile are read from `last_id` on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.base import BaseStore, TransitionRecord

log = logging.getLogger("sipqualify.cluster")

PAGE = 5000  # rows per read
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
CLOSE_TIMEOUT_S = 10.0


def notified_id(payload: str) -> int | None:
    """The last id of a "<node> <last id>" notification (None: not one of ours)."""
    _, _, last = payload.rpartition(" ")
    try:
        return int(last)
    except ValueError:
        return None


class FleetFollower:
    def __init__(self, url: str, store: BaseStore[Any], publish: Callable[[TransitionRecord], None],
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self.url = url
        self.store = store
        self.publish = publish
        self.wanted = wanted  # is anybody following now? (no `?fleet=1` stream: no row is read)
        self.last_id = 0
        self.connected = False
        self.failures = 0  # connections lost or refused
        self.published = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow from the newest row now (a subscriber resumes older ones from the store itself)."""
        try:
            self.last_id = await asyncio.to_thread(self.store.last_transition_id)
        except Exception as e:  # the server is down: follow from the first successful connection on
            log.warning("fleet events: cannot read the last transition id (%s): following from the first "
                        "connection on", e)
            self.last_id = -1
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop following; bounded (a connection closing under a cancelled LISTEN must not hold a stop)."""
        if self._task is not None:
            self._task.cancel()
            _, stuck = await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT_S)
            if stuck:
                log.warning("fleet events: the LISTEN connection still closing after %.0f s: left behind",
                            CLOSE_TIMEOUT_S)
            self._task = None

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "last_id": self.last_id, "failures": self.failures,
                "published": self.published}

    async def _run(self) -> None:
        import psycopg

        from ..store.postgres import CONNECT_OPTIONS, NOTIFY_CHANNEL, redact

        delay = BACKOFF_MIN_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, **CONNECT_OPTIONS)
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self.last_id < 0:
                        self.last_id = await asyncio.to_thread(self.store.last_transition_id)
                    if not self.connected:
                        log.info("fleet events: following %s on %s", NOTIFY_CHANNEL, redact(self.url))
                    self.connected = True
                    delay = BACKOFF_MIN_S
                    await self._catch_up()  # what was committed while not listening
                    async for n in conn.notifies():
                        last = notified_id(n.payload)
                        if last is not None and last <= self.last_id:
                            continue
                        if last is not None and not self.wanted():
                            self.last_id = last  # nobody to send them to: skipped unread
                        else:
                            await self._catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # server gone, network, a read that failed: reconnect with backoff
                self.failures += 1
                log.warning("fleet events: %s (%s); reconnecting in %.1f s", redact(self.url),
                            str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, delay)
            self.connected = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _catch_up(self) -> None:
        if not self.wanted():
            self.last_id = max(self.last_id, await asyncio.to_thread(self.store.last_transition_id))
            return
        while True:
            rows = await asyncio.to_thread(self.store.transitions_after, self.last_id, PAGE)
            for rec in rows:
                self.publish(rec)
                self.last_id = rec.id
            self.published += len(rows)
            if len(rows) < PAGE:
                return
