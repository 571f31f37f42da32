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
from collections.abc import Callable
from functools import lru_cache
from typing import Final

from . import CSIP
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


class OutgoingOptions:
    """A request to send and what its transaction is matched on. One is built per poke: a plain
    class (compiled by mypyc, a native one), not a NamedTuple, whose constructor is a Python
    function (≈ 3,000 instructions a poke, docs/performance.md step 6)."""

    __slots__ = ("data", "branch", "call_id", "cseq")

    def __init__(self, data: bytes, branch: str, call_id: str, cseq: int) -> None:
        self.data = data
        self.branch = branch
        self.call_id = call_id
        self.cseq = cseq

    def __repr__(self) -> str:
        return (f"OutgoingOptions(data={self.data!r}, branch={self.branch!r}, call_id={self.call_id!r}, "
                f"cseq={self.cseq})")


_POOL_POKES = 256  # pokes' randomness drawn per getrandom() call


class _Randomness:
    """Hex digits from the kernel's CSPRNG, 56 per poke, drawn 256 pokes' worth at a time: a
    syscall releases the GIL, and with the store's writer thread busy, getting it back can cost
    up to a switch interval (5 ms) per call; one call per 256 pokes instead of one per poke. The
    pool is kept as text and as bytes, so a poke slices what it needs from either (no copy, hex
    conversion or encoding per poke)."""

    __slots__ = ("text", "raw", "at")

    def __init__(self) -> None:
        self.text = ""
        self.raw = b""
        self.at = 0

    def take(self) -> int:
        """Where this poke's 56 fresh digits start in `text` and `raw` (never handed out twice)."""
        at = self.at
        if at + 56 > len(self.text):
            self.text = os.urandom(28 * _POOL_POKES).hex()
            self.raw = self.text.encode()
            at = 0
        self.at = at + 56
        return at


_RANDOM = _Randomness()


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
    Content-Length. Built by splicing the per-poke parts (Request-URI, branch, tag, To, Call-ID,
    CSeq, Date) into byte pieces made once per request shape (`_pieces`)."""
    pool = _RANDOM  # 64-bit branch, 32-bit tag, 128-bit Call-ID: 56 hex digits from i
    pieces = _pieces(method, transport, local, max_forwards, useragent, allow, supported, extra_headers)
    i = pool.take()  # first: it may refill the pool
    data, branch, call_id = SPLICE(pieces, ruri, pool.text, pool.raw, i, from_display, from_user, to_uri, cseq, date)
    return OutgoingOptions(data, branch, call_id, cseq)


def _splice(pieces: tuple[str, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes],
            ruri: str, text: str, raw: bytes, i: int, from_display: str, from_user: str, to_uri: str | None,
            cseq: int, date: str) -> tuple[bytes, str, str]:
    """A request from its shape's `pieces` (see _pieces) and the poke's parts: the branch's, tag's
    and Call-ID's 56 hex digits from `i` in the pool (`text` and `raw`: the same digits as str and
    bytes). The reference of sip/_speedups.c splice, which SPLICE is where it is built."""
    hostport, p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10 = pieces
    ruri_b = ruri.encode()
    user = from_user.encode()
    data = b"".join((p0, ruri_b, p1, raw[i:i + 16], p2, from_display.encode(), p3, user, p4, raw[i + 16:i + 24],
                     p5, to_uri.encode() if to_uri else ruri_b, p6, user, p7, raw[i + 24:i + 56], p8, b"%d" % cseq,
                     p9, f"Date: {date}\r\n".encode() if date else b"", p10))
    return data, "z9hG4bK" + text[i:i + 16], f"{text[i + 24:i + 56]}@{hostport}"  # BRANCH_LEN


SPLICE_C: Callable[[tuple[str, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes], str,
                    str, bytes, int, str, str, str | None, int, str], tuple[bytes, str, str]] | None
try:  # the same in C (sip/_speedups.c), built with the compiled modules (setup.py)
    from ._speedups import splice as _splice_c
    SPLICE_C = _splice_c
except ImportError:
    SPLICE_C = None
SPLICE: Final = SPLICE_C if SPLICE_C is not None and CSIP else _splice


# The shapes a node sends are few (a method, a transport and local address, the headers' options);
# the From user and display name are not part of one: with them (per peer in many sip.conf files)
# a million peers would be a million shapes and the cache would never hit.
@lru_cache(maxsize=1024)
def _pieces(method: str, transport: str, local: tuple[str, int], max_forwards: int, useragent: str, allow: str,
            supported: str, extra_headers: tuple[str, ...]
            ) -> tuple[str, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]:
    """The constant parts of a request shape, between the per-poke ones (see build_options)."""
    hostport = f"{format_host(local[0])}:{local[1]}"
    supported_line = f"Supported: {supported}\r\n" if supported else ""
    extra = "Event: keep-alive\r\n" if method == "NOTIFY" else ""
    if extra_headers:
        extra += "".join(f"{h}\r\n" for h in extra_headers)
    return (
        hostport,
        f"{method} ".encode(),
        f" SIP/2.0\r\nVia: SIP/2.0/{transport} {hostport};branch=z9hG4bK".encode(),
        f';rport\r\nMax-Forwards: {max_forwards}\r\nFrom: "'.encode(),
        b'" <sip:',
        f"@{hostport}>;tag=as".encode(),
        b"\r\nTo: <",
        b">\r\nContact: <sip:",
        f"@{hostport}>\r\nCall-ID: ".encode(),
        f"@{hostport}\r\nCSeq: ".encode(),
        f" {method}\r\nUser-Agent: {useragent}\r\n".encode(),
        f"Allow: {allow}\r\n{supported_line}{extra}Content-Length: 0\r\n\r\n".encode(),
    )


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
