"""The main process's engine when static peers are qualified by worker processes.

It is the ordinary QualifyEngine, holding every peer (so that the read model, the store, the
registrar and every surface keep reading one engine, as with one process), except that the
peers a worker owns (`remote`, peer name -> worker) are never poked or kept alive from here:
their scheduled pokes fall through, a forced qualify and a new address are forwarded to their
worker, and their fields are copied from the worker's snapshots (workers/pool.py). Dynamic
peers, TCP/TLS/WS peers, `qualify_targets = all` peers and realtime rows stay here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..addr import Addr
from ..model import GeneralConfig, PeerConfig
from ..qualify.engine import EngineStats, Peer, QualifyEngine, ReloadSummary
from .hrw import owner


def remote_eligible(cfg: PeerConfig) -> bool:
    """May a worker qualify this peer? Static UDP peers with one address; the rest stays home
    (a peer with a `qualify_source` too: its source socket is the main process's)."""
    return (not cfg.dynamic and cfg.transport == "udp" and not cfg.contact_uri and cfg.qualify_ms > 0
            and cfg.qualify_targets != "all" and cfg.qualify_source is None)


class Forwarder(Protocol):
    """What the mirror engine needs of the pool (workers/pool.py)."""

    @property
    def workers(self) -> int: ...

    def loaded(self, engine: MirrorEngine) -> None: ...
    def qualify(self, worker: int, name: str) -> None: ...
    def address(self, worker: int, name: str, addr: Addr, transport: str | None) -> None: ...
    def worker_stats(self) -> Iterable[EngineStats]: ...
    def snapshot(self) -> list[dict[str, Any]]: ...


def workers_status(engine: QualifyEngine) -> list[dict[str, Any]] | None:
    """`workers` of /api/v1/status: one object per worker process; None without workers."""
    if isinstance(engine, MirrorEngine) and engine.pool is not None:
        return engine.pool.snapshot()
    return None


class MirrorEngine(QualifyEngine):
    def __init__(self, general: GeneralConfig | None = None, **kw: Any) -> None:
        super().__init__(general, **kw)
        self.remote: dict[str, int] = {}
        self.pool: Forwarder | None = None
        self.local_only: Callable[[str], bool] = lambda name: False  # realtime rows: kept here

    def load(self, peers: Iterable[PeerConfig], now: float, **kw: Any) -> ReloadSummary:
        peers = list(peers)
        n = self.pool.workers if self.pool is not None else 1
        self.remote = {c.name: owner(c.name, n) for c in peers if remote_eligible(c) and not self.local_only(c.name)}
        summary = super().load(peers, now, **kw)
        if self.pool is not None:
            self.pool.loaded(self)
        return summary

    def update(self, peers: Iterable[PeerConfig], removed: Iterable[str], now: float, **kw: Any) -> ReloadSummary:
        removed = list(removed)
        for name in removed:  # a realtime row: never remote, but a name may come back as one
            self.remote.pop(name, None)
        return super().update(peers, removed, now, **kw)

    def _poke(self, p: Peer, now: float, *, forced: bool) -> None:
        w = self.remote.get(p.name)
        if w is None:
            super()._poke(p, now, forced=forced)
            return
        p.poke_gen += 1  # nothing is scheduled here for a remote peer
        if forced and self.pool is not None:
            self.pool.qualify(w, p.name)

    def _keepalive(self, p: Peer, now: float) -> None:
        if p.name not in self.remote:
            super()._keepalive(p, now)

    def rearm(self, p: Peer, now: float) -> None:
        if p.name not in self.remote:  # the worker's own watchdog re-arms its pokes
            super().rearm(p, now)

    def set_address(self, name: str, addr: Addr, now: float, transport: str | None = None) -> bool:
        w = self.remote.get(name)
        ok = super().set_address(name, addr, now, transport)
        if ok and w is not None and self.pool is not None:
            self.pool.address(w, name, addr, transport)
        return ok

    def snapshot_stats(self) -> EngineStats:
        """This process's counters plus every worker's latest."""
        own = super().snapshot_stats()
        if self.pool is None:
            return own
        merged = dataclasses.replace(own, responses_by_class=dict(own.responses_by_class))
        for s in self.pool.worker_stats():
            add_stats(merged, s)
        return merged


def add_stats(into: EngineStats, s: EngineStats) -> EngineStats:
    """`into` += `s`, counter by counter."""
    for f in dataclasses.fields(EngineStats):
        if f.name == "responses_by_class":
            for k, v in s.responses_by_class.items():
                into.responses_by_class[k] = into.responses_by_class.get(k, 0) + v
        else:
            setattr(into, f.name, getattr(into, f.name) + getattr(s, f.name))
    return into
