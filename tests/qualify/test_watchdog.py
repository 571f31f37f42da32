"""The liveness watchdog (qualify/watchdog.py) on the virtual clock; issue 13 item 7: a stalled
clock jump raises the lateness alarm without repairs; a lost pending poke is found and re-armed."""

from __future__ import annotations

from sipqualify.qualify.events import PokeOverdue, PokeRepaired

from .sim import build, ok_after, peer

A = ("127.0.0.1", 15092)
B = ("127.0.0.1", 15093)


def test_working_schedule_raises_nothing() -> None:
    sim = build([peer("p", A[1], 500, freq_s=5)], {A: ok_after(0.01)})
    for t in range(1, 120):
        sim.run_until(float(t))
        sim.engine.self_check(float(t))
        sim.run_until(float(t))
    assert not [e for _, e in sim.events if isinstance(e, PokeOverdue | PokeRepaired)]
    w = sim.engine.watchdog.stats
    assert (w.overdue_pokes, w.repairs, w.overdue_peers) == (0, 0, 0) and w.sweeps > 0
    assert sim.sends_to(A)[:3] == [0, 5010, 10020]  # the timeline is chan_sip's


def test_stalled_scheduler_is_lag_and_overdue_pokes_not_repairs() -> None:
    """The shell did not drive the engine for 100 s (a stalled loop): the check sees the earliest
    timer 95 s late, repairs nothing (late is not lost); the pokes then run late and are alarms."""
    sim = build([peer("p", A[1], 500, freq_s=5), peer("q", B[1], 500, freq_s=5)],
                {A: ok_after(0.01), B: ok_after(0.01)})
    sim.run_until(1.0)
    eng = sim.engine
    eng.self_check(105.0)  # the clock jumped; no timer ran
    assert eng.watchdog.stats.lag_s == 105.0 - 5.01
    assert eng.watchdog.stats.repairs == 0
    sim.stall_until(105.0)  # the backlog runs now
    late = [e for _, e in sim.events if isinstance(e, PokeOverdue)]
    assert sorted(e.peer for e in late) == ["p", "q"]
    assert sorted(round(e.lag, 2) for e in late) == [round(105.0 - 5.11, 2), round(105.0 - 5.01, 2)]
    assert eng.watchdog.stats.overdue_pokes == 2
    eng.self_check(105.0)
    assert eng.watchdog.stats.lag_s == 0.0  # caught up


def test_lost_pending_poke_is_found_and_rearmed_once() -> None:
    """A bug invalidates p's pending poke (its generation moves on, nothing pushed): p would never
    be qualified again. The sweep finds it once it has been silent for longer than twice its
    interval plus its give-up, re-arms it (counted, reported), and it is qualified again; q,
    working, is left alone."""
    sim = build([peer("p", A[1], 500, freq_s=5), peer("q", B[1], 500, freq_s=5)],
                {A: ok_after(0.01), B: ok_after(0.01)})
    sim.run_until(2.0)
    eng = sim.engine
    p = eng.peer("p")
    assert p is not None
    p.poke_gen += 1  # the lost poke
    t = 2.0
    while t < 60.0:
        t += 1.0
        sim.run_until(t)
        eng.self_check(t)
        sim.run_until(t)
    repairs = [(round(ts), e.peer) for ts, e in sim.events if isinstance(e, PokeRepaired)]
    # p's first poke at 0.1 (the stagger), its last result at 0.11; bound = 2 x 10 s (interval:
    # max(qualifyfreq, chan_sip's 10 s re-poll)) + 1 s give-up + 5 s grace = 26 s: found at the
    # first check after 26.11
    assert repairs == [(27, "p")]
    assert eng.watchdog.stats.repairs == 1
    sends = sim.sends_to(A)
    assert sends[:3] == [100, 27000, 32010]  # qualified again, on its cycle
    assert [r.peer for r in sim.results("q")][:5] == ["q"] * 5
    assert not [e for _, e in sim.events if isinstance(e, PokeRepaired) and e.peer == "q"]
    assert not [e for _, e in sim.events if isinstance(e, PokeOverdue)]


def test_peers_in_the_start_up_stagger_are_not_lost() -> None:
    """chan_sip's stagger (100 ms per peer by default) puts first pokes far out for many peers:
    they are not stale before their first poke is due."""
    peers = [peer(f"p{i:03d}", 16000 + i, 500, freq_s=60) for i in range(400)]  # 20 s of stagger
    sim = build(peers, {})  # nobody answers
    eng = sim.engine
    assert eng.watchdog.stagger_end == 20.0  # chan_sip: two peers per 100 ms after the first
    for t in range(1, 40):
        sim.run_until(float(t))
        eng.self_check(float(t))
        assert eng.watchdog.stats.lag_s < 0.1  # on time
    assert eng.watchdog.stats.repairs == 0 and eng.watchdog.stats.overdue_peers == 0
    assert eng.watchdog.stats.sweeps > 0
