"""HTTP Digest authentication, server side, for REGISTER (RFC 2617 / RFC 7616 / RFC 3261 §22).

Sans-I/O: `DigestAuthenticator.challenge(now, source_ip)` gives the WWW-Authenticate value(s);
`verify(method, header, lookup, now, source_ip)` checks an Authorization header.

* MD5 and SHA-256 (RFC 7616), `qop=auth` (and the RFC 2069 form without qop, which RFC 3261
  phones still send).
* Nonces are bound to this server and to the source address they were sent to, and expire:
  `nonce = <time>.<random>.<HMAC(key, time.random + source IP)>` (the address is signed, not
  written out); no per-nonce state is needed to check one, and an expired but genuine nonce
  gives `stale=true` so the phone retries without asking the user. A nonce presented from
  another address is "bad-nonce" (a fresh challenge), and `AuthResult.nonce_issued` says
  whether a failure can be held against the source at all: a UDP source is forged at will,
  but a nonce only reaches the address it was sent to, so counting only failures that carry
  the source's own nonce means nobody can get someone else's address banned. The IP, not
  the port: a phone behind NAT keeps its public address between the 401 and the
  authenticated REGISTER, but its NAT may give the second one another source port.
* Replay protection: with qop, each nonce's `nc` must grow (a small bounded table of the
  highest nc seen per nonce); without qop, a nonce is single-use.
* Secrets compared in constant time. `md5secret` (sip.conf) is HA1 = MD5(user:realm:secret).
* ASCII only: header text arrives decoded with surrogateescape, so it may hold any code point;
  a non-ASCII Authorization is "malformed" (never an exception: `hmac.compare_digest` raises
  TypeError on non-ASCII str, `float()`/`int()` take Unicode digits, `.encode()` fails on
  surrogates), and nonces are parsed with ASCII-only patterns.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)\s*,?', re.ASCII)
_ESCAPED = re.compile(r"\\(.)", re.ASCII)
# <issued, engine time with 3 decimals>.<8 random bytes>.<truncated HMAC>, all ASCII
_NONCE = re.compile(r"(-?[0-9]{1,15}\.[0-9]{3}\.[0-9a-f]{16})\.([0-9a-f]{32})", re.ASCII)
_NC = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """`Digest username="a", realm="b", ...` -> ("Digest", {"username": "a", ...})."""
    scheme, _, rest = value.strip(" \t\r\n").partition(" ")
    params: dict[str, str] = {}
    pos, end, match = 0, len(rest), _PARAM.match
    while pos < end:
        m = match(rest, pos)
        if m is None:
            break
        k, v = m.group(1, 2)
        if v[0] == '"':
            v = v[1:-1]
            if "\\" in v:
                v = _ESCAPED.sub(r"\1", v)
        params[k.lower()] = v
        pos = m.end()
    return scheme, params


def digest_response(alg: str, ha1: str, method: str, uri: str, nonce: str, nc: str = "", cnonce: str = "",
                    qop: str | None = None) -> str:
    """RFC 2617 §3.2.2 / RFC 7616 §3.4.1 request-digest from HA1."""
    h = ALGORITHMS[alg.upper()]
    ha2 = h(f"{method}:{uri}".encode()).hexdigest()
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode()).hexdigest()
    return h(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()


def ha1_of(alg: str, user: str, realm: str, password: str) -> str:
    return ALGORITHMS[alg.upper()](f"{user}:{realm}:{password}".encode()).hexdigest()


def authorization(challenge: str, user: str, password: str, method: str, uri: str, *, nc: int = 1,
                  cnonce: str | None = None) -> str:
    """The client side: an Authorization value answering one WWW-Authenticate `challenge`
    (qop=auth when offered, else the RFC 2069 form). The demo phone and the tests use it."""
    value = answer_challenge(challenge, user, method, uri, password=password, nc=nc, cnonce=cnonce)
    if value is None:
        raise ValueError("a challenge this client cannot answer")
    return value


def answer_challenge(challenge: str, user: str, method: str, uri: str, *, password: str | None = None,
                     md5_ha1: str | None = None, nc: int = 1, cnonce: str | None = None) -> str | None:
    """An Authorization / Proxy-Authorization value answering one challenge, from a plain
    `password` or (MD5 only) a precomputed HA1 (`md5secret`). None when it cannot be answered:
    not Digest, no realm or nonce, an unknown algorithm (or SHA-256 with only an MD5 HA1), or
    a qop without `auth` (auth-int is never used for a body-less request)."""
    if not challenge.isascii():
        return None
    scheme, p = parse_auth_header(challenge)
    alg = p.get("algorithm", "MD5").upper()
    realm, nonce = p.get("realm"), p.get("nonce")
    if scheme.lower() != "digest" or realm is None or not nonce or alg not in ALGORITHMS:
        return None
    offered = [q.strip().lower() for q in p["qop"].split(",")] if "qop" in p else []
    if offered and "auth" not in offered:
        return None
    if password is not None:
        ha1 = ha1_of(alg, user, realm, password)
    elif md5_ha1 is not None and alg == "MD5":
        ha1 = md5_ha1.lower()
    else:
        return None
    qop = "auth" if offered else None
    cnonce = cnonce or os.urandom(8).hex()
    ncs = f"{nc:08x}"
    resp = digest_response(alg, ha1, method, uri, nonce, ncs if qop else "", cnonce if qop else "", qop)
    value = (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
             f'response="{resp}", algorithm={alg}')
    if "opaque" in p:
        value += f', opaque="{p["opaque"]}"'
    return value + (f', qop=auth, nc={ncs}, cnonce="{cnonce}"' if qop else "")


def is_stale(challenge: str) -> bool:
    """RFC 7616 §3.3: `stale=true`: the credentials were right, only the nonce had expired."""
    return parse_auth_header(challenge)[1].get("stale", "").lower() == "true"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the registrar knows of a user: a plain secret, or a precomputed MD5 HA1."""

    secret: str | None = None
    md5_ha1: str | None = None


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    reason: str  # "ok", "stale", "no-credentials", "bad-response", "replay", "bad-nonce", "malformed", "unknown-user"
    username: str = ""
    # the nonce is genuine and was issued to this source address (fresh or stale): only then
    # does the failure say anything about whoever is at that address
    nonce_issued: bool = False


class DigestAuthenticator:
    def __init__(self, realm: str, *, key: bytes | None = None, nonce_ttl: float = 30.0,
                 algorithms: tuple[str, ...] = ("MD5", "SHA-256"), max_tracked: int = 100_000) -> None:
        self.realm = realm
        self.key = key or os.urandom(32)
        self.nonce_ttl = nonce_ttl
        self.algorithms = algorithms
        self._nc: OrderedDict[str, int] = OrderedDict()  # nonce -> highest nc accepted
        self._max = max_tracked

    # ---------------------------------------------------------------- nonces

    def _sign(self, body: str, source_ip: str) -> str:
        msg = f"{body} {source_ip}".encode("utf-8", "surrogateescape")
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()[:32]

    def new_nonce(self, now: float, source_ip: str) -> str:
        body = f"{now:.3f}.{os.urandom(8).hex()}"
        return f"{body}.{self._sign(body, source_ip)}"

    def nonce_state(self, nonce: str, now: float, source_ip: str) -> str:
        """"ok", "stale" (ours, issued to `source_ip`, expired) or "bad" (not made by this
        server, or made for another address)."""
        m = _NONCE.fullmatch(nonce) if nonce.isascii() else None
        if m is None:
            return "bad"
        body, sig = m.group(1, 2)
        if not hmac.compare_digest(sig, self._sign(body, source_ip)):
            return "bad"
        issued = float(body.rpartition(".")[0])
        if now - issued > self.nonce_ttl or issued - now > 5:
            return "stale"
        return "ok"

    def challenge(self, now: float, source_ip: str, *, stale: bool = False,
                  algorithms: tuple[str, ...] | None = None) -> list[str]:
        """WWW-Authenticate values. MD5 comes first by default: UAs take the first challenge they
        support (RFC 8760 §2.4) and many (SIPp, older phones) know only MD5, which is all
        chan_sip ever offered; SHA-256 is offered too for those that prefer it."""
        nonce = self.new_nonce(now, source_ip)
        out = []
        for alg in algorithms or self.algorithms:
            v = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={alg}, qop="auth"'
            if stale:
                v += ", stale=true"
            out.append(v)
        return out

    # ---------------------------------------------------------------- verification

    def verify(self, method: str, header: str | None, lookup: Callable[[str], Credentials | None],
               now: float, source_ip: str) -> AuthResult:
        if not header:
            return AuthResult(False, "no-credentials")
        if not header.isascii():
            return AuthResult(False, "malformed")
        scheme, p = parse_auth_header(header)
        if scheme.lower() != "digest":
            return AuthResult(False, "malformed")
        user, nonce, uri, response = p.get("username"), p.get("nonce"), p.get("uri"), p.get("response")
        if not user or not nonce or not uri or not response or p.get("realm") != self.realm:
            return AuthResult(False, "malformed", user or "")
        alg = p.get("algorithm", "MD5").upper()
        h = ALGORITHMS.get(alg)
        if h is None or alg not in self.algorithms:  # noqa: SIM114
            return AuthResult(False, "malformed", user)
        state = self.nonce_state(nonce, now, source_ip)
        if state == "bad":
            return AuthResult(False, "bad-nonce", user)
        creds = lookup(user)
        qop = p.get("qop")
        nc = p.get("nc", "")
        cnonce = p.get("cnonce", "")

        # the same work whether or not the user exists (no timing oracle for enumeration)
        if creds is not None and creds.secret is not None:
            ha1 = ha1_of(alg, user, self.realm, creds.secret)
        elif creds is not None and creds.md5_ha1 is not None and alg == "MD5":
            ha1 = creds.md5_ha1.lower()
        else:
            ha1 = ha1_of(alg, user, self.realm, os.urandom(8).hex())
        if qop not in (None, "auth") or (qop == "auth" and (not _NC.fullmatch(nc) or not cnonce)):
            return AuthResult(False, "malformed", user, True)
        expected = digest_response(alg, ha1, method, uri, nonce, nc, cnonce, qop)
        good = hmac.compare_digest(expected, response.lower())
        if creds is None or (creds.secret is None and (creds.md5_ha1 is None or alg != "MD5")):
            return AuthResult(False, "unknown-user", user, True)
        if not good:
            return AuthResult(False, "bad-response", user, True)
        if state == "stale":
            return AuthResult(False, "stale", user, True)
        count = int(nc, 16) if qop else 1
        last = self._nc.get(nonce)
        if last is not None and count <= last:
            return AuthResult(False, "replay", user, True)
        self._nc[nonce] = count
        self._nc.move_to_end(nonce)
        while len(self._nc) > self._max:
            self._nc.popitem(last=False)
        return AuthResult(True, "ok", user, True)
