"""The AMI port shows the fleet (issue 15): two `sipqualify run` nodes on 127.0.0.2 and .3
sharing 12 static peers through a real etcd and a real PostgreSQL store; node A's AMI port
(on 127.0.0.1, `[ami] fleet_events = true`) is used as an AMI tool uses one Asterisk.

- `SIPpeers` lists all 12 peers, B's with their configured address and the state B stored;
  `SIPshowpeer` of one of B's peers answers, `SIPpeerstatus` and `DeviceStateList` cover all;
  a name no node has is still "not found";
- one of B's peers stops answering: A's AMI session gets its PeerStatus Unreachable (then
  Reachable), as Asterisk sends them, although A never probes it; the answers to actions
  sent back to back keep their order while A reads the store.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..helpers import AmiClient, Postgres, free_port
from .conftest import Etcd
from .fleet import Node, fleet_toml, responder, settled, until

PEERS = [f"a{i:02d}" for i in range(12)]
FREQ = 2
LEASE = 2


async def event(ami: AmiClient, text: str, timeout: float = 40.0) -> str:
    """The first block containing `text` (B's transitions take a few qualify periods to come)."""
    t_end = time.monotonic() + timeout
    while True:
        blk = await ami.block(max(0.1, t_end - time.monotonic()))
        if text in blk:
            return blk


async def test_the_ami_port_of_any_node_lists_and_follows_the_whole_fleet(etcd: Etcd, tmp_path: Path) -> None:
    pg = Postgres()
    nodes: list[Node] = []
    ami: AmiClient | None = None
    try:
        resp, port = await responder("127.0.0.1")
        ami_port = free_port()
        for i in (2, 3):
            ip, name = f"127.0.0.{i}", f"n{i}"
            conf = fleet_toml(ip, name, etcd.url, LEASE, PEERS, "127.0.0.1", port, FREQ, pg.url())
            if i == 2:
                conf += (f'\n[ami]\nenabled = true\nlisten = "127.0.0.1:{ami_port}"\nfleet_events = true\n'
                         '[ami.users.admin]\nsecret = "amp111"\nread = "system,call,reporting"\n'
                         'write = "system,call,reporting"\n')
            nodes.append(Node(tmp_path, ip, name, conf))
        a = nodes[0]
        for n in nodes:
            await n.start()
        for n in nodes:
            await n.ready()
        await until(lambda: settled(nodes, len(PEERS)), 30, "two members sharing all peers")
        _, body = await a.get("/api/v1/peers")
        of_b = sorted(r["name"] for r in body["peers"] if not r["local"])
        of_a = sorted(r["name"] for r in body["peers"] if r["local"])
        assert of_a and of_b and len(of_a) + len(of_b) == len(PEERS)

        async def b_stored_ok() -> bool:
            _, body = await a.get("/api/v1/peers")
            return all(r.get("state") == "OK" for r in body["peers"]) and len(body["peers"]) == len(PEERS)

        await until(b_stored_ok, 30, "every peer OK, B's in the shared store")

        # /metrics?fleet=1: the per-peer series of B's peers too (as B stored them), each peer once
        def ups(text: str) -> dict[str, str]:
            return {ln.split('"')[1]: ln.rsplit(" ", 1)[1] for ln in text.splitlines()
                    if ln.startswith("sipqualify_peer_up{")}

        fleet_metrics = await a.metrics("?fleet=1")
        assert ups(fleet_metrics) == dict.fromkeys(PEERS, "1")
        assert sum(ln.startswith("sipqualify_peer_up{") for ln in fleet_metrics.splitlines()) == len(PEERS)
        assert f'sipqualify_peer_status{{peer="{of_b[0]}",sipqualify_peer_status="OK"}} 1' in fleet_metrics
        assert ups(await a.metrics()) == dict.fromkeys(of_a, "1")  # without it: this node's own
        ami = await AmiClient.login(ami_port, events="off")

        # 1. the lists: every peer of the fleet; sent back to back, answered in order
        await ami.send("Action: SIPpeers\nActionID: l1\n\nAction: Ping\nActionID: p1\n\n"
                       "Action: SIPshowpeer\nActionID: s1\nPeer: " + of_b[0] + "\n\n"
                       "Action: SIPshowpeer\nActionID: s2\nPeer: nobody\n\n")
        listing = await ami.until("Event: PeerlistComplete")
        entries = [blk for blk in listing.split("\r\n\r\n") if "Event: PeerEntry" in blk]
        assert sorted(line.split(": ", 1)[1] for blk in entries for line in blk.split("\r\n")
                      if line.startswith("ObjectName: ")) == PEERS
        remote = next(blk for blk in entries if f"ObjectName: {of_b[0]}\r\n" in blk)
        assert "IPaddress: 127.0.0.1\r\n" in remote and f"IPport: {port}\r\n" in remote, remote
        assert "Status: OK (" in remote and "Dynamic: no" in remote, remote
        assert "ListItems: 12" in listing
        assert "ActionID: p1" not in listing  # the Ping waited for the list read from the store
        pong = await ami.until("ActionID: p1")
        assert "Ping: Pong" in pong and "ActionID: s1" not in pong, pong
        shown = await ami.until("ActionID: s1")
        assert f"ObjectName: {of_b[0]}\r\n" in shown and "Status: OK (" in shown, shown
        assert f"Address-IP: 127.0.0.1\r\nAddress-Port: {port}" in shown, shown
        missing = await ami.until("ActionID: s2")
        assert "Response: Error" in missing and "Message: Peer nobody not found." in missing, missing
        await ami.send("Action: SIPpeerstatus\nActionID: ps\n\nAction: DeviceStateList\nActionID: ds\n\n")
        statuses = await ami.until("Event: SIPpeerstatusComplete")
        assert sorted(ln[len("Peer: SIP/"):] for ln in statuses.split("\r\n") if ln.startswith("Peer: SIP/")) == PEERS
        assert statuses.count("PeerStatus: Reachable") == len(PEERS), statuses
        devices = await ami.until("Event: DeviceStateListComplete")
        assert devices.count("State: NOT_INUSE") == len(PEERS), devices

        # 2. B's transitions reach A's AMI session as PeerStatus (fleet_events)
        await ami.send("Action: Events\nActionID: ev\nEventMask: system\n\n")
        assert "Response: Success" in await ami.until("ActionID: ev")
        x, y = of_b[0], of_a[0]  # B's peer, and one of A's own: each event once
        resp.mute |= {x, y}
        seen: list[str] = []
        while not all(f"Peer: SIP/{p}\r\nPeerStatus: Unreachable" in "".join(seen) for p in (x, y)):
            seen.append(await event(ami, "Event: PeerStatus"))
        resp.mute.clear()
        while not all(f"Peer: SIP/{p}\r\nPeerStatus: Reachable" in "".join(seen) for p in (x, y)):
            seen.append(await event(ami, "Event: PeerStatus"))
        for p in (x, y):
            mine = [blk for blk in seen if f"Peer: SIP/{p}\r\n" in blk]
            assert [blk.split("PeerStatus: ")[1].split("\r\n")[0] for blk in mine] == ["Unreachable", "Reachable"], mine
            assert all("Privilege: system,all" in blk for blk in mine), mine
        code, st = await a.get("/api/v1/status")
        assert st["cluster"]["fleet_events"]["connected"] is True
    finally:
        if ami is not None:
            ami.close()
        for n in nodes:
            await n.stop()
        pg.close()
