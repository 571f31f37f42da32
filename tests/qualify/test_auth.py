"""OPTIONS with digest (qualify/auth.py, issue 13 item 5) on the virtual clock.

The challenging peer is sipqualify's own registrar-side DigestAuthenticator (sip/digest.py),
so every authenticated request is checked by a real verifier, not by what the engine expects.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from sipqualify.qualify import auth
from sipqualify.qualify.events import VerdictChanged
from sipqualify.sip.digest import Credentials, DigestAuthenticator, parse_auth_header
from sipqualify.sip.options import build_options, with_credentials

from .sim import Sim, answer, build, header, peer, silent

A = ("127.0.0.1", 15095)
REALM = "carrier.example"


class Carrier:
    """A UAS that challenges every OPTIONS without credentials (401, or 407 as a proxy) and
    answers 200 to good ones. `expire`: how many authenticated requests find their nonce
    expired (the server's clock has moved past its nonce lifetime): 401/407 with stale=true."""

    def __init__(self, status: int = 401, password: str = "s3cret", user: str = "trunk", expire: int = 0,
                 algorithms: tuple[str, ...] = ("MD5",), delay: float = 0.005) -> None:
        self.status, self.expire, self.delay = status, expire, delay
        self.auth = DigestAuthenticator(REALM, key=b"k" * 32, nonce_ttl=30.0, algorithms=algorithms)
        self.users = {user: Credentials(password)}
        self.results: list[str] = []

    def reply(self, req: bytes, t: float, *, stale: bool = False) -> list[tuple[float, bytes]]:
        name = auth.HEADERS[self.status][0]
        extra = "".join(f"{name}: {v}\r\n" for v in self.auth.challenge(t, A[0], stale=stale))
        resp = answer(req, self.status, "Unauthorized" if self.status == 401 else "Proxy Authentication Required")
        return [(self.delay, resp.replace(b"Content-Length:", extra.encode() + b"Content-Length:"))]

    def __call__(self, req: bytes, t: float) -> list[tuple[float, bytes]]:
        try:
            value = header(req, auth.HEADERS[self.status][1])
        except KeyError:
            return self.reply(req, t)
        clock = t
        if self.expire:
            self.expire -= 1
            clock = t + self.auth.nonce_ttl + 1
        res = self.auth.verify("OPTIONS", value, self.users.get, clock, A[0])
        self.results.append(res.reason)
        if res.ok:
            return [(self.delay, answer(req, 200, "OK"))]
        return self.reply(req, t, stale=res.reason == "stale")


def trunk(**kw: object) -> object:
    base: dict[str, object] = {"qualify_auth": True, "secret": "s3cret", "fromuser": "trunk"}
    base.update(kw)
    return peer("p", A[1], 2000, freq_s=60, **base)


def run(carrier: Carrier, until: float = 1.0, **kw: object) -> Sim:
    sim = build([trunk(**kw)], {A: carrier})  # type: ignore[list-item]
    sim.run_until(until)
    return sim


def sent(sim: Sim) -> list[bytes]:
    return [d for _, dest, d in sim.sent if dest == A]


def verdicts(sim: Sim) -> list[tuple[int, str, str]]:
    return [(round(t * 1000), e.new, e.reason) for t, e in sim.events if isinstance(e, VerdictChanged)]


def test_default_is_chan_sip_exact_the_challenge_is_the_answer() -> None:
    """qualify_auth = no (the default), even with a secret: one request per poll, the 401 is the
    answer (OK, 5 ms), verdict up with reason auth_required."""
    c = Carrier()
    sim = run(c, qualify_auth=False)
    assert sim.sends_to(A) == [0]
    p = sim.engine.peer("p")
    assert p is not None and p.status == "OK (5 ms)"
    assert verdicts(sim) == [(5, "up", "auth_required")]
    assert [r.status_code for r in sim.results("p")] == [401]


def test_challenge_answered_same_call_id_cseq_plus_one_new_branch_rtt_from_authenticated_send() -> None:
    c = Carrier()
    sim = run(c, until=61.0)
    first, second = sent(sim)[:2]
    assert sim.sends_to(A)[:3] == [0, 5, 60010]  # retry at the 401; next poll qualifyfreq after the 200
    assert header(second, "Call-ID") == header(first, "Call-ID")
    assert header(second, "From") == header(first, "From")  # same tag
    assert (header(first, "CSeq"), header(second, "CSeq")) == ("102 OPTIONS", "103 OPTIONS")
    assert header(second, "Via") != header(first, "Via")
    # only the branch, the CSeq and the new header differ; Authorization right before Content-Length
    lines1, lines2 = first.split(b"\r\n"), second.split(b"\r\n")
    assert lines2[-4].startswith(b"Authorization: Digest ") and lines2[-3] == b"Content-Length: 0"
    diff = [(a, b) for a, b in zip(lines1, lines2[:-4] + lines2[-3:], strict=True) if a != b]
    assert [a.split(b":")[0] for a, _ in diff] == [b"Via", b"CSeq"]
    _, params = parse_auth_header(header(second, "Authorization"))
    assert (params["username"], params["uri"], params["qop"], params["nc"]) == ("trunk", "sip:127.0.0.1", "auth",
                                                                                  "00000001")
    assert c.results[0] == "ok"
    first_result = sim.results("p")[0]
    assert first_result.status_code == 200 and first_result.rtt == pytest.approx(0.005)
    assert verdicts(sim) == [(10, "up", "")]
    assert sim.engine.stats.polls == 2 and sim.engine.stats.answered == 2  # the retry is no poll of its own
    assert header(sent(sim)[2], "CSeq") == "102 OPTIONS"  # each poll starts without credentials


def test_407_is_answered_with_proxy_authorization() -> None:
    c = Carrier(status=407)
    sim = run(c)
    second = sent(sim)[1]
    assert header(second, "Proxy-Authorization").startswith('Digest username="trunk"')
    with pytest.raises(KeyError):
        header(second, "Authorization")
    assert c.results == ["ok"] and verdicts(sim) == [(10, "up", "")]


def test_wrong_password_is_auth_failed_while_chan_sip_says_reachable() -> None:
    c = Carrier(password="other")
    sim = run(c, until=61.0)
    assert sim.sends_to(A) == [0, 5, 60010, 60015]  # one authenticated try per poll, no loop
    p = sim.engine.peer("p")
    assert p is not None and p.status == "OK (5 ms)"  # the peer answered
    assert verdicts(sim) == [(10, "down", "auth_failed")]
    assert [r.status_code for r in sim.results("p")] == [401, 401]
    assert c.results == ["bad-response", "bad-response"]


def test_auth_failed_counts_toward_down_after() -> None:
    sim = run(Carrier(password="other"), until=125.0, down_after=2)
    assert [v[1:] for v in verdicts(sim)] == [("pending", "auth_failed"), ("down", "auth_failed")]


def test_stale_nonce_is_retried_once_with_the_new_nonce() -> None:
    c = Carrier(expire=1)
    sim = run(c)
    reqs = sent(sim)
    assert sim.sends_to(A) == [0, 5, 10]
    assert [header(r, "CSeq") for r in reqs] == ["102 OPTIONS", "103 OPTIONS", "104 OPTIONS"]
    assert len({header(r, "Call-ID") for r in reqs}) == 1 and len({header(r, "Via") for r in reqs}) == 3
    n1 = parse_auth_header(header(reqs[1], "Authorization"))[1]["nonce"]
    n2 = parse_auth_header(header(reqs[2], "Authorization"))[1]["nonce"]
    assert n1 != n2
    assert c.results == ["stale", "ok"]
    assert verdicts(sim) == [(15, "up", "")]
    assert [round(r.rtt * 1000) for r in sim.results("p") if r.rtt is not None] == [5]  # the last request's


def test_a_nonce_stale_twice_is_auth_failed() -> None:
    c = Carrier(expire=2)
    sim = run(c)
    assert sim.sends_to(A) == [0, 5, 10]
    assert c.results == ["stale", "stale"]
    assert verdicts(sim) == [(15, "down", "auth_failed")]


def test_sha256_challenge_and_md5secret() -> None:
    c = Carrier(algorithms=("SHA-256",))
    sim = run(c)
    assert "algorithm=SHA-256" in header(sent(sim)[1], "Authorization")
    assert c.results == ["ok"]
    ha1 = hashlib.md5(f"trunk:{REALM}:s3cret".encode()).hexdigest()
    c = Carrier()
    sim = run(c, secret=None, md5secret=ha1)
    assert c.results == ["ok"] and verdicts(sim) == [(10, "up", "")]
    # an MD5 HA1 cannot answer a SHA-256-only challenge: the challenge is the answer, as chan_sip
    c = Carrier(algorithms=("SHA-256",))
    sim = run(c, secret=None, md5secret=ha1)
    assert sim.sends_to(A) == [0] and verdicts(sim) == [(5, "up", "auth_required")]


def test_user_is_fromuser_else_the_peer_name() -> None:
    c = Carrier(user="p")
    sim = run(c, fromuser=None)
    assert parse_auth_header(header(sent(sim)[1], "Authorization"))[1]["username"] == "p"
    assert c.results == ["ok"]


def test_unanswered_authenticated_request_gives_up_from_its_own_send() -> None:
    """The authenticated request has its own give-up, 2 x maxms after its first send."""
    c = Carrier()
    calls = {"n": 0}

    def first_only(req: bytes, t: float) -> list[tuple[float, bytes]]:
        calls["n"] += 1
        return c(req, t) if "Authorization" not in req.decode() else silent(req, t)

    sim = build([dataclasses.replace(trunk(), qualify_ms=500)], {A: first_only})  # type: ignore[type-var]
    sim.run_until(2.0)
    assert sim.sends_to(A) == [0, 5, 1005]  # the retry, its retransmission at +1 s
    assert verdicts(sim) == [(1005, "down", "timeout")]
    assert [c[:2] for c in sim.changes("p")] == [(1005, "UNREACHABLE")]
    assert sim.engine._auth == {}  # nothing left behind


def test_with_credentials_keeps_every_other_byte() -> None:
    req = build_options("sip:10.0.0.1", ("10.0.0.2", 5060), date="Mon, 23 Nov 2026 19:45:11 GMT")
    out = with_credentials(req.data, req.branch, 103, "Authorization", "Digest x")
    expected = (req.data.replace(req.branch.encode(), out.branch.encode())
                .replace(b"CSeq: 102 OPTIONS", b"CSeq: 103 OPTIONS")
                .replace(b"Content-Length: 0", b"Authorization: Digest x\r\nContent-Length: 0"))
    assert out.data == expected and out.call_id == req.call_id and out.cseq == 103
    assert out.branch != req.branch and len(out.branch) == len(req.branch)


@pytest.mark.parametrize(
    ("tried", "stale", "left", "answerable", "step"),
    [
        (False, False, True, True, auth.RETRY),
        (False, False, True, False, auth.ANSWER),
        (True, False, True, True, auth.FAILED),
        (True, True, True, True, auth.RETRY),
        (True, True, False, True, auth.FAILED),
        (True, True, True, False, auth.FAILED),
    ],
)
def test_step_table(tried: bool, stale: bool, left: bool, answerable: bool, step: str) -> None:
    assert auth.STEPS[(tried, stale, left, answerable)] == step
