"""The realtime databases: PostgreSQL through psycopg 3 (async), SQLite through the standard
library on a worker thread. Both say the same three things: every row of the table, a cheap
fingerprint of the whole table (did anything change at all?), and an UPDATE of named columns
of named rows in one transaction. Errors are the driver's; realtime/sync.py decides what a
failure means (a degraded store, a retry), never these classes.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from .rows import STATE_COLUMNS

Row = dict[str, Any]
Update = tuple[str, Mapping[str, Any] | None]  # (row key, column -> value; None: DELETE the row)

DB_TIMEOUT_S = 10.0  # a query or connect that takes longer is a failure (a server gone silent)
NOTIFY_CHANNEL = "sipqualify_sippeers"
FETCH_CHUNK = 2000  # rows turned into Python objects between two turns of the event loop


def ident(name: str) -> str:
    """A table or column name, double-quoted (Asterisk's own schema has `call-limit`)."""
    if not name or "\0" in name:
        raise ValueError(f"not an SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def grouped(table: str, updates: Sequence[Update], mark: str, key: str = "name", upsert: bool = False
            ) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """The statements of a batch, one per shape (set of columns, or DELETE), with every row's
    parameters (a batch holds at most one write per row, so their order does not matter).
    `upsert`: the row is inserted when it is not there (ps_contacts), else UPDATEd (sippeers)."""
    out: dict[tuple[str, ...] | None, list[tuple[Any, ...]]] = {}
    for name, cols in updates:
        if cols is None:
            out.setdefault(None, []).append((name,))
        elif upsert:
            out.setdefault(tuple(cols), []).append((name, *cols.values()))
        else:
            out.setdefault(tuple(cols), []).append((*cols.values(), name))
    k = ident(key)
    stmts: list[tuple[str, list[tuple[Any, ...]]]] = []
    for shape, params in out.items():
        if shape is None:
            sql = f"DELETE FROM {table} WHERE {k} = {mark}"
        elif upsert:
            names = ", ".join(ident(c) for c in (key, *shape))
            sets = ", ".join(f"{ident(c)} = excluded.{ident(c)}" for c in shape)
            sql = (f"INSERT INTO {table} ({names}) VALUES ({', '.join([mark] * (len(shape) + 1))}) "
                   f"ON CONFLICT ({k}) DO UPDATE SET {sets}")
        else:
            sql = f"UPDATE {table} SET {', '.join(f'{ident(c)} = {mark}' for c in shape)} WHERE {k} = {mark}"
        stmts.append((sql, params))
    return stmts


class Backend(Protocol):
    label: str  # "pgsql:sippeers"
    key: str  # the column naming a row: `name` (sippeers), `id` (ps_*)
    columns: set[str]  # the table's columns, once a full read saw them (empty before)
    resync: bool  # changes may have been missed (LISTEN just began): compare every row once

    async def rows(self, names: Sequence[str] | None = None) -> list[Row]: ...

    async def fingerprint(self) -> str: ...

    async def hashes(self) -> dict[str, str] | None: ...

    async def update(self, updates: Sequence[Update]) -> None: ...

    async def wait_notify(self, timeout: float) -> set[str] | None: ...

    async def close(self) -> None: ...


class SqliteBackend:
    """res_config_sqlite3's file; one connection used by one worker thread at a time."""

    def __init__(self, path: str, table: str, key: str = "name", upsert: bool = False) -> None:
        self.label = f"sqlite3:{table}"
        self.resync = False
        self.path = path
        self.table = ident(table)
        self.key, self.upsert = key, upsert
        self.columns: set[str] = set()
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=DB_TIMEOUT_S,
                                 check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            self._db = db
        return self._db

    def _run(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            try:
                return fn(self._conn(), *args)
            except sqlite3.Error:
                if self._db is not None:
                    self._db.close()
                    self._db = None
                raise

    def _rows(self, db: sqlite3.Connection, names: Sequence[str] | None) -> list[Row]:
        if names is None:
            cur = db.execute(f"SELECT * FROM {self.table}")
            self.columns = {c[0] for c in cur.description}
            return [dict(r) for r in cur]
        out: list[Row] = []
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            q = f"SELECT * FROM {self.table} WHERE {ident(self.key)} IN ({','.join('?' * len(chunk))})"
            out += [dict(r) for r in db.execute(q, chunk)]
        return out

    async def rows(self, names: Sequence[str] | None = None) -> list[Row]:
        return await asyncio.to_thread(self._run, self._rows, names)

    def _fingerprint(self, db: sqlite3.Connection) -> str:
        # data_version changes when another connection commits; total_changes for our own writes
        return repr(db.execute("PRAGMA data_version").fetchone()[0])

    async def fingerprint(self) -> str:
        return str(await asyncio.to_thread(self._run, self._fingerprint))

    def _update(self, db: sqlite3.Connection, updates: Sequence[Update]) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in grouped(self.table, updates, "?", self.key, self.upsert):
                db.executemany(sql, params)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def update(self, updates: Sequence[Update]) -> None:
        await asyncio.to_thread(self._run, self._update, updates)

    async def hashes(self) -> dict[str, str] | None:
        """None: reading every row of a local file is as cheap (the caller compares them)."""
        return None

    async def wait_notify(self, timeout: float) -> set[str] | None:
        """SQLite has no notifications: None at once (the caller polls)."""
        return None

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None
        await asyncio.to_thread(close)


def key_of(table: str) -> str:
    """The column naming a row: `id` in Asterisk's ps_* tables, `name` in sippeers."""
    return "id" if table.lower().startswith("ps_") else "name"


def notify_channel(table: str) -> str:
    """sippeers keeps the channel it always had; another table has its own."""
    return NOTIFY_CHANNEL if table == "sippeers" else f"sipqualify_{table.lower()}"


def trigger_sql(table: str) -> str:
    """What `sipqualify realtime trigger-sql` prints: a NOTIFY per changed row of `table`
    (its key: `name` for sippeers, `id` for the ps_* tables)."""
    t, key, ch = ident(table), key_of(table), notify_channel(table)
    fn = "sipqualify_notify" if table == "sippeers" else f"sipqualify_notify_{table.lower()}"
    return f"""CREATE OR REPLACE FUNCTION {ident(fn)}() RETURNS trigger AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN PERFORM pg_notify('{ch}', OLD.{ident(key)}); END IF;
  IF TG_OP <> 'DELETE' THEN PERFORM pg_notify('{ch}', NEW.{ident(key)}); END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS sipqualify_notify ON {t};
CREATE TRIGGER sipqualify_notify AFTER INSERT OR UPDATE OR DELETE ON {t}
  FOR EACH ROW EXECUTE FUNCTION {ident(fn)}();
"""


class PgBackend:
    """res_config_pgsql's server: one connection for queries and write-backs, one for LISTEN
    (only when the trigger is installed). A broken connection is dropped and made again by the
    next call."""

    def __init__(self, conninfo: Mapping[str, str], table: str, key: str = "name", upsert: bool = False,
                 state: frozenset[str] = STATE_COLUMNS) -> None:
        self.label = f"pgsql:{table}"
        self.key, self.upsert, self.state = key, upsert, state
        self.columns: set[str] = set()
        self.conninfo = {**conninfo, "connect_timeout": str(int(DB_TIMEOUT_S)), "application_name": "sipqualify"}
        self.table_name = table
        self.table = ident(table)
        self._db: Any = None
        self._listen: Any = None
        self.listening = False  # the trigger is there: changes come by NOTIFY
        self.config_columns: list[str] = []  # set by the first read: what fingerprint() and hashes() cover
        self.resync = False

    def _dsn(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(**self.conninfo)

    async def _conn(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        if self._db is None or self._db.closed or self._db.broken:
            self._db = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._dsn(), autocommit=True, row_factory=dict_row),
                DB_TIMEOUT_S)
        return self._db

    async def _call(self, op: Any) -> Any:
        try:
            return await asyncio.wait_for(op(await self._conn()), DB_TIMEOUT_S)
        except BaseException:
            await self._drop("_db")
            raise

    async def _drop(self, attr: str) -> None:
        conn = getattr(self, attr)
        setattr(self, attr, None)
        if conn is not None:
            try:  # bounded: closing a connection a cancelled LISTEN was reading must not hang a stop
                await asyncio.wait_for(conn.close(), DB_TIMEOUT_S)
            except Exception:  # noqa: S110 - it is broken already (or the close timed out)
                pass

    async def rows(self, names: Sequence[str] | None = None) -> list[Row]:
        async def op(db: Any) -> list[Row]:
            if names is None:
                cur = await db.execute(f"SELECT * FROM {self.table}")
            else:
                cur = await db.execute(f"SELECT * FROM {self.table} WHERE {ident(self.key)} = ANY(%s)",
                                       (list(names),))
            rows: list[Row] = []
            while chunk := await cur.fetchmany(FETCH_CHUNK):  # rows are made at fetch time: the
                rows += chunk  # loop turns between chunks (100,000 rows at once stalled it seconds)
                await asyncio.sleep(0)
            if names is None and cur.description:
                self.columns = {c.name for c in cur.description}
                self.config_columns = [c.name for c in cur.description if c.name not in self.state | {"id"}]
            return rows
        result: list[Row] = await self._call(op)
        return result

    def _row_hash(self) -> str:
        """Each row's configuration, hashed by the server: `config_columns` only, so that
        write-backs (state columns) never move it; every column until they are known."""
        cols = self.config_columns
        return f"md5(ROW({', '.join(f't.{ident(c)}' for c in cols)})::text)" if cols else "md5(t::text)"

    async def fingerprint(self) -> str:
        async def op(db: Any) -> str:
            cur = await db.execute(f"SELECT count(*) AS n, md5(coalesce(string_agg({self._row_hash()}, '' "
                                   f"ORDER BY t.{ident(self.key)}), '')) AS h FROM {self.table} t")
            r = await cur.fetchone()
            return f"{r['n']}:{r['h']}"
        result: str = await self._call(op)
        return result

    async def hashes(self) -> dict[str, str] | None:
        """name -> the server's hash of the row's configuration (for the rows that changed)."""
        from psycopg.rows import tuple_row

        async def op(db: Any) -> dict[str, str]:
            async with db.cursor(row_factory=tuple_row) as cur:
                if not self.config_columns:
                    await cur.execute(f"SELECT * FROM {self.table} LIMIT 0")
                    self.config_columns = [c.name for c in cur.description if c.name not in self.state | {"id"}]
                await cur.execute(f"SELECT t.{ident(self.key)}, {self._row_hash()} FROM {self.table} t")
                return {name: h for name, h in await cur.fetchall()}
        result: dict[str, str] = await self._call(op)
        return result

    async def update(self, updates: Sequence[Update]) -> None:
        async def op(db: Any) -> None:
            async with db.transaction(), db.cursor() as cur:
                for sql, params in grouped(self.table, updates, "%s", self.key, self.upsert):
                    await cur.executemany(sql, params)  # pipelined: one round trip per statement shape
        await self._call(op)

    async def wait_notify(self, timeout: float) -> set[str] | None:
        """Names from NOTIFYs within `timeout` (empty: none came), or None when the trigger is
        not installed (the caller polls)."""
        import psycopg

        if self._listen is None or self._listen.closed or self._listen.broken:
            async def has_trigger(db: Any) -> bool:
                cur = await db.execute("SELECT 1 FROM pg_trigger WHERE tgname = 'sipqualify_notify' "
                                       "AND tgrelid = to_regclass(%s)", (self.table_name,))
                return await cur.fetchone() is not None
            if not await self._call(has_trigger):
                self.listening = False
                return None
            self._listen = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(self._dsn(), autocommit=True), DB_TIMEOUT_S)
            await self._listen.execute(f"LISTEN {notify_channel(self.table_name)}")
            self.listening = self.resync = True  # what changed before LISTEN sent no NOTIFY to us
            return set()
        names: set[str] = set()
        try:  # the first NOTIFY (psycopg reads timeout=0 as none: 1 ms), then what comes within 50 ms
            async for n in self._listen.notifies(timeout=max(timeout, 0.001), stop_after=1):
                names.add(n.payload)
            if names:
                async for n in self._listen.notifies(timeout=0.05, stop_after=10_000):
                    names.add(n.payload)
        except BaseException:
            await self._drop("_listen")
            raise
        return names

    async def close(self) -> None:
        await self._drop("_listen")
        await self._drop("_db")
