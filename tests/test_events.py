"""Server-Sent Events: committed transitions, filters, resume with Last-Event-ID (no gap, no dup)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from sipqualify.service import Service, ServiceOptions

from .helpers import endpoint, free_port, read_events, sip_conf, wait_for


async def test_event_stream_filters_and_resume(tmp_path: Path) -> None:
    ok_t, ok_port = await endpoint(200)
    flap_t, flap_port = await endpoint(200)
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {
        "ok": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes", "qualifyfreq": 1},
        "flap": {"host": "127.0.0.1", "port": flap_port, "qualify": 500, "qualifyfreq": 1},
        "dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500, "qualifyfreq": 1},
    }, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    base = f"http://127.0.0.1:{svc.api_addr[1]}"
    auth = {"Authorization": f"Bearer {svc.token}"}
    try:
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.get(f"{base}/events", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
            async with http.get(f"{base}/events?status=Unreachable") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                got = await read_events(r, 1)
            assert got[0][1]["peer"] == "dead" and got[0][1]["new"] == "UNREACHABLE"
            assert got[0][1]["peer_status"] == "Unreachable" and got[0][1]["old"] == "UNKNOWN"
            await wait_for(lambda: svc.engine.peer("ok").state == "OK")  # type: ignore[union-attr]
            # everything so far, replayed from SQLite after id 0
            async with http.get(f"{base}/events", headers={"Last-Event-ID": "0"}) as r:
                replay = await read_events(r, 3)
            assert {e["peer"] for _, e in replay} == {"ok", "flap", "dead"}
            ids = [i for i, _ in replay]
            assert ids == sorted(ids) and len(set(ids)) == 3
            # resume after the second one: exactly the third, then live events (flap goes down)
            async with http.get(f"{base}/events?peer=flap,dead,ok", headers={"Last-Event-ID": str(ids[1])}) as r:
                first = await read_events(r, 1)
                assert first == [replay[2]]
                flap_t.close()
                live = await read_events(r, 1)
            assert live[0][1]["peer"] == "flap" and live[0][1]["new"] == "UNREACHABLE" and live[0][0] > ids[2]
    finally:
        await svc.close()
        ok_t.close()
