"""`type=identify` of pjsip.conf: which endpoint a request comes from, by its source address
(res_pjsip_endpoint_identifier_ip), sans-I/O.

`match` entries are IP addresses or networks (`ip/prefix`, `ip/netmask`); host names are not
resolved yet (config/pjsip.py warns: they match nothing). The first identify section, by name,
whose match covers the address wins (res_pjsip takes the first match in its container order).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..model import PjsipConfig

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Identifier:
    rules: tuple[tuple[Network, str], ...]  # (network, endpoint), in match order

    @classmethod
    def from_config(cls, pj: PjsipConfig | None) -> Identifier:
        if pj is None:
            return cls(())
        rules: list[tuple[Network, str]] = []
        for ident in sorted(pj.identifies.values(), key=lambda i: i.name):
            if ident.endpoint not in pj.endpoints:
                continue
            for m in ident.match:
                try:
                    rules.append((ipaddress.ip_network(m.strip("[]"), strict=False), ident.endpoint))
                except ValueError:
                    continue  # a host name
        return cls(tuple(rules))

    def endpoint(self, ip: str) -> str | None:
        """The endpoint whose identify matches `ip` (None: no match, or not an address)."""
        try:
            addr = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return None
        return next((ep for net, ep in self.rules if addr.version == net.version and addr in net), None)
