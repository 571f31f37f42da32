"""Registrar hardening, sans-I/O unless noted: Expires values are ASCII digits only; nonces are
bound to the address they were issued to (nobody else can get a phone banned); binding expiry
runs on the engine's monotonic clock, not the wall clock; the failure table is bounded and
costs O(1) per failure."""

from __future__ import annotations

import asyncio
import sqlite3
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipqualify.qualify.registrar import Binding, RegisterOutcome, Registrar, RegistrarSettings
from sipqualify.sip.digest import authorization
from sipqualify.sip.message import parse_message
from sipqualify.store.bindings import BindingStore

from .helpers import PEERS, SRC, Phone, auth_for, register, start_registrar, wait_for


def _registered(reg: Registrar, data_for: Callable[[str], bytes], source: tuple[str, int] = SRC,
                now: float = 100.0, wall: float = 1e9) -> RegisterOutcome:
    """REGISTER (401), then the same with credentials: the second outcome."""
    first = reg.handle(parse_message(data_for("")), source, now, wall)
    assert first is not None and first.response.status == 401
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    out = reg.handle(parse_message(data_for(auth_for(challenge, "1001", "s3cret"))), source, now, wall)
    assert out is not None
    return out


# ---------------------------------------------------------------- Expires: ASCII digits only


def test_fullwidth_expires_is_not_a_number() -> None:
    """`int('３０')` is 30: a full-width Expires would be taken as a number. It is not one
    (RFC 3261 delta-seconds is 1*DIGIT), so the default applies, as for any unreadable value."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test", minexpiry=60, defaultexpiry=120))

    def header(auth: str) -> bytes:
        return register("1001", auth, 2 if auth else 1).replace(b"Expires: 600", "Expires: ３０".encode())

    out = _registered(reg, header)
    assert out.response.status == 200, out.response.status
    assert out.response.headers.get("Expires") == "120"

    def param(auth: str) -> bytes:
        return register("1001", auth, 2 if auth else 1).replace(
            b"Contact: <sip:1001@192.0.2.50>", "Contact: <sip:1001@192.0.2.50>;expires=٣٠".encode())

    # in a Contact parameter it is not even a token (RFC 3261 §25.1: the grammar is ASCII): the
    # Contact is refused, rather than read as 30 s or as the header's value
    out = _registered(reg, param, now=200.0)
    assert out.response.status == 400 and out.response.reason.startswith("Bad Contact"), out.response
    assert out.binding is None


# ---------------------------------------------------------------- nobody else can get a phone banned

ATTACKER = ("198.51.100.66", 5060)


def test_forged_source_cannot_get_a_phone_banned() -> None:
    """An attacker fetches a nonce at his own address A, then sends wrong passwords and
    malformed credentials with the phone's address P as source (UDP sources are forged at
    will). The nonce was not issued to P: each gets a fresh challenge, none counts against P,
    and the phone at P still registers. The attacker's own failures still get him banned."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test"))  # 10 failures -> 300 s ban
    first = reg.handle(parse_message(register("1001")), ATTACKER, 100.0, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    for i in range(12):
        forged = reg.handle(parse_message(register("1001", auth_for(challenge, "1001", f"guess{i}"), 2 + i)), SRC,
                            101.0 + i, 1e9)
        assert forged is not None and forged.response.status == 401, forged and forged.response.status
    for i in range(12):  # no nonce of P's at all: refused, but not P's failure either
        bad = reg.handle(parse_message(register("1001", 'Digest username="1001", realm="elsewhere"', 20 + i)), SRC,
                         120.0 + i, 1e9)
        assert bad is not None and bad.response.status == 403
    assert not reg.banned(SRC[0], 140.0) and reg.counters["banned"] == 0
    out = _registered(reg, lambda auth: register("1001", auth, 50 if auth else 49), now=140.0)
    assert out.response.status == 200 and out.binding is not None and out.binding.addr[0] == SRC[0]

    for i in range(10):  # the same guesses from A, with A's own nonce: counted and banned
        own = reg.handle(parse_message(register("1001", auth_for(challenge, "1001", f"guess{i}"), 60 + i)), ATTACKER,
                         141.0, 1e9)
        assert own is not None and own.response.status == 403
    assert reg.banned(ATTACKER[0], 142.0) and not reg.banned(SRC[0], 142.0)
    assert reg.handle(parse_message(register("1001")), ATTACKER, 142.0, 1e9) is None


# ---------------------------------------------------------------- the failure table


def _ban_attacker(reg: Registrar, now: float) -> None:
    first = reg.handle(parse_message(register("1001")), ATTACKER, now, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    for i in range(reg.settings.authfail_limit):
        out = reg.handle(parse_message(register("1001", auth_for(challenge, "1001", f"g{i}"), 2 + i)), ATTACKER,
                         now, 1e9)
        assert out is not None and out.response.status == 403
    assert reg.banned(ATTACKER[0], now)


def _addr(i: int) -> str:
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"


def test_failure_table_is_bounded_and_each_failure_costs_constant_work() -> None:
    """The issue's case: 210,000 failures from 105,000 addresses, two each, which with
    `authfail_limit = 2` bans them all. Once the table held 100,000 entries, each failure
    scanned all of them (2.9 ms of CPU each, measured; minutes in all, the API not answering)
    and removed nothing, as banned entries were kept. Now neither table exceeds its cap and
    each failure examines a bounded number of entries (`failure_work` counts them)."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test", authfail_limit=2))
    cap, ban_cap = reg.settings.authfail_max_sources, reg.settings.authfail_max_banned
    assert cap == ban_cap == 100_000
    now = 10.0
    for i in range(105_000):
        now += 0.0001  # 10.5 s in all: inside the window, and no ban runs out
        assert not reg.count_failure(_addr(i), now) and reg.count_failure(_addr(i), now)
        assert len(reg.failures) <= cap and len(reg.bans) <= ban_cap
    assert reg.counters["banned"] == 105_000 and reg.failure_work <= 4 * 210_000, reg.failure_work
    assert reg.banned_count(now) == ban_cap and reg.banned(_addr(104_999), now)


def test_a_ban_outlives_a_full_failure_table() -> None:
    """With the default limit, an address banned first stays banned while 210,000 failures
    from 105,000 other addresses fill the failure table past its cap (the cap evicts the
    oldest failure counts, never a ban); the banned count is kept, not scanned for."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test"))
    _ban_attacker(reg, 10.0)
    work0, n, now = reg.failure_work, 0, 10.0
    for _ in range(2):
        for i in range(105_000):
            now += 0.0001  # 21 s in all: every failure is inside the 60 s window
            assert not reg.count_failure(_addr(i), now)
            n += 1
            assert len(reg.failures) <= reg.settings.authfail_max_sources
    assert reg.failure_work - work0 <= 4 * n, reg.failure_work - work0
    assert reg.banned(ATTACKER[0], now) and reg.banned_count(now) == 1
    assert reg.handle(parse_message(register("1001")), ATTACKER, now, 1e9) is None
    # once every window has passed, the table empties from the front as failures go on
    reg.count_failure("192.0.2.99", now + 61)
    assert len(reg.failures) == 1
    assert reg.banned_count(10.0 + 300.1) == 0 and not reg.banned(ATTACKER[0], 10.0 + 300.1)


def test_failure_windows_and_the_ban_cap() -> None:
    """Failures older than the window are forgotten (as before); bans have a cap of their own,
    beyond which the oldest ban is lifted early."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test", authfail_limit=3, authfail_window=60,
                                                 authfail_max_banned=3))
    ip = "192.0.2.1"
    assert not reg.count_failure(ip, 0.0) and not reg.count_failure(ip, 10.0)
    assert not reg.count_failure(ip, 100.0)  # the first two are out of the window
    assert not reg.count_failure(ip, 110.0) and reg.count_failure(ip, 120.0)  # three within 60 s
    assert reg.banned(ip, 121.0) and ip not in reg.failures
    for k in range(2, 6):
        for _ in range(3):
            reg.count_failure(f"192.0.2.{k}", 130.0 + k)
    assert reg.banned_count(140.0) == 3 == len(reg.bans)
    assert [reg.banned(f"192.0.2.{k}", 140.0) for k in range(1, 6)] == [False, False, True, True, True]


# ---------------------------------------------------------------- expiry on the monotonic clock


def test_binding_expiry_is_on_the_engine_clock() -> None:
    """The binding's expiry is `now + granted` on the engine clock; the wall-clock time is only
    stored and shown. A query REGISTER (no Contact) 10 s later on the engine clock says 590 s
    left, whether the wall clock has meanwhile stepped 2 h forward or back."""
    reg = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test"))
    first = reg.handle(parse_message(register("1001")), SRC, 100.0, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    out = reg.handle(parse_message(register("1001", auth_for(challenge, "1001", "s3cret"), 2)), SRC, 100.0, 1e9)
    assert out is not None and out.binding is not None
    assert (out.binding.expires_mono, out.binding.granted, out.binding.expires_at) == (700.0, 600, 1e9 + 600)
    for nc, step in ((2, 7200.0), (3, -7200.0)):
        auth = authorization(challenge, "1001", "s3cret", "REGISTER", "sip:pbx.test", nc=nc)
        query = register("1001", auth, 1 + nc).replace(b"Contact: <sip:1001@192.0.2.50>\r\n", b"")
        ans = reg.handle(parse_message(query), SRC, 110.0, 1e9 + 10 + step)
        assert ans is not None and ans.response.status == 200 and ans.binding is None
        assert (ans.response.headers.get("Contact") or "").endswith(";expires=590"), (step, ans.response)


def test_restart_rearms_from_stored_wall_time_never_beyond_what_was_granted(tmp_path: Path) -> None:
    """At a restart only the stored wall-clock expiry is known: a binding gets what it leaves,
    clamped to what was granted, so a clock set back while the daemon was down cannot stretch
    a 600 s registration to hours (and the clamp is stored: restarting again gains nothing).
    Rows written before the granted seconds were stored are clamped to maxexpiry."""
    store = BindingStore(tmp_path / "b.sqlite")
    store.apply([("1001", Binding("1001", "sip:1001@192.0.2.5", ("192.0.2.5", 5060), "udp", 1e9 + 600,
                                  expires_mono=700.0, granted=600))])
    (b,) = store.load(1e9 - 7200, 50.0, 3600)  # back 2 h while down: 7,800 s "left"
    assert (b.expires_mono, b.expires_at, b.granted) == (650.0, 1e9 - 7200 + 600, 600)
    (b,) = store.load(1e9 - 7200 + 100, 80.0, 3600)  # restarted again 100 s later
    assert (b.expires_mono, b.expires_at) == (580.0, 1e9 - 7200 + 600)
    (b,) = store.load(1e9 - 7200 + 590, 10.0, 3600)
    assert b.expires_mono == 20.0
    assert store.load(1e9 - 7200 + 600, 10.0, 3600) == []  # expired while down: gone
    store.close()

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as db:  # the schema before `granted`
        db.execute("CREATE TABLE bindings (peer TEXT PRIMARY KEY, contact TEXT NOT NULL, ip TEXT NOT NULL, "
                   "port INTEGER NOT NULL, transport TEXT NOT NULL, expires_at REAL NOT NULL, useragent TEXT NOT NULL, "
                   "path TEXT NOT NULL, call_id TEXT NOT NULL, cseq INTEGER NOT NULL, nat INTEGER NOT NULL)")
        db.execute("INSERT INTO bindings VALUES ('1002', 'sip:1002@h', '192.0.2.6', 5060, 'udp', ?, 'UA', '', 'c', 3, "
                   "1)", (1e9 + 100_000,))
    db.close()
    store = BindingStore(old)
    (b,) = store.load(1e9, 5.0, 3600)
    assert (b.peer, b.addr, b.useragent, b.cseq, b.nat) == ("1002", ("192.0.2.6", 5060), "UA", 3, True)
    assert (b.expires_mono, b.expires_at, b.granted) == (3605.0, 1e9 + 3600, 3600)
    store.apply([("1003", Binding("1003", "sip:1003@h", ("192.0.2.7", 5060), "tcp", 1e9 + 60, expires_mono=65.0,
                                  granted=60))])
    assert sorted((x.peer, x.granted) for x in store.load(1e9, 5.0, 3600)) == [("1002", 3600), ("1003", 60)]
    store.close()


class SteppedTime:
    """The `time` module as service.py sees it, with a wall clock that can be stepped (as
    an NTP correction or an operator would); the monotonic clock is the real one."""

    def __init__(self) -> None:
        self.step = 0.0

    def time(self) -> float:
        return _time.time() + self.step

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


async def test_wall_clock_steps_neither_expire_nor_extend_a_binding(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In the daemon: with the wall clock stepped 2 h forward after start, a fresh 300 s
    registration is not expired at once (it was: expiry compared a start-up offset plus the
    monotonic clock with time.time()); stepped 2 h back, a 2 s registration still ends after
    2 s, not 2 h later. What is shown is relative to the (stepped) wall clock."""
    from sipqualify import service as service_module

    clock = SteppedTime()
    monkeypatch.setattr(service_module, "time", clock)
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        assert svc.registrar is not None and svc.engine is not None
        svc.registrar.settings.minexpiry = 1
        clock.step = 7200.0
        assert (await phone.register_auth(server, "1001", "s3cret", expires=300)).status == 200
        await wait_for(lambda: svc.engine.peer("1001").state == "OK")  # type: ignore[union-attr]
        assert "1001" in svc.registrar.bindings
        assert 290 < svc.model.view(svc.engine.peer("1001")).expire <= 300  # type: ignore[arg-type]
        (reg,) = svc.model.registrations()
        assert 290 < reg["expires_in"] <= 300 and abs(reg["expires_at"] - (clock.time() + 300)) < 10

        clock.step = -7200.0
        assert (await phone.register_auth(server, "1001", "s3cret", expires=2)).status == 200
        assert "1001" in svc.registrar.bindings
        await wait_for(lambda: "1001" not in svc.registrar.bindings, timeout=30)  # type: ignore[union-attr]
    finally:
        await svc.close()
        t.close()


async def test_a_user_agent_that_is_not_utf8_is_stored_and_shown_replaced(tmp_path: Path) -> None:
    """Free text that is not UTF-8 (here 0xff 0xfe) reaches the registrar as lone surrogates,
    which SQLite refuses to store: the phone got a 500 on every REGISTER and /readyz turned
    503. The binding is stored with U+FFFD in their place, and the phone is registered."""
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        ua = "Evil\udcff\udcfePhone/1.0"
        assert (await phone.register_auth(server, "1001", "s3cret", useragent=ua)).status == 200
        (reg,) = svc.model.registrations()
        assert reg["useragent"] == "Evil\ufffd\ufffdPhone/1.0"
        assert all(h["ok"] for h in svc.model.storage_health().values())
    finally:
        await svc.close()
        t.close()


async def test_a_refresh_replaces_the_expiry_timer(tmp_path: Path) -> None:
    """One expiry timer per binding: a re-REGISTER cancels the one it replaces, an unregister
    cancels it (10,000 phones refreshing each minute kept an hour of dead timers each)."""
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        assert svc.engine is not None
        inbound = svc.engine.inbound  # expiry runs on the endpoint's timers, driven by the shell's one timer
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
        first = inbound.expiries["1001"]
        assert inbound.get_timer() == first
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
        assert list(inbound.expiries) == ["1001"] and inbound.expiries["1001"] > first  # replaced
        assert inbound.get_timer() == inbound.expiries["1001"]
        assert (await phone.register_auth(server, "1001", "s3cret", expires=0)).status == 200
        assert "1001" not in inbound.expiries and inbound.get_timer() is None
    finally:
        await svc.close()
        t.close()
