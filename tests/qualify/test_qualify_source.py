"""qualify_source (issue 13 item 4, multi-homed hosts), on the virtual clock: which local endpoint
each datagram leaves from is the engine's decision (data), the socket is the shell's. A peer with
a source is sent from that socket's bound address, and its Via, From, Contact (and Call-ID) carry
it; a source without a socket sends nothing, and the peer says why."""

from __future__ import annotations

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import QualifyEngine

from .sim import LOCAL, Addr, Responder, Sim, header, make_engine, ok_after, peer, silent

A = ("127.0.0.1", 15071)
B = ("127.0.0.1", 15072)
SRC = ("127.0.0.5", 0)  # as configured: `qualify_source = 127.0.0.5`
BOUND = ("127.0.0.5", 40123)  # where the shell's socket for it is bound (a free port)


def build(peers: list[PeerConfig], responders: dict[Addr, Responder],
          sources: dict[Addr, Addr | str]) -> tuple[QualifyEngine, Sim]:
    eng = make_engine()
    eng.set_sources(sources)  # the shell opens the sockets before it loads the peers (service._load)
    sim = Sim(eng, responders)
    eng.load(peers, 0.0, addresses={p.name: (p.host or "", p.port or 5060) for p in peers})
    sim.run_until(0.0)
    return eng, sim


def test_request_leaves_from_the_source_and_carries_it_in_via_from_contact() -> None:
    eng, sim = build([peer("src", A[1], qualify_source=SRC), peer("plain", B[1])],
                     {A: ok_after(0.010), B: ok_after(0.010)}, {SRC: BOUND})
    sim.run_until(0.2)  # both poked (the second 100 ms later: qualifygap) and answered
    (t, dest, req), = [s for s in sim.sent if s[1] == A]
    assert sim.sent_from == [(t, BOUND, A)]
    assert header(req, "Via").startswith("SIP/2.0/UDP 127.0.0.5:40123;branch=z9hG4bK")
    assert header(req, "From").startswith('"asterisk" <sip:asterisk@127.0.0.5:40123>;tag=as')
    assert header(req, "Contact") == "<sip:asterisk@127.0.0.5:40123>"
    assert header(req, "Call-ID").endswith("@127.0.0.5:40123")
    # the other peer: the SIP socket's address, through datagrams_to_send as before
    (_, _, plain), = [s for s in sim.sent if s[1] == B]
    assert header(plain, "Via").startswith(f"SIP/2.0/UDP {LOCAL[0]}:{LOCAL[1]};branch=")
    assert all(dest != B for _, _, dest in sim.sent_from)
    # answers (to whichever socket: the engine does not care) complete the poke as any other
    assert [c[1] for c in sim.changes("src")] == [c[1] for c in sim.changes("plain")] == ["OK"]
    assert eng.stats.source_errors == 0


def test_retransmissions_and_keepalives_leave_from_the_source_too() -> None:
    eng, sim = build([peer("src", A[1], qualify_source=SRC, keepalive_s=1)], {A: silent}, {SRC: BOUND})
    sim.run_until(4.0)
    opts = [round(t * 1000) for t, dest, data in sim.sent if dest == A and data.startswith(b"OPTIONS")]
    assert opts == [0, 1000, 2000, 3000, 4000]  # chan_sip's schedule (asterisk-observed.md), unchanged
    assert len(sim.sent_from) == len(sim.sent)  # every datagram of the peer: OPTIONS and CRLF keepalives
    assert {local for _, local, _ in sim.sent_from} == {BOUND}
    assert sim.changes("src")[-1][:2] == (4000, "UNREACHABLE")


def test_a_source_that_could_not_be_bound_sends_nothing_and_the_peer_says_why() -> None:
    why = "cannot bind: Cannot assign requested address (EADDRNOTAVAIL)"
    src = ("192.0.2.77", 5070)
    eng, sim = build([peer("broken", A[1], qualify_source=src)], {A: ok_after(0.010)}, {src: why})
    p = eng.peer("broken")
    assert p is not None
    assert p.transport_error == f"qualify_source 192.0.2.77:5070: {why}"  # shown at once, before any poke
    sim.run_until(4.0)
    assert sim.sent == [] and sim.sent_from == []  # never silently from the SIP socket instead
    assert eng.stats.source_errors == 5  # the poke and its four retransmissions
    (t, new, line, _), = sim.changes("broken")
    assert (t, new) == (4000, "UNREACHABLE")
    ev = [e for _, e in sim.events if getattr(e, "new", None) == "UNREACHABLE"][0]
    assert ev.reason == f"qualify_source 192.0.2.77:5070: {why}"  # type: ignore[attr-defined]


def test_source_of_the_other_address_family_sends_nothing() -> None:
    src = ("::1", 5070)
    eng, sim = build([peer("v4", A[1], qualify_source=src)], {A: ok_after(0.010)}, {src: ("::1", 5070)})
    sim.run_until(0.1)
    p = eng.peer("v4")
    assert p is not None and sim.sent == []
    assert p.transport_error == "qualify_source [::1]:5070: an IPv6 address cannot reach 127.0.0.1"


def test_new_sources_on_reload_are_used_from_the_next_poke() -> None:
    eng, sim = build([peer("src", A[1], freq_s=1, qualify_source=SRC)], {A: ok_after(0.010)}, {SRC: BOUND})
    sim.run_until(0.5)
    eng.set_sources({SRC: ("127.0.0.5", 40999)})  # a reload reopened it elsewhere
    sim.run_until(1.5)
    assert [local for _, local, _ in sim.sent_from] == [BOUND, ("127.0.0.5", 40999)]
    assert header(sim.sent[-1][2], "Via").startswith("SIP/2.0/UDP 127.0.0.5:40999;")


def test_a_stream_peer_ignores_its_source() -> None:
    """Over TCP/TLS the connection's own addresses are what the peer sees: the source is UDP's."""
    eng, sim = build([peer("t", A[1], qualify_source=SRC, transport="tcp")], {A: silent}, {SRC: BOUND})
    assert sim.sent_from == [] and header(sim.sent[0][2], "Via").startswith("SIP/2.0/TCP 127.0.0.1:15060;")


def test_no_source_sends_nothing_through_the_new_queue() -> None:
    eng, sim = build([peer("p", A[1])], {A: ok_after(0.010)}, {})
    sim.run_until(0.1)
    assert sim.sent_from == [] and len(sim.sent) == 1 and eng.stats.source_errors == 0
