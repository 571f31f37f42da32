#!/usr/bin/env python3
"""What one OPTIONS costs in the kernel, apart from anything sipqualify does (issue 15: where
the ≤ 40 µs per transaction goes).

A plain Python loop sends a 400-byte chan_sip-shaped OPTIONS to the benches' Kamailio responder
(`sl_send_reply`, bench/common.py) on loopback and reads its 200 OKs back with `recvmsg` and
kernel timestamps, as the daemon's socket does, paced like the daemon's timer (a burst every
millisecond). The process's own CPU (user and system, getrusage) is measured around the
sends and around the receives separately, per datagram. On loopback a `sendto` also runs the
receiving side's network stack and wakes the responder, in the sender's system time: the
same work the daemon's `sendto` shows in a profile (`UdpEndpoint.sendto`, a third of its
samples at 5,000/s).

    python bench/bench_sendto.py --rate 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, kamailio_binary, missing_kamailio, start_kamailio, stop

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def cpu() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def options(kport: int, sport: int, i: int) -> bytes:
    return (f"OPTIONS sip:p{i}@127.0.0.1:{kport} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sport};branch=z9hG4bK{i:08x}a1b2c3;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: \"sipqualify\" <sip:sipqualify@127.0.0.1:{sport}>;tag=as{i:08x}\r\n"
            f"To: <sip:p{i}@127.0.0.1:{kport}>\r\n"
            f"Contact: <sip:sipqualify@127.0.0.1:{sport}>\r\n"
            f"Call-ID: {i:032x}@127.0.0.1:{sport}\r\n"
            "CSeq: 102 OPTIONS\r\nUser-Agent: sipqualify 0.1\r\nDate: Wed, 02 Dec 2026 09:00:00 GMT\r\n"
            "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE\r\n"
            "Supported: replaces, timer\r\nContent-Length: 0\r\n\r\n").encode()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=5000, help="OPTIONS per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--short", action="store_true", help="CI mode: 3 s")
    args = ap.parse_args()
    if args.short:
        args.seconds = 3.0
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_sendto")
    tmp = Path(tempfile.mkdtemp(prefix="sq-sendto-"))
    kport = free_port()
    k = start_kamailio(kam, tmp, kport)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setblocking(False)
    sport = s.getsockname()[1]
    dest = ("127.0.0.1", kport)
    msgs = [options(kport, sport, i) for i in range(1000)]
    burst = max(1, args.rate // 1000)
    send_u = send_s = recv_u = recv_s = 0.0
    sent = got = 0
    space = socket.CMSG_SPACE(16)
    t_end = time.monotonic() + args.seconds
    tick = time.monotonic()
    try:
        while time.monotonic() < t_end:
            u0, s0 = cpu()
            for _ in range(burst):
                s.sendto(msgs[sent % 1000], dest)
                sent += 1
            u1, s1 = cpu()
            while True:
                try:
                    s.recvmsg(65535, space)
                except BlockingIOError:
                    break
                got += 1
            u2, s2 = cpu()
            send_u += u1 - u0
            send_s += s1 - s0
            recv_u += u2 - u1
            recv_s += s2 - s1
            tick += 0.001
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        stop(k)
    print(f"== sendto/recvmsg on loopback against Kamailio, {args.rate:,}/s offered "
          f"(bursts of {burst} every ms), {args.seconds:.0f} s")
    print(f"sent {sent:,}, answers read {got:,}")
    print(f"per sendto:  user {send_u / sent * 1e6:6.1f} us + system {send_s / sent * 1e6:6.1f} us "
          f"= {(send_u + send_s) / sent * 1e6:6.1f} us")
    if got:
        print(f"per recvmsg: user {recv_u / got * 1e6:6.1f} us + system {recv_s / got * 1e6:6.1f} us "
              f"= {(recv_u + recv_s) / got * 1e6:6.1f} us (the empty read ending each batch included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
