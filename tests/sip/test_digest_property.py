"""Digest parsing and verification never raise, whatever the Authorization header holds.

Header text comes off the wire decoded as UTF-8 with surrogateescape, so it can hold any
code point, lone surrogates included, and Unicode digits that `float()`/`int()` would take.
The headers are built around the real fields (and sometimes a genuine nonce) so that the
search reaches the nonce, nc and response checks, not only the scheme test."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipqualify.sip.digest import AuthResult, Credentials, DigestAuthenticator, parse_auth_header

REALM = "pbx.test"
SOURCE = "192.0.2.7"
NOW = 1000.0
CREDS = {"1001": Credentials(secret="s3cret"), "1002": Credentials(md5_ha1="0" * 32)}

ANY_CHAR = st.characters(exclude_categories=())  # surrogates too
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
# ASCII digits next to look-alikes: full-width, Arabic-Indic, superscript, Devanagari
DIGITS = st.text(st.sampled_from("0123456789abcdefABCDEF.１２３٣²९ -+_\u00a0"), max_size=14)
KEYS = st.sampled_from(["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce",
                        "opaque", "USERNAME", "Nonce"])

PROPERTY = settings(max_examples=400, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _authenticator() -> DigestAuthenticator:
    return DigestAuthenticator(REALM, key=b"k" * 32, algorithms=("MD5", "SHA-256"))


@st.composite
def headers(draw: st.DrawFn) -> str:
    auth = _authenticator()
    genuine = auth.new_nonce(NOW, SOURCE)
    values = {
        "username": st.one_of(st.sampled_from(["1001", "1002", "ghost"]), ANY_TEXT),
        "realm": st.one_of(st.just(REALM), ANY_TEXT),
        "nonce": st.one_of(st.just(genuine), st.just(genuine.replace(".", "\uff0e", 1)),
                           st.builds(lambda d, s: d + "." + s, DIGITS, ANY_TEXT), ANY_TEXT),
        "uri": st.one_of(st.just("sip:pbx.test"), ANY_TEXT),
        "response": st.one_of(st.text(st.sampled_from("0123456789abcdef"), min_size=32, max_size=64),
                              st.text(ANY_CHAR, min_size=32, max_size=32), ANY_TEXT),
        "algorithm": st.one_of(st.sampled_from(["MD5", "SHA-256", "md5", "sha-256", "MD5-sess"]), ANY_TEXT),
        "qop": st.one_of(st.sampled_from(["auth", "auth-int", '"auth"']), ANY_TEXT),
        "nc": st.one_of(st.just("00000001"), DIGITS, ANY_TEXT),
        "cnonce": ANY_TEXT,
    }
    # each real field is there most of the time, so that many headers get past the
    # "malformed" checks; then a few odd or duplicated keys
    keys = [k for k in values if draw(st.sampled_from((True, True, True, False)))]
    keys += draw(st.lists(KEYS, max_size=3))
    parts = []
    for key in draw(st.permutations(keys)):
        value = draw(values.get(key.lower(), ANY_TEXT))
        quoted = draw(st.booleans())
        parts.append(f'{key}="{value}"' if quoted else f"{key}={value}")
    sep = draw(st.sampled_from([", ", ",", " ", ",\u3000", ",\n "]))
    scheme = draw(st.sampled_from(["Digest", "digest", "DIGEST", "Basic", "Ｄigest", ""]))
    return f"{scheme} {sep.join(parts)}"


def _check(result: AuthResult) -> None:
    assert isinstance(result, AuthResult) and isinstance(result.reason, str)


@PROPERTY
@given(st.one_of(headers(), st.text(ANY_CHAR, max_size=200)))
def test_parse_and_verify_never_raise(header: str) -> None:
    scheme, params = parse_auth_header(header)
    assert isinstance(scheme, str) and all(isinstance(v, str) for v in params.values())
    auth = _authenticator()
    for now in (NOW, NOW + 1000):  # fresh and stale
        _check(auth.verify("REGISTER", header, CREDS.get, now, SOURCE))
        _check(auth.verify("REGISTER", header, CREDS.get, now, "198.51.100.1"))


@PROPERTY
@given(st.one_of(DIGITS, ANY_TEXT, st.builds(lambda a, b, c: f"{a}.{b}.{c}", DIGITS, ANY_TEXT, ANY_TEXT)))
def test_nonce_state_never_raises(nonce: str) -> None:
    assert _authenticator().nonce_state(nonce, NOW, SOURCE) in ("ok", "stale", "bad")


def test_non_ascii_lookalikes_are_refused_not_raised() -> None:
    """The cases found by hand: full-width digits in the nonce time and in nc, a non-ASCII
    response (hmac.compare_digest raises TypeError on non-ASCII str), a lone surrogate."""
    auth = _authenticator()
    nonce = auth.new_nonce(NOW, SOURCE)
    t, rnd, sig = nonce.split(".", 2)[0], nonce.split(".")[2], nonce.split(".")[3]
    fullwidth_time = "".join(chr(ord(c) + 0xFEE0) for c in t) + "." + nonce.split(".")[1] + "." + rnd + "." + sig
    assert auth.nonce_state(fullwidth_time, NOW, SOURCE) == "bad"
    base = f'Digest username="1001", realm="{REALM}", nonce="{nonce}", uri="sip:pbx.test", algorithm=MD5'
    for extra in (', response="ä' + "0" * 31 + '"',
                  ', response="' + "0" * 32 + '", qop=auth, nc=０００００００１, cnonce="x"',
                  ', response="\udcff' + "0" * 31 + '"'):
        r = auth.verify("REGISTER", base + extra, CREDS.get, NOW, SOURCE)
        assert not r.ok and r.reason == "malformed", (extra, r)
