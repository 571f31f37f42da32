"""Peer hosts resolved without blocking the loop (A before AAAA), literals untouched."""

from __future__ import annotations

from sipqualify.model import PeerConfig
from sipqualify.net.resolve import resolve_peers, resolve_proxies


async def test_resolve_peers() -> None:
    peers = [
        PeerConfig(name="lit", host="192.0.2.7", port=5070),
        PeerConfig(name="v6", host="2001:db8::1"),
        PeerConfig(name="name", host="localhost", transport="tls"),
        PeerConfig(name="bad", host="no-such-host.invalid"),
        PeerConfig(name="dyn", dynamic=True),
    ]
    got = await resolve_peers(peers)
    assert got["lit"] == ("192.0.2.7", 5070)
    assert got["v6"] == ("2001:db8::1", 5060)
    assert got["name"] == ("127.0.0.1", 5061)
    assert got["bad"] is None
    assert "dyn" not in got


async def test_resolve_outbound_proxy() -> None:
    got = await resolve_proxies([PeerConfig(name="p", host="x", outboundproxy="sip:127.0.0.1:5080;lr"),
                                 PeerConfig(name="q", host="x", outboundproxy="[::1]")])
    assert got == {"p": ("127.0.0.1", 5080), "q": ("::1", 5060)}
