"""RFC 3263 §4 resolution (net/dns.py) against a real dnsmasq on a loopback port."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from sipqualify.net.dns import (
    NODATA,
    NXDOMAIN,
    SERVFAIL,
    TIMEOUT,
    DnsError,
    SipResolver,
    SrvRecord,
    _soa_ttl,
    srv_order,
)

from ..realpeers.peers import Lab
from .conftest import Dnsmasq

TRUNK = [
    # NAPTR: TLS first (we cannot do it: skipped), then TCP, then UDP (RFC 3263 §4.1)
    "--naptr-record=trunk.test,5,10,s,SIPS+D2T,,_sips._tcp.trunk.test",
    "--naptr-record=trunk.test,10,10,s,SIP+D2T,,_sip._tcp.trunk.test",
    "--naptr-record=trunk.test,20,10,s,SIP+D2U,,_sip._udp.trunk.test",
    "--srv-host=_sips._tcp.trunk.test,tls.trunk.test,5061,0,0",
    "--srv-host=_sip._tcp.trunk.test,tcp.trunk.test,5070,0,0",
    "--srv-host=_sip._udp.trunk.test,udp.trunk.test,5080,0,0",
    "--host-record=tls.trunk.test,127.0.0.1",
    "--host-record=tcp.trunk.test,127.0.0.2",
    "--host-record=udp.trunk.test,127.0.0.3",
    "--host-record=trunk.test,127.0.0.4",
]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_naptr_srv_a_chain(lab: Lab) -> None:
    """§4.1: NAPTR in order, services we cannot use skipped, then SRV, then A."""
    d = Dnsmasq(lab, TRUNK, ttl=30)
    res = await SipResolver(d.server, transports=("udp", "tcp")).resolve("trunk.test")
    first = res.targets[0]
    assert (first.transport, first.host, first.port, first.address) == ("tcp", "tcp.trunk.test", 5070, "127.0.0.2")
    assert res.path.startswith("NAPTR SIP+D2T -> SRV _sip._tcp.trunk.test")
    assert res.ttl == pytest.approx(30, abs=1)
    udp_only = await SipResolver(d.server, transports=("udp",)).resolve("trunk.test")
    assert [t.addr for t in udp_only.targets] == [("127.0.0.3", 5080)]


async def test_explicit_transport_is_srv_without_naptr(lab: Lab) -> None:
    """§4.2 with a transport named (chan_sip: the peer's transport): SRV of it, no NAPTR."""
    d = Dnsmasq(lab, TRUNK)
    res = await SipResolver(d.server).resolve("trunk.test", transport="udp")
    assert [t.addr for t in res.targets] == [("127.0.0.3", 5080)]
    assert "query[NAPTR]" not in d.log()


async def test_explicit_port_is_a_only(lab: Lab) -> None:
    """§4.2: a port in the URI means the name is an A/AAAA name: no SRV is asked."""
    d = Dnsmasq(lab, TRUNK)
    res = await SipResolver(d.server).resolve("trunk.test", 5099, "udp")
    assert [t.addr for t in res.targets] == [("127.0.0.4", 5099)]
    assert "query[SRV]" not in d.log() and "query[NAPTR]" not in d.log()


async def test_srvlookup_no_is_a_only(lab: Lab) -> None:
    d = Dnsmasq(lab, TRUNK)
    res = await SipResolver(d.server).resolve("trunk.test", None, "udp", srv=False)
    assert [t.addr for t in res.targets] == [("127.0.0.4", 5060)]
    assert "query[SRV]" not in d.log()


async def test_no_srv_falls_back_to_a_on_default_port(lab: Lab) -> None:
    d = Dnsmasq(lab, ["--host-record=plain.test,127.0.0.5"])
    res = await SipResolver(d.server).resolve("plain.test", transport="tcp")
    assert [(t.transport, *t.addr) for t in res.targets] == [("tcp", "127.0.0.5", 5060)]
    assert "query[SRV] _sip._tcp.plain.test" in d.log()


async def test_aaaa_only_target(lab: Lab) -> None:
    d = Dnsmasq(lab, ["--srv-host=_sip._udp.v6.test,six.v6.test,5062,0,0", "--host-record=six.v6.test,::1"])
    res = await SipResolver(d.server).resolve("v6.test", transport="udp")
    assert [t.addr for t in res.targets] == [("::1", 5062)]


async def test_srv_priority_then_weights(lab: Lab) -> None:
    """RFC 2782: the lower priority always first; within a priority, chosen in proportion to
    weight (3:1 here) by the injected random source."""
    d = Dnsmasq(lab, ["--srv-host=_sip._udp.w.test,heavy.w.test,5060,10,30",
                      "--srv-host=_sip._udp.w.test,light.w.test,5060,10,10",
                      "--srv-host=_sip._udp.w.test,backup.w.test,5060,20,100",
                      "--host-record=heavy.w.test,127.0.0.11", "--host-record=light.w.test,127.0.0.12",
                      "--host-record=backup.w.test,127.0.0.13"])
    r = SipResolver(d.server, rng=random.Random(7))
    firsts: Counter[str] = Counter()
    for _ in range(400):
        res = await r.resolve("w.test", transport="udp")
        assert res.targets[-1].host == "backup.w.test"
        firsts[res.targets[0].host] += 1
    assert 0.65 < firsts["heavy.w.test"] / 400 < 0.85, firsts
    assert d.log().count("query[SRV]") == 1  # the SRV set came from the cache: the order is drawn anew each time


def test_srv_order_is_rfc2782_running_sum() -> None:
    """The selection step itself: the first record whose running sum reaches the draw, zero weights first."""
    class Draw(random.Random):
        def __init__(self, values: list[int]) -> None:
            super().__init__()
            self.values = values

        def randint(self, a: int, b: int) -> int:
            v = self.values.pop(0)
            assert a <= v <= b
            return v

    recs = [SrvRecord(1, 10, 1, "a"), SrvRecord(1, 0, 1, "zero"), SrvRecord(1, 30, 1, "b"), SrvRecord(0, 5, 1, "p0")]
    # priority 0 alone (draw 5); then [zero, a, b] sums 0, 10, 40: draw 11 -> b; [zero, a] sums 0, 10: draw 0 -> zero
    assert [r.target for r in srv_order(recs, Draw([5, 11, 0, 10]))] == ["p0", "b", "zero", "a"]


async def test_ttl_expiry_picks_up_a_changed_record(lab: Lab) -> None:
    clock = Clock()
    d = Dnsmasq(lab, ["--srv-host=_sip._udp.move.test,box.move.test,5060,0,0",
                      "--host-record=box.move.test,127.0.0.21"], ttl=5)
    r = SipResolver(d.server, clock=clock)
    res = await r.resolve("move.test", transport="udp")
    assert res.targets[0].address == "127.0.0.21" and res.ttl == 5
    d.restart(["--srv-host=_sip._udp.move.test,box.move.test,5060,0,0", "--host-record=box.move.test,127.0.0.22"])
    clock.t += 4
    cached = await r.resolve("move.test", transport="udp")
    assert cached.targets[0].address == "127.0.0.21" and cached.ttl == pytest.approx(1)
    clock.t += 2
    fresh = await r.resolve("move.test", transport="udp")
    assert fresh.targets[0].address == "127.0.0.22"


async def test_nxdomain_has_a_reason(lab: Lab) -> None:
    d = Dnsmasq(lab, [])
    with pytest.raises(DnsError) as ei:
        await SipResolver(d.server).resolve("nope.test", transport="udp")
    assert ei.value.kind == NXDOMAIN
    assert ei.value.reason == "nope.test A: no such domain (NXDOMAIN)"


async def test_refused_is_servfail(lab: Lab) -> None:
    d = Dnsmasq(lab, [])  # no upstream: names outside .test are refused
    with pytest.raises(DnsError) as ei:
        await SipResolver(d.server).resolve("trunk.example", 5060)
    assert ei.value.kind == SERVFAIL
    assert "REFUSED" in ei.value.reason


async def test_timeout() -> None:
    """A server that never answers: a timeout, within the lifetime, the loop never blocked."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        r = SipResolver(mute.getsockname(), lifetime=0.3)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        with pytest.raises(DnsError) as ei:
            await r.resolve("slow.test", 5060)
        ticker.cancel()
    assert ei.value.kind == TIMEOUT and "0.3 s" in ei.value.reason
    assert ticks > 5


def test_negative_ttl_from_soa() -> None:
    """RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM)."""
    q = dns.message.make_query("x.test", "A")
    resp = dns.message.make_response(q)
    resp.authority.append(dns.rrset.from_text("test.", 900, "IN", "SOA", "ns.test. h.test. 1 2 3 4 60"))
    assert _soa_ttl(resp) == 60
    resp.authority[0].ttl = 30
    assert _soa_ttl(resp) == 30
    assert _soa_ttl(dns.message.make_response(q)) is None
    assert dns.rdatatype.SOA == resp.authority[0].rdtype


async def test_nodata(lab: Lab) -> None:
    """A name that exists with neither A nor AAAA (only a TXT record here)."""
    d = Dnsmasq(lab, ["--txt-record=words.test,hello"])
    with pytest.raises(DnsError) as ei:
        await SipResolver(d.server).resolve("words.test", 5060)
    assert ei.value.kind == NODATA
    assert ei.value.reason == "words.test A/AAAA: no record of that type"


async def test_no_resolv_conf_falls_back_to_getaddrinfo(tmp_path: Path) -> None:
    """Without a dns_server and with a resolv.conf that names no server, SRV cannot be asked:
    the system resolver (getaddrinfo: /etc/hosts, nsswitch) still finds the name. The host's own
    name is one getaddrinfo knows on any machine the suite runs on."""
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver\n")
    host = socket.gethostname()
    expected = {str(i[4][0]) for i in socket.getaddrinfo(host, None)}
    res = await SipResolver(resolv_conf=str(empty)).resolve(host, transport="udp")
    assert res.targets[0].address in expected and res.targets[0].port == 5060
    assert res.path.startswith("no SRV")
