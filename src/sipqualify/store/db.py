"""SQLite persistence: current state, every transition, RTT samples with bounded retention.

Theory of operation: the event loop only *enqueues* (a deque append under a lock: a few µs);
one writer thread owns the write connection. A transition is committed in its own short
transaction as soon as the writer sees it, and `on_transition_committed` is called after the
COMMIT, so "reported" (logged, published) implies "stored". State upserts and samples are
batched and committed at least every `sample_flush_interval_s` (default 0.5 s), so a
`kill -9` loses at most that much of them. WAL mode lets readers (the API, on worker
threads) run concurrently with the writer. Disk errors are counted, logged and retried;
they never reach the caller. When the queue is full (disk stalled), samples are dropped
first and counted; transitions are never dropped.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("sipqualify.store")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_state (
    peer TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    lastms INTEGER NOT NULL,
    maxms INTEGER NOT NULL,
    rtt_ms REAL,
    changed_at REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    time REAL NOT NULL,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    lastms INTEGER NOT NULL,
    maxms INTEGER NOT NULL,
    rtt_ms REAL
);
CREATE INDEX IF NOT EXISTS transitions_peer_time ON transitions(peer, time);
CREATE INDEX IF NOT EXISTS transitions_time ON transitions(time);
CREATE TABLE IF NOT EXISTS samples (
    peer TEXT NOT NULL,
    time REAL NOT NULL,
    rtt_ms REAL,
    status_code INTEGER,
    transmissions INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_peer_time ON samples(peer, time);
CREATE INDEX IF NOT EXISTS samples_time ON samples(time);
"""


@dataclass(frozen=True, slots=True)
class PeerStateRecord:
    peer: str
    state: str
    lastms: int
    maxms: int
    rtt_ms: float | None
    changed_at: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    id: int
    peer: str
    time: float
    old: str
    new: str
    lastms: int
    maxms: int
    rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class SampleRecord:
    peer: str
    time: float
    rtt_ms: float | None
    status_code: int | None
    transmissions: int


_T, _S, _ST, _FORGET, _FLUSH = range(5)


class Store:
    def __init__(
        self,
        path: str,
        *,
        sample_retention_s: float = 7 * 86400,
        transition_retention_s: float = 90 * 86400,
        sample_flush_interval_s: float = 0.5,
        max_queue: int = 1_000_000,
        on_transition_committed: Callable[[TransitionRecord], None] | None = None,
    ) -> None:
        self.path = path
        self.sample_retention_s = sample_retention_s
        self.transition_retention_s = transition_retention_s
        self.flush_interval = sample_flush_interval_s
        self.max_queue = max_queue
        self.on_transition_committed = on_transition_committed
        self._q: deque[tuple[Any, ...]] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._db: sqlite3.Connection | None = None
        self._local = threading.local()
        self._stats: dict[str, float] = {
            "commits": 0, "transitions": 0, "samples": 0, "states": 0, "samples_dropped": 0, "errors": 0,
            "last_commit_ms": 0.0, "max_commit_ms": 0.0,
        }

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def open(self) -> dict[str, PeerStateRecord]:
        db = self._connect()
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this sipqualify")
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db
        states = self._states(db)
        self._thread = threading.Thread(target=self._run, name="sipqualify-store", daemon=True)
        self._thread.start()
        return states

    def close(self) -> None:
        if self._thread is None:
            return
        self.flush()
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=30)
        self._thread = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # ------------------------------------------------------------------ enqueue (event loop)

    def _put(self, item: tuple[Any, ...], urgent: bool) -> None:
        q = self._q
        if not urgent and len(q) >= self.max_queue:
            self._stats["samples_dropped"] += 1
            return
        q.append(item)
        if urgent:
            with self._cv:
                self._cv.notify()

    def record_transition(self, peer: str, time: float, old: str, new: str, lastms: int, maxms: int,
                          rtt_ms: float | None) -> None:
        self._put((_T, peer, time, old, new, lastms, maxms, rtt_ms), True)

    def record_sample(self, peer: str, time: float, rtt_ms: float | None, status_code: int | None,
                      transmissions: int) -> None:
        self._put((_S, peer, time, rtt_ms, status_code, transmissions), False)

    def save_state(self, peer: str, state: str, lastms: int, maxms: int, rtt_ms: float | None,
                   changed_at: float | None, updated_at: float) -> None:
        self._put((_ST, peer, state, lastms, maxms, rtt_ms, changed_at, updated_at), False)

    def forget_peers(self, names: Iterable[str]) -> None:
        names = list(names)
        if names:
            self._put((_FORGET, names), True)

    def flush(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        ev = threading.Event()
        self._put((_FLUSH, ev), True)
        ev.wait(timeout)

    @property
    def stats(self) -> dict[str, float]:
        return dict(self._stats, queue=len(self._q))

    # ------------------------------------------------------------------ writer thread

    def _run(self) -> None:
        db = self._db
        assert db is not None
        last_retention = 0.0
        while True:
            with self._cv:
                if not self._q and not self._stop:
                    self._cv.wait(self.flush_interval)
                stop = self._stop
            try:
                self._drain(db)
            except Exception:  # never let the writer die
                self._stats["errors"] += 1
                log.exception("store writer failed; retrying")
                time.sleep(0.5)
            now = time.time()
            if now - last_retention > 60:
                last_retention = now
                self._retention(db, now)
            if stop and not self._q:
                return

    def _drain(self, db: sqlite3.Connection) -> None:
        q = self._q
        samples: list[tuple[Any, ...]] = []
        states: dict[str, tuple[Any, ...]] = {}
        flushes: list[threading.Event] = []
        n = len(q)
        for _ in range(n):
            item = q.popleft()
            kind = item[0]
            if kind == _S:
                samples.append(item[1:])
            elif kind == _ST:
                states[item[1]] = item[1:]
            elif kind == _T:
                self._write_batch(db, samples, states)  # keep order: earlier rows first
                samples, states = [], {}
                self._commit_transition(db, item[1:])
            elif kind == _FORGET:
                self._write_batch(db, samples, states)
                samples, states = [], {}
                self._forget(db, [(x,) for x in item[1]])
            elif kind == _FLUSH:
                flushes.append(item[1])
        self._write_batch(db, samples, states)
        for ev in flushes:
            ev.set()

    def _forget(self, db: sqlite3.Connection, rows: list[tuple[str]]) -> None:
        self._exec(db, lambda: db.executemany("DELETE FROM peer_state WHERE peer=?", rows))

    def _exec(self, db: sqlite3.Connection, fn: Callable[[], object]) -> None:
        for attempt in range(5):
            t0 = time.perf_counter()
            try:
                db.execute("BEGIN IMMEDIATE")
                fn()
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self._stats["errors"] += 1
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                log.warning("store write failed (%s), attempt %d", e, attempt + 1)
                time.sleep(min(2.0, 0.1 * 2**attempt))
                continue
            ms = (time.perf_counter() - t0) * 1000
            self._stats["commits"] += 1
            self._stats["last_commit_ms"] = ms
            self._stats["max_commit_ms"] = max(self._stats["max_commit_ms"], ms)
            return
        log.error("store write abandoned after 5 attempts")

    def _write_batch(self, db: sqlite3.Connection, samples: list[tuple[Any, ...]],
                     states: dict[str, tuple[Any, ...]]) -> None:
        if not samples and not states:
            return

        def fn() -> None:
            if samples:
                db.executemany("INSERT INTO samples(peer, time, rtt_ms, status_code, transmissions) "
                               "VALUES (?,?,?,?,?)", samples)
            if states:
                db.executemany(
                    "INSERT INTO peer_state(peer, state, lastms, maxms, rtt_ms, changed_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(peer) DO UPDATE SET state=excluded.state, "
                    "lastms=excluded.lastms, maxms=excluded.maxms, rtt_ms=excluded.rtt_ms, "
                    "changed_at=excluded.changed_at, updated_at=excluded.updated_at",
                    list(states.values()))

        self._exec(db, fn)
        self._stats["samples"] += len(samples)
        self._stats["states"] += len(states)

    def _commit_transition(self, db: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        rowid: list[int] = []

        def fn() -> None:
            cur = db.execute("INSERT INTO transitions(peer, time, old, new, lastms, maxms, rtt_ms) "
                             "VALUES (?,?,?,?,?,?,?)", row)
            rowid.append(int(cur.lastrowid or 0))

        self._exec(db, fn)
        self._stats["transitions"] += 1
        if rowid and self.on_transition_committed is not None:
            try:
                self.on_transition_committed(TransitionRecord(rowid[-1], *row))
            except Exception:
                log.exception("on_transition_committed callback failed")

    def _retention(self, db: sqlite3.Connection, now: float) -> None:
        for table, keep in (("samples", self.sample_retention_s), ("transitions", self.transition_retention_s)):
            cutoff = now - keep
            while True:  # bounded chunks: one delete never holds the writer for long
                deleted: list[int] = []

                def fn(table: str = table, cutoff: float = cutoff, deleted: list[int] = deleted) -> None:
                    cur = db.execute(f"DELETE FROM {table} WHERE rowid IN "
                                     f"(SELECT rowid FROM {table} WHERE time < ? LIMIT 5000)", (cutoff,))
                    deleted.append(cur.rowcount)

                self._exec(db, fn)
                if not deleted or deleted[0] < 5000 or self._q:
                    break

    # ------------------------------------------------------------------ reads (any thread)

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
            self._local.db = db
        return db

    @staticmethod
    def _states(db: sqlite3.Connection) -> dict[str, PeerStateRecord]:
        rows = db.execute("SELECT peer, state, lastms, maxms, rtt_ms, changed_at, updated_at FROM peer_state")
        return {r[0]: PeerStateRecord(*r) for r in rows}

    def states(self) -> dict[str, PeerStateRecord]:
        return self._states(self._reader())

    def transitions(self, peer: str | None = None, since: float | None = None, until: float | None = None,
                    limit: int = 1000) -> list[TransitionRecord]:
        sql = "SELECT id, peer, time, old, new, lastms, maxms, rtt_ms FROM transitions WHERE 1=1"
        args: list[Any] = []
        if peer is not None:
            sql += " AND peer=?"
            args.append(peer)
        if since is not None:
            sql += " AND time>=?"
            args.append(since)
        if until is not None:
            sql += " AND time<=?"
            args.append(until)
        sql += " ORDER BY time, id LIMIT ?"
        args.append(limit)
        return [TransitionRecord(*r) for r in self._reader().execute(sql, args)]

    def samples(self, peer: str, since: float | None = None, until: float | None = None,
                limit: int = 10000) -> list[SampleRecord]:
        sql = "SELECT peer, time, rtt_ms, status_code, transmissions FROM samples WHERE peer=?"
        args: list[Any] = [peer]
        if since is not None:
            sql += " AND time>=?"
            args.append(since)
        if until is not None:
            sql += " AND time<=?"
            args.append(until)
        sql += " ORDER BY time LIMIT ?"
        args.append(limit)
        return [SampleRecord(*r) for r in self._reader().execute(sql, args)]

    def rtt_series(self, peer: str, since: float, until: float, step_s: float) -> list[dict[str, Any]]:
        step = max(step_s, 0.001)
        rows = self._reader().execute(
            "SELECT CAST((time - ?) / ? AS INTEGER) AS b, COUNT(*), COUNT(rtt_ms), MIN(rtt_ms), AVG(rtt_ms), "
            "MAX(rtt_ms) FROM samples WHERE peer=? AND time>=? AND time<? GROUP BY b ORDER BY b",
            (since, step, peer, since, until),
        )
        out = []
        for b, count, answered, mn, avg, mx in rows:
            out.append({
                "time": since + b * step,
                "count": count,
                "answered": answered,
                "min_ms": mn,
                "avg_ms": avg,
                "max_ms": mx,
                "loss_pct": 100.0 * (count - answered) / count if count else None,
            })
        return out
