"""PJSIP qualify semantics on a virtual clock: the wire timelines of asterisk-pjsip-observed.md §3,
with qualify_timeout cutting the retransmissions and polls never piling up (deliberate
differences, README "Watching a PJSIP Asterisk")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sipqualify.config import load_config
from sipqualify.model import PeerConfig
from sipqualify.qualify.events import StateChanged
from sipqualify.qualify.pjsip_state import ContactState, PjsipChange, PjsipStates
from sipqualify.qualify.policy import initial_delay_s

from .sim import Responder, Sim, answer, build, ok_after, silent, trying_only

OBSERVED = str(Path(__file__).parents[1] / "data" / "pjsip" / "observed_pjsip.conf")
CFG = load_config(OBSERVED)


def contact(aor: str, **kw: object) -> PeerConfig:
    """The peer of AOR `aor`'s (first) static contact in the captured pjsip.conf."""
    p = next(p for n, p in CFG.peers.items() if n.startswith(aor + "@@"))
    return replace(p, **kw)  # type: ignore[arg-type]


def run(p: PeerConfig, responder: Responder, until: float) -> tuple[Sim, float]:
    """Loads one contact, returns the sim and the time of its first OPTIONS."""
    sim = build([p], {(p.host or "", p.port or 5060): responder})
    first = sim.engine.get_timer()
    assert first is not None
    sim.run_until(first + until)
    return sim, first


def rel(sim: Sim, first: float) -> list[int]:
    return [round((t - first) * 1000) for t, _, _ in sim.sent]


def changes(sim: Sim, first: float) -> list[tuple[int, str]]:
    return [(round((t - first) * 1000), e.new) for t, e in sim.events if isinstance(e, StateChanged)]


@pytest.mark.parametrize(("aor", "sends", "down_at"), [
    ("sil-05", [0, 500], 500),  # §3.1: the +0.5 s retransmission and the timeout fire together
    ("sil-2", [0, 500, 1500], 2000),
    ("sil-def", [0, 500, 1500], 3000),
])
def test_silent_contact_unreachable_at_qualify_timeout_and_retransmissions_stop(
        aor: str, sends: list[int], down_at: int) -> None:
    sim, first = run(contact(aor), silent, 12.0)
    # T1 = 500 ms doubling, cut at qualify_timeout; the next poll on the 5 s grid (not 10 s)
    assert rel(sim, first) == sends + [5000 + s for s in sends] + [10000 + s for s in sends]
    assert changes(sim, first) == [(down_at, "UNREACHABLE")]
    assert len({d for _, _, d in sim.sent[:len(sends)]}) == 1  # retransmissions byte-identical


def test_qualify_timeout_0_waits_for_timer_f() -> None:
    """§3.1 sil-0: 11 datagrams to +31.5 s, Unreachable at +32.0 s, next poll 60 s after the first."""
    sim, first = run(contact("sil-0"), silent, 60.2)
    assert rel(sim, first) == [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500, 60000]
    assert changes(sim, first) == [(32000, "UNREACHABLE")]


def test_provisional_rearms_retransmission_at_t2_and_never_counts() -> None:
    """§3.2 (pjproject): after a 100 Trying at +0.5 ms, retransmissions at +4.0005, +8.0005 ..."""
    sim, first = run(contact("try-def", qualify_ms=32_000, qualifyfreq_ms=60_000), trying_only, 33.0)
    assert [round((t - first) * 10000) for t, _, _ in sim.sent] == [
        0, 40005, 80005, 120005, 160005, 200005, 240005, 280005]
    assert changes(sim, first) == [(32000, "UNREACHABLE")]
    sim, first = run(contact("try-def"), trying_only, 4.9)  # qualify_timeout 3.0 cuts it at once
    assert rel(sim, first) == [0]
    assert changes(sim, first) == [(3000, "UNREACHABLE")]


def test_slow_answer_rtt_from_first_transmission_and_late_answer_ignored() -> None:
    """§3.3: a 700 ms peer is Reachable (RTT 700 ms) under 3.0 s, Unreachable under 0.5 s, and
    its 200 after the timeout changes nothing."""
    sim, first = run(contact("slow-def"), ok_after(0.7), 1.0)
    assert rel(sim, first) == [0, 500]
    assert changes(sim, first) == [(700, "OK")]
    assert sim.engine.peer(contact("slow-def").name).rtt == pytest.approx(0.7)  # type: ignore[union-attr]
    sim, first = run(contact("slow-05"), ok_after(0.7), 4.0)
    assert rel(sim, first) == [0, 500]
    assert changes(sim, first) == [(500, "UNREACHABLE")]


def test_any_final_answer_is_reachable_unless_2xx_only() -> None:
    """§3.4: 404 -> Reachable; with qualify_2xx_only the 404 is Unreachable when it arrives."""
    sim, first = run(contact("nf-def"), ok_after(0.001, 404, "Not Found"), 1.0)
    assert changes(sim, first) == [(1, "OK")]
    sim, first = run(contact("nf-2xx"), ok_after(0.001, 404, "Not Found"), 6.0)
    assert changes(sim, first) == [(1, "UNREACHABLE")]
    assert rel(sim, first) == [0, 5000]


def test_fixed_rate_grid_and_one_lost_poll_flips_state() -> None:
    """§3.5/§3.6: polls every 5.000 s from the first whatever the outcome; one unanswered poll is
    Unreachable at +qualify_timeout, the first answered one Reachable again."""
    state = {"up": True}

    def flap(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return [(0.001, answer(req))] if state["up"] else []

    p = contact("flap")
    sim, first = run(p, flap, 9.0)
    state["up"] = False
    sim.run_until(first + 14.0)
    state["up"] = True
    sim.run_until(first + 21.0)
    assert [s for s in rel(sim, first) if s % 5000 == 0] == [0, 5000, 10000, 15000, 20000]
    assert changes(sim, first) == [(1, "OK"), (12000, "UNREACHABLE"), (15001, "OK")]


def test_request_shape_is_res_pjsip_s() -> None:
    """§2: header order, From user = first endpoint (combo), no port in From/To, two spaces."""
    sim, _ = run(contact("ok-def"), ok_after(0.001), 0.0)
    req = sim.sent[0][2].decode()
    lines = req.split("\r\n")
    assert lines[0] == "OPTIONS sip:ok@127.0.0.1:35071 SIP/2.0"
    assert [ln.split(":")[0] for ln in lines[1:10]] == [
        "Via", "From", "To", "Contact", "Call-ID", "CSeq", "Max-Forwards", "User-Agent", "Content-Length"]
    assert lines[1].startswith("Via: SIP/2.0/UDP 127.0.0.1:15060;rport;branch=z9hG4bKPj")
    assert lines[2].startswith("From: <sip:combo@127.0.0.1>;tag=") and len(lines[2].split("tag=")[1]) == 36
    assert lines[3] == "To: <sip:ok@127.0.0.1>"
    assert lines[4] == "Contact: <sip:combo@127.0.0.1:15060>"
    assert len(lines[5]) == len("Call-ID: ") + 36
    assert 1 <= int(lines[6].split()[1]) <= 65535 and lines[6].endswith(" OPTIONS")
    assert req.endswith("Content-Length:  0\r\n\r\n")


def test_first_poll_spread_over_the_frequency_or_max_initial_qualify_time() -> None:
    """§3.7: U(0, qualify_frequency) per AOR (U(0, max_initial_qualify_time) if set), >= 1 ms;
    here derived from the AOR's name, so the same at every start."""
    names = [f"aor{i}" for i in range(200)]
    spread = [initial_delay_s(n, 5.0) for n in names]
    assert all(0.001 <= d < 5.0 for d in spread) and max(spread) > 4.0 and min(spread) < 1.0
    assert all(0.001 <= initial_delay_s(n, 5.0, 1.0) < 1.0 for n in names)
    assert spread == [initial_delay_s(n, 5.0) for n in names]
    two = [p for n, p in CFG.peers.items() if n.startswith("two@@")]
    sim = build(two, {(p.host or "", p.port or 5060): silent for p in two})
    sim.run_until(5.0)
    assert len({t for t, _, _ in sim.sent if t < 0.5}) == 1  # both contacts of one AOR leave together


def test_contact_and_endpoint_transitions_and_lines() -> None:
    """§6: endpoint lines before the contact line, `combo` before `ok-def`; endpoints start
    offline, so a first Unreachable says nothing about the endpoint; `nq` online from load."""
    assert CFG.pjsip is not None
    states = PjsipStates(CFG.pjsip)
    assert states.initial == [("nq", True)]
    ok = contact("ok-def").name
    assert states.update(ok, "OK", 0.501371) == [
        "Endpoint combo is now Reachable", "Endpoint ok-def is now Reachable",
        "Contact ok-def/sip:ok@127.0.0.1:35071 is now Reachable.  RTT: 501.371 msec"]
    assert states.update(ok, "OK", 0.0043) == []  # events only on changes
    sil = contact("sil-05").name
    assert states.update(sil, "UNREACHABLE", None) == [
        "Contact sil-05/sip:silent05@127.0.0.1:35078 is now Unreachable.  RTT: 0.000 msec"]
    assert states.update(ok, "UNREACHABLE", None) == [
        "Endpoint combo is now Unreachable", "Endpoint ok-def is now Unreachable",
        "Contact ok-def/sip:ok@127.0.0.1:35071 is now Unreachable.  RTT: 0.000 msec"]
    reloaded = PjsipStates(CFG.pjsip, states)  # a reload keeps every status: no line, no event
    assert reloaded.initial == [] and reloaded.update(ok, "UNREACHABLE", None) == []
    assert reloaded.change(sil, "OK", 0.002) == PjsipChange(
        ContactState("sil-05", "sip:silent05@127.0.0.1:35078", "Reachable", 0.002),
        [("combo", True), ("sil-05", True)], ["combo", "sil-05"])
