"""Peer hosts resolved without blocking the loop (A before AAAA), literals untouched. (RFC 3263
SRV/NAPTR against a real DNS server: tests/dns/.)"""

from __future__ import annotations

from sipqualify.model import GeneralConfig, PeerConfig
from sipqualify.net.dnswatch import PeerDns
from sipqualify.net.resolve import resolve_proxies


async def test_resolve_peers() -> None:
    peers = [
        PeerConfig(name="lit", host="192.0.2.7", port=5070),
        PeerConfig(name="v6", host="2001:db8::1"),
        PeerConfig(name="name", host="localhost", transport="tls"),
        PeerConfig(name="bad", host="no-such-host.invalid"),
        PeerConfig(name="dyn", dynamic=True),
    ]
    dns = PeerDns(lambda *a: None)
    got = await dns.load(peers, GeneralConfig())  # system resolver: localhost from /etc/hosts (RFC 6761: no SRV)
    assert got["lit"] == ("192.0.2.7", 5070)
    assert got["v6"] == ("2001:db8::1", 5060)
    assert got["name"] == ("127.0.0.1", 5061)
    assert got["bad"] is None
    assert "dyn" not in got
    assert dns.describe("lit") == (None, None)
    path, error = dns.describe("bad")
    assert path is None and error is not None and error.startswith("no-such-host.invalid A/AAAA: ")
    dns.close()


async def test_resolve_outbound_proxy() -> None:
    got = await resolve_proxies([PeerConfig(name="p", host="x", outboundproxy="sip:127.0.0.1:5080;lr"),
                                 PeerConfig(name="q", host="x", outboundproxy="[::1]")])
    assert got == {"p": ("127.0.0.1", 5080), "q": ("::1", 5060)}


def test_literal_is_the_configs_own_string_when_canonical() -> None:
    """A million peers' IP addresses are not each kept twice (issue 15: memory per peer)."""
    from sipqualify.net.resolve import literal

    host = "".join(["192.0.2.", "10"])  # a string object of its own, as a config reader makes
    assert literal(host) is host
    assert literal("2001:DB8::1") == "2001:db8::1" and literal("[2001:db8::1]") == "2001:db8::1"
    assert literal("pbx.example.com") is None
