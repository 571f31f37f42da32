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
    w.sockets.send = lambda data, dest: sent.append((clock[0], dest))  # type: ignore[method-assign]

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
