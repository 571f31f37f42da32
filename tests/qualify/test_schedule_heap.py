"""The schedule heap's entries are (when, key, peer), the key being kind and push order in one int
and the peer's generation (engine.py `_push`): ties, cancellation and lazy deletion as before."""

from __future__ import annotations

from sipqualify.model import GeneralConfig
from sipqualify.qualify.order import container_order

from .sim import build, make_engine, ok_after, peer

PORTS = [15061, 15062, 15063, 15064]


def sent(eng: object) -> list[tuple[str, int]]:
    from sipqualify.qualify.engine import QualifyEngine
    assert isinstance(eng, QualifyEngine)
    return [("ka" if data.strip() == b"" else "poke", dest[1]) for data, dest in eng.datagrams_to_send()]


def test_equal_times_pokes_first_then_keepalives_each_in_push_order() -> None:
    """At load every keepalive is pushed at 0 before the staggered pokes; with no stagger the pokes
    are due at 0 too and still go first (kind before order), each kind in the order pushed."""
    eng = make_engine(GeneralConfig(qualifypeers=-1))  # every peer's first poke at 0 ms
    cfgs = [peer(f"p{i}", port, keepalive_s=30) for i, port in enumerate(PORTS)]
    eng.load(cfgs, 0.0, addresses={c.name: ("127.0.0.1", c.port or 0) for c in cfgs})
    assert eng.get_timer() == 0.0
    eng.handle_timer(0.0)
    by_name = {c.name: c.port for c in cfgs}
    pokes = [("poke", by_name[n]) for n in container_order([c.name for c in cfgs], str)]  # chan_sip's order
    assert sent(eng) == pokes + [("ka", p) for p in PORTS]


def test_a_cancelled_entry_is_skipped_and_a_replaced_one_is_dead() -> None:
    a_addr, b_addr = ("127.0.0.1", PORTS[0]), ("127.0.0.1", PORTS[1])
    sim = build([peer("a", PORTS[0], freq_s=5), peer("b", PORTS[1], freq_s=5)],
                {a_addr: ok_after(0.01), b_addr: ok_after(0.01)}, GeneralConfig(qualifypeers=-1))
    sim.run_until(1.0)
    eng = sim.engine
    a = eng.peer("a")
    assert a is not None
    a.poke_gen += 1  # a's pending poke (at 5.01) is cancelled, as the workers' mirror does
    sim.run_until(7.0)
    eng._schedule_poke(a, 9.0)
    eng._schedule_poke(a, 8.0)  # replaces the one at 9: only this one is live
    sim.run_until(12.0)
    assert sim.sends_to(a_addr) == [0, 8000]  # not 5010 (cancelled), not 9000 (replaced)
    assert sim.sends_to(b_addr) == [0, 5010, 10020]
    assert all(key < 2 ** 60 for _, key, _ in eng._pokes.heap)  # a two-digit int each
