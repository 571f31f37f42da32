#!/usr/bin/env python3
"""Engine-only benchmark: N peers qualified on a virtual clock, no sockets.

Every OPTIONS the engine emits is answered 1 ms (virtual) later by an in-process responder
that builds the 200 OK Kamailio's `sl_send_reply` sends (7 headers), so the engine's full
parse + match path runs on realistic bytes. Prints CPU per 1,000 qualify transactions (CPU
spent inside engine calls, and the whole loop), memory per peer (RSS growth over the
loaded engine) and whether any peer ended in a false state.

    python bench/bench_engine.py                     # 1,000,000 peers, 600 s virtual
    python bench/bench_engine.py --peers 20000 --duration 120   # CI short mode
    python bench/bench_engine.py --peers 10000 --policy         # every peer with a verdict policy
    python bench/bench_engine.py --peers 10000 --policy --flap  # ... and flap damping
    python bench/bench_engine.py --peers 20000 --source  # every peer with a qualify_source
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sipqualify.model import GeneralConfig, PeerConfig  # noqa: E402
from sipqualify.qualify.engine import QualifyEngine  # noqa: E402


def kamailio_reply(req: bytes) -> bytes:
    """The 200 OK Kamailio's sl_send_reply sends (the responder of anchors-performance.md):
    the request's Via, From, To (+tag), Call-ID and CSeq, then Server and Content-Length."""
    lines = req.split(b"\r\n")
    keep = [ln for ln in lines if ln[:4] in (b"Via:", b"From", b"Call", b"CSeq")]
    to = next(ln for ln in lines if ln.startswith(b"To:"))
    return (b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep[:2]) + b"\r\n" + to + b";tag=2c9e3f1a\r\n"
            + b"\r\n".join(keep[2:]) + b"\r\nServer: kamailio (5.6.3 (x86_64/linux))\r\nContent-Length: 0\r\n\r\n")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def simulate(engine: QualifyEngine, end: float, rtt: float) -> tuple[float, float, float, int]:
    """Run `engine` on a virtual clock until `end`, every OPTIONS answered `rtt` later with
    Kamailio's 200 OK. Returns (CPU inside engine calls, CPU of the whole loop, wall seconds,
    events)."""
    pending: deque[tuple[float, bytes, tuple[str, int]]] = deque()
    now = 0.0
    engine_cpu = 0.0
    pt = time.process_time
    wall0 = time.perf_counter()
    loop_cpu0 = pt()
    events = 0
    while True:
        t_timer = engine.get_timer()
        t_pkt = pending[0][0] if pending else None
        if t_pkt is not None and (t_timer is None or t_pkt <= t_timer):
            now = t_pkt
            if now > end:
                break
            c0 = pt()
            while pending and pending[0][0] <= now:
                _, data, src = pending.popleft()
                engine.receive_datagram(data, src, now)
            engine_cpu += pt() - c0
        elif t_timer is not None:
            now = t_timer
            if now > end:
                break
            c0 = pt()
            engine.handle_timer(now)
            engine_cpu += pt() - c0
        else:
            break
        c0 = pt()
        out = engine.datagrams_to_send()
        out += [(data, dest) for data, dest, _ in engine.datagrams_to_send_from()]
        while engine.next_event() is not None:
            events += 1
        engine_cpu += pt() - c0
        for data, dest in out:
            pending.append((now + rtt, kamailio_reply(data), dest))
    return engine_cpu, pt() - loop_cpu0, time.perf_counter() - wall0, events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=1_000_000)
    ap.add_argument("--duration", type=float, default=600.0, help="virtual seconds")
    ap.add_argument("--freq", type=int, default=60, help="qualifyfreq in seconds")
    ap.add_argument("--rtt", type=float, default=0.001, help="virtual answer delay (s)")
    ap.add_argument("--policy", action="store_true",
                    help="every peer with a verdict policy (reply_up, reply_degraded, down_after, up_after, "
                         "retry_interval)")
    ap.add_argument("--flap", action="store_true", help="every peer with flap damping (flap_suppress = 2000)")
    ap.add_argument("--source", action="store_true",
                    help="every peer with qualify_source = 10.255.0.1 (sent through datagrams_to_send_from)")
    args = ap.parse_args()

    n = args.peers
    # spread the start over one qualifyfreq (chan_sip's default gap would need 14 h for 1M)
    per_group = max(1, n // int(args.freq * 10)) - 1
    general = GeneralConfig(qualifygap_ms=100, qualifypeers=max(per_group, 0))
    gc.collect()
    rss0 = rss_bytes()
    policy: dict[str, Any] = dict(policy="bench", reply_up="200-299", reply_degraded="486,503", down_after=3,
                                  up_after=2, retry_interval_s=2) if args.policy else {}
    if args.flap:
        policy["flap_suppress"] = 2000
    engine = QualifyEngine(general, local_address=lambda d: ("10.0.0.1", 5060), wallclock=lambda: 1795463111.0)
    if args.source:
        policy["qualify_source"] = ("10.255.0.1", 0)
        engine.set_sources({("10.255.0.1", 0): ("10.255.0.1", 40000)})
    peers = [
        PeerConfig(name=f"peer{i:07d}", host=f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                   qualify_ms=2000, qualifyfreq_ms=args.freq * 1000, **policy)
        for i in range(n)
    ]
    addrs = {p.name: (p.host or "", 5060) for p in peers}
    t_load = time.process_time()
    engine.load(peers, 0.0, addresses=addrs)
    t_load = time.process_time() - t_load
    del addrs
    gc.collect()
    rss_loaded = rss_bytes()

    engine_cpu, loop_cpu, wall, events = simulate(engine, args.duration, args.rtt)
    end, rtt = args.duration, args.rtt
    st = engine.stats
    txns = st.answered + st.timeouts
    false_states = sum(1 for p in engine.peers() if p.state != "OK")
    rss_end = rss_bytes()
    print(f"peers                         {n:,}{' with a verdict policy' if args.policy else ''}"
          f"{' with a qualify_source' if args.source else ''}")
    print(f"virtual time                  {end:.0f} s (qualifyfreq {args.freq} s, answer after {rtt * 1000:.1f} ms)")
    print(f"load (config -> scheduled)    {t_load:.2f} s CPU")
    print(f"qualify transactions          {txns:,} (answered {st.answered:,}, timeouts {st.timeouts:,}, "
          f"retransmissions {st.retransmissions:,})")
    print(f"events                        {events:,}")
    print(f"engine CPU                    {engine_cpu:.2f} s -> {engine_cpu / txns * 1e6:.1f} us/txn = "
          f"{engine_cpu / txns * 1e6:.1f} ms per 1,000 transactions")
    print(f"whole loop CPU (incl. sim)    {loop_cpu:.2f} s -> {loop_cpu / txns * 1e6:.1f} ms per 1,000 transactions")
    print(f"wall                          {wall:.1f} s ({txns / wall:,.0f} txn/s)")
    print(f"memory per peer               {(rss_loaded - rss0) / n:.0f} B after load, "
          f"{(rss_end - rss0) / n:.0f} B at end (RSS growth incl. PeerConfig, heap, dicts)")
    print(f"peers not OK at end           {false_states:,}")
    print(f"malformed/stray/mismatched    {st.rx_malformed}/{st.stray_responses}/{st.mismatched_responses}")


if __name__ == "__main__":
    main()
