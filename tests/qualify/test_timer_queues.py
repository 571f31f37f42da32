"""The engine's timer queues (qualify/timers.py, used by qualify/engine.py): transaction timers
(`_arm_txn`) and re-polls (`_schedule_poke` with `now`) armed at a fixed delay wait in FIFO queues,
the others in a heap, and they are taken exactly in the order one heap of (when, seq) would
give, whatever the delays, their number, ties and re-arms."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as hs

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import POKE_FIFOS, TXN_FIFOS, Peer, QualifyEngine
from sipqualify.sip.transaction import ClientTransaction

DELAYS = [0.5, 0.5, 0.5, 1.0, 2.0, 4.0, 0.25, 3.3, 0.001, 0.0]


def drain(engine: QualifyEngine) -> list[tuple[float, int]]:
    out = []
    while True:
        e, src = engine._txn_timers.first()
        if e is None:
            return out
        engine._txn_timers.pop(src)
        out.append((e[0], e[1]))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(steps=hs.lists(hs.tuples(hs.sampled_from([0.0, 0.25, 0.5, 0.125, 0.3]), hs.integers(0, 40), hs.booleans()),
                      min_size=1, max_size=200))
def test_timers_come_out_in_one_heaps_order(steps: list[tuple[float, int, bool]]) -> None:
    engine = QualifyEngine(local_address=lambda a: ("127.0.0.1", 5060))
    reference: list[tuple[float, int]] = []
    now = 100.0
    rng = random.Random(len(steps))
    for advance, pick, reliable in steps:
        now += advance  # the engine's clock never goes back; mostly on a binary grid: equal wakes, ties
        txn = ClientTransaction("z9hG4bK" + "0" * 16, b"OPTIONS", ("127.0.0.1", 5060), reliable=reliable)
        delay = DELAYS[pick % len(DELAYS)] if pick < 30 else rng.uniform(0, 5)  # regular ones, and odd ones
        txn.giveup_at = now + delay
        engine._arm_txn(txn, now)
        assert txn.wake is not None
        seq = next(iter(e[1] for q in engine._txn_timers.queues for e in q if e[2] is txn), None)
        if seq is None:
            seq = next(e[1] for e in engine._txn_timers.heap if e[2] is txn)
        heapq.heappush(reference, (txn.wake, seq))
    assert len(engine._txn_timers.queues) <= TXN_FIFOS
    assert drain(engine) == [heapq.heappop(reference) for _ in range(len(reference))]


def test_regular_timers_skip_the_heap() -> None:
    """One delay for every poke (the first retransmission's): every timer in its queue, none in the heap."""
    engine = QualifyEngine(local_address=lambda a: ("127.0.0.1", 5060))
    first = None
    for i in range(1000):
        now = 10.0 + i * 0.0001
        txn = ClientTransaction(f"z9hG4bK{i:016x}", b"OPTIONS", ("127.0.0.1", 5060))
        txn.start(now)  # UDP: the first retransmission's timer
        txn.giveup_at = now + 5.0
        engine._arm_txn(txn, now)
        first = first or txn.next_timer
    assert not engine._txn_timers.heap and sum(len(q) for q in engine._txn_timers.queues) == 1000
    assert first is not None and engine.txn_timer() == first


def test_a_timer_due_before_the_last_of_its_queue_goes_to_the_heap() -> None:
    """Delays are classed by the millisecond: 1.2344 s and then 1.2336 s share a queue's class,
    but the second is due first, so it waits in the heap and comes out first."""
    engine = QualifyEngine(local_address=lambda a: ("127.0.0.1", 5060))
    txns = []
    for delay in (1.2344, 1.2336):
        txn = ClientTransaction("z9hG4bK" + "1" * 16, b"OPTIONS", ("127.0.0.1", 5060))
        txn.giveup_at = 50.0 + delay
        engine._arm_txn(txn, 50.0)
        txns.append(txn)
    assert len(engine._txn_timers.heap) == 1
    assert [w for w, _ in drain(engine)] == [50.0 + 1.2336, 50.0 + 1.2344]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(steps=hs.lists(hs.tuples(hs.sampled_from([0.0, 0.25, 0.5, 0.125, 0.3]), hs.integers(0, 40), hs.booleans()),
                      min_size=1, max_size=200))
def test_pokes_come_out_in_one_heaps_order(steps: list[tuple[float, int, bool]]) -> None:
    """Re-polls (with `now`) and other pokes (without: the start-up stagger, a forced poke) mixed;
    a peer re-scheduled leaves a dead entry behind (lazy deletion), skipped as before."""
    engine = QualifyEngine(local_address=lambda a: ("127.0.0.1", 5060))
    peers = [Peer(PeerConfig(name=f"p{i}", host="127.0.0.1", qualify_ms=2000)) for i in range(12)]
    live: dict[str, float] = {}
    now = 100.0
    rng = random.Random(len(steps))
    for advance, pick, repoll in steps:
        now += advance
        p = peers[pick % len(peers)]
        delay = DELAYS[pick % len(DELAYS)] if pick < 30 else rng.uniform(0, 5)
        engine._schedule_poke(p, now + delay, now if repoll else None)
        live[p.name] = now + delay
    assert len(engine._pokes.queues) <= POKE_FIFOS
    order: list[tuple[float, str]] = []
    while (t := engine.get_timer()) is not None:
        e, src = engine._pokes.first()
        assert e is not None and e[0] == t
        engine._pokes.pop(src)
        order.append((e[0], e[2].name))
    # each peer once (its last schedule: the others are dead), by time, then by when it was scheduled
    gen = {p.name: p.poke_gen for p in peers}  # the key of each peer's live entry: its push order
    assert [n for _, n in order] == [n for n, _ in sorted(live.items(), key=lambda kv: (kv[1], gen[kv[0]]))]
    assert [w for w, _ in order] == sorted(live.values())


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ops=hs.lists(hs.tuples(hs.integers(0, 9), hs.sampled_from([0.0, 0.001, 0.002, 0.25, 0.5, 1.0, 3.3]),
                              hs.sampled_from([0.0, 0.0005, 0.001, 0.25])), min_size=1, max_size=300),
       fifos=hs.integers(0, 3))
def test_first_is_right_whatever_comes_between(ops: list[tuple[int, float, float]], fifos: int) -> None:
    """first() keeps its answer between pops: pushes to the heap, to a queue's head or behind it,
    and pops from either, in any order, still give one heap's order at every step."""
    from sipqualify.qualify.timers import TimerQueues

    tq: TimerQueues[int] = TimerQueues(fifos)
    reference: list[tuple[float, int, int]] = []
    now, seq = 10.0, 0
    for op, delay, advance in ops:
        now += advance
        if op < 5:  # push: at a fixed delay from now (a queue, maybe), or to the heap
            seq += 1
            entry = (now + delay, seq, seq)
            tq.push(entry, now if op < 4 else None)
            heapq.heappush(reference, entry)
        e, src = tq.first()
        assert e == (reference[0] if reference else None)
        if op >= 7 and e is not None:
            tq.pop(src)
            heapq.heappop(reference)
    while reference:
        e, src = tq.first()
        assert e == heapq.heappop(reference)
        tq.pop(src)
    assert tq.first() == (None, -2)
