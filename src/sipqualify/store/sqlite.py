"""SQLite persistence: current state per peer, every transition, RTT samples with bounded retention.

What this file adds to store/base.py (the queues, the writer thread, health, the reads, shared
with store/postgres.py): the SQLite database file, one per node.

Durability: WAL with `synchronous=NORMAL`. A COMMIT is in the WAL file (the OS page cache)
when it returns, so it survives the process being killed; only a power loss can roll back
the last commits, which is the trade WAL+NORMAL makes for throughput. A database file removed
or replaced under the running store is reported by `health()` (checked at most once a second):
SQLite keeps writing to the deleted inode without an error.

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
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from functools import lru_cache, partial
from itertools import chain
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
    ReaderPool,
    Row,
    SampleRecord,
    TransitionRecord,
)

__all__ = ["SCHEMA_VERSION", "FileWatch", "PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]

from .rollup import RTT_BUCKET_S, UPTIME_BUCKET_S, UPTIME_KEEP_S, RttCell
from .windows import PERCENTILES, REACHABLE, RTT_WINDOWS, UNOBSERVED, percentile, uptime_seconds

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
_INSERT_TRANSITION = f"INSERT INTO transitions({TRANSITION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"

# Rows per statement in execute_rows: the largest first, the rest of a batch in smaller ones, so
# that a statement type has at most four texts (the module's statement cache keeps them
# compiled). 64 rows of at most 15 columns stay within the 999 variables of any SQLite build.
ROWS_PER_STATEMENT = (64, 16, 4, 1)
_VALUES = re.compile(r"VALUES \((\?(?:,\?)*)\)")


@lru_cache(maxsize=128)
def rows_sql(sql: str, k: int) -> str | None:
    """A one-row `INSERT ... VALUES (?,...) [ON CONFLICT ...]` made to insert `k` rows; None for
    any other statement (or more than 15 columns)."""
    m = _VALUES.search(sql)
    if m is None or m.group(1).count("?") > 15:
        return None
    return f"{sql[:m.start()]}VALUES {','.join(['(' + m.group(1) + ')'] * k)}{sql[m.end():]}"


def row_chunks(rows: Sequence[Row]) -> Iterator[tuple[int, Sequence[Row]]]:
    """(k, the next k rows), k from ROWS_PER_STATEMENT, largest first, covering `rows` in order."""
    n, i = len(rows), 0
    for k in ROWS_PER_STATEMENT:
        while n - i >= k:
            yield k, rows[i:i + k]
            i += k


def execute_rows(db: sqlite3.Connection, sql: str, rows: Sequence[Row]) -> None:
    """`db.executemany(sql, rows)`, up to 64 rows per statement, in order (an upsert's later row
    sees the earlier ones, as one by one). The sqlite3 module lets go of the GIL around each
    statement's step and takes it back after; beside an event loop that is busy (16,700 answers a
    second), the writer thread waits for it every time, so one row per step left the writer
    ten times slower than the loop's results came in, and its queues grew to a row per peer."""
    if rows_sql(sql, 1) is None:  # a DELETE ... WHERE peer=?: as it is
        db.executemany(sql, rows)
        return
    for k, chunk in row_chunks(rows):
        one = rows_sql(sql, k)
        assert one is not None
        if len(set(map(len, chunk))) == 1:
            db.execute(one, list(chain.from_iterable(chunk)))
        else:  # rows of different lengths: the module's own error, not shifted columns
            db.executemany(sql, chunk)


class Store(BaseStore[sqlite3.Connection]):
    """The store in one SQLite file (`path`)."""

    transient_errors = (sqlite3.OperationalError,)
    retained_tables = (*RETAINED_TABLES, "rtt_rollup", "uptime_rollup", "uptime_spans")
    # one node per file, and the uptime credit after a transition's commit reads the state row as
    # it was before it (the state of a peer stable for longer than the transitions kept): the
    # state row keeps to the batch
    states_with_transitions = False

    def __init__(self, path: str, *, busy_timeout_s: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._readers = ReaderPool(self._open_reader, sqlite3.Connection.close)
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
            db.execute("BEGIN IMMEDIATE")  # transitions committed but not credited before a crash
            try:
                _credit_uptime(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
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
        self._readers.close()

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
            execute_rows(db, sql, rows)
            if sql is self.insert_sample_sql:
                rolled += _rollup_samples(db, rows)
        return rolled

    def _retention_chunk(self, db: sqlite3.Connection, table: str) -> bool:
        """Delete one bounded chunk of expired rows; True if there may be more. A rollup bucket goes
        once all of it is expired: the RTT rollup with the samples, the uptime rollup after 31 d."""
        if table not in ("rtt_rollup", "uptime_rollup", "uptime_spans"):
            return super()._retention_chunk(db, table)
        now = self._retention_now()
        if table == "rtt_rollup":
            cutoff = now - self.sample_retention_s - RTT_BUCKET_S
        else:
            cutoff = now - UPTIME_KEEP_S - UPTIME_BUCKET_S
        if table == "uptime_spans":
            sql = f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE t1 < ? LIMIT ?)"
        else:  # WITHOUT ROWID: by primary key
            sql = (f"DELETE FROM {table} WHERE (bucket, peer) IN "
                   f"(SELECT bucket, peer FROM {table} WHERE bucket < ? LIMIT ?)")
        ok, n = self._transact(
            db, lambda db: db.execute(sql, (cutoff, self.retention_chunk_rows)).rowcount, persist=False
        )
        if not ok or n is None:
            return False
        self._n["rollup_rows_deleted"] += n
        return n >= self.retention_chunk_rows

    def _execute_rowcount(self, db: sqlite3.Connection, sql: str, args: Row) -> int:
        return db.execute(sql, args).rowcount

    def _after_transitions(self, db: sqlite3.Connection, written: list[tuple[int, Row]]) -> None:
        # after the COMMIT and its callbacks: the uptime rollup never delays a transition's event
        ok, n = self._transact(db, partial(_credit_uptime, written=written))
        self._n["rollup_rows_written"] += n or 0

    def _insert_transitions(self, db: sqlite3.Connection, rows: list[Row]) -> list[int]:
        """One executemany; the ids are consecutive (AUTOINCREMENT, one writer, one transaction),
        so they are read back from sqlite_sequence instead of one execute per row."""
        if len(rows) == 1:
            return [int(db.execute(_INSERT_TRANSITION, rows[0]).lastrowid or 0)]
        execute_rows(db, _INSERT_TRANSITION, rows)
        last = int(db.execute("SELECT seq FROM sqlite_sequence WHERE name='transitions'").fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))

    # ------------------------------------------------------------------ reads (any thread)

    def _open_reader(self) -> sqlite3.Connection:
        uri = Path(self.path).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False, isolation_level=None)

    def _reader(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._readers.connection()

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
    execute_rows(db, _UPSERT_RTT_ROLLUP, summary)
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


def _states_before_writing(db: sqlite3.Connection,
                           first: dict[str, tuple[float, int]]) -> dict[str, tuple[float, str] | None]:
    """`_state_before(db, peer, t, writing=True, before_id=id)` of each peer -> (t, id), 64 peers per
    statement (execute_rows says why; a cold start of a million peers credits a million first
    transitions): the peer's transition before that one, else its saved state changed before t."""
    out: dict[str, tuple[float, str] | None] = dict.fromkeys(first)
    items = [(peer, t, rowid) for peer, (t, rowid) in first.items()]
    for k, chunk in row_chunks(items):
        sql = (f"WITH q(peer, t, bid) AS (VALUES {','.join(['(?,?,?)'] * k)}) "
               "SELECT q.peer, tr.time, tr.new, s.changed_at, s.state FROM q "
               "LEFT JOIN transitions tr ON tr.id = (SELECT id FROM transitions WHERE peer=q.peer AND time<=q.t "
               "AND (time<q.t OR id<q.bid) ORDER BY time DESC, id DESC LIMIT 1) "
               "LEFT JOIN peer_state s ON s.peer=q.peer AND s.changed_at<q.t "
               "WHERE tr.id IS NOT NULL OR s.peer IS NOT NULL")  # a row (a step) only for a peer with one
        for peer, t_time, t_new, s_changed, s_state in db.execute(sql, list(chain.from_iterable(chunk))):
            if t_time is not None:
                out[peer] = (float(t_time), str(t_new))
            elif s_changed is not None:
                out[peer] = (float(s_changed), str(s_state))
    return out


def _credit_uptime(db: sqlite3.Connection, written: Sequence[tuple[int, Row]] = ()) -> int:
    """Credit to the uptime rollup each state interval closed by a transition not credited yet
    (id above the `uptime_credited_id` mark): from the peer's previous transition to it
    (`_UptimeCredit`). Runs after the transitions' own commit, in its own transaction with the
    mark, so it is done exactly once: a crash in between is caught up at the next open().
    Returns the rollup rows written."""
    (mark,) = db.execute("SELECT value FROM rollup_marks WHERE name='uptime_credited_id'").fetchone()
    rows: list[Row] = []
    if written and written[0][0] == mark + 1 and written[-1][0] == mark + len(written) and int(db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name='transitions'").fetchone()[0]) == written[-1][0]:
        # the rows just written are all that is not credited (the usual case): no read of them back,
        # which costs a step, so a wait for the GIL, per row (execute_rows says why that matters)
        rows = [(rowid, row[0], row[1], row[3]) for rowid, row in written]
        if not all(type(r[2]) is float and type(r[1]) is str and type(r[3]) is str for r in rows):
            rows = []  # a value the database converted (its column's affinity): read back as stored
    if not rows:  # a catch-up at open(), or after a refused row or a failed credit
        rows = db.execute("SELECT id, peer, time, new FROM transitions WHERE id>? ORDER BY id", (mark,)).fetchall()
    if not rows:
        return 0
    ordered = sorted(rows, key=lambda r: (r[2], r[0]))
    first: dict[str, tuple[float, int]] = {}
    for rowid, peer, t, _new in ordered:
        first.setdefault(peer, (t, rowid))
    prev: dict[str, tuple[float, str] | None] = _states_before_writing(db, first)
    credit = _UptimeCredit()
    for _rowid, peer, t, new in ordered:
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
            execute_rows(db, _UPSERT_UPTIME_ROLLUP, [(p, b, u, s) for (p, b), (u, s) in self.hours.items()])
        if self.spans:
            execute_rows(db, _INSERT_UPTIME_SPAN, self.spans)
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
