"""Non-INVITE client transaction timers (RFC 3261 §17.1.2) and the chan_sip flat policy."""

from __future__ import annotations

from sipqualify.sip.transaction import (
    ASTERISK,
    FINAL,
    PROVISIONAL,
    RETRANSMIT,
    RETRANSMITTED,
    RFC3261,
    TIMEOUT,
    ClientTransaction,
)


def run(txn: ClientTransaction, until: float) -> list[float]:
    sends = [0.0]
    txn.start(0.0)
    while txn.next_timer is not None and txn.next_timer <= until:
        t = txn.next_timer
        r = txn.on_timer(t)
        if r == RETRANSMIT:
            sends.append(round(t, 3))
        elif r == TIMEOUT:
            sends.append(-round(t, 3))
    return sends


def test_asterisk_policy_flat_1000ms_until_32s() -> None:
    """asterisk-observed.md §0.1: +1000, +2000, +3000 ... never doubled; 64xT1 stop."""
    sends = run(ClientTransaction("b", b"x", ("h", 1), policy=ASTERISK), 40)
    assert sends[:5] == [0, 1, 2, 3, 4]
    assert sends[-1] == -32.0 and len(sends) == 33  # 32 transmissions then Timer F (observed: 31 retx)


def test_rfc3261_timer_e_doubles_to_t2_and_timer_f() -> None:
    """§17.1.2.2: Timer E = T1, doubling to T2 (4 s); Timer F = 64*T1 = 32 s."""
    sends = run(ClientTransaction("b", b"x", ("h", 1), policy=RFC3261), 40)
    assert sends[:8] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5]
    assert sends[-1] == -32.0


def test_rfc3261_proceeding_uses_t2() -> None:
    """§17.1.2.2: after a provisional response, retransmit at T2 intervals."""
    txn = ClientTransaction("b", b"x", ("h", 1), policy=RFC3261)
    txn.start(0.0)
    assert txn.on_timer(0.5) == RETRANSMIT  # next at 1.5
    assert txn.on_response(100, 0.6) == PROVISIONAL
    assert txn.on_timer(1.5) == RETRANSMIT
    assert txn.next_timer == 5.5  # 1.5 + T2


def test_asterisk_policy_1xx_does_not_slow_retransmission() -> None:
    txn = ClientTransaction("b", b"x", ("h", 1), policy=ASTERISK)
    txn.start(0.0)
    assert txn.on_response(100, 0.1) == PROVISIONAL
    assert txn.on_timer(1.0) == RETRANSMIT and txn.next_timer == 2.0


def test_final_response_completes_and_timer_k_absorbs_retransmissions() -> None:
    """§17.1.2.2: Completed on a final response; Timer K = T4 on UDP, then Terminated."""
    txn = ClientTransaction("b", b"x", ("h", 1), policy=RFC3261)
    txn.start(0.0)
    assert txn.on_response(404, 0.2) == FINAL and txn.status == 404
    assert txn.on_response(404, 0.3) == RETRANSMITTED
    assert txn.next_timer == 5.2
    assert txn.on_timer(5.2) is None and txn.state == "Terminated"


def test_reliable_transport_never_retransmits() -> None:
    """§17.1.2.2: Timer E only on unreliable transports; Timer K = 0 on reliable ones."""
    for policy in (ASTERISK, RFC3261):
        txn = ClientTransaction("b", b"x", ("h", 1), policy=policy, reliable=True)
        assert run(txn, 40) == [0, -32.0]
        txn2 = ClientTransaction("b", b"x", ("h", 1), policy=policy, reliable=True)
        txn2.start(0)
        assert txn2.on_response(200, 0.1) == FINAL and txn2.state == "Terminated"
