#!/usr/bin/env python3
"""End-to-end qualify rate on loopback against Kamailio (anchors-performance.md method).

N peers, each `qualifyfreq=1` s, all pointing at one Kamailio answering OPTIONS with
`sl_send_reply` (two children). After warm-up, for D seconds: CPU (user+sys of the
sipqualify daemon from /proc/PID/stat) per answered transaction, answered/s, retransmissions
and false states (peers not OK at the end although Kamailio answers in < 1 ms). RTT accuracy:
tshark captures the run; every peer has its own `fromuser`, so each sample the daemon stored
is matched to the request/response pair on the wire; the error is |ours - wire|.

    python bench/bench_e2e.py --peers 10000 --duration 60     # the figure in docs/performance.md
    python bench/bench_e2e.py --short                           # CI: 2000 peers, 10 s
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    api,
    cpu_seconds,
    free_port,
    kamailio_binary,
    missing_kamailio,
    peers_conf,
    start_kamailio,
    stop,
    udp_drops,
    wait_api,
)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=10000)
    ap.add_argument("--freq", type=int, default=1)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--short", action="store_true", help="CI mode: 2000 peers, 10 s")
    ap.add_argument("--no-tshark", action="store_true")
    ap.add_argument("--sample-every", type=int, default=1,
                    help="[store] sample_every: store one RTT sample in N per peer (the tshark check needs 1)")
    args = ap.parse_args()
    if args.short:
        args.peers, args.duration, args.warmup = 2000, 10, 3
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_e2e")
    tmp = Path(tempfile.mkdtemp(prefix="sq-e2e-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kport, sport, aport = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        procs.append(start_kamailio(kam, tmp, kport))
        conf = peers_conf(tmp / "sip.conf", sport, kport, args.peers, args.freq, fromuser=True)
        if args.sample_every > 1:  # a TOML that reads the sip.conf and adds the store setting
            (tmp / "sipqualify.toml").write_text(f'sip_conf = "{conf}"\n[store]\nsample_every = {args.sample_every}\n')
            conf = tmp / "sipqualify.toml"
            args.no_tshark = True
        tshark = shutil.which("tshark") if not args.no_tshark else None
        pcap = tmp / "cap.pcap"
        if tshark:
            procs.append(subprocess.Popen(
                [tshark, "-i", "lo", "-q", "-B", "64", "-w", str(pcap), "-f", f"udp port {sport}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(2)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        daemon = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf),
                                   "--api", f"127.0.0.1:{aport}", "--state-dir", str(tmp / "state"),
                                   "--log-level", "warning"], env=env, stderr=open(tmp / "daemon.log", "wb"))
        procs.append(daemon)
        base = f"http://127.0.0.1:{aport}"
        token = wait_api(tmp / "state", base, 200, 0.1) or ""
        time.sleep(args.warmup)
        s0 = api(base, token, "/api/v1/status")
        d0 = udp_drops(sport), udp_drops(kport)
        c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        time.sleep(args.duration)
        c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        s1 = api(base, token, "/api/v1/status")
        d1 = udp_drops(sport), udp_drops(kport)
        peers = api(base, token, "/api/v1/peers")["peers"]  # type: ignore[index]
        e0, e1 = s0["engine"], s1["engine"]  # type: ignore[index]
        answered = e1["answered"] - e0["answered"]
        retx = e1["retransmissions"] - e0["retransmissions"]
        timeouts = e1["timeouts"] - e0["timeouts"]
        cpu = c1 - c0
        not_ok = [p["name"] for p in peers if p["state"] != "OK"]
        offered = args.peers / args.freq
        print(f"peers x qualifyfreq            {args.peers:,} x {args.freq} s (offered {offered:,.0f}/s)")
        print(f"measured                       {t1 - t0:.1f} s after {args.warmup:.0f} s warm-up")
        print(f"answered                       {answered:,} ({answered / (t1 - t0):,.0f}/s)")
        print(f"retransmissions / timeouts     {retx:,} / {timeouts:,}")
        print(f"daemon CPU                     {cpu:.2f} s = {cpu / max(answered, 1) * 1e6:.1f} us per transaction "
              f"({cpu / (t1 - t0) * 100:.0f}% of a core)")
        states: dict[str, int] = {}
        for p in peers:
            states[p["state"]] = states.get(p["state"], 0) + 1
        print(f"false states at end            {len(not_ok)} {not_ok[:5]} (states {states})")
        print(f"kernel drops, ours / Kamailio  {d1[0] - d0[0]:,} / {d1[1] - d0[1]:,} (full receive buffers)")
        print(f"event-loop lag max (decayed)   {s1['service']['loop_lag_max_ms']:.1f} ms")  # type: ignore[index]
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        if tshark:
            procs[1].send_signal(signal.SIGINT)
            procs[1].wait(timeout=30)
            rtt_accuracy(tmp, pcap, tshark)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def rtt_accuracy(tmp: Path, pcap: Path, tshark: str) -> None:
    """Match every stored RTT sample to its request/response pair on the wire.

    Each peer has its own From user, so per peer the n-th answered transaction on the wire
    is the n-th answered sample in SQLite (peers whose counts differ, e.g. because tshark
    dropped packets, are left out and counted)."""
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-Y", "sip", "-T", "fields", "-e", "frame.time_epoch", "-e", "sip.Call-ID",
         "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.from.user"],
        capture_output=True, text=True, check=False).stdout
    first_req: dict[str, tuple[float, str]] = {}
    done: set[str] = set()
    wire: dict[str, list[tuple[float, float]]] = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 5:
            continue
        t, cid, method, status, user = float(parts[0]), parts[1], parts[2], parts[3], parts[4]
        if method == "OPTIONS":
            first_req.setdefault(cid, (t, user))
        elif status and int(status) >= 200 and cid in first_req and cid not in done:
            done.add(cid)
            t0, peer = first_req[cid]
            wire.setdefault(peer, []).append((t0, (t - t0) * 1000))
    db = sqlite3.connect(tmp / "state" / "sipqualify.sqlite")
    ours: dict[str, list[float]] = {}
    for peer, rtt in db.execute("SELECT peer, rtt_ms FROM samples WHERE rtt_ms IS NOT NULL ORDER BY peer, time"):
        ours.setdefault(peer, []).append(rtt)
    errors: list[float] = []
    skipped = 0
    for peer, pairs in wire.items():
        mine = ours.get(peer, [])
        if len(mine) != len(pairs):
            skipped += 1
            continue
        errors += [abs(a - b[1]) for a, b in zip(mine, sorted(pairs), strict=True)]
    if not errors:
        print(f"rtt accuracy                   no matched samples ({skipped} peers skipped)")
        return
    errors.sort()
    w = sorted(x[1] for pairs in wire.values() for x in pairs)

    def pct(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    print(f"rtt on the wire p50/p99        {pct(w, .5):.3f} / {pct(w, .99):.3f} ms")
    print(f"rtt error vs tshark            p50 {pct(errors, .5):.3f} ms, p99 {pct(errors, .99):.3f} ms, "
          f"max {errors[-1]:.3f} ms ({len(errors):,} transactions matched, {skipped} peers skipped)")


if __name__ == "__main__":
    raise SystemExit(main())
