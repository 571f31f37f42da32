"""AMI port: byte-level blocks against the observed Asterisk 20 transcripts (asterisk-observed.md
§8), the protocol's error paths, and panoramisk (a real AMI client library from PyPI)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from sipqualify.api.ami import (
    load_manager_conf,
    peer_entry,
    peerstatus_event,
    peerstatus_list,
    security_addr,
    show_peer,
    sippeers_list,
)
from sipqualify.qualify.events import StateChanged
from sipqualify.qualify.order import container_order

from .helpers import endpoint, free_port, phase2, start_ami, view, wait_for

DATA = Path(__file__).parent / "data"


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def test_sipshowpeer_block_byte_for_byte() -> None:
    v = view("ok-yes", 15070, 2000, 1)
    assert show_peer(v, "show-ok-yes") == crlf((DATA / "ami_sipshowpeer_ok_yes.txt").read_text())


def test_sippeers_list_byte_for_byte() -> None:
    views = sorted(phase2(), key=lambda v: v.name)
    assert sippeers_list(views, "peers-1") == crlf((DATA / "ami_sippeers.txt").read_text())


def test_sippeerstatus_byte_for_byte() -> None:
    """The captured list, peers in Asterisk's container order derived from the config order."""
    views = container_order(phase2(), lambda v: v.name)
    assert peerstatus_list(views, "pstatus-1") == crlf((DATA / "ami_sippeerstatus.txt").read_text())


def test_peerstatus_events_like_asterisk_20() -> None:
    up = StateChanged("ok-yes", "UNREACHABLE", "OK", 1, 2000, 0.001, 0.0, prev_lastms=-1)
    down = StateChanged("flap", "OK", "UNREACHABLE", -1, 500, None, 0.0, prev_lastms=1)
    assert peerstatus_event(up, with_time=False) == crlf(
        "Event: PeerStatus\nPrivilege: system,all\nChannelType: SIP\nPeer: SIP/ok-yes\nPeerStatus: Reachable\n\n")
    assert peerstatus_event(down, with_time=False) == crlf(
        "Event: PeerStatus\nPrivilege: system,all\nChannelType: SIP\nPeer: SIP/flap\nPeerStatus: Unreachable\n"
        "Time: -1\n\n")
    assert "Time: 1\r\n" in peerstatus_event(up, with_time=True)  # the field Asterisk 12+ lost, restored


def test_peer_entry_without_address() -> None:
    v = view("1001", 0, 2000, 0, addr_ip=None, dynamic=True)
    text = peer_entry(v, None)
    assert "IPaddress: -none-\r\nIPport: 0\r\nDynamic: yes\r\n" in text and "ActionID" not in text




class Raw:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def connect(cls, port: int) -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def send(self, text: str) -> None:
        self.w.write(crlf(text).encode())
        await self.w.drain()

    async def block(self, timeout: float = 5.0) -> str:
        return (await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)).decode()


async def test_ami_protocol_and_errors(tmp_path: Path) -> None:
    t, port = await endpoint(200)
    svc, ami_port = await start_ami(tmp_path, {"ok-yes": {"host": "127.0.0.1", "port": port, "qualify": "yes",
                                                      "qualifyfreq": 5}})
    try:
        c = await Raw.connect(ami_port)
        assert await asyncio.wait_for(c.r.readline(), 5) == b"Asterisk Call Manager/9.0.0\r\n"
        await c.send("Action: SIPpeers\nActionID: x\n\n")
        assert await c.block() == "Response: Error\r\nActionID: x\r\nMessage: Permission denied\r\n\r\n"
        await c.send("Action: Login\nUsername: admin\nSecret: amp111\nEvents: off\nActionID: login-1\n\n")
        assert await c.block() == ("Response: Success\r\nActionID: login-1\r\n"
                                   "Message: Authentication accepted\r\n\r\n")
        await c.send("Action: Frobnicate\nActionID: f\n\n")
        assert await c.block() == ("Response: Error\r\nActionID: f\r\nMessage: Invalid/unknown command: "
                                   "Frobnicate. Use Action: ListCommands to show available commands.\r\n\r\n")
        await c.send("ActionID: nothing\n\n")
        assert "Message: Missing action in request" in await c.block()
        await c.send("Action: Ping\nActionID: p\n\n")
        assert (await c.block()).startswith("Response: Success\r\nActionID: p\r\nPing: Pong\r\nTimestamp: ")
        await wait_for(lambda: svc.engine.peer("ok-yes").state == "OK")  # type: ignore[union-attr]
        await c.send("Action: SIPshowpeer\nPeer: ok-yes\nActionID: s\n\n")
        text = await c.block()
        # the round trip to the endpoint in this process is 1 ms on an idle machine, more on a loaded one
        assert "ObjectName: ok-yes\r\n" in text and re.search(r"\r\nStatus: OK \([1-9][0-9]* ms\)\r\n", text), text
        await c.send("Action: SIPshowpeer\nPeer: nope\nActionID: n\n\n")
        assert await c.block() == "Response: Error\r\nActionID: n\r\nMessage: Peer nope not found.\r\n\r\n"
        await c.send("Action: SIPqualifypeer\nPeer: nope\nActionID: q3\n\n")
        assert await c.block() == "Response: Error\r\nActionID: q3\r\nMessage: Peer not found\r\n\r\n"
        await c.send("Action: Command\nCommand: sip show peers\nActionID: c\n\n")
        text = await c.block()
        assert "Output: Name/username             Host" in text
        assert "Output: 1 sip peers [Monitored: 1 online, 0 offline Unmonitored: 0 online, 0 offline]" in text
        await c.send("Action: Logoff\nActionID: logoff-1\n\n")
        assert await c.block() == "Response: Goodbye\r\nActionID: logoff-1\r\nMessage: Thanks for all the fish.\r\n\r\n"

        # wrong secret and unknown user: same words, same ~1 s delay, connection closed
        for user, secret in (("admin", "wrong"), ("ghost", "amp111"), ("nothere", "x")):
            c = await Raw.connect(ami_port)
            await c.r.readline()
            t0 = time.monotonic()
            await c.send(f"Action: Login\nUsername: {user}\nSecret: {secret}\nActionID: l\n\n")
            assert await c.block() == "Response: Error\r\nActionID: l\r\nMessage: Authentication failed\r\n\r\n"
            assert 0.9 <= time.monotonic() - t0 < 5  # the ~1 s delay, with room for a loaded machine
            assert await asyncio.wait_for(c.r.read(), 10) == b""

        # MD5 challenge login; a read-only user may not run Command
        import hashlib
        c = await Raw.connect(ami_port)
        await c.r.readline()
        await c.send("Action: Challenge\nAuthType: MD5\n\n")
        challenge = (await c.block()).split("Challenge: ")[1].split("\r\n")[0]
        key = hashlib.md5((challenge + "ro").encode()).hexdigest()
        await c.send(f"Action: Login\nAuthType: MD5\nUsername: readonly\nKey: {key}\nEvents: off\n\n")
        assert "Authentication accepted" in await c.block()
        await c.send("Action: Command\nCommand: sip show peers\n\n")
        assert "Permission denied" in await c.block()

        # a line over 1024 bytes, binary junk: disconnected, the daemon keeps qualifying
        c = await Raw.connect(ami_port)
        await c.r.readline()
        c.w.write(b"\x00\xff" * 700)
        await c.w.drain()
        assert await asyncio.wait_for(c.r.read(), 10) == b""
        # authtimeout (2 s here): an idle unauthenticated client is dropped
        c = await Raw.connect(ami_port)
        await c.r.readline()
        assert await asyncio.wait_for(c.r.read(), 5) == b""
        assert svc.ami.counters["auth_failures"] == 3 and svc.ami.counters["oversize_lines"] == 1
        assert svc.engine.peer("ok-yes").state == "OK"  # type: ignore[union-attr]
    finally:
        await svc.close()
        t.close()


@pytest.mark.realpeer
async def test_panoramisk_actions_and_events_with_sipp(tmp_path: Path) -> None:
    """panoramisk from PyPI: login, SIPpeers, SIPshowpeer, and PeerStatus events when a real
    SIPp UAS the test starts and stops goes Unreachable and back Reachable."""
    from panoramisk import Manager

    from .realpeers.peers import Lab, Sipp

    sipp_port = free_port()
    lab = Lab(tmp_path)
    sipp = Sipp(lab, "uas_200.xml", sipp_port)
    svc, ami_port = await start_ami(tmp_path, {"trunk": {"host": "127.0.0.1", "port": sipp_port, "qualify": 500,
                                                     "qualifyfreq": 1}})
    events: list[dict[str, str]] = []
    manager = Manager(host="127.0.0.1", port=ami_port, username="admin", secret="amp111", ping_delay=0)
    manager.register_event("PeerStatus", lambda mgr, msg: events.append(dict(msg)))
    try:
        await manager.connect()
        await wait_for(lambda: svc.engine.peer("trunk").state == "OK")  # type: ignore[union-attr]
        peers = await manager.send_action({"Action": "SIPpeers"})
        entries = [dict(m) for m in peers if m.get("Event") == "PeerEntry"]
        assert entries[0]["ObjectName"] == "trunk" and entries[0]["Status"].startswith("OK (")
        assert entries[0]["IPport"] == str(sipp_port)
        shown = await manager.send_action({"Action": "SIPshowpeer", "Peer": "trunk"})
        assert dict(shown)["QualifyFreq"] == "1000 ms"
        sipp.stop()
        await wait_for(lambda: any(e.get("PeerStatus") == "Unreachable" for e in events), timeout=10)
        sipp.restart()
        await wait_for(lambda: any(e.get("PeerStatus") == "Reachable" for e in events), timeout=20)
        down = next(e for e in events if e["PeerStatus"] == "Unreachable")
        assert (down["Peer"], down["ChannelType"], down["Time"]) == ("SIP/trunk", "SIP", "-1")
    finally:
        manager.close()
        await svc.close()
        lab.close()


def test_manager_user_acl_as_ast_apply_ha(tmp_path: Path) -> None:
    """manager.conf deny/permit per user (acl.c ast_apply_ha): rules in file order, the last one
    that matches wins, default permit; netmask and CIDR forms; an IPv4 rule also judges an
    IPv4-mapped IPv6 client (a dual-stack `::` listener), an IPv6 rule only real IPv6 ones."""
    conf = tmp_path / "manager.conf"
    conf.write_text("[general]\nenabled=yes\n"
                    "[usual]\nsecret=s\ndeny=0.0.0.0/0.0.0.0\npermit=127.0.0.1/255.255.255.255\n"
                    "[order]\nsecret=s\npermit=10.0.0.0/8\ndeny=10.1.0.0/16\n"
                    "[v6]\nsecret=s\ndeny=::/0\npermit=2001:db8::/32\n"
                    "[open]\nsecret=s\n")
    users = load_manager_conf(str(conf)).users
    allowed = {name: [h for h in ("127.0.0.1", "::ffff:127.0.0.1", "10.2.3.4", "10.1.2.3", "::ffff:10.1.2.3",
                                  "::1", "2001:db8::5") if u.allowed_from(h)] for name, u in users.items()}
    assert allowed == {
        "usual": ["127.0.0.1", "::ffff:127.0.0.1", "::1", "2001:db8::5"],  # no IPv6 rule: permitted
        "order": ["127.0.0.1", "::ffff:127.0.0.1", "10.2.3.4", "::1", "2001:db8::5"],  # the later deny wins
        "v6": ["127.0.0.1", "::ffff:127.0.0.1", "10.2.3.4", "10.1.2.3", "::ffff:10.1.2.3", "2001:db8::5"],
        "open": ["127.0.0.1", "::ffff:127.0.0.1", "10.2.3.4", "10.1.2.3", "::ffff:10.1.2.3", "::1", "2001:db8::5"],
    }


def test_security_event_addresses_as_ast_json_ipaddr() -> None:
    """main/json.c ast_json_ipaddr: family/transport/address/port, IPv6 unbracketed, an
    IPv4-mapped address as the IPv4 one (netsock2.c)."""
    assert security_addr(("127.0.0.1", 5038)) == "IPV4/TCP/127.0.0.1/5038"
    assert security_addr(("127.0.0.1", 5060), "udp") == "IPV4/UDP/127.0.0.1/5060"
    assert security_addr(("::ffff:192.0.2.1", 5038)) == "IPV4/TCP/192.0.2.1/5038"
    assert security_addr(("2001:db8::1", 5060), "tcp") == "IPV6/TCP/2001:db8::1/5060"
