"""Registrar bindings in SQLite, written synchronously (from a worker thread) before the
200 OK is sent: a daemon killed right after answering a REGISTER still has the binding."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..qualify.registrar import Binding

SCHEMA = """CREATE TABLE IF NOT EXISTS bindings (
    peer TEXT PRIMARY KEY, contact TEXT NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
    transport TEXT NOT NULL, expires_at REAL NOT NULL, useragent TEXT NOT NULL, path TEXT NOT NULL,
    call_id TEXT NOT NULL, cseq INTEGER NOT NULL, nat INTEGER NOT NULL, granted INTEGER)"""
# `granted` (the seconds granted) came later: NULL in rows written before, added to old tables

COLUMNS = "peer, contact, ip, port, transport, expires_at, useragent, path, call_id, cseq, nat, granted"
_UPSERT = (
    f"INSERT INTO bindings ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(peer) DO UPDATE SET "
    "contact=excluded.contact, ip=excluded.ip, port=excluded.port, transport=excluded.transport, "
    "expires_at=excluded.expires_at, useragent=excluded.useragent, path=excluded.path, "
    "call_id=excluded.call_id, cseq=excluded.cseq, nat=excluded.nat, granted=excluded.granted")


def binding_row(b: Binding) -> tuple[object, ...]:
    return (b.peer, b.contact, b.addr[0], b.addr[1], b.transport, b.expires_at, b.useragent, b.path,
            b.call_id, b.cseq, int(b.nat), b.granted or None)


def save_runs(changes: list[tuple[str, Binding | None]]) -> Iterator[tuple[bool, list[tuple[str, Binding | None]]]]:
    """The changes cut in runs of saves (True) and deletes (False), in order: one executemany each
    (a save then a delete stays a delete)."""
    i = 0
    while i < len(changes):
        saving = changes[i][1] is not None
        j = i
        while j < len(changes) and (changes[j][1] is not None) == saving:
            j += 1
        yield saving, changes[i:j]
        i = j


def arm(rows: Iterable[Sequence[Any]], now_wall: float, now_mono: float,
        maxexpiry: int) -> tuple[list[Binding], list[tuple[float, str]]]:
    """Stored rows (COLUMNS) still valid at `now_wall` as bindings armed on the monotonic clock,
    and the (expires_at, peer) updates of those whose expiry was clamped.

    Only the wall clock spans a restart, and it may have been stepped meanwhile: a binding
    gets what its stored expiry leaves, but never more than it was granted (`maxexpiry` for
    rows that predate `granted`), and a clamped expiry is stored, so that restarting again
    while the clock is behind gains nothing either."""
    out: list[Binding] = []
    clamped: list[tuple[float, str]] = []
    for r in rows:
        granted = int(r[11]) if r[11] is not None and r[11] > 0 else maxexpiry
        expires_at = float(r[5])
        if expires_at - now_wall > granted:
            expires_at = now_wall + granted
            clamped.append((expires_at, r[0]))
        out.append(Binding(r[0], r[1], (r[2], r[3]), r[4], expires_at, r[6], r[7], r[8], r[9], bool(r[10]),
                           now_mono + (expires_at - now_wall), granted))
    return out, clamped


class BindingStore:
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)  # what a failing apply/load raises

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(SCHEMA)
        if "granted" not in {r[1] for r in self.db.execute("PRAGMA table_info(bindings)")}:
            self.db.execute("ALTER TABLE bindings ADD COLUMN granted INTEGER")
        self.lock = threading.Lock()

    def apply(self, changes: list[tuple[str, Binding | None]]) -> None:
        """Several saves (binding) and deletes (None) in one transaction: a group commit. Runs of
        the same kind go in one executemany (order kept: a save then a delete stays a delete)."""
        with self.lock:
            self.db.execute("BEGIN")
            try:
                for saving, run in save_runs(changes):
                    if saving:
                        self.db.executemany(_UPSERT, [binding_row(b) for _, b in run if b is not None])
                    else:
                        self.db.executemany("DELETE FROM bindings WHERE peer=?", [(p,) for p, _ in run])
                self.db.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL, I/O errors) or BEGIN itself
                # failed: a ROLLBACK then fails too, and its error must not replace the cause
                if self.db.in_transaction:
                    try:
                        self.db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    def load(self, now_wall: float, now_mono: float, maxexpiry: int) -> list[Binding]:
        """Bindings still valid at `now_wall`, armed on the monotonic clock (`now_mono`); expired
        ones are removed (expiry honoured across restarts, clamped by `arm`)."""
        with self.lock:
            self.db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now_wall,))
            rows = self.db.execute(f"SELECT {COLUMNS} FROM bindings").fetchall()
            out, clamped = arm(rows, now_wall, now_mono, maxexpiry)
            if clamped:
                self.db.executemany("UPDATE bindings SET expires_at=? WHERE peer=?", clamped)
        return out

    def close(self) -> None:
        with self.lock:
            self.db.close()
