"""A poke's RTT starts when it is really sent: the driver reads what waits in its sockets
before running due transaction timers (README "Overload"), and under load that read can take
long (up to 64 batches of answers, each judged); the pokes it sends next must be stamped
after it, or their RTTs include it: a false LAGGED when it passes maxms."""

from __future__ import annotations

import asyncio

from sipqualify.driver import CoreDriver
from sipqualify.model import GeneralConfig, PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.readmodel import Counters, TransitionFeed
from sipqualify.resultmetrics import QualifyMetrics

from .qualify.sim import answer

A = ("127.0.0.1", 15073)


class SlowSockets:
    """The part of SipSockets the timer path uses; reading what waits takes `drain_s` of the clock."""

    def __init__(self, clock: list[float], drain_s: float) -> None:
        self.clock, self.drain_s = clock, drain_s
        self.sent: list[tuple[float, bytes]] = []

    def read_before_judging(self, engine: QualifyEngine, now: float, drops_seen: int) -> int:
        self.clock[0] += self.drain_s  # thousands of answers waited, were read and judged
        return drops_seen

    def send(self, data: bytes, dest: object) -> None:
        self.sent.append((self.clock[0], data))

    def send_many(self, items: list[tuple[bytes, object]]) -> None:
        for data, dest in items:
            self.send(data, dest)

    def send_from(self, data: bytes, dest: object, local: object) -> None:
        self.send(data, dest)

    def send_on(self, data: bytes, flow: object) -> None:
        self.send(data, flow)


async def test_pokes_are_stamped_after_the_read_before_judging() -> None:
    clock = [100.0]
    sockets = SlowSockets(clock, drain_s=2.5)
    loop = asyncio.get_running_loop()
    driver = CoreDriver(loop, lambda: clock[0], sockets, TransitionFeed(loop), QualifyMetrics(),  # type: ignore[arg-type]
                        Counters())
    eng = QualifyEngine(GeneralConfig(), local_address=lambda dest: ("127.0.0.1", 5060))
    driver.engine = eng
    eng.load([PeerConfig(name="p", host=A[0], port=A[1], qualify_ms=2000, qualifyfreq_ms=60_000)], 100.0,
             addresses={"p": A})
    p = eng.peer("p")
    assert p is not None and p.txn is None
    due = eng.get_timer()
    assert due is not None
    clock[0] = fired = due
    driver._on_timer()  # the poke is due; the read before it takes 2.5 s
    assert p.txn is not None
    assert p.txn.first_sent == fired + 2.5  # stamped after the read, not when the timer fired
    [(sent_at, req)] = sockets.sent
    assert sent_at == p.txn.first_sent
    # answered 3 ms after it really left: OK (3 ms), not LAGGED (2503 ms)
    clock[0] += 0.003
    eng.receive_datagram(answer(req), A, clock[0])
    assert p.status == "OK (3 ms)"
    if driver._timer is not None:
        driver._timer.cancel()
