"""Load hygiene (qualify/ratecap.py) on the virtual clock; issue 13 item 8: interval jitter and a
global OPTIONS rate cap with per-destination spreading (dSIPRouter #696)."""

from __future__ import annotations

import collections
import dataclasses

from sipqualify.model import GeneralConfig
from sipqualify.qualify.events import StateChanged
from sipqualify.qualify.ratecap import RateCap, jitter_factor

from .sim import Sim, build, ok_after, peer

SBC = "127.0.0.1"


def phones(n: int, freq_s: int = 60) -> list:  # type: ignore[type-arg]
    return [peer(f"ph{i:04d}", 20000 + i, 2000, freq_s=freq_s) for i in range(n)]


def first_sends_per_second(sim: Sim) -> collections.Counter[int]:
    return collections.Counter(int(t) for t, _, _ in sim.sent)


def test_rate_cap_unit_spreads_the_next_second() -> None:
    cap = RateCap(max_rate=4, per_destination=0)
    got = [cap.admit("a", 10.0) for _ in range(10)]
    assert got == [10.0] * 4 + [11.0, 11.25, 11.5, 11.75, 12.0, 12.25]
    assert cap.deferred == 6 and cap.backlog_s(10.0) == 2.25
    per = RateCap(max_rate=0, per_destination=2)
    assert [per.admit("a", 5.5) for _ in range(3)] + [per.admit("b", 5.5)] == [5.5, 5.5, 6.0, 5.5]


def test_jitter_factor_is_bounded_reproducible_and_spread() -> None:
    fs = [jitter_factor(f"p{i}", 3, 0.1) for i in range(1000)]
    assert all(0.9 <= f < 1.1 for f in fs) and fs == [jitter_factor(f"p{i}", 3, 0.1) for i in range(1000)]
    assert min(fs) < 0.92 and max(fs) > 1.08


def test_defaults_are_chan_sip_exact() -> None:
    g = GeneralConfig()
    assert (g.jitter, g.max_rate, g.max_rate_per_destination) == (0.0, 0, 0)
    sim = build([peer("p", 15094, 500, freq_s=5)], {(SBC, 15094): ok_after(0.01)})
    sim.run_until(30.0)
    assert sim.engine.ratecap is None
    assert sim.sends_to((SBC, 15094)) == [0, 5010, 10020, 15030, 20040, 25050]


def test_jitter_drifts_peers_apart() -> None:
    """Ten peers poked at the same instant (qualifypeers < 0) stay in lock-step without jitter
    and are spread over +-10 % of the interval with it."""
    ten = phones(10, freq_s=60)
    responders = {(SBC, p.port or 0): ok_after(0.01) for p in ten}
    lock = build(ten, responders, GeneralConfig(qualifypeers=-1))
    lock.run_until(61.0)
    assert {round(t, 3) for t, _, _ in lock.sent if t > 1} == {60.01}
    spread = build(ten, responders, GeneralConfig(qualifypeers=-1, jitter=0.1))
    spread.run_until(70.0)
    second = sorted(t for t, _, _ in spread.sent if t > 1)
    assert len(second) == 10 and len({round(t, 3) for t in second}) == 10
    assert all(54.0 <= t <= 66.02 for t in second)


def test_two_thousand_phones_behind_one_sbc_never_exceed_the_cap() -> None:
    """2,000 phones all due at once (qualifypeers < 0: a restart without stagger) behind one SBC
    address with max_rate_per_destination = 100: never more than 100 OPTIONS in any second,
    every phone qualified within 20 s, evenly spread, and no false state (every phone OK)."""
    many = phones(2000, freq_s=60)
    # one SBC address: every phone's OPTIONS go to the same IP (ports differ)
    responders = {(SBC, p.port or 0): ok_after(0.005) for p in many}
    sim = build(many, responders, GeneralConfig(qualifypeers=-1, max_rate_per_destination=100))
    sim.run_until(30.0)
    per_second = first_sends_per_second(sim)
    assert max(per_second.values()) == 100 and sorted(per_second) == list(range(20))
    states = [e.new for _, e in sim.events if isinstance(e, StateChanged)]
    assert states.count("OK") == 2000 and "UNREACHABLE" not in states and "LAGGED" not in states
    # spread within each second, not bursts at its start
    in_second_5 = sorted(t for t, _, _ in sim.sent if 5.0 <= t < 6.0)
    assert in_second_5[0] == 5.0 and in_second_5[-1] == 5.99
    assert sim.engine.ratecap is not None and sim.engine.ratecap.deferred == 1900
    sim.engine.self_check(30.0)
    assert sim.engine.watchdog.stats.deferred_pokes == 1900 and sim.engine.watchdog.stats.repairs == 0


def test_global_cap_and_reload_turns_it_off() -> None:
    many = phones(50, freq_s=60)
    responders = {(SBC, p.port or 0): ok_after(0.005) for p in many}
    g = GeneralConfig(qualifypeers=-1, max_rate=20)
    sim = build(many, responders, g)
    sim.run_until(5.0)
    assert first_sends_per_second(sim) == {0: 20, 1: 20, 2: 10}
    sim.engine.load(many, 5.0, general=dataclasses.replace(g, max_rate=0),
                    addresses={p.name: (SBC, p.port or 0) for p in many})
    assert sim.engine.ratecap is None
