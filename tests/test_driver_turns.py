"""Many pokes due at once (a cold start, or a loop that fell behind) go out batch after batch in
one timer turn of the event loop, for at most `CoreDriver.TURN_S`: each batch of TIMER_BATCH is
stamped when it is really sent (its RTT must not include the batches before it), what waits in
the sockets is read before a transaction timer is judged in every batch, and the loop gets the
turn back once the budget is spent (the timer re-armed at once for the rest)."""

from __future__ import annotations

import asyncio

from sipqualify.driver import CoreDriver
from sipqualify.model import GeneralConfig, PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.readmodel import Counters, TransitionFeed
from sipqualify.resultmetrics import QualifyMetrics

SEND_S = 0.0001  # each datagram takes 100 µs of the clock to send


class TimedSockets:
    """The part of SipSockets the timer path uses, on a clock that each send moves on."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes, object]] = []
        self.reads: list[float] = []  # when a read before judging found a transaction timer due

    def read_before_judging(self, engine: QualifyEngine, now: float, drops_seen: int) -> int:
        due = engine.txn_timer()
        if due is not None and due <= now:
            self.reads.append(now)
        return drops_seen

    def send(self, data: bytes, dest: object) -> None:
        self.sent.append((self.clock[0], data, dest))
        self.clock[0] += SEND_S

    def send_many(self, items: list[tuple[bytes, object]]) -> None:
        for data, dest in items:
            self.send(data, dest)

    def send_from(self, data: bytes, dest: object, local: object) -> None:
        self.send(data, dest)

    def send_on(self, data: bytes, flow: object) -> None:
        self.send(data, flow)


def _driver(n: int, clock: list[float]) -> tuple[CoreDriver, TimedSockets, QualifyEngine]:
    sockets = TimedSockets(clock)
    loop = asyncio.get_running_loop()
    driver = CoreDriver(loop, lambda: clock[0], sockets, TransitionFeed(loop), QualifyMetrics(),  # type: ignore[arg-type]
                        Counters())
    eng = QualifyEngine(GeneralConfig(), local_address=lambda dest: ("127.0.0.1", 5060))
    driver.engine = eng
    peers = [PeerConfig(name=f"p{i:03d}", host="127.0.0.1", port=20000 + i, qualify_ms=2000,
                        qualifyfreq_ms=60_000) for i in range(n)]
    eng.load(peers, clock[0], addresses={c.name: ("127.0.0.1", 20000 + i) for i, c in enumerate(peers)})
    clock[0] = max(when for when, _, _ in eng._pokes.heap)  # every first poke is due (none late enough to report)
    return driver, sockets, eng


async def test_a_turn_sends_batch_after_batch_each_stamped_when_sent() -> None:
    clock = [100.0]
    driver, sockets, eng = _driver(100, clock)
    start = clock[0]
    driver._on_timer()
    stamps = [at for at, _, _ in sockets.sent[::driver.TIMER_BATCH]]
    assert len(sockets.sent) == len(stamps) * driver.TIMER_BATCH < 100  # whole batches, and not all of them
    assert len(stamps) > 1 and all(at < start + driver.TURN_S for at in stamps)  # started within the budget ...
    assert clock[0] >= start + driver.TURN_S  # ... and the turn ended once it was spent
    # every poke's RTT clock starts when its own batch was stamped, after the batches before it went out
    for i, (sent_at, _, dest) in enumerate(sockets.sent):
        batch_start = sockets.sent[i - i % driver.TIMER_BATCH][0]  # when its batch's first datagram left
        p = eng.peer(f"p{int(dest[1]) - 20000:03d}")  # type: ignore[index]
        assert p is not None and p.txn is not None
        assert p.txn.first_sent == batch_start
        assert sent_at >= p.txn.first_sent
    assert stamps[0] == start and stamps == sorted(set(stamps))  # one stamp per batch, each later than the last
    # the loop got the turn back with the rest still due: the timer is re-armed for now
    assert driver._timer_at is not None and driver._timer_at <= clock[0]
    driver.close()


async def test_a_turn_ends_when_nothing_more_is_due() -> None:
    clock = [100.0]
    driver, sockets, eng = _driver(3, clock)
    driver._on_timer()
    assert len(sockets.sent) == 3  # all of them, in one batch, and the turn ended there
    assert driver._timer_at is not None and driver._timer_at > clock[0]  # the next due is a retransmission
    driver.close()


async def test_what_arrived_is_read_before_each_batch_with_a_transaction_timer_due() -> None:
    clock = [100.0]
    driver, sockets, eng = _driver(40, clock)
    start = clock[0]
    driver._on_timer()  # the first turn: pokes sent, nothing answered
    assert len(sockets.sent) < 40  # the rest of the pokes wait for the next turn
    due = eng.txn_timer()
    assert due is not None and due > start
    clock[0] = due  # the first pokes' retransmission timer is due now, and the rest of the pokes
    driver._on_timer()
    # the retransmissions run in this turn's batches, each batch after a read of the sockets
    assert sockets.reads and sockets.reads[0] == due
    assert len(sockets.reads) >= 2
    driver.close()
