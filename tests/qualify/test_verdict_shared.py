"""Settled verdicts are shared objects (qualify/verdict.py `settled`, engine `Peer.own_verdict`):
the engine's peers must show, field for field and event for event, what one PeerVerdict per peer
changed in place (the structure before sharing) shows, and no shared object may ever change."""

from __future__ import annotations

import random

import pytest

from sipqualify.qualify import verdict as vd
from sipqualify.qualify.engine import Peer
from sipqualify.qualify.events import FlapChanged, VerdictChanged
from sipqualify.qualify.flap import flap_policy

from .sim import make_engine, peer

FIELDS = ("policy", "confirmed", "reason", "streak", "toward", "refused", "status", "flap")

POLICIES = {
    "chan_sip": vd.CHAN_SIP_VERDICT,
    "2of3": vd.policy_for("2of3", "2xx", "503", 2, 3, 1.0),
    "flap": vd.policy_for("flap", "", "", 1, 1, 0.0, flap_policy(1000, 2000, 750, 60)),
}


def reference_judge(v: vd.PeerVerdict, name: str, status: int | None, lagged: bool, now: float,
                    auth_failed: bool) -> list[tuple[object, ...]]:
    """QualifyEngine._judge as it was, on a verdict of the peer's own changed in place."""
    out: list[tuple[object, ...]] = []
    before = v.confirmed
    old = v.observe(status, lagged, auth_failed)
    flap = v.damp(before, now) if v.policy.flap is not None or v.flap is not None else None
    if flap is not None:
        assert v.flap is not None
        out.append(("flap", name, v.flapping, v.flap.penalty, v.verdict, v.reason, v.policy.name, now))
    if old is not None and not v.flapping:
        out.append(("verdict", name, old, v.verdict, v.reason, v.policy.name, now, v.streak, v.threshold))
    return out


def as_tuple(e: object) -> tuple[object, ...]:
    if isinstance(e, FlapChanged):
        return ("flap", e.peer, e.flapping, e.penalty, e.verdict, e.reason, e.policy, e.time)
    assert isinstance(e, VerdictChanged)
    return ("verdict", e.peer, e.old, e.new, e.reason, e.policy, e.time, e.count, e.threshold)


def state(v: vd.PeerVerdict) -> tuple[object, ...]:
    f = v.flap
    flap = None if f is None else (f.penalty, f.updated, f.flapping)
    return tuple(getattr(v, f) for f in FIELDS[:-1]) + (flap, v.verdict, v.threshold, v.flapping)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", range(4))
def test_shared_verdicts_behave_as_own_ones(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    pol = POLICIES[policy]
    eng = make_engine()
    peers = [Peer(peer(f"p{i}", 15060 + i)) for i in range(6)]
    for p in peers:
        p.verdict = vd.initial_verdict(pol)
    refs = [vd.PeerVerdict(pol) for _ in peers]
    assert all(p.verdict is peers[0].verdict for p in peers)  # one object while settled
    now = 0.0
    statuses = [200, 200, 200, 200, 404, 401, 503, None, None]
    for _ in range(400):
        now += rng.choice((0.5, 5.0, 60.0))
        i = rng.randrange(len(peers))
        p, ref = peers[i], refs[i]
        what = rng.random()
        if what < 0.05:  # an ICMP error for the poke in flight (engine.transport_error)
            p.own_verdict().refused = True
            ref.refused = True
            continue
        if what < 0.08:  # the address is gone (engine._poke, _take)
            before = (ref.verdict, ref.reason)
            ref.reset()
            assert p.reset_verdict() == ((ref.verdict, ref.reason) != before)
            assert state(p.verdict) == state(ref)
            continue
        status = rng.choice(statuses)
        lagged = rng.random() < 0.1
        auth_failed = status == 401 and rng.random() < 0.3
        expected = reference_judge(ref, p.name, status, lagged, now, auth_failed)
        eng._judge(p, status, lagged, now, auth_failed)
        got = []
        while (e := eng.next_event()) is not None:
            got.append(as_tuple(e))
        assert got == expected
        assert state(p.verdict) == state(ref)
        assert p.verdict.next_poke_in(60.0) == ref.next_poke_in(60.0)
        assert p.verdict.flap_penalty(now) == ref.flap_penalty(now)
    # no shared object was ever written to: each still holds its key, and counts nothing
    for table in vd._SHARED.values():
        for (confirmed, reason, status), v in table.items():
            assert v.shared and (v.confirmed, v.reason, v.status) == (confirmed, reason, status)
            assert (v.streak, v.toward, v.refused, v.flap) == (0, "", False, None)
    settled = [p for p, r in zip(peers, refs, strict=True) if not (r.streak or r.toward or r.refused or r.flap)]
    assert all(p.verdict.shared for p in settled)  # settled peers went back to the shared objects


def test_a_new_peer_holds_no_verdict_of_its_own() -> None:
    a, b = Peer(peer("a", 15060)), Peer(peer("b", 15061))
    assert a.verdict is b.verdict and a.verdict.shared
    assert (a.verdict.verdict, a.verdict.reason, a.verdict.streak) == ("unknown", "", 0)
    a.own_verdict().refused = True  # changing one peer's verdict leaves the other's
    assert not b.verdict.refused and a.verdict is not b.verdict
