"""SQLite persistence: current state per peer, every transition, RTT samples with bounded retention.

What this file adds to store/base.py (the queues, the writer thread, health, the reads, shared
with store/postgres.py): the SQLite database file, one per node.

Durability: WAL with `synchronous=NORMAL`. A COMMIT is in the WAL file (the OS page cache)
when it returns, so it survives the process being killed; only a power loss can roll back
the last commits, which is the trade WAL+NORMAL makes for throughput. A database file removed
or replaced under the running store is reported by `health()` (checked at most once a second):
SQLite keeps writing to the deleted inode without an error.

Reads use a small pool of read-only connections (WAL lets them run while the writer writes)
and may be called from any thread; the service calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import (
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    BaseStore,
    PeerStateRecord,
    Row,
    SampleRecord,
    TransitionRecord,
)

__all__ = ["SCHEMA_VERSION", "FileWatch", "PeerStateRecord", "SampleRecord", "Store", "TransitionRecord"]

log = logging.getLogger("sipqualify.store")

# MIGRATIONS[i] upgrades a database from PRAGMA user_version i to i + 1. Append, never edit:
# a released step is what existing databases already went through.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
)
SCHEMA_VERSION = len(MIGRATIONS)

_INSERT_TRANSITION = f"INSERT INTO transitions({TRANSITION_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"


class Store(BaseStore[sqlite3.Connection]):
    """The store in one SQLite file (`path`)."""

    transient_errors = (sqlite3.OperationalError,)

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
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this build ({SCHEMA_VERSION})")
        for v in range(version, SCHEMA_VERSION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in MIGRATIONS[v]:
                    db.execute(stmt)
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

    def _executemany(self, db: sqlite3.Connection, sql: str, rows: list[Row]) -> None:
        db.executemany(sql, rows)

    def _execute_rowcount(self, db: sqlite3.Connection, sql: str, args: Row) -> int:
        return db.execute(sql, args).rowcount

    def _insert_transitions(self, db: sqlite3.Connection, rows: list[Row]) -> list[int]:
        """One executemany; the ids are consecutive (AUTOINCREMENT, one writer, one transaction),
        so they are read back from sqlite_sequence instead of one execute per row."""
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
