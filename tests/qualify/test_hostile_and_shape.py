"""Request shape (asterisk-observed.md §4) and hostile responses (never change state)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from sipqualify.model import GeneralConfig
from sipqualify.qualify import dispatch as dispatch_module
from sipqualify.qualify.dispatch import MALFORMED_LOG_INTERVAL, MALFORMED_LOG_SOURCES
from sipqualify.qualify.engine import QualifyEngine

from .sim import answer, build, ok_after, peer, silent

A = ("127.0.0.1", 15070)


def test_options_request_shaped_like_asterisk() -> None:
    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: silent}, useragent="sipqualify test")
    data = sim.sent[0][2].decode()
    lines = data.split("\r\n")
    assert lines[0] == "OPTIONS sip:127.0.0.1 SIP/2.0"  # no port, no user (§4)
    names = [ln.split(":", 1)[0] for ln in lines[1:] if ln]
    assert names == ["Via", "Max-Forwards", "From", "To", "Contact", "Call-ID", "CSeq", "User-Agent",
                     "Date", "Allow", "Content-Length"]
    assert re.fullmatch(r"Via: SIP/2\.0/UDP 127\.0\.0\.1:15060;branch=z9hG4bK[0-9a-f]{16};rport", lines[1])
    assert lines[2] == "Max-Forwards: 70"
    assert re.fullmatch(r'From: "asterisk" <sip:asterisk@127\.0\.0\.1:15060>;tag=as[0-9a-f]{8}', lines[3])
    assert lines[4] == "To: <sip:127.0.0.1>"
    assert lines[5] == "Contact: <sip:asterisk@127.0.0.1:15060>"
    assert re.fullmatch(r"Call-ID: [0-9a-f]{32}@127\.0\.0\.1:15060", lines[6])
    assert lines[7] == "CSeq: 102 OPTIONS"
    assert lines[8] == "User-Agent: sipqualify test"
    assert lines[9] == "Date: Mon, 23 Nov 2026 19:45:11 GMT"
    assert data.endswith("Content-Length: 0\r\n\r\n")


def test_fromuser_replaces_user_in_from_and_contact_defaultuser_not_in_ruri() -> None:
    p = peer("user-peer", A[1], 2000, defaultuser="alice", fromuser="ast-from", fromdomain="example.test")
    sim = build([p], {A: silent})
    data = sim.sent[0][2].decode()
    assert data.startswith("OPTIONS sip:127.0.0.1 SIP/2.0\r\n")
    assert '<sip:ast-from@127.0.0.1:15060>;tag=' in data
    assert "Contact: <sip:ast-from@127.0.0.1:15060>" in data
    assert "example.test" not in data  # fromdomain is not applied to the poke (§0.6)


def test_port_in_uri_opt_in_and_ipv6() -> None:
    p = peer("v6", 5070, 2000, port_in_uri=True)
    p.host = "2001:db8::10"
    eng: QualifyEngine = build([], {}).engine
    eng.load([p], 0.0, addresses={"v6": ("2001:db8::10", 5070)})
    eng.handle_timer(0.0)
    data = eng.datagrams_to_send()[0][0].decode()
    assert data.startswith("OPTIONS sip:[2001:db8::10]:5070 SIP/2.0\r\n")
    assert "To: <sip:[2001:db8::10]:5070>" in data


def test_each_poke_fresh_ids() -> None:
    sim = build([peer("ok", A[1], 2000, freq_s=1)], {A: ok_after(0.001)})
    sim.run_until(5.5)
    calls = {re.search(rb"Call-ID: (\S+)", d).group(1) for _, _, d in sim.sent}  # type: ignore[union-attr]
    branches = {re.search(rb"branch=(\w+)", d).group(1) for _, _, d in sim.sent}  # type: ignore[union-attr]
    assert len(calls) == len(sim.sent) == len(branches) == 6


def _hostile_variants(req: bytes) -> list[bytes]:
    good = answer(req)
    branch = re.search(rb"branch=(\w+)", req).group(1)  # type: ignore[union-attr]
    callid = re.search(rb"Call-ID: (\S+)", req).group(1)  # type: ignore[union-attr]
    return [
        good.replace(branch, b"z9hG4bKdeadbeefdeadbeef"),  # wrong branch
        good.replace(callid, b"forged@evil"),  # wrong Call-ID
        good.replace(b"CSeq: 102 OPTIONS", b"CSeq: 102 INVITE"),  # wrong method
        good.replace(b"CSeq: 102 OPTIONS", b"CSeq: 103 OPTIONS"),  # wrong number
        good[: len(good) // 2],  # truncated
        good[:40],
        os.urandom(300),  # junk
        b"\x00" * 500,
        good.replace(b"Content-Length: 0", b"Content-Length: 99999"),  # lying length
        good + b"X" * 70000,  # oversize
        b"SIP/2.0 99999999999 OK\r\n" + good.split(b"\r\n", 1)[1],  # bad status
        good.replace(b"Via:", b"Viaa:"),  # no Via
        b"\r\n\r\n",  # keepalive
    ]


def test_hostile_responses_never_change_state() -> None:
    sent_hostile = {"n": 0}

    def hostile(req: bytes, t: float) -> list[tuple[float, bytes]]:
        sent_hostile["n"] += 1
        return [(0.001 * (i + 1), v) for i, v in enumerate(_hostile_variants(req))]

    sim = build([peer("victim", A[1], 2000, freq_s=5)], {A: hostile})
    sim.run_until(4.5)
    # nothing counted as an answer: the peer times out exactly like a silent one
    assert [c[1] for c in sim.changes()] == ["UNREACHABLE"]
    st = sim.engine.stats
    assert st.answered == 0 and st.internal_errors == 0
    assert st.rx_malformed > 0 and st.stray_responses > 0 and st.mismatched_responses > 0


def test_response_from_wrong_source_is_ignored() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: silent})
    req = sim.sent[0][2]
    sim.deliver(answer(req), ("127.0.0.1", 9999))
    assert sim.engine.peer("p").status == "UNKNOWN"  # type: ignore[union-attr]
    assert sim.engine.stats.mismatched_responses == 1
    sim.deliver(answer(req), A)
    assert sim.engine.peer("p").status == "OK (1 ms)"  # type: ignore[union-attr]
    sim.deliver(answer(req), A)  # retransmitted final response: counted, dropped
    assert sim.engine.stats.retransmitted_responses == 1


def test_source_match_can_be_turned_off() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: silent}, match_source=False)
    sim.deliver(answer(sim.sent[0][2]), ("127.0.0.1", 9999))
    assert sim.engine.peer("p").status == "OK (1 ms)"  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=2000))
def test_random_bytes_never_raise(data: bytes) -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: silent})
    sim.deliver(data, A)
    assert sim.engine.peer("p").status == "UNKNOWN"  # type: ignore[union-attr]
    assert sim.engine.stats.internal_errors == 0


@pytest.mark.parametrize("method", ["OPTIONS", "INFO", "FROBNICATE"])
def test_inbound_requests_answered(method: str) -> None:
    sim = build([], {})
    req = (
        f"{method} sip:127.0.0.1:15060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:15095;branch=z9hG4bKtest1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1:15095>;tag=probe1\r\n"
        "To: <sip:127.0.0.1:15060>\r\n"
        "Call-ID: probe-call-1@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    sim.engine.receive_datagram(req, ("127.0.0.1", 15096), 0.0)
    (data, dest), = sim.answers()
    text = data.decode()
    assert dest == ("127.0.0.1", 15096)  # rport: back to the source port
    assert "received=127.0.0.1" in text and "rport=15096" in text
    if method == "OPTIONS":
        assert text.startswith("SIP/2.0 200 OK\r\n")
        for h in ("Allow: ", "Accept: application/sdp", "Supported:"):
            assert h in text
    elif method == "INFO":
        assert text.startswith("SIP/2.0 405 Method Not Allowed\r\n") and "Allow: OPTIONS" in text
    else:
        assert text.startswith("SIP/2.0 501 ")


def test_request_with_defects_gets_400() -> None:
    """RFC 4475 §3.3.9: multiple conflicting Content-Length values -> 400 Bad Request."""
    sim = build([], {})
    req = (
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:15095;branch=z9hG4bKx;rport\r\n"
        b"From: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 13\r\nContent-Length: 5\r\n\r\nhello"
    )
    sim.engine.receive_datagram(req, ("127.0.0.1", 15095), 0.0)
    (data, _), = sim.answers()
    assert data.startswith(b"SIP/2.0 400 Conflicting Content-Length")


def test_answers_to_one_source_are_rate_limited() -> None:
    """Never amplify: a flood of requests from one address gets a bounded number of answers;
    another address is unaffected."""
    sim = build([], {})
    req = (b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKf;rport\r\n"
           b"From: <sip:f@10.9.9.9>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: flood\r\nCSeq: 1 OPTIONS\r\n"
           b"Content-Length: 0\r\n\r\n")
    for _ in range(10000):
        sim.engine.receive_datagram(req, ("10.9.9.9", 5060), 0.0)
    assert len(sim.answers()) == 4000  # the burst, then nothing within the same instant
    assert sim.engine.stats.rate_limited == 6000
    sim.engine.receive_datagram(req, ("10.8.8.8", 5060), 0.0)
    assert len(sim.answers()) == 1
    sim.engine.receive_datagram(req, ("10.9.9.9", 5060), 0.001)  # refilled at 2000/s: 2 tokens
    sim.engine.receive_datagram(req, ("10.9.9.9", 5060), 0.001)
    sim.engine.receive_datagram(req, ("10.9.9.9", 5060), 0.001)
    assert len(sim.answers()) == 2


def _options_to(uri: str, mf: int = 70) -> bytes:
    return (f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:15095;branch=z9hG4bKo{abs(hash(uri))};rport\r\n"
            f"Max-Forwards: {mf}\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\nCall-ID: o-{abs(hash(uri))}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize(("uri", "check", "status"), [
    ("sip:p@127.0.0.1:15060", True, 200),  # a configured peer
    ("sip:ghost@127.0.0.1:15060", True, 404),  # res_pjsip: no such user
    ("sip:gh%6Fst@127.0.0.1:15060", True, 404),  # escaped: still nobody
    ("sip:127.0.0.1:15060", True, 200),  # no user part: the server itself
    ("sip:ghost@127.0.0.1:15060", False, 200),  # not configured: everyone gets 200
    ("tel:+15551234", False, 416),  # res_pjsip: not a SIP URI
])
def test_inbound_options_user_check(uri: str, check: bool, status: int) -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: silent})
    sim.engine.datagrams_to_send()
    if check:
        sim.engine.inbound.known_user = lambda user: user == "p"
    sim.engine.receive_datagram(_options_to(uri), ("127.0.0.1", 15095), 0.0)
    (data, _), = sim.answers()
    assert data.startswith(f"SIP/2.0 {status} ".encode()), data[:40]


def test_max_forwards_zero_is_answered_by_the_uas() -> None:
    """RFC 3261 §16.3 (483) is for proxies; we are the destination, so OPTIONS with
    Max-Forwards: 0 (a classic "ping the next hop" probe) gets its 200."""
    sim = build([], {})
    sim.engine.receive_datagram(_options_to("sip:127.0.0.1:15060", mf=0), ("127.0.0.1", 15095), 0.0)
    (data, _), = sim.answers()
    assert data.startswith(b"SIP/2.0 200 OK\r\n")


@pytest.mark.parametrize("method", ["OPTIONS", "INFO", "FROBNICATE", "INVITE"])
def test_answers_to_unauthenticated_requests_do_not_amplify(method: str) -> None:
    """Never amplify: a minimal request from anyone gets an answer no bigger than about the
    request itself (no bodies, no long header lists beyond what the status needs)."""
    sim = build([], {})
    req = (f"{method} sip:x@1.2.3.4 SIP/2.0\r\nVia: SIP/2.0/UDP 9.9.9.9:5060;branch=z9hG4bKa;rport\r\n"
           f"From: <sip:a@9.9.9.9>;tag=1\r\nTo: <sip:x@1.2.3.4>\r\nCall-ID: a\r\nCSeq: 1 {method}\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    sim.engine.receive_datagram(req, ("9.9.9.9", 5060), 0.0)
    (data, _), = sim.answers()
    assert len(data) <= 2 * len(req), (len(data), len(req))


def test_answer_goes_to_the_via_port_without_rport() -> None:
    """RFC 3261 §18.2.2: no rport in the top Via -> the sent-by port (rport -> the source port)."""
    sim = build([], {})
    req = _options_to("sip:127.0.0.1:15060").replace(b";rport", b"")
    sim.engine.receive_datagram(req, ("127.0.0.1", 40000), 0.0)
    (_, dest), = sim.answers()
    assert dest == ("127.0.0.1", 15095)


def _probe(*, start: str = "OPTIONS sip:127.0.0.1:15060 SIP/2.0", via_port: str = "5060", rport: str = "",
           mf: str = "70", from_port: str = "5060", cseq: str = "1", clen: str = "0", extra: str = "") -> bytes:
    return (f"{start}\r\nVia: SIP/2.0/UDP 10.9.9.9:{via_port};branch=z9hG4bKp{rport}\r\nMax-Forwards: {mf}\r\n"
            f"From: <sip:p@10.9.9.9:{from_port}>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\n"
            f"CSeq: {cseq} OPTIONS\r\n{extra}Content-Length: {clen}\r\n\r\n").encode()


# One datagram per place where a Unicode digit once gave a ValueError (a traceback in the log,
# internal_errors) or was read as a number (an answer): RFC 3261 §25.1 DIGIT is ASCII.
UNICODE_DIGIT_DATAGRAMS = {
    "via-port": _probe(via_port="\u00b2"),
    "via-port-fullwidth": _probe(via_port="\uff15\uff10\uff16\uff10"),
    "via-port-lws": _probe(via_port="\u0665\u0660\u0666\u0660").replace(b"UDP 10.9.9.9:", b"UDP 10.9.9.9 : "),
    "via-rport": _probe(rport=";rport=\u00b2"),
    "cseq": _probe(cseq="\u00b2"),
    "content-length": _probe(clen="\u00b2"),
    "content-length-conflict": _probe(extra="Content-Length: \uff10\r\n"),
    "max-forwards": _probe(mf="\u00b2"),
    "request-uri-port": _probe(start="OPTIONS sip:127.0.0.1:\u00b2 SIP/2.0"),
    "from-uri-port": _probe(from_port="\u0663"),
    "status-code": _probe(start="SIP/2.0 \u00b200 OK"),
    "huge-max-forwards": _probe(mf="9" * 5000),
}


@pytest.mark.parametrize("where", sorted(UNICODE_DIGIT_DATAGRAMS))
def test_unicode_digits_are_malformed_input_not_internal_errors(where: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sipqualify.engine")
    sim = build([], {})
    sim.engine.receive_datagram(UNICODE_DIGIT_DATAGRAMS[where], ("10.9.9.9", 5060), 0.0)
    st = sim.engine.stats
    assert (st.rx_malformed, st.internal_errors, st.requests_answered) == (1, 0, 0)
    assert sim.answers() == []
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert caplog.records[0].exc_info is None and "Traceback" not in caplog.text


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    parsed: list[bytes] = []
    real = dispatch_module.parse_message

    def counting(data: bytes) -> dispatch_module.Request | dispatch_module.Response:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(dispatch_module, "parse_message", counting)
    return parsed


@pytest.mark.parametrize("worst", [UNICODE_DIGIT_DATAGRAMS["content-length"],
                                   b"SIP/2.0 200 OK\r\n" + UNICODE_DIGIT_DATAGRAMS["cseq"].split(b"\r\n", 1)[1]],
                         ids=["request", "response"])
def test_a_flood_from_one_source_is_dropped_before_parsing(worst: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-source budget (2,000/s, burst 4,000) is charged before parse_message, for requests
    and for responses that answer none of our pokes: beyond it a datagram is never parsed."""
    parsed = _count_parses(monkeypatch)
    sim = build([], {})
    for _ in range(10_000):
        sim.engine.receive_datagram(worst, ("10.9.9.9", 5060), 0.0)
    st = sim.engine.stats
    assert len(parsed) == st.rx_malformed == 4000  # the burst
    assert st.rate_limited == 6000 and st.internal_errors == 0
    for _ in range(3000):  # one second later the bucket holds 2,000 datagrams
        sim.engine.receive_datagram(worst, ("10.9.9.9", 5060), 1.0)
    assert len(parsed) == 6000 and sim.engine.stats.rate_limited == 7000
    sim.engine.receive_datagram(worst, ("10.8.8.8", 5060), 1.0)  # another source has its own budget
    assert len(parsed) == 6001


def test_a_peer_is_answered_whoever_floods_from_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response naming the branch of one of our pokes skips the budget: a flood from the peer's
    own address (spoofed) arriving just before each answer costs it nothing."""
    garbage = UNICODE_DIGIT_DATAGRAMS["status-code"]

    def flooded(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return [(0.001, garbage)] * 5000 + [(0.001, answer(req))]

    sim = build([peer("p", A[1], 2000, freq_s=1)], {A: flooded})
    sim.run_until(3.5)
    st = sim.engine.stats
    assert sim.engine.peer("p").status == "OK (1 ms)"  # type: ignore[union-attr]
    assert [c[1] for c in sim.changes()] == ["OK"] and st.answered == 4 and st.timeouts == 0
    assert st.rate_limited > 0 and st.internal_errors == 0


def test_answers_from_one_address_are_never_budgeted() -> None:
    """An SBC or a Kamailio answering for thousands of peers from one address: 6,000 answers in
    the same millisecond, beyond the burst of 4,000, all count."""
    peers = [peer(f"p{i}", A[1], 2000, freq_s=60) for i in range(6000)]
    sim = build(peers, {A: ok_after(0.001)}, GeneralConfig(qualifypeers=-1))
    sim.run_until(0.5)
    st = sim.engine.stats
    assert (st.answered, st.rate_limited, st.rx_malformed) == (6000, 0, 0)


def test_malformed_input_is_logged_once_per_source_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sipqualify.engine")
    sim = build([], {})
    bad = UNICODE_DIGIT_DATAGRAMS["cseq"]
    for t in range(int(MALFORMED_LOG_INTERVAL)):  # 1 per second per source: inside the budget
        for src in (("10.9.9.9", 5060), ("10.9.9.9", 5061), ("10.8.8.8", 5060)):
            sim.engine.receive_datagram(bad, src, float(t))
    assert sim.engine.stats.rx_malformed == 3 * int(MALFORMED_LOG_INTERVAL)
    assert [r.getMessage().split(" port ")[0] for r in caplog.records] == [
        "malformed SIP from 10.9.9.9", "malformed SIP from 10.8.8.8"]
    assert "bad CSeq number" in caplog.records[0].getMessage()
    sim.engine.receive_datagram(bad, ("10.9.9.9", 5060), MALFORMED_LOG_INTERVAL)  # the next interval
    assert len(caplog.records) == 3
    caplog.clear()
    for i in range(1000):  # spoofed sources: the number of lines stays bounded
        sim.engine.receive_datagram(bad, (f"10.7.{i // 250}.{i % 250}", 5060), 2 * MALFORMED_LOG_INTERVAL)
    assert len(caplog.records) == MALFORMED_LOG_SOURCES
    assert all(r.exc_info is None and r.levelno == logging.INFO for r in caplog.records)


def test_log_line_for_bad_input_is_ascii(caplog: pytest.LogCaptureFixture) -> None:
    """Invalid UTF-8 reaches the parser as lone surrogates; the log line escapes them (a log file
    opened as UTF-8 would otherwise fail to write it)."""
    caplog.set_level(logging.INFO, logger="sipqualify.engine")
    sim = build([], {})
    sim.engine.receive_datagram(_probe(cseq="\u00b2").replace("\u00b2".encode(), b"\xff\xfe"), ("10.9.9.9", 5060), 0.0)
    assert sim.engine.stats.rx_malformed == 1
    assert caplog.records[0].getMessage().isascii()


ASTERISK_OPTIONS = (Path(__file__).parent.parent / "data" / "asterisk_options_ok_yes.bin").read_bytes()


def _mask_ids(data: bytes) -> bytes:
    """Branch, tag and Call-ID are random on both sides; sipqualify's branch is 64 bits and asks
    for rport (deliberate, README): both are masked to compare the rest byte for byte."""
    data = re.sub(rb"branch=z9hG4bK[0-9a-f]+(;rport)?", b"branch=B", data)
    data = re.sub(rb"tag=as[0-9a-f]{8}", b"tag=T", data)
    return re.sub(rb"Call-ID: [0-9a-f]{32}@", b"Call-ID: C@", data)


def test_qualify_headers_asterisk_gives_chan_sips_request_byte_for_byte() -> None:
    """asterisk-differences.md item 6: with `qualify_headers = asterisk` the OPTIONS carries
    chan_sip's Allow and Supported lines, and is Asterisk's request (asterisk-observed.md §4)."""
    assert len(ASTERISK_OPTIONS) == 522
    g = GeneralConfig(qualify_headers="asterisk")
    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: silent}, g, useragent="Asterisk PBX 20.20.1")
    ours = sim.sent[0][2]
    assert _mask_ids(ours) == _mask_ids(ASTERISK_OPTIONS)
    assert len(ours) == 522 + 8 + len(";rport")  # the 64-bit branch and rport, nothing else


def test_qualify_headers_own_lists_only_what_we_serve() -> None:
    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: silent}, useragent="Asterisk PBX 20.20.1")
    ours = _mask_ids(sim.sent[0][2])
    theirs = _mask_ids(ASTERISK_OPTIONS)
    assert ours == theirs.replace(b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, "
                                  b"PUBLISH, MESSAGE\r\nSupported: replaces, timer\r\n",
                                  b"Allow: OPTIONS, REGISTER\r\n")
