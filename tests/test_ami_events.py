"""Unsolicited AMI events against Asterisk 20 chan_sip's bytes (asterisk-differences.md items 1,
4, 5): DeviceStateChange, SIPQualifyPeerDone broadcast, security events for manager logins."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service

from .helpers import api, endpoint, start_ami, wait_for


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


class Session:
    """A raw AMI session whose blocks a reader task collects."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.blocks: list[str] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def login(cls, port: int, user: str = "admin", secret: str = "amp111", events: str = "on") -> Session:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await r.readline()
        s = cls(r, w)
        await s.send(f"Action: Login\nUsername: {user}\nSecret: {secret}\nEvents: {events}\nActionID: l\n\n")
        await wait_for(lambda: any(b.startswith("Response: ") for b in s.blocks))
        return s

    async def _read(self) -> None:
        try:
            while True:
                self.blocks.append((await self.r.readuntil(b"\r\n\r\n")).decode())
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async def send(self, text: str) -> None:
        self.w.write(crlf(text).encode())
        await self.w.drain()

    def events(self, name: str) -> list[str]:
        return [b for b in self.blocks if b.startswith(f"Event: {name}\r\n")]

    def close(self) -> None:
        self.task.cancel()
        self.w.close()


async def flapping_peer(tmp_path: Path) -> tuple[Service, int, DemoEndpoint, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    t, ep = await loop.create_datagram_endpoint(lambda: DemoEndpoint(200, "OK"), local_addr=("127.0.0.1", 0))
    port = int(t.get_extra_info("sockname")[1])
    svc, ami_port = await start_ami(tmp_path, {"flap": {"host": "127.0.0.1", "port": port, "qualify": 500,
                                                    "qualifyfreq": 1}})
    return svc, ami_port, ep, t


def dsc(state: str) -> str:
    return crlf(f"Event: DeviceStateChange\nPrivilege: call,all\nDevice: SIP/flap\nState: {state}\n\n")


async def test_device_state_change_on_every_reachability_change(tmp_path: Path) -> None:
    svc, ami_port, ep, t = await flapping_peer(tmp_path)
    try:
        call = await Session.login(ami_port)
        system_only = await Session.login(ami_port, events="system")
        await wait_for(lambda: svc.engine.peer("flap").state == "OK")  # type: ignore[union-attr]
        ep.status = 0  # the peer goes silent
        await wait_for(lambda: dsc("UNAVAILABLE") in call.blocks)
        ep.status = 200
        await call.send("Action: SIPqualifypeer\nPeer: flap\nActionID: q\n\n")
        await wait_for(lambda: dsc("NOT_INUSE") in call.blocks[call.blocks.index(dsc("UNAVAILABLE")):])
        # after PeerStatus, as chan_sip (manager_event, then ast_devstate_changed)
        down = call.blocks.index(dsc("UNAVAILABLE"))
        assert "PeerStatus: Unreachable\r\n" in call.blocks[down - 1]
        up = call.blocks.index(dsc("NOT_INUSE"), down)
        assert "PeerStatus: Reachable\r\n" in call.blocks[up - 1]
        # one per change: no repeats while the state stays
        assert call.events("DeviceStateChange").count(dsc("UNAVAILABLE")) == 1
        # a session whose event mask leaves `call` out gets PeerStatus but no DeviceStateChange
        await wait_for(lambda: len(system_only.events("PeerStatus")) >= 2)
        assert system_only.events("DeviceStateChange") == []
        call.close()
        system_only.close()
    finally:
        await svc.close()
        t.close()


async def test_sipqualifypeerdone_broadcast_for_ami_and_cli_qualifies(tmp_path: Path) -> None:
    t, port = await endpoint(200)
    svc, ami_port = await start_ami(tmp_path, {"forced-ok": {"host": "127.0.0.1", "port": port, "qualify": "yes"}})
    try:
        asker = await Session.login(ami_port)
        other = await Session.login(ami_port)
        quiet = await Session.login(ami_port, events="system")
        await asker.send("Action: SIPqualifypeer\nPeer: forced-ok\nActionID: qualify-forced-ok\n\n")
        done = crlf("Event: SIPQualifyPeerDone\nPrivilege: call,all\nPeer: forced-ok\n"
                    "ActionID: qualify-forced-ok\n\n")
        await wait_for(lambda: done in other.blocks and done in asker.blocks)
        reply = asker.blocks.index(crlf("Response: Success\nActionID: qualify-forced-ok\n"
                                        "Message: SIP peer found - will qualify\n\n"))
        assert asker.blocks.index(done) == reply + 1  # at once, after the reply (as Asterisk)
        # the CLI's `sip qualify peer` goes through the HTTP API: no ActionID
        status, _ = await api(svc, "POST", "/api/v1/peers/forced-ok/qualify?wait=0")
        assert status == 200
        bare = crlf("Event: SIPQualifyPeerDone\nPrivilege: call,all\nPeer: forced-ok\n\n")
        await wait_for(lambda: bare in other.blocks and bare in asker.blocks)
        assert quiet.events("SIPQualifyPeerDone") == []
        # an unknown peer: an error, no event
        n = len(other.events("SIPQualifyPeerDone"))
        await asker.send("Action: SIPqualifypeer\nPeer: nope\nActionID: q3\n\n")
        await wait_for(lambda: any("ActionID: q3" in b for b in asker.blocks))
        assert len(other.events("SIPQualifyPeerDone")) == n
        for s in (asker, other, quiet):
            s.close()
    finally:
        await svc.close()
        t.close()


def masked(block: str) -> str:
    """The reference's masking: times, session id, ports."""
    block = re.sub(r"(EventTV|SessionTV): (?!1970)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", r"\1: TV", block)
    block = re.sub(r"SessionID: 0x[0-9a-f]+", "SessionID: 0xID", block)
    return re.sub(r"/TCP/127\.0\.0\.1/\d+", "/TCP/127.0.0.1/PORT", block)


async def test_security_events_for_manager_logins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")  # the reference's zone: the epoch prints as 1970-01-01T00:00:00.000+0000
    time.tzset()
    t, port = await endpoint(200)
    svc, ami_port = await start_ami(tmp_path, {"p": {"host": "127.0.0.1", "port": port, "qualify": "no"}})
    try:
        watcher = await Session.login(ami_port)
        # SuccessfulAuth: to every security session, the new one included (after FullyBooted)
        await wait_for(lambda: len(watcher.events("SuccessfulAuth")) == 1)
        ok = watcher.events("SuccessfulAuth")[0]
        assert masked(ok) == crlf(
            "Event: SuccessfulAuth\nPrivilege: security,all\nEventTV: TV\nSeverity: Informational\n"
            "Service: AMI\nEventVersion: 1\nAccountID: admin\nSessionID: 0xID\n"
            "LocalAddress: IPV4/TCP/127.0.0.1/PORT\nRemoteAddress: IPV4/TCP/127.0.0.1/PORT\n"
            "UsingPassword: 0\nSessionTV: TV\n\n")
        assert f"LocalAddress: IPV4/TCP/127.0.0.1/{ami_port}\r\n" in ok
        local = watcher.w.get_extra_info("sockname")
        assert f"RemoteAddress: IPV4/TCP/127.0.0.1/{local[1]}\r\n" in ok
        tv = re.findall(r"(?:EventTV|SessionTV): (\S+)", ok)
        assert tv[0] == tv[1]  # SessionTV: the login instant
        assert [b.split("\r\n")[0] for b in watcher.blocks[:3]] == [
            "Response: Success", "Event: FullyBooted", "Event: SuccessfulAuth"]
        second = await Session.login(ami_port, events="system")  # no `security` in its mask
        await wait_for(lambda: len(watcher.events("SuccessfulAuth")) == 2)
        assert second.events("SuccessfulAuth") == []
        # wrong secret: InvalidPassword, EventVersion 2, SessionTV 1970 (not logged in)
        bad = await Session.login(ami_port, secret="wrong")
        await wait_for(lambda: len(watcher.events("InvalidPassword")) == 1)
        assert masked(watcher.events("InvalidPassword")[0]) == crlf(
            "Event: InvalidPassword\nPrivilege: security,all\nEventTV: TV\nSeverity: Error\n"
            "Service: AMI\nEventVersion: 2\nAccountID: admin\nSessionID: 0xID\n"
            "LocalAddress: IPV4/TCP/127.0.0.1/PORT\nRemoteAddress: IPV4/TCP/127.0.0.1/PORT\n"
            "SessionTV: 1970-01-01T00:00:00.000+0000\n\n")
        # unknown user: InvalidAccountID (manager.c report_invalid_user), EventVersion 1
        ghost = await Session.login(ami_port, user="ghost")
        await wait_for(lambda: len(watcher.events("InvalidAccountID")) == 1)
        assert masked(watcher.events("InvalidAccountID")[0]) == crlf(
            "Event: InvalidAccountID\nPrivilege: security,all\nEventTV: TV\nSeverity: Error\n"
            "Service: AMI\nEventVersion: 1\nAccountID: ghost\nSessionID: 0xID\n"
            "LocalAddress: IPV4/TCP/127.0.0.1/PORT\nRemoteAddress: IPV4/TCP/127.0.0.1/PORT\n"
            "SessionTV: 1970-01-01T00:00:00.000+0000\n\n")
        ids = {re.search(r"SessionID: (\S+)", b).group(1)  # type: ignore[union-attr]
               for b in watcher.blocks if "SessionID" in b}
        assert len(ids) == 4  # one per session
        for s in (watcher, second, bad, ghost):
            s.close()
    finally:
        await svc.close()
        t.close()
        monkeypatch.undo()
        time.tzset()
