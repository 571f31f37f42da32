"""SQLite persistence: current state per peer, every transition, RTT samples with bounded retention.

Theory of operation
-------------------
Two rules shape this module:

1. **The event loop never waits on disk.** The enqueue calls (`record_transition`,
   `record_sample`, `save_state`, `forget_peers`) take one uncontended lock, append or assign,
   and return: a fraction of a microsecond to a few. All SQLite writes happen on ONE writer
   thread that owns the only write connection.
2. **Reported implies stored.** A transition is committed in its own short transaction as
   soon as the writer sees it (pending transitions jump ahead of any batch of samples), and
   `on_transition_committed` is called on the writer thread only after that COMMIT.

Everything else is batched: samples and state upserts are committed at least every
`sample_flush_interval_s` (so a `kill -9` loses at most that much of them), state upserts are
coalesced per peer at enqueue time (so at most one pending row per peer, whatever the disk
does), and large backlogs are split into transactions of `batch_rows` rows so a backlog never
holds a transition back for long.

When the disk stalls (disk full, a lock held by another process, a slow device), writes fail
or block in the writer only. Errors are counted in `stats`, retried with backoff, forever, and
never reach the caller; `health()` reports the failure with its cause (logged once per episode
on the "sipqualify.store" logger; the episode ends at the next successful commit), and so does
a database file removed or replaced under the running store (checked at most once a second).
The only thing ever dropped is samples: their queue is bounded (`max_queued_samples`), and
overflow is counted in `stats["samples_dropped"]`. Transitions are never dropped; state
upserts are bounded by the number of peers.

Durability: WAL with `synchronous=NORMAL`. A COMMIT is in the WAL file (the OS page cache)
when it returns, so it survives the process being killed; only a power loss can roll back
the last commits, which is the trade WAL+NORMAL makes for throughput.

Rollups: the time windows of `GET /api/v1/peers/NAME/stats` (store/windows.py) read summary
tables the writer keeps (store/rollup.py): `rtt_rollup` (per 5-minute bucket and peer: counts
and an RTT histogram), upserted once per (bucket, peer) per batch in the samples' own
transaction; `uptime_rollup` (per hour and peer: seconds observed and up) and `uptime_spans`
(state intervals longer than 2 h, whole), credited for each interval a transition closes right
after the transitions' commit and callbacks, in a transaction of their own that also moves the
`rollup_marks` mark (so exactly once; open() catches up after a crash). Retention prunes them
with the samples and after 31 days; a migration builds them once from an older database's rows.

Reads use a small pool of read-only connections (WAL lets them run while the writer writes)
and may be called from any thread; the service calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from . import rollup
from .rollup import RTT_BUCKET_S, UPTIME_BUCKET_S, UPTIME_KEEP_S, RttCell
from .windows import PERCENTILES, REACHABLE, RTT_WINDOWS, UNOBSERVED, UPTIME_WINDOWS, percentile, uptime_seconds

log = logging.getLogger("sipqualify.store")

_T = TypeVar("_T")
Row = tuple[Any, ...]
Step = str | Callable[[sqlite3.Connection], None]  # a statement, or Python run in the step's transaction

# MIGRATIONS[i] upgrades a database from PRAGMA user_version i to i + 1. Append, never edit:
# a released step is what existing databases already went through.
MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS peer_state (
            peer TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            lastms INTEGER NOT NULL,
            maxms INTEGER NOT NULL,
            rtt_ms REAL,
            changed_at REAL,
            updated_at REAL NOT NULL
        )""",
        # AUTOINCREMENT: ids stay monotonic even after retention deleted the newest rows.
        """CREATE TABLE IF NOT EXISTS transitions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            peer TEXT NOT NULL,
            time REAL NOT NULL,
            old TEXT NOT NULL,
            new TEXT NOT NULL,
            lastms INTEGER NOT NULL,
            maxms INTEGER NOT NULL,
            rtt_ms REAL
        )""",
        "CREATE INDEX IF NOT EXISTS transitions_peer_time ON transitions(peer, time)",
        "CREATE INDEX IF NOT EXISTS transitions_time ON transitions(time)",
        """CREATE TABLE IF NOT EXISTS samples (
            peer TEXT NOT NULL,
            time REAL NOT NULL,
            rtt_ms REAL,
            status_code INTEGER,
            transmissions INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS samples_peer_time ON samples(peer, time)",
        # retention deletes by time across all peers; without this it would scan the table
        "CREATE INDEX IF NOT EXISTS samples_time ON samples(time)",
    ),
    # why a transition to UNREACHABLE happened when a connection could not be opened (TCP/TLS)
    ("ALTER TABLE transitions ADD COLUMN reason TEXT",),
    # why our notifications (webhooks) of a transition are held back: flapping, silenced; NULL: they are not
    ("ALTER TABLE transitions ADD COLUMN suppressed TEXT",),
    # the peer's verdict, its reason and its policy at the transition (qualify/verdict.py; issue 13)
    ("ALTER TABLE transitions ADD COLUMN verdict TEXT", "ALTER TABLE transitions ADD COLUMN verdict_reason TEXT",
     "ALTER TABLE transitions ADD COLUMN policy TEXT"),
    # the incremental rollups behind the time windows (store/rollup.py; issue 13 item 6), built once
    # from the samples and transitions an existing database already holds. Keyed by bucket first:
    # a batch's upserts land in the few newest buckets (a small, hot part of the tree, whatever the
    # number of peers), retention deletes a key prefix, and a peer's window is one seek per bucket
    # (`bucket IN (...) AND peer=?`).
    (
        """CREATE TABLE IF NOT EXISTS rtt_rollup (
            peer TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            n INTEGER NOT NULL,
            answered INTEGER NOT NULL,
            min_ms REAL,
            max_ms REAL,
            hist BLOB NOT NULL,
            PRIMARY KEY (bucket, peer)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS uptime_rollup (
            peer TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            up_s REAL NOT NULL,
            seen_s REAL NOT NULL,
            PRIMARY KEY (bucket, peer)
        ) WITHOUT ROWID""",
        # state intervals longer than rollup.SPAN_S, whole: [t0, t1), up 1 (OK, LAGGED) or 0
        """CREATE TABLE IF NOT EXISTS uptime_spans (
            peer TEXT NOT NULL,
            t0 REAL NOT NULL,
            t1 REAL NOT NULL,
            up INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS uptime_spans_peer_t1 ON uptime_spans(peer, t1)",
        "CREATE INDEX IF NOT EXISTS uptime_spans_t1 ON uptime_spans(t1)",
        # the last transition credited to the uptime rollup (_credit_uptime)
        "CREATE TABLE IF NOT EXISTS rollup_marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        "INSERT OR IGNORE INTO rollup_marks(name, value) VALUES ('uptime_credited_id', 0)",
        lambda db: _build_rollups(db),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_TRANSITION = ("INSERT INTO transitions(peer, time, old, new, lastms, maxms, rtt_ms, reason, suppressed, "
                      "verdict, verdict_reason, policy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
_TRANSITION_COLS = ("id, peer, time, old, new, lastms, maxms, rtt_ms, reason, suppressed, verdict, verdict_reason, "
                    "policy")
_INSERT_SAMPLE = "INSERT INTO samples(peer, time, rtt_ms, status_code, transmissions) VALUES (?,?,?,?,?)"
_UPSERT_STATE = (
    "INSERT INTO peer_state(peer, state, lastms, maxms, rtt_ms, changed_at, updated_at) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT(peer) DO UPDATE SET state=excluded.state, lastms=excluded.lastms, maxms=excluded.maxms, "
    "rtt_ms=excluded.rtt_ms, changed_at=excluded.changed_at, updated_at=excluded.updated_at"
)
_DELETE_STATE = "DELETE FROM peer_state WHERE peer=?"
# hist_merge: rollup.merge_blobs, registered on the write connection (_connect); below
# rollup.COMPACT_BYTES a histogram is appended to in SQL alone
_UPSERT_RTT_ROLLUP = (
    "INSERT INTO rtt_rollup(peer, bucket, n, answered, min_ms, max_ms, hist) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT(bucket, peer) DO UPDATE SET n=n+excluded.n, answered=answered+excluded.answered, "
    "min_ms=COALESCE(MIN(min_ms, excluded.min_ms), min_ms, excluded.min_ms), "
    "max_ms=COALESCE(MAX(max_ms, excluded.max_ms), max_ms, excluded.max_ms), "
    f"hist=CASE WHEN length(hist) + length(excluded.hist) > {rollup.COMPACT_BYTES} "
    "THEN hist_merge(hist, excluded.hist) ELSE CAST(hist || excluded.hist AS BLOB) END"
)
_UPSERT_UPTIME_ROLLUP = (
    "INSERT INTO uptime_rollup(peer, bucket, up_s, seen_s) VALUES (?,?,?,?) "
    "ON CONFLICT(bucket, peer) DO UPDATE SET up_s=up_s+excluded.up_s, seen_s=seen_s+excluded.seen_s"
)
_INSERT_UPTIME_SPAN = "INSERT INTO uptime_spans(peer, t0, t1, up) VALUES (?,?,?,?)"
_RETAINED_TABLES = ("samples", "transitions", "rtt_rollup", "uptime_rollup", "uptime_spans")


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
    reason: str | None = None  # a connection failure behind a transition to UNREACHABLE
    suppressed: str | None = None  # flapping | silenced: webhooks held back for it (README); None: not
    verdict: str | None = None  # the peer's verdict at the transition (qualify/verdict.py); None: not known
    verdict_reason: str | None = None  # its reason ("" none: `timeout`, `reply:404`, ...)
    policy: str | None = None  # the name of its [[policies]] table ("" none)


@dataclass(frozen=True, slots=True)
class SampleRecord:
    peer: str
    time: float
    rtt_ms: float | None
    status_code: int | None
    transmissions: int


class _Abandoned(Exception):
    """close() gave up waiting for a stalled disk; the writer stops retrying."""


class Store:
    def __init__(
        self,
        path: str,
        *,
        sample_retention_s: float = 7 * 86400,
        transition_retention_s: float = 90 * 86400,
        sample_flush_interval_s: float = 0.5,
        on_transition_committed: Callable[[TransitionRecord], None] | None = None,
        max_queued_samples: int = 200_000,
        batch_rows: int = 10_000,
        retention_interval_s: float = 60.0,
        retention_chunk_rows: int = 5_000,
        busy_timeout_s: float = 1.0,
        transition_window_s: float = 0.005,
    ) -> None:
        if not 0 < sample_flush_interval_s <= 1.0:
            raise ValueError("sample_flush_interval_s must be in (0, 1] seconds")
        self.path = path
        self.sample_retention_s = sample_retention_s
        self.transition_retention_s = transition_retention_s
        self.sample_flush_interval_s = sample_flush_interval_s
        self.on_transition_committed = on_transition_committed
        self.max_queued_samples = max_queued_samples
        self.batch_rows = batch_rows
        self.retention_interval_s = retention_interval_s
        self.retention_chunk_rows = retention_chunk_rows
        self.busy_timeout_s = busy_timeout_s
        # transitions arriving within this window of the first go in one commit (a registration
        # burst makes thousands of UNKNOWN -> Reachable a second): a few ms more before the event
        self.transition_window_s = transition_window_s

        # Everything below the lock is shared between enqueuers and the writer.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._transitions: list[Row] = []
        self._samples: list[Row] = []
        self._states: dict[str, Row] = {}
        self._forgotten: set[str] = set()
        self._flush_waiters: list[threading.Event] = []
        self._stop = False
        self._samples_dropped = 0
        # wake the writer early when samples pile up faster than the flush interval drains them
        self._sample_wake_at = max(1, min(batch_rows, max_queued_samples // 2))

        self._abandon = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        # Writer-thread-only counters (read racily by `stats`, which is fine for monitoring).
        self._n: dict[str, int] = {
            "commits": 0,
            "transitions_written": 0,
            "samples_written": 0,
            "states_written": 0,
            "states_deleted": 0,
            "retention_deleted": 0,
            "rollup_rows_written": 0,
            "rollup_rows_deleted": 0,
            "rows_rejected": 0,
            "errors": 0,
            "callback_errors": 0,
        }
        self._last_commit_ms = 0.0
        self._max_commit_ms = 0.0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._failing_cause: str | None = None
        self._vanished: str | None = None
        self._vanished_since: float | None = None
        self._file_id: tuple[int, int] | None = None
        self._next_file_check = 0.0
        self._anchor()

    def _anchor(self) -> None:
        # Retention measures age against the wall clock read once, here, and advanced by
        # monotonic time: a wall-clock step while running (NTP, `date -s`) moves nothing. The
        # service stamps rows the same way (its wall offset is fixed at start), so rows written
        # since start age exactly by elapsed time: a +91 d step deletes none of them early and a
        # -N step keeps none of them past its window. Only rows from earlier runs depend on the
        # clock being right at start; if it was N ahead or behind then, they go N early or late,
        # once, and never "never".
        self._wall_at_start = time.time()
        self._mono_at_start = time.monotonic()

    def _retention_now(self) -> float:
        return self._wall_at_start + (time.monotonic() - self._mono_at_start)

    # ------------------------------------------------------------------ lifecycle

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False, isolation_level=None)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: journal_mode is %s, not WAL; readers will block the writer", self.path, mode)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA journal_size_limit=67108864")  # truncate the WAL back to 64 MiB after checkpoints
        db.execute("PRAGMA cache_size=-65536")  # 64 MiB: a million peer_state rows stay hot
        db.execute("PRAGMA temp_store=MEMORY")
        db.create_function("hist_merge", 2, rollup.merge_blobs, deterministic=True)
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this build ({SCHEMA_VERSION})")
        for v in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[v]:
                    if isinstance(stmt, str):
                        db.execute(stmt)
                    else:
                        stmt(db)
                db.execute(f"PRAGMA user_version={v + 1}")  # transactional: rolls back with the step
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            log.info("%s: schema migrated to version %d", self.path, v + 1)

    def open(self) -> dict[str, PeerStateRecord]:
        """Create or migrate the schema, start the writer thread, return the last stored state per peer."""
        if self._thread is not None or self._closed:
            raise RuntimeError("Store.open() called twice")
        db = self._connect()
        try:
            self._migrate(db)
            db.execute("BEGIN IMMEDIATE")  # transitions committed but not credited before a crash
            try:
                _credit_uptime(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            states = _read_states(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._file_id = _file_id(self.path)
        self._anchor()
        self._thread = threading.Thread(target=self._run, args=(db,), name="sipqualify-store", daemon=True)
        self._thread.start()
        return states

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the writer and close every connection. If the disk is stalled for longer than
        `timeout`, pending rows are abandoned (and logged) rather than hanging shutdown."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None:
            with self._wake:
                self._stop = True
                self._wake.notify()
            thread.join(timeout)
            if thread.is_alive():
                log.error("store writer still blocked after %.0f s; abandoning unwritten rows", timeout)
                self._abandon.set()
                thread.join(5.0)
            self._thread = None
        if self._db is not None and (thread is None or not thread.is_alive()):
            self._db.close()
            self._db = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for r in readers:
            r.close()

    def flush(self, timeout: float = 5.0) -> None:
        """Block until everything enqueued before this call is committed (or `timeout` passes)."""
        thread = self._thread
        if thread is None or threading.current_thread() is thread:
            return  # not running, or called from a callback on the writer: waiting would deadlock
        ev = threading.Event()
        with self._wake:
            self._flush_waiters.append(ev)
            self._wake.notify()
        if not ev.wait(timeout):
            log.warning("store flush timed out after %.1f s (queue: %s)", timeout, self._depths())

    # ------------------------------------------------------------------ enqueue (event loop; never blocks)

    def record_transition(
        self, peer: str, time: float, old: str, new: str, lastms: int, maxms: int, rtt_ms: float | None,
        reason: str | None = None, suppressed: str | None = None, verdict: str | None = None,
        verdict_reason: str | None = None, policy: str | None = None,
    ) -> None:
        row = (peer, time, old, new, lastms, maxms, rtt_ms, reason, suppressed, verdict, verdict_reason, policy)
        with self._wake:
            self._transitions.append(row)
            self._wake.notify()

    def record_sample(
        self, peer: str, time: float, rtt_ms: float | None, status_code: int | None, transmissions: int
    ) -> None:
        with self._lock:
            q = self._samples
            n = len(q)
            if n >= self.max_queued_samples or self._closed:
                self._samples_dropped += 1
                return
            q.append((peer, time, rtt_ms, status_code, transmissions))
            if n + 1 == self._sample_wake_at:
                self._wake.notify()

    def save_state(
        self,
        peer: str,
        state: str,
        lastms: int,
        maxms: int,
        rtt_ms: float | None,
        changed_at: float | None,
        updated_at: float,
    ) -> None:
        row = (peer, state, lastms, maxms, rtt_ms, changed_at, updated_at)
        with self._lock:
            self._states[peer] = row  # coalesced: the last update of a peer in a batch wins
            if self._forgotten:
                self._forgotten.discard(peer)

    def forget_peers(self, names: Iterable[str]) -> None:
        names = list(names)
        if not names:
            return
        with self._lock:
            for name in names:
                self._states.pop(name, None)
                self._forgotten.add(name)

    # ------------------------------------------------------------------ stats

    def _depths(self) -> dict[str, int]:
        with self._lock:
            return {
                "queued_transitions": len(self._transitions),
                "queued_samples": len(self._samples),
                "queued_states": len(self._states),
                "queued_forgets": len(self._forgotten),
            }

    @property
    def stats(self) -> dict[str, Any]:
        """Counters for /status and metrics. Plain JSON values."""
        d: dict[str, Any] = self._depths()
        d["queue"] = sum(d.values())
        d.update(self._n)
        d["samples_dropped"] = self._samples_dropped
        d["last_commit_ms"] = round(self._last_commit_ms, 3)
        d["max_commit_ms"] = round(self._max_commit_ms, 3)
        d["last_error"] = self._last_error
        d["failing"] = self._failing_since is not None
        d["writer_alive"] = self._thread is not None and self._thread.is_alive()
        return d

    def health(self) -> dict[str, Any]:
        """`ok`, and while not: the `cause` and `since` (wall time) of the current failure.

        Failing means writes are not reaching the database file the daemon will read at its next
        start: commits failing (disk full, read-only, I/O, locked), the writer thread gone, or the
        file removed or replaced under us (writes then go to a deleted inode, lost at restart).
        """
        cause: str | None = None
        since: float | None = None
        if self._vanished is not None:
            cause, since = self._vanished, self._vanished_since
        elif self._failing_since is not None:
            cause, since = self._failing_cause or self._last_error, self._failing_since
        elif self._thread is not None and not self._thread.is_alive() and not self._closed:
            cause = "the store writer thread has stopped"
        if cause is None:
            return {"ok": True, "cause": None, "since": None}
        wall_since = None if since is None else time.time() - (time.monotonic() - since)
        return {"ok": False, "cause": cause, "since": wall_since}

    def _check_file(self) -> None:
        """Writer thread, at most once a second: is the path still the file we have open?"""
        now = time.monotonic()
        if self._vanished is not None or now < self._next_file_check or self._file_id is None:
            return
        self._next_file_check = now + 1.0
        try:
            current = _file_id(self.path)
        except OSError:
            return  # cannot tell (permissions, a flaky mount): a failing commit will say more
        if current == self._file_id:
            return
        self._vanished_since = now
        self._vanished = (f"database file {self.path} was removed or replaced while open; what is "
                          "written now is lost at restart (restart the daemon to recreate it)")
        log.error("store: %s", self._vanished)

    # ------------------------------------------------------------------ writer thread

    def _run(self, db: sqlite3.Connection) -> None:
        interval = self.sample_flush_interval_s
        next_batch = time.monotonic() + interval
        next_retention = time.monotonic()  # a restart after a long outage trims at once
        retention_todo: list[str] = []
        while True:
            try:
                self._check_file()
                with self._wake:
                    while not (self._transitions or self._flush_waiters or self._stop):
                        now = time.monotonic()
                        if len(self._samples) >= self._sample_wake_at or now >= next_batch:
                            break
                        if retention_todo or now >= next_retention:
                            break
                        self._wake.wait(min(next_batch, next_retention) - now)
                    linger = (self.transition_window_s > 0 and 0 < len(self._transitions) < 1000
                              and not (self._flush_waiters or self._stop))
                if linger:  # outside the lock: the burst's other transitions join this commit
                    time.sleep(self.transition_window_s)
                with self._wake:
                    transitions, self._transitions = self._transitions, []
                    flushes, self._flush_waiters = self._flush_waiters, []
                    stop = self._stop
                    now = time.monotonic()
                    batch = None
                    if flushes or stop or now >= next_batch or len(self._samples) >= self._sample_wake_at:
                        batch = (self._samples, self._states, self._forgotten)
                        self._samples, self._states, self._forgotten = [], {}, set()
                        # paced from when the batch was taken, so a sample waits at most one
                        # interval plus the time it takes to write the batch before it
                        next_batch = now + interval
                if transitions:
                    self._write_transitions(db, transitions)
                if batch is not None:
                    self._write_batch(db, *batch)
                for ev in flushes:
                    ev.set()
                if stop:
                    with self._lock:
                        idle = not (self._transitions or self._samples or self._states or self._forgotten)
                    if idle:
                        return
                    continue
                if batch is None and not transitions:
                    if not retention_todo and time.monotonic() >= next_retention:
                        retention_todo = list(_RETAINED_TABLES)
                        next_retention = time.monotonic() + self.retention_interval_s
                    if retention_todo and not self._retention_chunk(db, retention_todo[0]):
                        retention_todo.pop(0)
            except _Abandoned:
                return
            except Exception:  # last resort: the writer thread must not die
                self._n["errors"] += 1
                log.exception("store writer: unexpected error; continuing")
                if self._abandon.wait(0.5):
                    return

    def _service_transitions(self, db: sqlite3.Connection) -> None:
        """Between chunks of a large batch: commit any transition that arrived meanwhile first."""
        if self._transitions:
            with self._lock:
                transitions, self._transitions = self._transitions, []
            if transitions:
                self._write_transitions(db, transitions)

    def _write_transitions(self, db: sqlite3.Connection, rows: list[Row]) -> None:
        # All transitions pending right now go in one short transaction: no batching delay, and
        # a mass outage (100k peers UNREACHABLE at once) does not cost 100k fsync-less commits.
        for i in range(0, len(rows), 10_000):
            chunk = rows[i : i + 10_000]
            ok, ids = self._transact(db, partial(_insert_transitions, rows=chunk))
            if ok:
                self._transitions_committed(chunk, ids)
                continue
            for row in chunk:  # a row the database refuses: isolate it, keep the others
                ok, ids = self._transact(db, partial(_insert_transitions, rows=[row]))
                if ok:
                    self._transitions_committed([row], ids)
                else:
                    self._reject("transition", row)
        # after the COMMIT and its callbacks: the uptime rollup never delays a transition's event
        ok, n = self._transact(db, _credit_uptime)
        self._n["rollup_rows_written"] += n or 0

    def _transitions_committed(self, rows: list[Row], ids: list[int] | None) -> None:
        assert ids is not None
        self._n["transitions_written"] += len(rows)
        cb = self.on_transition_committed
        if cb is None:
            return
        for row, rowid in zip(rows, ids, strict=True):
            try:
                cb(TransitionRecord(rowid, *row))
            except Exception:
                self._n["callback_errors"] += 1
                log.exception("on_transition_committed callback failed")

    def _write_batch(
        self, db: sqlite3.Connection, samples: list[Row], states: dict[str, Row], forgotten: set[str]
    ) -> None:
        ops: list[tuple[str, str, list[Row]]] = []
        if forgotten:
            ops.append(("states_deleted", _DELETE_STATE, [(n,) for n in forgotten]))
        if states:
            ops.append(("states_written", _UPSERT_STATE, list(states.values())))
        if samples:
            ops.append(("samples_written", _INSERT_SAMPLE, samples))
        for txn in _split(ops, self.batch_rows):
            self._service_transitions(db)
            ok, rolled = self._transact(db, partial(_execute_many, txn=txn))
            if ok:
                for counter, _sql, rows in txn:
                    self._n[counter] += len(rows)
                self._n["rollup_rows_written"] += rolled or 0
                continue
            for counter, sql, rows in txn:  # isolate the refused rows
                for row in rows:
                    ok, rolled = self._transact(db, partial(_execute_one, sql=sql, row=row))
                    if ok:
                        self._n[counter] += 1
                        self._n["rollup_rows_written"] += rolled or 0
                    else:
                        self._reject(counter, row)

    def _retention_chunk(self, db: sqlite3.Connection, table: str) -> bool:
        """Delete one bounded chunk of expired rows; True if there may be more. A rollup bucket goes
        once all of it is expired: the RTT rollup with the samples, the uptime rollup after 31 d."""
        now = self._retention_now()
        if table == "rtt_rollup":
            cutoff, counter = now - self.sample_retention_s - RTT_BUCKET_S, "rollup_rows_deleted"
        elif table in ("uptime_rollup", "uptime_spans"):
            cutoff, counter = now - UPTIME_KEEP_S - UPTIME_BUCKET_S, "rollup_rows_deleted"
        else:
            keep = self.sample_retention_s if table == "samples" else self.transition_retention_s
            cutoff, counter = now - keep, "retention_deleted"
        if table in ("rtt_rollup", "uptime_rollup"):  # WITHOUT ROWID: by primary key
            sql = (f"DELETE FROM {table} WHERE (bucket, peer) IN "
                   f"(SELECT bucket, peer FROM {table} WHERE bucket < ? LIMIT ?)")
        else:
            col = "t1" if table == "uptime_spans" else "time"
            sql = f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {col} < ? LIMIT ?)"
        ok, n = self._transact(
            db, lambda db: db.execute(sql, (cutoff, self.retention_chunk_rows)).rowcount, persist=False
        )
        if not ok or n is None:
            return False
        self._n[counter] += n
        return n >= self.retention_chunk_rows

    def _reject(self, what: str, row: Row) -> None:
        self._n["rows_rejected"] += 1
        log.error("store: dropping a %s row the database refuses: %r", what, row)

    def _transact(
        self, db: sqlite3.Connection, body: Callable[[sqlite3.Connection], _T], *, persist: bool = True
    ) -> tuple[bool, _T | None]:
        """Run `body` in one write transaction.

        Operational errors (locked, busy, disk full, I/O) are retried with backoff until they
        succeed or close() abandons the writer; with `persist=False` (housekeeping that can wait
        for its next turn) the first one returns (False, None) instead. Any other error means the
        rows themselves are refused (bad types, constraint): returns (False, None) so the caller
        can isolate them.
        """
        delay = 0.05
        while True:
            t0 = time.perf_counter()
            try:
                db.execute("BEGIN IMMEDIATE")
                result = body(db)
                db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                self._rollback(db)
                if not persist:
                    # housekeeping (retention) tries again at its next turn; it loses no data, so
                    # on its own it does not make the store unhealthy
                    self._n["errors"] += 1
                    self._last_error = f"{type(e).__name__}: {e}"
                    log.debug("store housekeeping failed (%s); next turn", self._last_error)
                    return False, None
                self._failed(e, transient=True)
                if self._abandon.wait(delay):
                    raise _Abandoned from e
                delay = min(delay * 2, 2.0)
                continue
            except Exception as e:  # binding a bad value raises TypeError / OverflowError, not sqlite3.Error
                self._rollback(db)
                self._failed(e, transient=False)
                return False, None
            ms = (time.perf_counter() - t0) * 1000.0
            self._n["commits"] += 1
            self._last_commit_ms = ms
            if ms > self._max_commit_ms:
                self._max_commit_ms = ms
            if self._failing_since is not None:
                log.warning("store writes recovered after %.1f s", time.monotonic() - self._failing_since)
                self._failing_since = None
                self._failing_cause = None
            return True, result

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _failed(self, e: Exception, *, transient: bool) -> None:
        self._n["errors"] += 1
        self._last_error = f"{type(e).__name__}: {e}"
        now = time.monotonic()
        if not transient:
            return  # the caller logs the row it rejects
        if self._failing_since is None:
            # once per episode (it ends at the next successful commit): a full disk fails every
            # retry, and the first error is the one that names the cause
            self._failing_since = now
            self._failing_cause = self._last_error
            log.error("store writes failing (%s); retrying until they succeed, queue %s",
                      self._last_error, self._depths())

    # ------------------------------------------------------------------ reads (any thread)

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            db = self._readers.pop() if self._readers else None
        if db is None:
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False, isolation_level=None)
        try:
            yield db
        finally:
            with self._readers_lock:
                if self._closed or len(self._readers) >= 8:
                    db.close()
                else:
                    self._readers.append(db)

    def states(self) -> dict[str, PeerStateRecord]:
        with self._reader() as db:
            return _read_states(db)

    def transitions(
        self, peer: str | None = None, since: float | None = None, until: float | None = None, limit: int = 1000
    ) -> list[TransitionRecord]:
        """Transitions in time order (oldest first), `since <= time <= until`."""
        where, args = _where(peer, since, until)
        sql = f"SELECT {_TRANSITION_COLS} FROM transitions{where} ORDER BY time, id LIMIT ?"
        with self._reader() as db:
            return [TransitionRecord(*r) for r in db.execute(sql, (*args, limit))]

    def last_transition_id(self) -> int:
        with self._reader() as db:
            return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM transitions").fetchone()[0])

    def transitions_after(self, last_id: int, limit: int = 10000) -> list[TransitionRecord]:
        """Transitions with an id above `last_id`, in id (= commit) order: resuming an event stream."""
        sql = f"SELECT {_TRANSITION_COLS} FROM transitions WHERE id > ? ORDER BY id LIMIT ?"
        with self._reader() as db:
            return [TransitionRecord(*r) for r in db.execute(sql, (last_id, limit))]

    def samples(
        self, peer: str, since: float | None = None, until: float | None = None, limit: int = 10000
    ) -> list[SampleRecord]:
        """Samples of one peer in time order (oldest first), `since <= time <= until`."""
        where, args = _where(peer, since, until)
        sql = f"SELECT peer, time, rtt_ms, status_code, transmissions FROM samples{where} ORDER BY time LIMIT ?"
        with self._reader() as db:
            return [SampleRecord(*r) for r in db.execute(sql, (*args, limit))]

    def recent_samples(self, peers: Iterable[str], n: int) -> dict[str, list[SampleRecord]]:
        """The last `n` samples of each of `peers`, oldest first (a dashboard's heartbeat bars)."""
        sql = ("SELECT peer, time, rtt_ms, status_code, transmissions FROM samples WHERE peer=? "
               "ORDER BY time DESC LIMIT ?")
        with self._reader() as db:
            return {p: [SampleRecord(*r) for r in reversed(db.execute(sql, (p, n)).fetchall())] for p in peers}

    def windows(self, peer: str, now: float) -> dict[str, Any]:
        """`GET /api/v1/peers/NAME/stats`'s history part (store/windows.py): RTT percentiles of the
        answered samples of the last 5 min / 1 h / 24 h and uptime over the last 24 h / 7 d / 30 d,
        from the rollups (store/rollup.py): see `rtt_windows` and `uptime_window`."""
        rtt, _ = self.rtt_windows(peer, now)
        up: dict[str, Any] = {}
        for name, span in UPTIME_WINDOWS:
            pct, seen = self.uptime_window(peer, now - span, now)
            up[name] = {"pct": round(pct, 4) if pct is not None else None, "observed_s": round(seen, 1)}
        return {"rtt_windows": rtt, "uptime": up}

    def rtt_windows(self, peer: str, now: float) -> tuple[dict[str, Any], int]:
        """The RTT windows and the number of rows read for them. A window of at most one bucket
        (5 min) is exact, from its raw samples. A longer one is cut at 5-minute bucket
        boundaries: its whole buckets come from the RTT rollup (at most 288 rows for 24 h), its
        two partial edge buckets from the raw samples (at most 5 min of them each); so the sample
        counts are exact and the percentiles within rollup.REL_ERROR of the nearest rank."""
        tail = rollup.bucket_of(now, RTT_BUCKET_S)  # the current bucket, partial: raw
        raw_sql = "SELECT time, rtt_ms FROM samples WHERE peer=? AND time>=? AND time<? AND rtt_ms IS NOT NULL"
        recent_from = min(tail, now - min(span for _, span in RTT_WINDOWS))
        rtt: dict[str, Any] = {}
        with self._reader() as db:
            recent = db.execute(raw_sql.replace("time<?", "time<=?"), (peer, recent_from, now)).fetchall()
            read = len(recent)
            heads = {name: -(-(now - span) // RTT_BUCKET_S) * RTT_BUCKET_S for name, span in RTT_WINDOWS
                     if span > RTT_BUCKET_S}  # the first whole bucket of each long window
            rows: list[Row] = []
            if heads:
                rows = _rollup_rows(db, "bucket, n, answered, min_ms, max_ms, hist FROM rtt_rollup", peer,
                                    range(int(min(heads.values())), tail, RTT_BUCKET_S))
                read += len(rows)
            for name, span in RTT_WINDOWS:
                since = now - span
                if name not in heads:
                    values = sorted(r for t, r in recent if t >= since)
                    rtt[name] = {"samples": len(values), **{f"p{q}_ms": percentile(values, q) for q in PERCENTILES}}
                    continue
                head = heads[name]
                edge = db.execute(raw_sql, (peer, since, min(head, tail))).fetchall()
                read += len(edge)
                cell = RttCell()
                for _t, r in edge:
                    cell.add(r)
                for t, r in recent:
                    if t >= max(tail, since):
                        cell.add(r)
                cell.merge_rows(r[1:] for r in rows if head <= r[0] < tail)
                rtt[name] = {"samples": cell.answered, **{f"p{q}_ms": cell.percentile(q) for q in PERCENTILES}}
        return rtt, read

    def uptime_window(self, peer: str, since: float, until: float) -> tuple[float | None, float]:
        """(uptime %, seconds observed) over `[since, until]` (store/windows.py). The whole hours
        come from the uptime rollup (at most 720 rows for 30 d, summed by SQLite) plus the state
        interval still open and the long intervals (`uptime_spans`, at most 30 d / 2 h of them);
        the partial hours at both edges from the transitions in them."""
        up, seen = self.uptime_seconds(peer, since, until)
        return (100.0 * up / seen if seen > 0 else None), seen

    def uptime_seconds(self, peer: str, since: float, until: float) -> tuple[float, float]:
        h = UPTIME_BUCKET_S
        first, last = -(-since // h) * h, rollup.bucket_of(until, h)  # the whole hours: [first, last)
        with self._reader() as db:
            if last <= first:  # under two hours: from the transitions alone
                return _uptime_raw(db, peer, since, until)
            head_up, head_seen = _uptime_raw(db, peer, since, first)
            tail_up, tail_seen = _uptime_raw(db, peer, last, until)
            ((up, seen),) = _rollup_rows(db, "COALESCE(SUM(up_s), 0), COALESCE(SUM(seen_s), 0) FROM uptime_rollup",
                                         peer, range(int(first), last, h))
            # the long intervals, whole: their overlap with the whole hours
            span_up, span_seen = db.execute(
                "SELECT COALESCE(SUM((MIN(t1, ?) - MAX(t0, ?)) * up), 0), COALESCE(SUM(MIN(t1, ?) - MAX(t0, ?)), 0) "
                "FROM uptime_spans WHERE peer=? AND t1>? AND t0<?", (last, first, last, first, peer, first, last)
            ).fetchone()
            up += span_up
            seen += span_seen
            # the interval of the last state before the tail is credited when a transition ends it
            state = _state_before(db, peer, last, writing=False)
            if state is not None and db.execute("SELECT 1 FROM transitions WHERE peer=? AND time>=? LIMIT 1",
                                                (peer, last)).fetchone() is None:
                for _b, u, s in rollup.credit(state[1], max(state[0], first), last):
                    up += u
                    seen += s
        return head_up + up + tail_up, head_seen + seen + tail_seen

    def rtt_series(self, peer: str, since: float, until: float, step_s: float) -> list[dict[str, Any]]:
        """Samples in `[since, until)` grouped in buckets of `step_s` seconds starting at `since`.

        One dict per bucket that holds at least one sample (empty buckets are omitted):
        `time` (bucket start), `count` (samples), `answered` (samples with an RTT),
        `min_ms` / `avg_ms` / `max_ms` over the answered ones (None if none answered) and
        `loss_pct` = 100 * (count - answered) / count.
        """
        if not step_s > 0:
            raise ValueError("step_s must be > 0")
        sql = (
            "SELECT CAST((time - ?) / ? AS INTEGER) AS b, COUNT(*), COUNT(rtt_ms), MIN(rtt_ms), AVG(rtt_ms), "
            "MAX(rtt_ms) FROM samples WHERE peer=? AND time>=? AND time<? GROUP BY b ORDER BY b"
        )
        with self._reader() as db:
            rows = db.execute(sql, (since, step_s, peer, since, until)).fetchall()
        return [
            {
                "time": since + b * step_s,
                "count": count,
                "answered": answered,
                "min_ms": mn,
                "avg_ms": avg,
                "max_ms": mx,
                "loss_pct": 100.0 * (count - answered) / count,
            }
            for b, count, answered, mn, avg, mx in rows
        ]


# ---------------------------------------------------------------------- helpers


class FileWatch:
    """Notices that a database file was removed or replaced since it was opened (SQLite keeps
    writing to the open, deleted inode without an error)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._id = _file_id(path)
        self._failure: dict[str, Any] | None = None

    def check(self) -> dict[str, Any] | None:
        """None while the path is the file opened; else the cause and since (logged once)."""
        if self._failure is None and self._id is not None:
            try:
                current = _file_id(self.path)
            except OSError:
                return None
            if current != self._id:
                cause = (f"database file {self.path} was removed or replaced while open; what is written "
                         "now is lost at restart (restart the daemon to recreate it)")
                log.error("store: %s", cause)
                self._failure = {"cause": cause, "since": time.time()}
        return self._failure


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of `path`, None if it does not exist: what identifies the open file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _read_states(db: sqlite3.Connection) -> dict[str, PeerStateRecord]:
    rows = db.execute("SELECT peer, state, lastms, maxms, rtt_ms, changed_at, updated_at FROM peer_state")
    return {r[0]: PeerStateRecord(*r) for r in rows}


def _insert_transitions(db: sqlite3.Connection, rows: list[Row]) -> list[int]:
    """One executemany; the ids are consecutive (AUTOINCREMENT, one writer, one transaction),
    so they are read back from sqlite_sequence instead of one execute per row."""
    if len(rows) == 1:
        return [int(db.execute(_INSERT_TRANSITION, rows[0]).lastrowid or 0)]
    db.executemany(_INSERT_TRANSITION, rows)
    last = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name='transitions'").fetchone()[0])
    return list(range(last - len(rows) + 1, last + 1))


def _execute_one(db: sqlite3.Connection, sql: str, row: Row) -> int:
    db.execute(sql, row)
    return _rollup_samples(db, [row]) if sql is _INSERT_SAMPLE else 0


def _execute_many(db: sqlite3.Connection, txn: list[tuple[str, str, list[Row]]]) -> int:
    """The rows, and the RTT rollup of the samples among them; the number of rollup rows written."""
    rolled = 0
    for _counter, sql, rows in txn:
        db.executemany(sql, rows)
        if sql is _INSERT_SAMPLE:
            rolled += _rollup_samples(db, rows)
    return rolled


def _rollup_samples(db: sqlite3.Connection, rows: list[Row]) -> int:
    """Add sample rows to the RTT rollup: summarised per (peer, bucket) first, so each rollup row
    is written once per batch (one upsert; the histograms merge in hist_merge)."""
    summary = rollup.rollup_rows(rows)
    db.executemany(_UPSERT_RTT_ROLLUP, summary)
    return len(summary)


def _state_before(db: sqlite3.Connection, peer: str, t: float, *, writing: bool,
                  before_id: int = 0) -> tuple[float, str] | None:
    """(since when, state) of `peer` just before time `t`: its last transition (before `t`; when
    `writing` a transition at `t`, one already stored at `t` too), or when none is kept (older than
    the transition retention) its saved state if that changed before `t` (at `t` too when reading;
    never when writing: a saved state already committed for this very transition says nothing
    about the time before it). When reading and neither is there, the state its next transition
    left, at `t`."""
    if writing:  # the transition with id `before_id` is stored: the one before it in (time, id) order
        row = db.execute("SELECT time, new FROM transitions WHERE peer=? AND time<=? AND (time<? OR id<?) "
                         "ORDER BY time DESC, id DESC LIMIT 1", (peer, t, t, before_id)).fetchone()
    else:
        row = db.execute("SELECT time, new FROM transitions WHERE peer=? AND time<? ORDER BY time DESC, id DESC "
                         "LIMIT 1", (peer, t)).fetchone()
    s_op = "<" if writing else "<="
    if row is None:
        row = db.execute(f"SELECT changed_at, state FROM peer_state WHERE peer=? AND changed_at{s_op}?",
                         (peer, t)).fetchone()
    if row is None and not writing:  # the state its next transition left (since when is not known)
        row = db.execute("SELECT ?, old FROM transitions WHERE peer=? AND time>=? ORDER BY time, id LIMIT 1",
                         (t, peer, t)).fetchone()
    return (float(row[0]), str(row[1])) if row is not None else None


def _credit_uptime(db: sqlite3.Connection) -> int:
    """Credit to the uptime rollup each state interval closed by a transition not credited yet
    (id above the `uptime_credited_id` mark): from the peer's previous transition to it
    (`_UptimeCredit`). Runs after the transitions' own commit, in its own transaction with the
    mark, so it is done exactly once: a crash in between is caught up at the next open().
    Returns the rollup rows written."""
    (mark,) = db.execute("SELECT value FROM rollup_marks WHERE name='uptime_credited_id'").fetchone()
    rows = db.execute("SELECT id, peer, time, new FROM transitions WHERE id>? ORDER BY id", (mark,)).fetchall()
    if not rows:
        return 0
    prev: dict[str, tuple[float, str] | None] = {}
    credit = _UptimeCredit()
    for rowid, peer, t, new in sorted(rows, key=lambda r: (r[2], r[0])):
        if peer not in prev:
            prev[peer] = _state_before(db, peer, t, writing=True, before_id=rowid)
        p = prev[peer]
        if p is not None:
            credit.add(peer, p[0], p[1], t)
        prev[peer] = (float(t), new)
    db.execute("UPDATE rollup_marks SET value=? WHERE name='uptime_credited_id'", (rows[-1][0],))
    return credit.write(db)


def _rollup_rows(db: sqlite3.Connection, select: str, peer: str, buckets: range) -> list[Row]:
    """`SELECT <select> WHERE` one peer's rows of these buckets: a primary-key seek each."""
    marks = ",".join("?" * len(buckets))
    return db.execute(f"SELECT {select} WHERE bucket IN ({marks}) AND peer=?", (*buckets, peer)).fetchall()


def _uptime_raw(db: sqlite3.Connection, peer: str, since: float, until: float) -> tuple[float, float]:
    """(seconds up, seconds observed) over [since, until] from the transitions in it."""
    state = _state_before(db, peer, since, writing=False)
    changes = db.execute("SELECT time, new FROM transitions WHERE peer=? AND time>=? AND time<=? ORDER BY time, id",
                         (peer, since, until)).fetchall()
    return uptime_seconds(state[1] if state else None, changes, since, until)


class _UptimeCredit:
    """State intervals closed by transitions, to credit: one of at most `rollup.SPAN_S` (a flap)
    split by hour into `uptime_rollup` (3 rows at most), a longer one (a peer stable for days)
    kept whole as one `uptime_spans` row. So a transition costs a few rows whatever the length of
    the interval it closes, and a window reads at most 30 d / SPAN_S spans."""

    def __init__(self) -> None:
        self.hours: dict[tuple[str, int], list[float]] = {}
        self.spans: list[Row] = []

    def add(self, peer: str, start: float, state: str, end: float) -> None:
        if start > end or state in UNOBSERVED:
            return  # out of time order (credit nothing rather than twice), or not observed
        start = max(start, end - UPTIME_KEEP_S)
        if end - start > rollup.SPAN_S:
            self.spans.append((peer, start, end, 1 if state in REACHABLE else 0))
            return
        for b, up, seen in rollup.credit(state, start, end):
            cell = self.hours.setdefault((peer, b), [0.0, 0.0])
            cell[0] += up
            cell[1] += seen

    def write(self, db: sqlite3.Connection) -> int:
        n = len(self.hours) + len(self.spans)
        if self.hours:
            db.executemany(_UPSERT_UPTIME_ROLLUP, [(p, b, u, s) for (p, b), (u, s) in self.hours.items()])
        if self.spans:
            db.executemany(_INSERT_UPTIME_SPAN, self.spans)
        self.hours, self.spans = {}, []
        return n


def _build_rollups(db: sqlite3.Connection) -> None:
    """Migration: the rollups of what an existing database holds, once (streamed, in chunks)."""
    cur = db.execute("SELECT peer, time, rtt_ms FROM samples")
    while chunk := cur.fetchmany(50_000):
        _rollup_samples(db, chunk)
    credit = _UptimeCredit()
    last: tuple[str, float, str] | None = None
    for n, (peer, t, new) in enumerate(db.execute("SELECT peer, time, new FROM transitions ORDER BY peer, time, id")):
        if last is not None and last[0] == peer:
            credit.add(peer, last[1], last[2], t)
        last = (peer, t, new)
        if n % 50_000 == 49_999:
            credit.write(db)
    credit.write(db)
    db.execute("UPDATE rollup_marks SET value=(SELECT COALESCE(MAX(id), 0) FROM transitions) "
               "WHERE name='uptime_credited_id'")


def _split(ops: list[tuple[str, str, list[Row]]], limit: int) -> Iterator[list[tuple[str, str, list[Row]]]]:
    """Cut (counter, sql, rows) operations into transactions of at most `limit` rows, in order."""
    txn: list[tuple[str, str, list[Row]]] = []
    n = 0
    for counter, sql, rows in ops:
        i = 0
        while i < len(rows):
            take = min(limit - n, len(rows) - i)
            txn.append((counter, sql, rows[i : i + take]))
            n += take
            i += take
            if n >= limit:
                yield txn
                txn, n = [], 0
    if txn:
        yield txn


def _where(peer: str | None, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    for clause, value in (("peer=?", peer), ("time>=?", since), ("time<=?", until)):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args
