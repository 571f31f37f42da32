from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipqualify.store import Store


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "sipqualify.sqlite")


@pytest.fixture
def make_store(db_path: str) -> Iterator[Callable[..., Store]]:
    """Stores made through this fixture are closed at teardown even when a test fails."""
    made: list[Store] = []

    def make(**kw: object) -> Store:
        s = Store(db_path, **kw)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
