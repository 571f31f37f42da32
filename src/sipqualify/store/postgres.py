"""PostgreSQL persistence: the store of store/base.py in a database that several nodes share
(`[store] url = "postgresql://..."`; issue 15), and the bindings and silences beside it.

What differs from store/sqlite.py:

- Every row carries its `node` (`[service] node_id`). `save_state` upserts one row per peer,
  keyed by its name: the node that owns the peer writes it with its node and `updated_at`;
  `forget_peers` deletes only this node's rows. Reads (`states`, `fleet_states`,
  `transitions`, `transitions_after`, `samples`, windows) see every node's rows, so any
  node's API, event stream and metrics can show the fleet.
- Transition ids are commit-ordered across nodes: an insert takes a transaction-level advisory
  lock before it draws its ids, so a node's event stream that resumes after id N (`id > N`)
  never skips a row another node committed later with a smaller id.
- The server can go away (restart, network): the writer's connection is then rebuilt on the
  next retry (same backoff, up to 2 s, forever); meanwhile `health()` is failing with the
  cause, nothing queued is dropped but samples beyond `max_queued_samples`, and it all goes in
  when the server is back. TCP keepalives (and `tcp_user_timeout`) make a silent network
  failure an error within ~15 s instead of a hang.
- A batch of samples, state upserts or transitions is one statement whatever its size
  (`INSERT ... SELECT FROM unnest(arrays)`, one array per column): a round trip per batch,
  not per row.
- A commit of transitions is NOTIFY'd on `sipqualify_transitions` ("<node> <last id>"): a node
  that LISTENs there learns at once that `transitions_after` has rows for it.
- The schema is versioned in `sipqualify_schema` and migrated on first connect under an
  advisory lock, so nodes starting together migrate it once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..qualify.registrar import Binding
from ..qualify.silence import Silence
from .base import (
    SAMPLE_COLUMNS,
    STATE_COLUMNS,
    TRANSITION_COLUMNS,
    BaseStore,
    Ops,
    PeerStateRecord,
    ReaderPool,
    Row,
    default_node_id,
)
from .bindings import COLUMNS as BINDING_COLUMNS
from .bindings import arm, binding_row, save_runs
from .windows import PERCENTILES, RTT_WINDOWS

log = logging.getLogger("sipqualify.store")

_T = TypeVar("_T")

# NOTIFY'd with "<node> <last id>" when a node commits transitions (LISTEN to follow the fleet)
NOTIFY_CHANNEL = "sipqualify_transitions"
# advisory lock keys (pg_advisory_xact_lock): schema migration, transition ids
_MIGRATE_LOCK = 0x5199_0001
_TRANSITION_LOCK = 0x5199_0002

# MIGRATIONS[i] upgrades the schema from version i to i + 1. Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS peer_state (
            peer TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            lastms BIGINT NOT NULL,
            maxms BIGINT NOT NULL,
            rtt_ms DOUBLE PRECISION,
            changed_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL,
            node TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS peer_state_node ON peer_state(node)",
        """CREATE TABLE IF NOT EXISTS transitions (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            peer TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            old TEXT NOT NULL,
            new TEXT NOT NULL,
            lastms BIGINT NOT NULL,
            maxms BIGINT NOT NULL,
            rtt_ms DOUBLE PRECISION,
            reason TEXT,
            suppressed TEXT,
            verdict TEXT,
            verdict_reason TEXT,
            policy TEXT,
            node TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS transitions_peer_time ON transitions(peer, time)",
        "CREATE INDEX IF NOT EXISTS transitions_time ON transitions(time)",
        """CREATE TABLE IF NOT EXISTS samples (
            peer TEXT NOT NULL,
            time DOUBLE PRECISION NOT NULL,
            rtt_ms DOUBLE PRECISION,
            status_code INTEGER,
            transmissions INTEGER NOT NULL,
            node TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS samples_peer_time ON samples(peer, time)",
        "CREATE INDEX IF NOT EXISTS samples_time ON samples(time)",
        """CREATE TABLE IF NOT EXISTS bindings (
            peer TEXT PRIMARY KEY, contact TEXT NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL,
            transport TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL, useragent TEXT NOT NULL,
            path TEXT NOT NULL, call_id TEXT NOT NULL, cseq BIGINT NOT NULL, nat INTEGER NOT NULL,
            granted BIGINT, node TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS bindings_node ON bindings(node)",
        """CREATE TABLE IF NOT EXISTS silences (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, peer TEXT, grp TEXT,
            until DOUBLE PRECISION NOT NULL, comment TEXT NOT NULL DEFAULT '', created DOUBLE PRECISION NOT NULL
        )""",
    ),
    (  # 2: what each vantage point last saw of a peer ([cluster] vantage_points, cluster/vantage.py)
        """CREATE TABLE IF NOT EXISTS observations (
            peer TEXT NOT NULL,
            node TEXT NOT NULL,
            state TEXT NOT NULL,
            lastms BIGINT NOT NULL,
            rtt_ms DOUBLE PRECISION,
            at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (peer, node)
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


@lru_cache(maxsize=256)
def pg_sql(sql: str) -> str:
    """store/base.py's `?` placeholders as psycopg's `%s` (the shared SQL has no `%` or `?` literal)."""
    return sql.replace("?", "%s")


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an invalid PostgreSQL URL)"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)  # type: ignore[arg-type]


# every connection of ours (the store's, and the fleet follower's LISTEN, cluster/follow.py)
CONNECT_OPTIONS: dict[str, Any] = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
                                   "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15000,
                                   "application_name": "sipqualify"}


def connect(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """One connection; a dead server or network is an OperationalError within seconds.

    The server ends a session of ours left idle inside a transaction for 15 s (a node cut off
    between two statements) and a wait for a lock gives up after 30 s (retried): a node that
    vanishes while it holds the transition-id lock holds up the other nodes for seconds, not
    until the server's TCP keepalive notices (hours by default)."""
    db = psycopg.connect(url, autocommit=autocommit, **CONNECT_OPTIONS)
    try:
        db.execute("SET idle_in_transaction_session_timeout = '15s'")
        db.execute("SET lock_timeout = '30s'")
        if not autocommit:
            db.commit()
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: psycopg.Connection[Any], url: str) -> None:
    """Create or upgrade the schema (every table: store, bindings, silences), once across nodes."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        db.execute("CREATE TABLE IF NOT EXISTS sipqualify_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT version FROM sipqualify_schema").fetchone()
        version = int(row[0]) if row else 0
        if row is None:
            db.execute("INSERT INTO sipqualify_schema VALUES (0)")
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{redact(url)}: schema version {version} is newer than this build ({SCHEMA_VERSION})")
        for v in range(version, SCHEMA_VERSION):
            for stmt in MIGRATIONS[v]:
                db.execute(stmt)
            db.execute("UPDATE sipqualify_schema SET version=%s", (v + 1,))
            log.info("%s: schema migrated to version %d", redact(url), v + 1)


class StoreUnavailable(OSError):
    """The PostgreSQL store cannot be reached (or its URL is not one) when the daemon starts."""


def open_migrated(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A connection to a migrated schema; a clear error naming the server when there is none."""
    try:
        db = connect(url, autocommit=autocommit)
    except (psycopg.OperationalError, psycopg.ProgrammingError) as e:
        why = str(e).strip().replace(url, "the URL")
        raise StoreUnavailable(f"cannot connect to the PostgreSQL store {redact(url)}: {why}") from e
    try:
        migrate(db, url)
        if not autocommit:
            db.commit()
    except BaseException:
        db.close()
        raise
    return db


# the columns' types, for the arrays a batch is sent as (one statement: INSERT ... SELECT FROM unnest)
_STATE_TYPES = ("text", "text", "bigint", "bigint", "float8", "float8", "float8")
_SAMPLE_TYPES = ("text", "float8", "float8", "integer", "integer")
_TRANSITION_TYPES = ("text", "float8", "text", "text", "bigint", "bigint", "float8", "text", "text", "text", "text",
                     "text")


def _unnest(types: tuple[str, ...]) -> str:
    return "unnest(" + ", ".join(f"%s::{t}[]" for t in types) + ")"


def _arrays(rows: list[Row], types: tuple[str, ...]) -> list[list[Any]]:
    """The rows as one list per column; float columns as floats (psycopg refuses an array that
    mixes int and float, which Python callers pass freely)."""
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)]
    for i, t in enumerate(types):
        if t == "float8":
            cols[i] = [None if v is None else float(v) for v in cols[i]]
    return cols


class Store(BaseStore[psycopg.Connection[Any] | None]):
    """The store in a PostgreSQL database (`url`: a libpq URL or key=value string) shared by nodes."""

    transient_errors = (psycopg.OperationalError,)
    bucket_sql = "FLOOR((time - %s) / %s)::bigint"
    retention_sql = ("DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE time < %s "
                     "LIMIT %s))")
    # a batch is one statement whatever its size: the node, then one array per column
    upsert_state_sql = (
        f"INSERT INTO peer_state({STATE_COLUMNS}, node) SELECT u.*, %s FROM {_unnest(_STATE_TYPES)} AS u "
        "ON CONFLICT(peer) DO UPDATE SET state=excluded.state, lastms=excluded.lastms, maxms=excluded.maxms, "
        "rtt_ms=excluded.rtt_ms, changed_at=excluded.changed_at, updated_at=excluded.updated_at, node=excluded.node"
    )
    insert_sample_sql = f"INSERT INTO samples({SAMPLE_COLUMNS}, node) SELECT u.*, %s FROM {_unnest(_SAMPLE_TYPES)} AS u"
    delete_state_sql = "DELETE FROM peer_state WHERE node=%s AND peer = ANY(%s::text[])"
    _insert_transitions_sql = (
        f"INSERT INTO transitions({TRANSITION_COLUMNS}, node) SELECT {TRANSITION_COLUMNS}, %s "
        f"FROM {_unnest(_TRANSITION_TYPES)} WITH ORDINALITY AS u({TRANSITION_COLUMNS}, ord) ORDER BY ord "
        "RETURNING id")
    _types = {upsert_state_sql: _STATE_TYPES, insert_sample_sql: _SAMPLE_TYPES, delete_state_sql: ("text",)}

    def __init__(self, url: str, **kw: Any) -> None:
        # a statement of 10,000 upserts takes a server ~0.3 s on a busy 2-core machine, and a
        # transition waits for the one in progress: smaller chunks keep that wait short
        kw.setdefault("batch_rows", 2_000)
        super().__init__(**kw)
        self.url = url
        self._db: psycopg.Connection[Any] | None = None
        self._readers: ReaderPool[psycopg.Connection[Any]] = ReaderPool(
            lambda: connect(self.url, autocommit=True), lambda db: db.close(),
            reusable=lambda db: not (db.broken or db.closed))

    @property
    def path(self) -> str:
        """Where the store is, for messages (the password left out)."""
        return redact(self.url)

    @property
    def _node_column(self) -> str:
        return ", node"

    # ------------------------------------------------------------------ lifecycle

    def _open_writer(self) -> tuple[psycopg.Connection[Any] | None, dict[str, PeerStateRecord]]:
        db = open_migrated(self.url, autocommit=False)
        try:
            rows = db.execute(f"SELECT {STATE_COLUMNS}, node FROM peer_state").fetchall()
            db.commit()
        except BaseException:
            db.close()
            raise
        self._db = db
        return db, {r[0]: self._state_record(r) for r in rows}

    def _close_connections(self, writer_stopped: bool) -> None:
        if self._db is not None and writer_stopped:
            self._db.close()
            self._db = None
        self._readers.close()

    # ------------------------------------------------------------------ statements (writer thread)

    def _begin(self, db: psycopg.Connection[Any] | None) -> psycopg.Connection[Any]:
        # the connection passed along is the one open() made; after a failure it is rebuilt here
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._db = connect(self.url, autocommit=False)
            log.info("store: reconnected to %s", self.path)
        return self._db  # psycopg opens the transaction at the first statement

    def _dropped(self, db: psycopg.Connection[Any] | None) -> bool:
        return db is not None and db.broken

    def _commit(self, db: psycopg.Connection[Any] | None) -> None:
        assert db is not None
        db.commit()

    def _rollback(self, db: psycopg.Connection[Any] | None) -> None:
        if db is None:
            return
        try:
            if db.broken or db.closed:
                db.close()
            else:
                db.rollback()
        except psycopg.Error:
            db.close()
        if db.closed and db is self._db:
            self._db = None

    def _execute_ops(self, db: psycopg.Connection[Any] | None, txn: Ops) -> int:
        assert db is not None
        for _counter, sql, rows in txn:
            db.execute(sql, (self.node, *_arrays(rows, self._types[sql])))
        return 0  # no rollups: the windows are computed from the raw rows (store/base.py)

    def _execute_rowcount(self, db: psycopg.Connection[Any] | None, sql: str, args: Row) -> int:
        assert db is not None
        return db.execute(sql, args).rowcount

    def _insert_transitions(self, db: psycopg.Connection[Any] | None, rows: list[Row]) -> list[int]:
        assert db is not None
        # ids in commit order across nodes: drawn under a lock held until this COMMIT; within the
        # statement in the rows' order (ORDER BY ord), so the sorted ids are the rows' ids
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_TRANSITION_LOCK,))
        got = db.execute(self._insert_transitions_sql, (self.node, *_arrays(rows, _TRANSITION_TYPES))).fetchall()
        ids = sorted(int(r[0]) for r in got)
        # delivered at COMMIT to every session LISTENing (other nodes following the fleet's
        # transitions: then `transitions_after`), never if it rolls back
        db.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{self.node} {ids[-1]}"))
        return ids

    # ------------------------------------------------------------------ reads (any thread)

    def rtt_windows(self, peer: str, now: float) -> tuple[dict[str, Any], int]:
        """The RTT windows computed by the server, exactly, in one statement: PostgreSQL's
        `percentile_disc` is the nearest rank of store/windows.py (the first value whose rank
        reaches ceil(q * n), q * n in float8 as Python computes it), so only the figures travel,
        never the window's samples. Also the number of samples the server read."""
        qs = [q / 100.0 for q in PERCENTILES]
        cols, args = [], []
        for _name, span in RTT_WINDOWS:
            cols.append("count(*) FILTER (WHERE time >= %s), "
                        "percentile_disc(%s::float8[]) WITHIN GROUP (ORDER BY rtt_ms) FILTER (WHERE time >= %s)")
            args += [now - span, qs, now - span]
        longest = max(span for _, span in RTT_WINDOWS)
        sql = (f"SELECT count(*), {', '.join(cols)} FROM samples "
               "WHERE peer=%s AND time>=%s AND time<=%s AND rtt_ms IS NOT NULL")
        with self._reader() as db:
            row = db.execute(sql, (*args, peer, now - longest, now)).fetchone()
        assert row is not None
        rtt: dict[str, Any] = {}
        for i, (name, _span) in enumerate(RTT_WINDOWS):
            n, values = row[1 + 2 * i], row[2 + 2 * i] or [None] * len(PERCENTILES)
            rtt[name] = {"samples": int(n), **{f"p{q}_ms": v for q, v in zip(PERCENTILES, values, strict=True)}}
        return rtt, int(row[0])

    def _reader(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._readers.connection()

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        with self._reader() as db:
            return db.execute(pg_sql(sql), tuple(args)).fetchall()


# ---------------------------------------------------------------------- bindings and silences


class _Session:
    """One connection for short synchronous statements (bindings, silences), rebuilt when the
    server dropped it: a statement that finds it dead (a server restart since the last use) is
    run again once on a new one; an error while the server is down reaches the caller."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = open_migrated(url, autocommit=True)
        self.lock = threading.Lock()

    def run(self, body: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        with self.lock:
            if self.db.closed or self.db.broken:
                self.db.close()
                self.db = connect(self.url, autocommit=True)
            try:
                return body(self.db)
            except psycopg.OperationalError:
                if not self.db.broken:
                    raise
                self.db.close()  # dropped under us: once more on a new connection (idempotent bodies)
                self.db = connect(self.url, autocommit=True)
                return body(self.db)

    def close(self) -> None:
        with self.lock:
            self.db.close()


class BindingStore(_Session):
    """Registrar bindings in PostgreSQL (store/bindings.py's interface): each node stores, loads
    and expires its own rows (`node`), so a node's restart restores the bindings it holds."""

    errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def __init__(self, url: str, node: str | None = None) -> None:
        super().__init__(url)
        self.node = node or default_node_id()
        self._upsert = (
            f"INSERT INTO bindings ({BINDING_COLUMNS}, node) VALUES ({', '.join(['%s'] * 13)}) ON CONFLICT(peer) "
            "DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in [*BINDING_COLUMNS.split(", ")[1:], "node"]))

    def apply(self, changes: list[tuple[str, Binding | None]]) -> None:
        """Saves (binding) and deletes (None) in one transaction, in order."""
        def body(db: psycopg.Connection[Any]) -> None:
            with db.transaction(), db.cursor() as cur:
                for saving, run in save_runs(changes):
                    if saving:
                        cur.executemany(self._upsert, [(*binding_row(b), self.node) for _, b in run if b is not None])
                    else:
                        cur.executemany("DELETE FROM bindings WHERE peer=%s AND node=%s",
                                        [(p, self.node) for p, _ in run])
        self.run(body)

    def load(self, now_wall: float, now_mono: float, maxexpiry: int) -> list[Binding]:
        """This node's bindings still valid at `now_wall` (store/bindings.py's `load`)."""
        def body(db: psycopg.Connection[Any]) -> list[Binding]:
            with db.transaction():
                db.execute("DELETE FROM bindings WHERE expires_at <= %s AND node=%s", (now_wall, self.node))
                rows = db.execute(f"SELECT {BINDING_COLUMNS} FROM bindings WHERE node=%s", (self.node,)).fetchall()
                out, clamped = arm(rows, now_wall, now_mono, maxexpiry)
                if clamped:
                    db.cursor().executemany("UPDATE bindings SET expires_at=%s WHERE peer=%s", clamped)
            return out
        return self.run(body)


class SilenceStore(_Session):
    """Silences in PostgreSQL (store/silences.py's interface): one set for the fleet."""

    def load(self, now: float) -> list[Silence]:
        def body(db: psycopg.Connection[Any]) -> list[Silence]:
            db.execute("DELETE FROM silences WHERE until <= %s", (now,))
            rows = db.execute("SELECT id, peer, grp, until, comment, created FROM silences ORDER BY id").fetchall()
            return [Silence(*r) for r in rows]
        return self.run(body)

    def add(self, peer: str | None, group: str | None, until: float, comment: str, created: float) -> Silence:
        row = self.run(lambda db: db.execute(
            "INSERT INTO silences(peer, grp, until, comment, created) VALUES (%s,%s,%s,%s,%s) RETURNING id",
            (peer, group, until, comment, created)).fetchone())
        assert row is not None
        return Silence(int(row[0]), peer, group, until, comment, created)

    def delete(self, silence_id: int) -> bool:
        return self.run(lambda db: db.execute("DELETE FROM silences WHERE id=%s", (silence_id,)).rowcount > 0)
