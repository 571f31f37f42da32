"""Every configuration option, declared once; the sip.conf and TOML readers both read through it.

An `Option` says what an option is called (and its older names), which section it belongs
to, which readers know it, how its value is read (its `Kind`), where the value goes, and
what docs/configuration.md shows for it: default, unit and a one-line meaning.
tests/config/test_options.py holds the documentation to this table, both ways.

A `Kind` reads a value twice over: `conf()` from sip.conf text with chan_sip's leniency
(junk is a warning and chan_sip's fallback, sscanf("%d") numbers), `toml()` from a TOML
value with its type (a wrong type or range is an error). Both report through the reader's
`error(where, text)` / `warning(where, text)`, so every message keeps its file and line.

Targets are `object.attribute`: `general` (GeneralConfig), `defaults` (PeerDefaults: the
`[general]` values peers inherit that GeneralConfig does not hold), `peer` (PeerConfig),
`service` (ServiceConfig), or `local` (a per-section scratch dict the reader finishes,
for values that depend on others: `host` and `port`, `udpbindaddr` and `bindport`).
`a,b` unpacks a tuple value into two attributes.

`index_markdown()` renders the option index of docs/configuration.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ..addr import ip_literal, parse_port, split_hostport
from ..logformat import FORMATS as LOG_FORMATS
from ..model import (
    DEFAULT_MAXMS,
    DEFAULT_SIP_PORT,
    DEFAULT_SIPS_PORT,
    DEFAULT_WS_BINDPORT,
    DEFAULT_WSS_BINDPORT,
    NAT_MODES,
    QUALIFY_HEADERS,
    QUALIFY_METHODS,
    QUALIFY_TARGETS,
    RETRANSMIT_POLICIES,
    TRANSPORTS,
    GeneralConfig,
)
from ..qualify.verdict import normalize_codes
from .values import parse_algorithms, parse_duration, parse_nat, scan_int

SIPCONF: Final = "sip.conf"
TOML: Final = "TOML"
BOTH: Final = (SIPCONF, TOML)

#: Sections, in the order of docs/configuration.md. `top` is the TOML file's top level.
SECTIONS: Final = ("general", "peer", "top", "api", "webhooks", "policies", "store", "service", "ami", "cluster")

DEFAULT_DNS_PORT = 53
DEFAULT_KEEPALIVE_INTERVAL = 60  # chan_sip sip.h: what keepalive=yes means, in seconds


class _Nothing:
    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Final = _Nothing()  # a kind refused the value (and said why): the option changes nothing


class Reporter(Protocol):
    """A reader: `where` is an Entry (sip.conf) or a key path (TOML)."""

    def error(self, where: Any, text: str) -> None: ...

    def warning(self, where: Any, text: str) -> None: ...


@dataclass(slots=True)
class Ctx:
    """What a kind may need besides the value; the reader fills it in."""

    general: GeneralConfig | None = None  # peers: the [general] that `qualify=yes` refers to
    peer: str = ""  # the peer's name, for messages
    fallback: Any = None  # sip.conf: what a junk value falls back to (chan_sip's default or the inherited value)
    tcp: bool = False  # sip.conf transport=: tcpenable
    tls: bool = False  # sip.conf transport=: tlsenable
    base: str = ""  # TOML: the directory relative paths are relative to


# ---------------------------------------------------------------------------- helpers


def scan(r: Reporter, where: Any, text: str) -> int | None:
    """sscanf("%d") like chan_sip, warning about any text after the number."""
    scanned = scan_int(text)
    if scanned is None:
        return None
    n, rest = scanned
    if rest:
        r.warning(where, f"text after the number ignored: '{text}' read as {n}")
    return n


def ast_true(text: str) -> bool:
    """Asterisk's `ast_true()`."""
    return text.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def want_int(r: Reporter, where: Any, key: str, v: Any, lo: int | None = None, hi: int | None = None,
             unit: str = "") -> Any:
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" {lo}..{hi}" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
        r.error(where, f"{key} must be an integer{rng}{unit}, not {v!r}")
        return NOTHING
    return v


def want_str(r: Reporter, where: Any, key: str, v: Any) -> Any:
    if not isinstance(v, str):
        r.error(where, f"{key} must be a string, not {v!r}")
        return NOTHING
    return v


def want_bool(r: Reporter, where: Any, key: str, v: Any) -> Any:
    if not isinstance(v, bool):
        r.error(where, f"{key} must be true or false, not {v!r}")
        return NOTHING
    return v


def parsed(r: Reporter, where: Any, parse: Callable[[str], Any], text: str, what: str) -> Any:
    """`parse(text)`, or an error `what: why` and NOTHING when it raises ValueError."""
    try:
        return parse(text)
    except ValueError as err:
        r.error(where, f"{what}: {err}")
        return NOTHING


# ---------------------------------------------------------------------------- kinds


class Kind:
    """How one kind of value is read. `toml_type` is what docs/configuration.md says TOML takes."""

    toml_type: str = ""

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is not read from sip.conf")

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is not read from TOML")


@dataclass(frozen=True, slots=True)
class Switch(Kind):
    """`yes`, `no` or a number: chan_sip's `qualify=` and `keepalive=`."""

    unit: str
    yes: int | None = None  # None: qualify's rule ([general] qualify when non-zero, else 2000 ms)

    @property
    def toml_type(self) -> str:  # type: ignore[override]
        return 'true, false, "yes", "no" or an integer ≥ 0'

    def yes_value(self, ctx: Ctx) -> int:
        if self.yes is not None:
            return self.yes
        return (ctx.general.qualify_ms if ctx.general is not None else 0) or DEFAULT_MAXMS

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        low = text.strip().lower()
        n = 0 if low == "no" else self.yes_value(ctx) if low == "yes" else scan(r, where, text)
        if n is None or n < 0:
            what = f"{key} of peer '{ctx.peer}'" if ctx.peer else key
            r.warning(where, f"{what} should be 'yes', 'no' or a number of {self.unit}, not '{text}': using no")
            return 0
        return n

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if isinstance(v, bool):
            return self.yes_value(ctx) if v else 0
        if isinstance(v, str) and v.lower() in ("yes", "no"):
            return self.yes_value(ctx) if v.lower() == "yes" else 0
        return want_int(r, where, key, v, 0, unit=f" ({self.unit}), true or false")


@dataclass(frozen=True, slots=True)
class Number(Kind):
    """An integer, stored times `scale`. sip.conf: sscanf("%d"); junk warns and falls back."""

    lo: int | None = None
    unit: str = ""  # for messages: "seconds"
    scale: int = 1  # qualifyfreq: seconds written, milliseconds stored
    below: str = "warn"  # sip.conf, a number below `lo`: "warn" (falls back), "error", "accept" (warned, kept)
    note: str = ""  # below="accept": what the warning says happens

    @property
    def toml_type(self) -> str:  # type: ignore[override]
        return f"integer ≥ {self.lo}" if self.lo is not None and self.below != "accept" else "integer"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        n = scan(r, where, text)
        if n is not None and (self.lo is None or n >= self.lo):
            return n * self.scale
        if n is not None and self.below == "error":
            r.error(where, f"{key} cannot be negative ({n})" if self.lo == 0 else f"{key} must be at least {self.lo} "
                                                                                   f"({n})")
            return NOTHING
        if n is not None and self.below == "accept":
            r.warning(where, f"{key}={n}: {self.note}")
            return n * self.scale
        what = ("a positive number" if self.lo is not None and self.lo >= 1 else "a number") + (
            f" of {self.unit}" if self.unit else "")
        fallback = ctx.fallback // self.scale if isinstance(ctx.fallback, int) else ctx.fallback
        r.warning(where, f"{key} should be {what}, not '{text}': using {fallback}")
        return ctx.fallback

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        n = want_int(r, where, key, v, self.lo if self.below != "accept" else None,
                     unit=f" ({self.unit})" if self.unit else "")
        return n if n is NOTHING else n * self.scale


@dataclass(frozen=True, slots=True)
class Share(Kind):
    """A fraction `lo`..`hi` (`jitter = 0.1`); out of range or junk is an error."""

    hi: float = 1.0
    toml_type: str = "number 0..0.5"

    def _check(self, r: Reporter, where: Any, key: str, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= self.hi:
            r.error(where, f"{key} must be a number from 0 to {self.hi:g}, not {v!r}")
            return NOTHING
        return float(v)

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        try:
            v: Any = float(text.strip())
        except ValueError:
            v = text.strip()
        return self._check(r, where, key, v)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return self._check(r, where, key, v)


@dataclass(frozen=True, slots=True)
class Port(Kind):
    zero: bool = False  # 0 allowed (any free port)

    @property
    def toml_type(self) -> str:  # type: ignore[override]
        return f"integer {0 if self.zero else 1}..65535"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        try:
            return parse_port(text, allow_zero=self.zero)
        except ValueError as err:
            r.error(where, str(err))
            return NOTHING

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return want_int(r, where, key, v, 0 if self.zero else 1, 65535)


@dataclass(frozen=True, slots=True)
class Text(Kind):
    empty: str = "keep"  # an empty value: "keep" (""), "unset" (None) or "ignore" (changes nothing)
    min_len: int = 0

    @property
    def toml_type(self) -> str:  # type: ignore[override]
        return f"string of ≥ {self.min_len} characters" if self.min_len else "string"

    def _value(self, s: str) -> Any:
        if s or self.empty == "keep":
            return s
        return None if self.empty == "unset" else NOTHING

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self._value(text)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if self.min_len and (not isinstance(v, str) or len(v) < self.min_len):
            r.error(where, f"{key} must be a string of at least {self.min_len} characters")
            return NOTHING
        s = want_str(r, where, key, v)
        return s if s is NOTHING else self._value(s)


@dataclass(frozen=True, slots=True)
class Bool(Kind):
    toml_type = "true or false"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return ast_true(text)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return want_bool(r, where, key, v)


@dataclass(frozen=True, slots=True)
class Choice(Kind):
    """One of a few words (TOML)."""

    values: tuple[str, ...]

    @property
    def toml_type(self) -> str:  # type: ignore[override]
        *head, tail = (f'"{v}"' for v in self.values)
        return f"{', '.join(head)} or {tail}"

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if v not in self.values:
            r.error(where, f"{key} must be one of {', '.join(self.values)}, not {v!r}")
            return NOTHING
        return v

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self.toml(r, where, key, text.strip().lower(), ctx)


@dataclass(frozen=True, slots=True)
class Transport(Choice):
    """sip.conf: the first usable word of a list, matched on three letters like chan_sip; TOML: one word."""

    values: tuple[str, ...] = TRANSPORTS

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        for word in (w.strip().lower() for w in text.split(",")):
            if word.startswith("udp"):
                return "udp"
            if word.startswith(("tcp", "tls")):
                proto = word[:3]
                if (proto == "tcp" and ctx.tcp) or (proto == "tls" and ctx.tls):
                    return proto
                r.warning(where, f"'{proto}' is not a valid transport when {proto}enable=no (as chan_sip): skipped")
            elif word.startswith("ws"):  # SIP over WebSocket: a client needs no listener (net/ws.py)
                return "wss" if word.startswith("wss") else "ws"
            elif word:
                r.warning(where, f"'{word}' is not a valid transport type: skipped")
        return ctx.fallback


@dataclass(frozen=True, slots=True)
class TlsMethod(Choice):
    """`tlsclientmethod`: chan_sip's obsolete words (tlsv1, sslv3, sslv2) are warned and negotiate."""

    values: tuple[str, ...] = ("sslv23", "tlsv1_2", "tlsv1_3")

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        word = text.strip().lower()
        if word in self.values:
            return word
        if word in ("tlsv1", "sslv3", "sslv2"):
            r.warning(where, f"{key}={word}: that protocol is obsolete and refused by OpenSSL: using sslv23 "
                             "(negotiate TLS 1.2 or 1.3)")
        else:
            r.warning(where, f"{key} should be one of {', '.join(self.values)}, not '{text}': using sslv23")
        return "sslv23"


@dataclass(frozen=True, slots=True)
class HostPort(Kind):
    """An IP literal, perhaps with a port (`tlsbindaddr`) -> (ip, port), `port` when none."""

    port: int
    toml_type = '`"ip:port"`, `"[v6]:port"` or `"ip"`'

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self.toml(r, where, key, text.strip(), ctx)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        hp = _address(r, where, key, v, allow_zero_port=True, ip_only=True)
        return hp if hp is NOTHING else (hp[0], self.port if hp[1] is None else hp[1])


@dataclass(frozen=True, slots=True)
class Nat(Kind):
    """chan_sip `nat=` words (values.parse_nat). sip.conf warns about the words it maps; TOML refuses them."""

    toml_type = "string or list of strings"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        if text.strip().lower() in ("no", "false", "off", "0", "n", "f"):
            return ("no",)
        modes, problems = parse_nat(text.split(","))
        for p in problems:
            r.warning(where, p)
        return modes

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        words = v.split(",") if isinstance(v, str) else v
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            r.error(where, f"{key} must be a string or a list of strings")
            return NOTHING
        modes, problems = parse_nat(words)
        for p in problems:
            r.error(where, p)
        return NOTHING if problems else modes


@dataclass(frozen=True, slots=True)
class Algorithms(Kind):
    toml_type = "list of strings, or a string"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        algs, bad = parse_algorithms(text.split(","))
        if bad:
            r.warning(where, f"unknown digest algorithm(s) {', '.join(bad)} ignored (md5, sha-256)")
        if algs:
            return algs
        r.warning(where, f"no usable digest algorithm in '{text}': using {', '.join(ctx.fallback)}")
        return NOTHING

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        words = v if isinstance(v, list) else str(v).split(",")
        algs, bad = parse_algorithms([str(x) for x in words])
        if bad or not algs:
            r.error(where, f"{key}: {', '.join(bad) or 'nothing'} is not md5 or sha-256")
            return NOTHING
        return algs


class TextKind(Kind):
    """A kind whose TOML value is the same text sip.conf has: a string, read by `conf()`."""

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        s = want_str(r, where, key, v)
        return s if s is NOTHING else self.conf(r, where, key, s, ctx)


@dataclass(frozen=True, slots=True)
class ExternAddr(TextKind):
    """An address we advertise: host or IP; a port in it is not used (warned). Empty: unset."""

    toml_type = "string"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        if not text.strip():
            return None
        try:
            host, port = split_hostport(text)
        except ValueError as err:
            r.error(where, f"bad {key}: {err}")
            return NOTHING
        if port is not None:
            r.warning(where, f"the port in {key} is not used: sipqualify advertises its own bind port")
        return host


@dataclass(frozen=True, slots=True)
class ClusterUrl(TextKind):
    """The coordinator of `[cluster]`: an etcd v3 (gRPC gateway) or Redis URL, as tooz names them."""

    toml_type = "string"
    SCHEMES = ("etcd3+http", "etcd3+https", "redis", "rediss")

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in self.SCHEMES or not rest.split("/")[0].split("?")[0]:
            r.error(where, f"bad {key} '{text}': want one of "
                           f"{', '.join(f'{s}://HOST:PORT' for s in self.SCHEMES)}")
            return NOTHING
        return text


def _address(r: Reporter, where: Any, key: str, v: Any, **flags: bool) -> Any:
    """TOML: a string for split_hostport, or an error."""
    if not isinstance(v, str):
        r.error(where, f"{key} must be a string like \"127.0.0.1:5060\" or \"[::1]:5060\"")
        return NOTHING
    try:
        return split_hostport(v, **flags)
    except ValueError as err:
        r.error(where, f"bad address {v!r}: {err}")
        return NOTHING


@dataclass(frozen=True, slots=True)
class BindAddr(Kind):
    """sip.conf `udpbindaddr`: an IP literal, perhaps with a port (0 allowed) -> (ip, port or None)."""

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        try:
            return split_hostport(text, allow_zero_port=True, ip_only=True)
        except ValueError as err:
            r.error(where, f"bad bind address: {err}")
            return NOTHING


@dataclass(frozen=True, slots=True)
class DnsServer(TextKind):
    """`dns_server`: an IP literal, perhaps with a port -> (ip, port), 53 when no port. Empty: unset."""

    toml_type = 'string "ip", "ip:port" or "[v6]:port"'

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        if not text.strip():
            return None
        try:
            ip, port = split_hostport(text, ip_only=True)
        except ValueError as err:
            r.error(where, f"bad {key}: {err}")
            return NOTHING
        return ip, DEFAULT_DNS_PORT if port is None else port


@dataclass(frozen=True, slots=True)
class BindList(Kind):
    """TOML `bind`: one address or a list -> (ip, port, [(ip, port), ...]); 5060 when no port."""

    toml_type = "string or list of strings"

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        binds = v if isinstance(v, list) else [v]
        parsed: list[tuple[str, int]] = []
        for b in binds:
            hp = _address(r, where, key, b, allow_zero_port=True, ip_only=True)
            if hp is not NOTHING:
                parsed.append((hp[0], DEFAULT_SIP_PORT if hp[1] is None else hp[1]))
        if not parsed or len(parsed) != len(binds):
            return NOTHING
        return parsed[0][0], parsed[0][1], parsed[1:]


@dataclass(frozen=True, slots=True)
class Host(Kind):
    """A peer's `host`: `dynamic` -> (None, None), else (host, port or None)."""

    toml_type = 'string ("dynamic", a name or an address, perhaps with a port)'

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        if text.strip().lower() == "dynamic":
            return None, None
        return parsed(r, where, split_hostport, text, f"bad {key}")

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if isinstance(v, str) and v.strip().lower() == "dynamic":
            return None, None
        return _address(r, where, key, v)


@dataclass(frozen=True, slots=True)
class Listen(Kind):
    """TOML: a listening address with its port -> (host, port)."""

    toml_type = 'string "host:port"'

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return _address(r, where, key, v, allow_zero_port=True, need_port=True)


@dataclass(frozen=True, slots=True)
class Duration(Kind):
    lo: int = 0

    toml_type = 'integer (seconds) or a string like "1h30m"'

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        try:
            d = parse_duration(v)
        except ValueError as err:
            r.error(where, f"{key}: {err}")
            return NOTHING
        if d < self.lo:
            r.error(where, f"{key} must be at least {self.lo} second{'' if self.lo == 1 else 's'}")
            return NOTHING
        return d


@dataclass(frozen=True, slots=True)
class FilePath(Kind):
    """A path; in TOML relative to the TOML file. Empty: unset."""

    must_exist: bool = False

    toml_type = "string (a path)"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self.toml(r, where, key, text.strip(), ctx) if text.strip() else None

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        s = want_str(r, where, key, v)
        if s is NOTHING or not s:
            return NOTHING
        path = s if os.path.isabs(s) or not ctx.base else os.path.join(ctx.base, s)
        if self.must_exist and not os.path.isfile(path):
            r.error(where, f"{key} {path}: no such file")
            return NOTHING
        return path


@dataclass(frozen=True, slots=True)
class DatabaseUrl(Kind):
    """A PostgreSQL URL (`postgresql://user:password@host:port/database?param=value`), checked by
    libpq's parser; the value is never echoed in an error (it may hold a password)."""

    toml_type = 'string (a "postgresql://" URL)'

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        s = want_str(r, where, key, v)
        if s is NOTHING:
            return NOTHING
        if not s.startswith(("postgresql://", "postgres://")):
            r.error(where, f"{key} must be a postgresql:// URL (postgresql://user@host:port/database)")
            return NOTHING
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict

        try:
            params = conninfo_to_dict(s)
        except ProgrammingError as err:
            why = str(err).splitlines()[0].replace(s, "the URL")  # libpq may quote it, password and all
            r.error(where, f"{key} is not a valid PostgreSQL URL: {why}")
            return NOTHING
        ports = str(params.get("port") or "5432").split(",")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
            r.error(where, f"{key}: the port must be a number 1..65535")
            return NOTHING
        return s


@dataclass(frozen=True, slots=True)
class AmiUsers(Kind):
    """`[ami.users.NAME]` tables; each needs a secret (the rest is read by api/ami.py)."""

    toml_type = "[ami.users.NAME] tables"

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if not isinstance(v, dict) or not all(isinstance(u, dict) for u in v.values()):
            r.error(where, "[ami.users.NAME] tables expected")
            return NOTHING
        users: dict[str, dict[str, object]] = {}
        for name, opts in v.items():
            if not isinstance(opts.get("secret"), str) or not opts.get("secret"):
                r.error((*where, name, "secret"), f"AMI user '{name}' needs a secret")
            else:
                users[name] = opts
        return users


@dataclass(frozen=True, slots=True)
class Codes(Kind):
    """A list of SIP status codes (qualify/verdict.py CodeSet): `2xx`, `200-299,404`; stored normalized.
    Not chan_sip's: a bad list is an error in both files."""

    toml_type = "string"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return parsed(r, where, normalize_codes, text, key)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        s = want_str(r, where, key, v)
        return s if s is NOTHING else self.conf(r, where, key, s, ctx)


# RFC 3261 §25.1 `user`: unreserved / escaped / user-unreserved
_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
# RFC 3261 §25.1 message-header: a token name, HCOLON, a value without CR, LF or other controls but HTAB
_HEADER_RE: Final = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)")
#: headers sipqualify writes itself (and matches answers by): never an extra header line
OWN_HEADERS: Final = frozenset(("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "content-length", "l",
                                "max-forwards", "contact", "m", "event", "o"))


@dataclass(frozen=True, slots=True)
class UserPart(TextKind):
    """The user part of a SIP URI (RFC 3261 `user`, escapes written as `%HH`). Empty: unset.
    Not chan_sip's: anything else is an error in both files."""

    toml_type = "string"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        s = text.strip()
        if not s:
            return None
        if _USER_RE.fullmatch(s) is None:
            r.error(where, f"{key}: '{s}' is not the user part of a SIP URI (write other characters as %HH)")
            return NOTHING
        return s


def header_line(r: Reporter, where: Any, key: str, text: str) -> str | None:
    """One extra header line `Name: value` (a token name, no CR/LF), as sent; None (and an error) if not."""
    m = _HEADER_RE.fullmatch(text.strip())
    if m is None:
        r.error(where, f"{key}: {text.strip()!r} is not a header line 'Name: value' (a token name, no control "
                       "characters)")
        return None
    if m.group(1).lower() in OWN_HEADERS:
        r.error(where, f"{key}: sipqualify writes the {m.group(1)} header itself")
        return None
    return f"{m.group(1)}: {m.group(2).rstrip()}"


@dataclass(frozen=True, slots=True)
class HeaderLine(Kind):
    """sip.conf `qualify_header=Name: value`, repeated (Option.repeat): one line each -> a 1-tuple;
    empty: none (forgets the lines before it)."""

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        if not text.strip():
            return ()
        line = header_line(r, where, key, text)
        return NOTHING if line is None else (line,)


@dataclass(frozen=True, slots=True)
class HeaderLines(Kind):
    """TOML: a list of header lines `"Name: value"`."""

    toml_type = "list of strings"

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            r.error(where, f"{key} must be a list of strings like \"X-Probe: sipqualify\"")
            return NOTHING
        lines = [header_line(r, where, key, x) for x in v]
        return NOTHING if None in lines else tuple(line for line in lines if line is not None)


@dataclass(frozen=True, slots=True)
class MaxForwards(TextKind):
    """Max-Forwards 0..255 (RFC 3261 §8.1.1.6: 70; 0 makes the first proxy answer for the peer)."""

    toml_type = "integer 0..255"

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self.toml(r, where, key, int(text.strip()) if text.strip().isdigit() else text.strip(), ctx)

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return want_int(r, where, key, v, 0, 255)


@dataclass(frozen=True, slots=True)
class Method(Choice):
    """The qualify request's method, any case."""

    values: tuple[str, ...] = QUALIFY_METHODS

    def toml(self, r: Reporter, where: Any, key: str, v: Any, ctx: Ctx) -> Any:
        return Choice.toml(self, r, where, key, v.strip().upper() if isinstance(v, str) else v, ctx)

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return self.toml(r, where, key, text, ctx)


def parse_source(text: str) -> tuple[str, int]:
    """`qualify_source`: a unicast IP literal of ours, perhaps with a port -> (ip, port); port 0
    (none written) is a free port the kernel picks, once per address. Raises ValueError."""
    host, port = split_hostport(text, allow_zero_port=True, ip_only=True)
    ip = ip_literal(host)
    assert ip is not None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"'{host}' is not one address of this host: name the one OPTIONS leave from")
    return ip.compressed, port or 0


@dataclass(frozen=True, slots=True)
class SourceAddr(TextKind):
    """A local source address of the qualify request (multi-homed hosts). Empty: unset (the SIP
    socket). Not chan_sip's: a bad value is an error in both files."""

    toml_type = 'string "ip", "ip:port" or "[v6]:port"'

    def conf(self, r: Reporter, where: Any, key: str, text: str, ctx: Ctx) -> Any:
        return parsed(r, where, parse_source, text, f"bad {key}") if text.strip() else None


@dataclass(frozen=True, slots=True)
class Whole(Kind):
    """Read by hand, with the other keys of its table (sip.conf `type`, `[[webhooks]]` keys)."""

    toml_type: str = ""


# ---------------------------------------------------------------------------- the table


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    section: str  # one of SECTIONS
    kind: Kind
    target: str  # "general.qualify_ms" ...: where the value goes (module docstring)
    default: str  # markdown, as docs/configuration.md shows it
    unit: str  # markdown
    meaning: str  # one line, for the option index
    readers: tuple[str, ...] = BOTH
    aliases: tuple[str, ...] = ()  # older names, same option (sip.conf compatibility; TOML takes them too)
    last: bool = False  # sip.conf [general]: applied after the other options (it depends on them)
    repeat: bool = False  # sip.conf: each line adds to a tuple (the section's first one replaces the inherited)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def heading(self) -> str:
        """Its heading in docs/configuration.md."""
        return self.name + (f" ({', '.join(self.aliases)})" if self.aliases else "")

    @property
    def read_from(self) -> str:
        """Which files it is read from (and the TOML type), as docs/configuration.md says."""
        parts = [SIPCONF] if SIPCONF in self.readers else []
        if TOML in self.readers:
            parts.append(f"TOML: {self.kind.toml_type}")
        return "; ".join(parts)


def _general(name: str, kind: Kind, target: str, default: str, unit: str, meaning: str, **kw: Any) -> Option:
    return Option(name, "general", kind, target, default, unit, meaning, **kw)


def _peer(name: str, kind: Kind, target: str, default: str, unit: str, meaning: str, **kw: Any) -> Option:
    return Option(name, "peer", kind, target, default, unit, meaning, **kw)


def _toml(section: str, name: str, kind: Kind, target: str, default: str, unit: str, meaning: str) -> Option:
    return Option(name, section, kind, target, default, unit, meaning, readers=(TOML,))


_SECONDS_POS = Number(lo=1, unit="seconds")
_COUNT = Number(lo=1, unit="results", below="error")
_RETRY = Number(lo=0, unit="seconds", below="error")
_POLICY_KEYS: Final = ("reply_up", "reply_degraded", "down_after", "up_after", "retry_interval", "latency_delta",
                       "flap_penalty", "flap_suppress", "flap_reuse", "flap_half_life")
_PENALTY = Number(lo=0, unit="penalty points", below="error")


def _verdict_options(section: str, target: str, inherit: bool) -> tuple[Option, ...]:
    """The verdict policy keys (qualify/verdict.py), alike in [general] (peers inherit them) and peers."""
    def dflt(name: str, value: str) -> str:
        return f"`[general] {name}`" if inherit else value

    return (
        Option("reply_up", section, Codes(), f"{target}.reply_up", dflt("reply_up", "all final responses"),
               "status codes: `2xx`, `200-299`, `404`, comma lists", "final responses that mean up"),
        Option("reply_degraded", section, Codes(), f"{target}.reply_degraded", dflt("reply_degraded", "none"),
               "status codes, as `reply_up`", "final responses that mean degraded (alive but refusing work)"),
        Option("down_after", section, _COUNT, f"{target}.down_after", dflt("down_after", "`1`"), "results",
               "consecutive down results before the verdict is down"),
        Option("up_after", section, _COUNT, f"{target}.up_after", dflt("up_after", "`1`"), "results",
               "consecutive alive results before the verdict is up again"),
        Option("retry_interval", section, _RETRY, f"{target}.retry_interval_s", dflt("retry_interval", "`0`"),
               "seconds (0: off)", "re-poll this soon after a down result that is still being counted"),
        Option("latency_delta", section, Number(lo=0, unit="milliseconds", below="error"),
               f"{target}.latency_delta_ms", dflt("latency_delta", "`0`"), "milliseconds (0: off)",
               "a `latency` event when the latency estimate (EWMA) moves by more than this"),
        Option("flap_penalty", section, _PENALTY, f"{target}.flap_penalty", dflt("flap_penalty", "`1000`"),
               "penalty points", "flap damping: penalty added per change of the verdict"),
        Option("flap_suppress", section, _PENALTY, f"{target}.flap_suppress", dflt("flap_suppress", "`0`"),
               "penalty points (0: off)", "flap damping: flapping (notifications held back) from this penalty on"),
        Option("flap_reuse", section, _PENALTY, f"{target}.flap_reuse", dflt("flap_reuse", "`750`"),
               "penalty points", "flap damping: settled again below this penalty"),
        Option("flap_half_life", section, Number(lo=1, unit="seconds", below="error"),
               f"{target}.flap_half_life_s", dflt("flap_half_life", "`900`"), "seconds",
               "flap damping: the penalty halves in this time"),
    )


_PROBE_KEYS: Final = ("qualify_to_user", "qualify_ruri_user", "qualify_max_forwards", "qualify_headers_extra",
                      "qualify_method", "qualify_source")


def _probe_options(section: str, target: str, inherit: bool) -> tuple[Option, ...]:
    """The probe shape keys (sip/options.py build_options), alike in [general] (peers inherit them) and peers.
    Not chan_sip's: its request is the default; a bad value is an error in both files."""
    def dflt(name: str, value: str) -> str:
        return f"`[general] {name}`" if inherit else value

    return (
        Option("qualify_to_user", section, UserPart(), f"{target}.qualify_to_user", dflt("qualify_to_user", "unset"),
               "user name", "user part of the qualify request's To"),
        Option("qualify_ruri_user", section, UserPart(), f"{target}.qualify_ruri_user",
               dflt("qualify_ruri_user", "unset"), "user name",
               "user part of the qualify request's Request-URI (and To) for a peer with a `host`"),
        Option("qualify_max_forwards", section, MaxForwards(), f"{target}.qualify_max_forwards",
               dflt("qualify_max_forwards", "`70`"), "hops 0..255", "Max-Forwards of the qualify request"),
        Option("qualify_header", section, HeaderLine(), f"{target}.qualify_headers_extra",
               dflt("qualify_header", "none"),
               "`Name: value`, one per line, repeated", "an extra header line of the qualify request",
               readers=(SIPCONF,), repeat=True),
        Option("qualify_headers_extra", section, HeaderLines(), f"{target}.qualify_headers_extra",
               dflt("qualify_headers_extra", "none"), 'list of `"Name: value"`',
               "extra header lines of the qualify request", readers=(TOML,)),
        Option("qualify_method", section, Method(), f"{target}.qualify_method", dflt("qualify_method", "`OPTIONS`"),
               "`OPTIONS`, `INFO` or `NOTIFY`", "method of the qualify request (`NOTIFY`: with `Event: keep-alive`)"),
        Option("qualify_source", section, SourceAddr(), f"{target}.qualify_source",
               dflt("qualify_source", "unset (the SIP socket)"),
               "IP address of this host, optionally with `:port` (none: a free port)",
               "local address (and port) the qualify request leaves from over UDP (multi-homed hosts)"),
    )

_YES_NO = "`yes` or `no`"
_TRANSPORT_WORDS = "comma list of `udp`, `tcp`, `tls`, `ws`, `wss`"

OPTIONS: Final[tuple[Option, ...]] = (
    # ------------------------------------------------------------------ [general]
    _general("udpbindaddr", BindAddr(), "local.bindaddr", "`0.0.0.0`", "IP address, optionally with `:port`",
             "address (and port) of the SIP socket", readers=(SIPCONF,), aliases=("bindaddr",)),
    _general("bindport", Port(zero=True), "general.bindport", "`5060`", "UDP port 0..65535 (0: any free port)",
             "port of the SIP socket when `udpbindaddr` names none", readers=(SIPCONF,)),
    _toml("general", "bind", BindList(), "general.udpbindaddr,bindport,extra_bindaddrs", '`"0.0.0.0:5060"`',
          '`"ip:port"`, `"[v6]:port"` or `"ip"` (port 5060), or a list of them',
          "the SIP sockets: the first is `udpbindaddr`/`bindport`, the others extra sockets"),
    _general("qualify", Switch("milliseconds"), "general.qualify_ms", "`no`", "`yes` (2000), `no` or milliseconds",
             "default `qualify` of peers, and what a peer's `qualify=yes` means"),
    _general("qualifyfreq", Number(lo=1, unit="seconds", scale=1000), "general.qualifyfreq_ms", "`60`", "seconds",
             "default poll interval of peers while they are OK"),
    _general("qualifygap", Number(lo=0, unit="milliseconds", below="error"), "general.qualifygap_ms", "`100`",
             "milliseconds, ≥ 0", "start-up and reload stagger: time between groups of first pokes"),
    _general("qualifypeers", Number(lo=0, below="accept", note="every peer is poked at once at start-up "
                                                             "(as chan_sip)"),
             "general.qualifypeers", "`1`", "peers", "start-up and reload stagger: peers per group"),
    _general("jitter", Share(hi=0.5), "general.jitter", "`0`", "fraction 0..0.5 (0: off)",
             "each re-poll delay stretched or shrunk by up to this share"),
    _general("max_rate", Number(lo=0, unit="pokes per second", below="error"), "general.max_rate", "`0`",
             "pokes per second (0: off)", "scheduled pokes per second, all peers: more wait for the next slot"),
    _general("max_rate_per_destination", Number(lo=0, unit="pokes per second", below="error"),
             "general.max_rate_per_destination", "`0`", "pokes per second (0: off)",
             "scheduled pokes per second to one destination IP address"),
    _general("keepalive", Switch("seconds", yes=DEFAULT_KEEPALIVE_INTERVAL), "defaults.keepalive_s", "`no`",
             "`yes` (60), `no` or seconds", "default `keepalive` of peers"),
    _general("useragent", Text(), "general.useragent", "`sipqualify <version>`", "text",
             "`User-Agent` of our OPTIONS and `Server` of our answers"),
    _general("qualify_headers", Choice(QUALIFY_HEADERS), "general.qualify_headers", "`own`",
             "`own` or `asterisk`", "`Allow`/`Supported` of our OPTIONS: what we serve, or chan_sip's lines"),
    _general("fromdomain", Text(empty="unset"), "general.fromdomain", "unset", "domain",
             "kept; not copied into peers, not used in qualify OPTIONS (as chan_sip)"),
    _general("externip", ExternAddr(), "general.externip", "unset", "IP address or host name",
             "address put in Via/From/Contact for peers that are not on a private network",
             aliases=("externaddr",)),
    _general("context", Text(), "general.context", "`default`", "context name", "default `context` of peers"),
    _general("nat", Nat(), "defaults.nat", "`auto_force_rport`", "comma list of `nat` words",
             "default `nat` of peers"),
    _general("transport", Transport(), "defaults.transport", "`udp`", _TRANSPORT_WORDS,
             "default transport of peers", last=True),
    _general("tcpenable", Bool(), "general.tcpenable", "`no`", _YES_NO,
             "also SIP over TCP; lets peers use `transport=tcp`"),
    _general("tlsenable", Bool(), "general.tlsenable", "`no`", _YES_NO,
             "SIP over TLS: a listener on `tlsbindaddr`; lets peers use `transport=tls`"),
    _general("tlsbindaddr", HostPort(DEFAULT_SIPS_PORT), "general.tlsbindaddr", "`0.0.0.0:5061`",
             "IP address, optionally with `:port` (5061)", "address of the TLS listener"),
    _general("tlscertfile", FilePath(), "general.tlscertfile", "unset", "path of a PEM file",
             "our certificate (chain): the listener's, and the client certificate towards peers"),
    _general("tlsprivatekey", FilePath(), "general.tlsprivatekey", "in `tlscertfile`", "path of a PEM file",
             "the private key of `tlscertfile`"),
    _general("tlscafile", FilePath(), "general.tlscafile", "unset (the system store)", "path of a PEM file",
             "CA certificates TLS peers' certificates are verified against"),
    _general("tlscapath", FilePath(), "general.tlscapath", "unset (the system store)",
             "path of a directory (OpenSSL hashed)", "a directory of CA certificates, like `tlscafile`"),
    _general("tlscipher", Text(empty="unset"), "general.tlscipher", "unset (OpenSSL's)", "OpenSSL cipher list",
             "ciphers offered and accepted (TLS 1.2)"),
    _general("tlsclientmethod", TlsMethod(), "general.tlsclientmethod", "`sslv23`",
             "`sslv23`, `tlsv1_2` or `tlsv1_3`", "TLS version: `sslv23` negotiates (1.2 or 1.3), the others pin"),
    _general("tlsdontverifyserver", Bool(), "general.tlsdontverifyserver", "`no`", _YES_NO,
             "`yes`: TLS peers' certificates are not verified (warned)"),
    _general("tls_expiry_warn_days", Number(lo=0, unit="days"), "general.tls_expiry_warn_days", "`14`", "days",
             "a TLS peer's certificate with fewer days left gets a warning event"),
    _general("wsenable", Bool(), "general.wsenable", "`no`", _YES_NO,
             "SIP over WebSocket (RFC 7118): a `ws://` listener on `wsbindaddr`, path `/ws`"),
    _general("wsbindaddr", HostPort(DEFAULT_WS_BINDPORT), "general.wsbindaddr", "`0.0.0.0:8088`",
             "IP address, optionally with `:port` (8088)", "address of the WebSocket listener"),
    _general("wssenable", Bool(), "general.wssenable", "`no`", _YES_NO,
             "SIP over secure WebSocket: a `wss://` listener on `wssbindaddr` with `tlscertfile`"),
    _general("wssbindaddr", HostPort(DEFAULT_WSS_BINDPORT), "general.wssbindaddr", "`0.0.0.0:8089`",
             "IP address, optionally with `:port` (8089)", "address of the secure WebSocket listener"),
    _general("realm", Text(empty="ignore"), "general.realm", "`sipqualify`", "text",
             "digest realm of the registrar"),
    _general("minexpiry", _SECONDS_POS, "general.minexpiry", "`60`", "seconds",
             "registrar: a shorter registration gets `423 Interval Too Brief`"),
    _general("maxexpiry", _SECONDS_POS, "general.maxexpiry", "`3600`", "seconds",
             "registrar: longer registrations are cut to this"),
    _general("defaultexpiry", _SECONDS_POS, "general.defaultexpiry", "`120`", "seconds",
             "registrar: the registration time when the REGISTER asks for none"),
    _general("supported_algorithms_uas", Algorithms(), "general.auth_algorithms", "`md5`",
             "comma list of `md5`, `sha-256`", "registrar: the digest algorithms it challenges with"),
    _general("authfail_limit", Number(lo=1, unit="failures"), "general.authfail_limit", "`10`", "failed REGISTERs",
             "registrar: failures from one address within `authfail_window` before a ban"),
    _general("authfail_window", _SECONDS_POS, "general.authfail_window", "`60`", "seconds",
             "registrar: the window `authfail_limit` counts in"),
    _general("authfail_ban", Number(lo=0, unit="seconds"), "general.authfail_ban", "`300`",
             "seconds (0: never ban)", "registrar: how long a banned address gets no answer"),
    _general("srvlookup", Bool(), "general.srvlookup", "`yes`", _YES_NO,
             "look up SRV records of a peer's host (its transport's) before A/AAAA"),
    _general("dns_server", DnsServer(), "general.dns_server", "unset (the system's resolv.conf)",
             "IP address, optionally with `:port` (53)", "the DNS server peer host names are resolved with"),
    *_verdict_options("general", "defaults", inherit=False),
    *_probe_options("general", "defaults", inherit=False),
    _general("qualify_targets", Choice(QUALIFY_TARGETS), "defaults.qualify_targets", "`first`",
             "`first` or `all`", "default `qualify_targets` of peers"),
    _general("rt_refresh", _SECONDS_POS, "general.rt_refresh_s", "`10`", "seconds",
             "realtime sippeers rows inserted, changed or deleted take effect within this long"),
    # ------------------------------------------------------------------ peers
    _peer("type", Whole(), "", "required", "`peer`, `friend` or `user`",
          "what the section is: `peer` and `friend` are monitored peers", readers=(SIPCONF,)),
    _peer("host", Host(), "local.host", "none", "host name or IP address, optionally with `:port`; or `dynamic`",
          "where the OPTIONS go; `dynamic`: wherever the peer registers from"),
    _peer("port", Port(), "local.port", "5060 (5061 for `tls`, 80 for `ws`, 443 for `wss`)", "UDP/TCP port 1..65535",
          "destination port; beats a port written in `host`"),
    _peer("transport", Transport(), "peer.transport", "`[general] transport`", _TRANSPORT_WORDS,
          "transport of the OPTIONS: the first usable word"),
    _peer("qualify", Switch("milliseconds"), "peer.qualify_ms", "`[general] qualify`",
          "`yes`, `no` or milliseconds",
          "slower answers are LAGGED, none within twice this is UNREACHABLE; `no`: not monitored"),
    _peer("qualifyfreq", Number(lo=1, unit="seconds", scale=1000), "peer.qualifyfreq_ms", "`[general] qualifyfreq`",
          "seconds", "poll interval while the peer is OK"),
    _peer("keepalive", Switch("seconds", yes=DEFAULT_KEEPALIVE_INTERVAL), "peer.keepalive_s",
          "`[general] keepalive`", "`yes` (60), `no` or seconds",
          "a bare CRLF to the peer's address every this many seconds"),
    _peer("defaultuser", Text(empty="unset"), "peer.defaultuser", "unset", "user name",
          "shown as `name/user`; not put in the OPTIONS", aliases=("username",)),
    _peer("fromuser", Text(empty="unset"), "peer.fromuser", "unset (From: `asterisk`)", "user name",
          "user part of From and Contact of the OPTIONS"),
    _peer("fromdomain", Text(empty="unset"), "peer.fromdomain", "unset", "domain",
          "kept for display; not used in qualify OPTIONS (as chan_sip)"),
    _peer("outboundproxy", Text(empty="unset"), "peer.outboundproxy", "unset", "`host[:port]` or `sip:host[:port]`",
          "send the OPTIONS to this proxy"),
    _peer("nat", Nat(), "peer.nat", "`[general] nat`",
          "comma list of " + ", ".join(f"`{m}`" for m in NAT_MODES),
          "where a dynamic peer's binding points; shown in `peers`"),
    _peer("description", Text(), "peer.description", "empty", "text", "shown by `peers` and the API"),
    _peer("secret", Text(empty="unset"), "peer.secret", "unset", "text", "registrar: the peer's password"),
    _peer("md5secret", Text(empty="unset"), "peer.md5secret", "unset", "hex MD5 of `user:realm:password`",
          "registrar: the peer's password, hashed"),
    _peer("qualify_auth", Bool(), "peer.qualify_auth", "`no`", _YES_NO,
          "answer a 401/407 to the OPTIONS with `secret`/`md5secret` (user: `fromuser`, else the peer's name)"),
    _peer("context", Text(), "peer.context", "`[general] context`", "context name", "shown only"),
    *_verdict_options("peer", "peer", inherit=True),
    *_probe_options("peer", "peer", inherit=True),
    _toml("peer", "policy", Text(empty="unset"), "local.policy", "none", "name of a `[[policies]]` table",
          "the verdict policy of this peer (its own keys beat it)"),
    _peer("qualify_targets", Choice(QUALIFY_TARGETS), "peer.qualify_targets", "`[general] qualify_targets`",
          "`first` or `all`", "`all`: qualify every DNS target of `host`; the peer is reachable if any answers"),
    _toml("peer", "retransmit", Choice(RETRANSMIT_POLICIES), "peer.retransmit", '`"asterisk"`',
          '`"asterisk"` or `"rfc3261"`', "retransmission schedule of the OPTIONS over UDP"),
    _toml("peer", "port_in_uri", Bool(), "peer.port_in_uri", "`false`", "`true` or `false`",
          "put the port in the OPTIONS Request-URI and To"),
    _toml("peer", "group", Text(), "peer.group", '`"default"`', "text",
          "group of the Prometheus RTT histogram the peer counts in"),
    _toml("peer", "rtt_histogram", Bool(), "peer.rtt_histogram", "`false`", "`true` or `false`",
          "also a Prometheus RTT histogram of this peer alone"),
    # ------------------------------------------------------------------ TOML only
    _toml("top", "sip_conf", FilePath(must_exist=True), "local.sip_conf", "none", "path (relative to the TOML file)",
          "read this sip.conf first; the TOML overrides and adds to it"),
    _toml("top", "pjsip_conf", FilePath(must_exist=True), "local.pjsip_conf", "none",
          "path (relative to the TOML file)", "also qualify the static contacts of this pjsip.conf"),
    _toml("api", "listen", Listen(), "service.api_host,api_port", '`"127.0.0.1:7060"`', '`"host:port"`',
          "address of the HTTP API"),
    _toml("api", "token", Text(min_len=16), "service.api_token", "generated into `STATE_DIR/api-token`",
          "string, ≥ 16 characters", "bearer token of the API"),
    _toml("api", "metrics_peer_limit", Number(lo=0, unit="peers"), "service.metrics_peer_limit", "`10000`", "peers",
          "per-peer Prometheus series for the first this-many peers"),
    _toml("api", "tls_cert", FilePath(must_exist=True), "service.api_tls_cert", "unset (plain HTTP)",
          "path of a PEM file", "serve the API over HTTPS with this certificate (chain)"),
    _toml("api", "tls_key", FilePath(must_exist=True), "service.api_tls_key", "in `tls_cert`",
          "path of a PEM file", "the private key of `tls_cert`"),
    _toml("api", "header_timeout", Duration(lo=1), "service.api_header_timeout_s", '`"10s"`',
          "seconds or a duration string, ≥ 1 s", "a connection without a complete request head this long is closed"),
    _toml("api", "max_event_subscribers", Number(lo=1, unit="connections"), "service.api_max_event_subscribers",
          "`100`", "connections", "concurrent `/events` streams"),
    _toml("webhooks", "id", Whole("string, unique"), "", "required", "text",
          "receiver id: its delivery cursor and the `Idempotency-Key` prefix"),
    _toml("webhooks", "url", Whole("string"), "", "required", "`http://` or `https://` URL", "where events are POSTed"),
    _toml("webhooks", "secret", Whole("string"), "", "none (unsigned)", "text",
          "HMAC-SHA256 key of `X-Sipqualify-Signature`"),
    _toml("webhooks", "peers", Whole("list of strings"), "", "all peers", "glob patterns of peer names",
          "only transitions of these peers"),
    _toml("webhooks", "states", Whole("list of strings"), "", "all states",
          "`OK`, `LAGGED`, `UNREACHABLE`, `UNKNOWN`", "only transitions into these states"),
    _toml("webhooks", "timeout", Whole("number > 0"), "", "`5`", "seconds", "time allowed for one attempt"),
    _toml("policies", "name", Whole("string, unique"), "", "required", "text",
          "the policy's name, shown with the verdict"),
    _toml("policies", "peers", Whole("list of strings"), "", "none", "peer names",
          "the peers the policy applies to"),
    _toml("policies", "groups", Whole("list of strings"), "", "none", "group names (`group` of peers)",
          "the groups the policy applies to"),
    _toml("store", "state_dir", FilePath(), "service.state_dir", "decided by the CLI", "path of a directory",
          "where the SQLite database and the API token live"),
    _toml("store", "url", DatabaseUrl(), "service.store_url", "unset (SQLite files in `state_dir`)",
          "`postgresql://user:password@host:port/database`",
          "keep peers' state, transitions, samples, bindings and silences in this PostgreSQL database, "
          "which several nodes may share (README: Storing state in PostgreSQL)"),
    _toml("store", "sample_retention", Duration(), "service.sample_retention_s", '`"7d"`',
          "seconds or a duration string", "how long RTT samples are kept"),
    _toml("store", "sample_every", Number(lo=1, unit="results"), "service.sample_every", "`1` (every sample)",
          "results", "store one RTT sample in this many per peer (states, transitions and the Prometheus "
          "histograms still see every result): at a million peers every sample is 16,700 rows a second"),
    _toml("store", "transition_retention", Duration(), "service.transition_retention_s", '`"90d"`',
          "seconds or a duration string", "how long state transitions are kept"),
    _toml("service", "node_id", Text(min_len=1), "service.node_id", "the host name", "text",
          "this node's name in the rows it stores (a PostgreSQL store shared by several nodes)"),
    _toml("service", "log_format", Choice(LOG_FORMATS), "service.log_format", '`"plain"`',
          '`"plain"`, `"asterisk"` or `"json"`', "shape of the log lines; `run --log-format` beats it"),
    _toml("service", "respond_options", Bool(), "service.respond_options", "`true`", "`true` or `false`",
          "answer OPTIONS sent to sipqualify with 200 (else 404)"),
    _toml("service", "options_unknown_user_404", Bool(), "service.options_unknown_user_404", "`false`",
          "`true` or `false`", "answer OPTIONS for a user that is no peer with 404"),
    _toml("service", "match_source_address", Bool(), "service.match_source_address", "`true`", "`true` or `false`",
          "count an answer only from the address the OPTIONS went to"),
    _toml("service", "tcp_idle_timeout", Duration(), "service.tcp_idle_timeout_s", '`"1h"`',
          "seconds or a duration string (0: never)", "an inbound connection silent this long is closed"),
    _toml("service", "tcp_max_connections", Number(lo=1, unit="connections"), "service.tcp_max_connections",
          "`10000`", "connections", "inbound TCP connections in all"),
    _toml("service", "tcp_max_connections_per_ip", Number(lo=1, unit="connections"),
          "service.tcp_max_connections_per_ip", "`100`", "connections", "inbound TCP connections from one address"),
    _toml("service", "tcp_max_unfinished_bytes", Number(lo=65536, unit="bytes"),
          "service.tcp_max_unfinished_bytes", "`4194304`", "bytes, ≥ 65536",
          "bytes of unfinished messages all inbound connections together may hold"),
    _toml("service", "tcp_message_timeout", Duration(), "service.tcp_message_timeout_s", '`"10s"`',
          "seconds or a duration string (0: no limit)", "time a message may take from its first to its last byte"),
    _toml("service", "ready_max_lag", Duration(lo=1), "service.ready_max_lag_s", '`"5s"`',
          "seconds or a duration string", "`/readyz` fails while the qualify scheduler is behind by more than this"),
    _toml("ami", "manager_conf", FilePath(), "service.manager_conf", "none", "path (relative to the TOML file)",
          "the Asterisk manager.conf of the AMI port"),
    _toml("ami", "enabled", Bool(), "service.ami_enabled", "as manager.conf says", "`true` or `false`",
          "AMI port on or off"),
    _toml("ami", "listen", Listen(), "service.ami_listen", "manager.conf's, else `\"127.0.0.1:5038\"`",
          '`"host:port"`', "address of the AMI port"),
    _toml("ami", "banner", Text(), "service.ami_banner", '`"Asterisk Call Manager/9.0.0"`', "text",
          "the first line the AMI port sends"),
    _toml("ami", "peerstatus_time", Bool(), "service.ami_peerstatus_time", "manager.conf's, else `true`",
          "`true` or `false`",
          "`Time:` in Reachable/Lagged `PeerStatus` events"),
    _toml("ami", "fleet_events", Bool(), "service.ami_fleet_events", "`false`", "`true` or `false`",
          "with `[cluster]` and a shared store: PeerStatus events of every node's transitions, not only this node's"),
    _toml("ami", "users", AmiUsers(), "service.ami_users", "none", "`[ami.users.NAME]` tables",
          "manager users: `secret`, `read`, `write`, `deny`, `permit`"),
    _toml("cluster", "url", ClusterUrl(), "service.cluster_url", "unset (one node)",
          '`"etcd3+http://HOST:PORT"` or `"redis://HOST:PORT"`',
          "coordinator of the group: static peers are shared across its nodes (docs/scaling.md)"),
    _toml("cluster", "group", Text(min_len=1), "service.cluster_group", '`"sipqualify"`', "text",
          "the tooz group the nodes join; one group per fleet"),
    _toml("cluster", "node_id", Text(min_len=1), "service.node_id", "`[service] node_id`, else the host name",
          "text, unique in the group", "this node's member id in the group; the same value as `[service] node_id` "
          "(the owner named in its stored rows and in the fleet view)"),
    _toml("cluster", "lease", Number(lo=2, unit="seconds"), "service.cluster_lease_s", "`20`", "seconds",
          "membership lease: a dead node's peers move after it; a cut-off node stops probing at half of it"),
    _toml("cluster", "vantage_points", Number(lo=1, unit="nodes"), "service.cluster_vantage_points", "`1`",
          "integer ≥ 1", "each static peer is probed from this many nodes and is UNREACHABLE only when a majority "
          "of them says so (needs `[store] url` on PostgreSQL; docs/scaling.md \"Vantage points\")"),
)


def _index(reader: str, section: str, *, lower: bool) -> dict[str, Option]:
    out: dict[str, Option] = {}
    for opt in OPTIONS:
        if opt.section == section and reader in opt.readers:
            for n in opt.names:
                out[n.lower() if lower else n] = opt
    return out


#: sip.conf options by lower-case name (and alias), per section
SIPCONF_OPTIONS: Final = {s: _index(SIPCONF, s, lower=True) for s in ("general", "peer")}
#: TOML options by name (and alias), per section
TOML_OPTIONS: Final = {s: _index(TOML, s, lower=False) for s in SECTIONS}


def assign(objs: dict[str, Any], target: str, value: Any) -> None:
    """Put `value` where `target` says (`a,b` unpacks a tuple)."""
    where, _, attrs = target.partition(".")
    obj = objs[where]
    names = attrs.split(",")
    values = (value,) if len(names) == 1 else value
    for name, v in zip(names, values, strict=True):
        if isinstance(obj, dict):
            obj[name] = v
        else:
            setattr(obj, name, v)


def current(objs: dict[str, Any], target: str) -> Any:
    """What `target` holds in `objs` (None for a `local` one or one not in `objs`)."""
    where, _, attr = target.partition(".")
    obj = objs.get(where)
    if obj is None or isinstance(obj, dict) or "," in attr:
        return None
    return getattr(obj, attr)


# ---------------------------------------------------------------------------- documentation

INDEX_HEADER = ("| option | section | read from | default | unit | meaning |\n"
                "|---|---|---|---|---|---|")


def index_markdown() -> str:
    """The option index of docs/configuration.md (between its `option-index` markers)."""
    rows = [INDEX_HEADER]
    for opt in OPTIONS:
        name = f"`{opt.name}`" + (f" ({', '.join(f'`{a}`' for a in opt.aliases)})" if opt.aliases else "")
        files = ", ".join(opt.readers)
        rows.append(f"| {name} | {opt.section} | {files} | {opt.default} | {opt.unit} | {opt.meaning} |")
    return "\n".join(rows)

