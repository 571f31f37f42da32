"""The daemon's SIP sockets, and which flow each message goes out over.

One UDP socket per address family (a wildcard IPv4 bind also gets the IPv6 wildcard), and
with [general] tcpenable a TCP listener on the address and port of each. Sending: an answer
goes over the flow its request came over; a poke over the TCP connection from its
destination if there is one, over a connection we open to a static tcp peer, never over
UDP to a peer registered over TCP whose connection is gone, else over UDP.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from ..addr import Addr
from ..model import GeneralConfig, PeerConfig, ServiceConfig
from ..qualify.engine import Peer
from ..qualify.inbound import TCP, Flow
from .limits import tcp_connection_cap
from .tcp import TcpServer
from .udp import LocalAddressSelector, UdpEndpoint, open_udp

log = logging.getLogger("sipqualify")

Receive = Callable[[bytes, Addr, float], None]


class SipSockets:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.endpoints: dict[int, UdpEndpoint] = {}
        self.tcp: TcpServer | None = None  # [general] tcpenable: SIP over TCP, inbound
        self._tcp_static: set[Addr] = set()  # static transport=tcp peers: we connect to them
        self.pinned: Callable[[Addr], bool] = lambda dest: False  # registered over TCP: never UDP

    async def open(self, binds: list[Addr], g: GeneralConfig, svc: ServiceConfig, *, on_datagram: Receive,
                   on_tcp_message: Receive, on_icmp: Callable[[Addr, str], None], on_batch_done: Callable[[], None],
                   on_tcp_connect_error: Callable[[Addr, str], None]) -> None:
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
        if not g.tcpenable:
            return
        self.tcp = TcpServer(on_tcp_message, clock=self.clock, on_batch_done=on_batch_done,
                             idle_timeout=svc.tcp_idle_timeout_s,
                             max_connections=tcp_connection_cap(svc.tcp_max_connections),
                             max_per_ip=svc.tcp_max_connections_per_ip,
                             max_unfinished=svc.tcp_max_unfinished_bytes, message_timeout=svc.tcp_message_timeout_s)
        self.tcp.on_connect_error = on_tcp_connect_error
        for ep in self.endpoints.values():
            try:
                await self.tcp.listen(*ep.local)
            except OSError as e:
                if any(ep.local[1] == port and ep.local[0] == host.strip("[]") for host, port in optional):
                    log.info("no IPv6 SIP TCP socket on [%s]:%d (%s)", ep.local[0], ep.local[1], e)
                    continue
                raise OSError(e.errno, f"cannot bind SIP TCP socket {ep.local[0]}:{ep.local[1]}: "
                                       f"{e.strerror}") from None
        log.info("SIP over TCP on %s", ", ".join(f"{ip}:{port}" for ip, port in self.tcp.locals))

    def local_addresses(self) -> list[Addr]:
        return [ep.local for ep in self.endpoints.values()]

    def local_address_selector(self, externip: str | None) -> LocalAddressSelector:
        return LocalAddressSelector({fam: ep.local for fam, ep in self.endpoints.items()}, externip=externip)

    def tcp_snapshot(self) -> dict[str, Any] | None:
        return self.tcp.snapshot() if self.tcp is not None else None

    def collect_tcp_peers(self, peers: Iterable[Peer]) -> None:
        """Destinations of static tcp peers: sending to one opens a connection if there is none."""
        if self.tcp is None:  # no tcpenable: no tcp peers (and no walk over a million peers)
            return
        self._tcp_static = {p.dest for p in peers
                            if p.transport == "tcp" and not p.cfg.dynamic and p.dest is not None}

    def mark_registered(self, remote: Addr, pinned: bool) -> None:
        if self.tcp is not None:  # a pinned connection is kept when room is needed
            self.tcp.mark_registered(remote, pinned)

    def send_on(self, data: bytes, flow: Flow) -> None:
        """An answer: over the connection its request came over (dropped and counted when that
        is gone), else over UDP."""
        if flow.transport == TCP:
            if self.tcp is not None and not self.tcp.send(flow.remote, data):
                self.tcp.stats["no_connection"] += 1
            return
        dest = flow.remote
        ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def send(self, data: bytes, dest: Addr) -> None:
        """Over the TCP connection from `dest` if there is one, else over UDP; but never over UDP
        to a peer registered over TCP whose connection is gone (dropped and counted: its give-up
        timer makes it UNREACHABLE, as Asterisk does when the connection is lost)."""
        tcp = self.tcp
        if tcp is not None:
            if tcp.send(dest, data):
                return
            if dest in self._tcp_static:  # a tcp peer: open (or wait for) our connection to it
                tcp.connect_and_send(dest, data)
                return
            if self.pinned(dest):
                tcp.stats["no_connection"] += 1
                return
        ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def close(self) -> None:
        for ep in self.endpoints.values():
            ep.close()
        self.endpoints.clear()
        if self.tcp is not None:
            self.tcp.close()


def daemon_transports(peers: list[PeerConfig], tcp: bool = False) -> list[PeerConfig]:
    """With `tcpenable`, a static `transport=tcp` peer is qualified over a TCP connection
    sipqualify opens (and keeps), as chan_sip does. A dynamic peer is qualified over the
    transport it registered with (its binding's). TLS is not implemented: warned, and
    qualified over UDP rather than with a Via naming a transport the datagram does not use."""
    out = []
    for p in peers:
        if p.transport == "udp" or (tcp and p.transport == "tcp" and not p.dynamic):
            out.append(p)
            continue
        if not (tcp and p.transport == "tcp"):  # a dynamic tcp peer: its binding says (no warning)
            log.warning("peer '%s' (%s): transport=%s is not supported by the daemon yet; qualified over UDP",
                        p.name, p.source, p.transport)
        out.append(dataclasses.replace(p, transport="udp"))
    return out
