"""Wire timelines of asterisk-observed.md §5/§6 reproduced on a virtual clock, to the ms."""

from __future__ import annotations

import pytest

from sipqualify.model import GeneralConfig
from sipqualify.qualify.engine import stagger_offsets_ms

from .sim import build, ok_after, peer, silent, trying_only

A = ("127.0.0.1", 15080)


@pytest.mark.parametrize(
    ("qualify", "sends", "giveup", "cycle"),
    [
        (500, [0, 1000], 1000, 11000),  # dead-500: 2 packets, UNREACHABLE at +1.0 s, 11 s cycle
        (2000, [0, 1000, 2000, 3000, 4000], 4000, 14000),  # dead-yes: 5 packets, +4.0 s, 14 s
        (3000, [0, 1000, 2000, 3000, 4000, 5000, 6000], 6000, 16000),  # dead-3000: 7 packets
    ],
)
def test_no_answer_timeline(qualify: int, sends: list[int], giveup: int, cycle: int) -> None:
    """observed §5: flat 1000 ms retransmits, give-up at 2 x maxms, the retransmission due
    on the give-up instant still sent, re-poke 10 s after the give-up."""
    sim = build([peer("dead", A[1], qualify, freq_s=5)], {A: silent})
    sim.run_until(cycle * 2 / 1000 + 0.5)
    expected = sends + [cycle + s for s in sends] + [2 * cycle + s for s in sends if 2 * cycle + s <= cycle * 2 + 500]
    assert sim.sends_to(A) == expected
    ch = sim.changes("dead")
    assert ch == [(giveup, "UNREACHABLE", "Peer 'dead' is now UNREACHABLE!  Last qualify: 0", False)]
    # retransmissions are byte-identical (same branch, tag, Call-ID, CSeq and Date)
    first = [d for t, dst, d in sim.sent if round(t * 1000) in sends]
    assert len(set(first)) == 1


def test_trying_only_is_unreachable_and_100_does_not_stop_retransmission() -> None:
    sim = build([peer("trying-only", A[1], 2000, freq_s=5)], {A: trying_only})
    sim.run_until(14.5)
    assert sim.sends_to(A) == [0, 1000, 2000, 3000, 4000, 14000]
    assert [c[:2] for c in sim.changes()] == [(4000, "UNREACHABLE")]


def test_reachable_repoll_after_qualifyfreq_from_response() -> None:
    """observed §6: OK -> next poke qualifyfreq after the response (5.0005 s cycle)."""
    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: ok_after(0.0005)})
    sim.run_until(16.0)
    assert [round(t * 1e4) for t, _, _ in sim.sent] == [0, 50005, 100010, 150015]
    assert sim.changes() == [(0, "OK", "Peer 'ok-yes' is now Reachable. (1ms / 2000ms)", False)]
    assert sim.engine.peer("ok-yes").status == "OK (1 ms)"  # type: ignore[union-attr]


def test_default_qualifyfreq_is_60s() -> None:
    sim = build([peer("ok-default-freq", A[1], 2000, freq_s=60)], {A: ok_after(0.001)})
    sim.run_until(125.0)
    assert sim.sends_to(A) == [0, 60001, 120002]


def test_lagged_repoll_at_rtt_plus_10s() -> None:
    """observed §6: lagged-500 with a 700 ms responder: LAGGED (700 ms), cycle 10.7 s, no
    retransmission at +500 (the flat timer has not fired yet)."""
    sim = build([peer("lagged-500", A[1], 500, freq_s=5)], {A: ok_after(0.7)})
    sim.run_until(33.0)
    assert sim.sends_to(A) == [0, 10700, 21400, 32100]
    assert sim.changes() == [(700, "LAGGED", "Peer 'lagged-500' is now Lagged. (700ms / 500ms)", False)]
    assert sim.engine.peer("lagged-500").status == "LAGGED (700 ms)"  # type: ignore[union-attr]


def test_rtt_counts_from_first_transmission() -> None:
    """observed §6 row 11: answer to the 2nd retransmission -> Reachable (2000ms / 2000ms)."""
    state = {"n": 0}

    def third_copy(req: bytes, t: float) -> list[tuple[float, bytes]]:
        state["n"] += 1
        return ok_after(0.0007)(req, t) if state["n"] == 3 else []

    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: third_copy})
    sim.run_until(7.5)
    assert sim.sends_to(A) == [0, 1000, 2000, 7001]
    assert sim.changes() == [(2001, "OK", "Peer 'ok-yes' is now Reachable. (2000ms / 2000ms)", False)]


@pytest.mark.parametrize("status", [404, 405, 481, 503, 603])
def test_any_final_response_is_reachable_with_1ms_floor(status: int) -> None:
    sim = build([peer("resp", A[1], 2000, freq_s=5)], {A: ok_after(0.0002, status, "X")})
    sim.run_until(1.0)
    assert sim.engine.peer("resp").status == "OK (1 ms)"  # type: ignore[union-attr]
    assert sim.results("resp")[0].status_code == status


def test_outage_and_recovery_like_flap() -> None:
    """observed §8.3 timeline for `flap` (qualify=500, qualifyfreq=5): UNREACHABLE at
    poke + 1.0 s, 11 s cycle while down, Reachable on the first answered poke."""
    up = {"on": True}

    def flap(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return ok_after(0.001)(req, t) if up["on"] else []

    sim = build([peer("flap", A[1], 500, freq_s=5)], {A: flap})
    sim.run_until(12.0)  # pokes at 0, 5.001, 10.002
    up["on"] = False
    sim.run_until(40.0)
    up["on"] = True
    sim.run_until(60.0)
    assert sim.sends_to(A)[:6] == [0, 5001, 10002, 15003, 16003, 26003]
    ch = sim.changes()
    assert [c[1] for c in ch] == ["OK", "UNREACHABLE", "OK"]
    assert ch[1][2] == "Peer 'flap' is now UNREACHABLE!  Last qualify: 1"
    assert ch[1][0] == 16003  # poke at 15.003 + 1.0


def test_unreachable_to_lagged_is_silent() -> None:
    """§1.4 transition table: UNREACHABLE -> LAGGED publishes nothing (was = is = false)."""
    mode = {"r": "silent"}

    def resp(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return [] if mode["r"] == "silent" else ok_after(0.7)(req, t)

    sim = build([peer("p", A[1], 500, freq_s=5)], {A: resp})
    sim.run_until(2.0)
    mode["r"] = "slow"
    sim.run_until(12.0)
    ch = sim.changes()
    assert [(c[1], c[3]) for c in ch] == [("UNREACHABLE", False), ("LAGGED", True)]


def test_lagged_to_ok_and_ok_to_lagged_publish() -> None:
    delays = iter([0.7, 0.001, 0.7, 0.7, 0.001])

    def resp(req: bytes, t: float) -> list[tuple[float, bytes]]:
        return ok_after(next(delays))(req, t)

    sim = build([peer("p", A[1], 500, freq_s=5)], {A: resp})
    sim.run_until(40.0)
    assert [(c[1], c[3]) for c in sim.changes()] == [("LAGGED", False), ("OK", False), ("LAGGED", False), ("OK", False)]


def test_stagger_offsets_formula() -> None:
    assert stagger_offsets_ms(7, 100, 1) == [0, 100, 100, 200, 200, 300, 300]
    assert stagger_offsets_ms(4, 100, 0) == [100, 200, 300, 400]
    assert stagger_offsets_ms(9, 50, 3) == [0, 0, 0, 50, 50, 50, 50, 100, 100]
    assert stagger_offsets_ms(3, 100, -1) == [0, 0, 0]


def test_startup_stagger_reproduces_observed_offsets() -> None:
    """observed §6 start-up: 12 qualified peers at 0, 100, 100, ..., 500, 500, 600 ms, each in
    the slot Asterisk 20.20.1 gave it (its peers container order, not the config order); the
    unqualified peer takes no slot. The names are in the order of the captured sip.conf."""
    names = ["ok-yes", "ok-500", "ok-default-freq", "lagged-500", "resp-404", "trying-only", "user-peer",
             "sipp-uas", "flap", "dead-yes", "dead-500", "dead-3000", "noqualify"]
    peers = [peer(n, 15000 + i, 0 if n == "noqualify" else 2000) for i, n in enumerate(names)]
    sim = build(peers, {}, GeneralConfig(qualifygap_ms=100, qualifypeers=1))
    sim.run_until(0.65)
    first: dict[int, int] = {}
    for t, dst, _ in sim.sent:
        first.setdefault(dst[1], round(t * 1000))
    slots = {"ok-yes": 0, "sipp-uas": 100, "flap": 100, "resp-404": 200, "lagged-500": 200, "user-peer": 300,
             "dead-500": 300, "trying-only": 400, "dead-3000": 400, "ok-500": 500, "dead-yes": 500,
             "ok-default-freq": 600}  # captured first-TX slots, asterisk-observed.md §6
    assert {n: first.get(15000 + i) for i, n in enumerate(names)} == {**slots, "noqualify": None}


def test_forced_qualify_keeps_the_schedule() -> None:
    """Unlike chan_sip (§0.9: orphaned, retransmitted for 31 s, never polled again), a forced
    poke of a dead peer gets a give-up timer and the periodic poll continues."""
    sim = build([peer("dead-yes", A[1], 2000, freq_s=5)], {A: silent})
    sim.run_until(6.0)  # first poke 0..4, UNREACHABLE at 4, next at 14
    sim.now = 6.0
    assert sim.engine.qualify("dead-yes", 6.0)
    sim.run_until(40.0)
    assert sim.sends_to(A) == [0, 1000, 2000, 3000, 4000,
                               6000, 7000, 8000, 9000, 10000,
                               20000, 21000, 22000, 23000, 24000,
                               34000, 35000, 36000, 37000, 38000]


def test_forced_qualify_of_reachable_peer_restarts_cycle() -> None:
    sim = build([peer("ok-yes", A[1], 2000, freq_s=5)], {A: ok_after(0.001)})
    sim.run_until(2.0)
    sim.now = 2.0
    assert sim.engine.qualify("ok-yes", 2.0)
    sim.run_until(8.0)
    assert sim.sends_to(A) == [0, 2000, 7001]


def test_forced_qualify_unmonitored_reports_but_records_nothing() -> None:
    sim = build([peer("noq", A[1], 0)], {A: ok_after(0.002)})
    sim.run_until(1.0)
    assert sim.sent == []
    assert sim.engine.qualify("noq", 1.0)
    sim.run_until(3.0)
    r = sim.results("noq")
    assert len(r) == 1 and r[0].answered and r[0].forced
    assert sim.engine.peer("noq").status == "Unmonitored"  # type: ignore[union-attr]
    assert sim.changes() == []


def test_reload_keeps_state_and_restaggers_without_events() -> None:
    sim = build([peer("a", 15070, 2000, freq_s=60), peer("b", 15071, 2000, freq_s=60)],
                {("127.0.0.1", 15070): ok_after(0.001), ("127.0.0.1", 15071): silent})
    sim.run_until(10.0)
    n_events = len(sim.changes())
    cfgs = [peer("a", 15070, 2000, freq_s=60), peer("c", 15072, 0)]
    s = sim.engine.load(cfgs, 10.0, addresses={"a": ("127.0.0.1", 15070), "c": ("127.0.0.1", 15072)})
    assert s.added == ["c"] and s.removed == ["b"] and s.unchanged == ["a"]
    assert sim.engine.peer("a").status == "OK (1 ms)"  # type: ignore[union-attr]
    sim.run_until(10.5)
    assert len(sim.changes()) == n_events
    assert sim.sends_to(("127.0.0.1", 15070))[-1] == 10000  # re-poked at reload (+0 ms)
    assert sim.engine.peer("b") is None


def test_peer_without_address_is_unknown_and_not_polled() -> None:
    from sipqualify.model import PeerConfig

    dyn = PeerConfig(name="1001", dynamic=True, qualify_ms=2000)
    sim = build([dyn], {})
    sim.run_until(100.0)
    assert sim.sent == []
    assert sim.engine.peer("1001").status == "UNKNOWN"  # type: ignore[union-attr]


def test_rfc3261_policy_timer_e_doubling() -> None:
    sim = build([peer("r", A[1], 10000, freq_s=60, retransmit="rfc3261")], {A: silent})
    sim.run_until(19.0)
    assert sim.sends_to(A) == [0, 500, 1500, 3500, 7500, 11500, 15500, 19500][:7]


def test_tcp_never_retransmits() -> None:
    sim = build([peer("t", A[1], 2000, freq_s=60, transport="tcp")], {A: silent})
    sim.run_until(5.0)
    assert sim.sends_to(A) == [0]
    assert [c[1] for c in sim.changes()] == ["UNREACHABLE"]


def test_keepalive_crlf_starts_at_registration() -> None:
    """keepalive=N: a bare CRLF every N s (chan_sip); here it also starts when a dynamic peer
    registers, which chan_sip only does at load/reload (asterisk-qualify.md §1.6)."""
    from sipqualify.model import PeerConfig

    dyn = PeerConfig(name="1001", dynamic=True, qualify_ms=0, keepalive_s=5)
    sim = build([dyn], {})
    sim.run_until(20.0)
    assert sim.sent == []  # no address: nothing
    sim.engine.registered("1001", ("10.0.0.9", 5062), 20.0, "sip:1001@10.0.0.9:5062")
    sim.run_until(36.0)
    assert [(round(t), d) for t, _, d in sim.sent] == [(25, b"\r\n"), (30, b"\r\n"), (35, b"\r\n")]
    sim.engine.unregistered("1001")
    sim.run_until(60.0)
    assert len(sim.sent) == 3
