"""SIP over WebSocket (RFC 7118): phones registering over ws (IPv4 and IPv6), qualified over
their own WebSocket, their binding dropped when it closes; the listener's limits; a ws peer
that cannot be reached shows why and is never qualified over another transport."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from sipqualify.service import Service, ServiceOptions

from .helpers import WsPhone, free_port, options_lines, wait_for

CONF = """[general]
udpbindaddr={udp}:{port}
wsenable=yes
wsbindaddr={ws}
realm=pbx.test
[phone](!)
type=friend
host=dynamic
qualify=yes
qualifyfreq=2
[1001](phone)
secret=s3cret
[gw]
type=peer
host=127.0.0.1
port={dead}
transport=ws
qualify=300
"""


async def start(tmp_path: Path, udp: str = "127.0.0.1", ws: str = "127.0.0.1:0") -> tuple[Service, str]:
    conf = tmp_path / "sip.conf"
    conf.write_text(CONF.format(udp=udp, port=free_port() if udp == "127.0.0.1" else 0, ws=ws, dead=free_port()))
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    assert svc.sockets.ws is not None
    ip, port = svc.sockets.ws.locals[0]
    host = f"[{ip}]" if ":" in ip else ip
    return svc, f"ws://{host}:{port}/ws"


def binding(tmp_path: Path, peer: str) -> tuple[str, int, str] | None:
    with sqlite3.connect(tmp_path / "s" / "bindings.sqlite") as db:
        return db.execute("SELECT ip, port, transport FROM bindings WHERE peer=?", (peer,)).fetchone()


async def register_qualify_and_close(svc: Service, tmp_path: Path, url: str, ip: str) -> None:
    assert svc.engine is not None
    phone = await WsPhone().connect_ws(url)
    server = (ip, int(url.rsplit(":", 1)[1].split("/")[0]))
    assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
    assert binding(tmp_path, "1001") == (ip, phone.port, "ws")  # stored before the 200
    await wait_for(lambda: svc.engine.peer("1001").state == "OK", timeout=10)  # type: ignore[union-attr]
    opt = phone.options[0]  # qualified over the phone's own WebSocket
    assert opt.top_via is not None and opt.top_via.transport == "WS"
    assert opt.uri == "sip:1001@k3x9q2.invalid;transport=ws"  # the registered Contact
    assert svc.engine.stats.retransmissions == 0
    regs = svc.model.registrations()
    assert [(r["peer"], r["transport"]) for r in regs] == [("1001", "ws")]
    await phone.aclose()  # the connection closes: the binding goes, the peer is UNKNOWN at its next poke
    await wait_for(lambda: svc.engine.peer("1001").state == "UNKNOWN", timeout=10)  # type: ignore[union-attr]
    assert svc.model.registrations() == []
    await wait_for(lambda: binding(tmp_path, "1001") is None, timeout=10)
    assert svc.engine.peer("1001").addr is None  # type: ignore[union-attr]


async def test_register_qualify_over_the_websocket_and_unregistered_when_it_closes(tmp_path: Path) -> None:
    svc, url = await start(tmp_path)
    try:
        await register_qualify_and_close(svc, tmp_path, url, "127.0.0.1")
        st = svc.model.status()["ws"]
        assert st["accepted"] == 1 and st["closed"] == 1 and st["connections"] == 0
    finally:
        await svc.close()


async def test_ws_listener_on_ipv6_loopback(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    svc, url = await start(tmp_path, udp="[::1]", ws="[::1]:0")
    try:
        assert url.startswith("ws://[::1]:")
        await register_qualify_and_close(svc, tmp_path, url, "::1")
    finally:
        await svc.close()


async def test_options_answered_on_the_websocket_and_limits(tmp_path: Path) -> None:
    svc, url = await start(tmp_path)
    ws_srv = svc.sockets.ws
    assert ws_srv is not None
    try:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        phone = await WsPhone().connect_ws(url)
        ok = await phone.request(options_lines(("127.0.0.1", port)))
        assert ok.status == 200 and ok.top_via is not None and ok.top_via.transport == "TCP"  # the Via as sent
        async with aiohttp.ClientSession() as http:
            # no 'sip' subprotocol: refused (RFC 7118 §4.1); another path: 404
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(url, protocols=("chat",))
            assert e.value.status == 400
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(url.replace("/ws", "/other"), protocols=("sip",))
            assert e.value.status == 404
            # connections per address
            ws_srv.max_per_ip = 2
            second = await http.ws_connect(url, protocols=("sip",))
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await http.ws_connect(url, protocols=("sip",))
            assert e.value.status == 503 and ws_srv.stats["refused"] == 1
            # a message over 64 KiB closes that connection only
            await second.send_str("OPTIONS " + "x" * 70_000)
            msg = await asyncio.wait_for(second.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            await wait_for(lambda: len(ws_srv.conns) == 1)
            # idle connections are closed
            ws_srv.idle_timeout = 0.3
            third = await http.ws_connect(url, protocols=("sip",))
            msg = await asyncio.wait_for(third.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws_srv.stats["idle_closed"] >= 1
        await phone.aclose()
    finally:
        await svc.close()


async def test_unreachable_ws_peer_shows_why_and_never_falls_back_to_udp(tmp_path: Path) -> None:
    svc, _ = await start(tmp_path)
    try:
        assert svc.engine is not None
        gw = svc.engine.peer("gw")
        assert gw is not None and gw.transport == "ws"
        # a UDP socket on the peer's port: nothing may arrive there
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(gw.dest)
        udp.setblocking(False)
        await wait_for(lambda: gw.state == "UNREACHABLE", timeout=10)
        assert gw.transport_error == "connection refused"
        assert svc.model.view(gw).transport_error == "connection refused"
        assert svc.sockets.ws is not None and svc.sockets.ws.stats["connect_errors"] >= 1
        with pytest.raises(BlockingIOError):
            udp.recv(100)
        udp.close()
    finally:
        await svc.close()
