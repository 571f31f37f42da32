"""Probe shape per peer (issue 13 item 4): the qualify request's To user, Request-URI user,
Max-Forwards, extra headers and method, on the virtual clock. The default request is
tests/qualify/test_hostile_and_shape.py's, unchanged."""

from __future__ import annotations

import pytest

from sipqualify.qualify.engine import with_user

from .sim import answer, build, ok_after, peer, silent

A = ("127.0.0.1", 15071)


def request_lines(**kw: object) -> list[str]:
    sim = build([peer("p", A[1], 2000, freq_s=5, **kw)], {A: silent})
    return sim.sent[0][2].decode().split("\r\n")


def test_default_request_is_chan_sips() -> None:
    lines = request_lines()
    assert lines[0] == "OPTIONS sip:127.0.0.1 SIP/2.0"
    assert lines[2] == "Max-Forwards: 70"
    assert lines[4] == "To: <sip:127.0.0.1>"
    assert lines[7] == "CSeq: 102 OPTIONS"
    assert [ln.split(":")[0] for ln in lines[8:] if ln] == ["User-Agent", "Date", "Allow", "Content-Length"]


def test_to_user_is_only_in_to() -> None:
    lines = request_lines(qualify_to_user="monitor")
    assert lines[0] == "OPTIONS sip:127.0.0.1 SIP/2.0"
    assert lines[4] == "To: <sip:monitor@127.0.0.1>"


def test_ruri_user_is_in_request_uri_and_to_defaultuser_still_not() -> None:
    lines = request_lines(qualify_ruri_user="ping", defaultuser="alice")
    assert lines[0] == "OPTIONS sip:ping@127.0.0.1 SIP/2.0"
    assert lines[4] == "To: <sip:ping@127.0.0.1>"
    assert "alice" not in "\r\n".join(lines)


def test_ruri_user_and_to_user_with_port_in_uri() -> None:
    lines = request_lines(qualify_ruri_user="ping", qualify_to_user="monitor", port_in_uri=True)
    assert lines[0] == f"OPTIONS sip:ping@127.0.0.1:{A[1]} SIP/2.0"
    assert lines[4] == f"To: <sip:monitor@127.0.0.1:{A[1]}>"


def test_max_forwards() -> None:
    assert request_lines(qualify_max_forwards=0)[2] == "Max-Forwards: 0"
    assert request_lines(qualify_max_forwards=255)[2] == "Max-Forwards: 255"


def test_extra_headers_before_content_length_in_order() -> None:
    lines = request_lines(qualify_headers_extra=("X-Probe: sipqualify", "P-Preferred-Identity: <sip:mon@x.test>"))
    assert lines[-6:] == ["Allow: OPTIONS, REGISTER", "X-Probe: sipqualify", "P-Preferred-Identity: <sip:mon@x.test>",
                          "Content-Length: 0", "", ""]


@pytest.mark.parametrize("method", ["INFO", "NOTIFY"])
def test_info_and_notify_answered_200_make_the_peer_ok(method: str) -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5, qualify_method=method)], {A: ok_after(0.012)})
    sim.run_until(6.0)
    lines = sim.sent[0][2].decode().split("\r\n")
    assert lines[0] == f"{method} sip:127.0.0.1 SIP/2.0"
    assert lines[7] == f"CSeq: 102 {method}"
    events = [ln for ln in lines if ln.startswith("Event:")]
    assert events == (["Event: keep-alive"] if method == "NOTIFY" else [])
    assert lines[-4] == ("Event: keep-alive" if method == "NOTIFY" else "Allow: OPTIONS, REGISTER")
    p = sim.engine.peer("p")
    assert p is not None and p.status == "OK (12 ms)"
    assert [c[:2] for c in sim.changes("p")] == [(12, "OK")]
    assert sim.sends_to(A) == [0, 5012]  # answered: the next poke at qualifyfreq
    assert p.verdict.verdict == "up"
    assert sim.engine.stats.mismatched_responses == 0


def test_answer_naming_another_method_does_not_complete_the_poke() -> None:
    """The method is the transaction's: a response whose CSeq says OPTIONS to an INFO poke is
    not its answer (RFC 3261 §17.1.3)."""
    def wrong_method(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return [(0.01, answer(req).replace(b" INFO\r\n", b" OPTIONS\r\n"))]

    sim = build([peer("p", A[1], 2000, freq_s=5, qualify_method="INFO")], {A: wrong_method})
    sim.run_until(1.0)
    p = sim.engine.peer("p")
    assert p is not None and sim.changes("p") == []
    assert sim.engine.stats.mismatched_responses >= 1


def test_pjsip_peers_keep_res_pjsips_request() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5, semantics="pjsip", contact_uri="sip:127.0.0.1:15071",
                      qualify_method="NOTIFY", qualify_max_forwards=3, qualify_headers_extra=("X-A: b",))],
                {A: silent})
    sim.run_until(10.0)
    data = sim.sent[0][2].decode()
    assert data.startswith("OPTIONS sip:127.0.0.1:15071 SIP/2.0\r\n")
    assert "Max-Forwards: 70\r\n" in data and "X-A" not in data and "Event" not in data


@pytest.mark.parametrize(("uri", "out"), [
    ("sip:10.0.0.1", "sip:u@10.0.0.1"),
    ("sips:h.test:5061", "sips:u@h.test:5061"),
    ("sip:alice@192.0.2.7:5062;transport=tcp", "sip:u@192.0.2.7:5062;transport=tcp"),
    ("sip:[2001:db8::1];ob", "sip:u@[2001:db8::1];ob"),
])
def test_with_user(uri: str, out: str) -> None:
    assert with_user(uri, "u") == out


def test_to_user_on_a_registered_contact_ruri_user_not() -> None:
    """A dynamic peer's Request-URI is its registered Contact, user and all: `qualify_ruri_user`
    does not touch it, `qualify_to_user` replaces the user in To."""
    p = peer("p", A[1], 2000, freq_s=5, qualify_to_user="monitor", qualify_ruri_user="ping")
    p.host, p.dynamic = None, True
    sim = build([p], {A: silent})
    sim.engine.registered("p", A, 0.0, "sip:alice@127.0.0.1:15071;ob")
    sim.run_until(0.0)
    lines = sim.sent[0][2].decode().split("\r\n")
    assert lines[0] == "OPTIONS sip:alice@127.0.0.1:15071;ob SIP/2.0"
    assert lines[4] == "To: <sip:monitor@127.0.0.1:15071;ob>"
