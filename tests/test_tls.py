"""SIP over TLS: `transport=tls` peers qualified over a kept, verified TLS connection (one send
per poke, no retransmissions), the reason of a failed handshake (expired certificate, wrong
host name, connection refused) in the peer, the API and its transition, the certificate's days
left, and phones registering over TLS and qualified over their own connection.

Certificates are made by trustme (a test CA, a certificate for `localhost`/127.0.0.1, an
expired one, one for another name); the TLS peer is an asyncio TLS server answering OPTIONS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import trustme

from sipqualify.api.events import EventHub
from sipqualify.net.tls import CertWatch
from sipqualify.service import Service, ServiceOptions
from sipqualify.sip.message import Response, parse_message

from .helpers import (
    TcpPhone,
    TlsResponder,
    api_get,
    free_port,
    options_lines,
    read_events,
    scrape,
    sip_conf,
    wait_for,
)


class Certs:
    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.cafile = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.cafile))
        self.tmp = tmp

    def server_ctx(self, *names: str, expired: bool = False, days: int | None = None) -> ssl.SSLContext:
        kw: dict[str, Any] = {}
        now = datetime.datetime.now(datetime.UTC)
        if expired:
            kw = {"not_before": now - datetime.timedelta(days=30), "not_after": now - datetime.timedelta(days=1)}
        elif days is not None:
            kw = {"not_before": now - datetime.timedelta(days=1), "not_after": now + datetime.timedelta(days=days)}
        cert = self.ca.issue_cert(*names, **kw)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(ctx)
        return ctx

    def pem(self, name: str, *names: str) -> Path:
        """A certificate with its key in one PEM file (tlscertfile)."""
        path = self.tmp / name
        self.ca.issue_cert(*names).private_key_and_cert_chain_pem.write_to_path(str(path))
        return path


async def start(tmp_path: Path, peers: dict[str, dict[str, Any]], general: str) -> Service:
    conf = sip_conf(tmp_path / "sip.conf", free_port(), peers, general)
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    return svc


def peer(port: int, host: str = "localhost", **extra: Any) -> dict[str, Any]:
    return {"host": host, "port": port, "transport": "tls", "qualify": 500, "qualifyfreq": 1, **extra}


async def get(svc: Service, path: str) -> Any:
    status, body = await api_get(svc.api_addr[1], svc.token, path)
    assert status == 200, status
    return body


async def test_tls_peer_ok_over_one_kept_verified_connection(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    trunk = await TlsResponder(certs.server_ctx("localhost", "127.0.0.1", days=40)).start()
    svc = await start(tmp_path, {"trunk": peer(trunk.port)}, f"tlsenable=yes\ntlscafile={certs.cafile}\n"
                      "tlsbindaddr=127.0.0.1:0\n"
                      f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}")
    try:
        assert svc.engine is not None
        p = svc.engine.peer("trunk")
        assert p is not None
        await wait_for(lambda: p.qualifies >= 3, timeout=10)
        assert p.state == "OK" and p.transport_error is None
        assert trunk.connections == 1  # one connection, kept for every poke
        assert len(trunk.options) == p.qualifies and svc.engine.stats.retransmissions == 0
        req = trunk.options[0]
        assert req.uri == "sips:localhost" and req.headers.get("Via", "").startswith("SIP/2.0/TLS ")
        v = await get(svc, "/api/v1/peers/trunk")
        assert v["transport"] == "tls" and v["transport_error"] is None
        assert 39.0 < v["tls_cert_days_left"] <= 40.0
        _, text = await asyncio.to_thread(scrape, svc)
        line = next(ln for ln in text.splitlines() if ln.startswith('sipqualify_tls_cert_days_left{peer="trunk"}'))
        assert 39.0 < float(line.split()[-1]) <= 40.0
    finally:
        await svc.close()
        trunk.close()


async def unreachable_with(tmp_path: Path, ctx: ssl.SSLContext | None, general: str, expect: str) -> None:
    trunk = await TlsResponder(ctx).start() if ctx is not None else None
    port = trunk.port if trunk is not None else free_port(0)
    svc = await start(tmp_path, {"trunk": peer(port)}, general)
    try:
        assert svc.engine is not None
        p = svc.engine.peer("trunk")
        assert p is not None
        await wait_for(lambda: p.state == "UNREACHABLE", timeout=10)
        async with aiohttp.ClientSession() as s, s.get(  # replayed from the store: the transition and its reason
                f"http://127.0.0.1:{svc.api_addr[1]}/events",
                headers={"Authorization": f"Bearer {svc.token}", "Last-Event-ID": "0"}) as r:
            events = await read_events(r, 1)
        assert p.transport_error is not None and expect in p.transport_error, p.transport_error
        assert events[0][1]["new"] == "UNREACHABLE" and expect in events[0][1]["reason"], events
        v = await get(svc, "/api/v1/peers/trunk")
        assert expect in v["transport_error"] and v["tls_cert_days_left"] is None
        hist = await get(svc, "/api/v1/peers/trunk/history")
        assert expect in hist["transitions"][-1]["reason"]
        assert trunk is None or not trunk.options  # nothing was sent over a connection that did not verify
    finally:
        await svc.close()
        if trunk is not None:
            trunk.close()


async def test_expired_certificate_makes_the_peer_unreachable_with_the_reason(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    await unreachable_with(tmp_path, certs.server_ctx("localhost", "127.0.0.1", expired=True),
                           f"tlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\n"
                           f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}", "certificate has expired")


async def test_wrong_host_name_makes_the_peer_unreachable_with_the_reason(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    await unreachable_with(tmp_path, certs.server_ctx("peer.test"),
                           f"tlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\n"
                           f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}", "hostname mismatch")


async def test_refused_connection_is_the_reason(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    await unreachable_with(tmp_path, None, f"tlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\n"
                           f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}", "connection refused")


async def test_dont_verify_server_accepts_an_expired_certificate(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    trunk = await TlsResponder(certs.server_ctx("peer.test", expired=True)).start()
    svc = await start(tmp_path, {"trunk": peer(trunk.port)}, "tlsenable=yes\ntlsdontverifyserver=yes\n"
                      f"tlsbindaddr=127.0.0.1:0\ntlscertfile={certs.pem('me.pem', 'sipqualify.test')}")
    try:
        assert svc.engine is not None
        p = svc.engine.peer("trunk")
        assert p is not None
        await wait_for(lambda: p.state == "OK", timeout=10)
        assert (await get(svc, "/api/v1/peers/trunk"))["tls_cert_days_left"] is None  # not verified: unknown
    finally:
        await svc.close()
        trunk.close()


async def test_expiry_under_the_warning_threshold_is_warned_once(tmp_path: Path, caplog: Any) -> None:
    certs = Certs(tmp_path)
    trunk = await TlsResponder(certs.server_ctx("localhost", days=5)).start()
    svc = await start(tmp_path, {"trunk": peer(trunk.port)}, f"tlsenable=yes\ntlscafile={certs.cafile}\n"
                      f"tlsbindaddr=127.0.0.1:0\ntlscertfile={certs.pem('me.pem', 'sipqualify.test')}\n"
                      "tls_expiry_warn_days=7")
    try:
        assert svc.engine is not None
        p = svc.engine.peer("trunk")
        assert p is not None
        await wait_for(lambda: p.qualifies >= 3, timeout=10)
        lines = [r.getMessage() for r in caplog.records if "TLS certificate expires" in r.getMessage()]
        assert len(lines) == 1 and lines[0].startswith("peer 'trunk': TLS certificate expires in "), lines
        assert 4.0 < float(lines[0].split()[-2]) <= 5.0
    finally:
        await svc.close()
        trunk.close()


def test_cert_watch_warns_once_per_crossing() -> None:
    w = CertWatch(warn_days=14)
    a = ("127.0.0.1", 5061)
    w.record(a, {"notAfter": "Jan 31 00:00:00 2030 GMT"})
    t_after = ssl.cert_time_to_seconds("Jan 31 00:00:00 2030 GMT")
    assert w.crossed(a, t_after - 20 * 86400) is None  # 20 days left: fine
    assert w.crossed(a, t_after - 10 * 86400) == 10.0  # crossed: once
    assert w.crossed(a, t_after - 9 * 86400) is None
    w.record(a, {"notAfter": "Jan 31 00:00:00 2031 GMT"})  # renewed: re-armed
    assert w.crossed(a, t_after - 9 * 86400) is None
    w.record(a, {"notAfter": "Jan 31 00:00:00 2030 GMT"})
    assert w.crossed(a, t_after - 9 * 86400) == 9.0
    w.record(a, {})  # not verified: unknown
    assert w.days_left(a, 0.0) is None


async def test_event_stream_carries_tls_expiry() -> None:
    hub = EventHub()
    sub = hub.subscribe()
    hub.publish_tls_expiry("trunk", 3.25, ("127.0.0.1", 5061))
    item = sub.pop()
    assert isinstance(item, dict) and item["event"] == "tls_expiry" and item["days_left"] == 3.25


async def test_phone_registers_over_tls_and_is_qualified_over_its_connection(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    me = certs.pem("me.pem", "localhost", "127.0.0.1")
    tls_port = free_port(0)
    svc = await start(tmp_path, {"1001": {"host": "dynamic", "secret": "pw", "qualify": "yes", "qualifyfreq": 1,
                                          "transport": "tls", "nat": "force_rport"}},
                      f"tlsenable=yes\ntlsbindaddr=127.0.0.1:{tls_port}\ntlscertfile={me}\nrealm=pbx.test")
    try:
        assert svc.engine is not None and svc.sockets.tls is not None
        ctx = ssl.create_default_context(cafile=str(certs.cafile))
        phone = await TcpPhone().connect(("127.0.0.1", tls_port), ssl=ctx, server_hostname="localhost")
        assert (await phone.register_auth(("127.0.0.1", tls_port), "1001", "pw")).status == 200
        p = svc.engine.peer("1001")
        assert p is not None
        await wait_for(lambda: p.state == "OK" and len(phone.options) >= 2, timeout=10)
        opt = phone.options[0]
        assert opt.uri == "sip:1001@127.0.0.1:5999;transport=tls"
        assert opt.headers.get("Via", "").startswith("SIP/2.0/TLS ")
        v = svc.model.view(p)
        assert (v.transport, v.addr_port) == ("tls", phone.port)
        assert svc.engine.stats.retransmissions == 0
        assert svc.sockets.tls.registered == 1  # the connection is pinned to the registration
        phone.close()
        await wait_for(lambda: p.state == "UNREACHABLE", timeout=15)  # the connection is gone: no UDP instead
        assert svc.sockets.tls.stats["no_connection"] >= 1
    finally:
        await svc.close()


async def test_ping_over_tls_verifies_and_reports_why(tmp_path: Path, monkeypatch: Any) -> None:
    """`sipqualify ping sips:host`: one transaction per probe over a verified TLS connection
    (the system store, here SSL_CERT_FILE = the test CA); an expired certificate is the reason."""
    from sipqualify.net.ping import Target, ping, resolve_target

    certs = Certs(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.cafile))
    good = await TlsResponder(certs.server_ctx("localhost")).start()
    bad = await TlsResponder(certs.server_ctx("localhost", expired=True)).start()
    try:
        t = await resolve_target(f"sips:localhost:{good.port}", None)
        assert (t.transport, t.addr) == ("tls", ("127.0.0.1", good.port))
        probes = await ping(t, count=2, interval=0.0, timeout=10)
        assert [(p.answered, p.status, p.transmissions) for p in probes] == [(True, 200, 1), (True, 200, 1)]
        assert good.connections == 1 and good.options[0].headers.get("Via", "").startswith("SIP/2.0/TLS ")
        probes = await ping(Target(f"sips:localhost:{bad.port}", "localhost", ("127.0.0.1", bad.port), "tls"),
                            count=1, timeout=10)
        assert not probes[0].answered and probes[0].reason == "certificate has expired"
    finally:
        good.close()
        bad.close()


async def test_keepalive_on_tls_and_tcp_flows_times_the_pong(tmp_path: Path) -> None:
    """RFC 5626 §4.4.1: `keepalive` on a TCP/TLS flow sends a double-CRLF ping; the single-CRLF
    pong is timed (peer X, the API, /metrics). A peer that never pongs shows the ping waiting."""
    from sipqualify.cli import flow_ping

    certs = Certs(tmp_path)
    trunk = await TlsResponder(certs.server_ctx("localhost", "127.0.0.1"), pong=True).start()
    mute = await TlsResponder(None).start()  # plain TCP, answers OPTIONS but no ping
    svc = await start(tmp_path, {"trunk": peer(trunk.port, keepalive=1),
                                 "mute": {"host": "127.0.0.1", "port": mute.port, "transport": "tcp", "qualify": 500,
                                          "qualifyfreq": 1, "keepalive": 1}},
                      f"tlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\ntcpenable=yes\n"
                      f"tlscertfile={certs.pem('me.pem', 'sipqualify.test')}")
    try:
        assert svc.engine is not None and svc.sockets.tls is not None and svc.sockets.tcp is not None
        tp, mp = svc.engine.peer("trunk"), svc.engine.peer("mute")
        assert tp is not None and mp is not None

        def ka(p: Any) -> dict[str, Any]:
            return svc.model.view(p).flow_keepalive or {"pings": 0, "pongs": 0}

        await wait_for(lambda: ka(tp)["pongs"] >= 2 and ka(mp)["pings"] >= 2, timeout=15)
        t, m = ka(tp), ka(mp)
        assert trunk.pings >= 2 and mute.pings >= 2  # double CRLFs on the wire, one each
        assert t["rtt_s"] is not None and t["rtt_s"] > 0 and t["pings"] >= t["pongs"] >= 2, t
        assert m["pongs"] == 0 and m["rtt_s"] is None and m["unanswered_s"] >= 0.9, m  # pings 1 s apart
        assert tp.state == mp.state == "OK"  # keepalive says nothing about the qualify state
        assert trunk.connections == 1 and mute.connections == 1  # over the kept connections
        assert svc.sockets.tls.stats["pongs_received"] >= 2 and svc.sockets.tcp.stats["pongs_received"] == 0
        assert svc.sockets.tcp.stats["pings_sent"] >= 2
        assert flow_ping(t).endswith(f"ms, {t['pongs']}/{t['pings']} answered")
        assert flow_ping(m).startswith(f"no pong yet, 0/{m['pings']} answered, a ping unanswered for ")
        v = await get(svc, "/api/v1/peers/trunk")
        assert v["flow_keepalive"]["pongs"] >= 2 and v["flow_keepalive"]["rtt_s"] > 0
        _, text = await asyncio.to_thread(scrape, svc)
        assert 'sipqualify_flow_keepalive_rtt_seconds{peer="trunk"}' in text
        assert 'sipqualify_flow_keepalive_rtt_seconds{peer="mute"}' not in text
    finally:
        await svc.close()
        trunk.close()
        mute.close()


async def test_keep_in_via_is_granted_on_stream_flows_only(tmp_path: Path) -> None:
    """RFC 6223 §4.4.1: a request whose top Via has a bare `keep` gets `keep=<seconds>` in the
    response's Via when we answer that transport's keep-alive (the CRLF ping on TCP/TLS); a
    `keep` with a value, and UDP (no STUN keep-alive here), are left as they came."""
    certs = Certs(tmp_path)
    me = certs.pem("me.pem", "localhost", "127.0.0.1")
    tls_port = free_port(0)
    sip_port = free_port()
    conf = sip_conf(tmp_path / "sip.conf", sip_port, {"1001": {"host": "dynamic", "secret": "pw"}},
                    f"tlsenable=yes\ntlsbindaddr=127.0.0.1:{tls_port}\ntlscertfile={me}\nrealm=pbx.test")
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        ctx = ssl.create_default_context(cafile=str(certs.cafile))
        server = ("127.0.0.1", tls_port)
        phone = await TcpPhone().connect(server, ssl=ctx, server_hostname="localhost")

        def with_via_params(lines: list[str], params: str) -> list[str]:
            return [ln + params if ln.startswith("Via: ") else ln for ln in lines]

        opts = with_via_params(options_lines(server), ";keep")
        ok = await phone.request([ln.replace("SIP/2.0/TCP", "SIP/2.0/TLS") for ln in opts])
        assert ok.status == 200 and ok.top_via is not None and ok.top_via.params["keep"] == "120", ok.top_via
        valued = await phone.request(with_via_params(options_lines(server), ";keep=30"))
        assert valued.top_via is not None and valued.top_via.params["keep"] == "30"  # not ours to change
        plain = await phone.request(options_lines(server))
        assert plain.top_via is not None and "keep" not in plain.top_via.params
        phone.writer.write(b"\r\n\r\n")  # and the phone's ping is answered on that flow
        await wait_for(lambda: svc.sockets.tls is not None and svc.sockets.tls.stats["pongs"] == 1, timeout=10)
        phone.close()
        udp = with_via_params(options_lines(("127.0.0.1", sip_port)), ";rport;keep")  # rport: back to us
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not got.done():
                    got.set_result(data)

        tr, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", sip_port))
        try:
            tr.sendto(("\r\n".join(ln.replace("SIP/2.0/TCP", "SIP/2.0/UDP") for ln in udp) +
                       "\r\nContent-Length: 0\r\n\r\n").encode())
            resp = parse_message(await asyncio.wait_for(got, 10))
        finally:
            tr.close()
        assert isinstance(resp, Response) and resp.status == 200
        assert resp.top_via is not None and resp.top_via.params.get("keep", "absent") is None  # bare, as sent
    finally:
        await svc.close()


async def test_tls_connections_read_in_small_buffers_and_take_large_messages(tmp_path: Path) -> None:
    """asyncio preallocates a 256 KiB read buffer per TLS connection (bench/bench_tls.py: ~300
    KiB per connection); ours is TLS_READ_BUFFER, and a message larger than it (a 40 KB body,
    several TLS records) still arrives whole."""
    import asyncio.sslproto

    from sipqualify.net.tcp import TLS_READ_BUFFER

    certs = Certs(tmp_path)
    tls_port = free_port(0)
    svc = await start(tmp_path, {}, f"tlsenable=yes\ntlsbindaddr=127.0.0.1:{tls_port}\n"
                                    f"tlscertfile={certs.pem('me.pem', 'localhost')}")
    try:
        ctx = ssl.create_default_context(cafile=str(certs.cafile))
        server = ("127.0.0.1", tls_port)
        phone = await TcpPhone().connect(server, ssl=ctx, server_hostname="localhost")
        body = "x" * 40_000
        phone.writer.write(("\r\n".join(options_lines(server)).replace("SIP/2.0/TCP", "SIP/2.0/TLS") +
                            f"\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode())
        ok = await asyncio.wait_for(phone.responses.get(), 10)
        assert ok.status == 200
        assert svc.sockets.tls is not None
        (conn,) = svc.sockets.tls.conns.values()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER < 256 * 1024
        assert len(conn.transport._ssl_protocol._ssl_buffer) == TLS_READ_BUFFER  # type: ignore[union-attr]
        phone.close()
    finally:
        await svc.close()


def test_failure_reasons_are_words() -> None:
    """What `peer X` shows: never an exception's class name (the handshake of a peer that
    closes the connection raises a ConnectionResetError without errno nor text)."""
    from sipqualify.net.tls import failure_reason

    assert failure_reason(ConnectionResetError()) == "connection reset"
    assert failure_reason(ConnectionAbortedError()) == "connection closed"
    assert failure_reason(ConnectionResetError("Connection lost")) == "connection lost"
    assert failure_reason(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert failure_reason(TimeoutError()) == "timeout"


async def test_tls_and_tcp_peers_over_ipv6(tmp_path: Path) -> None:
    """IPv6 on the connection transports (issue 11 "Everywhere"): a TLS trunk and a TCP trunk on
    ::1, each qualified over one kept connection from the daemon's IPv6 side."""
    certs = Certs(tmp_path)
    tls = await TlsResponder(certs.server_ctx("localhost", "::1", days=40)).start("::1")
    tcp = await TlsResponder(None).start("::1")
    conf = sip_conf(tmp_path / "sip.conf", free_port(), {
        "v6-tls": peer(tls.port, host="::1"),
        "v6-tcp": {"host": "::1", "port": tcp.port, "transport": "tcp", "qualify": 500, "qualifyfreq": 1},
    }, f"tcpenable=yes\ntlsenable=yes\ntlscafile={certs.cafile}\ntlsbindaddr=127.0.0.1:0\n"
       f"tlscertfile={certs.pem('me6.pem', 'sipqualify.test')}")
    # dual stack, as an operator with IPv6 trunks runs it: the Via names the IPv6 side
    svc = Service(ServiceOptions(conf, "127.0.0.1", 0, str(tmp_path / "s"),
                                 sip_bind=[("127.0.0.1", free_port()), ("::1", free_port())]))
    await svc.start()
    try:
        assert svc.engine is not None
        ptls, ptcp = svc.engine.peer("v6-tls"), svc.engine.peer("v6-tcp")
        assert ptls is not None and ptcp is not None
        await wait_for(lambda: ptls.qualifies >= 2 and ptcp.qualifies >= 2, timeout=15)
        assert (ptls.state, ptcp.state) == ("OK", "OK"), (ptls.transport_error, ptcp.transport_error)
        assert tls.connections == 1 and tcp.connections == 1
        assert tls.options[0].headers.get("Via", "").startswith("SIP/2.0/TLS [")  # an IPv6 Via host
        assert tcp.options[0].headers.get("Via", "").startswith("SIP/2.0/TCP [")
    finally:
        await svc.close()
        tls.close()
        tcp.close()
