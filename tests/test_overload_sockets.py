"""Overload on real sockets (issue 15; README "Overload"): before a retransmission or give-up
runs, the shell reads what already arrived, and tells the engine when the kernel dropped
datagrams on our full receive buffer (a give-up then is inconclusive, not UNREACHABLE).

The engine is driven by hand at chosen instants and the event loop is never given a turn, so
an answer sits in the kernel's buffer exactly as it does behind a stalled loop."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import pytest

from sipqualify.model import GeneralConfig, PeerConfig, ServiceConfig
from sipqualify.net.sockets import SipSockets
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.inbound import UDP

from .qualify.sim import answer

Addr = tuple[str, int]


class Rig:
    def __init__(self, sockets: SipSockets, engine: QualifyEngine, uas: socket.socket, t0: float) -> None:
        self.sockets, self.engine, self.uas = sockets, engine, uas
        self.t0 = t0  # when the first poke was sent (the monotonic clock: kernel stamps are on it)

    def flush(self) -> None:
        for data, dest in self.engine.datagrams_to_send():
            self.sockets.send(data, dest)

    def uas_answer(self) -> None:
        """The peer reads our OPTIONS and answers it (blocking: the datagram is on loopback)."""
        data, addr = self.uas.recvfrom(65536)
        self.uas.sendto(answer(data), addr)

    def wait_queued(self, ep_sock: socket.socket, n: int = 1) -> None:
        """Until `n` datagrams wait in our socket (loopback delivery is synchronous with sendto;
        this only guards against reading too early), without reading them."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if len(ep_sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)) > 0:
                    return
            except BlockingIOError:
                pass
            time.sleep(0.001)
        raise AssertionError("nothing arrived")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    sockets = SipSockets(time.monotonic)
    holder: dict[str, QualifyEngine] = {}

    def on_datagram(data: bytes, addr: Addr, t: float) -> None:
        holder["engine"].front.receive(data, addr, t, UDP)

    await sockets.open([("127.0.0.1", 0)], GeneralConfig(), ServiceConfig(), on_datagram=on_datagram,
                       on_tcp_message=on_datagram, on_icmp=lambda addr, reason: None,
                       on_batch_done=lambda: None, on_tcp_connect_error=lambda addr, reason: None)
    engine = QualifyEngine(GeneralConfig(), local_address=sockets.local_address_selector(None))
    holder["engine"] = engine
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", 0))
    uas.settimeout(5)
    port = uas.getsockname()[1]
    engine.load([PeerConfig(name="p", host="127.0.0.1", port=port, qualify_ms=2000, qualifyfreq_ms=60_000)],
                t0 := time.monotonic(), addresses={"p": ("127.0.0.1", port)})
    engine.handle_timer(t0)  # the first poke
    r = Rig(sockets, engine, uas, t0)
    r.flush()
    try:
        yield r
    finally:
        uas.close()
        sockets.close()


async def test_an_answer_waiting_in_the_socket_is_read_before_a_transaction_timer(rig: Rig) -> None:
    eng = rig.engine
    rig.uas_answer()
    main = next(iter(rig.sockets.endpoints.values())).sock
    rig.wait_queued(main)
    # no transaction timer due yet: nothing is read (the loop reads on its own turn)
    t0 = rig.t0
    assert rig.sockets.read_before_judging(eng, t0 + 0.5, 0) == 0
    assert eng.stats.answered == 0
    # the retransmission (1 s) is due: the answer is read first, so none is sent, nothing given up
    rig.sockets.read_before_judging(eng, t0 + 1.0, 0)
    assert eng.stats.answered == 1
    eng.handle_timer(t0 + 1.0)
    rig.flush()
    assert eng.stats.retransmissions == 0 and eng.stats.timeouts == 0
    p = eng.peer("p")
    assert p is not None and p.state == "OK"


async def test_kernel_drops_on_our_socket_make_the_give_up_inconclusive(rig: Rig) -> None:
    """The peer stays silent, and our socket's small buffer overflows with a flood: the kernel
    counts the drops (SO_MEMINFO), the shell tells the engine, the give-up at 4 s judges nothing
    and the peer is poked again."""
    eng = rig.engine
    rig.uas.recvfrom(65536)  # the poke arrives; the peer does not answer
    ep = next(iter(rig.sockets.endpoints.values()))
    ep.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(200):
            flood.sendto(b"x" * 512, ep.local)
    finally:
        flood.close()
    assert ep.rx_drops() > 0
    seen = 0
    for t in (rig.t0 + 1.0, rig.t0 + 2.0, rig.t0 + 3.0, rig.t0 + 4.0):  # retransmissions, then the give-up
        seen = rig.sockets.read_before_judging(eng, t, seen)
        eng.handle_timer(t)
        rig.flush()
    assert seen == ep.rx_drops() > 0
    assert eng.stats.inconclusive == 1 and eng.stats.timeouts == 0
    p = eng.peer("p")
    assert p is not None and p.state == "UNKNOWN"  # not judged UNREACHABLE
    assert eng.get_timer() == rig.t0 + 5.0  # poked again 1 s later
