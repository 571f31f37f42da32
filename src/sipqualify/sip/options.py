"""The qualify OPTIONS request, shaped like chan_sip's (asterisk-observed.md §4).

Header order as Asterisk sends it: Via, Max-Forwards, From, To, Contact, Call-ID, CSeq,
User-Agent, Date, Allow, (Supported,) Content-Length. Differences, on purpose: the branch
carries 64 random bits (Asterisk: 32), the Via asks for `rport` (RFC 3581), and Allow lists
only what sipqualify really serves, with no Supported (chan_sip's lines with
`qualify_headers = asterisk`). One `os.urandom` call per request provides branch,
tag and Call-ID.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from .uri import format_host

__all__ = ["ALLOW", "ASTERISK_ALLOW", "ASTERISK_SUPPORTED", "BRANCH_LEN", "OutgoingOptions", "build_options",
           "format_host", "new_branch", "with_credentials"]

# The methods sipqualify serves, in every Allow it writes (its OPTIONS, its answers, the
# registrar's): the daemon always runs the registrar, so REGISTER is one of them.
ALLOW = "OPTIONS, REGISTER"
# chan_sip's lines (ALLOWED_METHODS and SUPPORTED_EXTENSIONS in chan_sip.c, asterisk-observed.md
# §4), for `qualify_headers = asterisk`: byte-exact requests at the price of advertising
# methods and extensions sipqualify does not implement.
ASTERISK_ALLOW = "INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE"
ASTERISK_SUPPORTED = "replaces, timer"
BRANCH_LEN = 23  # "z9hG4bK" and 16 hex digits: a receiver can find our branches in raw bytes


class OutgoingOptions(NamedTuple):  # a NamedTuple: one is built per poke, and it is cheap
    data: bytes
    branch: str
    call_id: str
    cseq: int


def build_options(
    ruri: str,
    local: tuple[str, int],
    *,
    transport: str = "UDP",
    from_user: str = "asterisk",
    from_display: str = "asterisk",
    useragent: str = "sipqualify",
    date: str = "",
    cseq: int = 102,
    to_uri: str | None = None,
    allow: str = ALLOW,
    supported: str = "",
    method: str = "OPTIONS",
    max_forwards: int = 70,
    extra_headers: tuple[str, ...] = (),
) -> OutgoingOptions:
    """The qualify request. The defaults are chan_sip's OPTIONS; a peer's probe shape (its
    `qualify_*` options) may change the method (`INFO`, or `NOTIFY` with `Event: keep-alive`),
    Max-Forwards, and add `extra_headers` (whole lines, checked by the config readers) before
    Content-Length."""
    rnd = os.urandom(28).hex()  # 64-bit branch, 32-bit tag, 128-bit Call-ID
    branch = "z9hG4bK" + rnd[:16]  # BRANCH_LEN
    hostport = f"{format_host(local[0])}:{local[1]}"
    call_id = f"{rnd[24:]}@{hostport}"
    date_line = f"Date: {date}\r\n" if date else ""
    supported_line = f"Supported: {supported}\r\n" if supported else ""
    extra = "Event: keep-alive\r\n" if method == "NOTIFY" else ""
    if extra_headers:
        extra += "".join(f"{h}\r\n" for h in extra_headers)
    data = (
        f"{method} {ruri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {hostport};branch={branch};rport\r\n"
        f"Max-Forwards: {max_forwards}\r\n"
        f'From: "{from_display}" <sip:{from_user}@{hostport}>;tag=as{rnd[16:24]}\r\n'
        f"To: <{to_uri or ruri}>\r\n"
        f"Contact: <sip:{from_user}@{hostport}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"User-Agent: {useragent}\r\n"
        f"{date_line}"
        f"Allow: {allow}\r\n"
        f"{supported_line}"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return OutgoingOptions(data, branch, call_id, cseq)


def new_branch() -> str:
    return "z9hG4bK" + os.urandom(8).hex()  # BRANCH_LEN


def with_credentials(request: bytes, branch: str, cseq: int, header: str, value: str) -> OutgoingOptions:
    """`request` (one we built: chan_sip's or res_pjsip's shape, any method) again as the answer
    to a challenge, as chan_sip and res_pjsip send it: the same Call-ID and From tag, a new
    branch, the CSeq number `cseq` (the challenged one's + 1), and `header: value` (Authorization or
    Proxy-Authorization) inserted before Content-Length (asterisk-pjsip-observed.md §2). `branch`
    is `request`'s."""
    head, sep, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    nb = new_branch()
    method = lines[0].split(b" ", 1)[0]
    out: list[bytes] = []
    old_branch, via_done = f"branch={branch}".encode(), False
    for line in lines:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v") and not via_done:  # our own Via: the top one
            line, via_done = line.replace(old_branch, f"branch={nb}".encode(), 1), True
        elif name == b"cseq":
            line = b"CSeq: %d %s" % (cseq, method)
        elif name in (b"content-length", b"l"):
            out.append(f"{header}: {value}".encode())
        out.append(line)
    call_id = next((ln.split(b":", 1)[1].strip().decode() for ln in lines[1:]
                    if ln.split(b":", 1)[0].strip().lower() in (b"call-id", b"i")), "")
    return OutgoingOptions(b"\r\n".join(out) + sep + body, nb, call_id, cseq)
