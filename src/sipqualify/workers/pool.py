"""The main process's side of `run --workers N`: N worker processes (workers/worker.py), each
qualifying the static peers rendezvous hashing gives it (workers/hrw.py), supervised.

* Start: each worker gets the SIP bind addresses (it binds its own ports on them), then its
  partition: peer configs, resolved addresses, and the main view of each peer (a snapshot), so
  that a peer that changes hands resumes where it was, with no false transition.
* Results: a worker's batch (snapshots, then events) is applied to the main engine's peers and
  its events go through the same dispatch as the main process's own (driver.CoreDriver): the
  store, metrics, the committed-transition feed, AMI, the event stream and webhooks see one
  daemon.
* Commands: qualify now, a new address, reload (a new partition), stop.
* A worker that exits is restarted (backoff up to 10 s) with its partition and the current
  view; SIGTERM/Ctrl-C stop them in order; they die with the main process in any case.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import pickle
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..addr import Addr
from ..driver import CoreDriver
from ..model import GeneralConfig, ServiceConfig
from ..qualify.engine import EngineStats
from ..qualify.events import QualifyResult
from .mirror import MirrorEngine, add_stats
from .wire import encode, name_of, read_message, restore, snapshot

log = logging.getLogger("sipqualify")

STOP_TIMEOUT_S = 5.0
BACKOFF_MAX_S = 10.0


@dataclass
class WorkerState:
    index: int
    writer: asyncio.StreamWriter | None = None
    pid: int | None = None
    locals: list[Addr] = field(default_factory=list)
    stats: EngineStats | None = None  # the running process's counters, as last reported
    retired: EngineStats = field(default_factory=EngineStats)  # those of its earlier processes
    restarts: int = 0
    batches: int = 0
    proc: asyncio.subprocess.Process | None = None
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # commands given while it was down


def worker_general(g: GeneralConfig, workers: int) -> GeneralConfig:
    """A worker's share of the global pacing: together the N workers poke as one process would.

    The start-up stagger (`qualifypeers` every `qualifygap`) becomes `qualifypeers` every N
    gaps per worker, worker k starting k gaps later, so the union is the same grid; the rate caps
    (`max_rate`, `max_rate_per_destination`: HRW spreads a destination's peers evenly) are
    divided between them. Measured without this: both workers' first rounds in the same half
    of the stagger, twice the burst at the responder, which dropped them (docs/performance.md)."""
    if workers <= 1:
        return g
    return dataclasses.replace(
        g, qualifygap_ms=g.qualifygap_ms * workers,
        max_rate=-(-g.max_rate // workers) if g.max_rate else 0,
        max_rate_per_destination=-(-g.max_rate_per_destination // workers) if g.max_rate_per_destination else 0)


class WorkerPool:
    def __init__(self, workers: int, engine: MirrorEngine, core: CoreDriver, binds: list[Addr],
                 general: GeneralConfig, service: ServiceConfig, log_level: str = "info") -> None:
        self.workers = workers
        self.engine = engine
        self.core = core
        self.binds = [(ip, 0) for ip, _ in binds]  # same addresses, ports of their own
        self.general, self.service = general, service
        self.log_level = log_level
        self.state = [WorkerState(i) for i in range(workers)]
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        engine.pool = self

    # ------------------------------------------------------------------ Forwarder (mirror.py)

    def loaded(self, engine: MirrorEngine) -> None:
        """A (re)load: every worker gets its new partition."""
        self.general = engine.general
        for w in self.state:
            self._send_partition(w)

    def qualify(self, worker: int, name: str) -> None:
        self._command(self.state[worker], ("qualify", name))

    def address(self, worker: int, name: str, addr: Addr, transport: str | None) -> None:
        self._command(self.state[worker], ("address", name, addr, transport))

    def _command(self, w: WorkerState, msg: tuple[Any, ...]) -> None:
        """A command for the worker now, or, while it is being restarted, right after its partition."""
        if w.writer is None or w.writer.is_closing():
            w.pending.append(msg)
        else:
            self._send(w, msg)

    def worker_stats(self) -> Iterable[EngineStats]:
        """Each worker's counters over all its processes: a restart never makes a counter go down."""
        out = []
        for w in self.state:
            total = dataclasses.replace(w.retired, responses_by_class=dict(w.retired.responses_by_class))
            out.append(add_stats(total, w.stats) if w.stats is not None else total)
        return out

    # ------------------------------------------------------------------ supervision

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._supervise(w)) for w in self.state]

    async def _spawn(self, w: WorkerState) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sipqualify.workers.worker", str(theirs.fileno()), str(w.index),
                str(os.getpid()), self.log_level, pass_fds=[theirs.fileno()], stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        w.proc = proc
        self._attach(w, proc.pid, writer)
        return proc, reader

    def _attach(self, w: WorkerState, pid: int, writer: asyncio.StreamWriter) -> None:
        """A new worker process: its sockets, its partition, then what was asked while it was down."""
        w.pid, w.writer = pid, writer
        self._send(w, ("start", self.binds, self.general, self.service))
        if len(self.engine):  # else the first load sends it
            self._send_partition(w)
        for msg in w.pending:
            self._send(w, msg)
        w.pending.clear()

    async def _supervise(self, w: WorkerState) -> None:
        backoff = 0.25
        while not self._closing:
            try:
                proc, reader = await self._spawn(w)
            except OSError as e:
                log.error("worker %d: cannot start: %s", w.index, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            started = asyncio.get_running_loop().time()
            try:
                while (msg := await read_message(reader)) is not None:
                    try:
                        self._handle(w, msg)
                    except Exception:  # one batch's bug must not stop the others (as the engine's timers)
                        log.exception("worker %d: internal error applying its results", w.index)
            except (ValueError, EOFError, ImportError, AttributeError, pickle.UnpicklingError) as e:
                log.error("worker %d: bad message (%s): restarting it", w.index, e)  # a broken pipe: restart it
            if w.writer is not None:
                w.writer.close()
                w.writer = None
            if self._closing:
                break
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            w.restarts += 1
            if w.stats is not None:  # its counters carry on from where they were
                add_stats(w.retired, w.stats)
                w.stats = None
            if asyncio.get_running_loop().time() - started > 60:
                backoff = 0.25
            log.error("worker %d (pid %d) exited (%s): restarting it in %.2f s; its peers resume from the "
                      "main view", w.index, proc.pid, code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _handle(self, w: WorkerState, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "batch":
            self._apply(w, msg[1], msg[2], msg[3])
        elif kind == "ready":
            w.pid, w.locals = msg[1], msg[2]
            log.info("worker %d (pid %d) qualifying from %s", w.index, w.pid,
                     ", ".join(f"{ip}:{port}" for ip, port in w.locals))

    def _apply(self, w: WorkerState, snaps: list[tuple[Any, ...]], events: list[Any],
               stats: EngineStats | None) -> None:
        """A worker's batch: its peers' fields first, then its events through the main dispatch."""
        w.batches += 1
        if stats is not None:
            w.stats = stats
        engine, remote, i = self.engine, self.engine.remote, w.index
        for snap in snaps:
            name = name_of(snap)
            if remote.get(name) == i and (p := engine.peer(name)) is not None:
                restore(p, snap)
        # results come as plain tuples (wire.py); a peer that changed hands (reload) may still
        # report from its old worker: not any more
        make = QualifyResult._make
        mine = [make(ev) if type(ev) is tuple else ev for ev in events]
        self.core.dispatch_events([ev for ev in mine if (owner := getattr(ev, "peer", None)) is None
                                   or remote.get(owner) == i])

    def _send_partition(self, w: WorkerState) -> None:
        engine = self.engine
        entries = []
        for name, owner in engine.remote.items():
            p = engine.peer(name)
            if owner == w.index and p is not None:
                entries.append((p.cfg, p.addr, p.dest, snapshot(p)))
        g = worker_general(self.general, self.workers)
        self._send(w, ("load", g, entries, w.index * self.general.qualifygap_ms / 1000.0))

    def _send(self, w: WorkerState, msg: tuple[Any, ...]) -> None:
        if w.writer is not None and not w.writer.is_closing():
            w.writer.write(encode(msg))

    def snapshot(self) -> list[dict[str, Any]]:
        """What `status` shows of the workers."""
        counts = [0] * self.workers
        for owner in self.engine.remote.values():
            counts[owner] += 1
        return [{"index": w.index, "pid": w.pid, "peers": counts[w.index], "restarts": w.restarts,
                 "batches": w.batches, "local": [f"{ip}:{port}" for ip, port in w.locals]} for w in self.state]

    async def close(self) -> None:
        """Stop every worker: a stop message, then SIGKILL for any still there after a while."""
        self._closing = True
        for w in self.state:
            self._send(w, ("stop",))
        procs = [w.proc for w in self.state if w.proc is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), STOP_TIMEOUT_S)
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    p.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for w in self.state:
            if w.writer is not None:
                w.writer.close()
                w.writer = None
