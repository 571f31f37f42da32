#!/usr/bin/env python3
"""One unauthenticated source floods the daemon's SIP port with malformed datagrams.

The daemon (`sipqualify run`, a subprocess, at its default log level `info`) qualifies one
healthy peer every second (`qualify=1000`, so 2 s without an answer make it UNREACHABLE): a
small UDP responder answering OPTIONS with 200 at once, in its own process so that its CPU
is not the daemon's. Once the peer is OK, one UDP socket on 127.0.0.1 sends the worst
malformed datagram at --rate for --duration seconds, paced every millisecond: an OPTIONS
whose Content-Length is a Unicode digit ('²': `str.isdigit()` is true, `int()` raises
ValueError), or with --kind via-port a Via port in full-width digits ('５０６０').

Printed: datagrams sent and received by the engine (the rest the kernel dropped), the
engine's verdicts (rate-limited before parsing, malformed, internal errors), the daemon's
CPU (user + sys from /proc/PID/stat) over the flood and per datagram sent, the log bytes
the daemon wrote during the flood, and whether the healthy peer stayed OK throughout (its
state transitions and timeouts from the HTTP API, docs/api.md). Then the same flood, same
datagram, same rate, goes to a reference measured in the same run: Kamailio answering OPTIONS
(fork=no: one SIP worker, like the daemon's one event loop; CPU summed over all its
processes), its CPU per datagram and the ratio
(machines differ by up to 2x; the ratio much less). It prints figures; it never passes or
fails on time.

    python3 bench/bench_flood.py                      # 20,000/s for 30 s (docs/performance.md)
    python3 bench/bench_flood.py --short              # CI: 20,000/s for 5 s
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import (
    KAMAILIO_DEFAULT_BUFFER,
    cpu_seconds,
    free_port,
    kamailio_binary,
    kamailio_cfg,
    stop,
    tree_cpu_seconds,
)

ROOT = Path(__file__).resolve().parents[1]
KINDS = {  # --kind: (Via port, Content-Length)
    "clen": ("5060", "\u00b2"),
    "via-port": ("\uff15\uff10\uff16\uff10", "0"),
}


def options_datagram(dest_port: int, via_port: str = "5060", clen: str = "0") -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{dest_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bKflood;rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:flood@127.0.0.1>;tag=f1\r\nTo: <sip:127.0.0.1>\r\n"
            f"Call-ID: flood@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: {clen}\r\n\r\n").encode()


def worst_datagram(kind: str, daemon_port: int) -> bytes:
    return options_datagram(daemon_port, *KINDS[kind])


def responder(port: int) -> None:
    """The healthy peer: 200 OK to every OPTIONS, copying Via, From, To, Call-ID and CSeq."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, addr = sock.recvfrom(65535)
        lines = data.split(b"\r\n")
        if not lines[0].startswith(b"OPTIONS "):
            continue
        keep = [ln for ln in lines if ln[:4] in (b"Via:", b"From", b"To: ", b"Call", b"CSeq")]
        sock.sendto(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n", addr)


def api(port: int, token: str, path: str) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def flood(data: bytes, dest: tuple[str, int], rate: float, duration: float) -> int:
    """Send `data` to `dest` from one socket at `rate`/s for `duration` s, paced every ms."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sent = 0
    t0 = time.monotonic()
    while (now := time.monotonic()) < t0 + duration:
        due = int((now - t0) * rate)
        while sent < due:
            try:
                sock.sendto(data, dest)
            except (BlockingIOError, ConnectionRefusedError):
                pass  # an ICMP error from an earlier datagram: the flood goes on
            sent += 1
        time.sleep(0.001)
    sock.close()
    return sent


def kamailio_reference(kind: str, rate: float, duration: float) -> tuple[float, int, int] | None:
    """(CPU seconds, datagrams sent, log bytes) of a one-process Kamailio under the same flood;
    None when Kamailio is not installed."""
    kam = kamailio_binary()
    if kam is None:
        return None
    tmp = Path(tempfile.mkdtemp(prefix="sq-flood-kam-"))
    port = free_port()
    (tmp / "kamailio.cfg").write_text(kamailio_cfg(port, tmp, "no", 1, KAMAILIO_DEFAULT_BUFFER))
    log_path = tmp / "kam.log"
    with open(log_path, "wb") as klog:
        proc = subprocess.Popen([kam, "-f", str(tmp / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8"],
                                stdout=subprocess.DEVNULL, stderr=klog)
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.2)
        ready = False
        for _ in range(100):  # until it answers an OPTIONS
            probe.sendto(options_datagram(port), ("127.0.0.1", port))
            try:
                ready = probe.recv(65535).startswith(b"SIP/2.0 200")
                break
            except OSError:
                continue
        probe.close()
        if not ready:
            print(f"bench_flood: kamailio did not answer:\n{log_path.read_text()[-2000:]}")
            return None
        log0, cpu0 = log_path.stat().st_size, tree_cpu_seconds(proc.pid)
        sent = flood(worst_datagram(kind, port), ("127.0.0.1", port), rate, duration)
        time.sleep(0.5)  # what it still had queued
        return tree_cpu_seconds(proc.pid) - cpu0, sent, log_path.stat().st_size - log0
    finally:
        stop(proc, 10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20_000, help="malformed datagrams per second")
    ap.add_argument("--duration", type=float, default=30, help="seconds of flood")
    ap.add_argument("--kind", choices=sorted(KINDS), default="clen")
    ap.add_argument("--short", action="store_true", help="CI mode: 5 s of flood")
    ap.add_argument("--responder", type=int, help=argparse.SUPPRESS)  # internal: run the healthy peer
    args = ap.parse_args()
    if args.responder:
        responder(args.responder)
        return 0
    if args.short:
        args.duration = 5.0
    tmp = Path(tempfile.mkdtemp(prefix="sq-flood-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        peer_port, sip_port, api_port = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        procs.append(subprocess.Popen([sys.executable, __file__, "--responder", str(peer_port)]))
        (tmp / "sip.conf").write_text("\n".join([
            "[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "",
            "[healthy]", "type=peer", "host=127.0.0.1", f"port={peer_port}", "qualify=1000", "qualifyfreq=1", ""]))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
        log_path = tmp / "daemon.log"
        with open(log_path, "wb") as dlog:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(tmp / "sip.conf"), "--api",
                 f"127.0.0.1:{api_port}", "--state-dir", str(tmp / "s")],
                env=env, stdin=subprocess.DEVNULL, stdout=dlog, stderr=subprocess.STDOUT)
        procs.append(daemon)
        token, peer = "", {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and peer.get("state") != "OK":
            time.sleep(0.2)
            if daemon.poll() is not None:
                print(f"bench_flood: the daemon exited with {daemon.returncode}:\n{log_path.read_text()[-2000:]}")
                return 1
            try:
                token = token or (tmp / "s" / "api-token").read_text().strip()
                peer = api(api_port, token, "/api/v1/peers/healthy")
            except OSError:
                continue
        if peer.get("state") != "OK":
            print(f"bench_flood: the healthy peer is {peer.get('status')} before the flood; not measured")
            return 1
        time.sleep(1.0)  # a steady qualify cycle first
        s0, p0 = api(api_port, token, "/api/v1/status"), api(api_port, token, "/api/v1/peers/healthy")
        wall0, log0, cpu0, t0 = time.time(), log_path.stat().st_size, cpu_seconds(daemon.pid), time.monotonic()
        sent = flood(worst_datagram(args.kind, sip_port), ("127.0.0.1", sip_port), args.rate, args.duration)
        cpu1, t1, log1 = cpu_seconds(daemon.pid), time.monotonic(), log_path.stat().st_size
        time.sleep(1.0)  # what the daemon still had queued, and the poke after the flood
        s1, p1 = api(api_port, token, "/api/v1/status"), api(api_port, token, "/api/v1/peers/healthy")
        hist = api(api_port, token, f"/api/v1/peers/healthy/history?since={wall0 - 1:.3f}")
        e0, e1 = s0["engine"], s1["engine"]
        assert isinstance(e0, dict) and isinstance(e1, dict)

        def delta(key: str) -> int:
            return int(e1[key]) - int(e0[key])  # type: ignore[index]

        cpu = cpu1 - cpu0
        changes = [f"{t['old']}->{t['new']} at +{float(t['time']) - wall0:.1f} s"  # type: ignore[index]
                   for t in hist["transitions"] if float(t["time"]) >= wall0]  # type: ignore[attr-defined,index]
        timeouts = int(p1["timeouts"]) - int(p0["timeouts"])  # type: ignore[call-overload]
        answered = int(p1["qualifies"]) - int(p0["qualifies"])  # type: ignore[call-overload]
        received = delta("rx_datagrams") - answered  # the flood's, without the healthy peer's answers
        print(f"flood                          {args.kind} datagram ({len(worst_datagram(args.kind, sip_port))} bytes) "
              f"from one source, {args.rate:,.0f}/s offered for {t1 - t0:.1f} s")
        print(f"datagrams sent / received      {sent:,} / {received:,} "
              f"({max(0, sent - received) / max(sent, 1) * 100:.0f}% dropped before the engine)")
        print(f"engine verdicts                rate-limited before parsing {delta('rate_limited'):,}, "
              f"malformed {delta('rx_malformed'):,}, internal errors {delta('internal_errors'):,}, "
              f"answers sent {delta('requests_answered'):,}")
        print(f"daemon CPU                     {cpu:.2f} s ({cpu / (t1 - t0) * 100:.0f}% of a core), "
              f"{cpu / max(sent, 1) * 1e6:.2f} us per datagram sent")
        print(f"daemon log                     {log1 - log0:,} bytes during the flood "
              f"({(log1 - log0) / (t1 - t0) / 1024:,.1f} KiB/s)")
        stayed = not changes and timeouts == 0 and p1["state"] == "OK"
        print(f"healthy peer stayed OK         {'yes' if stayed else 'NO'}: {answered} pokes answered, "
              f"{timeouts} timeouts, transitions {changes or 'none'}, now {p1['status']}")
        ref = kamailio_reference(args.kind, args.rate, args.duration)
        if ref is None:
            print("reference                      kamailio not installed (apt-get install kamailio): no ratio")
            if os.environ.get("CI"):
                return 1
        else:
            kcpu, ksent, klog = ref
            ours, theirs = cpu / max(sent, 1) * 1e6, kcpu / max(ksent, 1) * 1e6
            print(f"reference: Kamailio (fork=no)  {kcpu:.2f} s for {ksent:,} datagrams, {theirs:.2f} us per datagram, "
                  f"{klog:,} bytes of log")
            print(f"ratio sipqualify / Kamailio    {ours / theirs if theirs else float('inf'):.2f}x CPU per datagram")
    finally:
        for p in reversed(procs):
            stop(p, 10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
