"""Registrar hardening, sans-I/O unless noted: Expires values are ASCII digits only; nonces are
bound to the address they were issued to (nobody else can get a phone banned); binding expiry
runs on the engine's monotonic clock, not the wall clock; the failure table is bounded and
costs O(1) per failure."""

from __future__ import annotations

from collections.abc import Callable

from sipqualify.qualify.registrar import RegisterOutcome, Registrar, RegistrarSettings
from sipqualify.sip.message import parse_message

from .test_registrar_rules import PEERS, SRC, auth_for, register


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

    out = _registered(reg, param, now=200.0)
    assert out.response.status == 200, out.response.status
    assert out.response.headers.get("Expires") == "600"  # the header's


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
