"""`type=identify` of pjsip.conf: which endpoint a request comes from, by its source address
(res_pjsip_endpoint_identifier_ip), sans-I/O.

`match` entries are IP addresses, networks (`ip/prefix`, `ip/netmask`) or host names; a host
name matches the addresses the shell resolved it to when the config was loaded (`resolved`),
as res_pjsip resolves them when it loads the section. The first identify section, by name,
whose match covers the address wins (res_pjsip takes the first match in its container order).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..model import PjsipConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Identifier:
    rules: tuple[tuple[Network, str], ...]  # (network, endpoint), in match order

    @classmethod
    def from_config(cls, pj: PjsipConfig | None, resolved: Mapping[str, list[str]] | None = None) -> Identifier:
        if pj is None:
            return cls(())
        rules: list[tuple[Network, str]] = []
        for ident in sorted(pj.identifies.values(), key=lambda i: i.name):
            if ident.endpoint not in pj.endpoints:
                continue
            for m in ident.match:
                for text in [m] if not hostnames([m]) else (resolved or {}).get(m, []):
                    rules.append((ipaddress.ip_network(text.strip("[]"), strict=False), ident.endpoint))
        return cls(tuple(rules))

    def endpoint(self, ip: str) -> str | None:
        """The endpoint whose identify matches `ip` (None: no match, or not an address)."""
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        return next((ep for net, ep in self.rules if addr.version == net.version and addr in net), None)


def hostnames(matches: Iterable[str]) -> list[str]:
    """The `match` entries that are neither an address nor a network: names to resolve."""
    out = []
    for m in matches:
        try:
            ipaddress.ip_network(m.strip("[]"), strict=False)
        except ValueError:
            out.append(m)
    return out
