"""What every store backend shares: the enqueue side, the writer thread, health, and the reads.

Theory of operation
-------------------
Two rules shape the store, whatever database is behind it (store/sqlite.py, store/postgres.py):

1. **The event loop never waits on the database.** The enqueue calls (`record_transition`,
   `record_sample`, `save_state`, `forget_peers`) take one uncontended lock, append or assign,
   and return: a fraction of a microsecond to a few. All writes happen on ONE writer thread
   that owns the only write connection.
2. **Reported implies stored.** A transition is committed in its own short transaction as
   soon as the writer sees it (pending transitions jump ahead of any batch of samples), and
   `on_transition_committed` is called on the writer thread only after that COMMIT.

Everything else is batched: samples and state upserts are committed at least every
`sample_flush_interval_s` (so a `kill -9` loses at most that much of them), state upserts are
coalesced per peer at enqueue time (so at most one pending row per peer, whatever the database
does), and large backlogs are split into transactions of `batch_rows` rows so a backlog never
holds a transition back for long.

When the database fails (disk full, a lock held by another process, a slow device, a server
restarting or unreachable), writes fail or block in the writer only. Errors are counted in
`stats`, retried with backoff, forever, and never reach the caller; `health()` reports the
failure with its cause (logged once per episode on the "sipqualify.store" logger; the episode
ends at the next successful commit). The only thing ever dropped is samples: their queue is
bounded (`max_queued_samples`), and overflow is counted in `stats["samples_dropped"]`.
Transitions are never dropped; state upserts are bounded by the number of peers.

Every row a backend stores belongs to a node (`node`, `[service] node_id`): one node per
SQLite file, any number sharing one PostgreSQL database (issue 15). Reads see every node's rows.

SQL here is written with `?` placeholders; a backend whose driver wants another style
rewrites them in `_sql`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

from ..config.memory import trim_heap
from .windows import PERCENTILES, RTT_WINDOWS, UPTIME_WINDOWS, percentile, uptime

log = logging.getLogger("sipqualify.store")

_T = TypeVar("_T")
Conn = TypeVar("Conn")
Row = tuple[Any, ...]
Ops = list[tuple[str, str, list[Row]]]  # (stats counter, sql, rows)

TRANSITION_COLUMNS = ("peer, time, old, new, lastms, maxms, rtt_ms, reason, suppressed, verdict, verdict_reason, "
                      "policy")
STATE_COLUMNS = "peer, state, lastms, maxms, rtt_ms, changed_at, updated_at"
SAMPLE_COLUMNS = "peer, time, rtt_ms, status_code, transmissions"
RETAINED_TABLES = ("samples", "transitions")
TRIM_AFTER_ROWS = 100_000  # rows written, then the heap is trimmed when the queues are short again


def default_node_id() -> str:
    """`[service] node_id` when unset: the host name."""
    return socket.gethostname() or "localhost"


@dataclass(frozen=True, slots=True)
class PeerStateRecord:
    peer: str
    state: str
    lastms: int
    maxms: int
    rtt_ms: float | None
    changed_at: float | None
    updated_at: float
    node: str | None = field(default=None, compare=False)  # the node that wrote it (its owner)


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
    node: str | None = field(default=None, compare=False)  # the node that reported it


@dataclass(frozen=True, slots=True)
class SampleRecord:
    peer: str
    time: float
    rtt_ms: float | None
    status_code: int | None
    transmissions: int


class Abandoned(Exception):
    """close() gave up waiting for a stalled database; the writer stops retrying."""


class ReaderPool(Generic[_T]):
    """Connections for reads from any thread: one is taken (or opened with `open_conn`) for a
    read and kept for the next one, up to `size`, unless `reusable` says it is not (broken)."""

    def __init__(self, open_conn: Callable[[], _T], close_conn: Callable[[_T], None],
                 reusable: Callable[[_T], bool] = lambda c: True, size: int = 8) -> None:
        self._open, self._close, self._reusable, self._size = open_conn, close_conn, reusable, size
        self._idle: list[_T] = []
        self._lock = threading.Lock()
        self.closed = False

    @contextmanager
    def connection(self) -> Iterator[_T]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._open()
        try:
            yield conn
        finally:
            with self._lock:
                keep = not self.closed and len(self._idle) < self._size and self._reusable(conn)
                if keep:
                    self._idle.append(conn)
            if not keep:
                self._close(conn)

    def close(self) -> None:
        """Close the idle connections; one in use is closed when its read ends."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._close(conn)


class BaseStore(ABC, Generic[Conn]):
    """The backend-independent store; a backend says how to connect, migrate, run a statement
    and read (the abstract methods), and which SQL differs (the class attributes)."""

    # errors worth retrying (the database, not the row, is the problem)
    transient_errors: tuple[type[Exception], ...] = ()
    # the bucket number of `time` in rtt_series (args: since, step); `time >= since` holds
    bucket_sql = "CAST((time - ?) / ? AS INTEGER)"
    # one bounded chunk of expired rows of {table} (args: cutoff, limit)
    retention_sql = "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE time < ? LIMIT ?)"
    upsert_state_sql = (
        f"INSERT INTO peer_state({STATE_COLUMNS}) VALUES (?,?,?,?,?,?,?) "
        "ON CONFLICT(peer) DO UPDATE SET state=excluded.state, lastms=excluded.lastms, maxms=excluded.maxms, "
        "rtt_ms=excluded.rtt_ms, changed_at=excluded.changed_at, updated_at=excluded.updated_at"
    )
    insert_sample_sql = f"INSERT INTO samples({SAMPLE_COLUMNS}) VALUES (?,?,?,?,?)"
    delete_state_sql = "DELETE FROM peer_state WHERE peer=?"
    retained_tables: tuple[str, ...] = RETAINED_TABLES  # what retention trims, in this order
    # a transition's pending state row commits with it (`_carry_states`): nodes sharing the
    # database read it when they take a peer over
    states_with_transitions = True

    def __init__(
        self,
        *,
        node: str | None = None,
        sample_retention_s: float = 7 * 86400,
        transition_retention_s: float = 90 * 86400,
        sample_flush_interval_s: float = 0.5,
        on_transition_committed: Callable[[TransitionRecord], None] | None = None,
        max_queued_samples: int = 200_000,
        batch_rows: int = 10_000,
        retention_interval_s: float = 60.0,
        retention_chunk_rows: int = 5_000,
        transition_window_s: float = 0.005,
    ) -> None:
        if not 0 < sample_flush_interval_s <= 1.0:
            raise ValueError("sample_flush_interval_s must be in (0, 1] seconds")
        self.node = node or default_node_id()
        self.sample_retention_s = sample_retention_s
        self.transition_retention_s = transition_retention_s
        self.sample_flush_interval_s = sample_flush_interval_s
        self.on_transition_committed = on_transition_committed
        self.max_queued_samples = max_queued_samples
        self.batch_rows = batch_rows
        self.retention_interval_s = retention_interval_s
        self.retention_chunk_rows = retention_chunk_rows
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
        self._closed = False
        # Writer-thread-only counters (read racily by `stats`, which is fine for monitoring).
        self._n: dict[str, int] = {
            "commits": 0,
            "transitions_written": 0,
            "samples_written": 0,
            "states_written": 0,
            "states_deleted": 0,
            "retention_deleted": 0,
            "rollup_rows_written": 0,  # SQLite's time-window rollups (store/rollup.py); 0 elsewhere
            "rollup_rows_deleted": 0,
            "rows_rejected": 0,
            "reconnects": 0,  # a server's connection found dropped and made again at once
            "errors": 0,
            "callback_errors": 0,
            "heap_trims": 0,  # malloc_trim after a backlog of TRIM_AFTER_ROWS rows (_after_backlog)
        }
        self._drained = 0  # rows written since the last trim
        self.trim_after_rows = TRIM_AFTER_ROWS
        self._last_commit_ms = 0.0
        self._max_commit_ms = 0.0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._failing_cause: str | None = None
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

    # ------------------------------------------------------------------ what a backend provides

    @abstractmethod
    def _open_writer(self) -> tuple[Conn, dict[str, PeerStateRecord]]:
        """Connect, create or migrate the schema; the writer's connection and the stored states."""

    @abstractmethod
    def _close_connections(self, writer_stopped: bool) -> None:
        """Close the writer's connection (if `writer_stopped`) and the readers'."""

    @abstractmethod
    def _begin(self, db: Conn) -> Conn:
        """Start a write transaction; the connection to run it on (a backend may reconnect)."""

    @abstractmethod
    def _commit(self, db: Conn) -> None: ...

    @abstractmethod
    def _rollback(self, db: Conn) -> None:
        """Roll back if a transaction is open; never raises."""

    @abstractmethod
    def _execute_ops(self, db: Conn, txn: Ops) -> int:
        """Run each (counter, sql, rows) of `txn` (in one transaction, already begun); the number
        of rollup rows written with them (SQLite's time-window rollups; 0 without)."""

    @abstractmethod
    def _execute_rowcount(self, db: Conn, sql: str, args: Row) -> int: ...

    @abstractmethod
    def _insert_transitions(self, db: Conn, rows: list[Row]) -> list[int]:
        """Insert the rows (in one transaction, already begun); their ids in order."""

    @abstractmethod
    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        """Run one read (any thread) on a reader connection; every row."""

    def _dropped(self, db: Conn) -> bool:
        """Did this failure find a connection the server had dropped? (a server: yes after its
        restart; the retry on a new connection says whether it is back)."""
        return False

    def _check(self) -> None:
        """Writer thread, once a loop turn: backend-specific health checks (a vanished file)."""

    def _extra_failure(self) -> tuple[str, float | None] | None:
        """A backend-specific failure for health() (cause, since on the monotonic clock)."""
        return None

    def _state_record(self, r: Row) -> PeerStateRecord:
        return PeerStateRecord(*r) if self._node_column else PeerStateRecord(*(*r, self.node))

    def _transition_record(self, r: Row) -> TransitionRecord:
        return TransitionRecord(*r) if self._node_column else TransitionRecord(*(*r, self.node))

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> dict[str, PeerStateRecord]:
        """Create or migrate the schema, start the writer thread, return the last stored state per peer."""
        if self._thread is not None or self._closed:
            raise RuntimeError("Store.open() called twice")
        db, states = self._open_writer()
        self._anchor()
        self._thread = threading.Thread(target=self._run, args=(db,), name="sipqualify-store", daemon=True)
        self._thread.start()
        return states

    def close(self, timeout: float = 30.0) -> None:
        """Flush, stop the writer and close every connection. If the database is stalled for longer
        than `timeout`, pending rows are abandoned (and logged) rather than hanging shutdown."""
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
        self._close_connections(thread is None or not thread.is_alive())

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

        Failing means writes are not reaching the database the daemon will read at its next
        start: commits failing (disk full, read-only, I/O, locked, server gone), the writer
        thread gone, or (SQLite) the file removed or replaced under us.
        """
        cause: str | None = None
        since: float | None = None
        extra = self._extra_failure()
        if extra is not None:
            cause, since = extra
        elif self._failing_since is not None:
            cause, since = self._failing_cause or self._last_error, self._failing_since
        elif self._thread is not None and not self._thread.is_alive() and not self._closed:
            cause = "the store writer thread has stopped"
        if cause is None:
            return {"ok": True, "cause": None, "since": None}
        wall_since = None if since is None else time.time() - (time.monotonic() - since)
        return {"ok": False, "cause": cause, "since": wall_since}

    # ------------------------------------------------------------------ writer thread

    def _run(self, db: Conn) -> None:
        interval = self.sample_flush_interval_s
        next_batch = time.monotonic() + interval
        next_retention = time.monotonic()  # a restart after a long outage trims at once
        retention_todo: list[str] = []
        while True:
            try:
                self._check()
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
                    carried = self._carry_states(transitions, ())
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
                    self._write_transitions(db, transitions, carried)
                    self._drained += len(transitions) + len(carried)
                if batch is not None:
                    self._write_batch(db, *batch)
                    self._drained += len(batch[0]) + len(batch[1]) + len(batch[2])
                wrote = batch is not None or bool(transitions)
                if self._drained >= self.trim_after_rows:
                    transitions, batch = [], None  # the rows written: free before the trim
                    self._after_backlog()
                for ev in flushes:
                    ev.set()
                if stop:
                    with self._lock:
                        idle = not (self._transitions or self._samples or self._states or self._forgotten)
                    if idle:
                        return
                    continue
                if not wrote:
                    if not retention_todo and time.monotonic() >= next_retention:
                        retention_todo = list(self.retained_tables)
                        next_retention = time.monotonic() + self.retention_interval_s
                    if retention_todo and not self._retention_chunk(db, retention_todo[0]):
                        retention_todo.pop(0)
            except Abandoned:
                return
            except Exception:  # last resort: the writer thread must not die
                self._n["errors"] += 1
                log.exception("store writer: unexpected error; continuing")
                if self._abandon.wait(0.5):
                    return

    def _after_backlog(self) -> None:
        """Once the queues are short again after `trim_after_rows` rows were written: the freed
        queues (a cold start of a million peers queues a row per peer while the writer catches
        up; the tables of their dicts and lists are glibc's, not pymalloc's) go back to the
        system (`malloc_trim`, ≈ 100 B per peer at a million; ctypes lets go of the GIL)."""
        with self._lock:
            short = len(self._transitions) + len(self._samples) + len(self._states) < self.trim_after_rows // 100
        if short:
            self._drained = 0
            t0 = time.perf_counter()
            if trim_heap():
                self._n["heap_trims"] += 1
                log.debug("store: heap trimmed after a backlog in %.1f ms", (time.perf_counter() - t0) * 1000.0)

    def _carry_states(self, transitions: list[Row], in_flight: Collection[str]) -> dict[str, Row]:
        """(Under the lock.) The pending state rows of the peers in `transitions`, taken out of the
        batch queue: they commit with their transitions, so whoever sees a transition in the store
        (another node taking the peer over, `GET /api/v1/peers` of the fleet) sees the state it led
        to, not the previous one for up to `sample_flush_interval_s`. `in_flight`: the peers of a
        batch being written now, whose older row would land after (and over) the carried one."""
        if not self._states or not self.states_with_transitions:
            return {}
        states = self._states
        return {peer: row for r in transitions if (peer := r[0]) not in in_flight
                and (row := states.pop(peer, None)) is not None}

    def _service_transitions(self, db: Conn, in_flight: Collection[str]) -> None:
        """Between chunks of a large batch: commit any transition that arrived meanwhile first."""
        if self._transitions:
            with self._lock:
                transitions, self._transitions = self._transitions, []
                carried = self._carry_states(transitions, in_flight)
            if transitions:
                self._write_transitions(db, transitions, carried)

    def _write_transitions(self, db: Conn, rows: list[Row], states: dict[str, Row] | None = None) -> None:
        # All transitions pending right now go in one short transaction: no batching delay, and
        # a mass outage (100k peers UNREACHABLE at once) does not cost 100k commits. The state
        # rows of their peers (`states`) commit in the same transaction.
        written: list[tuple[int, Row]] = []
        states = states or {}
        for i in range(0, len(rows), 10_000):
            chunk = rows[i : i + 10_000]
            with_states = [row for r in chunk if (row := states.pop(r[0], None)) is not None]
            ok, ids = self._transact(db, partial(self._insert_transitions_with_states, rows=chunk, states=with_states))
            if ok:
                self._n["states_written"] += len(with_states)
                self._transitions_committed(chunk, ids)
                written.extend(zip(ids or (), chunk, strict=True))
                continue
            for row in chunk:  # a row the database refuses: isolate it, keep the others
                ok, ids = self._transact(db, partial(self._insert_transitions, rows=[row]))
                if ok:
                    self._transitions_committed([row], ids)
                    written.extend(zip(ids or (), [row], strict=True))
                else:
                    self._reject("transition", row)
            if with_states:  # and their states on their own, isolated the same way
                self._write_batch(db, [], {r[0]: r for r in with_states}, set())
        self._after_transitions(db, written)

    def _insert_transitions_with_states(self, db: Conn, rows: list[Row], states: list[Row]) -> list[int]:
        ids = self._insert_transitions(db, rows)
        if states:
            self._execute_ops(db, [("states_written", self.upsert_state_sql, states)])
        return ids

    def _after_transitions(self, db: Conn, written: list[tuple[int, Row]]) -> None:
        """After transitions are committed and their callbacks ran: a backend's own bookkeeping
        of them (SQLite: the uptime rollup), which never delays their events. `written`: the
        (id, row) of each transition committed, in id order."""

    def _transitions_committed(self, rows: list[Row], ids: list[int] | None) -> None:
        assert ids is not None
        self._n["transitions_written"] += len(rows)
        cb = self.on_transition_committed
        if cb is None:
            return
        for row, rowid in zip(rows, ids, strict=True):
            try:
                cb(TransitionRecord(*(rowid, *row, self.node)))
            except Exception:
                self._n["callback_errors"] += 1
                log.exception("on_transition_committed callback failed")

    def _write_batch(self, db: Conn, samples: list[Row], states: dict[str, Row], forgotten: set[str]) -> None:
        ops: Ops = []
        if forgotten:
            ops.append(("states_deleted", self.delete_state_sql, [(n,) for n in forgotten]))
        if states:
            ops.append(("states_written", self.upsert_state_sql, list(states.values())))
        if samples:
            ops.append(("samples_written", self.insert_sample_sql, samples))
        in_flight = states.keys() | forgotten if states or forgotten else ()
        for txn in split_ops(ops, self.batch_rows):
            self._service_transitions(db, in_flight)
            ok, rolled = self._transact(db, partial(self._execute_ops, txn=txn))
            if ok:
                for counter, _sql, rows in txn:
                    self._n[counter] += len(rows)
                self._n["rollup_rows_written"] += rolled or 0
                continue
            for counter, sql, rows in txn:  # isolate the refused rows
                for row in rows:
                    ok, rolled = self._transact(db, partial(self._execute_ops, txn=[(counter, sql, [row])]))
                    if ok:
                        self._n[counter] += 1
                        self._n["rollup_rows_written"] += rolled or 0
                    else:
                        self._reject(counter, row)

    def _retention_chunk(self, db: Conn, table: str) -> bool:
        """Delete one bounded chunk of expired rows; True if there may be more."""
        keep = self.sample_retention_s if table == "samples" else self.transition_retention_s
        cutoff = self._retention_now() - keep
        sql = self.retention_sql.format(table=table)
        ok, n = self._transact(
            db, lambda db: self._execute_rowcount(db, sql, (cutoff, self.retention_chunk_rows)), persist=False
        )
        if not ok or n is None:
            return False
        self._n["retention_deleted"] += n
        return n >= self.retention_chunk_rows

    def _reject(self, what: str, row: Row) -> None:
        self._n["rows_rejected"] += 1
        log.error("store: dropping a %s row the database refuses: %r", what, row)

    def _transact(self, db: Conn, body: Callable[[Conn], _T], *, persist: bool = True) -> tuple[bool, _T | None]:
        """Run `body` in one write transaction.

        Operational errors (`transient_errors`: locked, busy, disk full, I/O, connection lost)
        are retried with backoff until they succeed or close() abandons the writer; with
        `persist=False` (housekeeping that can wait for its next turn) the first one returns
        (False, None) instead. Any other error means the rows themselves are refused (bad types,
        constraint): returns (False, None) so the caller can isolate them.
        """
        delay = 0.05
        fresh = False  # the connection was just made: a failure on it is the database's
        while True:
            t0 = time.perf_counter()
            conn = db
            try:
                conn = self._begin(db)
                result = body(conn)
                self._commit(conn)
            except self.transient_errors as e:
                stale = not fresh and self._dropped(conn)
                self._rollback(conn)
                if stale:  # a connection the server dropped while idle (its restart): once more, now
                    fresh = True
                    self._n["reconnects"] += 1
                    continue
                if not persist:
                    # housekeeping (retention) tries again at its next turn; it loses no data, so
                    # on its own it does not make the store unhealthy
                    self._n["errors"] += 1
                    self._last_error = f"{type(e).__name__}: {e}"
                    log.debug("store housekeeping failed (%s); next turn", self._last_error)
                    return False, None
                self._failed(e, transient=True)
                if self._abandon.wait(delay):
                    raise Abandoned from e
                delay = min(delay * 2, 2.0)
                continue
            except Exception as e:  # binding a bad value raises TypeError / OverflowError, not a DB error
                self._rollback(conn)
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

    def states(self, node: str | None = None) -> dict[str, PeerStateRecord]:
        """The stored state of every peer (of one node's peers with `node`)."""
        sql = f"SELECT {STATE_COLUMNS}{self._node_column} FROM peer_state"
        if node is not None and self._node_column:
            return {r[0]: self._state_record(r) for r in self._query(sql + " WHERE node=?", (node,))}
        if node is not None and node != self.node:
            return {}
        return {r[0]: self._state_record(r) for r in self._query(sql)}

    def state_of(self, peer: str) -> PeerStateRecord | None:
        """One peer's stored state row, whichever node wrote it."""
        rows = self._query(f"SELECT {STATE_COLUMNS}{self._node_column} FROM peer_state WHERE peer=?", (peer,))
        return self._state_record(rows[0]) if rows else None

    def last_transitions(self, peer: str, n: int) -> list[TransitionRecord]:
        """The last `n` transitions of one peer, oldest first, whichever node reported them."""
        sql = (f"SELECT id, {TRANSITION_COLUMNS}{self._node_column} FROM transitions WHERE peer=? "
               "ORDER BY time DESC, id DESC LIMIT ?")
        return [self._transition_record(r) for r in reversed(self._query(sql, (peer, n)))]

    def fleet_counts(self) -> dict[tuple[str, str], int]:
        """How many peers each node stored in each state: (node, state) -> count (one query,
        aggregated by the database: cheap at a million rows)."""
        if self._node_column:
            rows = self._query("SELECT node, state, count(*) FROM peer_state GROUP BY node, state")
            return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
        return {(self.node, str(r[0])): int(r[1]) for r in self._query(
            "SELECT state, count(*) FROM peer_state GROUP BY state")}

    def fleet_states(self) -> dict[str, PeerStateRecord]:
        """Every node's peers: name -> record, its `node` (the owner that wrote it) and `updated_at`."""
        return self.states()

    @property
    def _node_column(self) -> str:
        """", node" when rows carry their node in the database, "" when the store is one node's."""
        return ""

    def transitions(
        self, peer: str | None = None, since: float | None = None, until: float | None = None, limit: int = 1000
    ) -> list[TransitionRecord]:
        """Transitions of every node in time order (oldest first), `since <= time <= until`."""
        where, args = _where(peer, since, until)
        sql = f"SELECT id, {TRANSITION_COLUMNS}{self._node_column} FROM transitions{where} ORDER BY time, id LIMIT ?"
        return [self._transition_record(r) for r in self._query(sql, (*args, limit))]

    def last_transition_id(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM transitions")[0][0])

    def transitions_after(self, last_id: int, limit: int = 10000) -> list[TransitionRecord]:
        """Transitions with an id above `last_id`, in id (= commit) order: resuming an event stream."""
        sql = f"SELECT id, {TRANSITION_COLUMNS}{self._node_column} FROM transitions WHERE id > ? ORDER BY id LIMIT ?"
        return [self._transition_record(r) for r in self._query(sql, (last_id, limit))]

    def samples(
        self, peer: str, since: float | None = None, until: float | None = None, limit: int = 10000
    ) -> list[SampleRecord]:
        """Samples of one peer in time order (oldest first), `since <= time <= until`."""
        where, args = _where(peer, since, until)
        sql = f"SELECT {SAMPLE_COLUMNS} FROM samples{where} ORDER BY time LIMIT ?"
        return [SampleRecord(*r) for r in self._query(sql, (*args, limit))]

    def recent_samples(self, peers: Iterable[str], n: int) -> dict[str, list[SampleRecord]]:
        """The last `n` samples of each of `peers`, oldest first (a dashboard's heartbeat bars)."""
        sql = f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE peer=? ORDER BY time DESC LIMIT ?"
        return {p: [SampleRecord(*r) for r in reversed(self._query(sql, (p, n)))] for p in peers}

    def windows(self, peer: str, now: float) -> dict[str, Any]:
        """`GET /api/v1/peers/NAME/stats`'s history part (store/windows.py): RTT percentiles of the
        answered samples of the last 5 min / 1 h / 24 h (`rtt_windows`), uptime over the last
        24 h / 7 d / 30 d (`uptime_window`)."""
        rtt, _ = self.rtt_windows(peer, now)
        up: dict[str, Any] = {}
        for name, span in UPTIME_WINDOWS:
            pct, seen = self.uptime_window(peer, now - span, now)
            up[name] = {"pct": round(pct, 4) if pct is not None else None, "observed_s": round(seen, 1)}
        return {"rtt_windows": rtt, "uptime": up}

    def rtt_windows(self, peer: str, now: float) -> tuple[dict[str, Any], int]:
        """The RTT windows and the number of rows read for them: here exact, from one range read
        of the raw samples; SQLite reads its incremental rollups instead (store/sqlite.py)."""
        longest = max(span for _, span in RTT_WINDOWS)
        sql = "SELECT time, rtt_ms FROM samples WHERE peer=? AND time>=? AND time<=? AND rtt_ms IS NOT NULL"
        rows = self._query(sql, (peer, now - longest, now))
        rtt: dict[str, Any] = {}
        for name, span in RTT_WINDOWS:
            values = sorted(r for t, r in rows if t >= now - span)
            rtt[name] = {"samples": len(values), **{f"p{q}_ms": percentile(values, q) for q in PERCENTILES}}
        return rtt, len(rows)

    def uptime_window(self, peer: str, since: float, until: float) -> tuple[float | None, float]:
        """(uptime %, seconds observed) over `[since, until]` from the transitions (store/windows.py)."""
        before = self._query("SELECT new FROM transitions WHERE peer=? AND time<? ORDER BY time DESC, id DESC "
                             "LIMIT 1", (peer, since))
        changes = self._query("SELECT time, new FROM transitions WHERE peer=? AND time>=? AND time<=? "
                              "ORDER BY time, id", (peer, since, until))
        if not before:  # its last change may be older than the transitions kept: the saved state
            before = self._query("SELECT state FROM peer_state WHERE peer=? AND changed_at<=?", (peer, since))
        return uptime(before[0][0] if before else None, changes, since, until)

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
            f"SELECT {self.bucket_sql} AS b, COUNT(*), COUNT(rtt_ms), MIN(rtt_ms), AVG(rtt_ms), "
            "MAX(rtt_ms) FROM samples WHERE peer=? AND time>=? AND time<? GROUP BY b ORDER BY b"
        )
        rows = self._query(sql, (since, step_s, peer, since, until))
        return [
            {
                "time": since + b * step_s,
                "count": count,
                "answered": answered,
                "min_ms": mn,
                "avg_ms": None if avg is None else float(avg),
                "max_ms": mx,
                "loss_pct": 100.0 * (count - answered) / count,
            }
            for b, count, answered, mn, avg, mx in rows
        ]


def split_ops(ops: Ops, limit: int) -> Iterator[Ops]:
    """Cut (counter, sql, rows) operations into transactions of at most `limit` rows, in order."""
    txn: Ops = []
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
