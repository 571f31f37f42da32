"""qualify_source on real sockets (issue 13 item 4, multi-homed hosts): the daemon in-process on
127.0.0.1, peers answered by UAS sockets on 127.0.0.6 that record where each OPTIONS came from
(the kernel's source address of the datagram). One UDP socket per distinct source, opened at
start and on reload, closed when unused; an unbindable source is an error naming the peer."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions
from sipqualify.sip.message import Request, make_response, parse_message

from .helpers import api, cli, free_port, sip_conf, wait_for

Addr = tuple[str, int]
PEER_IP = "127.0.0.6"


class RecordingUas(DemoEndpoint):
    """Answers OPTIONS with 200 to wherever they came from, and keeps (source, Via) of each."""

    def __init__(self) -> None:
        super().__init__(200, "OK")
        self.seen: list[tuple[Addr, str]] = []

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        msg = parse_message(data)
        self.seen.append(((str(addr[0]), int(addr[1])), msg.headers.get("Via") or ""))
        super().datagram_received(data, addr)


async def uas() -> tuple[RecordingUas, int]:
    loop = asyncio.get_running_loop()
    t, proto = await loop.create_datagram_endpoint(RecordingUas, local_addr=(PEER_IP, 0))
    return proto, int(t.get_extra_info("sockname")[1])


def peer(port: int, **opts: object) -> dict[str, object]:
    return {"host": PEER_IP, "port": port, "qualify": 300, "qualifyfreq": 1, **opts}


def states(svc: Service) -> dict[str, str]:
    assert svc.engine is not None
    return {p.name: p.state for p in svc.engine.peers()}


async def test_options_leave_from_the_source_and_sources_follow_reloads(tmp_path: Path) -> None:
    (a, a_port), (b, b_port), (c, c_port), (d, d_port) = [await uas() for _ in range(4)]
    fixed = free_port()
    sip_port = free_port()
    conf = tmp_path / "sip.conf"
    sip_conf(conf, sip_port, {
        "eph": peer(a_port, qualify_source="127.0.0.5"),
        "eph2": peer(d_port, qualify_source="127.0.0.5"),  # the same source: the same socket
        "fixed": peer(b_port, qualify_source=f"127.0.0.7:{fixed}"),
        "plain": peer(c_port),
    }, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        await wait_for(lambda: set(states(svc).values()) == {"OK"})
        socks = svc.sockets.sources
        assert set(socks) == {("127.0.0.5", 0), ("127.0.0.7", fixed)}
        eph = socks[("127.0.0.5", 0)].local
        assert eph[0] == "127.0.0.5" and eph[1] not in (0, sip_port)
        # what the peers saw: the datagram's source, and the same address in the Via
        assert {src for src, _ in a.seen} == {src for src, _ in d.seen} == {eph}
        assert all(via.startswith(f"SIP/2.0/UDP 127.0.0.5:{eph[1]};branch=") for _, via in a.seen + d.seen)
        assert {src for src, _ in b.seen} == {("127.0.0.7", fixed)}
        assert all(via.startswith(f"SIP/2.0/UDP 127.0.0.7:{fixed};") for _, via in b.seen)
        assert {src for src, _ in c.seen} == {("127.0.0.1", sip_port)}  # the default: the SIP socket
        assert svc.counters.source_errors == 0
        shown = {p["name"]: p["qualify_source"] for p in (await api(svc, "GET", "/api/v1/peers"))[1]["peers"]}
        assert shown == {"eph": f"127.0.0.5:{eph[1]}", "eph2": f"127.0.0.5:{eph[1]}", "fixed": f"127.0.0.7:{fixed}",
                         "plain": None}

        # reload: 127.0.0.5 no longer used (closed), 127.0.0.7 kept as it is, 127.0.0.8 opened
        kept, gone = socks[("127.0.0.7", fixed)], socks[("127.0.0.5", 0)]
        sip_conf(conf, sip_port, {
            "eph": peer(a_port, qualify_source="127.0.0.8"),
            "eph2": peer(d_port),
            "fixed": peer(b_port, qualify_source=f"127.0.0.7:{fixed}"),
            "plain": peer(c_port),
        }, "qualifygap=10")
        await svc.reload()
        assert set(svc.sockets.sources) == {("127.0.0.7", fixed), ("127.0.0.8", 0)}
        assert svc.sockets.sources[("127.0.0.7", fixed)] is kept and gone.closed
        new = svc.sockets.sources[("127.0.0.8", 0)].local
        a.seen.clear()
        d.seen.clear()
        await wait_for(lambda: len(a.seen) >= 2 and len(d.seen) >= 2)  # a re-poll after the reload
        assert {src for src, _ in a.seen} == {new}
        assert {src for src, _ in d.seen} == {("127.0.0.1", sip_port)}
        assert set(states(svc).values()) == {"OK"}
    finally:
        await svc.close()


async def test_an_unbindable_source_is_an_error_naming_the_peer_and_nothing_is_sent(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (a, a_port), (c, c_port) = [await uas() for _ in range(2)]
    taken = free_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # somebody else's socket on that address
    holder.bind(("127.0.0.5", taken))
    conf = tmp_path / "sip.conf"
    peers = {"busy": peer(a_port, qualify_source=f"127.0.0.5:{taken}"), "plain": peer(c_port)}
    sip_conf(conf, free_port(), peers, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    caplog.set_level(logging.ERROR, "sipqualify")
    await svc.start()
    try:
        why = f"qualify_source 127.0.0.5:{taken}: cannot bind: Address already in use (EADDRINUSE)"
        assert svc.counters.source_errors == 1
        assert f"peer 'busy': qualify_source 127.0.0.5:{taken} cannot bind: Address already in use " \
               "(EADDRINUSE); its qualify requests are not sent" in caplog.text
        code, body = await api(svc, "GET", "/api/v1/peers/busy")
        assert code == 200 and body["transport_error"] == why  # shown at once
        assert body["qualify_source"] == f"127.0.0.5:{taken}"  # as configured: it has no socket
        rc, out, _ = await cli("peer", "busy", "--api", f"127.0.0.1:{svc.api_addr[1]}", "--state-dir",
                               str(tmp_path / "s"))
        assert rc == 0 and f"\n  Qualify from : 127.0.0.5:{taken}\n  Transport err: {why}\n" in out
        await wait_for(lambda: states(svc) == {"busy": "UNREACHABLE", "plain": "OK"})
        assert a.seen == []  # never sent from the SIP socket instead
        assert svc.engine is not None and svc.engine.stats.source_errors > 0

        holder.close()  # the address is free again: the next reload binds it
        await svc.reload()
        assert svc.counters.source_errors == 1
        await wait_for(lambda: states(svc)["busy"] == "OK")
        assert {src for src, _ in a.seen} == {("127.0.0.5", taken)}
        code, body = await api(svc, "GET", "/api/v1/peers/busy")
        assert body["transport_error"] is None  # cleared by the answer
    finally:
        holder.close()
        await svc.close()


async def test_a_tcp_peer_is_connected_to_from_the_source_address(tmp_path: Path) -> None:
    """TCP (and TLS): the connection we open to the peer is bound to the source's address (a free
    port); the answer comes back over it."""
    peers: list[Addr] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peers.append(w.get_extra_info("peername")[:2])
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")  # our OPTIONS: Content-Length 0
                req = parse_message(head)
                assert isinstance(req, Request)
                w.write(make_response(req, 200, "OK", to_tag="tcp").to_bytes())
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    server = await asyncio.start_server(serve, PEER_IP, 0)
    port = int(server.sockets[0].getsockname()[1])
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {"tcp": peer(port, transport="tcp", qualify_source="127.0.0.5:5999")},
             "tcpenable=yes")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        await wait_for(lambda: states(svc) == {"tcp": "OK"})
        assert len(peers) == 1 and peers[0][0] == "127.0.0.5" and peers[0][1] != 5999
        assert svc.sockets.sources == {}  # no UDP socket for a tcp peer
    finally:
        await svc.close()
        server.close()


async def test_ipv6_source_and_the_sip_sockets_own_address(tmp_path: Path) -> None:
    """`[::1]:port` reaches an IPv6 peer from a daemon whose SIP socket is IPv4 only; a source that
    is the SIP socket's own address is that socket (no second bind, not closed when unused)."""
    loop = asyncio.get_running_loop()
    t6, v6 = await loop.create_datagram_endpoint(RecordingUas, local_addr=("::1", 0))
    v6_port = int(t6.get_extra_info("sockname")[1])
    own, own_port = await uas()
    fixed, sip_port = free_port(), free_port()
    conf = tmp_path / "sip.conf"
    sip_conf(conf, sip_port, {
        "v6": {"host": "::1", "port": v6_port, "qualify": 300, "qualifyfreq": 1, "qualify_source": f"[::1]:{fixed}"},
        "own": peer(own_port, qualify_source=f"127.0.0.1:{sip_port}"),
    }, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s"), sip_bind=[("127.0.0.1", sip_port)]))
    await svc.start()
    try:
        await wait_for(lambda: states(svc) == {"v6": "OK", "own": "OK"})
        assert {src for src, _ in v6.seen} == {("::1", fixed)}
        assert all(via.startswith(f"SIP/2.0/UDP [::1]:{fixed};branch=") for _, via in v6.seen)
        main = svc.sockets.sources[("127.0.0.1", sip_port)]
        assert main in svc.sockets.endpoints.values()  # the SIP socket itself
        assert {src for src, _ in own.seen} == {("127.0.0.1", sip_port)}
        sip_conf(conf, sip_port, {"own": peer(own_port)}, "qualifygap=10")
        await svc.reload()
        assert svc.sockets.sources == {} and not main.closed
    finally:
        await svc.close()
        t6.close()


async def test_a_request_to_a_source_address_is_answered_from_it(tmp_path: Path) -> None:
    """A peer qualifying us back at the address our OPTIONS came from gets its answer from that
    address (its transaction, and a NAT on the way, expect it there), not from the SIP socket."""
    a, a_port = await uas()
    fixed, sip_port = free_port(), free_port()
    conf = tmp_path / "sip.conf"
    sip_conf(conf, sip_port, {"eph": peer(a_port, qualify_source=f"127.0.0.5:{fixed}")}, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind((PEER_IP, 0))
            phone.setblocking(False)
            me = phone.getsockname()[1]
            loop = asyncio.get_running_loop()
            for to in (("127.0.0.5", fixed), ("127.0.0.1", sip_port)):
                req = (f"OPTIONS sip:{to[0]}:{to[1]} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {PEER_IP}:{me};branch=z9hG4bK{to[1]}back;rport\r\n"
                       f"From: <sip:peer@{PEER_IP}>;tag=1\r\nTo: <sip:{to[0]}>\r\nCall-ID: back{to[1]}@{PEER_IP}\r\n"
                       "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
                await loop.sock_sendto(phone, req, to)
                data, frm = await asyncio.wait_for(loop.sock_recvfrom(phone, 65535), 5)
                assert data.startswith(b"SIP/2.0 200 OK") and frm == to  # each from where it was sent to
    finally:
        await svc.close()
