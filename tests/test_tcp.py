"""SIP over TCP, inbound (tcpenable=yes): CRLF keepalives, OPTIONS answered on the connection,
REGISTER over TCP and qualify over the phone's own connection, loss of that connection, and
the limits (framing errors, connections per address, idle timeout)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from sipqualify.service import Service, ServiceOptions
from sipqualify.sip.digest import authorization
from sipqualify.sip.framing import StreamFramer
from sipqualify.sip.message import Request, Response, make_response, parse_message

from .test_service import free_port, wait_for

CONF = """[general]
udpbindaddr=127.0.0.1:{port}
tcpenable=yes
realm=pbx.test
minexpiry=30
[phone](!)
type=friend
host=dynamic
qualify=yes
qualifyfreq=1
nat=force_rport
transport=tcp,udp
[1001](phone)
secret=s3cret
[1003](phone)
secret=pw3
qualify=200
[1004](phone)
secret=pw4
nat=no
"""


async def start(tmp_path: Path, port: int = 0) -> tuple[Service, tuple[str, int]]:
    for _ in range(20 if not port else 0):  # the TCP port of the free UDP port's number must be free too
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    conf = tmp_path / "sip.conf"
    conf.write_text(CONF.format(port=port))
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    return svc, ("127.0.0.1", port)


class TcpPhone:
    """A UA on one TCP connection: REGISTERs, answers OPTIONS with 200 on the connection."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.options: list[Request] = []
        self.answer = True
        self.closed = asyncio.Event()
        self.writer: Any = None

    async def connect(self, server: tuple[str, int]) -> TcpPhone:
        self.reader, self.writer = await asyncio.open_connection(*server)
        self.port = self.writer.get_extra_info("sockname")[1]
        self.task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _read(self) -> None:
        framer = StreamFramer()
        try:
            while data := await self.reader.read(65536):
                for raw in framer.feed(data):
                    msg = parse_message(raw)
                    if isinstance(msg, Request) and msg.method == "OPTIONS":
                        self.options.append(msg)
                        if self.answer:
                            self.writer.write(make_response(msg, 200, "OK", to_tag="ua").to_bytes())
                    elif isinstance(msg, Response):
                        self.responses.put_nowait(msg)
        except ConnectionError:
            pass
        finally:
            self.closed.set()

    def close(self) -> None:
        self.writer.close()

    async def request(self, lines: list[str]) -> Response:
        self.writer.write(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
        return await asyncio.wait_for(self.responses.get(), 3)

    async def register(self, server: tuple[str, int], user: str, *, expires: int = 300, auth: str | None = None,
                       cseq: int = 1) -> Response:
        # the Via and Contact name the phone's listening port, not the connection's: the
        # answer must still come back on the connection (RFC 3261 §18.2.2)
        lines = [f"REGISTER sip:127.0.0.1:{server[1]} SIP/2.0",
                 f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK{os.urandom(6).hex()}",
                 "Max-Forwards: 70", f"From: <sip:{user}@127.0.0.1>;tag=ph1", f"To: <sip:{user}@127.0.0.1>",
                 f"Call-ID: reg-{user}@phone", f"CSeq: {cseq} REGISTER",
                 f"Contact: <sip:{user}@127.0.0.1:5999;transport=tcp>", f"Expires: {expires}",
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


def options_lines(server: tuple[str, int], via_port: int = 5999) -> list[str]:
    return [f"OPTIONS sip:127.0.0.1:{server[1]} SIP/2.0",
            f"Via: SIP/2.0/TCP 127.0.0.1:{via_port};branch=z9hG4bK{os.urandom(6).hex()}",
            "Max-Forwards: 70", "From: <sip:mon@127.0.0.1>;tag=m1", f"To: <sip:127.0.0.1:{server[1]}>",
            f"Call-ID: {os.urandom(6).hex()}@mon", "CSeq: 1 OPTIONS"]


async def read_closed(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    """True when the server closed the connection (EOF or reset) within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except ConnectionError:
        pass
    return True


async def test_crlf_ping_gets_one_crlf_pong(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        reader, writer = await asyncio.open_connection(*server)
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        with_more = asyncio.create_task(reader.read(1))
        await asyncio.sleep(0.2)
        assert not with_more.done()  # exactly one CRLF, nothing else
        with_more.cancel()
        writer.write(b"\r\n\r\n\r\n\r\n")  # two pings: two pongs
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"\r\n\r\n"
        assert svc.tcp is not None and svc.tcp.stats["pings"] == svc.tcp.stats["pongs"] == 3
        writer.close()
    finally:
        await svc.close()


async def test_options_over_tcp_answered_on_the_connection(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        phone = await TcpPhone().connect(server)
        ok = await phone.request(options_lines(server, via_port=5999))  # Via names another port
        assert ok.status == 200 and ok.top_via is not None and ok.top_via.transport == "TCP"
        st = svc.status()["tcp"]
        assert st["accepted"] == 1 and st["messages_in"] == 1 and st["messages_out"] == 1
        assert st["listen"] == [{"ip": "127.0.0.1", "port": server[1]}]
        phone.close()
    finally:
        await svc.close()


async def test_register_over_tcp_and_qualify_over_the_connection(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        assert svc.engine is not None
        phone = await TcpPhone().connect(server)
        ok = await phone.register_auth(server, "1001", "s3cret")
        assert ok.status == 200
        with sqlite3.connect(tmp_path / "s" / "bindings.sqlite") as db:  # stored before the 200
            assert db.execute("SELECT ip, port, transport FROM bindings WHERE peer='1001'").fetchone() == (
                "127.0.0.1", phone.port, "tcp")
        await wait_for(lambda: svc.engine.peer("1001").state == "OK", timeout=6)  # type: ignore[union-attr]
        opt = phone.options[0]  # the daemon's OPTIONS came over the phone's connection
        assert opt.top_via is not None and opt.top_via.transport == "TCP"
        assert opt.uri == "sip:1001@127.0.0.1:5999;transport=tcp"  # the registered Contact
        v = svc.view(svc.engine.peer("1001"))  # type: ignore[arg-type]
        assert (v.addr_ip, v.addr_port, v.transport) == ("127.0.0.1", phone.port, "tcp")
        assert svc.engine.stats.retransmissions == 0  # none on TCP
        # nat=no: the binding is the Contact's address, but OPTIONS still use the connection
        assert (await phone.register_auth(server, "1004", "pw4")).status == 200
        with sqlite3.connect(tmp_path / "s" / "bindings.sqlite") as db:
            assert db.execute("SELECT ip, port, transport FROM bindings WHERE peer='1004'").fetchone() == (
                "127.0.0.1", 5999, "tcp")
        await wait_for(lambda: svc.engine.peer("1004").state == "OK", timeout=6)  # type: ignore[union-attr]
        phone.close()
    finally:
        await svc.close()


async def test_lost_connection_makes_the_peer_unreachable(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        assert svc.engine is not None and svc.tcp is not None
        phone = await TcpPhone().connect(server)
        assert (await phone.register_auth(server, "1003", "pw3")).status == 200
        await wait_for(lambda: svc.engine.peer("1003").state == "OK", timeout=6)  # type: ignore[union-attr]
        # a UDP socket on the number of the phone's TCP port: nothing must fall back to UDP
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", phone.port))
        udp.setblocking(False)
        phone.close()
        t0 = time.monotonic()
        # next poke within qualifyfreq=1 s finds no connection, give-up 2 x 200 ms later
        await wait_for(lambda: svc.engine.peer("1003").state == "UNREACHABLE", timeout=8)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 2.0
        assert svc.tcp.stats["no_connection"] >= 1 and not svc.tcp.conns
        try:
            udp.recv(65536)
            raise AssertionError("an OPTIONS went out over UDP")
        except BlockingIOError:
            pass
        udp.close()
        # the phone reconnects and registers again: reachable again over the new connection
        again = await TcpPhone().connect(server)
        assert (await again.register_auth(server, "1003", "pw3")).status == 200
        await wait_for(lambda: svc.engine.peer("1003").state == "OK", timeout=6)  # type: ignore[union-attr]
        again.close()
    finally:
        await svc.close()


async def test_garbage_closes_only_that_connection(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        good = await TcpPhone().connect(server)
        r1, w1 = await asyncio.open_connection(*server)
        w1.write(b"X" * (70 * 1024))  # no end of headers within 64 KiB
        assert await read_closed(r1)
        r2, w2 = await asyncio.open_connection(*server)
        w2.write(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: abc\r\n\r\n")
        assert await read_closed(r2)
        assert svc.tcp.stats["framing_errors"] == 2
        await wait_for(lambda: len(svc.tcp.conns) == 1, timeout=2)  # type: ignore[union-attr]
        assert (await good.request(options_lines(server))).status == 200  # others still served
        good.close()
        w1.close()
        w2.close()
    finally:
        await svc.close()


async def test_connection_limit_per_address_and_idle_timeout(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        svc.tcp.max_per_ip = 2
        conns = [await asyncio.open_connection(*server) for _ in range(2)]
        for r, w in conns:  # both accepted
            w.write(b"\r\n\r\n")
            assert await asyncio.wait_for(r.readexactly(2), 2) == b"\r\n"
        r3, w3 = await asyncio.open_connection(*server)
        assert await read_closed(r3)  # the third is refused at once
        assert svc.tcp.stats["refused"] == 1 and svc.tcp.stats["accepted"] == 2
        conns[0][1].close()
        await wait_for(lambda: len(svc.tcp.conns) == 1, timeout=2)  # type: ignore[union-attr]
        svc.tcp.idle_timeout = 0.3
        r4, w4 = await asyncio.open_connection(*server)  # room again; closed when idle
        w4.write(b"\r\n\r\n")
        assert await asyncio.wait_for(r4.readexactly(2), 2) == b"\r\n"
        t0 = time.monotonic()
        assert await read_closed(r4)
        assert 0.2 < time.monotonic() - t0 < 1.5 and svc.tcp.stats["idle_closed"] == 1
        for w in (conns[1][1], w3, w4):
            w.close()
    finally:
        await svc.close()


async def test_restart_keeps_tcp_binding_but_no_connection(tmp_path: Path) -> None:
    svc, server = await start(tmp_path)
    try:
        phone = await TcpPhone().connect(server)
        assert (await phone.register_auth(server, "1003", "pw3")).status == 200
        await wait_for(lambda: svc.engine.peer("1003").state == "OK", timeout=6)  # type: ignore[union-attr]
    finally:
        await svc.close()
    await asyncio.wait_for(phone.closed.wait(), 2)  # the daemon's connections went with it
    svc, _ = await start(tmp_path, server[1])
    try:
        assert svc.engine is not None and svc.tcp is not None
        v = svc.view(svc.engine.peer("1003"))  # type: ignore[arg-type]
        assert (v.addr_port, v.transport) == (phone.port, "tcp")  # the binding survived
        # its connection did not: the pokes are dropped (never sent over UDP) -> UNREACHABLE
        await wait_for(lambda: svc.engine.peer("1003").state == "UNREACHABLE", timeout=8)  # type: ignore[union-attr]
        assert svc.tcp.stats["no_connection"] >= 1 and svc.engine.stats.transport_errors == 0
        again = await TcpPhone().connect(server)  # the phone reconnects and registers again
        assert (await again.register_auth(server, "1003", "pw3")).status == 200
        await wait_for(lambda: svc.engine.peer("1003").state == "OK", timeout=6)  # type: ignore[union-attr]
        again.close()
    finally:
        await svc.close()
