"""Binding expiry on the inbound endpoint's own timers (virtual clock): one pending expiry
per binding, a refresh replaces it, an unregister removes it, and the timer heap stays
bounded however often bindings are refreshed."""

from __future__ import annotations

from sipqualify.qualify.registrar import Binding

from .test_inbound_endpoint import PHONE, credentials, make_shell, register


def test_expiry_fires_on_the_endpoints_timer() -> None:
    s = make_shell()
    s.deliver(register(1, expires=60), PHONE)
    s.deliver(register(2, credentials(s), expires=60), PHONE)
    s.store_all()
    inbound = s.engine.inbound
    when = inbound.get_timer()
    assert when is not None and inbound.expiries == {"1001": when}
    inbound.handle_timer(when - 0.001)
    assert inbound.registrar is not None and "1001" in inbound.registrar.bindings
    inbound.handle_timer(when)
    s.flush()
    assert "1001" not in inbound.registrar.bindings and inbound.get_timer() is None
    assert s.commits[-1].token == 0 and s.commits[-1].binding is None  # the delete to store


def test_refreshes_keep_one_pending_expiry_and_a_bounded_heap() -> None:
    s = make_shell()
    inbound = s.engine.inbound
    for i in range(10_000):
        inbound._arm(Binding("1001", "<sip:1001@192.0.2.50>", PHONE, "udp", 1e9 + 100.0 + i, expires_mono=100.0 + i))
    assert inbound.expiries == {"1001": 10_099.0} and inbound.get_timer() == 10_099.0
    assert len(inbound._expiry_heap) <= 2 * len(inbound.expiries) + 65
