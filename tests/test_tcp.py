"""SIP over TCP, inbound (tcpenable=yes): CRLF keepalives, OPTIONS answered on the connection,
REGISTER over TCP and qualify over the phone's own connection, loss of that connection, and
the limits (framing errors, connections per address, idle timeout)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from sipqualify.api.metrics import SipqualifyCollector
from sipqualify.service import Service, ServiceOptions

from .helpers import TcpPhone, free_port, options_lines, wait_for

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


async def read_closed(reader: asyncio.StreamReader, timeout: float = 10.0) -> bool:
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
        assert await asyncio.wait_for(reader.readexactly(2), 10) == b"\r\n"
        with_more = asyncio.create_task(reader.read(1))
        await asyncio.sleep(0.2)  # real time passes to show that nothing else is sent (no condition to wait on)
        assert not with_more.done()  # exactly one CRLF, nothing else
        with_more.cancel()
        writer.write(b"\r\n\r\n\r\n\r\n")  # two pings: two pongs
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\r\n\r\n"
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
        st = svc.model.status()["tcp"]
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
        v = svc.model.view(svc.engine.peer("1001"))  # type: ignore[arg-type]
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
        # next poke within qualifyfreq=1 s finds no connection, give-up 2 x 200 ms later: 1.4 s at
        # most, 3 s with room for a loaded machine (the full qualify timeouts would be far longer)
        await wait_for(lambda: svc.engine.peer("1003").state == "UNREACHABLE", timeout=8)  # type: ignore[union-attr]
        assert time.monotonic() - t0 < 3.0
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
        await wait_for(lambda: len(svc.tcp.conns) == 1)  # type: ignore[union-attr]
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
            assert await asyncio.wait_for(r.readexactly(2), 10) == b"\r\n"
        r3, w3 = await asyncio.open_connection(*server)
        assert await read_closed(r3)  # the third is refused at once
        assert svc.tcp.stats["refused"] == 1 and svc.tcp.stats["accepted"] == 2
        conns[0][1].close()
        await wait_for(lambda: len(svc.tcp.conns) == 1)  # type: ignore[union-attr]
        svc.tcp.idle_timeout = 0.3
        r4, w4 = await asyncio.open_connection(*server)  # room again; closed when idle
        t0 = time.monotonic()  # before the ping: the idle time counts from its arrival, so >= 0.3 s
        w4.write(b"\r\n\r\n")
        assert await asyncio.wait_for(r4.readexactly(2), 10) == b"\r\n"
        assert await read_closed(r4, timeout=10)
        # 0.3 s idle timeout; the upper bound leaves room for a loaded machine and is far below
        # the default idle timeout
        assert 0.2 < time.monotonic() - t0 < 3.0 and svc.tcp.stats["idle_closed"] == 1
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
    await asyncio.wait_for(phone.closed.wait(), 10)  # the daemon's connections went with it
    svc, _ = await start(tmp_path, server[1])
    try:
        assert svc.engine is not None and svc.tcp is not None
        v = svc.model.view(svc.engine.peer("1003"))  # type: ignore[arg-type]
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


def unfinished_options(server: tuple[str, int], body: int) -> tuple[bytes, bytes]:
    """An OPTIONS with a `body`-byte body, split into its first part (all but the last 1000
    bytes: an unfinished message) and the rest."""
    head = "\r\n".join(options_lines(server)) + f"\r\nContent-Length: {body}\r\n\r\n"
    raw = head.encode() + b"b" * body
    return raw[:-1000], raw[-1000:]


def buffered(svc: Service) -> int:
    """What the framers of all open connections hold now, counted independently of the server."""
    assert svc.tcp is not None
    return sum(len(c.framer._buf) for c in svc.tcp.conns.values())


async def test_unfinished_bytes_budget_closes_hostile_connections_not_a_registered_phone(tmp_path: Path) -> None:
    """Item 2: many connections each holding an unfinished 60 KB message may not hold more
    than the total budget; the ones closed are never the connection a phone registered over,
    even when that phone holds an unfinished message just as big."""
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        budget = 256 * 1024
        svc.tcp.max_unfinished = budget
        svc.tcp.message_timeout = 3600  # only the budget closes connections here
        phone = await TcpPhone().connect(server)
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
        phone.answer = False  # its answers to our OPTIONS would land inside its unfinished message
        first, rest = unfinished_options(server, 59_000)
        phone.writer.write(first)  # the phone's own unfinished 60 KB message
        await wait_for(lambda: buffered(svc) >= len(first), timeout=5)
        hostile = []
        for i in range(40):  # from 4 addresses, 10 each
            r, w = await asyncio.open_connection(*server, local_addr=(f"127.0.0.{2 + i % 4}", 0))
            w.write(unfinished_options(server, 59_000)[0])
            hostile.append((r, w, asyncio.create_task(read_closed(r, timeout=30))))
        # 256 KiB hold four messages of 60 KB: the phone's and at most three hostile ones
        await wait_for(lambda: sum(t.done() for _, _, t in hostile) >= 40 - 3, timeout=15)
        assert buffered(svc) <= budget
        snap = svc.tcp.snapshot()
        assert snap["unfinished_evicted"] >= 40 - 3
        assert snap["now"]["unfinished_bytes"] == buffered(svc)
        assert snap["now"]["unfinished_bytes_peak"] <= budget
        assert ("127.0.0.1", phone.port) in svc.tcp.conns  # the registered phone kept its connection
        gauges = {s.labels["what"]: s.value for fam in SipqualifyCollector(svc.model).collect()
                  if getattr(fam, "name", "") == "sipqualify_tcp_gauge" for s in fam.samples}  # type: ignore[attr-defined]
        assert gauges["registered_connections"] == 1 and gauges["max_unfinished_bytes"] == budget
        assert gauges["unfinished_bytes"] == snap["now"]["unfinished_bytes"]
        phone.writer.write(rest)  # ... and its message, finished now, is answered
        ok = await asyncio.wait_for(phone.responses.get(), 5)
        assert ok.status == 200 and ok.headers.get("CSeq") == "1 OPTIONS"
        assert (await phone.request(options_lines(server))).status == 200
        for _, w, t in hostile:
            w.close()
            t.cancel()
        phone.close()
    finally:
        await svc.close()


async def poll_closed(reader: asyncio.StreamReader, deadline: float, trickle: Any = None) -> float:
    """Reads until the server closes the connection; `trickle()` runs between reads (a
    slowloris sending a byte now and then). Returns when it closed (monotonic)."""
    t_end = time.monotonic() + deadline
    while time.monotonic() < t_end:
        try:
            data = await asyncio.wait_for(reader.read(65536), 0.1)
            if not data:
                return time.monotonic()
        except TimeoutError:
            if trickle is not None:
                trickle()
        except ConnectionError:
            return time.monotonic()
    raise AssertionError("the server did not close the connection")


async def test_unfinished_message_times_out(tmp_path: Path) -> None:
    """Item 2 (slowloris): a message that is not finished within tcp_message_timeout closes
    its connection, even while bytes keep trickling in (which resets the idle timeout); a
    phone sending single-CRLF keepalives holds no unfinished message and stays."""
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        svc.tcp.message_timeout = 0.5
        keepalive = await TcpPhone().connect(server)
        keepalive.writer.write(b"\r\n")  # a lone CRLF: not the start of a message
        r1, w1 = await asyncio.open_connection(*server)
        t0 = time.monotonic()
        w1.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999\r\n")
        t_closed = await poll_closed(r1, 10)
        assert t_closed - t0 >= 0.4
        r2, w2 = await asyncio.open_connection(*server)
        w2.write(b"OPTIONS sip:x SIP/2.0\r\n")
        await poll_closed(r2, 10, trickle=lambda: w2.write(b"X"))  # a byte every 0.1 s
        assert svc.tcp.stats["message_timeouts"] == 2 and svc.tcp.stats["idle_closed"] == 0
        assert ("127.0.0.1", keepalive.port) in svc.tcp.conns
        assert (await keepalive.request(options_lines(server))).status == 200
        for w in (w1, w2):
            w.close()
        keepalive.close()
    finally:
        await svc.close()


async def test_connection_cap_evicts_the_least_active_unregistered_never_a_registered(tmp_path: Path) -> None:
    """Item 2 (lock-out): with the cap reached by idle connections that never registered, a
    phone still gets in (the least recently active unregistered connection makes room); once
    the cap is all registered phones, a newcomer is refused instead."""
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        svc.tcp.max_connections = 3
        a = await TcpPhone().connect(server)
        assert (await a.register_auth(server, "1001", "s3cret")).status == 200
        idle = [await asyncio.open_connection(*server, local_addr=(f"127.0.0.{i}", 0)) for i in (2, 3)]
        for r, w in idle:  # both admitted
            w.write(b"\r\n\r\n")
            assert await asyncio.wait_for(r.readexactly(2), 10) == b"\r\n"
        idle[1][1].write(b"\r\n\r\n")  # the second one was active last
        assert await asyncio.wait_for(idle[1][0].readexactly(2), 10) == b"\r\n"
        b = await TcpPhone().connect(server)  # the cap is reached: the first idle one goes
        assert await read_closed(idle[0][0])
        assert (await b.register_auth(server, "1003", "pw3")).status == 200
        c = await TcpPhone().connect(server)  # ... then the second
        assert await read_closed(idle[1][0])
        assert (await c.register_auth(server, "1004", "pw4")).status == 200
        r4, w4 = await asyncio.open_connection(*server)  # all three registered: refused
        assert await read_closed(r4)
        assert svc.tcp.stats["evicted"] == 2 and svc.tcp.stats["refused"] == 1
        for ph in (a, b, c):
            assert (await ph.request(options_lines(server))).status == 200
            ph.close()
        for _, w in (*idle, (r4, w4)):
            w.close()
    finally:
        await svc.close()


async def test_a_connection_whose_binding_is_gone_may_make_room_again(tmp_path: Path) -> None:
    """Kept when room is needed only while a phone is registered over it: after Expires: 0 the
    connection is an ordinary one again (the least recently active makes room first)."""
    svc, server = await start(tmp_path)
    try:
        assert svc.tcp is not None
        phone = await TcpPhone().connect(server)
        assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
        addr = ("127.0.0.1", phone.port)
        assert svc.tcp.registered == 1 and svc.tcp.conns[addr].registered and addr not in svc.tcp.lru
        assert (await phone.register_auth(server, "1001", "s3cret", expires=0)).status == 200
        assert svc.tcp.registered == 0 and not svc.tcp.conns[addr].registered and addr in svc.tcp.lru
        phone.close()
    finally:
        await svc.close()


async def test_ping_over_tcp_is_one_transaction_without_retransmissions(tmp_path: Path) -> None:
    """`sipqualify ping` over TCP drives the same ClientTransaction as over UDP (reliable: one
    send); the daemon answers the OPTIONS on the connection."""
    from sipqualify.net.ping import Target, ping

    svc, server = await start(tmp_path)
    try:
        uri = f"sip:127.0.0.1:{server[1]};transport=tcp"
        probes = await ping(Target(uri, "127.0.0.1", server, "tcp"), count=2, interval=0.0, timeout=10)
        assert [(p.answered, p.status, p.transmissions) for p in probes] == [(True, 200, 1), (True, 200, 1)]
    finally:
        await svc.close()
