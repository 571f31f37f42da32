"""Overload never makes a false state (issue 15; README "Overload").

A 1,000,000-peer daemon run that fell 319 s behind ended with 122,034 false UNREACHABLE. The
cause, reproduced here on the virtual clock: one heap held every timer, so pokes overdue by
minutes sorted before the retransmissions of the pokes just sent. A retransmission then went
out only together with its give-up, and one lost datagram (the responder's full buffer) made
a healthy peer UNREACHABLE. Now transaction timers run first, a retransmission due during a
stall restarts its poke, and a give-up while our own socket lost datagrams is not judged.
"""

from __future__ import annotations

import heapq

from sipqualify.qualify import engine as engine_mod
from sipqualify.qualify.events import QualifyResult, StateChanged

from .sim import Addr, Sim, answer, build, header, peer

A: Addr = ("127.0.0.1", 15111)


class LosesFirstCopy:
    """Answers in 1 ms, except that the first copy of some requests is lost on the way (a
    responder whose receive buffer was full): only a retransmission is answered."""

    def __init__(self, lossy: set[str], budget: int | None = None) -> None:
        self.lossy = lossy
        self.seen: set[str] = set()
        self.budget = budget  # how many datagrams to lose in all (None: no limit)

    def __call__(self, req: bytes, t: float) -> list[tuple[float, bytes]]:
        user = header(req, "From").split("sip:", 1)[1].split("@", 1)[0]
        branch = header(req, "Via").split("branch=", 1)[1].split(";", 1)[0]
        if user in self.lossy and branch not in self.seen and self.budget != 0:
            self.seen.add(branch)
            if self.budget is not None:
                self.budget -= 1
            return []
        return [(0.001, answer(req))]


def overloaded_run(sim: Sim, t_end: float, cost_per_timer: float, batch: int = 4) -> float:
    """The daemon's loop with too little CPU: each turn reads what arrived (timestamped when
    it arrived, as the kernel does), then runs at most `batch` timers, and every timer costs
    `cost_per_timer` seconds. Returns the largest lateness of a due timer seen."""
    eng = sim.engine
    worst = 0.0
    while sim.now < t_end:
        while sim._pending and sim._pending[0][0] <= sim.now:
            t_rx, _, src, data = heapq.heappop(sim._pending)
            eng.receive_datagram(data, src, t_rx)
        sim._flush()
        due = eng.get_timer()
        if due is None or due > sim.now:
            nxt = [t for t in (due, sim._pending[0][0] if sim._pending else None) if t is not None]
            sim.now = min([t_end, *nxt])
            continue
        worst = max(worst, sim.now - due)
        before = eng.stats.transmissions + eng.stats.timeouts + eng.stats.late_restarts + eng.stats.inconclusive
        eng.handle_timer(sim.now, limit=batch)
        sim._flush()
        after = eng.stats.transmissions + eng.stats.timeouts + eng.stats.late_restarts + eng.stats.inconclusive
        sim.now += cost_per_timer * max(1, after - before)
    return worst


def test_retransmissions_are_not_starved_by_an_overdue_schedule() -> None:
    """600 peers at qualifyfreq 1 s on a loop that runs 50 timers a second: the schedule falls
    more than 10 s behind (chan_sip schedules the next poke after the answer, so it settles at
    600 / 50 - 1 s). A tenth of the peers lose the first copy of every request. Their
    retransmissions must still go out on time and be answered: no peer ever leaves OK."""
    n = 600
    lossy = {f"p{i:04d}" for i in range(0, n, 10)}
    peers = [peer(f"p{i:04d}", A[1], 2000, freq_s=1, fromuser=f"p{i:04d}") for i in range(n)]
    sim = build(peers, {A: LosesFirstCopy(lossy)})
    worst = overloaded_run(sim, 60.0, 0.02)
    assert worst > 10.0, "the run must really be overloaded for this test to mean anything"
    eng = sim.engine
    assert eng.stats.retransmissions > 50  # the lossy peers were retransmitted to, and answered
    bad = [e for _, e in sim.events if isinstance(e, StateChanged) and e.new not in ("OK", "UNKNOWN")]
    assert bad == []
    assert eng.stats.timeouts == 0
    assert {p.state for p in eng.peers()} == {"OK"}
    # the RTTs are the peers' (a lost first copy: answered 1 ms after the 1 s retransmission)
    rtts = [e.rtt for _, e in sim.events if isinstance(e, QualifyResult) and e.rtt is not None]
    assert max(rtts) < 1.0 + engine_mod.LATE_S + 0.001


def test_a_retransmission_due_during_a_stall_restarts_the_poke() -> None:
    """The first copy is lost and the shell stalls from 0.5 s to 5 s, past the retransmission
    (1 s) and the give-up (4 s). chan_sip's timing, run late, would send the retransmission
    and give up at the same instant: UNREACHABLE. A fresh poke is sent instead (new branch,
    its own RTT clock): answered in 1 ms, the peer stays OK."""
    sim = build([peer("p", A[1], 2000, freq_s=60, fromuser="p")], {A: LosesFirstCopy({"p"}, budget=1)})
    sim.run_until(0.5)
    assert len(sim.sent) == 1
    sim.stall_until(5.0)
    sim.run_until(6.0)
    eng = sim.engine
    first, second = sim.sent[0][2], sim.sent[1][2]
    assert header(first, "Call-ID") != header(second, "Call-ID")  # a new poke, not a copy
    assert sim.sends_to(A) == [0, 5000]
    assert eng.stats.late_restarts == 1 and eng.stats.retransmissions == 0 and eng.stats.timeouts == 0
    res = sim.results("p")
    assert [(r.answered, round((r.rtt or 0) * 1000)) for r in res] == [(True, 1)]
    assert [c[1] for c in sim.changes("p")] == ["OK"]


def test_restarts_are_bounded_a_dead_peer_is_still_judged() -> None:
    """A silent peer on a shell that stalls over every retransmission: restarted at most
    INCONCLUSIVE_MAX times in a row, then judged (UNREACHABLE) as chan_sip would."""
    sim = build([peer("p", A[1], 2000, freq_s=60)], {})
    t = 0.0
    for _ in range(engine_mod.INCONCLUSIVE_MAX + 1):
        t += 1.5  # every stall passes the 1 s retransmission
        sim.stall_until(t)
    sim.run_until(t + 10.0)
    assert sim.engine.stats.late_restarts == engine_mod.INCONCLUSIVE_MAX
    assert [c[1] for c in sim.changes("p")] == ["UNREACHABLE"]


def test_a_give_up_while_our_socket_lost_datagrams_is_retried_not_judged() -> None:
    """The shell says our receive buffer overflowed (receive_loss) while a poke was in flight:
    its give-up is inconclusive, the peer is poked again 1 s later and, answering, stays OK.
    A loss seen before the poke started does not excuse its give-up."""
    answers = {"on": True}

    def responder(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return [(0.001, answer(req))] if answers["on"] else []

    sim = build([peer("p", A[1], 2000, freq_s=60)], {A: responder})
    sim.run_until(0.002)
    assert [c[1] for c in sim.changes("p")] == ["OK"]
    # the poke at 60.001 gets no answer (what the peer sent was lost on our side: the shell
    # saw our socket's drop count rise at 61 s); the peer answers the retry
    answers["on"] = False
    sim.run_until(61.0)
    sim.engine.receive_loss(61.0)
    sim.run_until(64.5)
    answers["on"] = True
    sim.run_until(70.0)
    eng = sim.engine
    assert eng.stats.inconclusive == 1 and eng.stats.timeouts == 0
    assert [c[1] for c in sim.changes("p")] == ["OK"]
    assert sim.sends_to(A)[1:] == [60001, 61001, 62001, 63001, 64001, 65001]  # give-up at 64.001, retry at 65.001
    # a loss before the poke: its give-up is judged
    sim.run_until(125.0)
    answers["on"] = False
    sim.run_until(125.003 + 4.0 + 1.0)
    assert [c[1] for c in sim.changes("p")] == ["OK", "UNREACHABLE"]
