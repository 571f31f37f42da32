"""Write, flush, reopen: the state a restart restores, and the schema it finds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from sipqualify.store import PeerStateRecord, Store
from sipqualify.store.sqlite import SCHEMA_VERSION

from ..helpers import T0


def test_round_trip_restores_state(make_store: Callable[..., Store]) -> None:
    s = make_store()
    assert s.open() == {}
    s.save_state("alice", "OK", 12, 2000, 12.4, 1000.0, 1010.0)
    s.save_state("bob", "UNREACHABLE", -1, 2000, None, 1005.0, 1011.0)
    s.save_state("carol", "UNKNOWN", 0, 0, None, None, 1012.0)
    s.close()

    s2 = make_store()
    restored = s2.open()
    assert restored == {
        "alice": PeerStateRecord("alice", "OK", 12, 2000, 12.4, 1000.0, 1010.0),
        "bob": PeerStateRecord("bob", "UNREACHABLE", -1, 2000, None, 1005.0, 1011.0),
        "carol": PeerStateRecord("carol", "UNKNOWN", 0, 0, None, None, 1012.0),
    }
    assert s2.states() == restored


def test_state_updates_coalesce_and_last_wins(make_store: Callable[..., Store]) -> None:
    s = make_store(sample_flush_interval_s=1.0)
    s.open()
    for i in range(1, 101):
        s.save_state("alice", "OK", i, 2000, float(i), 1000.0, 1000.0 + i)
    s.flush()
    assert s.states()["alice"].lastms == 100
    assert s.stats["states_written"] == 1  # one row for 100 updates in one batch


def test_many_peers(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    for i in range(20_000):
        s.save_state(f"p{i}", "OK", 5, 2000, 5.0, 1.0, 2.0)
    s.flush()
    st = s.states()
    assert len(st) == 20_000 and st["p19999"].lastms == 5


def test_forget_peers_keeps_history(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    s.save_state("gone", "OK", 5, 2000, 5.0, 1.0, 2.0)
    s.save_state("kept", "OK", 5, 2000, 5.0, 1.0, 2.0)
    s.record_transition("gone", T0, "UNKNOWN", "OK", 5, 2000, 5.0)
    s.record_sample("gone", T0, 5.0, 200, 1)
    s.flush()
    s.forget_peers(["gone"])
    s.flush()
    assert set(s.states()) == {"kept"}
    assert len(s.transitions("gone")) == 1 and len(s.samples("gone")) == 1


def test_forget_then_save_in_one_batch_last_call_wins(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    s.save_state("p", "OK", 5, 2000, 5.0, 1.0, 2.0)
    s.flush()
    s.forget_peers(["p", "q"])
    s.save_state("p", "LAGGED", 3000, 2000, 3000.0, 3.0, 3.0)  # re-added by a reload before the batch
    s.save_state("q", "OK", 5, 2000, 5.0, 1.0, 2.0)
    s.forget_peers(iter(["q"]))
    s.flush()
    assert {n: r.state for n, r in s.states().items()} == {"p": "LAGGED"}


def test_schema_is_versioned_and_wal(make_store: Callable[..., Store], db_path: str) -> None:
    make_store().open()
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"samples_peer_time", "transitions_peer_time"} <= indexes
    db.close()


def test_refuses_a_newer_schema(make_store: Callable[..., Store], db_path: str) -> None:
    make_store().open()
    db = sqlite3.connect(db_path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        make_store().open()


def test_close_is_idempotent_and_enqueue_after_close_is_harmless(make_store: Callable[..., Store]) -> None:
    s = make_store()
    s.open()
    s.close()
    s.close()
    s.record_sample("p", 1.0, 1.0, 200, 1)
    s.flush()
    assert s.stats["samples_dropped"] == 1
