"""Unsolicited AMI events against Asterisk 20 chan_sip's bytes (asterisk-differences.md items 1,
4, 5): DeviceStateChange, SIPQualifyPeerDone broadcast, security events for manager logins and
for the registrar's REGISTERs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service
from sipqualify.sip.digest import authorization, parse_auth_header

from .helpers import Phone, api, endpoint, free_port, start_ami, start_registrar, wait_for


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


def masked(block: str, ports: bool = True) -> str:
    """The reference's masking: times, session id, ports (unless `ports` is False)."""
    block = re.sub(r"(EventTV|SessionTV): (?!1970)\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", r"\1: TV", block)
    block = re.sub(r"SessionID: 0x[0-9a-f]+", "SessionID: 0xID", block)
    return re.sub(r"/TCP/127\.0\.0\.1/\d+", "/TCP/127.0.0.1/PORT", block) if ports else block


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The reference's zone: the epoch prints as 1970-01-01T00:00:00.000+0000."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@contextlib.asynccontextmanager
async def ami_daemon(tmp_path: Path) -> AsyncIterator[int]:
    """A daemon with the AMI port (MANAGER_CONF) and one unqualified peer: its AMI port."""
    t, port = await endpoint(200)
    svc, ami_port = await start_ami(tmp_path, {"p": {"host": "127.0.0.1", "port": port, "qualify": "no"}})
    try:
        yield ami_port
    finally:
        await svc.close()
        t.close()


@pytest.mark.usefixtures("utc")
async def test_security_events_for_manager_logins(tmp_path: Path) -> None:
    async with ami_daemon(tmp_path) as ami_port:
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


# Expected blocks read from Asterisk 20's source, not captured from a running Asterisk:
# main/manager.c authenticate() and report_failed_challenge_response() / report_failed_acl(),
# rendered by main/security_events.c security_event_to_ami_blob() (required IEs, then optional
# ones, in the `sec_events` table's order; an IE left NULL is left out).
# ChallengeResponseFailed: AccountID is the session's user name, still empty before a login
# succeeded; Response is the Key as sent, ExpectedResponse the MD5 manager.c computed.
AMI_CHALLENGE_RESPONSE_FAILED = (
    "Event: ChallengeResponseFailed\nPrivilege: security,all\nEventTV: TV\nSeverity: Error\nService: AMI\n"
    "EventVersion: 1\nAccountID: \nSessionID: 0xID\nLocalAddress: IPV4/TCP/127.0.0.1/PORT\n"
    "RemoteAddress: IPV4/TCP/127.0.0.1/PORT\nChallenge: {challenge}\nResponse: {key}\n"
    "ExpectedResponse: {expected}\nSessionTV: 1970-01-01T00:00:00.000+0000\n\n")
# FailedACL: manager.c sets no ACLName
AMI_FAILED_ACL = (
    "Event: FailedACL\nPrivilege: security,all\nEventTV: TV\nSeverity: Error\nService: AMI\n"
    "EventVersion: 1\nAccountID: nothere\nSessionID: 0xID\nLocalAddress: IPV4/TCP/127.0.0.1/PORT\n"
    "RemoteAddress: IPV4/TCP/127.0.0.1/PORT\nSessionTV: 1970-01-01T00:00:00.000+0000\n\n")


async def failed_login(ami_port: int, lines: str, challenge: bool = False) -> tuple[Session, str]:
    """A session that sends `lines` (after an MD5 Challenge if asked): (session, its challenge)."""
    r, w = await asyncio.open_connection("127.0.0.1", ami_port)
    await r.readline()
    s = Session(r, w)
    got = ""
    if challenge:
        await s.send("Action: Challenge\nAuthType: MD5\nActionID: c\n\n")
        await wait_for(lambda: any("Challenge: " in b for b in s.blocks))
        got = re.search(r"Challenge: (\S+)", s.blocks[-1]).group(1)  # type: ignore[union-attr]
    await s.send(lines)
    return s, got


@pytest.mark.usefixtures("utc")
async def test_security_events_for_md5_and_acl_login_failures(tmp_path: Path) -> None:
    async with ami_daemon(tmp_path) as ami_port:
        watcher = await Session.login(ami_port)
        # a wrong MD5 Key (here: the right one in capitals, which manager.c's strcmp refuses)
        md5, challenge = await failed_login(ami_port, "", challenge=True)
        want = hashlib.md5((challenge + "amp111").encode()).hexdigest()
        await md5.send(f"Action: Login\nAuthType: MD5\nUsername: admin\nKey: {want.upper()}\nActionID: l\n\n")
        await wait_for(lambda: len(watcher.events("ChallengeResponseFailed")) == 1)
        assert masked(watcher.events("ChallengeResponseFailed")[0]) == crlf(AMI_CHALLENGE_RESPONSE_FAILED.format(
            challenge=challenge, key=want.upper(), expected=want))
        await wait_for(lambda: any(b.startswith("Response: Error") for b in md5.blocks))
        assert crlf("Response: Error\nActionID: l\nMessage: Authentication failed\n\n") in md5.blocks
        # the right password from an address the user's deny/permit refuses: FailedACL, and the
        # same reply as any other failure
        acl, _ = await failed_login(ami_port, "Action: Login\nUsername: nothere\nSecret: x\nActionID: a\n\n")
        await wait_for(lambda: len(watcher.events("FailedACL")) == 1)
        assert masked(watcher.events("FailedACL")[0]) == crlf(AMI_FAILED_ACL)
        await wait_for(lambda: any(b.startswith("Response: Error") for b in acl.blocks))
        assert crlf("Response: Error\nActionID: a\nMessage: Authentication failed\n\n") in acl.blocks
        # nothing else was reported for them (no InvalidPassword besides), and a Login with no
        # Username, an MD5 Login with no Key or before any Challenge report nothing (manager.c)
        quiet = [await failed_login(ami_port, "Action: Login\nSecret: amp111\n\n"),
                 await failed_login(ami_port, "Action: Login\nAuthType: MD5\nUsername: admin\n\n", challenge=True),
                 await failed_login(ami_port, "Action: Login\nAuthType: MD5\nUsername: admin\nKey: 00\n\n")]
        for q, _ in quiet:
            await wait_for(lambda q=q: any(b.startswith("Response: Error") for b in q.blocks))  # type: ignore[misc]
        assert [b.split("\r\n")[0] for b in watcher.blocks if "security,all" in b] == [
            "Event: SuccessfulAuth", "Event: ChallengeResponseFailed", "Event: FailedACL"]
        for s in (watcher, md5, acl, *(q for q, _ in quiet)):
            s.close()


# chan_sip's security events for REGISTER, read from Asterisk 20's source (not captured):
# channels/sip/security_events.c sip_report_security_event() maps register_verify()'s result
# (channels/chan_sip.c, with alwaysauthreject=yes): AUTH_NOT_FOUND -> sip_report_invalid_peer
# (InvalidAccountID, for the 401 and for the 403 alike), AUTH_PEER_NOT_DYNAMIC ->
# sip_report_failed_acl("peer_not_dynamic"), AUTH_CHALLENGE_SENT -> sip_report_chal_sent,
# AUTH_SECRET_FAILED (a wrong digest response) -> sip_report_inval_password, AUTH_USERNAME_MISMATCH
# -> sip_report_failed_challenge_response(digest username, the peer's username), AUTH_SUCCESSFUL ->
# sip_report_auth_success(UsingPassword 1 for a peer with a secret). Rendered by
# main/security_events.c: no SessionTV (chan_sip sets none), addresses as main/json.c
# ast_json_ipaddr (`IPV4/UDP/ip/port`), LocalAddress chan_sip's own (p->ourip), RemoteAddress the
# REGISTER's source (p->sa), AccountID the To user (p->exten).
SIP_HEAD = ("Event: {event}\nPrivilege: security,all\nEventTV: TV\nSeverity: {severity}\nService: SIP\n"
            "EventVersion: {version}\nAccountID: {account}\nSessionID: 0xID\n"
            "LocalAddress: IPV4/UDP/127.0.0.1/{sip}\nRemoteAddress: IPV4/UDP/127.0.0.1/{phone}\n")
SIP_INVALID_ACCOUNT = SIP_HEAD.format(event="InvalidAccountID", severity="Error", version=1, account="ghost",
                                      sip="{sip}", phone="{phone}") + "\n"
SIP_FAILED_ACL = SIP_HEAD.format(event="FailedACL", severity="Error", version=1, account="trunk",
                                 sip="{sip}", phone="{phone}") + "ACLName: peer_not_dynamic\n\n"
SIP_CHALLENGE_SENT = SIP_HEAD.format(event="ChallengeSent", severity="Informational", version=1, account="1001",
                                     sip="{sip}", phone="{phone}") + "Challenge: {nonce}\n\n"
SIP_INVALID_PASSWORD = (SIP_HEAD.format(event="InvalidPassword", severity="Error", version=2, account="1001",
                                        sip="{sip}", phone="{phone}")
                        + "Challenge: {nonce}\nReceivedChallenge: {nonce}\nReceivedHash: {hash}\n\n")
SIP_CHALLENGE_RESPONSE_FAILED = (SIP_HEAD.format(event="ChallengeResponseFailed", severity="Error", version=1,
                                                 account="1001", sip="{sip}", phone="{phone}")
                                 + "Challenge: {nonce}\nResponse: 1002\nExpectedResponse: \n\n")
SIP_SUCCESSFUL_AUTH = SIP_HEAD.format(event="SuccessfulAuth", severity="Informational", version=1, account="1001",
                                      sip="{sip}", phone="{phone}") + "UsingPassword: 1\n\n"


async def test_security_events_for_registers(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    ports = {"phone": t.get_extra_info("sockname")[1]}
    svc, server = await start_registrar(tmp_path, ami_port := free_port(socket.SOCK_STREAM))
    ports["sip"] = server[1]
    uri = f"sip:127.0.0.1:{server[1]}"
    try:
        watcher = await Session.login(ami_port)
        expected: list[str] = []

        async def register(user: str, password: str | None = None, as_user: str | None = None) -> tuple[str, str]:
            """A REGISTER, then (with a password) its authenticated retry: (nonce, digest response)."""
            first = await phone.register(server, user)
            assert first.status == 401
            nonce = parse_auth_header(first.headers.get_all("WWW-Authenticate")[0])[1]["nonce"]
            if password is None:
                return nonce, ""
            auth = authorization(first.headers.get_all("WWW-Authenticate")[0], as_user or user, password,
                                 "REGISTER", uri)
            await phone.register(server, user, auth=auth, cseq=2)
            return nonce, parse_auth_header(auth)[1]["response"]

        # an unknown user: InvalidAccountID for the 401 and again for the 403
        await register("ghost", "nope")
        expected += [SIP_INVALID_ACCOUNT] * 2
        # a peer that is not host=dynamic: FailedACL peer_not_dynamic, twice too
        await register("trunk", "x")
        expected += [SIP_FAILED_ACL] * 2
        # a wrong password: ChallengeSent, then InvalidPassword quoting the nonce and the hash
        nonce, digest = await register("1001", "wrong")
        expected += [SIP_CHALLENGE_SENT.format(nonce=nonce, sip="{sip}", phone="{phone}"),
                     SIP_INVALID_PASSWORD.format(nonce=nonce, hash=digest, sip="{sip}", phone="{phone}")]
        # 1002's credentials in a REGISTER for 1001: ChallengeResponseFailed
        nonce, _ = await register("1001", "pw2", as_user="1002")
        expected += [SIP_CHALLENGE_SENT.format(nonce=nonce, sip="{sip}", phone="{phone}"),
                     SIP_CHALLENGE_RESPONSE_FAILED.format(nonce=nonce, sip="{sip}", phone="{phone}")]
        # the right one: ChallengeSent, SuccessfulAuth (after the PeerStatus Registered)
        nonce, _ = await register("1001", "s3cret")
        expected += [SIP_CHALLENGE_SENT.format(nonce=nonce, sip="{sip}", phone="{phone}"), SIP_SUCCESSFUL_AUTH]

        def sip_events() -> list[str]:
            return [b for b in watcher.blocks if "Service: SIP\r\n" in b]

        await wait_for(lambda: len(sip_events()) == len(expected))
        # field by field, in order; the ports are the SIP socket's and the phone's
        assert [masked(b, ports=False) for b in sip_events()] == [crlf(e.format(**ports)) for e in expected]
        # one dialog (the phone keeps its Call-ID), one SessionID, unlike the AMI sessions'
        sids = {re.search(r"SessionID: (\S+)", b).group(1) for b in sip_events()}  # type: ignore[union-attr]
        assert len(sids) == 1 and re.fullmatch(r"0x7f[0-9a-f]{10}", sids.pop())
        registered = next(i for i, b in enumerate(watcher.blocks) if "PeerStatus: Registered" in b)
        assert watcher.blocks.index(sip_events()[-1]) > registered
        watcher.close()
    finally:
        await svc.close()
        t.close()


async def test_device_state_change_on_register_and_unregister(tmp_path: Path) -> None:
    """chan_sip calls ast_devstate_changed() when a REGISTER stores a binding and when it goes:
    SIP/1001 becomes NOT_INUSE (an address, no calls) then UNAVAILABLE (no address), each after
    its PeerStatus; the device-state cache drops the repeat the first qualify would cause."""
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path, ami_port := free_port(socket.SOCK_STREAM))
    try:
        watcher = await Session.login(ami_port)
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
        await wait_for(lambda: svc.engine is not None and svc.engine.peer("1001").state == "OK")  # type: ignore[union-attr]
        assert (await phone.register_auth(server, "1001", "s3cret", expires=0)).status == 200
        dsc = "Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: SIP/1001\r\nState: {}\r\n\r\n"
        await wait_for(lambda: dsc.format("UNAVAILABLE") in watcher.blocks)
        # the next poke finds no address and makes the peer UNKNOWN, silently: no DeviceStateChange
        await wait_for(lambda: svc.engine.peer("1001").state == "UNKNOWN")  # type: ignore[union-attr]
        await watcher.send("Action: Ping\nActionID: barrier\n\n")
        await wait_for(lambda: any("ActionID: barrier" in b for b in watcher.blocks))
        mine = [b for b in watcher.blocks if "SIP/1001\r\n" in b and ("PeerStatus: Reg" in b or "PeerStatus: Unreg" in b
                                                                    or b.startswith("Event: DeviceStateChange"))]
        assert [b.split("\r\n")[4] if b.startswith("Event: PeerStatus") else b for b in mine] == [
            "PeerStatus: Registered", dsc.format("NOT_INUSE"), "PeerStatus: Unregistered", dsc.format("UNAVAILABLE")]
        watcher.close()
    finally:
        await svc.close()
        t.close()
