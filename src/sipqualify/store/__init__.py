"""The store: SQLite files (one writer thread; the event loop only enqueues) or a PostgreSQL
database several nodes share (store/postgres.py), behind one interface (store/base.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import BaseStore, PeerStateRecord, SampleRecord, TransitionRecord
from .sqlite import Store

if TYPE_CHECKING:
    from ..model import ServiceConfig

AnyStore = BaseStore[Any]

__all__ = ["AnyStore", "BaseStore", "PeerStateRecord", "SampleRecord", "Store", "TransitionRecord", "open_store"]


def open_store(svc: ServiceConfig, state_dir: Path,
               on_transition_committed: Callable[[TransitionRecord], None] | None = None) -> AnyStore:
    """The store `[store]` asks for (not opened yet): PostgreSQL at `url`, else `sipqualify.sqlite`
    in the state directory."""
    kw: dict[str, Any] = {"node": svc.node_id, "sample_retention_s": svc.sample_retention_s,
                          "transition_retention_s": svc.transition_retention_s,
                          "on_transition_committed": on_transition_committed}
    if svc.store_url is not None:
        from .postgres import Store as PgStore

        return PgStore(svc.store_url, **kw)
    return Store(str(state_dir / "sipqualify.sqlite"), **kw)
