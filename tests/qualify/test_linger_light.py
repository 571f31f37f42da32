"""A completed UDP poke lingers T4 (Timer K) with only what matching still reads: its request's
bytes are dropped (memory: ≈ 450 B for each of the ≈ 83,000 pokes lingering at 16,700/s), and
what arrives for it during the linger is judged exactly as before."""

from __future__ import annotations

import pytest

from sipqualify.qualify.engine import LINGER_S, LINGER_TICK_S, QualifyEngine
from sipqualify.sip.transaction import COMPLETED, ClientTransaction

from .sim import answer, build, peer, silent

A = ("127.0.0.1", 15071)
B = ("127.0.0.1", 15072)


def lingering(engine: QualifyEngine) -> dict[str, ClientTransaction]:
    return {b: t for _, gen in engine._lingering for b, t in gen.items()}


def slow_path(resp: bytes) -> bytes:
    """The same answer in a shape the bytes-level fast path declines (folded header line):
    the full parser and receive_response judge it."""
    return resp.replace(b"Content-Length: 0\r\n", b"X-Folded: a\r\n b\r\nContent-Length: 0\r\n")


@pytest.mark.parametrize("method", ["OPTIONS", "INFO", "NOTIFY"])
@pytest.mark.parametrize("shape", [lambda r: r, slow_path], ids=["fast", "parsed"])
def test_lingering_poke_keeps_only_its_method(method: str, shape) -> None:  # type: ignore[no-untyped-def]
    sim = build([peer("p", A[1], 2000, freq_s=60, qualify_method=method)], {A: silent})
    req = sim.sent[0][2]
    assert req.startswith(method.encode() + b" ")
    branch = [b for b, t in sim.engine._txns.items()][0]
    sim.now = 0.004
    sim.deliver(shape(answer(req)), A)
    assert sim.engine.peer("p").status == "OK (4 ms)"  # type: ignore[union-attr]
    assert branch not in sim.engine._txns  # out of the transactions in flight, lingering
    txn = lingering(sim.engine)[branch]
    assert txn.state == COMPLETED and txn.request == method.encode() + b" "  # the bytes are gone
    # a retransmitted final answer during the linger: counted as such, nothing changes
    sim.deliver(shape(answer(req)), A)
    assert sim.engine.stats.retransmitted_responses == 1
    # the same branch and Call-ID with another method in CSeq: still a mismatch
    other = b"INFO" if method != "INFO" else b"OPTIONS"
    sim.deliver(shape(answer(req)).replace(b"CSeq: 102 " + method.encode(), b"CSeq: 102 " + other), A)
    assert sim.engine.stats.mismatched_responses == 1
    assert sim.engine.stats.retransmitted_responses == 1
    assert sim.engine.peer("p").status == "OK (4 ms)"  # type: ignore[union-attr]
    # and once T4 has passed (expired when the next poke's answer lingers), a late copy is a stray
    sim.responders[A] = lambda r, t: [(0.004, answer(r))]
    sim.run_until(61.0)
    assert branch not in sim.engine._txns and branch not in lingering(sim.engine)
    sim.deliver(shape(answer(req)), A)
    assert sim.engine.stats.stray_responses == 1


def test_challenge_then_answer_lingers_light() -> None:
    """A 401 answered with credentials (qualify_auth): the retry is built from the challenged
    poke's bytes before they are dropped, and the retry's 200 completes the poll."""
    from .test_auth import A as CARRIER
    from .test_auth import Carrier, run

    c = Carrier()
    sim = run(c, until=1.0)
    assert c.results == ["ok"]  # the authenticated retry was verified by the carrier
    assert sim.engine.peer("p").status == "OK (5 ms)"  # type: ignore[union-attr]
    done = list(lingering(sim.engine).values())
    assert len(done) == 2 and all(t.request == b"OPTIONS " and t.state == COMPLETED for t in done)
    assert all(t.dest == CARRIER for t in done)


@pytest.mark.parametrize("shape", [lambda r: r, slow_path], ids=["fast", "parsed"])
@pytest.mark.parametrize("completed_at", [0.2, 0.5, 1.003])
def test_timer_k_absorbs_for_t4_and_at_most_one_tick_more(shape, completed_at: float) -> None:  # type: ignore[no-untyped-def]
    """Completed pokes linger in generations of LINGER_TICK_S, each dropped whole: whenever in a
    generation a poke completed (q opens it at 4 ms; p completes later in it, or first in the next), a
    retransmitted answer is absorbed until T4 after it, and none later than T4 + LINGER_TICK_S."""
    sim = build([peer("q", A[1], 2000, freq_s=60), peer("p", B[1], 2000, freq_s=60)], {A: silent, B: silent})
    sim.now = 0.004
    sim.deliver(shape(answer(sim.sent[0][2])), A)
    sim.run_until(0.2)  # p's first poke goes 100 ms after q's (chan_sip's spread)
    first = {dest: data for _t, dest, data in sim.sent}
    sim.now = completed_at
    sim.deliver(shape(answer(first[B])), B)
    assert sim.engine.peer("p").status.startswith("OK")  # type: ignore[union-attr]
    sim.now = completed_at + LINGER_S - 0.001
    sim.deliver(shape(answer(first[B])), B)
    assert sim.engine.stats.retransmitted_responses == 1 and sim.engine.stats.stray_responses == 0
    sim.now = completed_at + LINGER_S + LINGER_TICK_S
    sim.deliver(shape(answer(first[B])), B)
    assert sim.engine.stats.retransmitted_responses == 1 and sim.engine.stats.stray_responses == 1
