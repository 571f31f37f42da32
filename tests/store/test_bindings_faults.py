"""A failing bindings database reports its own error, not the ROLLBACK that followed it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sipqualify.qualify.registrar import Binding
from sipqualify.store.bindings import BindingStore


def _binding(i: int) -> Binding:
    return Binding(f"p{i}", "sip:p@192.0.2.1:5060;x=" + "x" * 2000, ("192.0.2.1", 5060), "udp", 2e9, "ua")


def test_disk_full_is_reported_as_disk_full_and_the_store_recovers(tmp_path: Path) -> None:
    bs = BindingStore(tmp_path / "bindings.sqlite")
    try:
        pages = bs.db.execute("PRAGMA page_count").fetchone()[0]
        bs.db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own SQLITE_FULL path
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            bs.apply([(f"p{i}", _binding(i)) for i in range(50)])
        assert not bs.db.in_transaction
        bs.db.execute("PRAGMA max_page_count=1073741823")  # space again
        bs.apply([(f"p{i}", _binding(i)) for i in range(50)])
        assert len(bs.load(0.0, 0.0, 3600)) == 50
    finally:
        bs.close()


def test_a_failed_begin_is_reported_as_itself(tmp_path: Path) -> None:
    bs = BindingStore(tmp_path / "bindings.sqlite")
    other = sqlite3.connect(tmp_path / "bindings.sqlite", isolation_level=None)
    try:
        bs.db.execute("PRAGMA busy_timeout=0")
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            bs.apply([("p1", _binding(1))])
        other.execute("ROLLBACK")
        bs.apply([("p1", _binding(1))])
        assert [b.peer for b in bs.load(0.0, 0.0, 3600)] == ["p1"]
    finally:
        other.close()
        bs.close()
