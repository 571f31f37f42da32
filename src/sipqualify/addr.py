"""Addresses: the one `Addr`, the one IP-literal check and the one host:port parser.

Every layer uses these (config readers, the command line, DNS, the API's loopback check, the
AMI's ACLs), so they live in a module that depends on nothing else of the package. SIP URIs
keep their own grammar (sip/uri.py: RFC 3261 hostport, which never takes a bare IPv6 address).
"""

from __future__ import annotations

import ipaddress

Addr = tuple[str, int]  # (IP, port) as the socket layer gives and takes it


def ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`text` as an address if it is an IPv4 or IPv6 literal (an IPv6 may carry a `%zone`;
    no brackets), else None."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_ip(text: str) -> bool:
    return ip_literal(text) is not None


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback literal (bracketed or not): where an admin surface may listen
    without credentials or ACLs being insisted on."""
    if host == "localhost":
        return True
    addr = ip_literal(host.strip("[]"))
    return addr is not None and addr.is_loopback


def _is_ipv6(text: str) -> bool:
    return isinstance(ip_literal(text), ipaddress.IPv6Address)


def parse_port(text: str, *, allow_zero: bool = False) -> int:
    """A port number, ASCII digits only (`int()` would also take '５０６０')."""
    lo = 0 if allow_zero else 1
    t = text.strip()
    if not (t.isascii() and t.isdigit()) or len(t) > 5 or not lo <= int(t) <= 65535:
        raise ValueError(f"port '{text}' is not a number {lo}..65535")
    return int(t)


def split_hostport(text: str, *, allow_zero_port: bool = False, ip_only: bool = False,
                   need_port: bool = False) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 literal -> (host, port or None).

    Raises ValueError with a message fit for a config message or a command-line error.
    `ip_only`: the host must be an IP literal; `need_port`: a port must be written.
    """
    t = text.strip()
    if not t:
        raise ValueError("empty address")
    port: int | None = None
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"'{t}': no closing ']'")
        host, rest = t[1:end], t[end + 1:]
        if not _is_ipv6(host):
            raise ValueError(f"'{host}' in brackets is not an IPv6 address")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"'{t}': junk after ']'")
            port = parse_port(rest[1:], allow_zero=allow_zero_port)
    elif t.count(":") > 1:
        if not _is_ipv6(t):
            raise ValueError(f"'{t}' is neither host:port nor an IPv6 address")
        host = t
    else:
        host, sep, port_text = t.partition(":")
        if not host or any(c.isspace() for c in host) or "/" in host or "@" in host:
            raise ValueError(f"'{host}' is not a host name or IP address")
        if sep:
            port = parse_port(port_text, allow_zero=allow_zero_port)
    if ip_only and not is_ip(host):
        raise ValueError(f"'{host}' is not an IP address")
    if need_port and port is None:
        raise ValueError("a port is required")
    return host, port
