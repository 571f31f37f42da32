"""Resolve peer hosts (A/AAAA) without blocking the event loop.

`loop.getaddrinfo` runs the system resolver in the default executor, so /etc/hosts,
nsswitch and resolv.conf behave exactly as for every other program on the host. IP
literals never leave the process. Peer hosts are resolved by net/dns.py (RFC 3263, SRV) and
net/dnswatch.py; this module resolves outbound proxies and `ping` targets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable

from ..addr import Addr, ip_literal
from ..model import DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT, DEFAULT_WS_PORT, DEFAULT_WSS_PORT, PeerConfig

log = logging.getLogger("sipqualify.resolve")



def default_port(transport: str) -> int:
    return {"tls": DEFAULT_SIPS_PORT, "ws": DEFAULT_WS_PORT, "wss": DEFAULT_WSS_PORT}.get(transport, DEFAULT_SIP_PORT)


def literal(host: str) -> str | None:
    """`host` as a canonical IP address string, None when it is not an IP literal. The
    config's own string when it is already canonical: a million peers' addresses are not
    each kept twice (issue 15: daemon memory per peer)."""
    addr = ip_literal(host.strip("[]"))
    if addr is None:
        return None
    text = str(addr)
    return host if text == host else text


async def resolve_host(host: str, *, families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> str | None:
    """First address of `host`, preferring IPv4 when both exist and both are usable."""
    lit = literal(host)
    if lit is not None:
        return lit
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as e:
        log.warning("cannot resolve %r: %s", host, e)
        return None
    for fam in families:
        for info in infos:
            if info[0] == fam:
                return str(info[4][0])
    return None


async def resolve_proxies(peers: Iterable[PeerConfig]) -> dict[str, Addr | None]:
    """name -> address of the peer's outbound proxy (`outboundproxy=host[:port]`)."""
    out: dict[str, Addr | None] = {}
    for p in peers:
        if not p.outboundproxy:
            continue
        text = p.outboundproxy
        for prefix in ("sip:", "sips:"):
            if text.startswith(prefix):
                text = text[len(prefix):]
        text = text.split(";", 1)[0]
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port(p.transport)
        elif text.count(":") == 1:
            host, _, ps = text.partition(":")
            port = int(ps) if ps.isdigit() else default_port(p.transport)
        else:
            host, port = text, default_port(p.transport)
        ip = await resolve_host(host)
        out[p.name] = (ip, port) if ip else None
    return out
