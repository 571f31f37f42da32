"""`qualify_targets = all` against a real dnsmasq: every SRV target and every address (A and
AAAA) qualified on its own, the peer's state their rollup (asterisk/asterisk PR #2041)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions

from ..helpers import api, endpoint, free_port, scrape, wait_for
from ..realpeers import peers as real
from ..realpeers.peers import Daemon, Lab, Sipp
from .conftest import Dnsmasq


def two_boxes(port_a: int, port_b: int) -> list[str]:
    """Two SRV targets of equal priority, both on 127.0.0.1, each on its own port."""
    return [f"--srv-host=_sip._udp.trunk.test,a.trunk.test,{port_a},0,10",
            f"--srv-host=_sip._udp.trunk.test,b.trunk.test,{port_b},0,10",
            "--host-record=a.trunk.test,127.0.0.1", "--host-record=b.trunk.test,127.0.0.1"]


def by_host(targets: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["host"]: t for t in targets}


def test_one_dead_srv_target_leaves_the_trunk_reachable(lab: Lab) -> None:
    """A SIPp UAS behind one SRV target, nothing behind the other: the trunk is OK, the dead
    target UNREACHABLE, both shown by the API and `sipqualify peer`; no NOTICE for the target."""
    uas = Sipp(lab, "uas_200.xml")
    dead = free_port()
    dnsmasq = Dnsmasq(lab, two_boxes(uas.port, dead))
    conf = real.sip_conf({"trunk": {"host": "trunk.test", "qualify": 500, "qualifyfreq": 2,
                                    "qualify_targets": "all"}},
                         general={"dns_server": f"127.0.0.1:{dnsmasq.port}"})
    d = Daemon(lab, conf)

    p = d.wait_for("trunk", lambda p: p["targets"] is not None and sorted(t["state"] for t in p["targets"]) == [
        "OK", "UNREACHABLE"], "one target OK, the other UNREACHABLE")
    assert p["state"] == "OK" and p["status"].startswith("OK (")
    targets = by_host(p["targets"])
    assert targets["a.trunk.test"]["port"] == uas.port and targets["a.trunk.test"]["state"] == "OK"
    assert targets["b.trunk.test"] == {**targets["b.trunk.test"], "port": dead, "address": "127.0.0.1",
                                       "state": "UNREACHABLE", "status": "UNREACHABLE", "lastms": -1}
    assert targets["b.trunk.test"]["label"] == f"udp:b.trunk.test:{dead}/127.0.0.1"

    shown = d.cli("peer", "trunk")
    assert shown.returncode == 0, shown.stderr
    assert "  Targets      : 2, the peer's state is their rollup\n" in shown.stdout
    assert f"    udp:b.trunk.test:{dead}/127.0.0.1" in shown.stdout
    line_b = next(ln for ln in shown.stdout.splitlines() if f"b.trunk.test:{dead}" in ln)
    line_a = next(ln for ln in shown.stdout.splitlines() if f"a.trunk.test:{uas.port}" in ln)
    assert line_b.endswith("UNREACHABLE") and " OK (" in line_a
    peers = d.cli("peers")
    assert "1 sip peers [Monitored: 1 online, 0 offline" in peers.stdout and "#" not in peers.stdout
    log = d.proc.log_text()
    assert "Peer 'trunk' is now Reachable." in log and "is now UNREACHABLE!" not in log
    assert f"target udp:b.trunk.test:{dead}/127.0.0.1 is now UNREACHABLE" in log


async def test_dual_stack_name_gives_two_targets_and_set_changes_are_events(lab: Lab, tmp_path: Path) -> None:
    """An AAAA+A name is two targets (127.0.0.1 and ::1, each answered over its own socket);
    the record losing its AAAA is an `event: dns` `targets` change and the rollup stays OK;
    a dead address's target is an `event: target`."""
    loop = asyncio.get_running_loop()
    t4, port = await endpoint(200)
    t6, _ = await loop.create_datagram_endpoint(lambda: DemoEndpoint(200, "OK"), local_addr=("::1", port))
    dnsmasq = Dnsmasq(lab, ["--host-record=dual.test,127.0.0.1,::1"], ttl=1)
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f'[general]\nbind = ["127.0.0.1:0", "[::1]:0"]\ndns_server = "127.0.0.1:{dnsmasq.port}"\n'
                    f'[peers.dual]\nhost = "dual.test"\nport = {port}\nqualify = 500\nqualifyfreq = 1\n'
                    'qualify_targets = "all"\n')
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        eng = svc.engine
        assert eng is not None
        sub = svc.events.subscribe(None)
        await wait_for(lambda: [t.state for t in eng.targets("dual")] == ["OK", "OK"])
        _, body = await api(svc, "GET", "/api/v1/peers/dual")
        assert [(t["address"], t["port"], t["transport"]) for t in body["targets"]] == [
            ("127.0.0.1", port, "udp"), ("::1", port, "udp")]
        assert body["state"] == "OK" and len(eng) == 1
        _, metrics = await asyncio.to_thread(scrape, svc)
        assert f'sipqualify_peer_target_up{{peer="dual",target="udp:dual.test:{port}/::1"}} 1' in metrics

        dnsmasq.restart(["--host-record=dual.test,127.0.0.1"])  # the AAAA is gone
        await wait_for(lambda: len(eng.targets("dual")) == 1, timeout=15)
        ev = next(i for i, _ in sub.items if isinstance(i, dict) and i.get("dns") == "targets")
        assert (ev["peer"], ev["added"], ev["removed"]) == ("dual", [], [f"udp:dual.test:{port}/::1"])
        t4.close()  # now the IPv4 address goes dead too: the one target left fails, and so does the peer
        peer = eng.peer("dual")
        assert peer is not None
        await wait_for(lambda: peer.state == "UNREACHABLE")
        gone = [i for i, _ in sub.items if isinstance(i, dict) and i.get("event") == "target"]
        assert gone[-1]["target"] == f"udp:dual.test:{port}/127.0.0.1" and gone[-1]["new"] == "UNREACHABLE"
        store = svc.store
        assert store is not None
        await asyncio.to_thread(store.flush)  # the gone target's history is kept under its key
        kept = await asyncio.to_thread(store.samples, f"dual#udp:dual.test:{port}/::1")
        assert kept and all(s.rtt_ms is not None for s in kept)
    finally:
        await svc.close()
        t4.close()
        t6.close()
