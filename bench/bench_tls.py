#!/usr/bin/env python3
"""N `transport=tls` peers qualified over kept TLS connections, against the same N peers over
TCP in the same run (the reference: the ratio TLS/TCP is what travels between machines).

The responder is a separate process (this file with `--responder`, asyncio on uvloop when it is
installed): one listener per peer on 127.0.0.1 (a connection per remote address, so N peers
need N addresses), answering every OPTIONS with 200 and every double-CRLF ping with a CRLF.
A Kamailio TLS instance would need N listeners too (its connections are per address as well);
this responder is cheaper per message than the daemon, so the daemon stays the bottleneck (its
CPU is printed). It runs in as many processes as the open-files limit needs.

For each transport: the daemon starts with N peers (`qualifyfreq=F`, first pokes spread over
~10 s by `qualifygap`/`qualifypeers`); ramp-up = the time until every peer is OK, and the
daemon's CPU over it less the steady qualify rate's, per connection (connect + handshake);
then, after a warm-up, CPU (user+sys from /proc/PID/stat) per answered transaction over D
seconds, and memory per connection = (daemon RSS with its N connections - RSS of the same daemon with
the same peers and `qualify=no`, no connection) / N. Handshake time: 200 handshakes made one
after another by this process (asyncio, the daemon's client context: verified, ECDSA P-256
certificate from trustme, TLS 1.3), p50 and p99, against the responder.

Certificates: trustme; the peers are `host=127.0.0.1` and the certificate names 127.0.0.1,
so every connection is verified as in production.

    python bench/bench_tls.py                       # 10,000 peers x 10 s, 60 s: docs/performance.md
    python bench/bench_tls.py --short               # CI: 500 peers x 1 s, 15 s
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import json
import os
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import cpu_seconds, stop

HANDSHAKES = 200


# --------------------------------------------------------------------------- the responder process


def answer(head: bytes) -> bytes:
    """200 OK to a request head (no body): Via, From, To (+tag), Call-ID, CSeq copied."""
    keep = []
    for line in head.split(b"\r\n")[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"call-id", b"i", b"cseq"):
            keep.append(line)
        elif name in (b"to", b"t"):
            keep.append(line + b";tag=bench")
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"


class Answerer(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.tr: Any = None

    def connection_made(self, transport: Any) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        out = []
        while True:
            if buf.startswith(b"\r\n\r\n"):
                buf = buf[4:]
                out.append(b"\r\n")  # RFC 5626 pong
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end], buf[end + 4:]  # the daemon's OPTIONS have no body
            if head.startswith(b"OPTIONS "):
                out.append(answer(head))
        self.buf = buf
        if out:
            self.tr.write(b"".join(out))


async def responder(n: int, cert: str, key: str, tls: bool, ports_file: str) -> None:
    ctx = None
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        # the responder's own connections must not cost it 256 KiB each (see net/tcp.py)
        asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
    loop = asyncio.get_running_loop()
    ports: list[int] = []
    servers = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        servers.append(await loop.create_server(Answerer, sock=s, ssl=ctx, backlog=64))
        ports.append(s.getsockname()[1])
    Path(ports_file + ".tmp").write_text(json.dumps(ports))
    os.replace(ports_file + ".tmp", ports_file)
    await asyncio.Event().wait()  # until SIGTERM


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:  # root may raise the hard limit too
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def run_responder(args: argparse.Namespace) -> int:
    if raise_nofile(2 * args.peers + 64) < 2 * args.peers + 64:
        print(f"responder: open-files limit too low for {args.peers} listeners and connections", file=sys.stderr)
        return 1
    try:
        import uvloop  # type: ignore[import-not-found]
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(responder(args.peers, args.cert, args.key, args.transport == "tls", args.ports_file))
    return 0


# --------------------------------------------------------------------------- the bench


def api(base: str, token: str, path: str) -> Any:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def free_udp_tcp_port() -> int:
    """A port free for UDP and TCP both, below the ephemeral range: tcpenable listens on the UDP
    port's number, the responders' listeners take thousands of ephemeral ports, and the TCP
    run leaves its connections' ports in TIME_WAIT."""
    while True:
        port = random.randrange(10000, 32000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                u.bind(("127.0.0.1", port))
                s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Run:
    """One daemon with N peers over one transport against the responder's ports."""

    def __init__(self, tmp: Path, name: str, ports: list[int], transport: str, freq: int, certs: dict[str, Path],
                 qualify: bool = True) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        sport, self.aport = free_udp_tcp_port(), free_udp_tcp_port()
        n = len(ports)
        lines = ["[general]", f"udpbindaddr=127.0.0.1:{sport}", "qualifygap=100",
                 f"qualifypeers={max(0, n // 100 - 1)}", "tcpenable=yes",  # first pokes over 10 s
                 "tlsenable=yes", f"tlsbindaddr=127.0.0.1:{free_udp_tcp_port()}",
                 f"tlscertfile={certs['me']}", f"tlscafile={certs['ca']}", ""]
        for i, port in enumerate(ports):
            lines += [f"[p{i:06d}]", "type=peer", "host=127.0.0.1", f"port={port}", f"transport={transport}",
                      f"qualify={'yes' if qualify else 'no'}", f"qualifyfreq={freq}", ""]
        conf = self.dir / "sip.conf"
        conf.write_text("\n".join(lines))
        self.proc = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api",
                                      f"127.0.0.1:{self.aport}", "--state-dir", str(self.dir / "state"),
                                      "--log-level", "warning"],
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stderr=open(self.dir / "daemon.log", "wb"))  # noqa: SIM115
        self.t_start = time.monotonic()
        self.base = f"http://127.0.0.1:{self.aport}"
        self.token = ""
        for _ in range(600):
            time.sleep(0.1)
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited: {(self.dir / 'daemon.log').read_text()[-2000:]}")
            try:
                self.token = (self.dir / "state" / "api-token").read_text().strip()
                api(self.base, self.token, "/healthz")
                return
            except OSError:
                continue
        raise SystemExit("daemon did not start")

    def api(self, path: str) -> Any:
        return api(self.base, self.token, path)

    def ok_count(self) -> int:
        return sum(1 for p in self.api("/api/v1/peers")["peers"] if p["state"] == "OK")

    def close(self) -> None:
        stop(self.proc, 30)


def measure(tmp: Path, transport: str, args: argparse.Namespace, certs: dict[str, Path],
            baseline_rss: int) -> dict[str, float]:
    # each responder process holds a listener and a connection per peer: as many processes as
    # the open-files limit needs (raising it may be refused, even to root in a container)
    per = max(1, (raise_nofile(2 * args.peers + 64) - 64) // 2)
    shards = [min(per, args.peers - i) for i in range(0, args.peers, per)]
    resps, files = [], []
    for k, n in enumerate(shards):
        files.append(tmp / f"ports-{transport}-{k}.json")
        resps.append(subprocess.Popen(
            [sys.executable, __file__, "--responder", "--transport", transport, "--peers", str(n), "--cert",
             str(certs["cert"]), "--key", str(certs["key"]), "--ports-file", str(files[-1])],
            stderr=open(tmp / f"resp-{transport}-{k}.log", "wb")))  # noqa: SIM115
    run = None
    try:
        ports: list[int] = []
        for f, resp in zip(files, resps, strict=True):
            for _ in range(1200):
                if f.exists() or resp.poll() is not None:
                    break
                time.sleep(0.1)
            if not f.exists():
                raise SystemExit(f"responder did not start: {f.with_suffix('.log')}")
            ports += json.loads(f.read_text())
        hs = asyncio.run(handshakes(ports[0], transport, certs)) if transport == "tls" else handshakes_tcp(ports[0])
        run = Run(tmp, transport, ports, transport, args.freq, certs)
        c0, t0 = cpu_seconds(run.proc.pid), run.t_start
        deadline = time.monotonic() + max(60.0, args.peers / 100)
        while (ok := run.ok_count()) < args.peers and time.monotonic() < deadline:
            time.sleep(0.5)
        ramp, ramp_cpu = time.monotonic() - t0, cpu_seconds(run.proc.pid) - c0
        time.sleep(args.warmup)
        s0 = run.api("/api/v1/status")
        c1, t1, r1 = cpu_seconds(run.proc.pid), time.monotonic(), sum(cpu_seconds(r.pid) for r in resps)
        time.sleep(args.duration)
        c2, t2, r2 = cpu_seconds(run.proc.pid), time.monotonic(), sum(cpu_seconds(r.pid) for r in resps)
        s1 = run.api("/api/v1/status")
        rss = rss_kib(run.proc.pid)
        peers = run.api("/api/v1/peers")["peers"]
        e0, e1 = s0["engine"], s1["engine"]
        st = s1[transport]
        answered = e1["answered"] - e0["answered"]
        bad = [p for p in peers if p["state"] != "OK"]
        rtts = sorted(p["rtt_ms"] for p in peers if p["rtt_ms"] is not None) or [0.0]
        if bad:
            print(f"{transport}: not OK at the end: " + ", ".join(
                f"{p['name']} {p['status']} ({p['transport_error']})" for p in bad[:5]), file=sys.stderr)
        return {"responders": len(resps), "responder_cpu_pct": (r2 - r1) / (t2 - t1) * 100,
                "ramp_s": ramp, "ok_after_ramp": ok, "rtt_p50_ms": rtts[len(rtts) // 2],
                "rtt_p99_ms": rtts[int(len(rtts) * .99)],
                # the ramp's CPU less what qualifying costs at the steady rate over the same time
                "ramp_cpu_ms_per_conn": (ramp_cpu - ramp * (c2 - c1) / (t2 - t1)) / args.peers * 1000,
                "answered_per_s": answered / (t2 - t1), "us_per_txn": (c2 - c1) / max(answered, 1) * 1e6,
                "cpu_pct": (c2 - c1) / (t2 - t1) * 100, "rss_mib": rss / 1024,
                "kib_per_conn": (rss - baseline_rss) / max(st["connections"], 1),
                "connections": st["connections"], "connects": st["connects"], "connect_errors": st["connect_errors"],
                "retx_timeouts": (e1["retransmissions"] - e0["retransmissions"]) + (e1["timeouts"] - e0["timeouts"]),
                "not_ok": sum(1 for p in peers if p["state"] != "OK"), **hs}
    finally:
        if run is not None:
            run.close()
        for resp in resps:
            stop(resp)


async def handshakes(port: int, transport: str, certs: dict[str, Path]) -> dict[str, float]:
    """Sequential connect + TLS handshakes with the daemon's kind of client context."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(certs["ca"]))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    times = []
    for _ in range(HANDSHAKES):
        t = time.perf_counter()
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
        times.append(time.perf_counter() - t)
        w.close()
    return pct_ms(times)


def handshakes_tcp(port: int) -> dict[str, float]:
    times = []
    for _ in range(HANDSHAKES):
        t = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", port))
        times.append(time.perf_counter() - t)
        s.close()
    return pct_ms(times)


def pct_ms(times: list[float]) -> dict[str, float]:
    times.sort()
    return {"connect_p50_ms": times[len(times) // 2] * 1000, "connect_p99_ms": times[int(len(times) * .99)] * 1000}


def baseline(tmp: Path, args: argparse.Namespace, certs: dict[str, Path]) -> int:
    """RSS (KiB) of the daemon with the same N peers, `qualify=no`: no connection is opened."""
    run = Run(tmp, "baseline", list(range(20000, 20000 + args.peers)), "tls", args.freq, certs, qualify=False)
    try:
        time.sleep(max(2.0, args.warmup))
        return rss_kib(run.proc.pid)
    finally:
        run.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=10000)
    ap.add_argument("--freq", type=int, default=10, help="qualifyfreq, seconds")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--short", action="store_true", help="CI mode: 500 peers x 1 s, 15 s")
    ap.add_argument("--responder", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--transport", default="tls", help=argparse.SUPPRESS)
    ap.add_argument("--cert", help=argparse.SUPPRESS)
    ap.add_argument("--key", help=argparse.SUPPRESS)
    ap.add_argument("--ports-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.responder:
        return run_responder(args)
    if args.short:
        args.peers, args.freq, args.duration, args.warmup = 500, 1, 15, 3
    import trustme

    tmp = Path(tempfile.mkdtemp(prefix="sq-tls-"))
    try:
        ca = trustme.CA()
        certs = {"ca": tmp / "ca.pem", "cert": tmp / "responder.crt", "key": tmp / "responder.key",
                 "me": tmp / "me.pem"}
        ca.cert_pem.write_to_path(str(certs["ca"]))
        server = ca.issue_cert("127.0.0.1")
        certs["cert"].write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(certs["key"]))
        ca.issue_cert("sipqualify.bench").private_key_and_cert_chain_pem.write_to_path(str(certs["me"]))
        base = baseline(tmp, args, certs)
        res = {t: measure(tmp, t, args, certs, base) for t in ("tcp", "tls")}
        print(f"peers x qualifyfreq              {args.peers:,} x {args.freq} s "
              f"(offered {args.peers / args.freq:,.0f}/s), measured {args.duration:.0f} s")
        print(f"baseline RSS (qualify=no)        {base / 1024:.1f} MiB")
        rows = [("ramp-up to all OK (s)", "ramp_s", ".1f"),
                ("peers OK at the end of ramp-up", "ok_after_ramp", ".0f"),
                ("CPU per connection set-up (ms)", "ramp_cpu_ms_per_conn", ".2f"),
                ("connect+handshake p50 (ms)", "connect_p50_ms", ".2f"),
                ("connect+handshake p99 (ms)", "connect_p99_ms", ".2f"),
                ("answered/s", "answered_per_s", ",.0f"),
                ("CPU per transaction (us)", "us_per_txn", ".1f"),
                ("last RTT of the peers p50 (ms)", "rtt_p50_ms", ".2f"),
                ("last RTT of the peers p99 (ms)", "rtt_p99_ms", ".2f"),
                ("daemon CPU (% of a core)", "cpu_pct", ".0f"),
                ("responder CPU (% of a core)", "responder_cpu_pct", ".0f"),
                ("responder processes", "responders", ".0f"),
                ("daemon RSS (MiB)", "rss_mib", ".1f"),
                ("memory per connection (KiB)", "kib_per_conn", ".1f"),
                ("connections open / opened / failed", None, ""),
                ("retransmissions + timeouts", "retx_timeouts", ".0f"),
                ("peers not OK at the end", "not_ok", ".0f")]
        print(f"{'':35}{'TCP':>15}{'TLS':>15}{'TLS/TCP':>10}")
        for label, key, fmt in rows:
            if key is None:
                cells = [f"{r['connections']:.0f}/{r['connects']:.0f}/{r['connect_errors']:.0f}"
                         for r in (res["tcp"], res["tls"])]
                print(f"{label:35}{cells[0]:>15}{cells[1]:>15}")
                continue
            a, b = res["tcp"][key], res["tls"][key]
            ratio = f"{b / a:.2f}" if a > 0 and key not in ("retx_timeouts", "not_ok", "ok_after_ramp",
                                                              "responders") else ""
            print(f"{label:35}{format(a, fmt):>15}{format(b, fmt):>15}{ratio:>10}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
