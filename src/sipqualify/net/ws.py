"""SIP over WebSocket (RFC 7118) with aiohttp's WebSocket support: the `ws`/`wss` listeners
browser phones connect to (`wsenable`/`wsbindaddr`, `wssenable`/`wssbindaddr`, path `/ws`,
subprotocol `sip`), and the connections sipqualify opens to the `transport=ws|wss` peers it
qualifies (`connect_and_send`).

Each WebSocket message is one SIP message (RFC 7118 §5): it goes to `on_message(data, addr,
t_rx)` exactly like a datagram, with `addr` the remote end of the connection, and answers and
pokes for that address go back over it (`send`). Text frames are sent (our messages are
ASCII); text and binary frames are both read. A closed connection is told to `on_closed(addr)`
(the inbound endpoint drops the bindings registered over it).

What a connection costs is bounded like net/tcp.py's: at most `max_connections` connections
to the listeners and `max_per_ip` from one address, upgraded or not (more are closed as they
are accepted, before aiohttp reads a byte: `_Admitted`), a message
of at most `max_message` bytes (a bigger one closes the connection: aiohttp's 1009), a
connection silent for `idle_timeout` seconds is closed, a request head must be complete within
`head_timeout` seconds (aiohttp's keep-alive timer, as the API does), a TLS handshake within
`HANDSHAKE_TIMEOUT` (5 s), and a peer that does not
read has at most `max_write_buffer` bytes queued before it is closed. Bad input never raises
out of here: a connection that misbehaves is closed and counted in `stats`; a malformed HTTP
request gets aiohttp's 400 and one rate-limited log line (net/httplog.py), not a traceback.

Connections we open are kept for the next pokes; a failure goes to `on_connect_error(addr,
reason)` ("connection refused", "WebSocket handshake refused (404)", "no 'sip' subprotocol",
a TLS reason) and the next attempt waits for a backoff (1 s, doubling up to 60 s; sends meanwhile
fail with the same reason at once). No other transport is tried.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from ..addr import Addr
from ..model import WS_PATH
from ..ratelog import RateLog
from ..sip.framing import MAX_MESSAGE
from .httplog import ServerLog
from .limits import release
from .tls import HANDSHAKE_TIMEOUT, failure_reason
from .udp import norm_addr

log = logging.getLogger("sipqualify.net")

SUBPROTOCOL = "sip"  # RFC 7118 §4.1
MAX_WRITE_BUFFER = 1024 * 1024
BACKOFF_MIN = 1.0  # seconds before a failed connect is tried again, doubling ...
BACKOFF_MAX = 60.0  # ... up to this
LOG_EVERY = 60.0
STATS = ("accepted", "refused", "upgraded", "closed", "idle_closed", "too_big", "messages_in", "bytes_in",
         "messages_out", "bytes_out", "write_overflows", "no_connection", "connects", "connect_errors",
         "handshake_errors")


class WsConnection:
    __slots__ = ("server", "ws", "addr", "outbound", "registered", "open", "queue", "queued", "wake", "task")

    def __init__(self, server: WsServer, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, addr: Addr,
                 outbound: bool) -> None:
        self.server = server
        self.ws = ws
        self.addr = addr
        self.outbound = outbound  # we opened it (to qualify a ws/wss peer)
        self.registered = False  # a REGISTER over it succeeded (counted in `registered`; nothing is evicted here)
        self.open = True
        self.queue: deque[bytes] = deque()  # what waits to be written, in order
        self.queued = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None  # the writer

    def send(self, data: bytes) -> bool:
        if not self.open or self.ws.closed:
            return False
        st = self.server.stats
        self.queue.append(data)
        self.queued += len(data)
        st["messages_out"] += 1
        st["bytes_out"] += len(data)
        if self.queued > self.server.max_write_buffer:
            st["write_overflows"] += 1
            log.debug("%s %s:%d: peer does not read: closing", self.server.name, *self.addr)
            self.close()
        else:
            self.wake.set()
        return True

    async def write(self) -> None:
        ws = self.ws
        try:
            while self.open:
                await self.wake.wait()
                self.wake.clear()
                while self.queue and self.open:
                    data = self.queue.popleft()
                    self.queued -= len(data)
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError:  # RFC 7118 §5: binary frames for what is not UTF-8
                        await ws.send_bytes(data)
                    else:
                        await ws.send_str(text)
        except (ConnectionError, RuntimeError):  # closed under us (aiohttp raises both)
            self.close()

    def close(self) -> None:
        self.server._forget(self)
        self.wake.set()
        if not self.ws.closed:
            task = asyncio.get_running_loop().create_task(self.ws.close())
            self.server._tasks.add(task)
            task.add_done_callback(self.server._tasks.discard)


class _Admitted(asyncio.Protocol):
    """aiohttp's request handler behind a door: a connection over the limits is closed as it is
    accepted; the others are counted (by address) until they are gone."""

    __slots__ = ("inner", "server", "ip")

    def __init__(self, inner: asyncio.Protocol, server: WsServer) -> None:
        self.inner = inner
        self.server = server
        self.ip: str | None = None  # admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        ip = norm_addr(peer)[0] if peer else ""
        if not self.server._accept(ip):
            assert isinstance(transport, asyncio.Transport)
            transport.abort()  # its file now
            return
        self.ip = ip
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ip is not None:
            self.server._gone(self.ip)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.ip is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.ip is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class WsServer:
    """The ws or wss listeners (one aiohttp site per address) and the connections we open to
    ws/wss peers, sharing one connection registry and its limits."""

    def __init__(self, on_message: Callable[[bytes, Addr, float], None], *, name: str = "WS",
                 clock: Callable[[], float] = time.monotonic, on_batch_done: Callable[[], None] | None = None,
                 idle_timeout: float = 3600.0, max_connections: int = 10_000, max_per_ip: int = 100,
                 max_message: int = MAX_MESSAGE, max_write_buffer: int = MAX_WRITE_BUFFER,
                 head_timeout: float = 10.0, connect_timeout: float = 5.0,
                 ssl_server: ssl.SSLContext | None = None, ssl_client: ssl.SSLContext | None = None) -> None:
        self.name = name  # WS | WSS: in log lines
        self.on_message = on_message
        self.on_batch_done = on_batch_done
        self.on_closed: Callable[[Addr], None] | None = None
        self.on_connect_error: Callable[[Addr, str], None] | None = None
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.max_message = max_message
        self.max_write_buffer = max_write_buffer
        self.head_timeout = head_timeout
        self.connect_timeout = connect_timeout
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.sni: dict[Addr, str] = {}  # wss peers we connect to: their host name, when not an IP
        self.conns: dict[Addr, WsConnection] = {}
        self.inbound = 0  # connections to the listeners, upgraded or not
        self.per_ip: dict[str, int] = {}  # ... by address
        self.registered = 0
        self.stats: dict[str, int] = dict.fromkeys(STATS, 0)
        self.locals: list[Addr] = []
        self.closed = False
        self.log_limits = RateLog(log, LOG_EVERY)
        self._runner: web.AppRunner | None = None
        self._listeners: list[asyncio.Server] = []
        self._session: aiohttp.ClientSession | None = None
        self._connecting: dict[Addr, list[bytes]] = {}
        self._retry: dict[Addr, tuple[float, float, str]] = {}  # addr -> (not before, backoff, last reason)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ listening

    async def listen(self, host: str, port: int) -> Addr:
        if self._runner is None:
            app = web.Application()
            app.router.add_get(WS_PATH, self._handle)
            # aiohttp's keep-alive timer is armed at connect: a request head not complete by then
            # closes the connection (slowloris), as for the API
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                         keepalive_timeout=self.head_timeout,
                                         logger=ServerLog(f"sipqualify.net.{self.name.lower()}", self.name, log))
            await self._runner.setup()
        handler = self._runner.server
        assert handler is not None

        def factory() -> asyncio.Protocol:
            return _Admitted(handler(), self)

        # the loop's server rather than a TCPSite: a TLS handshake has HANDSHAKE_TIMEOUT (aiohttp: 60 s)
        tls = self.ssl_server
        server = await asyncio.get_running_loop().create_server(
            factory, host.strip("[]"), port, ssl=tls, ssl_handshake_timeout=HANDSHAKE_TIMEOUT if tls else None,
            reuse_address=True)
        self._listeners.append(server)
        local = norm_addr(server.sockets[0].getsockname())
        self.locals.append(local)
        return local

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        if not peer or self.closed:
            return web.Response(status=503)
        addr = norm_addr(peer)
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=self.max_message, autoping=True)
        offered = {w.strip() for w in request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
        # RFC 7118 §4.1: only a 'sip' WebSocket (checked first: aiohttp warns about each other one)
        if SUBPROTOCOL not in offered or not ws.can_prepare(request).ok:
            self.stats["handshake_errors"] += 1
            return web.Response(status=400, text="a WebSocket with subprotocol 'sip' is expected here\n")
        try:
            await ws.prepare(request)
        except (ConnectionError, RuntimeError):  # gone meanwhile
            return ws
        self.stats["upgraded"] += 1
        conn = self._admit(ws, addr, outbound=False)
        await self._read(conn)
        await ws.close()
        return ws

    # ------------------------------------------------------------------ connections

    def _admit(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse, addr: Addr,
               outbound: bool) -> WsConnection:
        old = self.conns.get(addr)
        if old is not None:  # cannot really happen: a remote address is one connection at a time
            old.close()
        conn = WsConnection(self, ws, addr, outbound)
        self.conns[addr] = conn
        conn.task = asyncio.get_running_loop().create_task(conn.write())
        return conn

    async def _read(self, conn: WsConnection) -> None:
        ws, st = conn.ws, self.stats
        try:
            while conn.open:
                try:
                    async with asyncio.timeout(self.idle_timeout or None):
                        msg = await ws.receive()
                except TimeoutError:
                    st["idle_closed"] += 1
                    log.debug("%s %s:%d: idle for %.0f s: closing", self.name, *conn.addr, self.idle_timeout)
                    break
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = msg.data.encode("utf-8")
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = msg.data
                else:  # CLOSE, CLOSING, CLOSED, ERROR (a message over max_message among them)
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        st["too_big"] += isinstance(msg.data, aiohttp.WebSocketError)
                        log.debug("%s %s:%d: %s: closing", self.name, *conn.addr, msg.data)
                    break
                st["messages_in"] += 1
                st["bytes_in"] += len(data)
                try:
                    self.on_message(data, conn.addr, self.clock())
                    if self.on_batch_done is not None:
                        self.on_batch_done()
                except Exception:  # the engine never raises; this guards the shell itself
                    log.exception("%s message handler failed", self.name)
        finally:
            conn.close()

    def _forget(self, conn: WsConnection) -> None:
        if not conn.open:
            return
        conn.open = False
        conn.queue.clear()
        conn.queued = 0
        if self.conns.get(conn.addr) is conn:
            del self.conns[conn.addr]
        if conn.registered:
            self.registered -= 1
        self.stats["closed"] += 1
        if self.on_closed is not None and not self.closed:
            try:
                self.on_closed(conn.addr)
            except Exception:
                log.exception("%s close handler failed", self.name)

    def _accept(self, ip: str) -> bool:
        """A connection to a listener from `ip`: admitted (and counted), or refused."""
        n = self.per_ip.get(ip, 0)
        if self.closed or self.inbound >= self.max_connections or n >= self.max_per_ip:
            self.stats["refused"] += 1
            self.log_limits(self.clock(), "%s: connection from %s refused (%d connections, %d from this address)",
                            self.name, ip, self.inbound, n)
            return False
        self.inbound += 1
        self.per_ip[ip] = n + 1
        self.stats["accepted"] += 1
        return True

    def _gone(self, ip: str) -> None:
        self.inbound -= 1
        release(self.per_ip, ip)

    def mark_registered(self, addr: Addr, registered: bool = True) -> None:
        conn = self.conns.get(addr)
        if conn is None or conn.registered == registered or conn.outbound:
            return
        conn.registered = registered
        self.registered += 1 if registered else -1

    def send(self, addr: Addr, data: bytes) -> bool:
        """Send over the connection from (or to) `addr`; False when there is none."""
        conn = self.conns.get(addr)
        return conn is not None and conn.send(data)

    # ------------------------------------------------------------------ connecting

    def connect_and_send(self, addr: Addr, data: bytes) -> None:
        """Open a WebSocket to `addr` (a ws/wss peer) and send `data` once it is up; what is sent
        meanwhile waits with it. Within the backoff after a failure, the failure is reported
        again at once (soon, not from inside the caller)."""
        if self.closed:
            return
        queued = self._connecting.get(addr)
        if queued is not None:
            queued.append(data)
            return
        retry = self._retry.get(addr)
        loop = asyncio.get_running_loop()
        if retry is not None and self.clock() < retry[0]:
            self.stats["no_connection"] += 1
            if self.on_connect_error is not None:
                loop.call_soon(self.on_connect_error, addr, retry[2])
            return
        self._connecting[addr] = [data]
        self.stats["connects"] += 1
        task = loop.create_task(self._connect(addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def url(self, addr: Addr) -> str:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        return f"{'wss' if self.ssl_client is not None else 'ws'}://{host}:{addr[1]}{WS_PATH}"

    async def _connect(self, addr: Addr) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        tls = self.ssl_client
        try:
            async with asyncio.timeout(self.connect_timeout + (HANDSHAKE_TIMEOUT if tls is not None else 0.0)):
                ws = await self._session.ws_connect(
                    self.url(addr), protocols=(SUBPROTOCOL,), max_msg_size=self.max_message, autoping=True,
                    ssl=tls if tls is not None else False, server_hostname=self.sni.get(addr) if tls else None)
            if ws.protocol != SUBPROTOCOL:
                await ws.close()
                raise ConnectionError("no 'sip' subprotocol in the WebSocket handshake")
        except (OSError, TimeoutError, aiohttp.ClientError) as e:
            self._failed(addr, e)
            return
        self._retry.pop(addr, None)
        conn = self._admit(ws, addr, outbound=True)
        for data in self._connecting.pop(addr, []):
            if not conn.send(data):
                self.stats["no_connection"] += 1
        await self._read(conn)

    def _failed(self, addr: Addr, e: BaseException) -> None:
        self._connecting.pop(addr, None)
        self.stats["connect_errors"] += 1
        if isinstance(e, aiohttp.WSServerHandshakeError):
            reason = f"WebSocket handshake refused ({e.status})"
        else:
            inner = getattr(e, "certificate_error", None) or getattr(e, "os_error", None) or e
            reason = failure_reason(inner) if isinstance(inner, BaseException) else str(e)
        _, backoff, _ = self._retry.get(addr, (0.0, BACKOFF_MIN / 2, ""))
        backoff = min(BACKOFF_MAX, backoff * 2)
        self._retry[addr] = (self.clock() + backoff, backoff, reason)
        log.debug("%s connect to %s failed: %s (next try in %.0f s)", self.name, self.url(addr), reason, backoff)
        if self.on_connect_error is not None:
            self.on_connect_error(addr, reason)

    # ------------------------------------------------------------------ the rest

    def snapshot(self) -> dict[str, Any]:
        return {"listen": [{"ip": ip, "port": port} for ip, port in self.locals],
                "connections": len(self.conns), "inbound_connections": self.inbound, **self.stats,
                "now": {"registered_connections": self.registered},
                "limits": {"max_connections": self.max_connections, "max_per_ip": self.max_per_ip,
                           "max_message_bytes": self.max_message, "idle_timeout_s": self.idle_timeout}}

    async def aclose(self) -> None:
        self.closed = True
        self._connecting.clear()
        for conn in list(self.conns.values()):
            conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._listeners:
            server.close()
        self._listeners.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
