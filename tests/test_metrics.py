"""Prometheus /metrics: parsed with prometheus-client's own parser; histogram vs stored samples."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sipqualify.service import Service, ServiceOptions

from .helpers import endpoint, free_port, scrape, sip_conf, wait_for


async def test_metrics_exposition(tmp_path: Path) -> None:
    ok_t, ok_port = await endpoint(200)
    conf = tmp_path / "sipqualify.toml"
    sip = tmp_path / "sip.conf"
    sip_conf(sip, free_port(), {
        "ok": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes", "qualifyfreq": 1},
        "dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500, "qualifyfreq": 1},
        "off": {"host": "127.0.0.1", "port": ok_port, "qualify": "no"},
    }, "qualifygap=10")
    conf.write_text(f'sip_conf = "{sip}"\n[api]\nmetrics_peer_limit = 2\n[peers.trunk]\nhost = "127.0.0.1"\n'
                    f'port = {ok_port}\nqualify = true\nqualifyfreq = 1\ngroup = "trunks"\nrtt_histogram = true\n')
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        assert svc.engine is not None
        await wait_for(lambda: svc.engine.peer("dead").state == "UNREACHABLE"  # type: ignore[union-attr]
                       and svc.engine.peer("ok").qualifies >= 3)  # type: ignore[union-attr]
        assert (await asyncio.to_thread(scrape, svc, "wrong"))[0] == 401
        code, text = await asyncio.to_thread(scrape, svc)
        assert code == 200
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        up = {s.labels["peer"]: s.value for s in fams["sipqualify_peer_up"].samples}
        assert up == {"ok": 1.0, "dead": 0.0}  # capped at 2 peers: "off" has no per-peer series
        states = {s.labels["sipqualify_peer_status"]: s.value for s in fams["sipqualify_peer_status"].samples
                  if s.labels["peer"] == "dead"}
        assert states["UNREACHABLE"] == 1.0 and states["OK"] == 0.0
        peers = {s.labels["state"]: s.value for s in fams["sipqualify_peers"].samples}
        assert peers["OK"] == 2 and peers["UNREACHABLE"] == 1 and peers["UNMONITORED"] == 1
        assert {s.labels["group"] for s in fams["sipqualify_rtt_seconds"].samples} == {"default", "trunks"}
        trunk = [s for s in fams["sipqualify_peer_rtt_histogram_seconds"].samples
                 if s.name.endswith("_count")]
        assert trunk[0].labels["peer"] == "trunk" and trunk[0].value >= 1
        h = {(s.name, s.labels.get("le")): s.value for s in fams["sipqualify_rtt_seconds"].samples
             if s.labels["group"] == "default"}
        count = h[("sipqualify_rtt_seconds_count", None)]
        assert count == h[("sipqualify_rtt_seconds_bucket", "+Inf")] >= 3
        les = [v for (n, le), v in sorted(h.items(), key=lambda kv: float(kv[0][1] or "inf"))
               if n.endswith("_bucket")]
        assert les == sorted(les)  # cumulative
        # the histogram holds exactly the answered samples the store has
        await asyncio.to_thread(svc.store.flush)  # type: ignore[union-attr]
        stored = [r for r in await asyncio.to_thread(svc.store.samples, "ok") if r.rtt_ms is not None]  # type: ignore[union-attr]
        assert abs(len(stored) - count) <= 1  # a result may land between the scrape and the flush
        total = {s.labels.get("outcome"): s.value for s in fams["sipqualify_peer_qualifies"].samples
                 if s.labels["peer"] == "dead"}
        assert total["timeout"] >= 1 and total["answered"] == 0
        assert fams["sipqualify_timeouts"].samples[0].value >= 1
        classes = {(s.labels["peer"], s.labels["class"]): s.value for s in fams["sipqualify_peer_responses"].samples}
        assert classes[("ok", "2xx")] >= 3
        assert fams["process_resident_memory_bytes"].samples[0].value > 1e6
    finally:
        await svc.close()
        ok_t.close()


async def test_blackbox_style_probe(tmp_path: Path) -> None:
    ok_t, ok_port = await endpoint(200)
    nf_t, nf_port = await endpoint(404)
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {})
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()

    def get(q: str) -> tuple[int, dict[str, float]]:
        req = urllib.request.Request(f"http://127.0.0.1:{svc.api_addr[1]}/probe?{q}")
        req.add_header("Authorization", f"Bearer {svc.token}")
        req.add_header("X-Prometheus-Scrape-Timeout-Seconds", "2")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                fams = text_string_to_metric_families(r.read().decode())
                return r.status, {f.name: f.samples[0].value for f in fams}
        except urllib.error.HTTPError as e:
            return e.code, {}

    try:
        code, m = await asyncio.to_thread(get, f"target=sip:127.0.0.1:{ok_port}")
        assert code == 200 and m["probe_success"] == 1 and m["probe_sip_status_code"] == 200
        assert 0 < m["probe_sip_rtt_seconds"] < 0.5
        code, m = await asyncio.to_thread(get, f"target=127.0.0.1:{nf_port}&module=sip_udp_2xx")
        assert m["probe_success"] == 0 and m["probe_sip_status_code"] == 404
        code, m = await asyncio.to_thread(get, f"target=127.0.0.1:{nf_port}")
        assert m["probe_success"] == 1  # any final response, like qualify
        code, m = await asyncio.to_thread(get, f"target=127.0.0.1:{free_port()}")
        assert m["probe_success"] == 0 and m["probe_duration_seconds"] < 2
        assert (await asyncio.to_thread(get, "target=x&module=nope"))[0] == 400
    finally:
        await svc.close()
        ok_t.close()
        nf_t.close()
