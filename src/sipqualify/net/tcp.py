"""SIP over TCP: a listener next to each UDP socket (RFC 3261 §18.3), and the connections
sipqualify opens to the `transport=tcp` peers it qualifies (`connect_and_send`).

Phones connect, REGISTER and are qualified over their own connection. Each connection runs
a `StreamFramer` (Content-Length framing, 64 KiB limit); complete messages go to
`on_message(data, addr, t_rx)` exactly like datagrams, with `addr` the remote end of the
connection. A double-CRLF keepalive ping gets a single-CRLF pong (RFC 5626 §4.4.1).

`conns` maps the remote address to its connection, so the shell can send to an address over
the connection it has (`send`). Bad input never raises: a framing error closes that
connection, idle connections are closed after `idle_timeout` seconds without a byte, and
connections beyond `max_connections` (in total) or `max_per_ip` (from one address) are
refused at once. Everything is counted in `stats` and logged at debug level.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from ..sip.errors import SipParseError
from ..sip.framing import MAX_MESSAGE, StreamFramer
from .udp import Addr, bound_socket, norm_addr

log = logging.getLogger("sipqualify.net")

MAX_WRITE_BUFFER = 1024 * 1024  # a peer that does not read: closed rather than buffered forever
STATS = ("accepted", "refused", "closed", "idle_closed", "pings", "pongs", "framing_errors", "messages_in",
         "bytes_in", "messages_out", "bytes_out", "write_overflows", "no_connection", "connects", "connect_errors")


class TcpConnection(asyncio.Protocol):
    __slots__ = ("server", "transport", "addr", "framer", "last_rx", "timer", "open", "outbound")

    def __init__(self, server: TcpServer, outbound: bool = False) -> None:
        self.server = server
        self.outbound = outbound  # we opened it (to qualify a tcp peer): no per-address limit
        self.transport: asyncio.Transport | None = None
        self.addr: Addr = ("", 0)
        self.framer = StreamFramer(server.max_message)
        self.last_rx = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.open = False  # admitted and in `server.conns`

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        srv = self.server
        peer = transport.get_extra_info("peername")
        if not peer:
            transport.abort()
            return
        self.addr = norm_addr(peer)
        if not srv._admit(self):
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.last_rx = srv.clock()
        if srv.idle_timeout > 0:
            self._arm(srv.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            return
        srv = self.server
        st = srv.stats
        now = srv.clock()
        self.last_rx = now
        st["bytes_in"] += len(data)
        framer = self.framer
        try:
            msgs = framer.feed(data)
        except SipParseError as e:
            st["framing_errors"] += 1
            log.debug("TCP %s:%d: %s: closing the connection", self.addr[0], self.addr[1], e)
            self.close()
            return
        if framer.pings:
            n, framer.pings = framer.pings, 0
            st["pings"] += n
            if self.open and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"\r\n" * n)  # one CRLF pong per CRLFCRLF ping
                st["pongs"] += n
        if not msgs:
            return
        st["messages_in"] += len(msgs)
        for m in msgs:
            try:
                srv.on_message(m, self.addr, now)
            except Exception:  # the engine never raises; this guards the shell itself
                log.exception("TCP message handler failed")
        if srv.on_batch_done is not None:
            srv.on_batch_done()

    def eof_received(self) -> bool:
        return False  # half-closed by the peer: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._forget(self)

    def _arm(self, delay: float) -> None:
        self.timer = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        self.timer = None
        if not self.open:
            return
        srv = self.server
        idle = srv.clock() - self.last_rx
        if idle >= srv.idle_timeout:
            srv.stats["idle_closed"] += 1
            log.debug("TCP %s:%d: idle for %.0f s: closing", self.addr[0], self.addr[1], idle)
            self.close()
        else:
            self._arm(srv.idle_timeout - idle)

    def send(self, data: bytes) -> bool:
        t = self.transport
        if not self.open or t is None or t.is_closing():
            return False
        t.write(data)
        st = self.server.stats
        st["messages_out"] += 1
        st["bytes_out"] += len(data)
        if t.get_write_buffer_size() > self.server.max_write_buffer:
            st["write_overflows"] += 1
            log.debug("TCP %s:%d: peer does not read: closing", self.addr[0], self.addr[1])
            self.server._forget(self)
            t.abort()
        return True

    def close(self) -> None:
        self.server._forget(self)
        if self.transport is not None:
            self.transport.close()


class TcpServer:
    """TCP listeners (one per address family) sharing one connection registry and limits."""

    def __init__(
        self,
        on_message: Callable[[bytes, Addr, float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_batch_done: Callable[[], None] | None = None,
        idle_timeout: float = 3600.0,
        max_connections: int = 10_000,
        max_per_ip: int = 100,
        max_message: int = MAX_MESSAGE,
        max_write_buffer: int = MAX_WRITE_BUFFER,
        connect_timeout: float = 5.0,
    ) -> None:
        self.on_message = on_message
        self.on_batch_done = on_batch_done  # called once after each read that produced messages
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_message = max_message
        self.max_write_buffer = max_write_buffer
        self.conns: dict[Addr, TcpConnection] = {}
        self.per_ip: dict[str, int] = {}
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self.locals: list[Addr] = []
        self._servers: list[asyncio.AbstractServer] = []
        self.closed = False
        # outbound connections being opened: remote address -> what waits to be sent over it
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.connect_timeout = connect_timeout
        self.on_connect_error: Callable[[Addr, str], None] | None = None

    async def listen(self, host: str, port: int) -> Addr:
        sock = make_tcp_socket(host.strip("[]"), port)
        try:
            server = await asyncio.get_running_loop().create_server(
                lambda: TcpConnection(self), sock=sock, backlog=1024)
        except BaseException:
            sock.close()
            raise
        self._servers.append(server)
        local = norm_addr(sock.getsockname())
        self.locals.append(local)
        return local

    def _admit(self, conn: TcpConnection) -> bool:
        ip = conn.addr[0]
        n = self.per_ip.get(ip, 0)
        if self.closed or (not conn.outbound and (len(self.conns) >= self.max_connections or n >= self.max_per_ip)):
            self.stats["refused"] += 1
            log.debug("TCP %s:%d refused (%d connections, %d from this address)", ip, conn.addr[1],
                      len(self.conns), n)
            return False
        old = self.conns.get(conn.addr)
        if old is not None:  # cannot really happen: a remote address is one connection at a time
            old.close()
        self.conns[conn.addr] = conn
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        conn.open = True
        self.stats["accepted"] += 1
        return True

    def _forget(self, conn: TcpConnection) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if self.conns.get(conn.addr) is conn:
            del self.conns[conn.addr]
        ip = conn.addr[0]
        n = self.per_ip.get(ip, 0) - 1
        if n > 0:
            self.per_ip[ip] = n
        else:
            self.per_ip.pop(ip, None)
        self.stats["closed"] += 1

    def send(self, addr: Addr, data: bytes) -> bool:
        """Send over the connection from `addr`; False when there is none."""
        conn = self.conns.get(addr)
        return conn is not None and conn.send(data)

    def connect_and_send(self, addr: Addr, data: bytes) -> None:
        """Open a connection to `addr` (a peer qualified over TCP, as chan_sip does for
        `transport=tcp`) and send `data` once it is up; what is sent meanwhile waits with it. The
        connection then stays, for the next pokes and the answers, until it is idle for
        `idle_timeout` or the peer closes it. A failure goes to `on_connect_error(addr, reason)`."""
        if self.closed:
            return
        queued = self._connecting.get(addr)
        if queued is not None:
            queued.append(data)
            return
        self._connecting[addr] = [data]
        self.stats["connects"] += 1
        task = asyncio.get_running_loop().create_task(self._connect(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, addr: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: TcpConnection(self, outbound=True), addr[0], addr[1])
        except (OSError, TimeoutError) as e:
            self._connecting.pop(addr, None)
            self.stats["connect_errors"] += 1
            no = getattr(e, "errno", None)
            reason = "timeout" if isinstance(e, TimeoutError) else errno.errorcode.get(no or 0, str(e))
            log.debug("TCP connect to %s:%d failed: %s", addr[0], addr[1], reason)
            if self.on_connect_error is not None:
                self.on_connect_error(addr, reason)
            return
        for data in self._connecting.pop(addr, []):
            if not conn.send(data):
                self.stats["no_connection"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {"listen": [{"ip": ip, "port": port} for ip, port in self.locals],
                "connections": len(self.conns), **self.stats}

    def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self._connecting.clear()
        for server in self._servers:
            server.close()
        self._servers.clear()
        for conn in list(self.conns.values()):
            t = conn.transport
            self._forget(conn)
            if t is not None:
                t.abort()


def make_tcp_socket(host: str, port: int) -> socket.socket:
    return bound_socket(host, port, socket.SOCK_STREAM)
