"""Locating a SIP peer in DNS (RFC 3263 §4) with dnspython's async resolver.

    host, no port, no transport:  NAPTR -> SRV -> AAAA/A          (§4.1, §4.2)
    host and a transport:         SRV of that transport -> AAAA/A  (§4.2: no NAPTR)
    host and a port:              A/AAAA only                     (§4.2: no SRV)
    an IP literal:                itself, nothing asked

chan_sip (`srvlookup=yes`, its default) always names a transport (the peer's), so it does
the second: `_sip._udp`, `_sip._tcp` or `_sips._tcp`, then the first target's first address
(`ast_get_ip_or_srv`); `srvlookup=no` is the third. The resolver returns every target in
order (SRV priority, then RFC 2782 weighted random selection, addresses A before AAAA as
`net/resolve.resolve_host` prefers); callers that want chan_sip take the first.

A resolution carries its TTL: the smallest TTL of every record set on the way. Failures are
`DnsError` with a kind (NXDOMAIN, no data, SERVFAIL, timeout, ...) and a reason an operator
can read. Answers, and negative answers whose SOA allows it (RFC 2308 §5: the smaller of the
SOA's TTL and its MINIMUM), are cached for their TTL. Retrying failures is the caller's
business (`net/dnswatch.py` backs off).

Without `dns_server` the system's resolv.conf is used for NAPTR/SRV, and addresses come from
`getaddrinfo` (so /etc/hosts and nsswitch keep working; dnspython does not read /etc/hosts);
those addresses have no TTL of their own and count `SYSTEM_ADDRESS_TTL`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from ..addr import Addr, ip_literal
from ..qualify.targets import Target
from .resolve import default_port

log = logging.getLogger("sipqualify.dns")

SYSTEM_ADDRESS_TTL = 300.0  # getaddrinfo says no TTL: chan_sip's dnsmgr refreshes every 300 s by default
DEFAULT_LIFETIME_S = 5.0  # one query, all retries included

# RFC 3263 §4.1 / RFC 7118 §5 NAPTR services, and the SRV service of each transport (§4.2)
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls", "SIP+D2W": "ws", "SIPS+D2W": "wss"}
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp", "ws": "_sip._ws", "wss": "_sips._ws"}

# DnsError kinds
NXDOMAIN = "nxdomain"
NODATA = "nodata"
SERVFAIL = "servfail"
TIMEOUT = "timeout"
NO_CONFIG = "no-config"
BAD_NAME = "bad-name"
NO_TARGET = "no-target"

# no records to follow: go on to the next step (no resolv.conf: getaddrinfo may still know the name)
_NO_RECORDS = (NXDOMAIN, NODATA, NO_CONFIG)

_KIND_TEXT = {
    NXDOMAIN: "no such domain (NXDOMAIN)",
    NODATA: "no record of that type",
    SERVFAIL: "server failure (SERVFAIL or refused)",
    TIMEOUT: "timed out",
    NO_CONFIG: "no DNS server configured",
    BAD_NAME: "not a valid domain name",
    NO_TARGET: "no usable target",
}


class DnsError(Exception):
    """A name that did not resolve. `negative_ttl`: how long the answer may be cached (RFC 2308)."""

    def __init__(self, kind: str, qname: str, rdtype: str, detail: str = "", negative_ttl: float | None = None) -> None:
        self.kind = kind
        self.qname = qname
        self.rdtype = rdtype
        self.detail = detail
        self.negative_ttl = negative_ttl
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        text = f"{self.qname} {self.rdtype}: {_KIND_TEXT.get(self.kind, self.kind)}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True, slots=True)
class Resolution:
    name: str
    targets: tuple[Target, ...]  # in the order RFC 3263 says to try them; never empty
    ttl: float  # seconds this holds: the smallest TTL along the chain
    path: str  # how it was found, for `peer X`: "SRV _sip._udp.trunk.test -> A"


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


def srv_order(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782: by priority, and within one priority by weighted random selection: zero
    weights first, a random number in [0, sum of weights], the first record whose running
    sum reaches it is next; repeat without it."""
    out: list[SrvRecord] = []
    for prio in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == prio), key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for i, r in enumerate(group):
                running += r.weight
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out


def _special(host: str) -> bool:
    """RFC 6761 §6.3/§6.4: `localhost` and `.invalid` names never go to a DNS server for SRV."""
    h = host.lower().rstrip(".")
    return h == "localhost" or h.endswith((".localhost", ".invalid")) or h == "invalid"


def _text(v: bytes | str) -> str:
    return v.decode("ascii", "replace") if isinstance(v, bytes) else v


def _soa_ttl(response: Any) -> float | None:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); without an SOA, not cached."""
    for rrset in getattr(response, "authority", ()) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


class SipResolver:
    """RFC 3263 lookups with a cache. `server`: (ip, port) of the DNS server to ask; None: the
    system's configuration. `transports`: what NAPTR/SRV results may name (the ones we can
    qualify over). `rng`: where SRV weighted selection draws from (tests inject one)."""

    def __init__(self, server: Addr | None = None, *, transports: Sequence[str] = ("udp", "tcp"),
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic,
                 lifetime: float = DEFAULT_LIFETIME_S, resolv_conf: str = "/etc/resolv.conf") -> None:
        self.server = server
        self.resolv_conf = resolv_conf
        self.transports = tuple(transports)
        self.rng = rng or random.Random()
        self.clock = clock
        self.lifetime = lifetime
        self._cache: dict[tuple[str, str], tuple[float, tuple[float, list[Any]] | DnsError]] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._config_error: DnsError | None = None
        self.queries = 0  # sent to a server (not answered from the cache)
        self.cache_hits = 0

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.server is not None:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [self.server[0]]
                r.port = self.server[1]
            else:
                try:
                    r = dns.asyncresolver.Resolver(filename=self.resolv_conf)
                except (dns.resolver.NoResolverConfiguration, OSError) as e:
                    raise DnsError(NO_CONFIG, "-", "-", str(e) or "resolv.conf has no nameserver") from None
            r.cache = None  # ours, below: it also keeps negative answers and failures typed
            self._resolver = r
        return self._resolver

    # ------------------------------------------------------------------ one query

    async def query(self, qname: str, rdtype: str) -> tuple[float, list[Any]]:
        """(ttl, records) of one record set, from the cache when still fresh."""
        key = (qname.lower().rstrip("."), rdtype)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self.cache_hits += 1
            if isinstance(hit[1], DnsError):
                raise hit[1]
            ttl, records = hit[1]
            return max(0.0, min(ttl, hit[0] - now)), records
        try:
            answer = await self._query(qname, rdtype)
        except DnsError as e:
            if e.negative_ttl:
                self._cache[key] = (now + e.negative_ttl, e)
            raise
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else 0.0
        records = list(answer)
        if ttl > 0:
            self._cache[key] = (now + ttl, (ttl, records))
        return ttl, records

    async def _query(self, qname: str, rdtype: str) -> Any:
        try:
            name = dns.name.from_text(qname)
        except (dns.exception.DNSException, UnicodeError, ValueError) as e:
            raise DnsError(BAD_NAME, qname, rdtype, str(e)) from None
        r = self._dns()
        self.queries += 1
        try:
            return await r.resolve(name, rdtype, search=False, lifetime=self.lifetime)
        except dns.resolver.NXDOMAIN as e:
            resp = next(iter((e.kwargs.get("responses") or {}).values()), None)
            raise DnsError(NXDOMAIN, qname, rdtype, negative_ttl=_soa_ttl(resp)) from None
        except dns.resolver.NoAnswer as e:
            raise DnsError(NODATA, qname, rdtype, negative_ttl=_soa_ttl(e.kwargs.get("response"))) from None
        except dns.resolver.NoNameservers as e:
            errors = e.kwargs.get("errors") or []
            detail = "; ".join(f"{err[0]}: {err[3] if len(err) > 3 else err}" for err in errors[:2])
            raise DnsError(SERVFAIL, qname, rdtype, detail) from None
        except dns.exception.Timeout:
            raise DnsError(TIMEOUT, qname, rdtype, f"no answer within {self.lifetime:g} s") from None
        except dns.exception.DNSException as e:
            raise DnsError(SERVFAIL, qname, rdtype, str(e)) from None

    # ------------------------------------------------------------------ RFC 3263

    async def resolve(self, host: str, port: int | None = None, transport: str | None = None, *,
                      srv: bool = True) -> Resolution:
        """Where to qualify `host`. `transport` None: chosen by NAPTR (else SRV of every
        transport we support, else UDP). `srv=False`: A/AAAA only (chan_sip `srvlookup=no`)."""
        lit = ip_literal(host.strip("[]"))
        if lit is not None:
            t = transport or "udp"
            return Resolution(host, (Target(t, host, port or default_port(t), str(lit)),), float("inf"), "literal")
        if port is not None or not srv or _special(host):
            t = transport or "udp"
            ttl, addrs = await self.addresses(host)
            return self._make(host, [(t, host, port or default_port(t), ttl, addrs)], ttl, "A/AAAA")
        if transport is not None:
            got = await self._srv_then_a(host, transport)
            if got is not None:
                return got
            ttl, addrs = await self.addresses(host)
            return self._make(host, [(transport, host, default_port(transport), ttl, addrs)], ttl,
                              f"no SRV {SRV_PREFIX.get(transport, '?')}.{host} -> A/AAAA")
        return await self._naptr(host)

    async def _naptr(self, host: str) -> Resolution:
        try:
            ttl, records = await self.query(host, "NAPTR")
        except DnsError as e:
            if e.kind not in _NO_RECORDS:
                raise
            records, ttl = [], float("inf")
        naptrs = [NaptrRecord(r.order, r.preference, _text(r.flags).lower(), _text(r.service).upper(),
                              r.replacement.to_text(omit_final_dot=True)) for r in records]
        usable = sorted((n for n in naptrs if n.flags == "s" and NAPTR_SERVICES.get(n.service) in self.transports),
                        key=lambda n: (n.order, n.preference))
        errors: list[DnsError] = []
        for n in usable:
            try:
                got = await self._srv(n.replacement, NAPTR_SERVICES[n.service])
            except DnsError as e:
                errors.append(e)
                continue
            if got is not None:
                return Resolution(host, got.targets, min(ttl, got.ttl), f"NAPTR {n.service} -> {got.path}")
        if usable:  # RFC 3263 §4.1: the NAPTR records name the way; nothing behind them resolved
            raise errors[0] if errors else DnsError(NO_TARGET, host, "NAPTR", "no SRV target behind the NAPTR records")
        # §4.1: no (usable) NAPTR: SRV of every transport we support, then A/AAAA over UDP
        targets: list[Target] = []
        paths: list[str] = []
        min_ttl = float("inf")
        for t in self.transports:
            got = await self._srv_then_a(host, t)
            if got is not None:
                targets += got.targets
                paths.append(got.path)
                min_ttl = min(min_ttl, got.ttl)
        if targets:
            return Resolution(host, tuple(targets), min_ttl, " + ".join(paths))
        a_ttl, addrs = await self.addresses(host)
        return self._make(host, [("udp", host, default_port("udp"), a_ttl, addrs)], a_ttl, "no NAPTR/SRV -> A/AAAA")

    async def _srv_then_a(self, host: str, transport: str) -> Resolution | None:
        """SRV of `transport` at `host`; None when there is none (NXDOMAIN / no data / only '.')."""
        try:
            return await self._srv(f"{SRV_PREFIX[transport]}.{host}", transport)
        except DnsError as e:
            if e.kind in _NO_RECORDS:
                return None
            raise

    async def _srv(self, qname: str, transport: str) -> Resolution | None:
        ttl, records = await self.query(qname, "SRV")
        srvs = [SrvRecord(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)) for r in records]
        srvs = [s for s in srvs if s.target not in ("", ".")]  # RFC 2782: "." = not offered here
        if not srvs:
            return None
        found: list[tuple[str, str, int, float, list[str]]] = []
        errors: list[DnsError] = []
        for s in srv_order(srvs, self.rng):
            try:
                a_ttl, addrs = await self.addresses(s.target)
            except DnsError as e:
                errors.append(e)
                continue
            found.append((transport, s.target, s.port, a_ttl, addrs))
        if not found:
            raise errors[0]
        return self._make(qname, found, ttl, f"SRV {qname} -> A/AAAA")

    @staticmethod
    def _make(name: str, found: list[tuple[str, str, int, float, list[str]]], ttl: float, path: str) -> Resolution:
        targets = tuple(Target(t, h, p, a) for t, h, p, _, addrs in found for a in addrs)
        return Resolution(name, targets, min([ttl, *(f[3] for f in found)]), path)

    async def addresses(self, host: str) -> tuple[float, list[str]]:
        """(ttl, [A..., AAAA...]) of `host`; with no `dns_server`, from getaddrinfo."""
        if self.server is None:
            return SYSTEM_ADDRESS_TTL, await self._getaddrinfo(host)
        results = await asyncio.gather(self.query(host, "A"), self.query(host, "AAAA"), return_exceptions=True)
        addrs: list[str] = []
        ttls: list[float] = []
        errors: list[DnsError] = []
        for res in results:
            if isinstance(res, DnsError):
                errors.append(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                ttls.append(res[0])
                addrs += [r.address for r in res[1]]
        if not addrs:
            nx = [e for e in errors if e.kind == NXDOMAIN]
            other = [e for e in errors if e.kind not in (NXDOMAIN, NODATA)]
            if nx:
                raise nx[0]
            if other:
                raise other[0]
            neg = [e.negative_ttl for e in errors if e.negative_ttl]
            raise DnsError(NODATA, host, "A/AAAA", negative_ttl=min(neg) if len(neg) == len(errors) else None)
        return min(ttls), addrs

    @staticmethod
    async def _getaddrinfo(host: str) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except socket.gaierror as e:
            kind = NXDOMAIN if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)) else SERVFAIL
            raise DnsError(kind, host, "A/AAAA", f"getaddrinfo: {e.strerror}") from None
        except UnicodeError as e:
            raise DnsError(BAD_NAME, host, "A/AAAA", str(e)) from None
        out: list[str] = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            for info in infos:
                ip = str(info[4][0])
                if info[0] == fam and ip not in out:
                    out.append(ip)
        if not out:
            raise DnsError(NODATA, host, "A/AAAA", "getaddrinfo: no IPv4 or IPv6 address")
        return out
