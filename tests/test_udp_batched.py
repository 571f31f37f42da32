"""The UDP endpoint's two paths, one datagram per system call (recvmsg/sendto) and many
(recvmmsg/sendmmsg, net/_mmsg.c where it is built): the same datagrams, addresses, kernel
timestamps, order and error handling. The batched path runs where the C module is built
(scripts/build-mypyc.sh, which runs this file against it)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from sipqualify.addr import Addr
from sipqualify.net import udp
from sipqualify.net.udp import UdpEndpoint, make_udp_socket, send_udp

PATHS = [pytest.param(False, id="recvmsg"),
         pytest.param(True, id="recvmmsg", marks=pytest.mark.skipif(not udp.HAVE_MMSG, reason="net/_mmsg.c not built"))]


class Got:
    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Addr, float]] = []
        self.icmp: list[tuple[Addr, str]] = []

    def on_datagram(self, data: bytes, addr: Addr, t: float) -> None:
        self.datagrams.append((data, addr, t))

    def on_icmp(self, addr: Addr, reason: str) -> None:
        self.icmp.append((addr, reason))


def endpoint(host: str, mmsg: bool) -> tuple[UdpEndpoint, Got]:
    got = Got()
    ep = UdpEndpoint(make_udp_socket(host, 0), got.on_datagram, got.on_icmp)
    ep.mmsg = mmsg
    return ep, got


@pytest.fixture
def sender() -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    yield s
    s.close()


def read_all(ep: UdpEndpoint, got: Got, expect: int) -> int:
    """Reads until `expect` datagrams were handed on (they are on loopback already)."""
    calls = 0
    while len(got.datagrams) < expect:
        select.select([ep.sock], [], [], 1.0)
        ep._read_batch()
        calls += 1
        assert calls < 1000
    return calls


@pytest.mark.parametrize("mmsg", PATHS)
def test_datagrams_arrive_in_order_with_their_source_and_the_kernel_stamp(mmsg: bool, sender: socket.socket) -> None:
    ep, got = endpoint("127.0.0.1", mmsg)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    try:
        before = time.monotonic()
        for i in range(150):  # more than one recvmmsg (64) and fewer than a batch (256)
            (sender if i % 3 else other).sendto(b"m%d" % i, ep.local)
        after = time.monotonic()
        read_all(ep, got, 150)
        assert [d for d, _, _ in got.datagrams] == [b"m%d" % i for i in range(150)]
        for i, (_, addr, t) in enumerate(got.datagrams):
            assert addr == (sender if i % 3 else other).getsockname()
            assert type(addr[0]) is str and type(addr[1]) is int
            assert before - 0.01 <= t <= time.monotonic()  # received between the sends and now
        assert got.datagrams[0][2] <= after + 0.01
        assert ep._read_batch() == 0  # empty: nothing more, and fewer reads than a batch
    finally:
        other.close()
        ep.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_a_batch_stops_at_batch_and_the_next_read_goes_on(mmsg: bool, sender: socket.socket) -> None:
    ep, got = endpoint("127.0.0.1", mmsg)
    ep.BATCH = 100
    try:
        for i in range(130):
            sender.sendto(b"x%d" % i, ep.local)
        select.select([ep.sock], [], [], 1.0)
        assert ep._read_batch() == 100  # a full batch: the caller yields to the loop and comes back
        assert len(got.datagrams) == 100
        assert ep._read_batch() == 30
        assert [d for d, _, _ in got.datagrams] == [b"x%d" % i for i in range(130)]
    finally:
        ep.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_ipv6_sources_come_as_host_and_port(mmsg: bool) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    ep, got = endpoint("::1", mmsg)
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    try:
        s.sendto(b"six", ep.local)
        read_all(ep, got, 1)
        assert got.datagrams[0][:2] == (b"six", ("::1", s.getsockname()[1]))
    finally:
        s.close()
        ep.close()


def _receiver(host: str) -> socket.socket:
    r = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    r.bind((host, 0))
    r.setblocking(False)
    return r


def _drain(r: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(r.recv(65536))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("mmsg", PATHS)
def test_send_many_sends_each_to_its_destination_in_order(mmsg: bool) -> None:
    ep, _ = endpoint("127.0.0.1", mmsg)
    a, b = _receiver("127.0.0.1"), _receiver("127.0.0.3")
    try:
        items = [(b"d%d" % i, (a if i % 2 else b).getsockname()) for i in range(200)]
        ep.send_many(items)
        assert ep.send_errors == 0
        assert _drain(a) == [b"d%d" % i for i in range(200) if i % 2]
        assert _drain(b) == [b"d%d" % i for i in range(200) if not i % 2]
    finally:
        a.close()
        b.close()
        ep.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_send_udp_splits_by_family_and_drops_where_there_is_no_socket(mmsg: bool) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    ep4, _ = endpoint("127.0.0.1", mmsg)
    ep6, _ = endpoint("::1", mmsg)
    a, b = _receiver("127.0.0.1"), _receiver("::1")
    try:
        items = [(b"v%d" % i, (b.getsockname()[:2] if i % 3 == 0 else a.getsockname())) for i in range(30)]
        send_udp({socket.AF_INET: ep4, socket.AF_INET6: ep6}, items)
        assert _drain(a) == [b"v%d" % i for i in range(30) if i % 3]
        assert _drain(b) == [b"v%d" % i for i in range(30) if i % 3 == 0]
        send_udp({socket.AF_INET: ep4}, items)  # no IPv6 socket: those are dropped, the rest go
        assert _drain(a) == [b"v%d" % i for i in range(30) if i % 3]
        assert _drain(b) == []
        assert ep4.send_errors == 0
    finally:
        a.close()
        b.close()
        ep4.close()
        ep6.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_a_refused_destination_is_reported_and_the_rest_still_go(mmsg: bool) -> None:
    """An ICMP port unreachable queued on our socket surfaces on the next send (IP_RECVERR):
    the address is reported, that datagram retried once, and the ones after it still go."""
    ep, got = endpoint("127.0.0.1", mmsg)
    live = _receiver("127.0.0.1")
    dead = _receiver("127.0.0.1")
    gone = dead.getsockname()
    dead.close()  # nothing listens there now: the kernel answers port unreachable
    try:
        ep.send_many([(b"first", gone)])
        select.select([], [], [ep.sock], 2.0)  # the ICMP error is queued (POLLERR)
        ep.send_many([(b"again", gone)] + [(b"ok%d" % i, live.getsockname()) for i in range(5)])
        assert _drain(live) == [b"ok%d" % i for i in range(5)]
        assert (gone, "port-unreachable") in got.icmp
    finally:
        live.close()
        ep.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_a_host_name_is_sent_as_sendto_sends_it(mmsg: bool) -> None:
    ep, _ = endpoint("127.0.0.1", mmsg)
    a = _receiver("127.0.0.1")
    try:
        ep.send_many([(b"byname", ("localhost", a.getsockname()[1])), (b"after", a.getsockname())])
        assert sorted(_drain(a)) == [b"after", b"byname"]
    finally:
        a.close()
        ep.close()


@pytest.mark.skipif(not udp.HAVE_MMSG, reason="net/_mmsg.c not built")
def test_send_batch_stops_before_a_malformed_item_and_raises_on_it() -> None:
    from sipqualify.net import _mmsg

    a = _receiver("127.0.0.1")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        items: list = [(b"one", a.getsockname()), ("not bytes", a.getsockname()), (b"three", a.getsockname())]
        assert _mmsg.send_batch(s.fileno(), socket.AF_INET, items, 0) == 1
        with pytest.raises(TypeError):
            _mmsg.send_batch(s.fileno(), socket.AF_INET, items, 1)
        assert _mmsg.send_batch(s.fileno(), socket.AF_INET, items, 2) == 1
        with pytest.raises(OSError):
            _mmsg.send_batch(s.fileno(), socket.AF_INET, [(b"x", ("::1", 5))], 0)  # not of the family
        with pytest.raises(OverflowError):
            _mmsg.send_batch(s.fileno(), socket.AF_INET, [(b"x", ("127.0.0.1", 70000))], 0)
        assert _drain(a) == [b"one", b"three"]
    finally:
        a.close()
        s.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_any_bytes_arrive_unchanged_empty_and_largest_included(mmsg: bool, sender: socket.socket) -> None:
    """The receive path copies datagrams, it never reads them: whatever arrives (random bytes, an
    empty datagram, the largest UDP payload over IPv4) is handed on as sent."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as hs

    ep, got = endpoint("127.0.0.1", mmsg)
    try:
        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(hs.lists(hs.binary(max_size=2048), min_size=1, max_size=80))
        def check(payloads: list[bytes]) -> None:
            got.datagrams.clear()
            for data in payloads:
                sender.sendto(data, ep.local)
            read_all(ep, got, len(payloads))
            assert [d for d, _, _ in got.datagrams] == payloads

        check()
        got.datagrams.clear()
        for data in (b"", bytes(range(256)) * 255 + bytes(range(227))):  # 0 and 65,507 bytes
            sender.sendto(data, ep.local)
        read_all(ep, got, 2)
        assert [len(d) for d, _, _ in got.datagrams] == [0, 65507]
        assert got.datagrams[1][0] == bytes(range(256)) * 255 + bytes(range(227))
    finally:
        ep.close()


@pytest.mark.parametrize("mmsg", PATHS)
def test_a_handler_that_closes_the_endpoint_ends_the_batch(mmsg: bool, sender: socket.socket) -> None:
    ep, got = endpoint("127.0.0.1", mmsg)

    def close_on_first(data: bytes, addr: Addr, t: float) -> None:
        got.datagrams.append((data, addr, t))
        ep.close()

    ep.on_datagram = close_on_first
    for i in range(5):
        sender.sendto(b"c%d" % i, ep.local)
    select.select([ep.sock], [], [], 1.0)
    ep._read_batch()
    assert ep.recv_errors == 0  # no read on the closed socket (its descriptor may be reused)
    assert got.datagrams[0][0] == b"c0"
