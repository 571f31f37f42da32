"""qualify/capture.py: a watched peer's last OPTIONS exchange as sent and received, on a virtual
clock; nothing kept for peers nobody watches; a bounded number watched, each for a while."""

from __future__ import annotations

import pytest

from sipqualify.qualify.capture import Capture, CaptureFull

from .sim import Sim, answer, make_engine, ok_after, peer, silent

A = ("127.0.0.1", 15090)
B = ("127.0.0.1", 15091)


def test_a_watched_peer_keeps_its_last_request_and_response_as_they_went() -> None:
    eng = make_engine()
    sim = Sim(eng, {A: ok_after(0.012), B: ok_after(0.005)})
    eng.load([peer("watched", A[1], freq_s=5), peer("other", B[1], freq_s=5)], 0.0,
             addresses={"watched": A, "other": B})
    assert eng.capture.watch("watched", 0.0) == 900.0
    sim.run_until(6.0)  # two polls each
    x = eng.capture.exchange("watched", sim.now)
    assert x is not None and x.transmissions == 1
    second = [d for t, dest, d in sim.sent if dest == A][-1]
    assert x.request.data == second and x.request.dest == A
    assert x.request.time == pytest.approx(sim.sends_to(A)[-1] / 1000)
    assert x.response is not None and x.response.status == 200 and x.response.source == A
    assert x.response.data == answer(second)  # the bytes as received, not re-serialised
    assert x.response.time - x.request.time == pytest.approx(0.012)
    assert eng.capture.exchange("other", sim.now) is None and "other" not in eng.capture._last


def test_retransmissions_are_counted_on_the_first_transmission() -> None:
    eng = make_engine()
    sim = Sim(eng, {A: silent})
    eng.load([peer("quiet", A[1])], 0.0, addresses={"quiet": A})
    eng.capture.watch("quiet", 0.0)
    sim.run_until(3.5)
    first = sim.sent[0]
    x = eng.capture.exchange("quiet", sim.now)
    assert x is not None and x.request.data == first[2] and x.request.time == 0.0
    assert x.transmissions == len(sim.sends_to(A)) == 4 and x.response is None  # 0, 1, 2, 3 s (chan_sip)


def test_watching_is_bounded_and_expires() -> None:
    cap = Capture(max_watched=2, watch_s=60.0)
    assert cap.watch("a", 0.0) == 60.0
    cap.watch("b", 1.0)
    with pytest.raises(CaptureFull):
        cap.watch("c", 2.0)
    assert cap.watch("a", 30.0) == 90.0  # extended: not a new one
    cap.sent("b", "z9hG4bKx", b"OPTIONS", A, 2.0)
    assert cap.wants("b", 60.9) and not cap.wants("b", 61.0)  # gone, with what it kept
    assert "b" not in cap._last and cap.until("b", 61.0) is None
    cap.watch("c", 61.0)
    with pytest.raises(CaptureFull):
        cap.watch("d", 62.0)
    assert cap.watch("d", 91.0) == 151.0  # a expired at 90


def test_a_response_to_an_older_poke_is_not_taken_for_the_last() -> None:
    cap = Capture()
    cap.watch("p", 0.0)
    cap.sent("p", "z9hG4bKold", b"OPTIONS 1", A, 0.0)
    cap.sent("p", "z9hG4bKnew", b"OPTIONS 2", A, 1.0)
    cap.received("p", "z9hG4bKold", b"SIP/2.0 200 OK", A, 200, 1.1)
    cap.retransmitted("p", "z9hG4bKold")
    x = cap.exchange("p", 1.2)
    assert x is not None and x.response is None and x.transmissions == 1
