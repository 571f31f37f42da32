"""Non-INVITE server transactions: retransmissions absorbed or answered again, for Timer J."""

from __future__ import annotations

from sipqualify.sip.message import parse_message
from sipqualify.sip.server_txn import PENDING, TIMER_J, ServerTransactions

SRC = ("192.0.2.7", 5060)


def req(branch: str = "z9hG4bKabc", cseq: int = 1, via_host: str = "192.0.2.7", tag: str = "t") -> bytes:
    return (f"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP {via_host}:5060;branch={branch}\r\n"
            f"From: <sip:a@pbx>;tag={tag}\r\nTo: <sip:a@pbx>\r\nCall-ID: c1\r\nCSeq: {cseq} REGISTER\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def test_trying_then_completed_then_expired() -> None:
    st = ServerTransactions()
    k = st.key(parse_message(req()), SRC)  # type: ignore[arg-type]
    assert st.lookup(k, 0.0) is None  # new
    assert st.lookup(k, 0.1) is PENDING  # retransmission while Trying
    st.answered(k, b"SIP/2.0 200 OK")
    assert st.lookup(k, 1.0) == b"SIP/2.0 200 OK"  # Completed: the same answer
    assert (st.absorbed, st.resent) == (1, 1)
    assert st.lookup(k, TIMER_J + 0.01) is None  # after Timer J: a new request again


def test_keys_tell_transactions_apart() -> None:
    st = ServerTransactions()
    a = st.key(parse_message(req()), SRC)  # type: ignore[arg-type]
    assert a == st.key(parse_message(req()), SRC)  # type: ignore[arg-type]
    assert a != st.key(parse_message(req(branch="z9hG4bKother")), SRC)  # type: ignore[arg-type]
    assert a != st.key(parse_message(req(via_host="192.0.2.8")), SRC)  # type: ignore[arg-type]
    # RFC 2543 client (no magic cookie): Call-ID, From tag, CSeq and the source address
    old = st.key(parse_message(req(branch="1")), SRC)  # type: ignore[arg-type]
    assert old == ("c1", "t", 1, "REGISTER", SRC)
    assert old != st.key(parse_message(req(branch="1", cseq=2)), SRC)  # type: ignore[arg-type]
    assert old != st.key(parse_message(req(branch="1")), ("192.0.2.9", 5060))  # type: ignore[arg-type]


def test_table_is_bounded() -> None:
    st = ServerTransactions(max_entries=100)
    for i in range(1000):
        st.lookup(("k", i), 0.0)
    assert len(st) == 100
    assert st.lookup(("k", 999), 0.0) is PENDING and st.lookup(("k", 0), 0.0) is None
