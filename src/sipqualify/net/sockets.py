"""The daemon's SIP sockets, and which flow each message goes out over.

One UDP socket per address family (a wildcard IPv4 bind also gets the IPv6 wildcard), with
[general] tcpenable a TCP listener on the address and port of each, with tlsenable a TLS
listener on tlsbindaddr, with wsenable / wssenable a WebSocket listener on wsbindaddr /
wssbindaddr (net/ws.py), and one UDP socket per distinct `qualify_source` of the peers (a
multi-homed host's other addresses: `sync_sources`), read like the main ones. Sending: an
answer goes over the flow its request came over; a poke over the TCP/TLS/WS connection from
its destination if there is one, over a connection we open to a static tcp/tls/ws/wss peer,
never over UDP to a peer registered over a connection that is gone, else over UDP (from its
`qualify_source` socket when it has one: `send_from`; an answer to a request that came to a
source socket leaves from it too). No transport stands in for another: a tcp, tls, ws or
wss peer is qualified over its own transport (its connection error is its reason) or not at
all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from ..addr import Addr, ip_literal
from ..model import WS_PATH, GeneralConfig, ServiceConfig
from ..qualify.engine import Peer, QualifyEngine
from ..qualify.inbound import TCP, TLS, WS, WSS, Flow
from .limits import tcp_connection_cap
from .tcp import TcpConnection, TcpServer
from .tls import CertWatch, client_context, server_context
from .udp import LocalAddressSelector, UdpEndpoint, make_udp_socket, open_udp, send_udp
from .ws import WsServer

log = logging.getLogger("sipqualify")

Receive = Callable[[bytes, Addr, float], None]
ANSWER_FROM_MAX = 65536  # remotes remembered as having sent a request to a qualify_source socket
Server = TcpServer | WsServer


class SipSockets:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.endpoints: dict[int, UdpEndpoint] = {}
        self.sources: dict[Addr, UdpEndpoint] = {}  # qualify_source (ip, port 0 or not) -> its socket
        self._from: dict[Addr, UdpEndpoint] = {}  # the same sockets by the local address they are bound to
        # remote -> the source socket its last request came to: answers to it leave from there
        self._answer_from: dict[Addr, UdpEndpoint] = {}
        self.tcp: TcpServer | None = None  # SIP over TCP: the tcpenable listener, and/or tcp peers we connect to
        self.tls: TcpServer | None = None  # SIP over TLS: the tlsenable listener, and/or tls peers we connect to
        self.certs = CertWatch()  # TLS peers' certificates (days left)
        self.ws: WsServer | None = None  # SIP over WebSocket: the wsenable listener, and/or ws peers
        self.wss: WsServer | None = None  # ... over secure WebSocket
        self._streams: tuple[Server, ...] = ()  # those of the four that exist (send() asks on every poke)
        self._static: dict[Addr, Server] = {}  # static tcp/tls/ws/wss peers' destinations: we connect to them
        self.pinned: Callable[[Addr], bool] = lambda dest: False  # registered over TCP/TLS: never UDP
        self._general = GeneralConfig()
        self._svc = ServiceConfig()
        self._on_message: dict[str, Receive] = {}
        self._on_datagram: Receive | None = None
        self._on_icmp: Callable[[Addr, str], None] | None = None
        self._on_batch_done: Callable[[], None] | None = None
        self._on_connect_error: Callable[[Addr, str], None] | None = None
        self._on_closed: Callable[[str, Addr], None] | None = None
        self.on_tls_connected: Callable[[Addr], None] | None = None  # a TLS connection we opened is up

    async def open(self, binds: list[Addr], g: GeneralConfig, svc: ServiceConfig, *, on_datagram: Receive,
                   on_tcp_message: Receive, on_icmp: Callable[[Addr, str], None], on_batch_done: Callable[[], None],
                   on_tcp_connect_error: Callable[[Addr, str], None], on_tls_message: Receive | None = None,
                   on_ws_message: Receive | None = None, on_wss_message: Receive | None = None,
                   on_closed: Callable[[str, Addr], None] | None = None) -> None:
        self._general, self._svc = g, svc
        self._on_datagram, self._on_icmp = on_datagram, on_icmp
        self._on_message = {TCP: on_tcp_message, TLS: on_tls_message or on_tcp_message,
                            WS: on_ws_message or on_tcp_message, WSS: on_wss_message or on_tcp_message}
        self._on_closed = on_closed
        self._on_batch_done, self._on_connect_error = on_batch_done, on_tcp_connect_error
        self.certs.warn_days = g.tls_expiry_warn_days
        binds = list(binds)
        optional: set[Addr] = set()
        if binds[0][0] == "0.0.0.0" and not any(":" in h for h, _ in binds):
            # a wildcard IPv4 bind also gets the IPv6 wildcard, so IPv6 peers work out of the box
            binds.append(("::", binds[0][1]))
            optional.add(binds[-1])
        for host, port in binds:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            if fam in self.endpoints:
                continue  # one socket per family
            try:
                ep = await open_udp(host, port, on_datagram, on_icmp, self.clock, on_batch_done)
            except OSError as e:
                if (host, port) in optional:
                    log.info("no IPv6 SIP socket on [%s]:%d (%s); IPv4 only", host, port, e)
                    continue
                raise OSError(e.errno, f"cannot bind SIP socket {host}:{port}: {e.strerror}") from None
            self.endpoints[fam] = ep
        if g.tlsenable:
            tls = self._server(TLS)
            host, port = g.tlsbindaddr
            try:
                await tls.listen(host, port)
            except OSError as e:
                raise OSError(e.errno, f"cannot bind SIP TLS socket {host}:{port}: {e.strerror}") from None
            log.info("SIP over TLS on %s", ", ".join(f"{ip}:{port}" for ip, port in tls.locals))
        for transport, on, (host, port) in ((WS, g.wsenable, g.wsbindaddr), (WSS, g.wssenable, g.wssbindaddr)):
            if not on:
                continue
            ws = self._ws_server(transport)
            try:
                local = await ws.listen(host, port)
            except OSError as e:
                raise OSError(e.errno, f"cannot bind SIP {transport.upper()} socket {host}:{port}: "
                                       f"{e.strerror}") from None
            log.info("SIP over %s on %s://%s:%d%s", transport.upper(), transport,
                     f"[{local[0]}]" if ":" in local[0] else local[0], local[1], WS_PATH)
        if not g.tcpenable:
            return
        tcp = self._server(TCP)
        for ep in self.endpoints.values():
            try:
                await tcp.listen(*ep.local)
            except OSError as e:
                if any(ep.local[1] == port and ep.local[0] == host.strip("[]") for host, port in optional):
                    log.info("no IPv6 SIP TCP socket on [%s]:%d (%s)", ep.local[0], ep.local[1], e)
                    continue
                raise OSError(e.errno, f"cannot bind SIP TCP socket {ep.local[0]}:{ep.local[1]}: "
                                       f"{e.strerror}") from None
        log.info("SIP over TCP on %s", ", ".join(f"{ip}:{port}" for ip, port in tcp.locals))

    def sync_sources(self, wanted: Iterable[Addr]) -> dict[Addr, Addr | str]:
        """The peers' `qualify_source`s: a UDP socket for each new one (and again for one that
        could not be bound before), closed for those no peer uses any more; one that is a main
        socket's own address is that socket. Answers and ICMP errors on them go where the main
        sockets' go. Returns each source's bound local address, or why it has no socket."""
        wanted = set(wanted)
        for src in [s for s in self.sources if s not in wanted]:
            gone = self.sources.pop(src)
            if gone not in self.endpoints.values():
                gone.close()
        out: dict[Addr, Addr | str] = {}
        for src in sorted(wanted):
            ep = self.sources.get(src) or next((e for e in self.endpoints.values() if e.local == src), None)
            if ep is None:
                try:
                    ep = self._open_source(src)
                except OSError as e:
                    name = errno.errorcode.get(e.errno or 0, "")
                    out[src] = f"cannot bind: {e.strerror or e}" + (f" ({name})" if name else "")
                    continue
            self.sources[src] = ep
            out[src] = ep.local
        self._from = {ep.local: ep for ep in self.sources.values()}
        self._answer_from = {a: ep for a, ep in self._answer_from.items() if not ep.closed}
        assert self._on_datagram is not None
        for main in self.endpoints.values():  # with no source (the default) the SIP sockets feed the core directly
            main.on_datagram = self._main_datagram if self._from else self._on_datagram
        return out

    def _open_source(self, src: Addr) -> UdpEndpoint:
        assert self._on_icmp is not None, "open() first"
        sock = make_udp_socket(src[0], src[1], reuse=False)
        ep = UdpEndpoint(sock, lambda data, addr, t: self._source_datagram(ep, data, addr, t), self._on_icmp,
                         self.clock, self._on_batch_done)
        ep.start(asyncio.get_running_loop())
        return ep

    def _main_datagram(self, data: bytes, addr: Addr, t: float) -> None:
        if self._answer_from and not data.startswith(b"SIP/2.0 "):  # a request here: answered from here again
            self._answer_from.pop(addr, None)
        assert self._on_datagram is not None
        self._on_datagram(data, addr, t)

    def _source_datagram(self, ep: UdpEndpoint, data: bytes, addr: Addr, t: float) -> None:
        """What arrives on a `qualify_source` socket goes where the SIP socket's goes; a request
        (a peer qualifying us back at the address our OPTIONS came from) is answered from it."""
        if not data.startswith(b"SIP/2.0 "):
            if len(self._answer_from) >= ANSWER_FROM_MAX and addr not in self._answer_from:
                self._answer_from.clear()  # bounded: a forgotten remote is answered from the SIP socket
            self._answer_from[addr] = ep
        assert self._on_datagram is not None
        self._on_datagram(data, addr, t)

    def udp_endpoints(self) -> list[UdpEndpoint]:
        """Every UDP socket we read: the SIP sockets, then the `qualify_source` ones."""
        return [*self.endpoints.values(), *self.sources.values()]

    def drain_udp(self) -> int:
        """Read what waits on every UDP socket now (before a give-up is judged: driver.py)."""
        return sum(ep.drain() for ep in self.udp_endpoints())

    def udp_drops(self) -> int:
        """Datagrams the kernel dropped on our UDP sockets' full receive buffers, in total."""
        return sum(ep.rx_drops() for ep in self.udp_endpoints())

    def read_before_judging(self, engine: QualifyEngine, now: float, drops_seen: int) -> int:
        """Before a retransmission or give-up runs (a transaction timer is due): what has
        arrived is read first, so an answer waiting in a socket never loses the race against
        its give-up (README "Overload"); and a rise in the kernel's drop count of our sockets
        tells the engine that answers may have been lost on our side (its give-ups are then
        inconclusive). Returns the drop count, to pass in next time."""
        due = engine.txn_timer()
        if due is None or due > now:
            return drops_seen
        self.drain_udp()
        drops = self.udp_drops()
        if drops > drops_seen:
            engine.receive_loss(now)
        return drops

    def send_from(self, data: bytes, dest: Addr, local: Addr) -> None:
        """A datagram from the `qualify_source` socket bound to `local` (dropped if it is gone: a
        reload closed it; the engine then no longer asks for it)."""
        ep = self._from.get(local)
        if ep is not None:
            ep.sendto(data, dest)

    def _server(self, transport: str) -> TcpServer:
        """The TCP or TLS server, made on first need (a listener, or a peer to connect to).
        TLS: raises TlsConfigError when the tls* options cannot make a context."""
        srv = self.tcp if transport == TCP else self.tls
        if srv is not None:
            return srv
        g, svc = self._general, self._svc
        tls = transport == TLS
        srv = TcpServer(self._on_message[transport], clock=self.clock, on_batch_done=self._on_batch_done,
                        idle_timeout=svc.tcp_idle_timeout_s,
                        max_connections=tcp_connection_cap(svc.tcp_max_connections),
                        max_per_ip=svc.tcp_max_connections_per_ip,
                        max_unfinished=svc.tcp_max_unfinished_bytes, message_timeout=svc.tcp_message_timeout_s,
                        name=transport.upper(), ssl_server=server_context(g) if tls and g.tlsenable else None,
                        ssl_client=client_context(g) if tls else None)
        srv.on_connect_error = self._on_connect_error
        if tls:
            srv.on_connected = self._tls_connected
            self.tls = srv
        else:
            self.tcp = srv
        self._streams = self._collect_streams()
        return srv

    def _ws_server(self, transport: str) -> WsServer:
        """The WS or WSS server, made on first need (a listener, or a peer to connect to). WSS:
        raises TlsConfigError when the tls* options cannot make a context."""
        srv = self.ws if transport == WS else self.wss
        if srv is not None:
            return srv
        g, svc = self._general, self._svc
        wss = transport == WSS
        srv = WsServer(self._on_message[transport], name=transport.upper(), clock=self.clock,
                       on_batch_done=self._on_batch_done, idle_timeout=svc.tcp_idle_timeout_s,
                       max_connections=tcp_connection_cap(svc.tcp_max_connections),
                       max_per_ip=svc.tcp_max_connections_per_ip, head_timeout=svc.tcp_message_timeout_s,
                       ssl_server=server_context(g) if wss and g.wssenable else None,
                       ssl_client=client_context(g) if wss else None)
        srv.on_connect_error = self._on_connect_error
        on_closed = self._on_closed
        if on_closed is not None:
            srv.on_closed = lambda addr: on_closed(transport, addr)
        if wss:
            self.wss = srv
        else:
            self.ws = srv
        self._streams = self._collect_streams()
        return srv

    def _tls_connected(self, addr: Addr, conn: TcpConnection) -> None:
        t = conn.transport
        self.certs.record(addr, t.get_extra_info("peercert") if t is not None else None)
        if self.on_tls_connected is not None:
            self.on_tls_connected(addr)

    def cert_days_left(self, dest: Addr | None, now_wall: float) -> float | None:
        return self.certs.days_left(dest, now_wall)

    def flow_keepalive(self, dest: Addr | None) -> dict[str, Any] | None:
        """RFC 5626 keep-alive of the TCP/TLS connection to or from `dest` (TcpServer.keepalive)."""
        if dest is None:
            return None
        for srv in (self.tcp, self.tls):  # a WebSocket has no CRLF ping
            ka = srv.keepalive(dest) if srv is not None else None
            if ka is not None:
                return ka
        return None

    def local_addresses(self) -> list[Addr]:
        return [ep.local for ep in self.endpoints.values()]

    def local_address_selector(self, externip: str | None) -> LocalAddressSelector:
        return LocalAddressSelector({fam: ep.local for fam, ep in self.endpoints.items()}, externip=externip)

    def tcp_snapshot(self) -> dict[str, Any] | None:
        return self.tcp.snapshot() if self.tcp is not None else None

    def tls_snapshot(self) -> dict[str, Any] | None:
        return self.tls.snapshot() if self.tls is not None else None

    def ws_snapshot(self) -> dict[str, Any] | None:
        return self.ws.snapshot() if self.ws is not None else None

    def wss_snapshot(self) -> dict[str, Any] | None:
        return self.wss.snapshot() if self.wss is not None else None

    def collect_tcp_peers(self, peers: Iterable[Peer]) -> None:
        """Destinations of static tcp/tls/ws/wss peers: sending to one opens a connection if there
        is none (the server is made here if no listener made it; a TLS or WSS peer's host name is
        its SNI; a tcp/tls peer's `qualify_source` is the address it is connected from)."""
        static: dict[Addr, Server] = {}
        for stream in (self.tcp, self.tls):
            if stream is not None:
                stream.source_ip.clear()
        for p in peers:
            if p.transport == "udp" or p.cfg.dynamic or p.dest is None:
                continue
            srv: Server
            if p.transport in (WS, WSS):
                srv = self._ws_server(p.transport)
            else:
                srv = self._server(TLS if p.transport == "tls" else TCP)
            static[p.dest] = srv
            if p.cfg.qualify_source is not None and isinstance(srv, TcpServer):  # TCP/TLS: its address, a free port
                srv.source_ip[p.dest] = p.cfg.qualify_source[0]
            host = p.cfg.host
            if srv.ssl_client is not None and host and ip_literal(host.strip("[]")) is None and p.dest == p.addr:
                srv.sni[p.dest] = host
        self._static = static

    def _collect_streams(self) -> tuple[Server, ...]:
        return tuple(s for s in (self.tcp, self.tls, self.ws, self.wss) if s is not None)

    def mark_registered(self, remote: Addr, pinned: bool) -> None:
        for srv in self._streams:  # a pinned connection is kept when room is needed
            srv.mark_registered(remote, pinned)

    def send_on(self, data: bytes, flow: Flow) -> None:
        """An answer: over the connection its request came over (dropped and counted when that
        is gone), else over UDP."""
        if flow.transport in (TCP, TLS, WS, WSS):
            srv = {TCP: self.tcp, TLS: self.tls, WS: self.ws, WSS: self.wss}[flow.transport]
            if srv is not None and not srv.send(flow.remote, data):
                srv.stats["no_connection"] += 1
            return
        dest = flow.remote
        ep = self._answer_from.get(dest) if self._answer_from else None  # its request came to a source socket
        if ep is None:
            ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def send(self, data: bytes, dest: Addr) -> None:
        """Over the TCP/TLS connection from `dest` if there is one, else over UDP; but never over
        UDP to a tcp/tls peer or to a peer registered over TCP/TLS whose connection is gone
        (dropped and counted: its give-up timer makes it UNREACHABLE, as Asterisk does when the
        connection is lost)."""
        servers = self._streams
        if servers:
            for srv in servers:
                if srv.send(dest, data):
                    return
            static = self._static.get(dest)
            if static is not None:  # a tcp/tls peer: open (or wait for) our connection to it
                static.connect_and_send(dest, data)
                return
            if self.pinned(dest):
                servers[0].stats["no_connection"] += 1
                return
        ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def send_many(self, items: list[tuple[bytes, Addr]]) -> None:
        """Each (data, dest) as `send` sends it; with no TCP/TLS/WebSocket listener (the usual
        qualify-only node) straight over the UDP sockets, many per system call."""
        if self._streams:
            for data, dest in items:
                self.send(data, dest)
        else:
            send_udp(self.endpoints, items)

    async def aclose(self) -> None:
        """Everything closed; the WebSocket servers' sessions and sites too."""
        for srv in (self.ws, self.wss):
            if srv is not None:
                await srv.aclose()
        self.close()

    def close(self) -> None:
        for ep in (*self.endpoints.values(), *self.sources.values()):
            ep.close()
        self.endpoints.clear()
        self.sources.clear()
        self._from.clear()
        self._answer_from.clear()
        for srv in (self.tcp, self.tls):
            if srv is not None:
                srv.close()
