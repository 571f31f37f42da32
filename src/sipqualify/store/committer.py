"""Binding changes committed in groups, before their REGISTER is answered.

The inbound endpoint says what to store (`BindingChanged`); this adapter owns how: every
change that arrives while a commit is running (or within BINDING_WINDOW of the first) goes
into the next SQLite transaction, so a burst of REGISTERs costs a few transactions, not one
each. A failure is reported to each waiter (its REGISTER is answered 500), logged once per
episode and shown by /readyz until a binding is stored again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..qualify.registrar import Binding
from .bindings import BindingStore
from .sqlite import FileWatch

if TYPE_CHECKING:
    from . import postgres

log = logging.getLogger("sipqualify")

Health = dict[str, object]


class BindingCommitter:
    BINDING_WINDOW = 0.002  # REGISTERs within 2 ms of the first share one commit
    MAX_BATCH = 256  # a full batch goes at once, without waiting for the window

    def __init__(self, where: Path | postgres.BindingStore) -> None:
        """`where`: the SQLite file, or a store with BindingStore's methods and `errors`
        (store/postgres.py's)."""
        self.store: BindingStore | postgres.BindingStore = BindingStore(where) if isinstance(where, Path) else where
        self._file = FileWatch(str(where)) if isinstance(where, Path) else None
        self._queue: list[tuple[str, Binding | None, asyncio.Future[None]]] = []
        self._flushing = False
        self._failure: Health | None = None  # cause and since, until a store succeeds
        # called with each change once it is stored (realtime write-back), in commit order
        self.after_commit: list[Callable[[str, Binding | None], None]] = []

    async def commit(self, peer: str, binding: Binding | None, to: str) -> str | None:
        """Store one change (None: delete the peer's binding); the error, or None when stored.
        `to` is what a failure is logged about (the REGISTER's To)."""
        try:
            await self.apply(peer, binding)
        except self.store.errors as e:
            error = f"{type(e).__name__}: {e}"
            if self._failure is None:  # once per episode: it ends at the next stored binding
                self._failure = {"cause": error, "since": time.time()}
                log.error("cannot store the binding of '%s' (%s): answering 500 until bindings can be stored",
                          to, e)
            return error
        if self._failure is not None:
            since = self._failure["since"]
            assert isinstance(since, float)
            log.warning("bindings are stored again (failing since %.0f s)", time.time() - since)
            self._failure = None
        return None

    def delete_expired(self, peer: str) -> None:
        """An expired binding's delete: nothing waits for it (if it fails, BindingStore.load
        drops the expired row at the next start anyway)."""
        task = asyncio.get_running_loop().create_task(self.apply(peer, None))
        task.add_done_callback(lambda t: _log_expiry_failure(peer, t))

    async def apply(self, peer: str, binding: Binding | None) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((peer, binding, fut))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await fut

    def health(self) -> Health:
        """`ok`, and while not, the `cause` and `since` of the failure (for /readyz)."""
        failure = (self._file.check() if self._file is not None else None) or self._failure
        return {"ok": False, **failure} if failure else {"ok": True, "cause": None, "since": None}

    def close(self) -> None:
        self.store.close()

    async def _flush(self) -> None:
        try:
            while self._queue:
                if len(self._queue) < self.MAX_BATCH:
                    await asyncio.sleep(self.BINDING_WINDOW)
                batch, self._queue = self._queue, []
                try:
                    await asyncio.to_thread(self.store.apply, [(p, b) for p, b, _ in batch])
                except Exception as e:  # each waiter gets the error and answers 500
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e if isinstance(e, self.store.errors) else self.store.errors[0](str(e)))
                    continue
                for peer, binding, fut in batch:
                    for hook in self.after_commit:
                        hook(peer, binding)
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False


def _log_expiry_failure(peer: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cannot delete the expired binding of '%s': %s", peer, task.exception())
