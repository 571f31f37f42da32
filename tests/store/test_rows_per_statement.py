"""The SQLite writer's statements of many rows (store/sqlite.py `execute_rows`,
`_states_before_writing`) against the one-row-at-a-time statements they replace.

Why they exist: the sqlite3 module lets go of the GIL around each statement's step, so a writer
thread beside a busy event loop waited for it once per row and fell behind (issue 15: its queues
grew to one row per peer at a cold start of a million peers). What must not change: the rows
written, upserts applied in order, and the uptime credit's view of each peer's previous state.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sipqualify.store import sqlite as sq
from sipqualify.store.sqlite import Store

UPSERT = ("INSERT INTO t(k, a, b) VALUES (?,?,?) "
          "ON CONFLICT(k) DO UPDATE SET a=a+excluded.a, b=COALESCE(excluded.b, b)")


def _table() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t(k TEXT PRIMARY KEY, a INTEGER NOT NULL, b REAL)")
    return db


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 63, 64, 65, 100, 1000, 1234])
def test_many_rows_per_statement_write_what_one_row_per_statement_writes(n: int) -> None:
    rnd = random.Random(n)
    # repeated keys: a later row's upsert must see the earlier ones, as executemany does
    rows = [(f"k{rnd.randrange(max(1, n // 3))}", rnd.randrange(-5, 6), rnd.choice([None, rnd.random()]))
            for _ in range(n)]
    one, many = _table(), _table()
    one.executemany(UPSERT, rows)
    sq.execute_rows(many, UPSERT, rows)
    q = "SELECT k, a, b FROM t ORDER BY k"
    assert many.execute(q).fetchall() == one.execute(q).fetchall()


def test_statement_texts_are_few_and_other_statements_run_as_they_are() -> None:
    assert sq.rows_sql(UPSERT, 4) == (
        "INSERT INTO t(k, a, b) VALUES (?,?,?),(?,?,?),(?,?,?),(?,?,?) "
        "ON CONFLICT(k) DO UPDATE SET a=a+excluded.a, b=COALESCE(excluded.b, b)")
    assert sq.rows_sql("DELETE FROM t WHERE k=?", 4) is None
    db = _table()
    sq.execute_rows(db, UPSERT, [("x", 1, None), ("y", 2, None)])
    sq.execute_rows(db, "DELETE FROM t WHERE k=?", [("x",)])
    assert db.execute("SELECT k FROM t").fetchall() == [("y",)]


def test_a_row_of_the_wrong_length_is_refused_not_shifted_into_its_neighbours() -> None:
    db = _table()
    rows = [("a", 1, 0.5)] * 3 + [("b", 2)] + [("c", 3, 0.25, 9)] + [("d", 4, None)] * 59
    with pytest.raises(sqlite3.ProgrammingError):
        sq.execute_rows(db, UPSERT, rows)


@pytest.mark.parametrize("seed", range(6))
def test_the_batched_previous_state_is_the_one_by_one_previous_state(
    make_store: Callable[..., Store], db_path: str, seed: int
) -> None:
    """`_states_before_writing` (the uptime credit, 64 peers a statement) against `_state_before`
    (one peer, up to two queries): ties in time, ids out of time order, saved states before,
    at and after t, peers with nothing stored."""
    rnd = random.Random(seed)
    base = time.time() - 1000.0  # recent: the writer's retention pass keeps it
    store = make_store()
    store.open()
    peers = [f"p{i}" for i in range(150)]
    states = ["OK", "LAGGED", "UNREACHABLE", "UNKNOWN"]
    for _ in range(600):
        p = rnd.choice(peers)
        t = base + float(rnd.choice([100, 200, 200, 300, 400])) + rnd.choice([0.0, 0.5])
        store.record_transition(p, t, rnd.choice(states), rnd.choice(states), 3, 2000, 3.0)
    for p in rnd.sample(peers, 60):
        changed = rnd.choice([None, base + 150.0, base + 200.5, base + 350.0])
        store.save_state(p, rnd.choice(states), 3, 2000, 3.0, changed, base + 500.0)
    store.flush()
    store.close()
    db = sqlite3.connect(db_path, isolation_level=None)
    ids = {p: [r for r in db.execute("SELECT id, time FROM transitions WHERE peer=?", (p,))] for p in peers}
    first: dict[str, tuple[float, int]] = {}
    for p in peers:
        if ids[p] and rnd.random() < 0.8:
            rowid, t = rnd.choice(ids[p])
            first[p] = (t, rowid)
        else:  # a peer and a time of which nothing may be stored
            first[p] = (base + float(rnd.choice([50, 200, 450])), 10**6)
    got = sq._states_before_writing(db, first)
    want = {p: sq._state_before(db, p, t, writing=True, before_id=rowid) for p, (t, rowid) in first.items()}
    assert got == want
    assert sum(v is None for v in want.values()) > 10 and sum(v is not None for v in want.values()) > 10


def test_a_cold_start_credits_what_one_by_one_credited(tmp_path: Path) -> None:
    """The same transitions (every peer's first, then flaps) stored twice, credited by the batched
    credit and by the one-by-one one: the same uptime rollup rows."""
    rnd = random.Random(7)
    base = time.time() - 6000.0  # recent: the writer's retention pass keeps it
    events = []
    for i in range(300):
        t = base + rnd.random() * 10
        events.append((f"p{i}", t, "UNKNOWN", "OK"))
        if i % 3 == 0:
            events.append((f"p{i}", t + 4000.0, "OK", "UNREACHABLE"))
            events.append((f"p{i}", t + 4100.0, "UNREACHABLE", "OK"))
    rollups = []
    for batched in (True, False):
        store = Store(str(tmp_path / f"{batched}.db"))
        store.open()
        if not batched:  # the previous state of each peer as the credit used to read it: one by one
            orig = sq._states_before_writing

            def one_by_one(db: sqlite3.Connection, first: dict[str, tuple[float, int]]) -> dict[str, object]:
                return {p: sq._state_before(db, p, t, writing=True, before_id=r) for p, (t, r) in first.items()}

            sq._states_before_writing = one_by_one  # type: ignore[assignment]
        try:
            for peer, t, old, new in sorted(events, key=lambda e: e[1]):
                store.record_transition(peer, t, old, new, 3, 2000, 3.0)
            store.flush()
        finally:
            if not batched:
                sq._states_before_writing = orig
        store.close()
        db = sqlite3.connect(tmp_path / f"{batched}.db")
        rollups.append((db.execute("SELECT * FROM uptime_rollup ORDER BY bucket, peer").fetchall(),
                        db.execute("SELECT peer, t0, t1, up FROM uptime_spans ORDER BY peer, t0").fetchall()))
    assert rollups[0] == rollups[1]
    assert len(rollups[0][0]) >= 200


def test_the_heap_is_trimmed_once_a_backlog_is_written(make_store: Callable[..., Store]) -> None:
    """After `trim_after_rows` rows written, once the queues are short again: malloc_trim, once
    (glibc: the freed queues' tables go back to the system); not before, not at every batch."""
    from sipqualify.config.memory import _malloc_trim

    store = make_store()
    store.trim_after_rows = 2_000
    store.open()
    for i in range(1_500):
        store.record_transition(f"p{i}", 1000.0 + i, "UNKNOWN", "OK", 3, 2000, 3.0)
    store.flush()
    assert store.stats["heap_trims"] == 0
    for i in range(1_500):
        store.save_state(f"p{i}", "OK", 3, 2000, 3.0, 1000.0 + i, 2000.0)
    store.flush()
    assert store.stats["heap_trims"] == (1 if _malloc_trim() is not None else 0)
    store.record_transition("p0", 5000.0, "OK", "LAGGED", 3, 2000, 3.0)
    store.flush()
    assert store.stats["heap_trims"] == (1 if _malloc_trim() is not None else 0)
