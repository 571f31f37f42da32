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
    nonce = nonce or auth.new_nonce(now)
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
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret"), USERS.get, 100).ok
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret", alg="MD5"), USERS.get, 100).ok
    assert a.verify("REGISTER", authorization(a, 100, "1002", "pw2", alg="MD5"), USERS.get, 100).ok
    assert a.verify("REGISTER", authorization(a, 100, "1001", "nope"), USERS.get, 100).reason == "bad-response"
    assert a.verify("REGISTER", authorization(a, 100, "9999", "x"), USERS.get, 100).reason == "unknown-user"
    assert a.verify("REGISTER", None, USERS.get, 100).reason == "no-credentials"
    assert a.verify("REGISTER", "Basic Zm9vOmJhcg==", USERS.get, 100).reason == "malformed"


def test_nonce_expiry_is_stale_and_foreign_nonce_is_bad() -> None:
    a = DigestAuthenticator("pbx.test", nonce_ttl=30)
    old = a.new_nonce(100)
    assert a.verify("REGISTER", authorization(a, 200, "1001", "s3cret", nonce=old), USERS.get, 200).reason == "stale"
    other = DigestAuthenticator("pbx.test")
    foreign = other.new_nonce(100)
    assert a.verify("REGISTER", authorization(a, 100, "1001", "s3cret", nonce=foreign), USERS.get,
                    100).reason == "bad-nonce"
    assert "stale=true" in a.challenge(100, stale=True)[0]


def test_nonce_count_replay() -> None:
    a = DigestAuthenticator("pbx.test")
    nonce = a.new_nonce(100)
    h1 = authorization(a, 100, "1001", "s3cret", nonce=nonce, nc="00000001")
    assert a.verify("REGISTER", h1, USERS.get, 100).ok
    assert a.verify("REGISTER", h1, USERS.get, 101).reason == "replay"  # same nc again
    h2 = authorization(a, 100, "1001", "s3cret", nonce=nonce, nc="00000002")
    assert a.verify("REGISTER", h2, USERS.get, 101).ok
    # RFC 2069 form (no qop): single use
    h3 = authorization(a, 100, "1001", "s3cret", alg="MD5", qop=None)
    assert a.verify("REGISTER", h3, USERS.get, 100).ok and a.verify("REGISTER", h3, USERS.get, 100).reason == "replay"


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
            challenge = auth.challenge(10.0, algorithms=(alg,))[0]
            if not qop:
                challenge = challenge.replace(', qop="auth"', "")
            value = client_authorization(challenge, "alice", "pw", "REGISTER", "sip:pbx.test")
            assert auth.verify("REGISTER", value, creds.get, 10.0).ok, (challenge, value)
            wrong = client_authorization(challenge, "alice", "no", "REGISTER", "sip:pbx.test")
            assert not auth.verify("REGISTER", wrong, creds.get, 10.0).ok
