#!/usr/bin/env python3
"""`run --workers N` against Kamailio: answered/s and CPU per transaction with 1 worker
(in-process, no worker at all) and with N worker processes (anchors-performance.md method).

P peers, each `qualifyfreq=F` s, all pointing at one Kamailio answering OPTIONS with
`sl_send_reply` (two children). For each worker count, a fresh daemon; after warm-up, for D
seconds: answered/s (the merged engine counters of /api/v1/status), CPU = user + sys of the
daemon and all its worker processes (from /proc), per answered transaction, the main process's
share, and the peers not OK at the end, by state (false states: not OK although Kamailio
answers every request in < 1 ms; a LAGGED peer whose requests the responder dropped is late, not false).

    python bench/bench_workers.py --peers 20000 --duration 30 --workers 1 2   # docs/performance.md
    python bench/bench_workers.py --short                                      # CI: < 60 s
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import (
    api,
    cpu_split,
    free_port,
    kamailio_binary,
    missing_kamailio,
    peers_conf,
    sipp_reference,
    start_kamailio,
    stop,
    tree_cpu_seconds,
    udp_drops,
)


def run_one(tmp: Path, conf: Path, workers: int, peers: int, warmup: float, duration: float, kport: int,
            reference: float | None) -> None:
    aport = free_port(socket.SOCK_STREAM)
    state = tmp / f"state-{workers}"
    daemon = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf),
                               "--api", f"127.0.0.1:{aport}", "--state-dir", str(state), "--log-level", "warning",
                               "--workers", str(workers)],
                              env=dict(os.environ, PYTHONUNBUFFERED="1"),
                              stderr=open(tmp / f"daemon-{workers}.log", "wb"))
    try:
        base, token = f"http://127.0.0.1:{aport}", ""
        for _ in range(300):
            time.sleep(0.1)
            try:
                token = (state / "api-token").read_text().strip()
                api(base, token, "/healthz")
                break
            except OSError:
                continue
        # warm-up from the moment every peer has a result (workers start in a second or more)
        t_ready = time.monotonic()
        while time.monotonic() - t_ready < 120:
            views = api(base, token, "/api/v1/peers")["peers"]
            if len(views) == peers and all(p["qualifies"] for p in views):
                break
            time.sleep(0.5)
        started = time.monotonic() - t_ready
        time.sleep(warmup)
        s0 = api(base, token, "/api/v1/status")["engine"]
        c0, m0, t0 = tree_cpu_seconds(daemon.pid), cpu_split(daemon.pid), time.monotonic()
        d0 = udp_drops(kport)
        time.sleep(duration)
        c1, m1, t1 = tree_cpu_seconds(daemon.pid), cpu_split(daemon.pid), time.monotonic()
        drops = udp_drops(kport) - d0
        s1 = api(base, token, "/api/v1/status")["engine"]
        views = api(base, token, "/api/v1/peers")["peers"]
        answered = s1["answered"] - s0["answered"]
        cpu, main_user, main_sys, span = c1 - c0, m1[0] - m0[0], m1[1] - m0[1], t1 - t0
        main_cpu = main_user + main_sys
        not_ok = [p["name"] for p in views if p["state"] != "OK"]
        # why: a LAGGED peer's last answer came after its maxms (e.g. its first copy and first
        # retransmission both dropped by the responder's socket: a true late answer, not a false state)
        why = Counter(p["state"] for p in views if p["state"] != "OK")
        late = sorted(p["lastms"] for p in views if p["state"] == "LAGGED" and p.get("lastms") is not None)
        rtts = sorted(p["rtt_ms"] for p in views if p.get("rtt_ms") is not None)
        p50, p99 = (rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]) if rtts else (0.0, 0.0)
        print(f"--workers {workers}: every peer answered {started:.1f} s after the API; "
              f"answered {answered / span:,.0f}/s, "
              f"CPU {cpu / max(answered, 1) * 1e6:.1f} us per transaction (all processes, "
              f"{cpu / span * 100:.0f}% of a core; main process {main_cpu / max(answered, 1) * 1e6:.1f} us: "
              f"user {main_user / max(answered, 1) * 1e6:.1f}, system {main_sys / max(answered, 1) * 1e6:.1f}), "
              f"retransmissions {s1['retransmissions'] - s0['retransmissions']:,}, "
              f"timeouts {s1['timeouts'] - s0['timeouts']:,}, requests the responder's socket dropped {drops:,}, "
              f"last RTT p50/p99 {p50:.2f}/{p99:.2f} ms, "
              f"not OK at end {len(not_ok)} {dict(why)} {not_ok[:3]}"
              + (f" (LAGGED last answers {late[0]}-{late[-1]} ms)" if late else ""),
              flush=True)
        if reference:
            print(f"--workers {workers}: CPU per transaction {cpu / max(answered, 1) * 1e6 / reference:.2f}x SIPp's "
                  "(the reference above: the same responder, in this run)", flush=True)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    finally:
        stop(daemon)


def pipe_cost(n: int = 400, rounds: int = 200) -> None:
    """The pipe alone, no sockets: per result, the worker's snapshot + encoding of a batch, and
    the main process's decoding + applying it to its copy of the peer (before the dispatch
    that the in-process path does too)."""
    from sipqualify.model import PeerConfig
    from sipqualify.qualify.engine import Peer
    from sipqualify.qualify.events import QualifyResult
    from sipqualify.qualify.stats import LatencyStats
    from sipqualify.workers.wire import encode, restore, snapshot

    peers = [Peer(PeerConfig(name=f"p{i:06d}", host="127.0.0.1", qualify_ms=2000)) for i in range(n)]
    for p in peers:
        p.stats, p.lastms, p.rtt = LatencyStats(), 1, 0.0012
    results = [tuple(QualifyResult(p.name, 1.0, True, 0.0012, 200, 1, False, "OK")) for p in peers]
    t0 = time.perf_counter()
    for _ in range(rounds):
        data = encode(("batch", [snapshot(p) for p in peers], results, None))
    t1 = time.perf_counter()
    for _ in range(rounds):
        _, snaps, evs, _ = pickle.loads(data[4:])
        for p, snap in zip(peers, snaps, strict=True):
            restore(p, snap)
        [QualifyResult._make(e) for e in evs]
    t2 = time.perf_counter()
    per = 1e6 / (n * rounds)
    print(f"pipe, per result: worker {(t1 - t0) * per:.1f} us (snapshot + pickle), main {(t2 - t1) * per:.1f} us "
          f"(unpickle + restore), {len(data) / n:.0f} bytes", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=20000)
    ap.add_argument("--freq", type=int, default=1)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sample-every", type=int, default=1,
                    help="[store] sample_every: store one RTT sample in N per peer (default: every sample)")
    ap.add_argument("--short", action="store_true", help="CI mode: 2000 peers, 8 s each, < 60 s in all")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the reference: SIPp's OPTIONS client at the same rate, against the same responder")
    args = ap.parse_args()
    pipe_cost()
    if args.short:
        args.peers, args.duration, args.warmup = 2000, 8, 4
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_workers")
    tmp = Path(tempfile.mkdtemp(prefix="sq-workers-"))
    kamailio = None
    try:
        kport, sport = free_port(), free_port()
        kamailio = start_kamailio(kam, tmp, kport)
        conf = peers_conf(tmp / "sip.conf", sport, kport, args.peers, args.freq)
        if args.sample_every > 1:  # a TOML that reads the sip.conf and adds the store setting
            conf = tmp / "sipqualify.toml"
            conf.write_text(f'sip_conf = "{tmp / "sip.conf"}"\n[store]\nsample_every = {args.sample_every}\n')
        print(f"{args.peers:,} peers x {args.freq} s (offered {args.peers / args.freq:,.0f}/s), "
              f"{args.warmup:.0f} s warm-up, {args.duration:.0f} s measured, {os.cpu_count()} cores, "
              f"sample_every {args.sample_every}", flush=True)
        reference = None
        if not args.no_reference:  # first: the figures below are also given as a multiple of it
            ref = sipp_reference(kport, args.peers / args.freq, args.duration, tmp)
            if ref is None:
                print("reference: sipp not installed (apt-get install sip-tester); none", flush=True)
                if os.environ.get("CI"):
                    return 1
            else:
                print(f"reference, SIPp's OPTIONS client at {args.peers / args.freq:,.0f}/s for {args.duration:.0f} s: "
                      f"answered {ref[0]:,.0f}/s, CPU {ref[1]:.1f} us per transaction", flush=True)
                reference = ref[1]
        for n in args.workers:
            run_one(tmp, conf, n, args.peers, args.warmup, args.duration, kport, reference)
    finally:
        if kamailio is not None:
            stop(kamailio)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
