"""Verdict policies and hysteresis (qualify/verdict.py) on the virtual clock; issue 13 items 1-2."""

from __future__ import annotations

import dataclasses

import pytest

from sipqualify.qualify import verdict as vd
from sipqualify.qualify.events import VerdictChanged

from .sim import Responder, Sim, answer, build, header, ok_after, peer, silent

A = ("127.0.0.1", 15090)


def script(*steps: int | None, delay: float = 0.005) -> Responder:
    """Poke n gets steps[n] (a status code, or None: every transmission of it dropped); the
    last step repeats. Retransmissions of one poke share its Call-ID."""
    seen: dict[str, int] = {}

    def respond(req: bytes, t: float) -> list[tuple[float, bytes]]:
        n = seen.setdefault(header(req, "Call-ID"), len(seen))
        code = steps[min(n, len(steps) - 1)]
        return [] if code is None else [(delay, answer(req, code, "X"))]

    return respond


def verdicts(sim: Sim) -> list[tuple[int, str, str, int, int]]:
    return [(round(t * 1000), e.new, e.reason, e.count, e.threshold) for t, e in sim.events
            if isinstance(e, VerdictChanged)]


@pytest.mark.parametrize(
    ("text", "inside", "outside", "canonical"),
    [
        ("2xx", [200, 299], [199, 300, 404], "200-299"),
        ("200-299,404", [200, 250, 404], [403, 405, 503], "200-299,404"),
        (" 503 , 486 ", [503, 486], [500], "486,503"),
        ("1xx,6XX", [100, 699], [200], "100-199,600-699"),
    ],
)
def test_code_sets(text: str, inside: list[int], outside: list[int], canonical: str) -> None:
    cs = vd.CodeSet(text)
    assert all(c in cs for c in inside) and not any(c in cs for c in outside)
    assert cs.text == canonical


@pytest.mark.parametrize("bad", ["", "abc", "200-", "299-200", "700", "2xy", "٢٠٠"])
def test_bad_code_sets_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        vd.CodeSet(bad)


@pytest.mark.parametrize(
    ("status", "lagged", "refused", "expected"),
    [
        (200, False, False, ("up", "")),
        (200, True, False, ("degraded", "lagged")),
        (503, False, False, ("degraded", "degraded:503")),
        (486, False, False, ("degraded", "degraded:486")),
        (404, False, False, ("down", "reply:404")),
        (407, False, False, ("down", "auth_required")),
        (403, False, False, ("down", "auth_required")),
        (None, False, False, ("down", "timeout")),
        (None, False, True, ("down", "refused")),
    ],
)
def test_classify(status: int | None, lagged: bool, refused: bool, expected: tuple[str, str]) -> None:
    pol = vd.VerdictPolicy("p", vd.CodeSet("2xx"), vd.CodeSet("503,486"))
    assert tuple(vd.classify(pol, status, lagged, refused)) == expected


def test_chan_sip_default_any_final_response_is_up_auth_noted() -> None:
    assert tuple(vd.classify(vd.CHAN_SIP_VERDICT, 404, False)) == ("up", "")
    assert tuple(vd.classify(vd.CHAN_SIP_VERDICT, 401, False)) == ("up", "auth_required")
    assert tuple(vd.classify(vd.CHAN_SIP_VERDICT, 503, False)) == ("up", "")


def test_default_verdict_follows_chan_sip_and_timeline_is_unchanged() -> None:
    """No policy: verdict up at the answer, down at the chan_sip give-up, chan_sip's re-poll times."""
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: script(200, None, 200)})
    sim.run_until(25.0)
    assert sim.sends_to(A) == [0, 5005, 6005, 7005, 8005, 9005, 19005, 24010]
    assert [c[:2] for c in sim.changes("p")] == [(5, "OK"), (9005, "UNREACHABLE"), (19010, "OK")]
    assert verdicts(sim) == [(5, "up", "", 0, 0), (9005, "down", "timeout", 0, 0), (19010, "up", "", 0, 0)]


def test_reply_up_2xx_makes_404_down_but_chan_sip_status_stays_ok() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5, reply_up="200-299")], {A: ok_after(0.012, 404, "Not Found")})
    sim.run_until(1.0)
    p = sim.engine.peer("p")
    assert p is not None and p.status == "OK (12 ms)"  # compat output untouched
    assert (p.verdict.verdict, p.verdict.reason) == ("down", "reply:404")


def test_degraded_codes() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5, reply_degraded="503,486")], {A: script(200, 503, 200)})
    sim.run_until(11.0)
    assert [v[1:3] for v in verdicts(sim)] == [("up", ""), ("degraded", "degraded:503"), ("up", "")]


def test_down_after_3_pending_is_visible_and_one_loss_never_goes_down() -> None:
    """One lost poll: pending (1 of 3), then up again; three in a row: down at the third give-up."""
    cfg = peer("p", A[1], 500, freq_s=5, down_after=3)
    sim = build([cfg], {A: script(200, None, 200, None, None, None, 200)})
    sim.run_until(80.0)
    got = verdicts(sim)
    assert [v[1:] for v in got] == [
        ("up", "", 0, 0),
        ("pending", "timeout", 1, 3),  # the first lost poll
        ("up", "", 0, 0),  # answered again: never went down
        ("pending", "timeout", 1, 3),
        ("pending", "timeout", 2, 3),
        ("down", "timeout", 0, 0),
        ("up", "", 0, 0),  # up_after=1: the first answer
    ]
    # the chan_sip state went UNREACHABLE at the first loss all the same
    assert [c[1] for c in sim.changes("p")][:3] == ["OK", "UNREACHABLE", "OK"]


def test_up_after_2_counts_successes_after_down() -> None:
    cfg = peer("p", A[1], 500, freq_s=5, up_after=2)
    sim = build([cfg], {A: script(None, 200)})
    sim.run_until(30.0)
    assert [v[1:] for v in verdicts(sim)] == [
        ("down", "timeout", 0, 0), ("pending", "", 1, 2), ("up", "", 0, 0),  # down_after=1: at once
    ]
    sim = build([cfg], {A: script(200, 200, None, 200, 200)})
    sim.run_until(60.0)
    assert [v[1:] for v in verdicts(sim)] == [
        ("pending", "", 1, 2), ("up", "", 0, 0), ("down", "timeout", 0, 0), ("pending", "", 1, 2), ("up", "", 0, 0),
    ]


def test_retry_interval_repolls_quickly_while_counting_then_chan_sip_times() -> None:
    """down_after=3, retry_interval=2: after each unconfirmed loss the next poke is 2 s after the
    give-up (not chan_sip's 10 s); once down, chan_sip's 10 s re-poll again."""
    cfg = peer("p", A[1], 500, freq_s=60, down_after=3, retry_interval_s=2)
    sim = build([cfg], {A: silent})
    sim.run_until(30.0)
    # pokes at 0, then give-up at 1.0 -> +2 s; at 4.0 -> +2 s; 3rd give-up at 7.0 is down -> +10 s
    assert sim.sends_to(A) == [0, 1000, 3000, 4000, 6000, 7000, 17000, 18000, 28000, 29000]
    assert [v[:2] for v in verdicts(sim)] == [(1000, "pending"), (4000, "pending"), (7000, "down")]


def test_retry_interval_leaves_the_lagged_repoll_and_a_longer_retry_changes_nothing() -> None:
    """A LAGGED answer is alive (degraded: lagged): no retry, chan_sip's 10 s from the answer. A
    retry_interval longer than chan_sip's own re-poll (10 s after a give-up) never delays it."""
    cfg = peer("p", A[1], 500, freq_s=60, down_after=3, retry_interval_s=2)
    sim = build([cfg], {A: ok_after(0.7)})
    sim.run_until(25.0)
    assert sim.sends_to(A) == [0, 10700, 21400]
    assert [v[1:3] for v in verdicts(sim)] == [("degraded", "lagged")]
    slow = dataclasses.replace(cfg, name="q", retry_interval_s=15)
    sim = build([slow], {A: silent})
    sim.run_until(12.0)
    assert sim.sends_to(A) == [0, 1000, 11000, 12000]


def test_retry_interval_off_by_default_is_chan_sip_exact() -> None:
    sim = build([peer("p", A[1], 500, freq_s=60, down_after=3)], {A: silent})
    sim.run_until(12.0)
    assert sim.sends_to(A) == [0, 1000, 11000, 12000]


def test_icmp_error_gives_reason_refused() -> None:
    sim = build([peer("p", A[1], 500, freq_s=60)], {A: silent})
    sim.engine.transport_error(A, 0.1, "port unreachable")
    sim.run_until(2.0)
    assert verdicts(sim) == [(1000, "down", "refused", 0, 0)]


def test_lost_address_resets_verdict_to_unknown() -> None:
    sim = build([peer("p", A[1], 2000, freq_s=5)], {A: ok_after(0.001)})
    sim.run_until(1.0)
    sim.engine.unregistered("p")
    sim.run_until(6.0)
    assert [v[1] for v in verdicts(sim)] == ["up", "unknown"]
