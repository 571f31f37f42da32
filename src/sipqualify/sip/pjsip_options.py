"""The qualify OPTIONS of a pjsip.conf contact, shaped like res_pjsip's (asterisk-pjsip-observed.md §2).

Header order as Asterisk 20.20.1 / pjproject 2.17 send it: Via (`;rport;branch=z9hG4bKPj...`),
From (`<sip:USER@HOST>;tag=...`, no port), To (the contact URI without port or parameters),
Contact (`<sip:USER@LOCAL:PORT>`), Call-ID (a UUID), CSeq (random), Max-Forwards,
User-Agent, and `Content-Length:  0` with pjproject's two spaces. No Allow, Supported,
Accept or Date. USER is the endpoint's `from_user` or its name; HOST its `from_domain` or
the local address.

One difference, on purpose: the branch is `z9hG4bKPj` and 14 hex digits (56 random bits)
instead of a UUID, so it has the length every sipqualify branch has (`BRANCH_LEN`) and the
front door can tell our responses from raw bytes; the Call-ID (a UUID, 122 random bits) and
the source address are matched too.
"""

from __future__ import annotations

import os
import uuid

from .options import BRANCH_LEN, OutgoingOptions
from .uri import SipUri, format_host, parse_uri


def _uuid() -> str:
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


def to_uri(ruri: str) -> str:
    """res_pjsip's To: the contact URI without port or parameters (`sip:ok@127.0.0.1`)."""
    try:
        u = parse_uri(ruri)
    except ValueError:
        return ruri
    if not isinstance(u, SipUri):
        return ruri
    user = f"{u.user}@" if u.user is not None else ""
    return f"{u.scheme}:{user}{format_host(u.host)}"


def build_pjsip_options(
    ruri: str,
    local: tuple[str, int],
    *,
    transport: str = "UDP",
    from_user: str = "asterisk",
    from_domain: str | None = None,
    useragent: str = "sipqualify",
) -> OutgoingOptions:
    rnd = os.urandom(9)
    branch = "z9hG4bKPj" + rnd[:7].hex()
    assert len(branch) == BRANCH_LEN
    cseq = 1 + int.from_bytes(rnd[7:], "big") % 65535
    call_id = _uuid()
    host = format_host(local[0])
    data = (
        f"OPTIONS {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{local[1]};rport;branch={branch}\r\n"
        f"From: <sip:{from_user}@{from_domain or host}>;tag={_uuid()}\r\n"
        f"To: <{to_uri(ruri)}>\r\n"
        f"Contact: <sip:{from_user}@{host}:{local[1]}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        f"User-Agent: {useragent}\r\n"
        "Content-Length:  0\r\n\r\n"
    ).encode()
    return OutgoingOptions(data, branch, call_id, cseq)
