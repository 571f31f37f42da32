"""AMI hardening (hardening issue, item 7): one source address cannot hold every
unauthenticated slot, unauthenticated clients time out however they behave, no value can
inject an AMI header or message, and no header (MD5 keys included) can crash a session."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from sipqualify.api.ami import ACTIONS, AmiSession, block
from sipqualify.service import Service, ServiceOptions

from .helpers import REGISTRAR_CONF, Phone, free_port, register_with_useragent, wait_for

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
        v = svc.model.view(svc.engine.peer("1001"))  # type: ignore[arg-type]
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


# ------------------------------------------------------------------ (e) no crash on any header


async def test_md5_login_with_non_ascii_key_is_a_failed_login(tmp_path: Path) -> None:
    svc, ami_port, _ = await start(tmp_path)
    assert svc.ami is not None
    try:
        for key in ("clé-ünïcödé", "\udcff"):
            c = await Conn.open(ami_port)
            await c.r.readline()
            await c.send("Action: Challenge\nAuthType: MD5\nActionID: ch\n\n")
            assert "Challenge: " in await c.block()
            await c.send(b"Action: Login\r\nAuthType: MD5\r\nUsername: admin\r\nKey: "
                         + key.encode("utf-8", "surrogateescape") + b"\r\nActionID: l\r\n\r\n")
            assert await c.block() == FAILED  # Asterisk's bytes for any failed login
            assert await asyncio.wait_for(c.r.read(), 10) == b""
            c.close()
        assert svc.ami.counters["auth_failures"] == 2 and svc.ami.counters["action_errors"] == 0
    finally:
        await svc.close()


async def test_undecodable_bytes_in_any_header_keep_the_session(tmp_path: Path) -> None:
    svc, ami_port, _ = await start(tmp_path)
    assert svc.ami is not None
    c = await Conn.open(ami_port)
    try:
        await c.login()
        junk = b"\xff\xfe\x00\x1b[2J\xc3"
        for action in (b"SIPshowpeer", b"Command", b"Events", b"SIPpeerstatus", b"SIPqualifypeer", junk):
            await c.send(b"Action: " + action + b"\r\nPeer: " + junk + b"\r\nCommand: sip show peer " + junk
                         + b"\r\nEventMask: " + junk + b"\r\nActionID: " + junk + b"\r\n\r\n")
            text = await c.block()
            assert text.startswith("Response: ")
            assert "\x1b" not in text and "\x00" not in text
        await c.send("Action: Ping\nActionID: p\n\n")
        assert (await c.block()).startswith("Response: Success\r\nActionID: p\r\nPing: Pong\r\n")
        assert svc.ami.counters["action_errors"] == 0
    finally:
        c.close()
        await svc.close()


# ------------------------------------------------------------------ property: parser + dispatcher


class MemoryTransport(asyncio.Transport):
    """Stands in for the socket only: the session, server and service under it are real."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, Service]]:
    loop = asyncio.new_event_loop()
    tmp = tmp_path_factory.mktemp("amifuzz")
    svc, _, _ = loop.run_until_complete(start(tmp))
    try:
        yield loop, svc
    finally:
        loop.run_until_complete(svc.close())
        rest = asyncio.all_tasks(loop)  # SIPqualifypeer's qualify tasks, the service's own
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.close()


def well_formed(out: bytes) -> None:
    """Every byte the session wrote is banner, then `Key: Value` CRLF lines in blank-line blocks."""
    text = out.decode("utf-8")
    assert text.startswith("Asterisk Call Manager/9.0.0\r\n")
    body = text[len("Asterisk Call Manager/9.0.0\r\n"):]
    assert body == "" or body.endswith("\r\n\r\n")
    for chunk in body.split("\r\n\r\n")[:-1]:
        for ln in chunk.split("\r\n"):
            assert ": " in ln and not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", ln), ln


def feed(running: tuple[asyncio.AbstractEventLoop, Service], chunks: list[bytes], login: bool) -> None:
    loop, svc = running
    ami = svc.ami
    assert ami is not None
    before = ami.counters["action_errors"]

    async def go() -> MemoryTransport:
        tr = MemoryTransport()
        s = AmiSession(ami)
        s.connection_made(tr)
        if login:
            s.data_received(b"Action: Login\r\nUsername: admin\r\nSecret: amp111\r\n\r\n")
            assert s.user is not None
        for ch in chunks:
            s.data_received(ch)
        s.connection_lost(None)
        return tr

    tr = loop.run_until_complete(go())
    assert ami.counters["action_errors"] == before
    well_formed(bytes(tr.out))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(hs.binary(max_size=300), max_size=8), hs.booleans())
def test_arbitrary_bytes_never_raise(running: tuple[asyncio.AbstractEventLoop, Service], chunks: list[bytes],
                                     login: bool) -> None:
    feed(running, chunks, login)


header_names = hs.sampled_from(["Action", "ActionID", "Peer", "Command", "EventMask", "Events", "AuthType",
                                "Username", "Secret", "Key", "Variable"])
values = hs.one_of(hs.text(max_size=40), hs.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                   hs.sampled_from(["SIP/1001", "1001", "trunk", "md5", "admin", "amp111", "sip show peer 1001",
                                    "sip show peers", "on", "off", "system,call", ""]))


@hs.composite
def action_block(draw: hs.DrawFn) -> bytes:
    name = draw(hs.one_of(hs.sampled_from(sorted(ACTIONS)), hs.text(max_size=12)))
    pairs = [("Action", name)] + draw(hs.lists(hs.tuples(header_names, values), max_size=5))
    text = "".join(f"{k}: {v}\r\n" for k, v in pairs) + "\r\n"
    return text.encode("utf-8", "surrogateescape")


@hs.composite
def md5_login(draw: hs.DrawFn) -> bytes:
    """Challenge, then an MD5 Login whose Key is anything: the path that used to raise TypeError."""
    key = draw(hs.one_of(hs.text(max_size=40), hs.from_regex(r"[0-9a-f]{32}", fullmatch=True)))
    user = draw(hs.sampled_from(["admin", "ghost", ""]))
    return (f"Action: Challenge\r\nAuthType: MD5\r\n\r\nAction: Login\r\nAuthType: MD5\r\nUsername: {user}\r\n"
            f"Key: {key}\r\n\r\n").encode("utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(hs.one_of(action_block(), md5_login()), max_size=6), hs.booleans())
def test_arbitrary_actions_never_raise(running: tuple[asyncio.AbstractEventLoop, Service], blocks: list[bytes],
                                       login: bool) -> None:
    feed(running, blocks, login)
