#!/usr/bin/env python3
"""The web dashboard with a big fleet: time to first render and live update latency.

The daemon runs in-process with N peers: N - 1 unmonitored (they cost the page what any peer
costs: a row to count, filter and sort) and one qualified every second against an endpoint on
loopback. Measured:
- `/api/v1/overview`: server time of a page of 100 (median of 5): default sort (worst first),
  a search, sort by name;
- first render: Debian's Chromium (Playwright) logged in with a one-time link, from navigation
  until the first page of rows is in the DOM;
- live update: the qualified peer's endpoint stops; from the moment the daemon publishes the
  committed transition (wall clock) until the row in the page shows UNREACHABLE (the page's
  `Date.now()`, same machine), over the event stream and the page's 500 ms batching.

    python bench/bench_dashboard.py --peers 100000      # the figures in docs/performance.md
    python bench/bench_dashboard.py --short             # CI: 2000 peers
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "src"))

from sipqualify.api.dashboard import login_link  # noqa: E402
from sipqualify.demo import DemoEndpoint  # noqa: E402
from sipqualify.service import Service, ServiceOptions  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def write_conf(path: Path, n: int, sip_port: int, ep_port: int) -> None:
    lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "",
             "[live]", "type=peer", "host=127.0.0.1", f"port={ep_port}", "qualify=500", "qualifyfreq=1", ""]
    for i in range(n - 1):
        lines += [f"[peer{i:06d}]", "type=peer", f"host=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "qualify=no", ""]
    path.write_text("\n".join(lines))


def timed_get(base: str, token: str, path: str, runs: int = 5) -> float:
    out = []
    for _ in range(runs):
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1000


async def run(n: int) -> None:
    from playwright.async_api import async_playwright

    loop = asyncio.get_running_loop()
    up = True
    ep, _ = await loop.create_datagram_endpoint(lambda: DemoEndpoint(200, "OK", up=lambda: up),
                                                local_addr=("127.0.0.1", 0))
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "sip.conf"
        import socket
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            sip_port = s.getsockname()[1]
        write_conf(conf, n, sip_port, ep.get_extra_info("sockname")[1])
        t0 = time.perf_counter()
        svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(Path(tmp) / "state")))
        await svc.start()
        print(f"{n} peers: daemon started in {time.perf_counter() - t0:.1f} s")
        published: dict[str, float] = {}
        svc.model.add_record_listener(lambda rec: published.setdefault(f"{rec.peer}:{rec.new}", time.time()))
        base = f"http://127.0.0.1:{svc.api_addr[1]}/"
        try:
            while "live:OK" not in published:
                await asyncio.sleep(0.1)
            for label, path in (("overview, worst first", "api/v1/overview"),
                                ("overview, search", "api/v1/overview?q=peer01234"),
                                ("overview, by name", "api/v1/overview?sort=name&offset=50000")):
                ms = await asyncio.to_thread(timed_get, base, svc.token, path)
                print(f"  {label:<24} {ms:8.1f} ms (median of 5)")
            async with async_playwright() as pw:
                ctx = await pw.chromium.launch_persistent_context(str(Path(tmp) / "profile"), executable_path=CHROMIUM,
                                                                  args=ARGS, headless=True)
                page = ctx.pages[0] if ctx.pages else await ctx.new_page()
                page.set_default_timeout(120_000)
                await page.goto(login_link(base, svc.token))  # logs in, lands on the overview
                await page.wait_for_selector('#peers tr[data-peer="live"]')
                renders = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    await page.reload()
                    await page.wait_for_selector('#peers tr[data-peer="live"]')
                    renders.append(time.perf_counter() - t0)
                print(f"  {'first render (to rows)':<24} {statistics.median(renders) * 1000:8.1f} ms (median of 3)")
                await page.wait_for_selector("#live.on")
                await page.evaluate("""() => { window.seen = null; new MutationObserver(() => {
                    const r = document.querySelector('#peers tr[data-peer="live"]');
                    if (r && r.dataset.state === 'UNREACHABLE' && !window.seen) window.seen = Date.now(); })
                    .observe(document.querySelector('#peers'),
                             {attributes: true, subtree: true, childList: true}); }""")
                up = False
                await page.wait_for_selector('#peers tr[data-peer="live"][data-state="UNREACHABLE"]')
                seen = await page.evaluate("window.seen") / 1000
                print(f"  {'live update (commit to row)':<24} {(seen - published['live:UNREACHABLE']) * 1000:8.1f} ms")
                await ctx.close()
        finally:
            await svc.close()
            ep.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, default=10000)
    ap.add_argument("--short", action="store_true", help="2000 peers (CI)")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print("bench_dashboard: chromium not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    asyncio.run(run(2000 if args.short else args.peers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
