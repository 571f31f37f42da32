"""SIP messages: parse one datagram into a Request or Response, build them back (RFC 3261 §7).

Theory of operation: `parse_message` validates what every receiver must be able to rely on
(start line, header syntax and folding, the five mandatory headers, CSeq, Content-Length
framing, top-level Via / From / To syntax) and raises `SipParseError` with a specific reason
for anything else; it never raises anything other than SipParseError on bytes from the
network and its cost is linear in the size of the datagram (bounded at 65535 bytes). Header
values stay text; Via and URIs are parsed when asked for, and those accessors (`cseq`,
`top_via`, `branch`, `Via.rport`, `Request.response_dest`, `make_response`) raise nothing but
SipParseError either (tests/sip/test_parser_property.py). Numbers, spaces and tokens are
ASCII, as RFC 3261's ABNF says (`abnf.py`): '²' or '５' in a port is a parse error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .abnf import LWS, TOKEN, TOKEN_RE, digits_value, is_digits, is_quoted, is_token
from .errors import SipParseError
from .headers import Headers, canonical, split_commas
from .uri import SipUri, format_host, parse_name_addr, parse_uri

__all__ = [
    "SipParseError",
    "Headers",
    "Via",
    "Request",
    "Response",
    "Message",
    "parse_message",
    "parse_via",
    "make_response",
]

MAX_MESSAGE = 65535
MAX_HEADERS = 256
MAX_LINE = 8192
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_WANTED = frozenset((*_REQUIRED, "max-forwards", "content-length"))
_HOSTCHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."
_PORT_RE = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
# `SIP/2.0/UDP host[:port][;params]` with no LWS: what nearly every UA sends. Group 1 is the
# branch (None when the Via has none). Anything else goes through parse_via. re.ASCII: under
# IGNORECASE alone, [a-z] also matches KELVIN SIGN and LATIN SMALL LETTER LONG S.
_VIA_OK = re.compile(
    rf"SIP/2\.0/{TOKEN_RE} [A-Za-z0-9.-]+(?::{_PORT_RE})?"
    rf"(?:;(?:branch=({TOKEN_RE})|(?!branch=){TOKEN_RE}(?:={TOKEN_RE})?))*",
    re.IGNORECASE | re.ASCII,
)
_NAME_CACHE: dict[str, tuple[str, str, bool]] = {}  # raw name as seen -> (canonical, lower, wanted)
_VIA_RE = re.compile(  # LWS is SP / HTAB, a port ASCII digits (`\s` and `\d` are Unicode)
    rf"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({TOKEN_RE})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*(.*)",
    re.S | re.ASCII,
)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server; None when absent, requested (bare) or not a port."""
        v = self.params.get("rport")
        port = digits_value(v, 5) if v is not None else None
        return port if port and port < 65536 else None

    @property
    def wants_rport(self) -> bool:
        """The client asked for rport (RFC 3581 §3)."""
        return "rport" in self.params

    def __str__(self) -> str:
        s = f"SIP/2.0/{self.transport} {format_host(self.host)}"
        if self.port is not None:
            s += f":{self.port}"
        for k, v in self.params.items():
            s += f";{k}" if v is None else f";{k}={v}"
        return s


def _parse_via_fast(value: str) -> Via | None:
    """The common shape `SIP/2.0/UDP host[:port][;params]` without a regex; None if odd."""
    if not value.startswith("SIP/2.0/") or not value.isascii():
        return None
    transport, sp, rest = value[8:].partition(" ")
    if not sp or not is_token(transport) or " " in rest or "\t" in rest:
        return None
    sentby, _, ptext = rest.partition(";")
    if sentby.startswith("["):
        return None
    host, colon, port_s = sentby.partition(":")
    if not host or host.strip(_HOSTCHARS):
        return None
    port = None
    if colon:
        port = digits_value(port_s, 5)
        if port is None or not 0 < port < 65536:
            return None
    params: dict[str, str | None] = {}
    if ptext:
        for part in ptext.split(";"):
            name, eq, v = part.partition("=")
            if not is_token(name) or (eq and not v):
                return None
            params[name.lower()] = v if eq else None
    return Via(transport.upper(), host, port, params)


def parse_via(value: str) -> Via:
    fast = _parse_via_fast(value)
    if fast is not None:
        return fast
    m = _VIA_RE.fullmatch(value)
    if m is None:
        raise SipParseError(f"bad Via: {value!r}")
    transport, host, port_s, rest = m.groups()
    host = host.strip("[]")
    port = int(port_s) if port_s else None
    if port is not None and not 0 < port < 65536:
        raise SipParseError(f"Via port out of range: {value!r}")
    params: dict[str, str | None] = {}
    rest = rest.strip(LWS)
    if rest:
        if not rest.startswith(";"):
            raise SipParseError(f"junk after Via sent-by: {value!r}")
        for part in rest[1:].split(";"):
            part = part.strip(LWS)
            if not part:
                raise SipParseError(f"empty Via parameter in {value!r}")
            name, eq, v = part.partition("=")
            name = name.strip(LWS)
            if not is_token(name):
                raise SipParseError(f"bad Via parameter {part!r}")
            v = v.strip(LWS)
            if eq and not v:
                raise SipParseError(f"Via parameter {name} without a value")
            if not v.isascii() and not is_quoted(v):  # via-extension: token / host / quoted-string
                raise SipParseError(f"Via parameter {name} is not ASCII and not quoted: {v[:40]!r}")
            params[name.lower()] = v if eq else None
    return Via(transport.upper(), host, port, params)


class _Common:
    """Accessors shared by requests and responses.

    `_first` (filled by the parser) maps a lower-case mandatory header name to its first
    value, and caches the parsed top Via and CSeq, so the hot path never rescans headers.
    """

    __slots__ = ()
    headers: Headers
    body: bytes
    _first: dict[str, object] | None

    def _value(self, low: str, name: str) -> str | None:
        if self._first is not None:
            v = self._first.get(low)
            return v if isinstance(v, str) else None
        return self.headers.get(name)

    @property
    def defects(self) -> list[str]:
        """Problems that do not stop parsing (RFC 4475 §3.3): missing mandatory headers,
        conflicting Content-Length. A receiver answers a request with defects with 400."""
        if self._first is not None:
            d = self._first.get(" defects")
            if isinstance(d, list):
                return d
        return []

    @property
    def call_id(self) -> str | None:
        return self._value("call-id", "Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        if self._first is not None:
            c = self._first.get(" cseq")
            if isinstance(c, tuple):
                return c
        v = self._value("cseq", "CSeq")
        if v is None:
            raise SipParseError("missing CSeq")
        return _parse_cseq(v)

    @property
    def top_via(self) -> Via | None:
        if self._first is not None:
            via = self._first.get(" via")
            if isinstance(via, Via):
                return via
        v = self._value("via", "Via")
        if v is None:
            return None
        if "," in v:
            v = next(iter(split_commas(v)), "")
        via = parse_via(v)
        if self._first is not None:
            self._first[" via"] = via
        return via

    @property
    def branch(self) -> str | None:
        if self._first is not None:
            b = self._first.get(" branch", False)
            if b is not False:
                return b if isinstance(b, str) else None
        via = self.top_via
        return via.branch if via is not None else None

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The start line, the headers (Content-Length recomputed from the body), the body."""
        lines = [self._start_line(), *(f"{k}: {v}" for k, v in self.headers.items() if k != "Content-Length"),
                 f"Content-Length: {len(self.body)}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class Request(_Common):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _first: dict[str, object] | None = field(default=None, repr=False, compare=False)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def response_dest(self, source: tuple[str, int]) -> tuple[str, int]:
        """Where a response to this request (received over UDP from `source`) goes, RFC 3261
        §18.2.2 / RFC 3581 §4: the source address; the source port when the top Via asks for
        rport or names no port, else its sent-by port."""
        via = self.top_via
        if via is not None and "rport" not in via.params and via.port:
            return source[0], via.port
        return source


@dataclass(slots=True)
class Response(_Common):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _first: dict[str, object] | None = field(default=None, repr=False, compare=False)

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


Message = Request | Response


def _parse_cseq(v: str) -> tuple[int, str]:
    num, _, method = v.strip(LWS).partition(" ")
    method = method.strip(LWS)
    # abnf's digits_value and is_token, inlined: this runs for every response we receive
    if not (len(num) <= 10 and num.isascii() and num.isdigit()):
        raise SipParseError(f"bad CSeq number: {v!r}")
    n = int(num)
    if n >= 2**31:
        raise SipParseError(f"CSeq number {num} is not below 2**31 (RFC 3261 §8.1.1.5)")
    if not method or method.strip(TOKEN):
        raise SipParseError(f"bad CSeq method: {v!r}")
    return n, method


def _split_head(data: bytes) -> tuple[str, bytes]:
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        head, body = data[:idx], data[idx + 4:]
    else:
        idx = data.find(b"\n\n")
        if idx < 0:
            raise SipParseError("no empty line after the headers (truncated message?)")
        head, body = data[:idx], data[idx + 2:]
    text = head.decode("utf-8", "surrogateescape")
    return text, body


def parse_message(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # leading CRLFs before a message are allowed (RFC 3261 §7.5)
    text, rest = _split_head(data)
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    if len(lines) > MAX_HEADERS * 4:
        raise SipParseError(f"too many header lines ({len(lines)})")
    start = lines[0]
    items: list[tuple[str, str]] = []
    seen: dict[str, object] = {}
    clen: str | None = None
    defects: list[str] = []
    multi_via = False
    cache = _NAME_CACHE
    for line in lines[1:]:
        c = line[:1]
        if c == " " or c == "\t":
            if not items:
                raise SipParseError("continuation line before any header")
            name, val = items[-1]
            cont = line.strip(LWS)
            items[-1] = (name, f"{val} {cont}" if val else cont)
            low = name.lower()
            if low == "content-length":
                clen = items[-1][1]
            elif seen.get(low) is val:
                seen[low] = items[-1][1]
            continue
        raw, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without ':': {line[:60]!r}")
        known = cache.get(raw)
        if known is None:
            nm = raw.rstrip(LWS)
            if not is_token(nm):
                raise SipParseError(f"bad header name {nm[:40]!r}")
            cn = canonical(nm)
            known = (cn, cn.lower(), cn.lower() in _WANTED)
            if len(cache) < 1024:
                cache[raw] = known
        name, low, wanted = known
        value = value.strip(LWS)
        items.append((name, value))
        if wanted:
            if low == "content-length":
                if clen is not None and clen != value:
                    # RFC 4475 §3.3.9: parses; the application answers 400
                    defects.append(f"conflicting Content-Length values {clen!r} and {value!r}")
                    new, old = digits_value(value, 6), digits_value(clen, 6)
                    if new is None or old is None:
                        raise SipParseError(f"bad Content-Length {(clen if old is None else value)[:20]!r}")
                    if new < old:
                        clen = value
                else:
                    clen = value
            elif low not in seen:
                seen[low] = value
            elif low == "via":
                multi_via = True
    if len(text) > MAX_LINE and max(map(len, lines)) > MAX_LINE:
        raise SipParseError(f"header line longer than {MAX_LINE} bytes")
    if len(items) > MAX_HEADERS:
        raise SipParseError(f"more than {MAX_HEADERS} headers")
    headers = Headers._trusted(items)
    for req in _REQUIRED:
        if req not in seen:
            # RFC 4475 §3.3.1 (insuf): parses; the application answers 400
            defects.append(f"missing mandatory header {canonical(req)}")
    if defects:
        seen[" defects"] = defects

    if clen == "0":  # nearly every message we receive: no number to read
        body = b""
    elif clen is not None:
        n = digits_value(clen, 6)
        if n is None:
            raise SipParseError(f"bad Content-Length {clen[:20]!r}")
        if n > len(rest):
            raise SipParseError(f"Content-Length {n} exceeds the {len(rest)} bytes received")
        body = rest[:n]
    else:
        body = rest  # RFC 3261 §18.3: over UDP the body runs to the end of the datagram

    call_id = seen.get("call-id")
    if isinstance(call_id, str) and not call_id.isascii():  # callid = word ["@" word]
        raise SipParseError(f"Call-ID is not ASCII: {call_id[:40]!r}")
    cseq = _parse_cseq(str(seen["cseq"])) if "cseq" in seen else (0, "")
    if "cseq" in seen:
        seen[" cseq"] = cseq
    vias = headers.get_all("Via") if multi_via or "," in str(seen.get("via", "")) else None
    if "via" not in seen:
        pass
    elif vias is None:
        v0 = str(seen["via"])
        m = _VIA_OK.fullmatch(v0)
        if m is not None:  # the usual shape, checked in one C call; parsed only if asked for
            seen[" branch"] = m.group(1)
        else:
            seen[" via"] = parse_via(v0)
    elif not vias:
        raise SipParseError(f"Via without a value: {str(seen['via'])[:40]!r}")
    else:
        for i, v in enumerate(vias):
            parsed = parse_via(v)
            if i == 0:
                seen[" via"] = parsed

    msg: Message
    if start.startswith("SIP/"):
        version, _, rest_line = start.partition(" ")
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version[:20]!r}")
        code, _, reason = rest_line.partition(" ")
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status code {code[:20]!r}")
        msg = Response(int(code), reason, headers, body, _first=seen)
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            raise SipParseError(f"request line must be 'METHOD SP Request-URI SP SIP/2.0': {start[:80]!r}")
        method, uri, version = parts
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version[:20]!r}")
        if not is_token(method):
            raise SipParseError(f"bad method {method[:40]!r}")
        if not uri or "<" in uri or ">" in uri or not uri.isascii():
            raise SipParseError(f"bad Request-URI {uri[:80]!r}")
        scheme = uri.split(":", 1)[0].lower()
        if scheme in ("sip", "sips", "tel"):
            ruri = parse_uri(uri)
            if isinstance(ruri, SipUri) and ruri.headers:
                raise SipParseError("headers are not allowed in a Request-URI (RFC 3261 §19.1.5)")
        elif ":" not in uri:
            raise SipParseError(f"Request-URI is not an absolute URI: {uri[:80]!r}")
        if "cseq" in seen and cseq[1] != method:
            raise SipParseError(f"CSeq method {cseq[1]} does not match request method {method}")
        mf = seen.get("max-forwards")
        if isinstance(mf, str) and ((hops := digits_value(mf, 10)) is None or hops > 255):
            raise SipParseError(f"bad Max-Forwards {mf[:20]!r}")
        # From/To syntax is checked on requests (RFC 4475 §3.1.2); on responses the engine
        # matches on Via branch, CSeq and Call-ID only, so their display names are not parsed.
        for h in ("from", "to"):
            if h in seen:
                parse_name_addr(str(seen[h]))
        msg = Request(method, uri, headers, body, _first=seen)
    return msg


def grant_keep(resp: Response, seconds: int) -> bool:
    """RFC 6223 §4.4.1: a response to a request whose top Via carries a bare `keep` says, as
    `keep=<seconds>`, that we answer keep-alives on this flow and how often we expect them.
    Only for transports whose keep-alive we answer (the CRLF ping of RFC 5626 §4.4.1 on
    TCP/TLS): the caller decides. True if the Via asked and got its value."""
    vias = resp.headers.get_all("Via")
    if not vias:
        return False
    try:
        via = parse_via(vias[0])
    except SipParseError:
        return False
    if "keep" not in via.params or via.params["keep"] is not None:
        return False
    via.params["keep"] = str(seconds)
    resp.headers.replace_first("Via", str(via))
    return True


def make_response(
    req: Request,
    status: int,
    reason: str,
    *,
    received: tuple[str, int] | None = None,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Response:
    """RFC 3261 §8.2.6: copy Via (top one with received/rport, §18.2.1 and RFC 3581 §4),
    From, To (adding our tag), Call-ID and CSeq; then `extra` headers."""
    items: list[tuple[str, str]] = []
    vias = req.headers.get_all("Via")
    for i, v in enumerate(vias):
        if i == 0 and received is not None:
            via = parse_via(v)
            if via.host != received[0] or via.wants_rport:
                via.params["received"] = received[0]
            if via.wants_rport and via.params.get("rport") is None:
                via.params["rport"] = str(received[1])
            v = str(via)
        items.append(("Via", v))
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = req.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag and status > 100:
            # no "tag" anywhere: no tag parameter, no need to parse the name-addr
            if "tag" not in value.lower() or "tag" not in parse_name_addr(value)[2]:
                value = f"{value};tag={to_tag}"
        items.append((name, value))
    items.extend(extra)
    return Response(status, reason, Headers(items))


__all__ += ["split_commas"]
