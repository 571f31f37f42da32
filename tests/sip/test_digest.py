"""Digest authentication (RFC 2617 / RFC 7616 test vectors; nonces, stale, replay, enumeration)."""

from __future__ import annotations

import hashlib
import os

from sipqualify.sip.digest import (
    Credentials,
    DigestAuthenticator,
    digest_response,
    ha1_of,
    parse_auth_header,
)
from sipqualify.sip.digest import authorization as client_authorization

IP = "192.0.2.50"  # where the REGISTERs come from


def test_rfc2617_md5_vector() -> None:
    """RFC 2617 §3.5."""
    ha1 = ha1_of("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    r = digest_response("MD5", ha1, "GET", "/dir/index.html", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "00000001",
                        "0a4f113b", "auth")
    assert r == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_vectors() -> None:
    """RFC 7616 §3.9.1: the same request with MD5 and with SHA-256."""
    args = ("GET", "/dir/index.html", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth")
    md5 = digest_response("MD5", ha1_of("MD5", "Mufasa", "http-auth@example.org", "Circle of Life"), *args)
    sha = digest_response("SHA-256", ha1_of("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life"), *args)
    assert md5 == "8ca523f5e9506fed4657c9700eebdbec"
    assert sha == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def authorization(auth: DigestAuthenticator, now: float, user: str, password: str, *, alg: str = "SHA-256",
                  nc: str = "00000001", nonce: str | None = None, qop: str | None = "auth") -> str:
    nonce = nonce or auth.new_nonce(now, IP)
    cnonce = os.urandom(4).hex()
    ha1 = ha1_of(alg, user, auth.realm, password)
    resp = digest_response(alg, ha1, "REGISTER", "sip:pbx.test", nonce, nc if qop else "", cnonce if qop else "",
                           qop)
    qp = f', qop={qop}, nc={nc}, cnonce="{cnonce}"' if qop else ""
    return (f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="sip:pbx.test", '
            f'response="{resp}", algorithm={alg}{qp}')


USERS = {"1001": Credentials(secret="s3cret"),
         "1002": Credentials(md5_ha1=hashlib.md5(b"1002:pbx.test:pw2").hexdigest())}


def test_verify_ok_wrong_unknown_and_md5secret() -> None:
    a = DigestAuthenticator("pbx.test")
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret"), USERS.get, 100, IP).ok
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret", alg="MD5"), USERS.get, 100, IP).ok
    assert a.verify("REGISTER", authorization(a, 100, "1002", "pw2", alg="MD5"), USERS.get, 100, IP).ok
    assert a.verify("REGISTER", authorization(a, 100, "1001", "nope"), USERS.get, 100, IP).reason == "bad-response"
    assert a.verify("REGISTER", authorization(a, 100, "9999", "x"), USERS.get, 100, IP).reason == "unknown-user"
    assert a.verify("REGISTER", None, USERS.get, 100, IP).reason == "no-credentials"
    assert a.verify("REGISTER", "Basic Zm9vOmJhcg==", USERS.get, 100, IP).reason == "malformed"


def test_nonce_expiry_is_stale_and_foreign_nonce_is_bad() -> None:
    a = DigestAuthenticator("pbx.test", nonce_ttl=30)
    old = a.new_nonce(100, IP)
    assert a.verify("REGISTER", authorization(a, 200, "1001", "s3cret", nonce=old), USERS.get, 200,
                    IP).reason == "stale"
    other = DigestAuthenticator("pbx.test")
    foreign = other.new_nonce(100, IP)
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret", nonce=foreign), USERS.get,
                    100, IP).reason == "bad-nonce"
    assert "stale=true" in a.challenge(100, IP, stale=True)[0]


def test_nonce_count_replay() -> None:
    a = DigestAuthenticator("pbx.test")
    nonce = a.new_nonce(100, IP)
    h1 = authorization(a, 100, "1001", "s3cret", nonce=nonce, nc="00000001")
    assert a.verify("REGISTER", h1, USERS.get, 100, IP).ok
    assert a.verify("REGISTER", h1, USERS.get, 101, IP).reason == "replay"  # same nc again
    h2 = authorization(a, 100, "1001", "s3cret", nonce=nonce, nc="00000002")
    assert a.verify("REGISTER", h2, USERS.get, 101, IP).ok
    # RFC 2069 form (no qop): single use
    h3 = authorization(a, 100, "1001", "s3cret", alg="MD5", qop=None)
    assert a.verify("REGISTER", h3, USERS.get, 100, IP).ok
    assert a.verify("REGISTER", h3, USERS.get, 100, IP).reason == "replay"


def test_parse_auth_header_quoting() -> None:
    scheme, p = parse_auth_header('Digest username="a\\"b", realm="r", nc=00000001, qop=auth, uri="sip:x;y=1"')
    assert scheme == "Digest" and p["username"] == 'a"b' and p["nc"] == "00000001" and p["uri"] == "sip:x;y=1"


def test_client_authorization_is_accepted_by_the_server() -> None:
    """The UAC helper (demo phone, tests) against the verifier, both algorithms, with and
    without qop."""
    creds = {"alice": Credentials(secret="pw")}
    for qop in (True, False):
        auth = DigestAuthenticator("pbx.test")
        for alg in ("MD5", "SHA-256"):  # a fresh nonce each (without qop a nonce is single-use)
            challenge = auth.challenge(10.0, IP, algorithms=(alg,))[0]
            if not qop:
                challenge = challenge.replace(', qop="auth"', "")
            value = client_authorization(challenge, "alice", "pw", "REGISTER", "sip:pbx.test")
            assert auth.verify("REGISTER", value, creds.get, 10.0, IP).ok, (challenge, value)
            wrong = client_authorization(challenge, "alice", "no", "REGISTER", "sip:pbx.test")
            assert not auth.verify("REGISTER", wrong, creds.get, 10.0, IP).ok


def test_nonce_is_bound_to_the_address_it_was_issued_to() -> None:
    """A nonce presented from another address is not ours (bad-nonce: a fresh challenge) and
    says nothing about that address; a failure with the source's own nonce does. Ports do not
    matter (NAT may change them), the address is not written in the nonce."""
    a = DigestAuthenticator("pbx.test")
    nonce = a.new_nonce(100, "198.51.100.66")
    assert "198.51.100.66" not in nonce
    assert a.nonce_state(nonce, 100, "198.51.100.66") == "ok" and a.nonce_state(nonce, 100, IP) == "bad"
    assert a.nonce_state(nonce, 200, "198.51.100.66") == "stale" and a.nonce_state(nonce, 200, IP) == "bad"
    wrong = authorization(a, 100, "1001", "nope", nonce=nonce)
    elsewhere = a.verify("REGISTER", wrong, USERS.get, 100, IP)
    assert (elsewhere.reason, elsewhere.nonce_issued) == ("bad-nonce", False)
    there = a.verify("REGISTER", wrong, USERS.get, 100, "198.51.100.66")
    assert (there.reason, there.nonce_issued) == ("bad-response", True)
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret", nonce=nonce), USERS.get, 100,
                    "198.51.100.66").ok
    malformed = a.verify("REGISTER", 'Digest username="1001", realm="other"', USERS.get, 100, IP)
    assert (malformed.reason, malformed.nonce_issued) == ("malformed", False)
