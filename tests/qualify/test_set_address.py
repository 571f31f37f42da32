"""QualifyEngine.set_address: a static peer's host name resolved anew (net/dnswatch.py), on a virtual clock."""

from __future__ import annotations

from sipqualify.model import PeerConfig

from .sim import Sim, make_engine, ok_after, peer

A = ("127.0.0.1", 15080)
B = ("127.0.0.2", 15080)


def test_a_new_address_takes_the_next_poke_without_an_extra_one() -> None:
    """chan_sip's dnsmgr only swaps the address: the schedule stays, the next OPTIONS go to B."""
    eng = make_engine()
    sim = Sim(eng, {A: ok_after(0.01), B: ok_after(0.01)})
    eng.load([peer("trunk", A[1], freq_s=5)], 0.0, addresses={"trunk": A})
    sim.run_until(2.0)
    assert eng.set_address("trunk", B, sim.now)
    sim.run_until(12.0)
    assert sim.sends_to(A) == [0]
    assert sim.sends_to(B) == [5010, 10020]  # qualifyfreq after each answer, as before
    p = eng.peer("trunk")
    assert p is not None and p.addr == p.dest == B and p.state == "OK"


def test_a_peer_that_never_resolved_is_poked_once_it_does() -> None:
    eng = make_engine()
    sim = Sim(eng, {B: ok_after(0.01)})
    eng.load([peer("trunk", B[1])], 0.0, addresses={"trunk": None})
    sim.run_until(3.0)
    assert sim.sent == []
    assert eng.set_address("trunk", B, sim.now)
    sim.run_until(3.5)
    assert sim.sends_to(B) == [3000]
    assert [c[1] for c in sim.changes("trunk")] == ["OK"]


def test_outbound_proxy_stays_the_destination_and_dynamic_peers_are_refused() -> None:
    eng = make_engine()
    proxy = ("127.0.0.9", 5060)
    eng.load([peer("trunk", A[1]), PeerConfig(name="phone", dynamic=True, qualify_ms=2000)], 0.0,
             addresses={"trunk": A}, destinations={"trunk": proxy})
    assert eng.set_address("trunk", B, 1.0)
    p = eng.peer("trunk")
    assert p is not None and p.addr == B and p.dest == proxy
    assert not eng.set_address("phone", B, 1.0)
    assert not eng.set_address("nobody", B, 1.0)
