"""The verdict (issue 13) everywhere state is: /api/v1/peers(/X), /metrics, the event stream and
`peer X --verdict`; the compat outputs unchanged. A real daemon on 127.0.0.1 and a UAS answering 503."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from sipqualify.compat import format_sip_show_peer
from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions
from sipqualify.views import PeerView, format_stats, format_verdict

from .helpers import api, free_port, read_sse, scrape, sip_conf, wait_for


async def test_verdict_on_api_metrics_events_and_cli(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    uas = DemoEndpoint(200, "OK")
    t, _ = await loop.create_datagram_endpoint(lambda: uas, local_addr=("127.0.0.1", port))
    sip = sip_conf(tmp_path / "sip.conf", free_port(), {
        "busy": {"host": "127.0.0.1", "port": port, "qualify": "yes", "reply_up": "2xx",
                 "reply_degraded": "503"},
        "plain": {"host": "127.0.0.1", "port": port, "qualify": "yes"},
    }, "qualifygap=10")
    svc = Service(ServiceOptions(sip, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {svc.token}"}) as http:
            async with http.get(f"http://127.0.0.1:{svc.api_addr[1]}/events?peer=busy&include=verdict") as r:
                await wait_for(lambda: len(svc.events.subscribers) == 1)
                uas.status, uas.reason = 503, "Service Unavailable"  # up (if polled already), then degraded
                code, _ = await api(svc, "POST", "/api/v1/peers/busy/qualify")
                assert code == 200
                got = await read_sse(r.content, "verdict", lambda g: g[-1]["verdict"] == "degraded")
        assert (got[-1]["peer"], got[-1]["verdict"], got[-1]["reason"]) == ("busy", "degraded", "degraded:503")
        assert got[-1]["policy"] == "" and got[-1]["old"] in ("unknown", "up")

        code, body = await api(svc, "GET", "/api/v1/peers/busy")
        assert code == 200
        assert (body["verdict"], body["reason"], body["policy"]) == ("degraded", "degraded:503", "")
        assert body["state"] == "OK" and body["status"].startswith("OK (")  # chan_sip's view unchanged
        code, _ = await api(svc, "POST", "/api/v1/peers/plain/qualify")  # any final response is up
        code, body = await api(svc, "GET", "/api/v1/peers")
        assert body["peers"][[p["name"] for p in body["peers"]].index("busy")]["verdict"] == "degraded"

        code, text = await asyncio.to_thread(scrape, svc)
        assert 'sipqualify_peer_verdict{peer="busy",verdict="degraded"} 1' in text
        assert 'sipqualify_peer_verdict{peer="busy",verdict="up"} 0' in text
        assert 'sipqualify_peer_verdict{peer="plain",verdict="up"} 1' in text  # 503 is up without a policy

        assert "sipqualify_peer_latency_estimate_seconds{peer=\"busy\"}" in text
        assert 'sipqualify_peer_loss_ratio{peer="busy"} 0.0' in text
        code, stats = await api(svc, "GET", "/api/v1/peers/busy/stats")
        assert code == 200 and stats["verdict"] == "degraded" and stats["samples"] >= 1
        assert stats["loss_pct"] == 0.0 and stats["avg_ms"] > 0
        assert stats["est_ms"] == stats["avg_ms"]  # EST is the mean during the 10-sample warm-up (Kamailio)
        assert (await api(svc, "GET", "/api/v1/peers/nope/stats"))[0] == 404
        assert format_stats(stats).startswith("  Latency      : avg ")
        # percentiles and uptime over time windows, from the history (store/windows.py)
        assert set(stats["rtt_windows"]) == {"5m", "1h", "24h"} and set(stats["uptime"]) == {"24h", "7d", "30d"}
        await asyncio.to_thread(svc.store.flush)  # type: ignore[union-attr]
        code, stats = await api(svc, "GET", "/api/v1/peers/busy/stats")
        assert stats["rtt_windows"]["5m"]["samples"] >= 1 and stats["rtt_windows"]["5m"]["p50_ms"] > 0
        assert stats["uptime"]["24h"]["pct"] == 100.0  # OK since it was first answered
        assert "  RTT p50/95/99: 5m " in format_stats(stats) and "  Uptime       : 24h 100.000 %" in format_stats(stats)

        v = PeerView.from_json((await api(svc, "GET", "/api/v1/peers/busy"))[1])
        assert format_verdict(v) == "  Verdict      : degraded (degraded:503)\n  Policy       : (none)\n\n"
        assert "Verdict" not in format_sip_show_peer(v)
    finally:
        await svc.close()
        t.close()


def test_format_verdict_pending() -> None:
    v = PeerView.from_json({**_minimal(), "verdict": "pending", "reason": "timeout", "policy": "trunks",
                            "pending_toward": "down", "pending_count": 1, "pending_of": 3})
    assert format_verdict(v) == "  Verdict      : pending (timeout), 1 of 3 toward down\n  Policy       : trunks\n\n"


def _minimal() -> dict[str, Any]:
    from dataclasses import MISSING, fields
    return {f.name: 0 for f in fields(PeerView) if f.default is MISSING}


async def test_flapping_on_api_metrics_events_and_marked_transitions(tmp_path: Path) -> None:
    """Flap damping (README "Flap damping"): 404/200 flips make the peer flapping; the API,
    /metrics and `event: flap` say so; a chan_sip transition meanwhile is stored and streamed
    with `suppressed: "flapping"` (webhooks skip it)."""
    from sipqualify.api.events import event_json

    loop = asyncio.get_running_loop()
    port = free_port()
    uas = DemoEndpoint(200, "OK")
    t, _ = await loop.create_datagram_endpoint(lambda: uas, local_addr=("127.0.0.1", port))
    sip = sip_conf(tmp_path / "sip.conf", free_port(), {
        "flappy": {"host": "127.0.0.1", "port": port, "qualify": "100", "reply_up": "2xx", "flap_suppress": "1900"},
    }, "qualifygap=10")
    svc = Service(ServiceOptions(sip, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {svc.token}"}) as http:
            async with http.get(f"http://127.0.0.1:{svc.api_addr[1]}/events?include=flap") as r:
                await wait_for(lambda: len(svc.events.subscribers) == 1)
                for status in (200, 404, 200):  # up, down (1000), up (about 2000): flapping
                    uas.status = status
                    code, _ = await api(svc, "POST", "/api/v1/peers/flappy/qualify")
                    assert code == 200
                got = await read_sse(r.content, "flap", lambda g: len(g) >= 1)
        assert (got[0]["peer"], got[0]["flapping"], got[0]["verdict"]) == ("flappy", True, "up")
        assert got[0]["penalty"] >= 1900

        code, body = await api(svc, "GET", "/api/v1/peers/flappy")
        assert body["flapping"] is True and 1900 <= body["flap_penalty"] <= 2000
        code, stats = await api(svc, "GET", "/api/v1/peers/flappy/stats")
        assert stats["flapping"] is True
        code, text = await asyncio.to_thread(scrape, svc)
        assert 'sipqualify_peer_flapping{peer="flappy"} 1' in text
        assert 'sipqualify_peer_flap_penalty{peer="flappy"} ' in text
        v = PeerView.from_json(body)
        assert "  Flapping     : yes (penalty " in format_verdict(v)

        uas.status = 0  # no answer: OK -> UNREACHABLE, a chan_sip transition while flapping
        code, _ = await api(svc, "POST", "/api/v1/peers/flappy/qualify")
        store = svc.store
        assert store is not None
        await wait_for(lambda: any(x.new == "UNREACHABLE" for x in store.transitions("flappy")))
        rec = [x for x in store.transitions("flappy") if x.new == "UNREACHABLE"][-1]
        assert rec.suppressed == "flapping" and event_json(rec)["suppressed"] == "flapping"
        assert all(x.suppressed is None for x in store.transitions("flappy") if x.new == "OK")
    finally:
        await svc.close()
        t.close()
