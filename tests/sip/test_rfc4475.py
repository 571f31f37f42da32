"""RFC 4475 torture messages: valid ones parse, invalid ones give a specific SipParseError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sipqualify.sip.message import Request, Response, SipParseError, parse_message

# the RFC's own messages, kept in the repository (origin in tests/data/rfc4475/INDEX.md)
CORPUS = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

VALID_3_1_1 = "wsinv intmeth esc01 escnull esc02 lwsdisp longreq dblreq semiuri transports mpart01 unreason noreason"
INVALID_3_1_2 = ("badinv01 clerr ncl scalar02 scalarlg quotbal ltgtruri lwsruri lwsstart trws escruri "
                 "mismatch01 mismatch02 bigcode badvers")
# RFC 4475 §3.1.2 says a lenient parser may accept these and repair them; we accept them
# (they do not affect qualify): baddate (EST instead of GMT, Date is not interpreted),
# regbadct (Contact addr-spec with URI headers), badaspec (spaces inside <...>),
# baddn (unquoted display name with a comma).
LENIENT_3_1_2 = "baddate regbadct badaspec baddn"
TRANSACTION_3_2 = "badbranch"
APPLICATION_3_3 = ("insuf unkscm novelsc unksm2 bext01 invut regaut01 multi01 mcl01 bcast zeromf cparam01 "
                   "cparam02 regescrt sdp01")
BACKWARD_3_4 = "inv2543"


def load(name: str) -> bytes:
    path = CORPUS / f"{name}.dat"
    if not path.exists():
        pytest.fail(f"RFC 4475 corpus file missing: {path}")
    return path.read_bytes()


@pytest.mark.parametrize("name", (VALID_3_1_1 + " " + APPLICATION_3_3 + " " + BACKWARD_3_4 + " " +
                                  TRANSACTION_3_2 + " " + LENIENT_3_1_2).split())
def test_rfc4475_parses(name: str) -> None:
    """RFC 4475 §3.1.1, §3.2, §3.3, §3.4: these must parse."""
    msg = parse_message(load(name))
    assert isinstance(msg, (Request, Response))
    assert msg.call_id or msg.defects


def test_application_layer_defects_are_reported() -> None:
    """§3.3.1 insuf and §3.3.9 mcl01 parse, and say what the receiver must answer 400 for."""
    assert "missing mandatory header Call-ID" in parse_message(load("insuf")).defects
    assert any("Content-Length" in d for d in parse_message(load("mcl01")).defects)
    assert parse_message(load("esc01")).defects == []


@pytest.mark.parametrize("name", INVALID_3_1_2.split())
def test_rfc4475_invalid_rejected_with_reason(name: str) -> None:
    """RFC 4475 §3.1.2: invalid messages are rejected with a specific reason."""
    with pytest.raises(SipParseError) as e:
        parse_message(load(name))
    assert len(e.value.reason) > 10


def test_wsinv_whitespace_and_folding() -> None:
    """§3.1.1.1: LWS everywhere, folded headers, compact forms, multiple Via in one header."""
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, Request) and msg.method == "INVITE"
    assert msg.cseq == (9, "INVITE")
    assert msg.headers.get("Max-Forwards") == "0068"
    vias = msg.headers.get_all("Via")
    assert len(vias) == 3
    assert msg.top_via is not None and msg.top_via.host == "192.0.2.2" and msg.top_via.branch == "390skdjuw"
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert len(msg.body) == 150


def test_intmeth_unusual_method_and_escapes() -> None:
    msg = parse_message(load("intmeth"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq[1] == msg.method


def test_dblreq_takes_first_message() -> None:
    """§3.1.1.8: extra octets after Content-Length are not part of the message."""
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""


def test_noreason_and_unreason() -> None:
    r = parse_message(load("noreason"))
    assert isinstance(r, Response) and r.status == 100 and r.reason == ""
    u = parse_message(load("unreason"))
    assert isinstance(u, Response) and u.status == 200 and len(u.reason) > 10


def test_transports_vias() -> None:
    msg = parse_message(load("transports"))
    assert [v.split("/")[2].split()[0] for v in msg.headers.get_all("Via")] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_every_corpus_file_is_classified() -> None:
    names = {p.stem for p in CORPUS.glob("*.dat")} - {"test"}
    listed = set((VALID_3_1_1 + " " + INVALID_3_1_2 + " " + LENIENT_3_1_2 + " " + TRANSACTION_3_2 + " " +
                  APPLICATION_3_3 + " " + BACKWARD_3_4).split())
    assert names == listed, names ^ listed


@pytest.mark.parametrize("name", sorted(p.stem for p in CORPUS.glob("*.dat")))
def test_every_prefix_fails_cleanly(name: str) -> None:
    """Truncation at every length: only SipParseError, never anything else."""
    data = load(name)
    step = max(1, len(data) // 200)
    for n in range(0, len(data), step):
        try:
            parse_message(data[:n])
        except SipParseError:
            pass


def test_oversize_and_junk() -> None:
    with pytest.raises(SipParseError):
        parse_message(b"SIP/2.0 200 OK\r\n" + b"X-A: b\r\n" * 10000 + b"\r\n")
    with pytest.raises(SipParseError):
        parse_message(os.urandom(70000))
    with pytest.raises(SipParseError):
        parse_message(b"\x00\x01\x02\r\n\r\n")
