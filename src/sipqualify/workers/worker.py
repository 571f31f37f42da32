"""One worker process (`python -m sipqualify.workers.worker FD INDEX PARENT_PID LOG_LEVEL`):
the sans-I/O QualifyEngine over its own UDP socket(s), qualifying the static peers the main
process hands it (workers/pool.py), and streaming what it learns back in batches.

It owns no store, no API and no registrar: every result, transition and live event goes back
to the main process, which records and publishes them exactly as it does its own. It dies with
its parent (PR_SET_PDEATHSIG, and the end of the pipe) and ignores Ctrl-C, which the main
process turns into an orderly stop.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from ..addr import Addr
from ..logformat import set_format, setup
from ..model import GeneralConfig, PeerConfig, ServiceConfig
from ..net.sockets import SipSockets
from ..qualify.engine import QualifyEngine
from ..qualify.events import Event, QualifyResult
from ..qualify.inbound import UDP
from .wire import Snapshot, encode, read_message, restore, snapshot

log = logging.getLogger("sipqualify")

PR_SET_PDEATHSIG = 1
FLUSH_S = 0.005  # results wait at most this long for others to share their message
# Back-pressure: while this much is written to the main process and not yet read, no new
# timer work starts (pokes wait, as they do in one process whose loop is behind): a worker
# never runs ahead of the view it feeds, and an overloaded node stretches its schedule
# rather than piling up results nobody has recorded yet.
BACKLOG_BYTES = 256 * 1024
BACKLOG_RETRY_S = 0.005
STATS_S = 0.5  # engine counters go to the main process this often
Entry = tuple[PeerConfig, Addr | None, Addr | None, Snapshot | None]  # (config, address, destination, view)
TIMER_BATCH = 4  # as driver.CoreDriver.TIMER_BATCH: each batch of pokes gets a fresh timestamp
TURN_S = 0.002  # as driver.CoreDriver.TURN_S: batches sent in one timer turn for at most this long


def die_with_parent(parent: int) -> None:
    """SIGKILL when the parent goes, whatever way it goes (and at once if it already went)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pipe's end still stops us
        pass
    if os.getppid() != parent:
        os._exit(0)


class Worker:
    def __init__(self, writer: asyncio.StreamWriter, index: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.index = index
        self.clock = time.monotonic
        self.sockets = SipSockets(self.clock)
        self.engine: QualifyEngine | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._events: list[Event | tuple[object, ...]] = []
        self._touched: dict[str, None] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._stats_at = 0.0
        self.held = 0  # timer turns held back because the main process had not read our results
        self.rx_drops = 0  # the kernel's drop count of our sockets, last read (SipSockets.read_before_judging)

    async def start(self, binds: list[Addr], g: GeneralConfig, svc: ServiceConfig) -> None:
        # UDP only, on ports of its own: TCP/TLS/WS peers and the registrar stay in the main process
        g = dataclasses.replace(g, tcpenable=False, tlsenable=False, wsenable=False, wssenable=False)
        await self.sockets.open(binds, g, svc, on_datagram=self._on_datagram, on_tcp_message=self._ignore,
                                on_icmp=self._on_icmp, on_batch_done=self.pump,
                                on_tcp_connect_error=lambda addr, reason: None)
        self.engine = QualifyEngine(g, local_address=self.sockets.local_address_selector(g.externip),
                                    useragent=g.useragent, wallclock=time.time, match_source=svc.match_source_address,
                                    respond_options=svc.respond_options)
        self._send(("ready", os.getpid(), self.sockets.local_addresses()))

    def _ignore(self, data: bytes, addr: Addr, t_rx: float) -> None:
        pass

    def _on_datagram(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:
            self.engine.front.receive(data, addr, t_rx, UDP)

    def _on_icmp(self, addr: Addr, reason: str) -> None:
        if self.engine is not None:
            self.engine.transport_error(addr, self.clock(), reason)

    # ------------------------------------------------------------------ commands

    def load(self, g: GeneralConfig, entries: list[Entry], offset: float = 0.0) -> None:
        """The partition (start, reload, restart). `g` is this worker's share of the pacing and
        `offset` where its first pokes start on the common stagger grid (pool.worker_general)."""
        assert self.engine is not None
        snaps = {cfg.name: snap for cfg, _, _, snap in entries if snap is not None}
        gc.collect()  # as the main process does (service.py _load, _settle_gc): no long pause later
        summary = self.engine.load([e[0] for e in entries], self.clock() + offset, general=g,
                                   addresses={cfg.name: addr for cfg, addr, _, _ in entries},
                                   destinations={cfg.name: dest for cfg, _, dest, _ in entries})
        for name in summary.added:  # a peer new to this worker resumes from the main process's view
            p = self.engine.peer(name)
            if p is not None and name in snaps:
                restore(p, snaps[name])
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        log.info("worker %d: %d peers (%d new, %d dropped)", self.index, len(self.engine), len(summary.added),
                 len(summary.removed))
        self.pump()

    def command(self, msg: tuple[Any, ...]) -> bool:
        """One message from the main process; False: stop."""
        kind = msg[0]
        eng = self.engine
        assert eng is not None
        if kind == "load":
            self.load(msg[1], msg[2], msg[3])
        elif kind == "qualify":
            eng.qualify(msg[1], self.clock())
            self.pump()
        elif kind == "address":
            eng.set_address(msg[1], msg[2], self.clock(), msg[3])
            self.pump()
        elif kind == "stop":
            return False
        else:
            log.error("worker %d: unknown command %r", self.index, kind)
        return True

    # ------------------------------------------------------------------ the pump

    def pump(self) -> None:
        """What the engine has to send goes out, its events are queued for the main process, its
        timer re-armed."""
        eng = self.engine
        if eng is None:
            return
        self._out()
        when = eng.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_later(max(0.0, when - self.clock()), self._on_timer) \
                if when is not None else None
            self._timer_at = when

    def _out(self) -> None:
        """What the engine has to send goes out and its events are queued (the timer stays)."""
        eng = self.engine
        assert eng is not None
        inbound = eng.inbound  # OPTIONS sent to our port are answered (a 200, as on the main port)
        for data, flow in inbound.sends():
            self.sockets.send_on(data, flow)
        while inbound.next_event() is not None:
            pass
        self.sockets.send_many(eng.datagrams_to_send())
        events, touched = self._events, self._touched
        while (ev := eng.next_event()) is not None:
            if type(ev) is QualifyResult:  # the most frequent: a plain tuple pickles 9x faster
                events.append(tuple(ev))
                touched[ev.peer] = None
                continue
            events.append(ev)
            name = getattr(ev, "peer", None)
            if name is not None:
                touched[name] = None
        if events and self._flush is None:
            self._flush = self.loop.call_later(FLUSH_S, self.flush)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        assert self.engine is not None
        if self.writer.transport.get_write_buffer_size() > BACKLOG_BYTES:
            self.held += 1
            self._timer_at = self.clock() + BACKLOG_RETRY_S  # re-armed by the next pump if earlier work comes
            self._timer = self.loop.call_later(BACKLOG_RETRY_S, self._on_timer)
            return
        eng = self.engine
        now = self.clock()
        end = now + TURN_S
        while True:  # as driver.CoreDriver._on_timer: batch after batch for at most TURN_S
            self.rx_drops = self.sockets.read_before_judging(eng, now, self.rx_drops)
            now = self.clock()  # pokes stamped after what was read
            if not eng.handle_timer(now, limit=TIMER_BATCH):
                break
            self._out()  # this batch leaves before the next one is stamped
            now = self.clock()
            if now >= end:
                break
        self.pump()

    def flush(self) -> None:
        """One message for everything since the last: the touched peers' snapshots, then the events."""
        self._flush = None
        eng = self.engine
        assert eng is not None
        snaps = [snapshot(p) for name in self._touched if (p := eng.peer(name)) is not None]
        self._stats_at = self.clock()  # the counters ride along: a status read after a result shows it
        self._send(("batch", snaps, self._events, eng.snapshot_stats()))
        self._events, self._touched = [], {}

    def send_stats(self) -> None:
        if self.engine is not None:
            self._send(("batch", [], [], self.engine.snapshot_stats()))

    def _send(self, msg: tuple[Any, ...]) -> None:
        self.writer.write(encode(msg))

    async def watchdog(self) -> None:
        """The engine's liveness sweep, every second (as the main process's loop watcher does)."""
        while True:
            await asyncio.sleep(1.0)
            if self.engine is not None:
                self.engine.stats.receive_drops = self.sockets.udp_drops()  # summed in the main process
                self.engine.self_check(self.clock())
                self.pump()
                if self._flush is None and self.clock() - self._stats_at >= STATS_S:
                    self.send_stats()
                    self._stats_at = self.clock()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._flush is not None:
            self._flush.cancel()
        self.sockets.close()


async def serve(fd: int, index: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    first = await read_message(reader)
    if first is None or first[0] != "start":
        return 1
    set_format(first[3].log_format)
    worker = Worker(writer, index)
    try:
        await worker.start(first[1], first[2], first[3])
    except OSError as e:
        log.error("worker %d: cannot start: %s", index, e)
        return 1
    watch = asyncio.get_running_loop().create_task(worker.watchdog())
    try:
        while (msg := await read_message(reader)) is not None:
            if not worker.command(msg):
                break
            await writer.drain()
    finally:
        watch.cancel()
        worker.close()
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    fd, index, parent = int(args[0]), int(args[1]), int(args[2])
    level = args[3] if len(args) > 3 else "info"
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the main process stops us
    setup(level)  # the main process's plain format until the service config names another
    return asyncio.run(serve(fd, index))


if __name__ == "__main__":
    sys.exit(main())
