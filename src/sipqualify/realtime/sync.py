"""Realtime peers followed live, and registrations written back: the asyncio adapter of a
realtime `sippeers` table (backends.py) to the service.

* **Load**: every row at start, read into peers by rows.RowReader; the last rows loaded are
  kept, so a database that goes away never takes a peer with it.
* **Follow**: with the PostgreSQL trigger (backends.trigger_sql) the rows named by NOTIFY are
  read again at once; otherwise the table's fingerprint is checked every `rt_refresh` seconds
  and, when it moved, the rows whose server-side hash changed (every row, for SQLite) are
  read and compared by content (rows.row_digest). Only
  inserted, changed and deleted peers go to `apply`; unchanged peers are never touched. After
  an outage the first successful pass is a full comparison (NOTIFYs were missed).
* **Write back** (chan_sip `rtupdate=yes`): registrations and `lastms`, only the columns
  chan_sip's `realtime_update_peer()` writes, through a queue kept in order per peer. A
  batch holds at most one update per peer and is one transaction: on failure nothing of it
  is taken off the queue and it is retried after a backoff, so nothing is lost and nothing
  is applied twice out of order.
* **Health**: a failure starts an episode (one log line, `/readyz` 503 with the cause, the
  `sipqualify_storage_healthy{database="realtime"}` gauge at 0) that ends at the next success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..model import Config, ConfigMessage, PeerConfig
from ..qualify.registrar import Binding
from .backends import DB_TIMEOUT_S, Backend, Update
from .rows import RowReader, row_digest

log = logging.getLogger("sipqualify")

Apply = Callable[[list[PeerConfig], list[str]], Awaitable[None]]
OnRows = Callable[[list[dict[str, Any]], bool, "set[str] | None"], Awaitable[None]]
BACKOFF_MIN_S = 0.5
WRITE_BATCH = 500
CLOSE_TIMEOUT_S = 2 * DB_TIMEOUT_S  # stopping waits this long at most for the follow tasks


class RealtimeStore:
    """What every realtime family shares: following a table's changes (`_follow`), the
    write-back queue and its writer, and the health of the database. Subclasses turn rows
    into peers (RealtimePeers: sippeers; realtime/pjsip.py: the ps_* tables)."""

    def __init__(self, label: str, refresh_s: float) -> None:
        self.label = label
        self.refresh_s = refresh_s
        self._stopping = False  # close(): the follow tasks end after their current wait
        self.peers: dict[str, PeerConfig] = {}  # the realtime peers now
        self.apply: Apply | None = None
        self.writer_backend: Backend | None = None  # where write-backs go
        self._queue: dict[str, deque[dict[str, Any] | None]] = {}
        self._wake = asyncio.Event()
        self._failure: dict[str, Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._convert = asyncio.Lock()  # one conversion of rows at a time (they share the objects)
        self.stats = {"loads": 0, "refreshes": 0, "applied": 0, "writebacks": 0, "failures": 0,
                      "bad_rows": 0}

    def _log_messages(self, messages: list[ConfigMessage]) -> None:
        for m in messages:
            self.stats["bad_rows"] += 1
            log.warning("realtime: %s", m)

    async def _off_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Rows -> peers on a worker thread: 100,000 rows take seconds of CPU that must not
        stall the qualify timers (tests/realtime/test_pjsip_realtime.py measures the loop lag)."""
        async with self._convert:
            return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ what the service calls

    async def load(self) -> dict[str, PeerConfig]:
        """The first load: the realtime peers (none, degraded, if the database is away)."""
        raise NotImplementedError

    def start(self, apply: Apply) -> None:
        """Follow the tables from now on; `apply(changed, removed)` gets what differs."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def registered(self, peer: str, binding: Binding | None, lastms: int) -> None:
        """A registration of `peer` committed (None: it went): written back where the family does."""

    def transition(self, peer: str, lastms: int) -> None:
        """`peer` changed state: written back where the family has a column for it."""

    def rejoin(self, cfg: Config) -> None:
        """`sip reload`: the new file's configuration wins; the realtime peers join it."""
        raise NotImplementedError

    # ------------------------------------------------------------------ following

    def _start_tasks(self, follows: list[Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(f) for f in follows]  # type: ignore[arg-type]
        self._tasks.append(loop.create_task(self._writer()))

    async def _close_tasks(self) -> None:
        self._stopping = True
        if not self._tasks:
            return
        follows = self._tasks[:-1]
        self._tasks[-1].cancel()  # the writer
        if follows:  # each ends by itself after its current wait (at most rt_refresh): a task cancelled
            # inside psycopg's LISTEN wait (notifies) was seen never to finish, hanging the loop's shutdown
            await asyncio.wait(follows, timeout=min(self.refresh_s + 1.0, CLOSE_TIMEOUT_S))
        for t in self._tasks:
            t.cancel()
        # bounded: a task stuck in a driver's cleanup must not hang the daemon's stop
        _, stuck = await asyncio.wait(self._tasks, timeout=CLOSE_TIMEOUT_S)
        if stuck:
            log.warning("realtime: %d follow task(s) did not stop within %.0f s; left behind", len(stuck),
                        CLOSE_TIMEOUT_S)
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                log.debug("realtime: follow task ended with %r", t.exception())

    async def _follow(self, backend: Backend, on_rows: OnRows) -> None:
        """`on_rows(rows, full, names)`: rows read again; `full`: every row of the table (the
        ones missing are gone), else only those named by `names` (a missing one is gone)."""
        fingerprint: str | None = None
        hashes: dict[str, str] = {}  # the server's per-row hashes, where it gives them (PostgreSQL)
        full = True  # the next pass compares every row (start, and after any failure)
        backoff = BACKOFF_MIN_S
        while True:
            if self._stopping:
                return
            try:
                names = await backend.wait_notify(0.0 if full else self.refresh_s)
                if self._stopping:
                    return
                full |= backend.resync
                backend.resync = False
                if names is None:  # no trigger: poll the fingerprint
                    if not full:
                        await asyncio.sleep(self.refresh_s)
                    fp = await backend.fingerprint()
                    if full:  # hashes first: a row changing in between is read again next pass
                        hashes = await backend.hashes() or {}
                        await on_rows(await backend.rows(), True, None)
                    elif fp != fingerprint:
                        hashes = await self._changed_rows(backend, hashes, on_rows)
                    fingerprint = fp
                elif full:
                    await on_rows(await backend.rows(), True, None)
                elif names:  # a burst of NOTIFYs: those rows only
                    await on_rows(await backend.rows(sorted(names)), False, names)
                full = False
                backoff = BACKOFF_MIN_S
                self.stats["refreshes"] += 1  # passes that reached the database
                self._ok()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database is away: keep the peers, retry
                self._failed(f"{backend.label} refresh", e)
                full = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(self.refresh_s, BACKOFF_MIN_S))

    async def _changed_rows(self, backend: Backend, old: dict[str, str], on_rows: OnRows) -> dict[str, str]:
        """The table moved: read the rows whose server hash changed (every row where the
        server gives no hashes), compare them by content, apply what differs."""
        new = await backend.hashes()
        if new is None:
            await on_rows(await backend.rows(), True, None)
            return {}
        names = {n for n, h in new.items() if old.get(n) != h} | (set(old) - set(new))
        rows = await backend.rows(sorted(names)) if names else []
        await on_rows(rows, False, names)
        return new

    async def _apply(self, changed: list[PeerConfig], removed: list[str]) -> None:
        if (changed or removed) and self.apply is not None:
            self.stats["applied"] += len(changed) + len(removed)
            log.info("realtime %s: %d peers added or changed, %d removed", self.label, len(changed),
                     len(removed))
            await self.apply(changed, removed)

    # ------------------------------------------------------------------ write-back

    def _queue_write(self, key: str, columns: dict[str, Any] | None) -> None:
        """Queue a write of `key`'s row: columns to set, or None to delete it."""
        self._queue.setdefault(key, deque()).append(columns)
        self._wake.set()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queue.values())

    async def _writer(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            backend = self.writer_backend
            assert backend is not None
            names = list(self._queue)[:WRITE_BATCH]
            batch: list[Update] = [(n, self._queue[n][0]) for n in names]
            if backend.columns:  # only the columns the table has (older schemas lack some)
                batch = [(n, c if c is None else {k: v for k, v in c.items() if k in backend.columns})
                         for n, c in batch]
            try:
                await backend.update(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - kept queued, retried
                self._failed(f"{backend.label} write-back", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(self.refresh_s, BACKOFF_MIN_S))
                continue
            backoff = BACKOFF_MIN_S
            self._ok()
            for n in names:
                q = self._queue[n]
                q.popleft()
                if not q:
                    del self._queue[n]
            self.stats["writebacks"] += len(batch)

    # ------------------------------------------------------------------ health

    def _failed(self, what: str, e: BaseException) -> None:
        self.stats["failures"] += 1
        if self._failure is None:
            cause = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if isinstance(e, TimeoutError):
                cause += f" (no answer within {DB_TIMEOUT_S:.0f} s)"
            self._failure = {"cause": f"{what}: {cause}", "since": time.time()}
            log.error("realtime database unavailable (%s): keeping the %d peers last loaded, retrying",
                      self._failure["cause"], len(self.peers))

    def _ok(self) -> None:
        if self._failure is not None:
            log.warning("realtime database %s is back (failing since %.0f s)", self.label,
                        time.time() - self._failure["since"])
            self._failure = None

    def health(self) -> dict[str, Any]:
        f = self._failure
        return {"ok": f is None, "cause": f["cause"] if f else None, "since": f["since"] if f else None,
                "peers": len(self.peers), "writeback_queue": self.queued, **self.stats}


class RealtimePeers(RealtimeStore):
    """The `sippeers` family: one table, rows -> peers through the sip.conf option table."""

    def __init__(self, backend: Backend, cfg: Config, refresh_s: float) -> None:
        """`cfg` is the file's configuration: its peers win over rows of the same name."""
        assert cfg.realtime is not None and cfg.realtime.proto is not None
        super().__init__(backend.label, refresh_s)
        self.backend = self.writer_backend = backend
        self.cfg = cfg
        self.static = set(cfg.peers)  # the file's peer names
        self.digests: dict[str, bytes] = {}  # every named row: its content digest
        self.shadowed: set[str] = set()  # realtime names sip.conf also defines (sip.conf wins)
        self._nameless: set[bytes] = set()  # rows without a name already reported

    def _reader(self) -> RowReader:
        rt = self.cfg.realtime
        assert rt is not None and rt.proto is not None
        return RowReader(self.backend.label, rt.proto, self.cfg)

    def _diff(self, rows: list[dict[str, Any]], full: bool, names: set[str] | None = None
              ) -> tuple[list[PeerConfig], list[str]]:
        """Runs on a worker thread (`_off_loop`)."""
        reader = self._reader()
        changed: list[PeerConfig] = []
        removed: list[str] = []
        seen: set[str] = set()
        for row in rows:
            name = str(row.get("name") or "").strip()
            if not name:
                if row_digest(row) not in self._nameless:  # once per such row, not every pass
                    self._nameless.add(row_digest(row))
                    reader.peer(row)
                continue
            seen.add(name)
            digest = row_digest(row)
            if self.digests.get(name) == digest:
                continue
            self.digests[name] = digest
            p = reader.peer(row)
            if name in self.static:
                if name not in self.shadowed:
                    self.shadowed.add(name)
                    log.warning("realtime peer '%s' (%s) is also in %s: the sip.conf peer wins, as in chan_sip",
                                name, self.backend.label, self.cfg.source)
                continue
            if p is None:
                if self.peers.pop(name, None) is not None:
                    removed.append(name)
                continue
            self.peers[name] = p
            changed.append(p)
        gone = (set(self.digests) - seen) if full else ((names or set()) - seen)
        for name in gone:
            self.digests.pop(name, None)
            if self.peers.pop(name, None) is not None:
                removed.append(name)
        self._log_messages(reader.messages)
        return changed, removed

    async def _rows(self, rows: list[dict[str, Any]], full: bool, names: set[str] | None) -> None:
        await self._apply(*await self._off_loop(self._diff, rows, full, names))

    async def load(self) -> dict[str, PeerConfig]:
        """The first load (or nothing, degraded, if the database is not there: retried later)."""
        try:
            rows = await self.backend.rows()
        except Exception as e:  # noqa: BLE001 - any driver error: degraded, not dead
            self._failed(f"{self.backend.label} load", e)
            return {}
        self._ok()
        await self._off_loop(self._diff, rows, True)
        self.stats["loads"] += 1
        return dict(self.peers)

    def start(self, apply: Apply) -> None:
        self.apply = apply
        self._start_tasks([self._follow(self.backend, self._rows)])

    async def close(self) -> None:
        await self._close_tasks()
        await self.backend.close()

    def write_back(self, peer: str, columns: dict[str, Any]) -> None:
        """Queue an UPDATE of `columns` of `peer`'s row (a realtime peer's only)."""
        if peer in self.peers:
            self._queue_write(peer, columns)

    def registered(self, peer: str, binding: Binding | None, lastms: int) -> None:
        """A registration committed (None: it went): chan_sip's rtupdate columns."""
        self.write_back(peer, binding_columns(binding, lastms))

    def transition(self, peer: str, lastms: int) -> None:
        self.write_back(peer, {"lastms": lastms})

    def rejoin(self, cfg: Config) -> None:
        """`sip reload`: the new file's peers win; the realtime peers last loaded join them."""
        self.static = set(cfg.peers)
        cfg.peers.update((n, p) for n, p in self.peers.items() if n not in cfg.peers)


def binding_columns(binding: Binding | None, lastms: int) -> dict[str, Any]:
    """chan_sip's `realtime_update_peer()` on a registration, or `destroy_association()` when
    it goes: the only columns sipqualify ever writes besides `lastms` on a state change."""
    if binding is None:
        return {"fullcontact": "", "ipaddr": "", "port": 0, "regseconds": 0, "regserver": "", "useragent": "",
                "defaultuser": "", "lastms": 0}
    user = binding.contact.partition(":")[2].partition("@")
    return {"ipaddr": binding.addr[0], "port": binding.addr[1], "regseconds": int(binding.expires_at),
            "defaultuser": user[0].lstrip("<") if user[1] else "", "fullcontact": binding.contact,
            "useragent": binding.useragent, "lastms": lastms}
