#!/usr/bin/env python3
"""Integration surfaces under load: AMI event fan-out and a /metrics scrape.

1. Fan-out: the daemon qualifies N peers (default 100,000 at qualifyfreq 60 s, pointing at
   in-process responders; `--flaky-pct` of the peers (default 1 %) stop and resume answering
   every 10 s, so transitions flow), while C AMI clients (default 100) have events on.
   Each PeerStatus event is timestamped when it is read by each client; the latency is
   read time minus the time the engine saw the transition (published with the event on
   /events, which a subscriber also reads), so it includes the SQLite commit that comes
   before any report. Printed: events, p50/p99 fan-out
   latency, daemon CPU per event delivered, and whether qualifying kept its schedule
   (scheduler lag, timeouts vs expectations).
2. Scrape: /metrics with `metrics_peer_limit` = 10,000 per-peer peers: time and size.

    python bench/bench_integration.py                       # 100 clients, 100,000 peers
    python bench/bench_integration.py --peers 5000 --clients 20 --duration 15 --flaky-pct 10   # CI short mode
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import cpu_seconds, free_port


class Flipper(asyncio.DatagramProtocol):
    """Answers OPTIONS with 200; ports in the 'flaky' half stop answering every other 10 s."""

    def __init__(self, flaky: bool) -> None:
        self.flaky = flaky
        self.t0 = time.monotonic()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.flaky and int((time.monotonic() - self.t0) / 10) % 2 == 1:
            return
        lines = data.split(b"\r\n")
        keep = [ln for ln in lines if ln[:4] in (b"Via:", b"From", b"To: ", b"Call", b"CSeq")]
        assert self.transport is not None
        self.transport.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)


async def ami_client(port: int, reads: list[tuple[str, float]], counts: list[int]) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    await r.readline()
    w.write(b"Action: Login\r\nUsername: bench\r\nSecret: benchsecret\r\nEvents: on\r\n\r\n")
    await w.drain()
    try:
        while True:
            blk = await r.readuntil(b"\r\n\r\n")
            t = time.time()
            if blk.startswith(b"Event: PeerStatus"):
                counts[0] += 1
                reads.append((blk.split(b"Peer: SIP/")[1].split(b"\r\n")[0].decode(), t))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        w.close()


async def sse(base: str, token: str, detected: dict[str, list[float]]) -> None:
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{base}/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for raw in resp.content:
                if raw.startswith(b"data: "):
                    ev = json.loads(raw[6:])
                    detected.setdefault(ev["peer"], []).append(ev["time"])  # when the engine saw it


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=40)
    ap.add_argument("--warmup", type=float, default=65, help="seconds before measuring (past the 60 s start-up)")
    ap.add_argument("--responders", type=int, default=100, help="UDP ports answering for the peers")
    ap.add_argument("--flaky-pct", type=float, default=1.0, help="percent of peers that flap every 10 s")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sq-int-"))
    loop = asyncio.get_running_loop()
    transports = []
    ports = []
    for i in range(args.responders):
        flaky = i < max(1, round(args.responders * args.flaky_pct / 100))
        t, _ = await loop.create_datagram_endpoint(lambda f=flaky: Flipper(flaky=f), local_addr=("127.0.0.1", 0))
        transports.append(t)
        ports.append(t.get_extra_info("sockname")[1])
    api_port, ami_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    per_group = max(0, args.peers // 600 - 1)  # spread the first pokes over 60 s
    lines = [f'[general]\nbind = ["127.0.0.1:{free_port()}"]\nqualifygap = 100\nqualifypeers = {per_group}',
             f'[api]\nlisten = "127.0.0.1:{api_port}"\nmetrics_peer_limit = 10000',
             f'[ami]\nenabled = true\nlisten = "127.0.0.1:{ami_port}"\n[ami.users.bench]\nsecret = "benchsecret"']
    for i in range(args.peers):
        lines.append(f'[peers.p{i:06d}]\nhost = "127.0.0.1"\nport = {ports[i % len(ports)]}\nqualify = 500\n'
                     'qualifyfreq = 60')
    conf = tmp / "sipqualify.toml"
    conf.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--state-dir", str(tmp / "s"),
        "--log-level", "error")
    base = f"http://127.0.0.1:{api_port}"
    token = ""
    for _ in range(600):
        await asyncio.sleep(0.1)
        try:
            token = (tmp / "s" / "api-token").read_text().strip()
            socket.create_connection(("127.0.0.1", ami_port), 0.2).close()
            break
        except OSError:
            continue
    detected: dict[str, list[float]] = {}
    reads: list[tuple[str, float]] = []
    counts = [0]
    tasks = [loop.create_task(sse(base, token, detected))]
    # AMI clients log in near the end of the warm-up, after the start-up burst of first results
    # (a client that falls 1 MiB behind is disconnected by design, and this one process reads
    # for all of them)
    await asyncio.sleep(max(0.0, args.warmup - 3))
    for _ in range(args.clients):  # one at a time: AMI's authlimit (50) caps unauthenticated sessions
        tasks.append(loop.create_task(ami_client(ami_port, reads, counts)))
        await asyncio.sleep(0.02)
    await asyncio.sleep(min(3.0, args.warmup))
    n0 = counts[0]
    reads_before = len(reads)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    await asyncio.sleep(args.duration)
    c1, t1 = cpu_seconds(proc.pid), time.monotonic()

    def get(path: str) -> tuple[float, bytes]:
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
        s = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
        return time.perf_counter() - s, body

    status = json.loads((await asyncio.to_thread(get, "/api/v1/status"))[1])
    alive = sum(1 for t in tasks[1:] if not t.done())
    scrape_s, body = await asyncio.to_thread(get, "/metrics")
    for t in tasks:
        t.cancel()
    proc.terminate()
    await proc.wait()
    for tr in transports:
        tr.close()
    shutil.rmtree(tmp, ignore_errors=True)
    import bisect

    latencies = []
    for peer, t_read in reads:  # latency: the engine saw the transition -> this client read it
        times = detected.get(peer, [])
        i = bisect.bisect_right(times, t_read)
        if i:
            latencies.append(t_read - times[i - 1])
    latencies.sort()
    delivered = counts[0] - n0
    del reads[:reads_before]

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    eng = status["engine"]
    print(f"peers / AMI clients            {args.peers:,} / {args.clients} ({alive} still connected at the end)")
    print(f"measured                       {t1 - t0:.0f} s after {args.warmup:.0f} s warm-up; "
          f"PeerStatus events delivered {delivered:,} ({delivered / (t1 - t0):,.0f}/s); "
          f"transitions since start {eng['transitions']:,}")
    print(f"fan-out latency (seen->read)   p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms")
    print(f"daemon CPU                     {c1 - c0:.1f} s ({(c1 - c0) / (t1 - t0) * 100:.0f}% of a core); "
          f"{(c1 - c0) / max(delivered, 1) * 1e6:.1f} us per event delivered (qualifying included)")
    print(f"qualifying kept its schedule   scheduler lag {status['service']['scheduler_lag_s'] * 1000:.1f} ms, "
          f"loop lag {status['service']['loop_lag_max_ms']:.1f} ms, answered {eng['answered']:,}, "
          f"timeouts {eng['timeouts']:,}")
    print(f"/metrics scrape                {scrape_s * 1000:.0f} ms, {len(body) / 1024:.0f} KiB "
          f"({body.count(b'sipqualify_peer_up{'):,} per-peer series)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
