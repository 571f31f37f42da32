#!/usr/bin/env python3
"""A million peers at qualifyfreq=60 (issue 15): CPU per transaction and bytes per peer.

Two parts, both printed:

1. Engine (virtual clock, no sockets; bench_engine.py's simulation): N peers × 60 s, every
   OPTIONS answered 1 ms later with Kamailio's 200 OK. Prints the engine's µs per transaction,
   the RSS growth per peer, and where a peer's bytes go (sys.getsizeof of each per-peer
   object of one qualified peer: Peer, PeerConfig, verdict, latency statistics, boxed floats,
   strings, the timer-heap entry, the dict slots).
2. Daemon (`--daemon`): the real `sipqualify run` with N peers from a sip.conf, answered by
   Kamailio (`sl_send_reply`, bench/common.py) on 127.0.0.1, every peer qualified at least once,
   then its VmRSS from /proc; the same with 1,000 peers; bytes per peer = the difference over
   the difference in peers (store caches, read model, metrics, config and engine objects
   included). Also the daemon's CPU per answered transaction over `--window` seconds.

    python bench/bench_million.py                        # 1,000,000 peers, 600 s virtual
    python bench/bench_million.py --short                # CI: 100,000 peers, 120 s virtual (< 60 s)
    python bench/bench_million.py --short --daemon       # and the daemon with 100,000 peers
    python bench/bench_million.py --daemon --no-engine   # the daemon with 1,000,000 peers only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_engine import rss_bytes, simulate
from common import cpu_seconds, free_port, kamailio_binary, missing_kamailio, start_kamailio, stop, udp_drops

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sipqualify.model import GeneralConfig, PeerConfig  # noqa: E402
from sipqualify.qualify.engine import QualifyEngine  # noqa: E402

FREQ = 60


def breakdown(engine: QualifyEngine) -> list[tuple[str, int]]:
    """Bytes of one qualified peer's own objects (the first peer), by object."""
    gs = sys.getsizeof
    p = next(iter(engine.peers()))
    rows = [("Peer (slots)", gs(p)), ("PeerConfig (slots)", gs(p.cfg)),
            ("PeerVerdict (0: a shared settled one)", 0 if p.verdict.shared else gs(p.verdict))]
    if p.stats is not None:  # its figures are packed in one bytes object (qualify/stats.py)
        rows.append(("LatencyStats + its packed figures", gs(p.stats) + gs(p.stats._b)))
    rows.append(("Peer floats (rtt, last_change, last_qualify)",
                 sum(gs(v) for v in (p.rtt, p.last_change, p.last_qualify) if type(v) is float)))
    rows.append(("name + host strings", gs(p.name) + gs(p.cfg.host or "")))
    if p.addr is not None:
        rows.append(("address tuple", gs(p.addr)))
    # the pending poke (qualify/timers.py: in a re-poll queue, or the heap): (when, key, peer); the
    # key is the peer's poke_gen too
    pending = next((q[-1] for q in engine._pokes.queues if q), None) or \
        (engine._pokes.heap[-1] if engine._pokes.heap else None)
    if pending is not None:
        when, key, _ = pending
        rows.append(("timer entry (tuple, float, key int)", gs(pending) + gs(when) + gs(key)))
    rows.append(("engine dict slot (name -> Peer), amortised", gs(engine._peers) // max(len(engine), 1)))
    return rows


def engine_part(n: int, duration: float) -> None:
    per_group = max(1, n // (FREQ * 10)) - 1  # first pokes spread over one qualifyfreq
    general = GeneralConfig(qualifygap_ms=100, qualifypeers=max(per_group, 0))
    gc.collect()
    rss0 = rss_bytes()
    engine = QualifyEngine(general, local_address=lambda d: ("10.0.0.1", 5060), wallclock=lambda: 1795463111.0)
    cfgs = [PeerConfig(name=f"peer{i:07d}", host=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                       qualify_ms=2000, qualifyfreq_ms=FREQ * 1000) for i in range(n)]
    engine.load(cfgs, 0.0, addresses={c.name: (c.host or "", 5060) for c in cfgs})
    del cfgs  # the engine keeps each PeerConfig (Peer.cfg), as the daemon's Config does
    gc.collect()
    gc.freeze()  # as the daemon does after loading (service.py _settle_gc)
    engine_cpu, loop_cpu, wall, _ = simulate(engine, duration, 0.001)
    st = engine.stats
    txns = st.answered + st.timeouts
    rss = rss_bytes() - rss0
    not_ok = sum(1 for p in engine.peers() if p.state != "OK")
    print(f"== engine: {n:,} peers x qualifyfreq {FREQ} s, {duration:.0f} s virtual")
    print(f"transactions                  {txns:,} (answered {st.answered:,}, timeouts {st.timeouts:,})")
    print(f"engine CPU                    {engine_cpu / txns * 1e6:.1f} us/txn "
          f"(whole simulation loop {loop_cpu / txns * 1e6:.1f} us/txn, wall {wall:.1f} s)")
    print(f"memory                        {rss / n:,.0f} bytes/peer (RSS growth: configs, peers, heap, dicts)")
    print(f"peers not OK at end           {not_ok:,}")
    print("one peer's objects:")
    total = 0
    for what, size in breakdown(engine):
        total += size
        print(f"  {what:<46} {size:>5} B")
    print(f"  {'sum':<46} {total:>5} B")


def api(base: str, token: str, path: str) -> dict[str, object]:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out: dict[str, object] = json.loads(r.read())
        return out


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def states(base: str, token: str) -> dict[str, int]:
    """Peers by state, from /metrics (`sipqualify_peers{state=...}`)."""
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read().decode()
    return {line.split('"')[1]: int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines() if line.startswith("sipqualify_peers{state=")}


def print_bad_transitions(db: Path, limit: int = 10) -> None:
    """The first transitions to LAGGED or UNREACHABLE the daemon stored (peers not OK at the
    end: when, with which lastms and RTT), to tell a real loss from a timing artefact."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = con.execute("SELECT peer, time, old, new, lastms, rtt_ms FROM transitions WHERE new IN "
                           "('LAGGED', 'UNREACHABLE') ORDER BY time LIMIT ?", (limit,)).fetchall()
        con.close()
    except sqlite3.Error as e:
        print(f"(transitions not read: {e})")
        return
    for peer, at, old, new, lastms, rtt in rows:
        print(f"  {peer}: {old} -> {new} at {time.strftime('%H:%M:%S', time.localtime(at))}, "
              f"lastms {lastms}, rtt {rtt} ms")


def write_sipconf(path: Path, n: int, sip_port: int, kport: int) -> None:
    """The daemon part's sip.conf: n peers at Kamailio's `kport`, first pokes over <= 60 s
    (also read by bench_config_memory.py and bench_daemon_trace.py)."""
    with open(path, "w") as f:
        f.write(f"[general]\nudpbindaddr=127.0.0.1:{sip_port}\nqualifygap=100\n"
                f"qualifypeers={max(n // (10 * FREQ), 10)}\n\n")
        for i in range(n):
            f.write(f"[p{i:07d}]\ntype=peer\nhost=127.0.0.1\nport={kport}\nqualify=yes\nqualifyfreq={FREQ}\n\n")


def run_daemon(tmp: Path, kport: int, n: int, window: float,
               timeout: float) -> tuple[int, float, dict[str, int], float, dict[str, int]]:
    """`sipqualify run` with n peers until each answered once. Returns (VmRSS, CPU µs per
    answered transaction over `window`, peers not OK by state, seconds until none was UNKNOWN,
    the overload counters of the whole run: timeouts, late restarts, inconclusive give-ups,
    datagrams the kernel dropped on our socket and on Kamailio's)."""
    sport, aport = free_port(), free_port(socket.SOCK_STREAM)
    d = tmp / f"d{n}"
    d.mkdir()
    write_sipconf(d / "sip.conf", n, sport, kport)
    kdrops0 = udp_drops(kport)
    daemon = subprocess.Popen([sys.executable, "-m", "sipqualify.cli", "run", "-c", str(d / "sip.conf"),
                               "--api", f"127.0.0.1:{aport}", "--state-dir", str(d / "state"),
                               "--log-level", "warning"], env=dict(os.environ, PYTHONUNBUFFERED="1"),
                              stderr=open(d / "daemon.log", "wb"))
    try:
        base, token, t0 = f"http://127.0.0.1:{aport}", "", time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                token = (d / "state" / "api-token").read_text().strip()
                api(base, token, "/healthz")
                break
            except OSError:
                time.sleep(0.5)
        while time.monotonic() - t0 < timeout:  # every peer qualified once: its per-peer state exists
            if states(base, token).get("UNKNOWN", 0) == 0:
                break
            time.sleep(2.0)
        settled = time.monotonic() - t0
        s0 = api(base, token, "/api/v1/status")["engine"]
        c0 = cpu_seconds(daemon.pid)
        time.sleep(window)
        c1 = cpu_seconds(daemon.pid)
        status = api(base, token, "/api/v1/status")
        s1 = status["engine"]
        service = status["service"]
        assert isinstance(service, dict)
        assert isinstance(s0, dict) and isinstance(s1, dict)
        done = int(s1["answered"]) - int(s0["answered"])
        rss = vm_rss(daemon.pid)
        not_ok = {k: v for k, v in states(base, token).items() if k != "OK" and v}
        over = {"timeouts": int(s1["timeouts"]), "late restarts": int(s1.get("late_restarts", 0)),
                "inconclusive": int(s1.get("inconclusive", 0)), "our drops": udp_drops(sport),
                "Kamailio drops": udp_drops(kport) - kdrops0,
                "loop lag max ms (decayed)": round(float(service["loop_lag_max_ms"])),
                "answered/s in the window": round(done / window)}
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        if not_ok:
            print_bad_transitions(d / "state" / "sipqualify.sqlite")
        return rss, (c1 - c0) / max(done, 1) * 1e6, not_ok, settled, over
    finally:
        stop(daemon)


def daemon_part(n: int, window: float) -> int:
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_million --daemon")
    tmp = Path(tempfile.mkdtemp(prefix="sq-million-"))
    kport = free_port()
    kamailio = start_kamailio(kam, tmp, kport)
    try:
        small = 1000
        rss_s, cpu_s, bad_s, _, _ = run_daemon(tmp, kport, small, window, 300)
        rss_n, cpu_n, bad_n, settled, over = run_daemon(tmp, kport, n, window, 3600)
        print(f"== daemon: `sipqualify run`, {n:,} peers x qualifyfreq {FREQ} s against Kamailio")
        print(f"all peers qualified once after {settled:.0f} s (start-up and config included)")
        print(f"VmRSS                         {rss_n / 2**20:,.0f} MiB ({small:,} peers: {rss_s / 2**20:,.0f} MiB)")
        print(f"memory                        {(rss_n - rss_s) / (n - small):,.0f} bytes/peer "
              f"(RSS difference over the peer difference)")
        print(f"daemon CPU                    {cpu_n:.1f} us per answered transaction over {window:.0f} s "
              f"({small:,} peers: {cpu_s:.1f})")
        print(f"peers not OK at end           {bad_n or 0} ({small:,} peers: {bad_s or 0})")
        print("overload, whole run           " + ", ".join(f"{k} {v:,}" for k, v in over.items()))
    finally:
        stop(kamailio)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=600.0, help="virtual seconds of the engine part")
    ap.add_argument("--short", action="store_true", help="CI mode: 100,000 peers, 120 s virtual")
    ap.add_argument("--daemon", action="store_true", help="also the real daemon against Kamailio")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine part")
    ap.add_argument("--window", type=float, default=float(FREQ),
                    help="seconds of the daemon's CPU measurement (default: one qualify period)")
    args = ap.parse_args()
    if args.short:
        args.peers, args.duration = 100_000, 120.0
    if not args.no_engine:
        engine_part(args.peers, args.duration)
    if args.daemon:
        return daemon_part(args.peers, args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
