"""UDP transport: one bound socket per address family, ICMP errors surfaced with their address.

Datagrams carry the kernel's receive timestamp (SO_TIMESTAMPNS) into the engine.

Linux only reports ICMP errors (port/host unreachable) on an unconnected UDP socket when
IP_RECVERR / IPV6_RECVERR is set; the error then sits in the socket's error queue together
with the address the failed datagram was sent to. A receive then fails with ECONNREFUSED;
we drain the error queue with MSG_ERRQUEUE to learn *which* destination it was, and hand
(addr, reason) to the owner.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable

from ..addr import Addr, ip_literal

try:  # recvmmsg/sendmmsg (net/_mmsg.c), built with the compiled modules (setup.py); else recvmsg/sendto
    from ._mmsg import VLEN as MMSG_VLEN
    from ._mmsg import recv_batch as _recv_batch
    from ._mmsg import send_batch as _send_batch
    HAVE_MMSG = os.environ.get("SIPQUALIFY_MMSG", "1") != "0"  # 0: one system call per datagram
except ImportError:
    MMSG_VLEN = 0
    HAVE_MMSG = False

log = logging.getLogger("sipqualify.net")


IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of answers must not overflow the kernel buffer
SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux: u32 sk_meminfo[SK_MEMINFO_VARS]
SK_MEMINFO_DROPS = 8  # ... index of sk_drops: datagrams dropped on a full receive buffer
_TIMESPEC = struct.Struct("@qq")  # SO_TIMESTAMPNS: struct timespec


def norm_addr(addr: tuple[object, ...]) -> Addr:
    """(host, port[, flow, scope]) -> (host, port); IPv4-mapped IPv6 -> IPv4."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    port = addr[1]
    assert isinstance(port, int)
    return host, port


class UdpEndpoint:
    """A bound UDP socket read directly with recvmsg: every datagram carries the kernel's
    receive timestamp (SO_TIMESTAMPNS), so an RTT is not inflated by however long the event
    loop took to get to it. `on_datagram(data, addr, t)` gets `t` on the `clock` timeline."""

    BATCH = 256  # datagrams read per readiness callback before yielding to the loop

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, Addr, float], None],
        on_icmp: Callable[[Addr, str], None],
        clock: Callable[[], float] = time.monotonic,
        on_batch_done: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.on_batch_done = on_batch_done  # called once after each batch of datagrams
        self.on_datagram = on_datagram
        self.on_icmp = on_icmp
        self.clock = clock
        self.local: Addr = norm_addr(sock.getsockname())
        self.send_errors = 0
        self.recv_errors = 0
        self.timestamps = True
        self.icmp = True  # ICMP errors reported (IP_RECVERR)
        # datagrams read and sent many per system call (recvmmsg/sendmmsg) where net/_mmsg.c is
        # built; False: one recvmsg/sendto each (the pure-Python path)
        self.mmsg = HAVE_MMSG
        self._fd, self._family = sock.fileno(), int(sock.family)  # (socket.family is a Python property)
        self._addrs: dict[object, tuple[str, int]] = {}  # recv_batch's address tuples, bounded below
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            self.timestamps = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if "uvloop" in type(loop).__module__:
            # libuv's uv_poll treats POLLERR as EBADF and stops watching the fd for good, and
            # IP_RECVERR raises POLLERR on every ICMP error: under uvloop, no ICMP reporting.
            self.icmp = False
            level, opt = ((socket.IPPROTO_IPV6, IPV6_RECVERR) if self.sock.family == socket.AF_INET6
                          else (socket.IPPROTO_IP, IP_RECVERR))
            self.sock.setsockopt(level, opt, 0)
        loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        try:
            self._read_batch()
        finally:
            if self.on_batch_done is not None:
                self.on_batch_done()

    def drain(self, max_batches: int = 64) -> int:
        """Read what is waiting now, without the batch callback (the caller pumps): done before
        a give-up is judged, so an answer that already arrived is never read after it. Returns
        the number of datagrams read."""
        n = 0
        for _ in range(max_batches):
            got = self._read_batch()
            n += got
            if got < self.BATCH or self.closed:
                break
        return n

    def rx_drops(self) -> int:
        """The kernel's count of datagrams this socket dropped on a full receive buffer (0 where
        SO_MEMINFO is not available)."""
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
        except OSError:
            return 0
        if len(raw) < 4 * (SK_MEMINFO_DROPS + 1):
            return 0
        return int(struct.unpack_from("I", raw, 4 * SK_MEMINFO_DROPS)[0])

    def _read_batch(self) -> int:
        """Up to BATCH datagrams, each to on_datagram; returns how many reads were made (fewer
        than BATCH: the socket is empty)."""
        if self.closed:
            return 0
        if self.mmsg:
            return self._read_mmsg()
        sock = self.sock
        v4 = sock.family == socket.AF_INET  # its addresses are (host, port) already
        recvmsg, on_datagram, timespec = sock.recvmsg, self.on_datagram, _TIMESPEC.unpack_from
        mono = self.clock()
        offset = time.time() - mono  # realtime - monotonic, to map kernel stamps
        for i in range(self.BATCH):
            if self.closed:  # a handler closed us (the descriptor may be reused already)
                return i
            try:
                data, anc, _flags, addr = recvmsg(65536, 64)
            except (BlockingIOError, InterruptedError):
                return i
            except ConnectionRefusedError as e:
                self._drain_errors(e)
                continue
            except OSError as e:
                self.recv_errors += 1
                self._drain_errors(e)
                continue
            t = mono
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = timespec(cdata)
                    t = min(mono, sec + nsec * 1e-9 - offset)
            try:
                on_datagram(data, addr if v4 else norm_addr(addr), t)
            except Exception:  # the engine never raises; this guards the shell itself
                log.exception("datagram handler failed")
        return self.BATCH

    def _read_mmsg(self) -> int:
        """_read_batch with recvmmsg: up to MMSG_VLEN datagrams per system call."""
        fd, on_datagram, addrs = self._fd, self.on_datagram, self._addrs
        if len(addrs) > 65536:
            addrs.clear()
        mono = self.clock()
        offset = time.time() - mono  # realtime - monotonic, to map kernel stamps
        n, batch = 0, self.BATCH
        while n < batch and not self.closed:  # a handler may close us (its fd then reused)
            want = min(MMSG_VLEN, batch - n)
            try:
                got = _recv_batch(fd, want, mono, offset, addrs)
            except (BlockingIOError, InterruptedError):
                return n
            except ConnectionRefusedError as e:
                self._drain_errors(e)
                n += 1
                continue
            except OSError as e:
                self.recv_errors += 1
                self._drain_errors(e)
                n += 1
                continue
            for data, addr, t in got:
                try:
                    on_datagram(data, addr, t)
                except Exception:  # the engine never raises; this guards the shell itself
                    log.exception("datagram handler failed")
            n += len(got)
            if len(got) < want:
                return n  # the socket is empty
        return n

    def _drain_errors(self, exc: Exception) -> None:
        for _ in range(64):
            try:
                _, _, _, addr = self.sock.recvmsg(1, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.debug("error queue read failed: %s", e)
                break
            reason = errno.errorcode.get(getattr(exc, "errno", 0) or 0, str(exc))
            self.on_icmp(norm_addr(addr), "port-unreachable" if reason == "ECONNREFUSED" else reason)

    def sendto(self, data: bytes, addr: Addr) -> None:
        if self.closed:
            return
        try:
            self.sock.sendto(data, addr)
        except ConnectionRefusedError as e:  # a queued ICMP error surfaced on send
            self._drain_errors(e)
            try:
                self.sock.sendto(data, addr)
            except OSError:
                self.send_errors += 1
        except OSError as e:  # e.g. network unreachable, buffer full: the give-up timer decides
            self.send_errors += 1
            log.debug("sendto %s failed: %s", addr, e)

    def send_many(self, items: list[tuple[bytes, Addr]]) -> None:
        """Each (data, dest) as `sendto` would send it, many per system call (sendmmsg) where
        net/_mmsg.c is built: a datagram that fails is counted (or retried once after an ICMP
        error surfaced, as `sendto` does) and the rest still go."""
        if self.closed:
            return
        if not self.mmsg:
            for data, addr in items:
                self.sendto(data, addr)
            return
        fd, family, n, i = self._fd, self._family, len(items), 0
        while i < n:
            try:
                i += _send_batch(fd, family, items, i)
            except ConnectionRefusedError as e:  # a queued ICMP error surfaced on send
                self._drain_errors(e)
                data, addr = items[i]
                try:
                    self.sock.sendto(data, addr)
                except OSError:
                    self.send_errors += 1
                i += 1
            except OSError as e:
                if e.errno == errno.EINVAL:  # not an address literal of our family: as sendto does
                    data, addr = items[i]
                    self.sendto(data, addr)
                else:  # e.g. network unreachable, buffer full: the give-up timer decides
                    self.send_errors += 1
                    log.debug("sendmmsg to %s failed: %s", items[i][1], e)
                i += 1


def send_udp(endpoints: dict[int, UdpEndpoint], items: list[tuple[bytes, Addr]]) -> None:
    """Datagrams over the UDP socket of each one's address family (dropped where we have
    none), in as few system calls as the endpoints allow."""
    if not items:
        return
    v6 = 0
    for _, dest in items:
        if ":" in dest[0]:
            v6 += 1
    if v6 == 0 or v6 == len(items):
        ep = endpoints.get(socket.AF_INET6 if v6 else socket.AF_INET)
        if ep is not None:
            ep.send_many(items)
        return
    for family, part in ((socket.AF_INET, [it for it in items if ":" not in it[1][0]]),
                         (socket.AF_INET6, [it for it in items if ":" in it[1][0]])):
        ep = endpoints.get(family)
        if ep is not None:
            ep.send_many(part)


def bound_socket(host: str, port: int, kind: int,
                 configure: Callable[[socket.socket, int], None] | None = None, *, reuse: bool = True) -> socket.socket:
    """A non-blocking socket of `kind` bound to host:port (SO_REUSEADDR unless not `reuse`; IPv6
    sockets IPv6-only); `configure(sock, family)` runs before the bind. Closed again if anything
    fails."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if configure is not None:
            configure(sock, family)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # Linux, CAP_NET_ADMIN: beyond net.core.rmem_max
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_warned_small = False


def size_buffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> tuple[int, int]:
    """Receive and send buffers of `size` bytes: with the FORCE options when we may (root or
    CAP_NET_ADMIN: not capped by net.core.rmem_max / wmem_max), else the plain ones, which the
    kernel caps silently (212,992 bytes on a stock Debian: a few hundred answers). Returns the
    sizes the kernel reports (it doubles what it grants for its bookkeeping), and warns once
    when the receive buffer is smaller than asked: answers then overflow it in bursts."""
    global _warned_small
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass
    rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    if rcv < size and not _warned_small:
        _warned_small = True
        log.warning("UDP receive buffer is %d bytes, not the %d asked for (net.core.rmem_max caps it without "
                    "CAP_NET_ADMIN): bursts of answers may be dropped by the kernel (counted in "
                    "sipqualify_receive_drops_total); raise it with: sysctl -w net.core.rmem_max=%d",
                    rcv // 2, size, size)
    return rcv, snd


def _configure_udp(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    size_buffers(sock)


def make_udp_socket(host: str, port: int, *, reuse: bool = True) -> socket.socket:
    """A UDP socket as ours are (ICMP errors reported, large buffers). Without `reuse`
    (a `qualify_source`'s socket) an address:port another socket holds is EADDRINUSE, not shared."""
    return bound_socket(host, port, socket.SOCK_DGRAM, _configure_udp, reuse=reuse)


async def open_udp(
    host: str,
    port: int,
    on_datagram: Callable[[bytes, Addr, float], None],
    on_icmp: Callable[[Addr, str], None],
    clock: Callable[[], float] = time.monotonic,
    on_batch_done: Callable[[], None] | None = None,
) -> UdpEndpoint:
    sock = make_udp_socket(host.strip("[]"), port)
    ep = UdpEndpoint(sock, on_datagram, on_icmp, clock, on_batch_done)
    ep.start(asyncio.get_running_loop())
    return ep


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
    a = ip_literal(ip)
    if a is None:
        return False
    return a.is_private or a.is_loopback or a.is_link_local
