"""`sipqualify run` with peers behind DNS: a sip.conf `host=trunk.test` found by SRV (chan_sip's
srvlookup=yes) at a SIPp UAS, re-resolved when the TTL runs out, and an NXDOMAIN peer whose
reason is shown by the API and `sipqualify peer`. The DNS server is a real dnsmasq."""

from __future__ import annotations

import json
from pathlib import Path

from sipqualify.service import Service, ServiceOptions

from ..helpers import endpoint, free_port, sip_conf, wait_for
from ..realpeers import peers as real
from ..realpeers.peers import Daemon, Lab, Sipp
from .conftest import Dnsmasq


def trunk_records(port: int) -> list[str]:
    return [f"--srv-host=_sip._udp.trunk.test,box.trunk.test,{port},0,0", "--host-record=box.trunk.test,127.0.0.1"]


def test_srv_peer_becomes_ok_follows_ttl_and_nxdomain_is_explained(lab: Lab) -> None:
    one, two = Sipp(lab, "uas_200.xml"), Sipp(lab, "uas_200.xml")
    dnsmasq = Dnsmasq(lab, trunk_records(one.port), ttl=1)
    conf = real.sip_conf({"trunk": {"host": "trunk.test", "qualify": "yes", "qualifyfreq": 1},
                     "gone": {"host": "gone.test", "qualify": "yes"}},
                    general={"dns_server": f"127.0.0.1:{dnsmasq.port}"})
    d = Daemon(lab, conf)

    p = d.wait_for("trunk", lambda p: p["state"] == "OK", "OK at the SRV target")
    assert (p["addr_ip"], p["addr_port"]) == ("127.0.0.1", one.port)
    assert p["dns"] == "SRV _sip._udp.trunk.test -> A/AAAA" and p["dns_error"] is None

    gone = d.peer("gone")
    assert gone["state"] == "UNKNOWN" and gone["addr_ip"] is None
    assert gone["dns_error"] == "gone.test A: no such domain (NXDOMAIN)"
    shown = d.cli("peer", "gone")
    assert shown.returncode == 0 and "  DNS error    : gone.test A: no such domain (NXDOMAIN)\n" in shown.stdout
    assert json.loads(d.cli("peer", "gone", "--json").stdout)["dns_error"] == gone["dns_error"]

    # the record changes; after its 1 s TTL the peer is qualified at the new target
    dnsmasq.restart(trunk_records(two.port))
    p = d.wait_for("trunk", lambda p: p["addr_port"] == two.port and p["state"] == "OK", "moved to the new target")
    assert f"now resolves to 127.0.0.1:{two.port} (was 127.0.0.1:{one.port}" in d.proc.log_text()


async def test_address_change_is_an_event_and_moves_the_pokes(lab: Lab, tmp_path: Path) -> None:
    """In-process: the engine's peer address follows the record (QualifyEngine.set_address) and
    the change is published on the event stream."""
    (t1, port1), (t2, port2) = await endpoint(200), await endpoint(200)
    dnsmasq = Dnsmasq(lab, trunk_records(port1), ttl=1)
    conf = sip_conf(tmp_path / "sip.conf", free_port(), {"trunk": {"host": "trunk.test", "qualify": "yes"}},
                    general=f"dns_server=127.0.0.1:{dnsmasq.port}")
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "state")))
    await svc.start()
    try:
        sub = svc.events.subscribe(None)
        assert svc.engine is not None
        p = svc.engine.peer("trunk")
        assert p is not None and p.addr == ("127.0.0.1", port1)
        await wait_for(lambda: p.state == "OK")
        dnsmasq.restart(trunk_records(port2))
        await wait_for(lambda: any(isinstance(i, dict) and i.get("dns") == "changed" for i, _ in sub.items))
        ev = next(i for i, _ in sub.items if isinstance(i, dict) and i.get("dns") == "changed")
        assert (ev["peer"], ev["address"], ev["previous"]) == ("trunk", f"127.0.0.1:{port2}", f"127.0.0.1:{port1}")
        assert p.addr == p.dest == ("127.0.0.1", port2)
    finally:
        await svc.close()
        t1.close()
        t2.close()


def test_naptr_chooses_the_transport_only_when_none_is_written(lab: Lab) -> None:
    """RFC 3263 §4.1: a peer with neither transport= nor a port follows the NAPTR records (here
    SIP+D2T first: qualified over TCP at the _sip._tcp target); a peer that writes transport=udp
    keeps chan_sip's SRV of its transport, NAPTR unasked."""
    tcp, udp = Sipp(lab, "uas_200.xml", transport="tcp"), Sipp(lab, "uas_200.xml")
    dnsmasq = Dnsmasq(lab, [
        "--naptr-record=trunk.test,10,10,s,SIP+D2T,,_sip._tcp.trunk.test",
        "--naptr-record=trunk.test,20,10,s,SIP+D2U,,_sip._udp.trunk.test",
        f"--srv-host=_sip._tcp.trunk.test,box.trunk.test,{tcp.port},0,0",
        f"--srv-host=_sip._udp.trunk.test,box.trunk.test,{udp.port},0,0",
        "--host-record=box.trunk.test,127.0.0.1"])
    conf = real.sip_conf({"naptr": {"host": "trunk.test", "qualify": "yes"},
                          "named": {"host": "trunk.test", "qualify": "yes", "transport": "udp"}},
                         general={"dns_server": f"127.0.0.1:{dnsmasq.port}", "tcpenable": "yes"})
    d = Daemon(lab, conf)
    p = d.wait_for("naptr", lambda p: p["state"] == "OK", "OK over TCP at the NAPTR's SRV target")
    assert (p["transport"], p["addr_port"]) == ("tcp", tcp.port)
    assert p["dns"] == "NAPTR SIP+D2T -> SRV _sip._tcp.trunk.test -> A/AAAA"
    q = d.wait_for("named", lambda p: p["state"] == "OK", "OK over UDP, as chan_sip")
    assert (q["transport"], q["addr_port"], q["dns"]) == ("udp", udp.port, "SRV _sip._udp.trunk.test -> A/AAAA")
