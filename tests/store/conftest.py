"""Every store test runs against both backends (`backend`): a SQLite file, and a database of a
real PostgreSQL server (initdb + pg_ctl, tests/helpers.py) started once for the session, one
fresh database per test. Tests about the SQLite file itself take `db_path` (or carry the
`sqlite_only` marker): their PostgreSQL variant is not collected (deselected, not skipped)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipqualify.store import AnyStore, Store

from ..helpers import Postgres

_DATABASES = itertools.count(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test about the SQLite file has no PostgreSQL variant: deselected at collection."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        postgres = callspec is not None and callspec.params.get("backend") == "postgres"
        about_file = item.get_closest_marker("sqlite_only") is not None or "db_path" in getattr(
            item, "fixturenames", ())
        (dropped if postgres and about_file else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and request.node.get_closest_marker("sqlite_only"):
        pytest.skip("about the SQLite file")
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Postgres]:
    pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def own_server() -> Iterator[Postgres]:
    """A server of the test's own: it stops and starts it (an outage)."""
    pytest.importorskip("psycopg") if not os.environ.get("CI") else __import__("psycopg")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def pg_url(pg_server: Postgres) -> str:
    """A fresh, empty database of the session's server."""
    name = f"store{next(_DATABASES)}"
    pg_server.sql(f"CREATE DATABASE {name}")
    return pg_server.url(name)


@pytest.fixture
def db_path(tmp_path: Path, backend: str) -> str:
    if backend != "sqlite":
        pytest.skip("about the SQLite file")
    return str(tmp_path / "sipqualify.sqlite")


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the test's stores are: the SQLite file's path, or the PostgreSQL database's URL."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "sipqualify.sqlite")


def store_class(location: str) -> type[AnyStore]:
    if location.startswith("postgresql://"):
        from sipqualify.store.postgres import Store as PgStore

        return PgStore
    return Store


@pytest.fixture
def make_store(store_location: str) -> Iterator[Callable[..., AnyStore]]:
    """Stores made through this fixture are closed at teardown even when a test fails; all of a
    test's stores open the same database."""
    made: list[AnyStore] = []
    cls = store_class(store_location)

    def make(**kw: object) -> AnyStore:
        s = cls(store_location, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
