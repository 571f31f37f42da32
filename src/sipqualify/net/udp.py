"""UDP transport: one bound socket per address family, ICMP errors surfaced with their address.

Linux only reports ICMP errors (port/host unreachable) on an unconnected UDP socket when
IP_RECVERR / IPV6_RECVERR is set; the error then sits in the socket's error queue together
with the address the failed datagram was sent to. asyncio calls `error_received` when a
receive fails with ECONNREFUSED; we then drain the error queue with MSG_ERRQUEUE to learn
*which* destination it was, and hand (addr, reason) to the owner.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sipqualify.net")

Addr = tuple[str, int]

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of answers must not overflow the kernel buffer


def norm_addr(addr: tuple[object, ...]) -> Addr:
    """(host, port[, flow, scope]) -> (host, port); IPv4-mapped IPv6 -> IPv4."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    port = addr[1]
    assert isinstance(port, int)
    return host, port


class UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(
        self,
        on_datagram: Callable[[bytes, Addr], None],
        on_icmp: Callable[[Addr, str], None],
    ) -> None:
        self.on_datagram = on_datagram
        self.on_icmp = on_icmp
        self.transport: asyncio.DatagramTransport | None = None
        self.sock: socket.socket | None = None
        self.local: Addr = ("0.0.0.0", 0)
        self.send_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.local = norm_addr(sock.getsockname())

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.on_datagram(data, norm_addr(addr))

    def error_received(self, exc: Exception) -> None:
        if self.sock is None:
            log.debug("UDP error without socket: %s", exc)
            return
        drained = False
        for _ in range(64):
            try:
                _, _, _, addr = self.sock.recvmsg(1, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("error queue read failed: %s", e)
                break
            drained = True
            reason = errno.errorcode.get(getattr(exc, "errno", 0) or 0, str(exc))
            self.on_icmp(norm_addr(addr), "port-unreachable" if reason == "ECONNREFUSED" else reason)
        if not drained:
            log.debug("UDP error: %s", exc)

    def sendto(self, data: bytes, addr: Addr) -> None:
        if self.transport is None:
            return
        try:
            self.transport.sendto(data, addr)
        except OSError as e:  # e.g. network unreachable: the give-up timer decides the state
            self.send_errors += 1
            log.debug("sendto %s failed: %s", addr, e)


def make_udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                pass
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_udp(
    host: str,
    port: int,
    on_datagram: Callable[[bytes, Addr], None],
    on_icmp: Callable[[Addr, str], None],
) -> UdpEndpoint:
    loop = asyncio.get_running_loop()
    sock = make_udp_socket(host.strip("[]"), port)
    _, proto = await loop.create_datagram_endpoint(lambda: UdpEndpoint(on_datagram, on_icmp), sock=sock)
    proto.sock = sock
    return proto


class LocalAddressSelector:
    """Which of our addresses a peer sees: the bound address, or (for a wildcard bind) the
    source address the kernel would route from, learned once per destination with a
    connected UDP socket (no packet is sent). `externip` replaces it for destinations that
    are not private, loopback or link-local."""

    def __init__(self, bound: dict[int, Addr], externip: str | None = None, cache_size: int = 65536) -> None:
        self.bound = bound  # family -> (ip, port)
        self.externip = externip
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    def __call__(self, dest: Addr) -> Addr:
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        ip, port = self.bound.get(family) or next(iter(self.bound.values()))
        if self.externip and not _is_local(dest[0]):
            return self.externip, port
        if ip in ("0.0.0.0", "::"):
            ip = self._route_source(dest[0], family)
        return ip, port

    def _route_source(self, dest_ip: str, family: int) -> str:
        cached = self._cache.get(dest_ip)
        if cached is not None:
            return cached
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((dest_ip, 9))
                src = str(s.getsockname()[0])
        except OSError:
            src = "127.0.0.1" if family == socket.AF_INET else "::1"
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[dest_ip] = src
        return src


def _is_local(ip: str) -> bool:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_private or a.is_loopback or a.is_link_local
