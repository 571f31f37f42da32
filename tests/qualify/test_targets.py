"""qualify_targets = all: every DNS target qualified on its own and the peer's state rolled up
(qualify/targets.py), as Asterisk PJSIP since asterisk/asterisk PR #2041, on a virtual clock."""

from __future__ import annotations

from sipqualify.qualify.events import StateChanged
from sipqualify.qualify.targets import Target, TargetChanged, rollup

from .sim import Responder, Sim, make_engine, ok_after, peer, silent

A = Target("udp", "a.trunk.test", 15080, "127.0.0.1")
B = Target("udp", "b.trunk.test", 15080, "127.0.0.2")
C = Target("udp", "c.trunk.test", 15080, "127.0.0.3")


def start(responders: dict[tuple[str, int], Responder], targets: list[Target], freq_s: int = 60) -> Sim:
    eng = make_engine()
    sim = Sim(eng, responders)
    eng.load([peer("trunk", 15080, freq_s=freq_s)], 0.0, addresses={"trunk": targets[0].addr})
    eng.set_targets("trunk", targets, 0.0, poke=False)  # the peer's staggered poke starts them
    return sim


def target_changes(sim: Sim) -> list[tuple[int, str, str]]:
    return [(round(t * 1000), e.target.split("/")[1], e.new) for t, e in sim.events if isinstance(e, TargetChanged)]


def peer_changes(sim: Sim) -> list[tuple[int, str, bool]]:
    return [(round(t * 1000), e.new, e.silent) for t, e in sim.events if isinstance(e, StateChanged)]


def switchable(r: Responder) -> tuple[Responder, list[Responder]]:
    box = [r]
    return (lambda req, t: box[0](req, t)), box


def test_rollup_table() -> None:
    assert rollup([(20, 0.02), (-1, None)]) == (20, 0.02)  # any answering: reachable
    assert rollup([(2500, 2.5), (40, 0.04)]) == (40, 0.04)  # the best answering target
    assert rollup([(-1, None), (-1, None)]) == (-1, None)  # all failed
    assert rollup([(-1, None), (0, None)]) is None  # one not known yet: no verdict
    assert rollup([]) is None


def test_one_dead_target_leaves_the_peer_reachable() -> None:
    sim = start({A.addr: ok_after(0.02), B.addr: silent}, [A, B])
    sim.run_until(10.0)
    eng = sim.engine
    p = eng.peer("trunk")
    assert p is not None and p.state == "OK" and p.lastms == 20
    assert sim.sends_to(A.addr) == [0] and sim.sends_to(B.addr)[0] == 0  # both poked, each on its own
    assert target_changes(sim) == [(20, "127.0.0.1", "OK"), (4000, "127.0.0.2", "UNREACHABLE")]
    assert peer_changes(sim) == [(20, "OK", False)]  # the dead target publishes nothing for the peer
    states = {t.target.address: t.state for t in eng.targets("trunk")}
    assert states == {"127.0.0.1": "OK", "127.0.0.2": "UNREACHABLE"}
    assert [x.name for x in eng.peers()] == ["trunk"] and len(eng) == 1  # targets are no peers
    assert eng.target("trunk#udp:b.trunk.test:15080/127.0.0.2") is eng.targets("trunk")[1]
    # a target's results carry its own key (its history is its own)
    assert [r.answered for r in sim.results("trunk#udp:a.trunk.test:15080/127.0.0.1")] == [True]
    assert sim.results("trunk") == []


def test_all_targets_dead_is_unreachable_once() -> None:
    sim = start({A.addr: silent, B.addr: silent}, [A, B], freq_s=5)
    sim.run_until(60.0)
    # the second target's give-up completes "all failed": one transition, one NOTICE line
    assert peer_changes(sim) == [(4000, "UNREACHABLE", False)]
    lines = [e.log_line() for _, e in sim.events if isinstance(e, StateChanged)]
    assert lines == ["Peer 'trunk' is now UNREACHABLE!  Last qualify: 0"]
    assert [c[2] for c in target_changes(sim)] == ["UNREACHABLE", "UNREACHABLE"]
    assert len(sim.sends_to(A.addr)) > 10  # still qualified every 10 s (freq_notok) meanwhile


def test_a_target_coming_back_makes_the_peer_reachable() -> None:
    rb, box = switchable(silent)
    sim = start({A.addr: silent, B.addr: rb}, [A, B])
    sim.run_until(5.0)
    box[0] = ok_after(0.03)
    sim.run_until(20.0)  # the next poke of B, 10 s after its give-up
    assert peer_changes(sim) == [(4000, "UNREACHABLE", False), (14030, "OK", False)]
    p = sim.engine.peer("trunk")
    assert p is not None and p.status == "OK (30 ms)"


def test_lagged_follows_the_best_answering_target() -> None:
    rb, box = switchable(ok_after(0.05))
    sim = start({A.addr: ok_after(2.5), B.addr: rb}, [A, B], freq_s=5)
    sim.run_until(4.0)
    p = sim.engine.peer("trunk")
    assert p is not None and p.status == "OK (50 ms)"  # A is LAGGED, B answers well: OK
    box[0] = silent
    sim.run_until(30.0)
    assert p.state == "LAGGED" and p.lastms == 2500  # B dead: the best answering is A
    assert [c[1] for c in peer_changes(sim)] == ["OK", "LAGGED"]


def test_a_changed_target_set_is_rolled_up_again() -> None:
    sim = start({A.addr: ok_after(0.02), B.addr: silent, C.addr: ok_after(0.01)}, [A, B])
    sim.run_until(10.0)
    eng = sim.engine
    added, removed = eng.set_targets("trunk", [B], sim.now)  # A's record is gone
    assert (added, removed) == ([], ["udp:a.trunk.test:15080/127.0.0.1"])
    p = eng.peer("trunk")
    assert p is not None and p.state == "UNREACHABLE"  # only the dead target is left
    added, removed = eng.set_targets("trunk", [B, C], sim.now)
    assert added == ["udp:c.trunk.test:15080/127.0.0.3"] and removed == []
    sim.run_until(10.5)
    assert sim.sends_to(C.addr) == [10000]  # a new target is qualified at once
    assert p.state == "OK" and [c[1] for c in peer_changes(sim)] == ["OK", "UNREACHABLE", "OK"]
    sends = len(sim.sends_to(A.addr))
    sim.run_until(200.0)
    assert len(sim.sends_to(A.addr)) == sends  # a dropped target is never poked again
    # back to chan_sip's one target: the peer is qualified itself again
    assert eng.set_targets("trunk", [], sim.now) == ([], ["udp:b.trunk.test:15080/127.0.0.2",
                                                          "udp:c.trunk.test:15080/127.0.0.3"])
    assert eng.targets("trunk") == []


def test_forced_qualify_pokes_every_target_and_reload_keeps_them() -> None:
    sim = start({A.addr: ok_after(0.02), B.addr: ok_after(0.02)}, [A, B])
    sim.run_until(1.0)
    eng = sim.engine
    assert eng.qualify("trunk", sim.now)
    sim.run_until(2.0)
    assert sim.sends_to(A.addr) == [0, 1000] and sim.sends_to(B.addr) == [0, 1000]
    before = eng.targets("trunk")
    eng.load([peer("trunk", 15080, qualify=3000)], sim.now)
    assert eng.targets("trunk") == before and all(t.maxms == 3000 for t in before)
    eng.load([], sim.now)  # the peer is removed: so are its targets
    assert eng.targets("trunk") == [] and all(t.removed for t in before)
