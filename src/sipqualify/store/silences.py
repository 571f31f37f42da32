"""Silences in SQLite (`silences.sqlite` in the state directory), so they survive a restart.

Few rows, written by hand: each call is one short synchronous statement, run by the shell
through `asyncio.to_thread`. The silences in force are kept in memory (qualify/silence.py)
and asked at every transition; this only makes them durable.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..qualify.silence import Silence, Silences

if TYPE_CHECKING:
    from . import postgres

_SCHEMA = ("CREATE TABLE IF NOT EXISTS silences (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT, grp TEXT, "
           "until REAL NOT NULL, comment TEXT NOT NULL DEFAULT '', created REAL NOT NULL)")


class SilenceStore:
    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(_SCHEMA)

    def load(self, now: float) -> list[Silence]:
        """The silences still in force at `now`; expired rows are deleted."""
        self.db.execute("DELETE FROM silences WHERE until <= ?", (now,))
        rows = self.db.execute("SELECT id, peer, grp, until, comment, created FROM silences ORDER BY id")
        return [Silence(*r) for r in rows]

    def add(self, peer: str | None, group: str | None, until: float, comment: str, created: float) -> Silence:
        cur = self.db.execute("INSERT INTO silences(peer, grp, until, comment, created) VALUES (?,?,?,?,?)",
                              (peer, group, until, comment, created))
        assert cur.lastrowid is not None
        return Silence(cur.lastrowid, peer, group, until, comment, created)

    def delete(self, silence_id: int) -> bool:
        return self.db.execute("DELETE FROM silences WHERE id=?", (silence_id,)).rowcount > 0

    def close(self) -> None:
        self.db.close()


class SilenceBook:
    """The shell's silences: in force in memory (`match`, at every transition), durable in
    SQLite. `add`/`remove` are awaited by the API; a bad silence is a ValueError."""

    def __init__(self, where: Path | postgres.SilenceStore, wallclock: Callable[[], float]) -> None:
        """`where`: the SQLite file, or a store with SilenceStore's methods (store/postgres.py's)."""
        self.store: SilenceStore | postgres.SilenceStore = SilenceStore(where) if isinstance(where, Path) else where
        self.wallclock = wallclock
        self.active = Silences()

    async def open(self) -> None:
        self.active = Silences(await asyncio.to_thread(self.store.load, self.wallclock()))

    def list(self) -> list[Silence]:
        return self.active.active(self.wallclock())

    def match(self, peer: str, group: str) -> Silence | None:
        return self.active.match(peer, group, self.wallclock())

    async def add(self, peer: str | None, group: str | None, until: float, comment: str = "") -> Silence:
        if (peer is None) == (group is None) or not (peer or group):
            raise ValueError("a silence names one peer or one group")
        now = self.wallclock()
        if not until > now:
            raise ValueError("until must be in the future")
        s = await asyncio.to_thread(self.store.add, peer, group, until, comment, now)
        self.active.add(s)
        return s

    async def remove(self, silence_id: int) -> bool:
        self.active.remove(silence_id)
        return await asyncio.to_thread(self.store.delete, silence_id)

    def close(self) -> None:
        self.store.close()
