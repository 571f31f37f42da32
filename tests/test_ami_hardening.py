"""AMI hardening (hardening issue, item 7): one source address cannot hold every
unauthenticated slot, unauthenticated clients time out however they behave, no value can
inject an AMI header or message, and no header (MD5 keys included) can crash a session."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from pathlib import Path
from typing import Any

from sipqualify.api.ami import block
from sipqualify.service import Service, ServiceOptions

from .test_registrar import CONF as REGISTRAR_CONF
from .test_registrar import Phone
from .test_service import free_port, wait_for

MANAGER_CONF = """[general]
enabled = yes
port = {port}
bindaddr = 0.0.0.0
{extra}

[admin]
secret = amp111
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
"""

FAILED = "Response: Error\r\nActionID: l\r\nMessage: Authentication failed\r\n\r\n"
EVIL_UA = "Evil\nEvent: PeerStatus\nPeer: SIP/1001\nPeerStatus: Unreachable"


async def start(tmp_path: Path, extra: str = "") -> tuple[Service, int, tuple[str, int]]:
    """A daemon with the registrar's sip.conf (dynamic 1001/1002) and the AMI port."""
    sip_port, ami_port = free_port(), free_port(socket.SOCK_STREAM)
    (tmp_path / "manager.conf").write_text(MANAGER_CONF.format(port=ami_port, extra=extra))
    conf = tmp_path / "sip.conf"
    conf.write_text(REGISTRAR_CONF.format(port=sip_port, md5=hashlib.md5(b"1002:pbx.test:pw2").hexdigest()))
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"),
                                 manager_conf=str(tmp_path / "manager.conf")))
    await svc.start()
    return svc, ami_port, ("127.0.0.1", sip_port)


class Conn:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(r, w)

    async def send(self, data: str | bytes) -> None:
        self.w.write(data.replace("\n", "\r\n").encode() if isinstance(data, str) else data)
        await self.w.drain()

    async def block(self) -> str:
        return (await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), 10)).decode()

    async def login(self) -> None:
        assert await asyncio.wait_for(self.r.readline(), 10) == b"Asterisk Call Manager/9.0.0\r\n"
        await self.send("Action: Login\nUsername: admin\nSecret: amp111\nEvents: off\nActionID: in\n\n")
        assert await self.block() == "Response: Success\r\nActionID: in\r\nMessage: Authentication accepted\r\n\r\n"

    def close(self) -> None:
        self.w.close()


async def register_with_useragent(phone: Phone, t: Any, server: tuple[str, int], useragent: str) -> None:
    """Phone.register sends `User-Agent: TestPhone/1.0`; swap it on the wire for `useragent`."""
    class Rewriting:
        def sendto(self, data: bytes, addr: Any) -> None:
            t.sendto(data.replace(b"User-Agent: TestPhone/1.0", b"User-Agent: " + useragent.encode()), addr)

        def get_extra_info(self, name: str) -> Any:
            return t.get_extra_info(name)

    phone.transport = Rewriting()
    try:
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
    finally:
        phone.transport = t


def lines_of(text: str) -> list[str]:
    """Lines as the most lenient AMI reader splits them (Asterisk itself accepts a bare LF)."""
    return [ln for ln in re.split(r"\r\n|\r|\n", text) if ln]


# ------------------------------------------------------------------ (d) no injection


async def test_sipshowpeer_useragent_with_bare_lf_injects_nothing(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, ami_port, server = await start(tmp_path)
    c = await Conn.open(ami_port)
    try:
        await register_with_useragent(phone, t, server, EVIL_UA)
        assert svc.engine is not None
        v = svc.view(svc.engine.peer("1001"))  # type: ignore[arg-type]
        assert v.useragent == EVIL_UA  # the hostile value really reached the peer
        await c.login()
        await c.send("Action: SIPshowpeer\nPeer: 1001\nActionID: s\n\n")
        text = await c.block()
        lines = lines_of(text)
        assert [ln for ln in lines if ln.startswith("SIP-Useragent:")] == [
            r"SIP-Useragent: Evil\nEvent: PeerStatus\nPeer: SIP/1001\nPeerStatus: Unreachable"]
        assert not any(ln.startswith(("Event:", "Peer:", "PeerStatus:")) for ln in lines)
        assert text.count("\r\n") == len(lines) + 1 and "\n" not in text.replace("\r\n", "")
        # nothing was queued behind it: the next block is the answer to the next action
        await c.send("Action: Ping\nActionID: p\n\n")
        assert (await c.block()).startswith("Response: Success\r\nActionID: p\r\nPing: Pong\r\n")

        # the same value through `Command`: one Output line, nothing injected
        await c.send("Action: Command\nCommand: sip show peer 1001\nActionID: c\n\n")
        lines = lines_of(await c.block())
        assert [ln for ln in lines if "Useragent" in ln] == [
            r"Output:   Useragent    : Evil\nEvent: PeerStatus\nPeer: SIP/1001\nPeerStatus: Unreachable"]
        assert all(ln.startswith(("Response:", "ActionID:", "Message:", "Output:")) for ln in lines)
    finally:
        c.close()
        await svc.close()
        t.close()


def test_block_escapes_every_control_character() -> None:
    text = block(("Event", "X"), ("A\r\nB", "1\r2\n3\x004\x1b[31m5\x7f6\x857\u2028"))
    assert text == "Event: X\r\nA\\r\\nB: 1\\r2\\n3\\x004\\x1b[31m5\\x7f6\\x857\\u2028\r\n\r\n"
    normal = block(("Response", "Success"), ("Message", "Peer é/ü: 1 ms (ok) \\ \"x\""))
    assert normal == "Response: Success\r\nMessage: Peer é/ü: 1 ms (ok) \\ \"x\"\r\n\r\n"


# ------------------------------------------------------------------ (a)/(c) per-address cap


async def test_one_address_cannot_fill_authlimit(tmp_path: Path) -> None:
    """50 idle connections from 127.0.0.2 (Asterisk's default authlimit) and the manager user
    still logs in from 127.0.0.1; the attacker's surplus connections are refused."""
    svc, ami_port, _ = await start(tmp_path)
    assert svc.ami is not None
    held: list[Conn] = []
    try:
        got_banner = 0
        for _ in range(50):
            c = await Conn.open(ami_port, "127.0.0.2")
            held.append(c)
            # the banner or EOF: the server has decided about this connection before the next
            first = await asyncio.wait_for(c.r.readline(), 10)
            got_banner += first == b"Asterisk Call Manager/9.0.0\r\n"
        assert 0 < got_banner < 50
        assert svc.ami.counters["refused_authlimit_per_ip"] == 50 - got_banner
        real = await Conn.open(ami_port, "127.0.0.1")
        await real.login()
        real.close()
    finally:
        for c in held:
            c.close()
        await svc.close()


async def test_authlimit_per_ip_from_manager_conf(tmp_path: Path) -> None:
    svc, ami_port, _ = await start(tmp_path, "authlimit_per_ip = 2\nauthlimit = 3")
    assert svc.ami is not None and svc.ami.config.authlimit_per_ip == 2
    held: list[Conn] = []
    try:
        for expect in (b"Asterisk Call Manager/9.0.0\r\n", b"Asterisk Call Manager/9.0.0\r\n", b""):
            held.append(await Conn.open(ami_port, "127.0.0.2"))
            assert await asyncio.wait_for(held[-1].r.readline(), 10) == expect
        # the global authlimit still applies across addresses
        held.append(await Conn.open(ami_port, "127.0.0.3"))
        assert await asyncio.wait_for(held[-1].r.readline(), 10) == b"Asterisk Call Manager/9.0.0\r\n"
        held.append(await Conn.open(ami_port, "127.0.0.1"))
        assert await asyncio.wait_for(held[-1].r.readline(), 10) == b""
        assert svc.ami.counters["refused_authlimit"] == 1
        # a freed slot is usable again: the per-address count follows closed connections
        held[0].close()
        await wait_for(lambda: svc.ami.unauthenticated() == 2)  # type: ignore[union-attr]
        real = await Conn.open(ami_port, "127.0.0.1")
        await real.login()
        real.close()
    finally:
        for c in held:
            c.close()
        await svc.close()


# ------------------------------------------------------------------ (b) timeouts


async def test_authtimeout_drops_a_client_that_trickles_bytes(tmp_path: Path) -> None:
    """The timeout runs from the connection, not from the last byte: a client that keeps
    sending a Login it never finishes is dropped after authtimeout like an idle one."""
    svc, ami_port, _ = await start(tmp_path, "authtimeout = 1")
    assert svc.ami is not None
    c = await Conn.open(ami_port)
    try:
        assert await asyncio.wait_for(c.r.readline(), 10) == b"Asterisk Call Manager/9.0.0\r\n"
        payload = b"Action: Login\r\nUsername: admin\r\n" + b"X-Pad: y\r\n" * 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        closed = False
        for i in range(len(payload)):
            assert loop.time() < deadline, "a trickling client outlived authtimeout"
            try:
                await c.send(payload[i:i + 1])
                closed = await asyncio.wait_for(c.r.read(), 0.05) == b""
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
            if closed:
                break
        assert closed
        assert svc.ami.counters["auth_timeouts"] == 1
    finally:
        c.close()
        await svc.close()
