"""Helpers shared by the test modules: ports, daemons started in-process, phones, waiting on a
condition. Test modules import from here, never from each other."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sipqualify.api.webhooks import Webhook, WebhookDispatcher
from sipqualify.config import load_config
from sipqualify.demo import DemoEndpoint
from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.inbound import UDP, BindingArmed, BindingChanged, BindingDisarmed, Flow, InboundEvent
from sipqualify.qualify.state import state_of, status_string
from sipqualify.service import Service, ServiceOptions
from sipqualify.sip.digest import authorization
from sipqualify.sip.framing import StreamFramer
from sipqualify.sip.message import Request, Response, make_response, parse_message
from sipqualify.store import Store
from sipqualify.views import PeerView

Addr = tuple[str, int]

# --- ports, endpoints, the daemon in-process, the CLI, waiting -----------------------------------

# Ports handed out below Linux's ephemeral range (32768-60999 by default): between our check and
# the daemon's bind, the kernel may give a port of that range to any outgoing connection (an
# HTTP client, a CLI subprocess, a TCP phone), and the daemon then fails with EADDRINUSE. Each
# process walks its own shuffled order and never hands a port out twice.
_PORT_ORDER = iter(random.Random(os.getpid()).sample(range(20000, 32768), 32768 - 20000))


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 free right now for both UDP and TCP (`kind` is kept for callers that say
    which one they need: a daemon with tcpenable binds both)."""
    for port in _PORT_ORDER:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port left on 127.0.0.1 below the ephemeral range")


async def endpoint(status: int, delay: float = 0.0) -> tuple[asyncio.BaseTransport, int]:
    loop = asyncio.get_running_loop()
    t, _ = await loop.create_datagram_endpoint(lambda: DemoEndpoint(status, "OK" if status == 200 else "Not Found",
                                                                    delay=delay),
                                               local_addr=("127.0.0.1", 0))
    return t, int(t.get_extra_info("sockname")[1])


def sip_conf(path: Path, sip_port: int, peers: dict[str, dict[str, Any]], general: str = "") -> str:
    lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", general, ""]
    for name, opts in peers.items():
        lines.append(f"[{name}]")
        lines.append("type=peer")
        lines += [f"{k}={v}" for k, v in opts.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return str(path)


async def wait_for(pred: Any, timeout: float = 10.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """wait_for for code without an event loop (the store's writer is a thread)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


async def api(svc: Service, method: str, path: str, token: str | None = None) -> tuple[int, Any]:
    def call() -> tuple[int, Any]:
        req = urllib.request.Request(f"http://{svc.api_addr[0]}:{svc.api_addr[1]}{path}", method=method,
                                     data=b"" if method == "POST" else None)
        req.add_header("Authorization", f"Bearer {svc.token if token is None else token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    return await asyncio.to_thread(call)


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "sipqualify.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def start_api(tmp_path: Path, **service: Any) -> Service:
    conf = sip_conf(tmp_path / "sip.conf", free_port(), {"p": {"host": "127.0.0.1", "port": 9, "qualify": "no"}})
    cfg = load_config(conf)
    for k, v in service.items():
        setattr(cfg.service, k, v)
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "s"), config=cfg))
    await svc.start()
    return svc


async def read_events(resp: aiohttp.ClientResponse, n: int, timeout: float = 15) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    ev_id = None

    async def run() -> None:
        nonlocal ev_id
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                ev_id = int(line[4:])
            elif line.startswith("data: "):
                assert ev_id is not None
                out.append((ev_id, json.loads(line[6:])))
                if len(out) >= n:
                    return

    await asyncio.wait_for(run(), timeout)
    return out


# --- sip show peers views --------------------------------------------------------------------

def view(name: str, port: int, maxms: int, lastms: int, *, defaultuser: str | None = None,
         freq: int = 5000, **kw: object) -> PeerView:
    base: dict[str, object] = dict(
        name=name, status=status_string(maxms, lastms), state=state_of(maxms, lastms), lastms=lastms, maxms=maxms,
        qualifyfreq_ms=freq, keepalive_ms=0, host="127.0.0.1", addr_ip="127.0.0.1", addr_port=port, dynamic=False,
        transport="udp",
        nat=["auto_force_rport"], nat_detected=False, acl=False, defaultuser=defaultuser, fromuser=None,
        fromdomain=None, description="", context="default", secret_set=False, md5secret_set=False, useragent="",
        regcontact="", regexten="", expire=-1, rtt_ms=None, last_qualify=None, last_change=None, qualifies=0,
        timeouts=0, retransmissions=0,
    )
    base.update(kw)
    return PeerView(**base)  # type: ignore[arg-type]


def phase2(outage: bool = False) -> list[PeerView]:
    down = -1 if outage else 1
    return [
        view("ok-yes", 15070, 2000, down), view("ok-500", 15072, 500, 1), view("ok-default-freq", 15073, 2000, 1),
        view("lagged-500", 15071, 500, 700), view("resp-404", 15076, 2000, 1),
        view("trying-only", 15077, 2000, -1), view("user-peer", 15075, 2000, 1, defaultuser="alice"),
        view("sipp-uas", 15078, 2000, 1), view("flap", 15090, 500, down), view("dead-yes", 15080, 2000, -1),
        view("dead-500", 15081, 500, -1), view("dead-3000", 15082, 3000, -1), view("noqualify", 15074, 0, 0),
    ]


# --- the registrar: a UDP phone, a daemon with dynamic peers ----------------------------------

class Phone(asyncio.DatagramProtocol):
    """A UA on 127.0.0.1: sends REGISTERs, answers OPTIONS with 200."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.options = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        msg = parse_message(data)
        if isinstance(msg, Request) and msg.method == "OPTIONS":
            self.options += 1
            self.transport.sendto(make_response(msg, 200, "OK", to_tag="ua").to_bytes(), addr)
        elif isinstance(msg, Response):
            self.responses.put_nowait(msg)

    async def register(self, server: tuple[str, int], user: str, *, password: str | None = None,
                       expires: int = 300, contact: str | None = None, auth: str | None = None,
                       cseq: int = 1, useragent: str = "TestPhone/1.0") -> Response:
        port = self.transport.get_extra_info("sockname")[1]
        contact = contact or f"<sip:{user}@127.0.0.1:{port}>"
        lines = [f"REGISTER sip:127.0.0.1:{server[1]} SIP/2.0",
                 f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(6).hex()};rport",
                 "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag=ph1", f"To: <sip:{user}@127.0.0.1>",
                 "Call-ID: reg-1@phone", f"CSeq: {cseq} REGISTER", f"Contact: {contact}", f"Expires: {expires}",
                 f"User-Agent: {useragent}"]
        if auth:
            lines.append(f"Authorization: {auth}")
        # surrogateescape: a test can send bytes that are not UTF-8 (lone surrogates in `useragent`)
        self.transport.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8", "surrogateescape"),
                              server)
        return await asyncio.wait_for(self.responses.get(), 5)

    async def register_auth(self, server: tuple[str, int], user: str, password: str, **kw: Any) -> Response:
        first = await self.register(server, user, **kw)
        assert first.status == 401, first.status
        challenge = first.headers.get_all("WWW-Authenticate")[0]
        auth = authorization(challenge, user, password, "REGISTER", f"sip:127.0.0.1:{server[1]}")
        return await self.register(server, user, auth=auth, cseq=2, **kw)


REGISTRAR_CONF = """[general]
udpbindaddr=127.0.0.1:{port}
realm=pbx.test
minexpiry=30
[phone](!)
type=friend
host=dynamic
qualify=yes
qualifyfreq=1
nat=force_rport
[1001](phone)
secret=s3cret
[1002](phone)
md5secret={md5}
[trunk]
type=peer
host=127.0.0.1
port=9
qualify=no
"""


async def start_registrar(tmp_path: Path, ami_port: int | None = None) -> tuple[Service, tuple[str, int]]:
    """A daemon with REGISTRAR_CONF's peers; with `ami_port`, the AMI port on it (MANAGER_CONF)."""
    port = free_port()
    conf = tmp_path / "sip.conf"
    conf.write_text(REGISTRAR_CONF.format(port=port, md5=hashlib.md5(b"1002:pbx.test:pw2").hexdigest()))
    manager_conf = None
    if ami_port is not None:
        manager_conf = str(tmp_path / "manager.conf")
        Path(manager_conf).write_text(MANAGER_CONF.format(port=ami_port))
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"), manager_conf=manager_conf))
    await svc.start()
    return svc, ("127.0.0.1", port)


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


# --- the registrar sans-I/O ---------------------------------------------------------------------

PEERS = {
    "1001": PeerConfig(name="1001", host="dynamic", dynamic=True, secret="s3cret"),
    "1002": PeerConfig(name="1002", host="dynamic", dynamic=True,
                       md5secret=hashlib.md5(b"1002:pbx.test:pw2").hexdigest()),
    "trunk": PeerConfig(name="trunk", host="192.0.2.1", secret="x"),
}
SRC = ("192.0.2.50", 5060)


def register(user: str, auth: str = "", cseq: int = 1) -> bytes:
    lines = ["REGISTER sip:pbx.test SIP/2.0", f"Via: SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK{user}{cseq};rport",
             "Max-Forwards: 70", f"From: <sip:{user}@pbx.test>;tag=g", f"To: <sip:{user}@pbx.test>",
             f"Call-ID: guess-{user}", f"CSeq: {cseq} REGISTER", f"Contact: <sip:{user}@192.0.2.50>",
             "Expires: 600"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def auth_for(challenge: str, user: str, password: str) -> str:
    return authorization(challenge, user, password, "REGISTER", "sip:pbx.test", cnonce="abcd")




# --- SIP over TCP --------------------------------------------------------------------------------

class TcpPhone:
    """A UA on one TCP connection: REGISTERs, answers OPTIONS with 200 on the connection."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.options: list[Request] = []
        self.answer = True
        self.closed = asyncio.Event()
        self.writer: Any = None
        self.tp = "tcp"
        self.hostport = "127.0.0.1:5999"  # what its Via and Contact name

    async def connect(self, server: tuple[str, int], ssl: Any = None, server_hostname: str | None = None) -> TcpPhone:
        """`ssl`: an SSLContext: a TLS phone (Via `SIP/2.0/TLS`, Contact `;transport=tls`)."""
        self.tp = "tls" if ssl is not None else "tcp"
        self.reader, self.writer = await asyncio.open_connection(*server, ssl=ssl, server_hostname=server_hostname)
        self.port = self.writer.get_extra_info("sockname")[1]
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        framer = StreamFramer()
        try:
            while data := await self.reader.read(65536):
                for raw in framer.feed(data):
                    self.on_message(raw)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    def on_message(self, raw: bytes) -> None:
        msg = parse_message(raw)
        if isinstance(msg, Request) and msg.method == "OPTIONS":
            self.options.append(msg)
            if self.answer:
                self.writer.write(make_response(msg, 200, "OK", to_tag="ua").to_bytes())
        elif isinstance(msg, Response):
            self.responses.put_nowait(msg)

    def close(self) -> None:
        self.writer.close()

    async def request(self, lines: list[str]) -> Response:
        self.writer.write(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
        return await asyncio.wait_for(self.responses.get(), 10)

    async def register(self, server: tuple[str, int], user: str, *, expires: int = 300, auth: str | None = None,
                       cseq: int = 1) -> Response:
        # the Via and Contact name the phone's listening port, not the connection's: the
        # answer must still come back on the connection (RFC 3261 §18.2.2)
        lines = [f"REGISTER sip:127.0.0.1:{server[1]} SIP/2.0",
                 f"Via: SIP/2.0/{self.tp.upper()} {self.hostport};branch=z9hG4bK{os.urandom(6).hex()}",
                 "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag=ph1", f"To: <sip:{user}@127.0.0.1>",
                 f"Call-ID: reg-{user}@phone", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:{user}@{self.hostport};transport={self.tp}>", f"Expires: {expires}",
                 "User-Agent: TcpPhone/1.0"]
        if auth:
            lines.append(f"Authorization: {auth}")
        return await self.request(lines)

    async def register_auth(self, server: tuple[str, int], user: str, password: str, **kw: Any) -> Response:
        first = await self.register(server, user, **kw)
        assert first.status == 401, first.status
        auth = authorization(first.headers.get_all("WWW-Authenticate")[0], user, password, "REGISTER",
                             f"sip:127.0.0.1:{server[1]}")
        return await self.register(server, user, auth=auth, cseq=2, **kw)


class WsPhone(TcpPhone):
    """A browser-like UA on one WebSocket with subprotocol `sip` (RFC 7118): Via `SIP/2.0/WS`,
    Contact host `*.invalid`; answers OPTIONS with 200 on the WebSocket."""

    async def connect_ws(self, url: str, ssl: Any = False) -> WsPhone:
        self.tp = "wss" if url.startswith("wss:") else "ws"
        self.hostport = "k3x9q2.invalid"
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, protocols=("sip",), ssl=ssl)
        self.port = self.ws.get_extra_info("sockname")[1]
        self.writer = self
        self.sends: set[asyncio.Task[None]] = set()
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    def write(self, data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self.ws.send_str(data.decode()))
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.on_message(msg.data.encode())
        finally:
            self.closed.set()

    def close(self) -> None:
        asyncio.get_running_loop().create_task(self.aclose())

    async def aclose(self) -> None:
        await self.ws.close()
        await self.session.close()


def options_lines(server: tuple[str, int], via_port: int = 5999) -> list[str]:
    return [f"OPTIONS sip:127.0.0.1:{server[1]} SIP/2.0",
            f"Via: SIP/2.0/TCP 127.0.0.1:{via_port};branch=z9hG4bK{os.urandom(6).hex()}",
            "Max-Forwards: 70", "From: <sip:mon@127.0.0.1>;tag=m1", f"To: <sip:127.0.0.1:{server[1]}>",
            f"Call-ID: {os.urandom(6).hex()}@mon", "CSeq: 1 OPTIONS"]


# --- the store -----------------------------------------------------------------------------------

T0 = time.time() - 10_000  # recent enough that default retention (7 d / 90 d) keeps it


# the AMI tests' manager.conf (one user, admin/amp111, from 127.0.0.1 only)
MANAGER_CONF = """[general]
enabled = yes
port = {port}
bindaddr = 127.0.0.1
authtimeout = 2

[admin]
secret = amp111
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all

[readonly]
secret = ro
read = system
write = system

[nothere]
secret = x
deny = 0.0.0.0/0.0.0.0
read = all
write = all
"""


def scrape(svc: Service, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{svc.api_addr[1]}/metrics")
    req.add_header("Authorization", f"Bearer {svc.token if token is None else token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


async def start_ami(tmp_path: Path, peers: dict[str, dict[str, object]]) -> tuple[Service, int]:
    """A daemon with the AMI port on (MANAGER_CONF: admin/amp111) and these sip.conf peers."""
    ami_port = free_port(socket.SOCK_STREAM)
    (tmp_path / "manager.conf").write_text(MANAGER_CONF.format(port=ami_port))
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), peers, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"),
                                 manager_conf=str(tmp_path / "manager.conf")))
    await svc.start()
    return svc, ami_port


async def api_get(api_port: int, token: str, path: str) -> tuple[int, Any]:
    """GET a daemon's API (one started as a process) with its token: (status, JSON body or None);
    (0, None) while it does not answer."""
    def call() -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}{path}")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None
        except OSError:
            return 0, None
    return await asyncio.to_thread(call)


class AmiClient:
    """One raw AMI connection (CRLF on the wire), read one block at a time."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def login(cls, port: int, user: str = "admin", secret: str = "amp111", events: str = "off") -> AmiClient:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(r.readline(), 5)  # the banner
        c = cls(r, w)
        await c.send(f"Action: Login\nUsername: {user}\nSecret: {secret}\nEvents: {events}\n\n")
        assert "Message: Authentication accepted" in await c.block()
        return c

    async def send(self, text: str) -> None:
        self.w.write(text.replace("\n", "\r\n").encode())
        await self.w.drain()

    async def block(self, timeout: float = 5.0) -> str:
        return (await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)).decode()

    async def until(self, text: str) -> str:
        """Blocks up to and including the first that contains `text`, joined."""
        out = [await self.block()]
        while text not in out[-1]:
            out.append(await self.block())
        return "".join(out)

    def close(self) -> None:
        self.w.close()


class TlsResponder:
    """A SIP-over-TLS server answering every OPTIONS with 200 on its connection (a TLS trunk);
    `connections` counts the connections it accepted. With `pong`, a double-CRLF ping gets a
    CRLF pong (RFC 5626 §4.4.1); `ctx` None: plain TCP."""

    def __init__(self, ctx: Any, pong: bool = False) -> None:
        self.ctx = ctx
        self.pong = pong
        self.pings = 0
        self.connections = 0
        self.options: list[Request] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> TlsResponder:
        self.server = await asyncio.start_server(self._serve, host, 0, ssl=self.ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        framer = StreamFramer()
        try:
            while data := await reader.read(65536):
                msgs = framer.feed(data)
                self.pings += framer.pings
                if self.pong and framer.pings:
                    writer.write(b"\r\n" * framer.pings)
                framer.pings = 0
                for raw in msgs:
                    msg = parse_message(raw)
                    if isinstance(msg, Request) and msg.method == "OPTIONS":
                        self.options.append(msg)
                        writer.write(make_response(msg, 200, "OK", to_tag="tr").to_bytes())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


# --- docs/configuration.md option entries (the sip.conf/TOML table and the pjsip.conf table) -------

CONFIGURATION_MD = Path(__file__).parents[1] / "docs" / "configuration.md"
FIELDS = re.compile(r"^- \*\*Default:\*\* (.+?) &nbsp; \*\*Unit:\*\* (.+?) &nbsp; \*\*Read from:\*\* (.+)$")
EXAMPLE = re.compile(r"^- \*\*Example:\*\* (.+)$")


@dataclass
class DocEntry:
    section: str | None
    heading: str
    line: int
    default: str
    unit: str
    read_from: str
    example: str
    text: str


def _section_of(title: str) -> str | None:
    """The option section a heading opens: `[general]`, `[peers.NAME]`, `[[webhooks]]`, ..."""
    if title.startswith("Native TOML"):
        return "top"
    if title == "pjsip.conf":
        return "pjsip"
    if title.startswith("Realtime"):
        return "realtime"
    if m := re.fullmatch(r"`((?:extconfig|res_pgsql|res_config_sqlite3)\.conf)`", title):
        return f"realtime:{m.group(1)}"  # realtime options: their own table (test_realtime_conf.py)
    if m := re.fullmatch(r"`type=([a-z]+)`", title):
        return f"pjsip:{m.group(1)}"  # pjsip.conf options: their own table (test_pjsip_conf.py)
    m = re.search(r"`\[\[?([a-z]+)", title)
    if m is None:
        return None
    return "peer" if m.group(1) == "peers" else m.group(1)


def doc_entries() -> list[DocEntry]:
    """Every option entry of the page: a heading directly followed by its Default/Unit/Read from line."""
    lines = CONFIGURATION_MD.read_text().splitlines()
    headings: list[tuple[int, int, str]] = []
    in_code = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"(#{2,4}) (.+)$", line)):
            headings.append((i, len(m.group(1)), m.group(2)))
    entries: list[DocEntry] = []
    section: str | None = None
    for n, (i, level, title) in enumerate(headings):
        body = lines[i + 1:headings[n + 1][0] if n + 1 < len(headings) else len(lines)]
        fields = FIELDS.match(body[0]) if body else None
        if fields is None:
            opened = _section_of(title)
            if level == 2 or opened is not None:
                section = opened
            continue
        example = EXAMPLE.match(body[1]) if len(body) > 1 else None
        text = " ".join(ln for ln in body[2:] if ln.strip())
        entries.append(DocEntry(section, title, i + 1, fields.group(1), fields.group(2), fields.group(3),
                                example.group(1) if example else "", text))
    return entries


async def read_sse(content: Any, event: str, done: Callable[[list[dict[str, Any]]], bool],
                   timeout: float = 5.0) -> list[dict[str, Any]]:
    """The `data` of the `event` events of an SSE stream (an aiohttp response's `content`),
    read until `done(got)` (or TimeoutError after `timeout` s)."""
    got: list[dict[str, Any]] = []

    async def read() -> None:
        name = ""
        async for raw in content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == event:
                got.append(json.loads(line[6:]))
                if done(got):
                    return

    await asyncio.wait_for(read(), timeout)
    return got


# phone1 of asterisk-pjsip-observed.md §1: an AOR taking one registered contact, replacing it
PJSIP_PHONE1 = """
[phone1-auth]
type = auth
auth_type = userpass
username = phone1
password = secret1
[phone1]
type = aor
max_contacts = 1
remove_existing = yes
qualify_frequency = 5
qualify_timeout = 2.0
[phone1]
type = endpoint
aors = phone1
auth = phone1-auth
"""


# --- the inbound endpoint on a virtual clock ------------------------------------------------------

@dataclass
class Shell:
    """Plays the shell of an engine on a virtual clock (tests/test_inbound_endpoint.py): feeds what
    arrives through its front door, stores BindingChanged when told, fires binding expiry."""

    engine: QualifyEngine
    now: float = 0.0
    sent: list[tuple[float, bytes, Flow]] = field(default_factory=list)
    pokes: list[tuple[float, bytes, Addr]] = field(default_factory=list)
    events: list[InboundEvent] = field(default_factory=list)
    commits: list[BindingChanged] = field(default_factory=list)  # waiting to be stored
    stored: list[tuple[str, object]] = field(default_factory=list)
    expiry: dict[str, float] = field(default_factory=dict)  # peer -> expires_mono

    def flush(self) -> None:
        ib = self.engine.inbound
        self.sent += [(self.now, d, f) for d, f in ib.sends()]
        self.pokes += [(self.now, d, a) for d, a in self.engine.datagrams_to_send()]
        while (ev := ib.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, BindingChanged):
                self.commits.append(ev)
            elif isinstance(ev, BindingArmed):
                self.expiry[ev.binding.peer] = ev.binding.expires_mono
            elif isinstance(ev, BindingDisarmed):
                self.expiry.pop(ev.peer, None)

    def deliver(self, data: bytes, src: Addr, transport: str = UDP) -> None:
        self.engine.receive_datagram(data, src, self.now, transport)
        self.flush()

    def store_all(self, error: str | None = None) -> None:
        commits, self.commits = self.commits, []
        for c in commits:
            self.stored.append((c.peer, c.binding))
            if c.token:
                self.engine.inbound.commit_done(c.token, error, self.now)
        self.flush()

    def advance(self, t: float) -> None:
        """Move the virtual clock to `t`, firing binding expiry timers due on the way."""
        for peer, when in sorted(self.expiry.items(), key=lambda kv: kv[1]):
            if when <= t:
                self.now = when
                del self.expiry[peer]
                self.engine.inbound.expire(peer, when, when)
                self.flush()
        self.now = t

    def answers(self) -> list[str]:
        return [d.decode().partition("\r\n")[0] for _, d, _ in self.sent]


@dataclass
class WebhookRig:
    """A Store, a WebhookDispatcher on it with one webhook `rx`, and what that webhook received."""

    store: Store
    hooks: WebhookDispatcher
    got: list[dict[str, Any]]


@contextlib.asynccontextmanager
async def webhook_rig(tmp_path: Path) -> AsyncIterator[WebhookRig]:
    """A receiver on 127.0.0.1 and a dispatcher delivering the store's transitions to it."""
    got: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(socket.SOCK_STREAM)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store = Store(str(tmp_path / "sipqualify.sqlite"))
    await asyncio.to_thread(store.open)
    listeners: list[Any] = []
    model = SimpleNamespace(store=store, add_record_listener=listeners.append)
    hooks = WebhookDispatcher(model, [Webhook("rx", f"http://127.0.0.1:{port}/hook")],  # type: ignore[arg-type]
                              tmp_path / "webhooks.sqlite")
    await hooks.start()
    try:
        yield WebhookRig(store, hooks, got)
    finally:
        await hooks.close()
        await asyncio.to_thread(store.close)
        await runner.cleanup()


# --- PostgreSQL (initdb + pg_ctl in a temporary directory) -------------------------------------


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([p] if (p := shutil.which(name)) else [])
    if not found:
        msg = "PostgreSQL not installed: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return found[-1]


class Postgres:
    """One server in a temporary directory; stop() and start() keep its data (an outage)."""

    def __init__(self, fsync: bool = False) -> None:
        """`fsync`: as a production server (bench/); tests run without it."""
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        self.dir = Path(tempfile.mkdtemp(prefix="sipq-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "nobody" if os.getuid() == 0 else None
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run([self.initdb, "-D", str(self.data), "-U", "asterisk", "--auth=trust", "-E", "UTF8",
                   *([] if fsync else ["--no-sync"])])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                    f"fsync = {'on' if fsync else 'off'}\nmax_connections = 60\n")
        self.start()
        self._run([pg_bin("createdb"), "-h", str(self.dir), "-p", str(self.port), "-U", "asterisk", "asterisk"])

    def _run(self, argv: list[str]) -> None:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{argv}: {r.stdout}{r.stderr}"

    def start(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "start"])

    def stop(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def url(self, dbname: str = "asterisk") -> str:
        """A libpq URL of database `dbname` (user `asterisk`, trusted: no password) over TCP."""
        return f"postgresql://asterisk@127.0.0.1:{self.port}/{dbname}"

    def sql(self, *statements: str, dbname: str = "asterisk") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, dbname=dbname, user="asterisk",
                             autocommit=True) as db:
            out: list[tuple[object, ...]] = []
            for s in statements:
                cur = db.execute(s)
                if cur.description:
                    out = list(cur.fetchall())
            return out

    def close(self) -> None:
        try:
            self.stop()
        except AssertionError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
