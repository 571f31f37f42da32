"""A completed UDP poke lingers T4 (Timer K) with only what matching still reads: its request's
bytes are dropped (memory: ≈ 450 B for each of the ≈ 83,000 pokes lingering at 16,700/s), and
what arrives for it during the linger is judged exactly as before."""

from __future__ import annotations

import pytest

from sipqualify.sip.transaction import COMPLETED

from .sim import answer, build, peer, silent

A = ("127.0.0.1", 15071)


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
    txn = sim.engine._txns[branch]
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
    assert branch not in sim.engine._txns
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
    lingering = [t for t in sim.engine._txns.values() if t.state == COMPLETED]
    assert len(lingering) == 2 and all(t.request == b"OPTIONS " for t in lingering)
    assert all(t.dest == CARRIER for t in lingering)
