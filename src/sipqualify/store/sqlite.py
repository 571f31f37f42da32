"""SQLite persistence: current state per peer, every transition, RTT samples with bounded retention.

What this file adds to store/base.py (the queues, the writer thread, health, the reads, shared
with store/postgres.py): the SQLite database file, one per node.

Durability: WAL with `synchronous=NORMAL`. A COMMIT is in the WAL file (the OS page cache)
when it returns, so it survives the process being killed; only a power loss can roll back
the last commits, which is the trade WAL+NORMAL makes for throughput. A database file removed
or replaced under the running store is reported by `health()` (checked at most once a second):
SQLite keeps writing to the deleted inode without an error.

Rollups: the time windows of `GET /api/v1/peers/NAME/stats` (store/windows.py) read two summary
tables the writer keeps in the same transactions as the rows they summarise (store/rollup.py):
`rtt_rollup` (per 5-minute bucket and peer: counts and an RTT histogram, upserted once per
(bucket, peer) per batch of samples) and `uptime_rollup` (per hour and peer: seconds observed
and up, credited when a transition closes a state interval). Retention prunes them with the
samples and after 31 days; a migration builds them once from an older database's rows.

Reads use a small pool of read-only connections (WAL lets them run while the writer writes)
and may be called from any thread; the service calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import rollup
from .base import (
    RETAINED_TABLES,
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    BaseStore,
    Ops,
    PeerStateRecord,
    Row,
    SampleRecord,
    TransitionRecord,
)

__all__ = ["SCHEMA_VERSION", "FileWatch", "PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]

from .rollup import RTT_BUCKET_S, UPTIME_BUCKET_S, UPTIME_KEEP_S, RttCell
from .windows import PERCENTILES, RTT_WINDOWS, percentile, uptime_seconds

log = logging.getLogger("sipqualify.store")

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
        lambda db: _build_rollups(db),
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# hist_merge: rollup.merge_blobs, registered on the write connection (_connect)
_UPSERT_RTT_ROLLUP = (
    "INSERT INTO rtt_rollup(peer, bucket, n, answered, min_ms, max_ms, hist) VALUES (?,?,?,?,?,?,?) "
    "ON CONFLICT(bucket, peer) DO UPDATE SET n=n+excluded.n, answered=answered+excluded.answered, "
    "min_ms=COALESCE(MIN(min_ms, excluded.min_ms), min_ms, excluded.min_ms), "
    "max_ms=COALESCE(MAX(max_ms, excluded.max_ms), max_ms, excluded.max_ms), hist=hist_merge(hist, excluded.hist)"
)
_UPSERT_UPTIME_ROLLUP = (
    "INSERT INTO uptime_rollup(peer, bucket, up_s, seen_s) VALUES (?,?,?,?) "
    "ON CONFLICT(bucket, peer) DO UPDATE SET up_s=up_s+excluded.up_s, seen_s=seen_s+excluded.seen_s"
)
_INSERT_TRANSITION = f"INSERT INTO transitions({TRANSITION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


class Store(BaseStore[sqlite3.Connection]):
    """The store in one SQLite file (`path`)."""

    transient_errors = (sqlite3.OperationalError,)
    retained_tables = (*RETAINED_TABLES, "rtt_rollup", "uptime_rollup")

    def __init__(self, path: str, *, busy_timeout_s: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._vanished: str | None = None
        self._vanished_since: float | None = None
        self._file_id: tuple[int, int] | None = None
        self._next_file_check = 0.0

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

    def _open_writer(self) -> tuple[sqlite3.Connection, dict[str, PeerStateRecord]]:
        db = self._connect()
        try:
            self._migrate(db)
            states = {r[0]: self._state_record(r) for r in db.execute(f"SELECT {STATE_COLUMNS} FROM peer_state")}
        except BaseException:
            db.close()
            raise
        self._db = db
        self._file_id = _file_id(self.path)
        return db, states

    def _close_connections(self, writer_stopped: bool) -> None:
        if self._db is not None and writer_stopped:
            self._db.close()
            self._db = None
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for r in readers:
            r.close()

    # ------------------------------------------------------------------ health: the file

    def _extra_failure(self) -> tuple[str, float | None] | None:
        return None if self._vanished is None else (self._vanished, self._vanished_since)

    def _check(self) -> None:
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

    # ------------------------------------------------------------------ statements (writer thread)

    def _begin(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("BEGIN IMMEDIATE")
        return db

    def _commit(self, db: sqlite3.Connection) -> None:
        db.execute("COMMIT")

    def _rollback(self, db: sqlite3.Connection) -> None:
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _execute_ops(self, db: sqlite3.Connection, txn: Ops) -> int:
        """The rows, and the RTT rollup of the samples among them; the number of rollup rows written."""
        rolled = 0
        for _counter, sql, rows in txn:
            db.executemany(sql, rows)
            if sql is self.insert_sample_sql:
                rolled += _rollup_samples(db, rows)
        return rolled

    def _retention_chunk(self, db: sqlite3.Connection, table: str) -> bool:
        """Delete one bounded chunk of expired rows; True if there may be more. A rollup bucket goes
        once all of it is expired: the RTT rollup with the samples, the uptime rollup after 31 d."""
        if table not in ("rtt_rollup", "uptime_rollup"):
            return super()._retention_chunk(db, table)
        now = self._retention_now()
        if table == "rtt_rollup":
            cutoff = now - self.sample_retention_s - RTT_BUCKET_S
        else:
            cutoff = now - UPTIME_KEEP_S - UPTIME_BUCKET_S
        # WITHOUT ROWID: by primary key
        sql = f"DELETE FROM {table} WHERE (bucket, peer) IN (SELECT bucket, peer FROM {table} WHERE bucket < ? LIMIT ?)"
        ok, n = self._transact(
            db, lambda db: db.execute(sql, (cutoff, self.retention_chunk_rows)).rowcount, persist=False
        )
        if not ok or n is None:
            return False
        self._n["rollup_rows_deleted"] += n
        return n >= self.retention_chunk_rows

    def _execute_rowcount(self, db: sqlite3.Connection, sql: str, args: Row) -> int:
        return db.execute(sql, args).rowcount

    def _insert_transitions(self, db: sqlite3.Connection, rows: list[Row]) -> list[int]:
        """One executemany; the ids are consecutive (AUTOINCREMENT, one writer, one transaction),
        so they are read back from sqlite_sequence instead of one execute per row. The uptime rollup
        is credited first, in the same transaction (each peer's previous transition is read before
        the new rows are in)."""
        _credit_uptime(db, rows)
        if len(rows) == 1:
            return [int(db.execute(_INSERT_TRANSITION, rows[0]).lastrowid or 0)]
        db.executemany(_INSERT_TRANSITION, rows)
        last = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name='transitions'").fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))

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

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        with self._reader() as db:
            return db.execute(sql, tuple(args)).fetchall()

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
        interval still open; the partial hours at both edges from the transitions in them."""
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
            # the interval of the last state before the tail is credited when a transition ends it
            state = _state_before(db, peer, last, writing=False)
            if state is not None and db.execute("SELECT 1 FROM transitions WHERE peer=? AND time>=? LIMIT 1",
                                                (peer, last)).fetchone() is None:
                for _b, u, s in rollup.credit(state[1], max(state[0], first), last):
                    up += u
                    seen += s
        return head_up + up + tail_up, head_seen + seen + tail_seen


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


def _rollup_samples(db: sqlite3.Connection, rows: list[Row]) -> int:
    """Add sample rows to the RTT rollup: summarised per (peer, bucket) first, so each rollup row
    is written once per batch (one upsert; the histograms merge in hist_merge)."""
    summary = rollup.rollup_rows(rows)
    db.executemany(_UPSERT_RTT_ROLLUP, summary)
    return len(summary)


def _state_before(db: sqlite3.Connection, peer: str, t: float, *, writing: bool) -> tuple[float, str] | None:
    """(since when, state) of `peer` just before time `t`: its last transition (before `t`; when
    `writing` a transition at `t`, one already stored at `t` too), or when none is kept (older than
    the transition retention) its saved state if that changed before `t` (at `t` too when reading;
    never when writing: a saved state already committed for this very transition says nothing
    about the time before it). When reading and neither is there, the state its next transition
    left, at `t`."""
    t_op, s_op = ("<=", "<") if writing else ("<", "<=")
    row = db.execute(f"SELECT time, new FROM transitions WHERE peer=? AND time{t_op}? ORDER BY time DESC, id DESC "
                     "LIMIT 1", (peer, t)).fetchone()
    if row is None:
        row = db.execute(f"SELECT changed_at, state FROM peer_state WHERE peer=? AND changed_at{s_op}?",
                         (peer, t)).fetchone()
    if row is None and not writing:  # the state its next transition left (since when is not known)
        row = db.execute("SELECT ?, old FROM transitions WHERE peer=? AND time>=? ORDER BY time, id LIMIT 1",
                         (t, peer, t)).fetchone()
    return (float(row[0]), str(row[1])) if row is not None else None


def _credit_uptime(db: sqlite3.Connection, rows: list[Row]) -> None:
    """Credit to the uptime rollup each state interval these transitions close: from the peer's
    previous transition (stored, or earlier in `rows`) to this one, split by hour."""
    valid = [r for r in rows if isinstance(r[0], str) and isinstance(r[1], int | float) and math.isfinite(r[1])
             and isinstance(r[3], str)]
    valid.sort(key=lambda r: r[1])
    prev: dict[str, tuple[float, str] | None] = {}
    acc: dict[tuple[str, int], list[float]] = {}
    for peer, t, _old, new, *_ in valid:
        if peer not in prev:
            prev[peer] = _state_before(db, peer, t, writing=True)
        _accumulate(acc, peer, prev[peer], t)
        prev[peer] = (float(t), new)
    if acc:
        db.executemany(_UPSERT_UPTIME_ROLLUP, [(peer, b, up, seen) for (peer, b), (up, seen) in acc.items()])


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


def _accumulate(acc: dict[tuple[str, int], list[float]], peer: str, prev: tuple[float, str] | None, t: float) -> None:
    if prev is None or prev[0] > t:
        return  # nothing known before, or out of time order: credit nothing rather than twice
    for b, up, seen in rollup.credit(prev[1], max(prev[0], t - UPTIME_KEEP_S), t):
        cell = acc.setdefault((peer, b), [0.0, 0.0])
        cell[0] += up
        cell[1] += seen


def _build_rollups(db: sqlite3.Connection) -> None:
    """Migration: the rollups of what an existing database holds, once (streamed, in chunks)."""
    cur = db.execute("SELECT peer, time, rtt_ms FROM samples")
    while chunk := cur.fetchmany(50_000):
        _rollup_samples(db, chunk)
    acc: dict[tuple[str, int], list[float]] = {}
    last: tuple[str, float, str] | None = None
    for peer, t, new in db.execute("SELECT peer, time, new FROM transitions ORDER BY peer, time, id"):
        if last is not None and last[0] == peer:
            _accumulate(acc, peer, (last[1], last[2]), t)
        last = (peer, t, new)
        if len(acc) >= 50_000:
            db.executemany(_UPSERT_UPTIME_ROLLUP, [(p, b, u, s) for (p, b), (u, s) in acc.items()])
            acc.clear()
    db.executemany(_UPSERT_UPTIME_ROLLUP, [(p, b, u, s) for (p, b), (u, s) in acc.items()])
