"""URIs (RFC 3261 §19.1, RFC 3966), name-addr, Via, responses (§8.2.6, RFC 3581), stream framing (§18.3)."""

from __future__ import annotations

import pytest

from sipqualify.sip.framing import StreamFramer
from sipqualify.sip.message import Request, SipParseError, make_response, parse_message, parse_via
from sipqualify.sip.uri import SipUri, TelUri, parse_name_addr, parse_uri


def test_sip_uri_full() -> None:
    u = parse_uri("sips:alice:pw@[2001:db8::10]:5071;transport=tcp;lr;maddr=10.0.0.1?subject=hi&x=y")
    assert isinstance(u, SipUri)
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "pw", "2001:db8::10", 5071)
    assert u.params == {"transport": "tcp", "lr": None, "maddr": "10.0.0.1"}
    assert u.headers == {"subject": "hi", "x": "y"}
    assert str(u) == "sips:alice:pw@[2001:db8::10]:5071;transport=tcp;lr;maddr=10.0.0.1?subject=hi&x=y"


def test_escapes_and_tel() -> None:
    u = parse_uri("sip:%61lice@example.com")
    assert isinstance(u, SipUri) and u.user == "%61lice"
    with pytest.raises(SipParseError):
        parse_uri("sip:bad%zzuser@example.com")
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(t, TelUri) and t.number == "+1-201-555-0123"


@pytest.mark.parametrize("bad", ["sip:", "sip:user@", "sip:host:99999", "sip:ho st", "sip:[::1", "http//x",
                                 "sip:a@b@c"])
def test_bad_uris(bad: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(bad)


def test_name_addr_quoted_display_with_escapes() -> None:
    assert parse_name_addr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8') == (
        'J Rosenberg \\"', "sip:jdrosen@example.com", {"tag": "98asjd8"})
    assert parse_name_addr("sip:a@b;tag=1") == (None, "sip:a@b", {"tag": "1"})
    with pytest.raises(SipParseError):
        parse_name_addr('"unbalanced <sip:a@b>')


def test_via_forms() -> None:
    v = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport;received=10.0.0.1")
    assert (v.transport, v.host, v.port, v.branch, v.wants_rport) == ("UDP", "192.0.2.1", 5060, "z9hG4bKabc", True)
    w = parse_via("SIP  /  2.0 / tcp   [2001:db8::1] : 5061 ; branch = z9hG4bKx")
    assert (w.transport, w.host, w.port, w.branch) == ("TCP", "2001:db8::1", 5061, "z9hG4bKx")
    for bad in ("SIP/2.0/UDP", "SIP/3.0/UDP h", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h;branch="):
        with pytest.raises(SipParseError):
            parse_via(bad)


REQ = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
       b"v: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKq;rport\r\n"
       b"v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKr\r\n"
       b"f: <sip:a@192.0.2.9>;tag=1\r\nt: <sip:127.0.0.1>\r\ni: call-1\r\nCSeq: 7 OPTIONS\r\n"
       b"Max-Forwards: 70\r\nl: 0\r\n\r\n")


def test_compact_forms_and_make_response_rfc3581() -> None:
    req = parse_message(REQ)
    assert isinstance(req, Request) and req.call_id == "call-1" and req.cseq == (7, "OPTIONS")
    resp = make_response(req, 200, "OK", received=("203.0.113.5", 40000), to_tag="xyz",
                         extra=[("Allow", "OPTIONS")])
    data = resp.to_bytes()
    assert b"Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKq;rport=40000;received=203.0.113.5\r\n" in data
    assert b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKr\r\n" in data
    assert b"To: <sip:127.0.0.1>;tag=xyz\r\n" in data
    again = parse_message(data)
    assert again.cseq == (7, "OPTIONS") and again.headers.get_all("Via")[1].endswith("z9hG4bKr")


def test_round_trip() -> None:
    req = parse_message(REQ)
    assert parse_message(req.to_bytes()).headers == req.headers


def test_stream_framer_every_split_and_pings() -> None:
    msg = parse_message(REQ).to_bytes()
    stream = b"\r\n\r\n" + msg + msg + b"\r\n\r\n"
    for cut in range(len(stream)):
        f = StreamFramer()
        out = f.feed(stream[:cut]) + f.feed(stream[cut:])
        assert out == [msg, msg], cut
        assert f.pings == 2
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n")


def test_stream_framer_pongs_rfc5626_4_4_1() -> None:
    """A single CRLF is a pong: before a message it is counted at once; alone at the end of what
    came it may still be half a ping, and `take_pong()` settles it as a pong."""
    msg = parse_message(REQ).to_bytes()
    for cut in range(len(msg) + 2):
        f = StreamFramer()
        stream = b"\r\n" + msg
        assert f.feed(stream[:cut]) + f.feed(stream[cut:]) == [msg], cut
        assert (f.pongs, f.pings) == (1, 0), cut
    f = StreamFramer()
    assert f.feed(b"\r\n") == [] and f.pongs == 0
    assert f.take_pong() and f.pongs == 1 and not f.take_pong()
    assert f.feed(b"\r\n") == [] and f.feed(b"\r\n") == [] and f.pings == 1  # two halves: a ping
    assert not f.take_pong() and f.pongs == 1


@pytest.mark.parametrize(("via", "branch"), [
    ("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport", "z9hG4bKabc"),
    ("SIP/2.0/UDP 10.0.0.1;Branch=z9hG4bKcase", "z9hG4bKcase"),  # parameter names are case-insensitive
    ("SIP/2.0/UDP 10.0.0.1:5060;rport=5060;received=10.0.0.9", None),
    ("SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6", "z9hG4bKv6"),  # not the fast shape: full parse
    ("SIP/2.0/UDP h.example.com:5060 ; branch = z9hG4bKlws", "z9hG4bKlws"),
])
def test_branch_fast_path_agrees_with_full_parse(via: str, branch: str | None) -> None:
    msg = parse_message(
        f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode())
    assert msg.branch == branch == parse_via(via).branch
    assert msg.top_via is not None and msg.top_via.branch == branch


def test_via_port_out_of_range_still_rejected() -> None:
    with pytest.raises(SipParseError):
        parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:70000;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1"
                      b"\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
