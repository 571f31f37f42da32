"""The fields the qualify engine matches a response on, read from the bytes (the hot path).

Theory of operation. Nearly every datagram sipqualify receives is the plain answer to one of
its pokes: a status line and 5-10 `Name: value` header lines in ASCII, one Via, no body. The
full parser (`message.parse_message`) builds a `Response` with every header for it, ~20 µs
in CPython; the engine then reads four things: the status, the top Via's branch, CSeq and
Call-ID. `peek_response` reads just those, in a few C calls:

1. the datagram's shape: `SIP/2.0 NNN reason`, ASCII, at most 8,192 bytes, LF only in CRLF,
   then only lines `name:...`, the empty line and nothing after it (no body);
2. the header names (what precedes each line's first colon), as a tuple, are looked up in a
   small cache that says where Via, Call-ID, CSeq and Content-Length are (compact forms and
   any case, as the parser's `canonical`); a tuple not seen before is checked (every name a
   token) before it is cached; names that repeat a mandatory header or Content-Length, or lack
   one of Via, From, To, Call-ID, CSeq, are not for the fast path; the values read (Call-ID,
   CSeq) must follow exactly one space after the colon and have no white space at either end;
3. the Via must be one value in the usual shape (the parser's `_VIA_OK`, as bytes), and
   Content-Length, if present, `0`.

Anything else returns None and goes through the full parser, which has the final word on
what is malformed. So the fast path accepts a strict subset of what `parse_message` accepts
without defects, and gives the same status, branch, Call-ID and CSeq for it
(tests/sip/test_fastpath.py checks this on mutated responses); it never rejects anything.

`PEEK` is what the engine calls: the same rules in C (sip/_speedups.c, one pass over the bytes, no
object made but the result) where it is built with the compiled modules (setup.py), else
`peek_response`, which stays the reference (the tests check that both return the same for every
response they try). `SIPQUALIFY_CSIP=0` takes the Python one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, NamedTuple

from . import CSIP
from .abnf import TOKEN_RE
from .headers import canonical
from .message import _PORT_RE, _REQUIRED, MAX_HEADERS

__all__ = ["PEEK", "peek_response"]

MAX_FAST: Final = 8192  # the parser's MAX_LINE: a datagram this short has no line longer
_NAME: Final = re.compile(TOKEN_RE.encode())  # a header name: fullmatch
_TOKEN = TOKEN_RE.replace("+", "")
# our own Via shape (sip/options.py), then parameters none of which is another branch (the
# parser's _VIA_OK would take the last one): a strict subset of _VIA_OK. Read in three parts:
# what precedes `;branch=z9hG4bK` (`Via: SIP/2.0/UDP host:port`, the same in every answer to
# one local address), the branch's 16 hex digits, and the parameters after it (`;rport=N;
# received=ADDR`, the same in the answers that come one way); the first and last are checked
# with these once and remembered (_VIA_HEADS, _VIA_TAILS).
_VIA_HEAD: Final = re.compile(rf" SIP/2\.0/(?:UDP|TCP|TLS|WS|WSS) [A-Za-z0-9.-]+(?::{_PORT_RE})?".encode())
_VIA_PARAMS: Final = re.compile(rf"(?:;(?![Bb][Rr][Aa][Nn][Cc][Hh]=){_TOKEN}+(?:={_TOKEN}+)?)*".encode())
_BRANCH: Final = b";branch=z9hG4bK"
_WANTED: Final = frozenset((*_REQUIRED, "content-length"))


class Shape(NamedTuple):
    """Where a header-name sequence has what the fast path reads: line numbers (0: absent) and
    where each value starts (after `Name: `)."""
    via: int
    via_at: int
    call_id: int
    call_id_at: int
    cseq: int
    cseq_at: int
    clen: int
    clen_line: bytes  # the one Content-Length line taken: `Name: 0` and its CR


NOT_FAST: Final = Shape(0, 0, 0, 0, 0, 0, 0, b"")  # via == 0
# header names as seen -> their Shape, or NOT_FAST. Responders send one or two shapes; bounded
# all the same. (No identity sentinel: compiled by mypyc, a Final tuple is not one object.)
_SHAPES: dict[tuple[bytes, ...], Shape] = {}
_MAX_SHAPES: Final = 256
# `Via: ... host:port` heads (with the name: it says where the value starts), and the parameters
# after the branch, as seen -> whether they are in our shape; bounded as _SHAPES
_VIA_HEADS: dict[bytes, bool] = {}
_VIA_TAILS: dict[bytes, bool] = {}


def _shape(names: tuple[bytes, ...]) -> Shape:
    seen: dict[str, int] = {}
    for i, raw in enumerate(names, 1):
        low = canonical(raw.decode("ascii")).lower()
        if low in _WANTED:
            if low in seen:
                return NOT_FAST  # a repeated Via, Content-Length ...: the parser decides
            seen[low] = i
    if len(names) > MAX_HEADERS or any(h not in seen for h in _REQUIRED):
        return NOT_FAST
    via, cid, cseq, clen = seen["via"], seen["call-id"], seen["cseq"], seen.get("content-length", 0)
    return Shape(via, len(names[via - 1]) + 1, cid, len(names[cid - 1]) + 2, cseq, len(names[cseq - 1]) + 2,
                 clen, names[clen - 1] + b": 0\r" if clen else b"")


def _value(line: bytes, at: int) -> bytes | None:
    """`line`'s value from `at` to its CR, after exactly one space; None if the parser would strip it."""
    # bytes indexed are ints: no `in` on bytes (a substring search, ~2,000 instructions compiled)
    end = len(line) - 1  # the CR
    if at >= end or line[at - 1] != 32:
        return None
    first, last = line[at], line[end - 1]
    if first == 32 or first == 9 or last == 32 or last == 9:  # SP, HTAB
        return None
    return line[at:end]


def _via_part(seen: dict[bytes, bool], part: bytes, pattern: re.Pattern[bytes], at: int) -> bool:
    ok = seen.get(part)
    if ok is None:
        ok = pattern.fullmatch(part, at) is not None
        if len(seen) < _MAX_SHAPES:
            seen[part] = ok
    return ok


def _branch(via: bytes, at: int) -> str | None:
    """The branch of the Via line `via` (its value from `at`, CR-terminated) if it is in our shape."""
    head, sep, tail = via.partition(_BRANCH)
    if not sep or len(tail) < 17 or not _via_part(_VIA_HEADS, head, _VIA_HEAD, at):
        return None
    for i in range(16):
        c = tail[i]
        if not (48 <= c <= 57 or 97 <= c <= 102):  # 0-9 a-f
            return None
    if len(tail) > 17 and not _via_part(_VIA_TAILS, tail[16:-1], _VIA_PARAMS, 0):
        return None
    return "z9hG4bK" + tail[:16].decode("ascii")


def peek_response(data: bytes) -> tuple[int, str, str, bytes] | None:
    """(status, branch, Call-ID, CSeq value as bytes) of a plain response, or None: parse it.
    The CSeq is not read: the caller compares it with its own (and parses it only if unequal)."""
    if (
        len(data) > MAX_FAST
        or data[:8] != b"SIP/2.0 "
        or data[11:12] != b" "
        or data[-4:] != b"\r\n\r\n"  # no body (an empty line before the end: no name below)
        or not data.isascii()
    ):
        return None
    code = data[8:11]
    if not code.isdigit() or not 100 <= (status := int(code)) <= 699:
        return None
    # split at LF: every line but the last (empty, after the final CRLF) must end with its CR
    # (LF only in CRLF; a bare CR stays inside its line, as the parser sees it)
    lines = data.split(b"\n")
    if lines[0][-1] != 13:
        return None
    # every line but the first and the last two (the empty line, and nothing after it): `token:`,
    # no folding; the names as a tuple say where the wanted headers are (_SHAPES)
    names: list[bytes] = []
    for i in range(1, len(lines) - 2):
        line = lines[i]
        name, colon, _ = line.partition(b":")  # one argument: cheaper to call than find()
        if not colon or not name or line[-1] != 13:
            return None
        names.append(name)
    key = tuple(names)
    shape = _SHAPES.get(key)
    if shape is None:
        if not all(_NAME.fullmatch(name) for name in key):  # not tokens: the parser decides (not cached)
            return None
        shape = _shape(key)
        if len(_SHAPES) < _MAX_SHAPES:
            _SHAPES[key] = shape
    if not shape.via:
        return None
    if shape.clen and lines[shape.clen] != shape.clen_line:
        return None
    branch = _branch(lines[shape.via], shape.via_at)  # from the space after the colon
    call_id = _value(lines[shape.call_id], shape.call_id_at)
    cseq = _value(lines[shape.cseq], shape.cseq_at)
    if branch is None or call_id is None or cseq is None:
        return None
    return status, branch, call_id.decode("ascii"), cseq


PEEK_C: Callable[[bytes], tuple[int, str, str, bytes] | None] | None
try:  # the same rules in C (sip/_speedups.c), built with the compiled modules (setup.py)
    from ._speedups import peek as _peek_c
    PEEK_C = _peek_c
except ImportError:
    PEEK_C = None
PEEK: Final[Callable[[bytes], tuple[int, str, str, bytes] | None]] = (
    PEEK_C if PEEK_C is not None and CSIP else peek_response)
