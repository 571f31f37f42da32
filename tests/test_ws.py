"""SIP over WebSocket (RFC 7118): phones registering over ws (IPv4 and IPv6), qualified over
their own WebSocket, their binding dropped when it closes; the listener's limits; a ws peer
that cannot be reached shows why and is never qualified over another transport."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sipqualify.net.ws import WsServer
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
            # connections per address, upgraded or not: more are closed as they are accepted
            ws_srv.max_per_ip = 2
            second = await http.ws_connect(url, protocols=("sip",))
            with pytest.raises(aiohttp.ClientError):
                await http.ws_connect(url, protocols=("sip",))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)  # not even HTTP
            assert await asyncio.wait_for(reader.read(100), 10) == b""
            writer.close()
            # (aiohttp's client tries a GET twice on a closed connection)
            assert ws_srv.stats["refused"] >= 2 and ws_srv.inbound == 2
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


async def test_ws_client_to_ws_listener_over_ipv6_both_ways() -> None:
    """Our WebSocket client (transport=ws peers) against our listener, on ::1: a message each way
    over the one connection, the remote address of each end the other's."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    got: asyncio.Queue[tuple[str, bytes, tuple[str, int]]] = asyncio.Queue()
    server = WsServer(lambda data, addr, t: got.put_nowait(("server", data, addr)))
    client = WsServer(lambda data, addr, t: got.put_nowait(("client", data, addr)))
    try:
        local = await server.listen("::1", 0)
        assert client.url(local) == f"ws://[::1]:{local[1]}/ws"
        client.connect_and_send(local, b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        who, data, remote = await asyncio.wait_for(got.get(), 10)
        assert (who, data, remote[0]) == ("server", b"OPTIONS sip:x SIP/2.0\r\n\r\n", "::1")
        assert server.send(remote, b"SIP/2.0 200 OK\r\n\r\n")
        assert await asyncio.wait_for(got.get(), 10) == ("client", b"SIP/2.0 200 OK\r\n\r\n", local)
        assert client.stats["connects"] == 1 and list(client.conns) == [local]
    finally:
        await client.aclose()
        await server.aclose()


async def test_failed_connects_back_off_with_their_reason() -> None:
    """A refused connection and a refused handshake are the reason; within the backoff the next
    send fails at once with that reason, without a new attempt."""
    errors: asyncio.Queue[tuple[tuple[str, int], str]] = asyncio.Queue()
    client = WsServer(lambda data, addr, t: None)
    client.on_connect_error = lambda addr, reason: errors.put_nowait((addr, reason))
    app = web.Application()  # an HTTP server that has no WebSocket at /ws
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http_port = runner.addresses[0][1]
    dead = ("127.0.0.1", free_port())
    try:
        client.connect_and_send(dead, b"x")
        assert await asyncio.wait_for(errors.get(), 10) == (dead, "connection refused")
        client.connect_and_send(dead, b"x")  # within the backoff: no new attempt
        assert await asyncio.wait_for(errors.get(), 10) == (dead, "connection refused")
        assert client.stats["connects"] == 1 and client.stats["connect_errors"] == 1
        client.connect_and_send(("127.0.0.1", http_port), b"x")
        assert await asyncio.wait_for(errors.get(), 10) == (("127.0.0.1", http_port),
                                                            "WebSocket handshake refused (404)")
    finally:
        await client.aclose()
        await runner.cleanup()


async def test_wss_handshake_has_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A TCP connection to the wss listener that never starts its TLS handshake is closed after
    HANDSHAKE_TIMEOUT (aiohttp's own would be 60 s)."""
    import ssl

    import trustme

    from sipqualify.net import ws as ws_module

    monkeypatch.setattr(ws_module, "HANDSHAKE_TIMEOUT", 0.3)
    cert = trustme.CA().issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    server = WsServer(lambda data, addr, t: None, ssl_server=ctx)
    try:
        local = await server.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*local)
        async with asyncio.timeout(10):  # far above 0.3 s, far below aiohttp's 60 s
            assert await reader.read(100) == b""
        writer.close()
    finally:
        await server.aclose()


async def test_wss_client_verifies_the_peer_by_its_host_name() -> None:
    """transport=wss: TLS with the peer's host name as SNI and as the name its certificate must
    carry; a certificate for another name is the reason, not a connection."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("gw.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    errors: asyncio.Queue[str] = asyncio.Queue()
    server = WsServer(lambda data, addr, t: got.put_nowait(data), ssl_server=server_ctx)
    client = WsServer(lambda data, addr, t: None, ssl_client=client_ctx)
    client.on_connect_error = lambda addr, reason: errors.put_nowait(reason)
    try:
        local = await server.listen("127.0.0.1", 0)
        assert client.url(local).startswith("wss://127.0.0.1:")
        client.connect_and_send(local, b"by IP")  # the certificate names gw.test only
        assert "certificate is not valid for '127.0.0.1'" in await asyncio.wait_for(errors.get(), 10)
        client._retry.clear()  # no backoff wait in this test
        client.sni[local] = "gw.test"
        client.connect_and_send(local, b"by name")
        assert await asyncio.wait_for(got.get(), 10) == b"by name"
    finally:
        await client.aclose()
        await server.aclose()


async def test_malformed_http_is_refused_with_one_line_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    server = WsServer(lambda data, addr, t: None)
    try:
        local = await server.listen("127.0.0.1", 0)
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*local)
            writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(100), 10)).startswith(b"HTTP/1.0 400 Bad Request")
            writer.close()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        refused = [r.getMessage() for r in caplog.records if "malformed HTTP request refused" in r.getMessage()]
        assert len(refused) == 1 and refused[0].startswith("WS: ")  # rate-limited: one line a minute
    finally:
        await server.aclose()
