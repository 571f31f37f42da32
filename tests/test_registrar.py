"""Registrar (issue 4, part): digest-authenticated REGISTER, bindings stored before the 200,
qualify through the address the REGISTER came from, expiry, unregister, restart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sipqualify.sip.digest import authorization
from sipqualify.sip.message import Response

from .helpers import Phone, read_sse, start_registrar, wait_for


async def test_register_qualify_unregister_restart(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    phone_port = t.get_extra_info("sockname")[1]
    svc, server = await start_registrar(tmp_path)
    try:
        assert svc.engine is not None
        assert svc.engine.peer("1001").status == "UNKNOWN"  # type: ignore[union-attr]
        # challenge, then 200 with the binding's expiry; the peer is qualified at once
        ok = await phone.register_auth(server, "1001", "s3cret", expires=300,
                                       contact="<sip:1001@192.168.1.50:5060>")  # a private Contact
        assert ok.status == 200 and "expires=300" in (ok.headers.get("Contact") or "")
        with sqlite3.connect(tmp_path / "s" / "bindings.sqlite") as db:  # stored before the 200
            assert db.execute("SELECT ip, port FROM bindings WHERE peer='1001'").fetchone() == (
                "127.0.0.1", phone_port)
        await wait_for(lambda: svc.engine.peer("1001").state == "OK")  # type: ignore[union-attr]
        assert phone.options >= 1  # OPTIONS went to the received address, not 192.168.1.50
        v = svc.model.view(svc.engine.peer("1001"))  # type: ignore[arg-type]
        assert (v.addr_ip, v.addr_port, v.useragent) == ("127.0.0.1", phone_port, "TestPhone/1.0")
        assert 290 < v.expire <= 300 and v.regcontact == "sip:1001@192.168.1.50:5060"

        # md5secret works; wrong password and unknown user look the same (no enumeration)
        assert (await phone.register_auth(server, "1002", "pw2")).status == 200
        wrong = await phone.register_auth(server, "1001", "nope")
        ghost = await phone.register_auth(server, "ghost", "nope")
        assert (wrong.status, wrong.reason) == (ghost.status, ghost.reason) == (403, "Forbidden")
        notdyn = await phone.register_auth(server, "trunk", "x")
        assert notdyn.status == 403
        # too brief -> 423 with Min-Expires
        brief = await phone.register_auth(server, "1001", "s3cret", expires=10)
        assert brief.status == 423 and brief.headers.get("Min-Expires") == "30"

        # unregister: Expires 0 -> binding gone, next poke makes the peer UNKNOWN
        gone = await phone.register_auth(server, "1001", "s3cret", expires=0)
        assert gone.status == 200
        with sqlite3.connect(tmp_path / "s" / "bindings.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM bindings WHERE peer='1001'").fetchone() == (0,)
        await wait_for(lambda: svc.engine.peer("1001").state == "UNKNOWN", timeout=5)  # type: ignore[union-attr]
    finally:
        await svc.close()

    # restart: 1002's binding is restored and qualified; expiry still honoured
    svc2, _ = await start_registrar(tmp_path)
    try:
        assert svc2.engine is not None
        assert svc2.engine.peer("1002").addr == ("127.0.0.1", phone_port)  # type: ignore[union-attr]
        await wait_for(lambda: svc2.engine.peer("1002").state == "OK")  # type: ignore[union-attr]
        assert svc2.engine.peer("1001").addr is None  # type: ignore[union-attr]
    finally:
        await svc2.close()
        t.close()


async def test_binding_expires_on_time(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        assert svc.registrar is not None and svc.engine is not None
        svc.registrar.settings.minexpiry = 1
        assert (await phone.register_auth(server, "1001", "s3cret", expires=2)).status == 200
        await wait_for(lambda: svc.engine.peer("1001").state == "OK")  # type: ignore[union-attr]
        await wait_for(lambda: "1001" not in svc.registrar.bindings, timeout=5)  # type: ignore[union-attr]
        await wait_for(lambda: svc.engine.peer("1001").state == "UNKNOWN", timeout=5)  # type: ignore[union-attr]
    finally:
        await svc.close()
        t.close()


async def test_repeated_failures_ban_one_source_only(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    t1, attacker = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    t2, good = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.2", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        assert svc.registrar is not None
        svc.registrar.settings.authfail_limit = 3
        for _ in range(3):
            assert (await attacker.register_auth(server, "1001", "guess")).status == 403
        try:  # banned: not even a 401 any more
            await attacker.register(server, "1001")
            raise AssertionError("a banned source got an answer")
        except TimeoutError:
            pass
        assert svc.registrar.counters["banned"] == 1 and svc.registrar.counters["dropped_banned"] >= 1
        assert (await good.register_auth(server, "1001", "s3cret")).status == 200  # other sources unaffected
    finally:
        await svc.close()
        t1.close()
        t2.close()


async def test_registry_events_on_the_event_stream(tmp_path: Path) -> None:
    import aiohttp

    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    svc, server = await start_registrar(tmp_path)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {svc.token}"}) as http:
            async with http.get(f"http://127.0.0.1:{svc.api_addr[1]}/events?peer=1001") as r:
                await wait_for(lambda: len(svc.events.subscribers) == 1)  # subscribed before the REGISTER
                assert (await phone.register_auth(server, "1001", "s3cret")).status == 200
                got = await read_sse(r.content, "registry", bool)
        assert got[0]["peer"] == "1001" and got[0]["peer_status"] == "Registered"
        assert got[0]["address"].startswith("127.0.0.1:")
    finally:
        await svc.close()
        t.close()


async def test_retransmitted_register_gets_the_same_answer(tmp_path: Path) -> None:
    """RFC 3261 §17.2.2: a retransmission is not a new request. The first REGISTER's copy gets
    the same 401 (same nonce, same To tag), the authenticated one's copy the same 200 — not a
    fresh challenge and not a 403 for a replayed nonce count (which would count towards a ban)."""
    loop = asyncio.get_running_loop()
    t, phone = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    port = t.get_extra_info("sockname")[1]
    svc, server = await start_registrar(tmp_path)
    try:
        def raw(cseq: int, auth: str = "") -> bytes:
            lines = [f"REGISTER sip:127.0.0.1:{server[1]} SIP/2.0",
                     f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKretx{cseq};rport", "Max-Forwards: 70",
                     "From: <sip:1001@127.0.0.1>;tag=rt", "To: <sip:1001@127.0.0.1>", "Call-ID: retx@phone",
                     f"CSeq: {cseq} REGISTER", f"Contact: <sip:1001@127.0.0.1:{port}>", "Expires: 300"]
            if auth:
                lines.append(f"Authorization: {auth}")
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        async def twice(data: bytes) -> tuple[Response, Response]:
            t.sendto(data, server)
            t.sendto(data, server)  # the retransmission, while the first may still be in hand
            a = await asyncio.wait_for(phone.responses.get(), 5)
            b = await asyncio.wait_for(phone.responses.get(), 5)
            return a, b

        c1, c2 = await twice(raw(1))
        assert c1.status == c2.status == 401 and c1.to_bytes() == c2.to_bytes()
        auth = authorization(c1.headers.get_all("WWW-Authenticate")[0], "1001", "s3cret", "REGISTER",
                             f"sip:127.0.0.1:{server[1]}")
        # the copy that arrives while the binding is being committed (Trying) is absorbed ...
        t.sendto(raw(2, auth), server)
        t.sendto(raw(2, auth), server)
        r1 = await asyncio.wait_for(phone.responses.get(), 5)
        await wait_for(lambda: svc.model.registrar_stats()["retransmissions_absorbed"] == 1)  # type: ignore[index]
        assert r1.status == 200 and phone.responses.empty()
        # ... and a later one (the phone's T1 retransmission) gets the stored 200 again
        t.sendto(raw(2, auth), server)
        r2 = await asyncio.wait_for(phone.responses.get(), 5)
        assert r2.to_bytes() == r1.to_bytes()
        stats = svc.model.registrar_stats()
        assert stats is not None and stats["forbidden"] == 0 and stats["registered"] == 1
        assert stats["retransmissions_absorbed"] == 1 and stats["retransmissions_answered"] == 2
    finally:
        await svc.close()
        t.close()
