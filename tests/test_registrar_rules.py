"""Registrar rules, sans-I/O.

No user enumeration through REGISTER (chan_sip `alwaysauthreject=yes`): an unknown user, a
peer that is not dynamic, a wrong password and an md5secret peer get byte-identical answers
(apart from the To tag and the nonce, which are fresh per answer), and take the same time.
Sans-I/O: the Registrar is driven directly, so timing is the registrar's own work.

Where a binding points: chan_sip's nat= rules (force_rport, auto_force_rport with NAT
detected from the Via, comedia for media only)."""

from __future__ import annotations

import re
import statistics
import time

import pytest

from sipqualify.model import PeerConfig
from sipqualify.qualify.registrar import Registrar, RegistrarSettings
from sipqualify.sip.digest import authorization
from sipqualify.sip.message import parse_message

from .helpers import PEERS, SRC, auth_for, register


def registrar(algorithms: tuple[str, ...] = ("MD5",)) -> Registrar:
    # no bans here: the point is what a guesser sees before being banned
    return Registrar(PEERS.get, RegistrarSettings(realm="pbx.test", authfail_ban=0, algorithms=algorithms))


def normalise(data: bytes, user: str) -> str:
    """Remove what is fresh per answer or echoes the request (the user's own name)."""
    text = data.decode()
    text = re.sub(r";tag=as[0-9a-f]+", ";tag=X", text)
    text = re.sub(r'nonce="[^"]+"', 'nonce="N"', text)
    return text.replace(user, "USER")


def attempt(reg: Registrar, user: str, password: str, now: float) -> tuple[bytes, bytes]:
    """(the 401 to the bare REGISTER, the answer to the REGISTER with credentials)."""
    first = reg.handle(parse_message(register(user)), SRC, now, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    second = reg.handle(parse_message(register(user, auth_for(challenge, user, password), 2)), SRC, now, 1e9)
    assert second is not None
    return first.response.to_bytes(), second.response.to_bytes()


@pytest.mark.parametrize("algorithms", [("MD5",), ("MD5", "SHA-256")])
def test_answers_are_identical_for_unknown_wrong_md5secret_and_static(algorithms: tuple[str, ...]) -> None:
    reg = registrar(algorithms)
    seen = {}
    for user, password in [("1001", "wrong"), ("1002", "wrong"), ("ghost", "any"), ("trunk", "x")]:
        c, r = attempt(reg, user, password, 100.0)
        seen[user] = (normalise(c, user), normalise(r, user))
    assert len({c for c, _ in seen.values()}) == 1, seen  # one and the same challenge
    assert len({r for _, r in seen.values()}) == 1, seen  # one and the same refusal
    challenge, refusal = seen["ghost"]
    assert challenge.startswith("SIP/2.0 401 Unauthorized\r\n")
    assert challenge.count("WWW-Authenticate:") == len(algorithms)
    assert refusal.startswith("SIP/2.0 403 Forbidden\r\n")
    # and the genuine passwords do get in (so the equality above is not an always-403 registrar)
    assert attempt(reg, "1001", "s3cret", 100.0)[1].startswith(b"SIP/2.0 200 OK\r\n")
    assert attempt(reg, "1002", "pw2", 100.0)[1].startswith(b"SIP/2.0 200 OK\r\n")


def test_refusals_take_the_same_time_for_known_and_unknown_users() -> None:
    """The registrar hashes a random secret for an unknown user, so a wrong password for a real
    peer and any password for nobody cost the same. Interleaved, medians within 10 %."""
    reg = registrar()
    c_known = reg.handle(parse_message(register("1001")), SRC, 100.0, 1e9)
    assert c_known is not None
    challenge = c_known.response.headers.get_all("WWW-Authenticate")[0]
    msgs = {u: parse_message(register(u, auth_for(challenge, u, "wrong"), 2)) for u in ("1001", "ghost")}
    times: dict[str, list[float]] = {"1001": [], "ghost": []}
    for _ in range(3000):
        for user, msg in msgs.items():
            t0 = time.perf_counter()
            out = reg.handle(msg, SRC, 100.0, 1e9)
            times[user].append(time.perf_counter() - t0)
            assert out is not None and out.response.status == 403
    known, unknown = statistics.median(times["1001"]), statistics.median(times["ghost"])
    assert abs(known - unknown) / max(known, unknown) < 0.10, (known, unknown)


@pytest.mark.parametrize(("algorithms", "factor"), [(("MD5",), 1.9), (("MD5", "SHA-256"), 2.5)])
def test_challenge_is_small(algorithms: tuple[str, ...], factor: float) -> None:
    """Never amplify: the 401 to a minimal REGISTER from anyone is at most ~1.9x its size with
    the default MD5 challenge, ~2.5x with SHA-256 offered too (one nonce shared); no
    Server/Allow on refusals."""
    reg = registrar(algorithms)
    req = register("ghost")
    out = reg.handle(parse_message(req), SRC, 100.0, 1e9)
    assert out is not None
    data = out.response.to_bytes()
    assert len(data) <= factor * len(req), (len(data), len(req))
    assert b"Server:" not in data and b"Allow:" not in data


# ---------------------------------------------------------------- where the binding points


def _bind(nat: tuple[str, ...], via_host: str, source: tuple[str, int], contact: str) -> tuple[tuple[str, int], bool]:
    peers = {"p": PeerConfig(name="p", host="dynamic", dynamic=True, secret="pw", nat=nat)}
    reg = Registrar(peers.get, RegistrarSettings(realm="pbx.test"))
    lines = ["REGISTER sip:pbx.test SIP/2.0", f"Via: SIP/2.0/UDP {via_host}:5060;branch=z9hG4bKn;rport",
             "From: <sip:p@pbx.test>;tag=1", "To: <sip:p@pbx.test>", "Call-ID: nat", "CSeq: 1 REGISTER",
             f"Contact: <{contact}>", "Expires: 600"]
    first = reg.handle(parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()), source, 1.0, 1e9)
    assert first is not None
    lines[5] = "CSeq: 2 REGISTER"
    lines.append("Authorization: " + auth_for(first.response.headers.get_all("WWW-Authenticate")[0], "p", "pw"))
    out = reg.handle(parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()), source, 1.0, 1e9)
    assert out is not None and out.binding is not None, out
    return out.binding.addr, out.binding.nat


@pytest.mark.parametrize(("nat", "via_host", "contact", "addr", "detected"), [
    # phone behind NAT: private Via and Contact, public source
    (("auto_force_rport",), "192.168.1.5", "sip:p@192.168.1.5:5062", ("203.0.113.9", 40000), True),
    (("force_rport",), "192.168.1.5", "sip:p@192.168.1.5:5062", ("203.0.113.9", 40000), True),
    (("force_rport", "comedia"), "192.168.1.5", "sip:p@192.168.1.5:5062", ("203.0.113.9", 40000), True),
    (("no",), "192.168.1.5", "sip:p@192.168.1.5:5062", ("192.168.1.5", 5062), True),  # nat=no trusts Contact
    (("comedia",), "192.168.1.5", "sip:p@192.168.1.5:5062", ("192.168.1.5", 5062), True),  # media only
    (("auto_comedia",), "192.168.1.5", "sip:p@192.168.1.5:5062", ("192.168.1.5", 5062), True),
    # public phone, Via = source address (ports are not compared, like chan_sip): the Contact
    (("auto_force_rport",), "203.0.113.9", "sip:p@203.0.113.9:5062", ("203.0.113.9", 5062), False),
    (("force_rport",), "203.0.113.9", "sip:p@203.0.113.9:5062", ("203.0.113.9", 40000), False),
    # a Contact host name is not resolved: the source address is used
    (("no",), "203.0.113.9", "sip:p@phone.example.net", ("203.0.113.9", 40000), False),
])
def test_binding_address_follows_chan_sip_nat_rules(nat: tuple[str, ...], via_host: str, contact: str,
                                                    addr: tuple[str, int], detected: bool) -> None:
    assert _bind(nat, via_host, ("203.0.113.9", 40000), contact) == (addr, detected)


def test_sha256_is_checked_only_when_offered() -> None:
    """supported_algorithms_uas = sha-256, md5: SHA-256 first and accepted. By default (MD5
    only, as chan_sip) an answer computed with SHA-256 is refused."""
    c, r = attempt(registrar(("SHA-256", "MD5")), "1001", "s3cret", 100.0)
    assert c.count(b"WWW-Authenticate:") == 2 and c.index(b"SHA-256") < c.index(b"algorithm=MD5")
    assert r.startswith(b"SIP/2.0 200 OK\r\n")
    reg = registrar()
    first = reg.handle(parse_message(register("1001")), SRC, 100.0, 1e9)
    assert first is not None
    (challenge,) = first.response.headers.get_all("WWW-Authenticate")
    forged = challenge.replace("algorithm=MD5", "algorithm=SHA-256")
    out = reg.handle(parse_message(register("1001", auth_for(forged, "1001", "s3cret"), 2)), SRC, 100.0, 1e9)
    assert out is not None and out.response.status == 403


def test_outcomes_name_the_peer_and_the_transport() -> None:
    """PeerStatus events need the peer: a wrong password gives Rejected with Cause for that
    peer, a refused stranger none; the binding's transport is the one the shell says it came
    over, not what the Via claims."""
    reg = registrar()
    first = reg.handle(parse_message(register("1001")), SRC, 100.0, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    bad = reg.handle(parse_message(register("1001", auth_for(challenge, "1001", "no"), 2)), SRC, 100.0, 1e9)
    assert bad is not None and (bad.peer, bad.peer_status, bad.cause) == ("1001", "Rejected", "AUTH_SECRET_FAILED")
    ghost = reg.handle(parse_message(register("ghost", auth_for(challenge, "ghost", "x"), 2)), SRC, 100.0, 1e9)
    assert ghost is not None and ghost.peer_status is None
    good = authorization(challenge, "1001", "s3cret", "REGISTER", "sip:pbx.test", nc=2)
    ok = reg.handle(parse_message(register("1001", good, 3)), SRC, 100.0, 1e9, "tcp")
    assert ok is not None and ok.binding is not None, ok and ok.response.status
    assert (ok.peer, ok.peer_status, ok.binding.transport) == ("1001", "Registered", "tcp")  # the Via says UDP


def test_malformed_registers_get_a_clear_400_or_404_and_are_counted() -> None:
    reg = registrar()
    no_user = register("1001").replace(b"To: <sip:1001@pbx.test>", b"To: <sip:pbx.test>")
    out = reg.handle(parse_message(no_user), SRC, 100.0, 1e9)
    assert out is not None and out.response.status == 404
    first = reg.handle(parse_message(register("1001")), SRC, 100.0, 1e9)
    assert first is not None
    challenge = first.response.headers.get_all("WWW-Authenticate")[0]
    cases = [(b"Contact: <sip:1001@192.0.2.50>", b"Contact: <mailto:x@y>", "Bad Contact (unsupported URI scheme"),
             (b"Contact: <sip:1001@192.0.2.50>", b"Contact: *", "Bad Request (Contact: * needs Expires: 0)")]
    for nc, (old, new, reason) in enumerate(cases, start=1):
        auth = authorization(challenge, "1001", "s3cret", "REGISTER", "sip:pbx.test", nc=nc)
        data = register("1001", auth, 2 + nc).replace(old, new)
        out = reg.handle(parse_message(data), SRC, 100.0, 1e9)
        assert out is not None and out.response.status == 400 and out.response.reason.startswith(reason)
        assert out.binding is None and "1001" not in reg.bindings
    assert reg.counters["bad_requests"] == 3
