"""QualifyEngine.update for peers handed over by another node (cluster/): they start from their
last known state (no false transition) and their first pokes are spread, on a virtual clock."""

from __future__ import annotations

from .sim import Sim, make_engine, ok_after, peer


def addr(i: int) -> tuple[str, int]:
    return ("127.0.0.1", 16000 + i)


def test_peers_taken_over_start_from_their_state_and_spread_their_pokes() -> None:
    eng = make_engine()
    names = [f"t{i}" for i in range(8)]
    sim = Sim(eng, {addr(i): ok_after(0.01) for i in range(8)})
    eng.load([], 0.0)
    sim.run_until(1.0)
    cfgs = [peer(n, addr(i)[1], freq_s=4) for i, n in enumerate(names)]
    eng.update(cfgs, [], sim.now, addresses={n: addr(i) for i, n in enumerate(names)},
               restored={n: 12 for n in names}, spread_s=1.0)
    assert all((p := eng.peer(n)) is not None and p.state == "OK" and p.lastms == 12 for n in names)
    sim.run_until(2.5)
    firsts = sorted(sim.sends_to(addr(i))[0] for i in range(8))
    assert firsts == [1000, 1125, 1250, 1375, 1500, 1625, 1750, 1875]  # over spread_s, not one burst
    assert sim.changes() == []  # OK before, OK after: nothing to report
    for n in names:
        p = eng.peer(n)
        assert p is not None and p.state == "OK" and p.lastms != 12  # measured anew


def test_a_peer_taken_over_without_a_stored_state_reports_its_first_one() -> None:
    eng = make_engine()
    sim = Sim(eng, {addr(0): ok_after(0.01)})
    eng.load([], 0.0)
    eng.update([peer("t0", addr(0)[1])], [], 0.0, addresses={"t0": addr(0)}, restored={})
    sim.run_until(0.5)
    assert sim.sends_to(addr(0)) == [0]  # no spread: at once, as a realtime row
    assert [c[1] for c in sim.changes("t0")] == ["OK"]
