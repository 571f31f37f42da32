"""SIP/SIPS/TEL URIs and name-addr values (RFC 3261 §19.1, §20.10, §25.1; RFC 3966).

A URI is ASCII (anything else is %-escaped); in a name-addr only the quoted display name and
quoted parameter values may hold UTF-8 (abnf.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .abnf import LWS, digits_value, is_quoted
from .errors import SipParseError

_ESCAPE_OK = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?|[A-Za-z0-9])$")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")


def format_host(host: str) -> str:
    """Brackets for IPv6 literals (RFC 3261 §25.1 IPv6reference)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _params(text: str, what: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    if not text:
        return out
    for part in text.split(";"):
        part = part.strip(LWS)
        if not part:
            raise SipParseError(f"empty {what} parameter")
        name, eq, value = part.partition("=")
        name = name.strip(LWS)
        if not name:
            raise SipParseError(f"{what} parameter without a name: {part!r}")
        value = value.strip(LWS)
        if not name.isascii() or not (value.isascii() or is_quoted(value)):
            raise SipParseError(f"{what} parameter is not ASCII and not quoted: {part[:40]!r}")
        out[name.lower()] = value if eq else None
    return out


@dataclass(slots=True)
class SipUri:
    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"{self.scheme}:"
        if self.user is not None:
            s += self.user
            if self.password is not None:
                s += ":" + self.password
            s += "@"
        s += format_host(self.host)
        if self.port is not None:
            s += f":{self.port}"
        for k, v in self.params.items():
            s += f";{k}" if v is None else f";{k}={v}"
        if self.headers:
            s += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return s


@dataclass(slots=True)
class TelUri:
    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"tel:{self.number}"
        for k, v in self.params.items():
            s += f";{k}" if v is None else f";{k}={v}"
        return s


def _check_ascii(uri: str) -> None:
    if not uri.isascii():
        raise SipParseError(f"URI is not ASCII (RFC 3261 §25.1: escape it): {uri[:80]!r}")


def _check_escapes(text: str, what: str) -> None:
    if "%" in text and _ESCAPE_OK.search(text):
        raise SipParseError(f"bad %-escape in {what}: {text!r}")


def parse_hostport(text: str) -> tuple[str, int | None]:
    text = text.strip(LWS)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference: {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if not host or any(c not in "0123456789abcdefABCDEF:." for c in host):
            raise SipParseError(f"bad IPv6 reference: {text!r}")
    else:
        host, sep, port_s = text.partition(":")
        rest = ":" + port_s if sep else ""
        if not host or not _HOST_RE.fullmatch(host):
            raise SipParseError(f"bad host: {host!r}")
    port: int | None = None
    if rest:
        port = digits_value(rest[1:], 5) if rest.startswith(":") else None
        if port is None:
            raise SipParseError(f"bad port in {text[:80]!r}")
        if not 0 < port < 65536:
            raise SipParseError(f"port out of range in {text!r}")
    return host, port


def parse_uri(text: str) -> SipUri | TelUri:
    text = text.strip(LWS)
    _check_ascii(text)
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"not a URI: {text!r}")
    scheme = scheme.lower()
    if any(c in rest for c in " \t\r\n<>"):
        raise SipParseError(f"URI contains whitespace or angle brackets: {text!r}")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError("tel: URI without a number")
        return TelUri(number, _params(params, "tel"))
    if scheme not in ("sip", "sips"):
        raise SipParseError(f"unsupported URI scheme {scheme!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        if "@" in rest:
            raise SipParseError(f"more than one '@' in {text!r}")
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
        if not user:
            raise SipParseError(f"empty user part in {text!r}")
        _check_escapes(userinfo, "userinfo")
    rest, q, hdrs = rest.partition("?")
    hostport, _, params = rest.partition(";")
    host, port = parse_hostport(hostport)
    headers: dict[str, str] = {}
    if q:
        for h in hdrs.split("&"):
            k, eq, v = h.partition("=")
            if not k or not eq:
                raise SipParseError(f"bad URI header {h!r}")
            _check_escapes(h, "URI header")
            headers[k] = v
    return SipUri(scheme, user, password, host, port, _params(params, "URI"), headers)


def _unquote(display: str) -> str:
    out = []
    i = 1
    while i < len(display) - 1:
        ch = display[i]
        if ch == "\\" and i + 1 < len(display) - 1:
            i += 1
            ch = display[i]
        out.append(ch)
        i += 1
    return "".join(out)


def _quoted_end(value: str, start: int) -> int:
    """Index of the closing quote of the quoted string opening at `start`."""
    i = start + 1
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise SipParseError(f"unbalanced quotes in {value!r}")


def parse_name_addr(value: str) -> tuple[str | None, str, dict[str, str | None]]:
    """(display name or None, URI text, header parameters) of a From/To/Contact value.

    Lenient where RFC 4475 §3.1.2 allows it (unquoted display names with commas, spaces
    inside <...>); strict on unbalanced quotes and angle brackets.
    """
    value = value.strip(LWS)
    if not value:
        raise SipParseError("empty name-addr")
    display: str | None = None
    if value.startswith('"'):
        end = _quoted_end(value, 0)
        display = _unquote(value[: end + 1])
        rest = value[end + 1:].lstrip(LWS)
        if not rest.startswith("<"):
            raise SipParseError(f"quoted display name not followed by <URI>: {value!r}")
    else:
        lt = value.find("<")
        if lt >= 0:
            d = value[:lt].strip(LWS)
            if not d.isascii():  # display-name = *(token LWS) / quoted-string
                raise SipParseError(f"unquoted display name is not ASCII: {d[:40]!r}")
            display = d or None
            rest = value[lt:]
        else:
            rest = value
    if '"' in rest.split(">", 1)[0] and rest.startswith("<"):
        raise SipParseError(f"quote inside <URI>: {value!r}")
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"unterminated <URI> in {value!r}")
        uri = rest[1:gt].strip(LWS)
        params = rest[gt + 1:].strip(LWS)
        if params and not params.startswith(";"):
            raise SipParseError(f"junk after <URI>: {params!r}")
        params = params[1:]
    else:
        if '"' in rest or ">" in rest:
            raise SipParseError(f"unbalanced quotes or brackets in {value!r}")
        uri, _, params = rest.partition(";")
        uri = uri.strip(LWS)
    if not uri:
        raise SipParseError(f"no URI in {value!r}")
    _check_ascii(uri)
    return display, uri, _params(params, "header") if params.strip(LWS) else {}
