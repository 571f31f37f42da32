"""Event stream fan-out against subscribers that do not read: bounded queues, slow ones dropped
(and told where to resume), a normal reader gets every event, a cap on concurrent streams."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp

from sipqualify.service import Service
from sipqualify.store import TransitionRecord

from .helpers import start_api, wait_for

PEER = "p" * 400  # large events fill socket buffers quickly


def stalled_subscriber(svc: Service) -> socket.socket:
    """A real connection with a tiny receive buffer that asks for /events and never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.connect(svc.api_addr)
    s.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {svc.token}\r\n\r\n".encode())
    return s


def rec(i: int) -> TransitionRecord:
    return TransitionRecord(i, PEER, 1e9 + i, "OK", "UNREACHABLE", -1, 2000, None)


async def test_slow_subscribers_are_dropped_and_a_reader_gets_every_event(tmp_path: Path) -> None:
    svc = await start_api(tmp_path)
    hub = svc.events
    hub.queue_max = 200
    slow = [stalled_subscriber(svc) for _ in range(50)]
    received: list[int] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {svc.token}"}) as http:
            async with http.get(f"http://127.0.0.1:{svc.api_addr[1]}/events") as r:
                await wait_for(lambda: len(hub.subscribers) == 51)

                async def read() -> None:
                    async for raw in r.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("id: "):
                            received.append(int(line[4:]))

                reader = asyncio.create_task(read())
                n = 0
                for _burst in range(40):  # bursts of 50; the reader keeps up between them
                    for _ in range(50):
                        n += 1
                        hub.publish(rec(n))
                    await wait_for(lambda n=n: len(received) == n, timeout=30)  # type: ignore[misc]
                assert hub.dropped_subscribers == 50 and len(hub.subscribers) == 1  # the reader
                reader.cancel()
        assert received == list(range(1, n + 1))  # every event, in order, none twice
        assert hub.max_queued <= hub.queue_max
        # dropped means disconnected: each slow socket reaches EOF once it is read
        def until_eof(s: socket.socket) -> None:
            s.settimeout(30)
            try:
                while s.recv(65536):
                    pass
            except ConnectionResetError:
                pass

        for s in slow:
            await asyncio.to_thread(until_eof, s)
    finally:
        for s in slow:
            s.close()
        await svc.close()


async def test_a_dropped_subscriber_is_told_where_to_resume(tmp_path: Path) -> None:
    svc = await start_api(tmp_path)
    hub = svc.events
    hub.queue_max = 100
    s = stalled_subscriber(svc)
    try:
        await wait_for(lambda: len(hub.subscribers) == 1)
        (sub,) = hub.subscribers
        hub.publish(rec(1))
        await wait_for(lambda: not sub.items)  # taken by the stream, written to the connection
        n = 1
        while hub.dropped_subscribers == 0:  # then a burst it cannot take: its queue overflows
            n += 1
            hub.publish(rec(n))
        assert n == hub.queue_max + 2
        s.settimeout(30)
        data = b""
        while True:
            chunk = await asyncio.to_thread(s.recv, 65536)
            if not chunk:
                break
            data += chunk
        text = data.decode()
        before, overflow = text.split("event: overflow\n")
        assert [line for line in before.split("\n") if line.startswith("id: ")] == ["id: 1", "id: 1"]
        assert before.endswith("id: 1\n")  # the overflow event carries the id to resume after
        assert json.loads(overflow.split("data: ", 1)[1].split("\n", 1)[0])["last_id"] == 1
        assert text.endswith("\r\n0\r\n\r\n")  # the stream ended properly, then the connection
    finally:
        s.close()
        await svc.close()


async def test_concurrent_subscribers_are_capped(tmp_path: Path) -> None:
    svc = await start_api(tmp_path, api_max_event_subscribers=2)
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {svc.token}"}) as http:
            url = f"http://127.0.0.1:{svc.api_addr[1]}/events"
            async with http.get(url) as a, http.get(url) as b:
                assert a.status == b.status == 200
                await wait_for(lambda: len(svc.events.subscribers) == 2)
                async with http.get(url) as c:
                    assert c.status == 503
            await wait_for(lambda: len(svc.events.subscribers) == 0)
            async with http.get(url) as d:
                assert d.status == 200
    finally:
        await svc.close()
