"""A worker's pokes are stamped after the read that precedes its due transaction timers, as
in one process (tests/test_driver_stamps.py): that read can take long under load, and an RTT
that included it would be a false LAGGED once it passed maxms."""

from __future__ import annotations

from typing import Any

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.workers import worker as wk

from .test_worker_backpressure import Writer


async def test_a_worker_stamps_its_pokes_after_the_read() -> None:
    writer = Writer()
    w = wk.Worker(writer, 0)  # type: ignore[arg-type]
    clock = [500.0]
    w.clock = lambda: clock[0]  # type: ignore[method-assign]
    sent: list[tuple[float, Any]] = []
    w.sockets.send_many = lambda items: sent.extend((clock[0], dest) for _, dest in items)  # type: ignore[method-assign]

    def slow_read(engine: QualifyEngine, now: float, drops_seen: int) -> int:
        clock[0] += 2.5  # thousands of answers waited, were read and judged
        return drops_seen

    w.sockets.read_before_judging = slow_read  # type: ignore[method-assign]
    eng = w.engine = QualifyEngine(local_address=lambda dest: ("127.0.0.1", 5060))
    eng.load([PeerConfig(name="a", host="127.0.0.1", port=5999, qualify_ms=2000)], 499.0,
             addresses={"a": ("127.0.0.1", 5999)})
    due = eng.get_timer()
    assert due is not None
    clock[0] = due
    w._on_timer()
    p = eng.peer("a")
    assert p is not None and p.txn is not None
    assert p.txn.first_sent == due + 2.5  # after the read, not when the timer fired
    assert sent == [(due + 2.5, ("127.0.0.1", 5999))]
    w.close()


async def test_a_worker_sends_batch_after_batch_in_one_turn() -> None:
    """As tests/test_driver_turns.py: many pokes due go out in batches of TIMER_BATCH, each
    stamped when it is sent, for at most TURN_S of one loop turn."""
    writer = Writer()
    w = wk.Worker(writer, 0)  # type: ignore[arg-type]
    clock = [500.0]
    w.clock = lambda: clock[0]  # type: ignore[method-assign]
    sent: list[tuple[float, Any]] = []

    def send(data: bytes, dest: Any) -> None:
        sent.append((clock[0], dest))
        clock[0] += 0.0001  # 100 µs a datagram

    w.sockets.send_many = lambda items: [send(data, dest) for data, dest in items]  # type: ignore[method-assign]
    w.sockets.read_before_judging = lambda engine, now, drops_seen: drops_seen  # type: ignore[method-assign]
    eng = w.engine = QualifyEngine(local_address=lambda dest: ("127.0.0.1", 5060))
    eng.load([PeerConfig(name=f"p{i}", host="127.0.0.1", port=6000 + i, qualify_ms=2000) for i in range(60)], 499.0,
             addresses={f"p{i}": ("127.0.0.1", 6000 + i) for i in range(60)})
    clock[0] = start = max(when for when, _, _ in eng._pokes.heap)  # every first poke is due
    w._on_timer()
    stamps = [at for at, _ in sent[::wk.TIMER_BATCH]]
    assert len(sent) == len(stamps) * wk.TIMER_BATCH < 60  # whole batches, and not all of them
    assert all(at < start + wk.TURN_S for at in stamps)  # a batch starts only within the budget ...
    assert clock[0] >= start + wk.TURN_S  # ... and the turn ended once it was spent
    for i, (_, dest) in enumerate(sent):
        p = eng.peer(f"p{dest[1] - 6000}")
        assert p is not None and p.txn is not None
        assert p.txn.first_sent == sent[i - i % wk.TIMER_BATCH][0]  # its batch's own stamp
    assert sent[0][0] == start and w._timer_at is not None and w._timer_at <= clock[0]  # the rest: at once
    w.close()
