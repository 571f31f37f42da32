"""Qualify with digest (issue 13 item 5): a challenged poke answered with credentials, sans-I/O.

Theory of operation. chan_sip counts a 401/407 to a poke as an answer: the peer is reachable,
whatever it thinks of us (and that stays the default). With `qualify_auth = yes` and
credentials (`secret`, or `md5secret` for MD5 challenges; user name `fromuser`, else the
peer's name) the engine sends the request again with credentials, as res_pjsip does with an
endpoint's `outbound_auth` (asterisk-pjsip-observed.md §2): same Call-ID and From tag, a new
branch, CSeq + 1, `Authorization` (401) or `Proxy-Authorization` (407) before Content-Length.
A carrier that challenges OPTIONS is then monitored for real: the answer to the authenticated
request is the poke's result.

Every step is decided by `next_step()` from the table `STEPS` below; the engine only sends
what it says. The states of one poke's authentication, by the request that was challenged:

    (first request,            answerable challenge)     -> RETRY
    (first request,            no usable challenge)      -> ANSWER  the challenge is the answer (chan_sip)
    (authenticated,            stale=true, first time)   -> RETRY   the new nonce (RFC 7616 §3.3)
    (authenticated,            anything else)            -> FAILED  verdict down, reason auth_failed;
                                                                    the chan_sip state: reachable
                                                                    (the peer answered)

Timing: the authenticated request is a transaction of its own with its own give-up timer
(2 x maxms from its first send), and the RTT recorded is measured from *its* first send, not
from the challenged one's: the RTT is then one round trip to the peer, comparable to an
unchallenged peer's and to `maxms` (res_pjsip reports both round trips added up). Each poll
starts again without credentials, as chan_sip and res_pjsip do: no nonce is kept between
polls, so `nc` is 00000001 unless a challenge repeats a nonce within one poll.

pjsip.conf contacts (`PeerConfig.outbound_auths`, filled by config/pjsip.py from the endpoint
that qualifies the AOR: the contact's own endpoint, else the first one listing the AOR,
pjsip_options.c `sip_options_qualify_contact`) answer with the endpoint's `outbound_auth`
sections whatever `authenticate_qualify` says (res_pjsip.c `send_request_cb` does not read it,
asterisk-pjsip-observed.md §2). Of the sections, the first whose `realm` is the challenge's
(case-insensitive), else the first without a realm or with `*`
(res_pjsip_outbound_authenticator_digest.c); user name =
the section's `username`; `auth_type = md5` answers with `md5_cred`. They keep res_pjsip's
timing (the engine, `QualifyEngine._poll_origin`): the qualify is one from the first,
unauthenticated send: the RTT covers both round trips, `qualify_timeout` runs from it, and so
does the AOR's polling grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..model import PeerConfig
from ..sip.digest import answer_challenge, is_stale, parse_auth_header
from ..sip.options import OutgoingOptions, with_credentials

RETRY = "retry"
ANSWER = "answer"
FAILED = "failed"
CHALLENGES = (401, 407)
# the challenge header of a status, and the header that answers it (RFC 3261 §22.2, §22.3)
HEADERS = {401: ("WWW-Authenticate", "Authorization"), 407: ("Proxy-Authenticate", "Proxy-Authorization")}
STALE_RETRIES = 1  # a stale=true challenge to an authenticated request is answered this many times

# (challenged request was authenticated, stale, stale retries left, challenge answerable) -> step
STEPS: dict[tuple[bool, bool, bool, bool], str] = {}
for _stale in (False, True):
    for _left in (False, True):
        STEPS[(False, _stale, _left, True)] = RETRY
        STEPS[(False, _stale, _left, False)] = ANSWER
        for _ok in (False, True):
            STEPS[(True, _stale, _left, _ok)] = RETRY if (_stale and _left and _ok) else FAILED


@dataclass(slots=True)
class AuthAttempt:
    """One poke's authentication: lives while an authenticated request of it is in flight."""

    request: bytes  # the poke as first sent, without credentials
    branch: str  # its branch
    cseq: int  # the CSeq of the request last sent
    tries: int = 0  # authenticated requests sent
    stale: int = 0  # ... of which answered a stale=true challenge
    nonce: str = ""  # the nonce last answered
    nc: int = 0  # how often it was answered (RFC 7616 nonce count)
    origin: float | None = None  # pjsip.conf contacts: when the poll was first sent (RTT, timeout, grid)


def has_credentials(cfg: PeerConfig) -> bool:
    return bool(cfg.outbound_auths) or (cfg.qualify_auth and bool(cfg.secret or cfg.md5secret))


def credentials_for(cfg: PeerConfig, challenge: str) -> tuple[str, str | None, str | None] | None:
    """(user, password, HA1) answering `challenge`, or None: a pjsip.conf contact's outbound_auth
    of the challenge's realm, else one without a realm; a sip.conf peer's secret/md5secret."""
    if cfg.outbound_auths:
        realm = parse_auth_header(challenge)[1].get("realm", "")
        # res_pjsip_outbound_authenticator_digest.c set_outbound_authentication_credentials: the
        # first of the challenge's realm (case-insensitive), else the first wildcard ("" or "*")
        found = next((a for a in cfg.outbound_auths if a.realm.lower() == realm.lower() and a.realm != "*"),
                     next((a for a in cfg.outbound_auths if a.realm in ("", "*")), None))
        return None if found is None else (found.username, found.password, found.md5_cred)
    if cfg.qualify_auth and (cfg.secret or cfg.md5secret):
        return cfg.fromuser or cfg.name, cfg.secret, cfg.md5secret
    return None


def _request_line(request: bytes) -> tuple[str, str]:
    method, uri, _ = request.split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape").split(" ", 2)
    return method, uri


def next_step(cfg: PeerConfig, attempt: AuthAttempt, status: int, challenges: list[str],
              cnonce: str | None = None) -> tuple[str, OutgoingOptions | None]:
    """What to do with a 401/407 (`challenges`: the values of its challenge header) to the
    request `attempt` last sent: (RETRY, the request to send) or (ANSWER | FAILED, None).
    RETRY updates `attempt`."""
    method, uri = _request_line(attempt.request)
    value = None
    for challenge in challenges:  # the first one we can answer (RFC 8760 §2.4)
        creds = credentials_for(cfg, challenge)
        if creds is None:
            continue
        user, password, ha1 = creds
        nonce = parse_auth_header(challenge)[1].get("nonce", "")
        nc = attempt.nc + 1 if nonce == attempt.nonce else 1
        value = answer_challenge(challenge, user, method, uri, password=password, md5_ha1=ha1,
                                 nc=nc, cnonce=cnonce or os.urandom(8).hex())
        if value is not None:
            break
    stale = any(is_stale(c) for c in challenges)
    step = STEPS[(attempt.tries > 0, stale, attempt.stale < STALE_RETRIES, value is not None)]
    if step != RETRY or value is None:
        return step, None
    if attempt.tries:
        attempt.stale += 1
    attempt.tries += 1
    attempt.nonce, attempt.nc = nonce, nc
    out = with_credentials(attempt.request, attempt.branch, attempt.cseq + 1, HEADERS[status][1], value)
    attempt.cseq = out.cseq
    return RETRY, out
