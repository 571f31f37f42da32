"""SIP over TCP and TLS: a listener next to each UDP socket (RFC 3261 §18.3) or on
`tlsbindaddr`, and the connections sipqualify opens to the `transport=tcp|tls` peers it
qualifies (`connect_and_send`).

TLS is the same code over an `ssl` transport: a `TcpServer` made with `ssl_server` (the
listener's context) and `ssl_client` (the context of the connections we open; the peer's host
name, `sni[addr]`, is the SNI and what its certificate must name). Handshakes have a timeout
(`HANDSHAKE_TIMEOUT`); a failed one closes that connection only: accepted, it is counted
(`handshake_errors`); opened by us, `on_connect_error(addr, reason)` gets why ("certificate
has expired", "hostname mismatch, ...", "connection refused"). `on_connected(addr, conn)` is
told of each connection we opened, once it is up (for its peer certificate).

Phones connect, REGISTER and are qualified over their own connection. Each connection runs
a `StreamFramer` (Content-Length framing, 64 KiB limit); complete messages go to
`on_message(data, addr, t_rx)` exactly like datagrams, with `addr` the remote end of the
connection. A double-CRLF keepalive ping gets a single-CRLF pong (RFC 5626 §4.4.1); a ping
we send (the engine's `keepalive` on a TCP/TLS flow) is timed until its pong: `keepalive(addr)`
gives the flow's last pong RTT, and how long a ping has waited unanswered.

`conns` maps the remote address to its connection, so the shell can send to an address over
the connection it has (`send`). Bad input never raises: a framing error closes that
connection, idle connections are closed after `idle_timeout` seconds without a byte, and
connections beyond `max_per_ip` (from one address) are refused at once.

The listeners accept themselves rather than through `loop.create_server`, so that a
connection is admitted or refused as it is accepted: a refused one is closed before it has a
transport (its file is free at once, not after a burst of accepts has taken them all), and an
accept() that fails for want of files is counted, logged once a minute without a traceback,
and pauses that listener for `ACCEPT_PAUSE` seconds (asyncio 3.11 logs one traceback per
waiting connection there).

What a connection costs is bounded, so that many hostile connections cannot take memory nor
lock phones out:
- an unfinished message (bytes the framer holds, at most `max_message` per connection) must be
  finished within `message_timeout` seconds, or its connection is closed (slowloris);
- all connections together hold at most `max_unfinished` bytes of unfinished messages: above
  it, the connections holding the most are closed (down to 3/4 of the budget, so that a flood
  of small ones costs one sort per quarter of the budget, not one per read);
- at `max_connections`, a new connection closes the least recently active one that never
  carried a successful REGISTER (`mark_registered`), and is refused only when there is none.
Connections we opened (`outbound`) and registered ones are never closed to make room; those
closed for a limit are aborted, so that their file is free at once.
Everything is counted in `stats`; closures for a limit are logged at most once a minute.

A TLS connection costs what asyncio's `SSLProtocol` allocates: a read buffer of `max_size`,
256 KiB and zeroed (so resident), per connection: 2.5 GiB for 10,000 TLS peers
(bench/bench_tls.py measured 298 KiB per connection). `TLS_READ_BUFFER` (16 KiB, the most
plaintext one TLS record carries, so one read still takes a whole record) replaces it once a
TLS server is made: reads loop until OpenSSL has nothing more, so only their size changes.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from ..addr import Addr
from ..ratelog import RateLog
from ..sip.errors import SipParseError
from ..sip.framing import MAX_MESSAGE, StreamFramer
from .limits import release
from .tls import HANDSHAKE_TIMEOUT, failure_reason
from .udp import bound_socket, norm_addr

log = logging.getLogger("sipqualify.net")

MAX_WRITE_BUFFER = 1024 * 1024  # a peer that does not read: closed rather than buffered forever
MAX_UNFINISHED = 4 * 1024 * 1024  # unfinished-message bytes held by all connections together
MESSAGE_TIMEOUT = 10.0  # seconds an unfinished message may take to be finished
LOG_EVERY = 60.0  # seconds between two log lines about the same kind of limit
BACKLOG = 1024  # phones reconnecting at once after a restart
ACCEPT_BATCH = 32  # accepts per readiness: other work runs between batches
ACCEPT_PAUSE = 0.5  # seconds a listener rests after accept() failed for want of files
TLS_READ_BUFFER = 16 * 1024  # bytes per TLS read: one record's plaintext (asyncio's: 256 KiB)
OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
STATS = ("accepted", "refused", "evicted", "accept_errors", "closed", "idle_closed", "message_timeouts",
         "unfinished_evicted", "pings", "pongs", "framing_errors", "messages_in", "bytes_in", "messages_out",
         "bytes_out", "write_overflows", "no_connection", "connects", "connect_errors", "handshake_errors",
         "pings_sent", "pongs_received")
PING = b"\r\n\r\n"  # RFC 5626 §4.4.1 keep-alive ping on a stream; its pong is one CRLF


def unfinished_bytes(framer: StreamFramer) -> int:
    """Bytes of an unfinished message the framer holds. Up to 3 bytes of CR/LF are a keepalive
    being completed (or a lone CRLF, which some phones send), not a message."""
    buf = framer._buf  # private: a public `pending` on StreamFramer is asked for
    n = len(buf)
    return n if n > 3 or buf.strip(b"\r\n") else 0


class TcpConnection(asyncio.Protocol):
    __slots__ = ("server", "transport", "addr", "framer", "last_rx", "timer", "open", "outbound", "registered",
                 "unfinished", "unfinished_since", "msg_timer", "ping_at", "ka_rtt", "ka_pings", "ka_pongs")

    def __init__(self, server: TcpServer, outbound: bool = False) -> None:
        self.server = server
        self.outbound = outbound  # we opened it (to qualify a tcp peer): no per-address limit
        self.transport: asyncio.Transport | None = None
        self.addr: Addr = ("", 0)
        self.framer = StreamFramer(server.max_message)
        self.last_rx = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.open = False  # admitted and in `server.conns`
        self.registered = False  # a REGISTER over it succeeded: never closed to make room
        self.unfinished = 0  # bytes of an unfinished message in `framer`
        self.unfinished_since: float | None = None  # when that message began
        self.msg_timer: asyncio.TimerHandle | None = None
        self.ping_at: float | None = None  # when the oldest unanswered ping we sent went
        self.ka_rtt: float | None = None  # seconds from our last answered ping to its pong
        self.ka_pings = 0
        self.ka_pongs = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        srv = self.server
        if self.outbound:
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
                nodelay(sock)
        elif not self.open:  # admitted when accepted, closed (to make room) before it was up
            transport.abort()
            return
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
        lru = srv.lru
        if lru.pop(self.addr, None) is not None:  # the most recently active: the last to make room
            lru[self.addr] = self
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
        if self.ping_at is not None and (framer.pongs or framer.take_pong()):
            self.ka_rtt = now - self.ping_at
            self.ping_at = None
            self.ka_pongs += 1
            st["pongs_received"] += 1
        framer.pongs = 0
        if msgs:
            st["messages_in"] += len(msgs)
            for m in msgs:
                try:
                    srv.on_message(m, self.addr, now)
                except Exception:  # the engine never raises; this guards the shell itself
                    log.exception("TCP message handler failed")
            if srv.on_batch_done is not None:
                srv.on_batch_done()
        if self.open:
            srv._account(self, now)

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

    def _message_check(self) -> None:
        self.msg_timer = None
        since = self.unfinished_since
        if not self.open or since is None:
            return
        srv = self.server
        now = srv.clock()
        if now - since >= srv.message_timeout:
            srv.stats["message_timeouts"] += 1
            srv.log_timeouts(now, "TCP %s:%d: a message unfinished after %.0f s: connection closed",
                             self.addr[0], self.addr[1], now - since)
            self.close(abort=True)
        else:  # that message was finished and a later one began: it has its own time
            self.msg_timer = asyncio.get_running_loop().call_later(srv.message_timeout - (now - since),
                                                                   self._message_check)

    def send(self, data: bytes) -> bool:
        t = self.transport
        if not self.open or t is None or t.is_closing():
            return False
        t.write(data)
        st = self.server.stats
        if data == PING:
            if self.ping_at is None:
                self.ping_at = self.server.clock()
            self.ka_pings += 1
            st["pings_sent"] += 1
        else:
            st["messages_out"] += 1
        st["bytes_out"] += len(data)
        if t.get_write_buffer_size() > self.server.max_write_buffer:
            st["write_overflows"] += 1
            log.debug("TCP %s:%d: peer does not read: closing", self.addr[0], self.addr[1])
            self.server._forget(self)
            t.abort()
        return True

    def close(self, abort: bool = False) -> None:
        self.server._forget(self)
        if self.transport is not None:
            if abort:  # closed for a limit: its file now, not once what it was sent is flushed
                self.transport.abort()
            else:
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
        max_unfinished: int = MAX_UNFINISHED,
        message_timeout: float = MESSAGE_TIMEOUT,
        name: str = "TCP",
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name  # TCP | TLS: in log lines
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        if ssl_server is not None or ssl_client is not None:
            small_tls_read_buffers()
        self.sni: dict[Addr, str] = {}  # TLS peers we connect to: their host name, when not an IP
        self.source_ip: dict[Addr, str] = {}  # peers we connect to from this address (qualify_source)
        self.on_connected: Callable[[Addr, TcpConnection], None] | None = None
        self.on_message = on_message
        self.on_batch_done = on_batch_done  # called once after each read that produced messages
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_message = max_message
        self.max_write_buffer = max_write_buffer
        self.max_unfinished = max_unfinished
        self.message_timeout = message_timeout  # 0: no limit
        self.conns: dict[Addr, TcpConnection] = {}
        # inbound connections that never registered, least recently active first: who makes room
        self.lru: dict[Addr, TcpConnection] = {}
        self.holding: dict[Addr, TcpConnection] = {}  # connections with an unfinished message
        self.unfinished_total = 0
        self.unfinished_peak = 0
        self.registered = 0  # open connections a REGISTER succeeded over
        self.log_full = RateLog(log, LOG_EVERY)
        self.log_shed = RateLog(log, LOG_EVERY)
        self.log_timeouts = RateLog(log, LOG_EVERY)
        self.log_accept = RateLog(log, LOG_EVERY)
        self.per_ip: dict[str, int] = {}
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self.locals: list[Addr] = []
        self._listeners: dict[socket.socket, asyncio.TimerHandle | None] = {}  # -> its pause, if paused
        self.closed = False
        # outbound connections being opened: remote address -> what waits to be sent over it
        self._connecting: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: set[asyncio.Task[None]] = set()  # accepted connections getting their transport
        self.connect_timeout = connect_timeout
        self.on_connect_error: Callable[[Addr, str], None] | None = None

    async def listen(self, host: str, port: int) -> Addr:
        sock = make_tcp_socket(host.strip("[]"), port)
        try:
            sock.listen(BACKLOG)
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)
        except BaseException:
            sock.close()
            raise
        self._listeners[sock] = None
        local = norm_addr(sock.getsockname())
        self.locals.append(local)
        return local

    def _accept(self, lsock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # gone before we got to it
                continue
            except OSError as e:
                self.stats["accept_errors"] += 1
                ip, port = norm_addr(lsock.getsockname())
                if e.errno not in OUT_OF_FILES:  # the connection's own trouble (ECONNRESET, EPROTO, ...)
                    self.log_accept(self.clock(), "TCP %s:%d: accept() failed: %s", ip, port, e)
                    continue
                # the listener stays readable while the connection waits: rest, or spin
                self.log_accept(self.clock(), "TCP %s:%d: accept() failed: %s; not accepting for %.1f s",
                                ip, port, e, ACCEPT_PAUSE)
                loop = asyncio.get_running_loop()
                loop.remove_reader(lsock.fileno())
                self._listeners[lsock] = loop.call_later(ACCEPT_PAUSE, self._resume, lsock)
                return
            self._accepted(sock, norm_addr(peer))

    def _resume(self, lsock: socket.socket) -> None:
        if lsock in self._listeners and not self.closed:
            self._listeners[lsock] = None
            asyncio.get_running_loop().add_reader(lsock.fileno(), self._accept, lsock)

    def _accepted(self, sock: socket.socket, addr: Addr) -> None:
        conn = TcpConnection(self)
        conn.addr = addr
        conn.last_rx = self.clock()
        if not self._admit(conn):
            sock.close()  # before it has a transport: the file is free now
            return
        try:
            sock.setblocking(False)
            nodelay(sock)
        except OSError:
            self._forget(conn)
            sock.close()
            return
        # not cancelled by close(): a connection closed meanwhile is aborted in connection_made
        task = asyncio.get_running_loop().create_task(self._start(conn, sock))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start(self, conn: TcpConnection, sock: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: conn, sock, ssl=self.ssl_server,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT if self.ssl_server is not None else None)
        except BaseException as e:
            conn.close(abort=True)
            sock.close()
            if not isinstance(e, Exception):
                raise
            if self.ssl_server is not None:
                self.stats["handshake_errors"] += 1
                self.log_accept(self.clock(), "%s %s:%d: handshake failed: %s", self.name, conn.addr[0],
                                conn.addr[1], failure_reason(e))

    def _admit(self, conn: TcpConnection) -> bool:
        ip = conn.addr[0]
        n = self.per_ip.get(ip, 0)
        if not conn.outbound and not self.closed and n < self.max_per_ip and len(self.conns) >= self.max_connections:
            self._make_room(conn.addr)
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
        if not conn.outbound:
            self.lru[conn.addr] = conn
        conn.open = True
        self.stats["accepted"] += 1
        return True

    def _make_room(self, addr: Addr) -> None:
        """At the connection cap: close the least recently active unregistered connection."""
        victim = next(iter(self.lru.values()), None)
        if victim is None:
            self.log_full(self.clock(), "TCP: %d connections, all registered or ours: %s:%d refused",
                          len(self.conns), addr[0], addr[1])
            return
        self.stats["evicted"] += 1
        self.log_full(self.clock(), "TCP: %d connections: %s:%d (unregistered, the least recently active) "
                      "closed for %s:%d", len(self.conns), victim.addr[0], victim.addr[1], addr[0], addr[1])
        victim.close(abort=True)

    def _account(self, conn: TcpConnection, now: float) -> None:
        """After a read: what `conn` holds of an unfinished message; enforces the total budget."""
        n = unfinished_bytes(conn.framer)
        old = conn.unfinished
        if n == old:
            return
        conn.unfinished = n
        self.unfinished_total += n - old
        if not n:
            conn.unfinished_since = None
            self.holding.pop(conn.addr, None)
            return
        if not old:
            self.holding[conn.addr] = conn
            conn.unfinished_since = now
            if self.message_timeout > 0 and conn.msg_timer is None:
                conn.msg_timer = asyncio.get_running_loop().call_later(self.message_timeout, conn._message_check)
        if self.unfinished_total > self.max_unfinished:
            self._shed(now)
        self.unfinished_peak = max(self.unfinished_peak, self.unfinished_total)

    def _shed(self, now: float) -> None:
        low = self.max_unfinished * 3 // 4
        victims = sorted((c for c in self.holding.values() if not c.registered and not c.outbound),
                         key=lambda c: (-c.unfinished, c.unfinished_since or 0.0))
        for c in victims:
            if self.unfinished_total <= low:
                break
            self.stats["unfinished_evicted"] += 1
            self.log_shed(now, "TCP: %d bytes of unfinished messages (limit %d): %s:%d holding %d closed",
                          self.unfinished_total, self.max_unfinished, c.addr[0], c.addr[1], c.unfinished)
            c.close(abort=True)

    def mark_registered(self, addr: Addr, registered: bool = True) -> None:
        """A REGISTER over the connection from `addr` succeeded: it is kept when room is needed.
        `registered=False`: its last binding is gone (unregistered, expired): it may make room again."""
        conn = self.conns.get(addr)
        if conn is None or conn.registered == registered or conn.outbound:
            return
        conn.registered = registered
        if registered:
            self.registered += 1
            self.lru.pop(addr, None)
        else:
            self.registered -= 1
            self.lru[addr] = conn  # as if just active: it made room for nobody yet

    def _forget(self, conn: TcpConnection) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if conn.msg_timer is not None:
            conn.msg_timer.cancel()
            conn.msg_timer = None
        if self.conns.get(conn.addr) is conn:
            del self.conns[conn.addr]
        if self.lru.get(conn.addr) is conn:
            del self.lru[conn.addr]
        if conn.unfinished:
            self.unfinished_total -= conn.unfinished
            conn.unfinished = 0
            conn.unfinished_since = None
            if self.holding.get(conn.addr) is conn:
                del self.holding[conn.addr]
        conn.framer = StreamFramer(self.max_message)  # its unfinished message goes now, not with the transport
        if conn.registered:
            self.registered -= 1
        release(self.per_ip, conn.addr[0])
        self.stats["closed"] += 1

    def send(self, addr: Addr, data: bytes) -> bool:
        """Send over the connection from `addr`; False when there is none."""
        conn = self.conns.get(addr)
        return conn is not None and conn.send(data)

    def keepalive(self, addr: Addr) -> dict[str, Any] | None:
        """RFC 5626 keep-alive on the connection from `addr`: our pings, their pongs, the last
        pong's RTT (s) and how long the oldest unanswered ping has waited (s); None: no
        connection, or no ping sent on it yet."""
        conn = self.conns.get(addr)
        if conn is None or not conn.ka_pings:
            return None
        return {"pings": conn.ka_pings, "pongs": conn.ka_pongs, "rtt_s": conn.ka_rtt,
                "unanswered_s": self.clock() - conn.ping_at if conn.ping_at is not None else None}

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
        tls = self.ssl_client
        src = self.source_ip.get(addr)
        local = (src, 0) if src is not None else None  # a free port: several connections may share the address
        try:
            async with asyncio.timeout(self.connect_timeout + (HANDSHAKE_TIMEOUT if tls is not None else 0.0)):
                if tls is None:
                    _, conn = await loop.create_connection(lambda: TcpConnection(self, outbound=True),
                                                           addr[0], addr[1], local_addr=local)
                else:  # SNI and the name the certificate must carry: the peer's host name, else its IP
                    _, conn = await loop.create_connection(
                        lambda: TcpConnection(self, outbound=True), addr[0], addr[1], ssl=tls, local_addr=local,
                        server_hostname=self.sni.get(addr, addr[0]), ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, TimeoutError) as e:
            self._connecting.pop(addr, None)
            self.stats["connect_errors"] += 1
            reason = failure_reason(e)
            log.debug("%s connect to %s:%d failed: %s", self.name, addr[0], addr[1], reason)
            if self.on_connect_error is not None:
                self.on_connect_error(addr, reason)
            return
        if self.on_connected is not None and conn.open:
            self.on_connected(addr, conn)
        for data in self._connecting.pop(addr, []):
            if not conn.send(data):
                self.stats["no_connection"] += 1

    def snapshot(self) -> dict[str, Any]:
        # gauges and limits in their own dicts: /metrics exports the flat integers as counters
        return {"listen": [{"ip": ip, "port": port} for ip, port in self.locals],
                "connections": len(self.conns), **self.stats,
                "now": {"registered_connections": self.registered, "unfinished_bytes": self.unfinished_total,
                        "unfinished_bytes_peak": self.unfinished_peak},
                "limits": {"max_connections": self.max_connections, "max_per_ip": self.max_per_ip,
                           "max_unfinished_bytes": self.max_unfinished, "message_timeout_s": self.message_timeout,
                           "idle_timeout_s": self.idle_timeout}}

    def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        self._connecting.clear()
        for lsock, pause in self._listeners.items():
            if pause is not None:
                pause.cancel()
            else:
                asyncio.get_running_loop().remove_reader(lsock.fileno())
            lsock.close()
        self._listeners.clear()
        for conn in list(self.conns.values()):
            t = conn.transport
            self._forget(conn)
            if t is not None:
                t.abort()


def small_tls_read_buffers() -> None:
    """asyncio's SSLProtocol reads (and preallocates per connection) `max_size` bytes: a class
    attribute, read when a connection is made; every TLS connection in this process gets ours."""
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


def nodelay(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


def make_tcp_socket(host: str, port: int) -> socket.socket:
    return bound_socket(host, port, socket.SOCK_STREAM)
