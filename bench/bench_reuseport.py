#!/usr/bin/env python3
"""Why `run --workers N` gives each worker its own source port instead of sharing 5060 with
SO_REUSEPORT (docs/architecture.md "Workers"): where do answers land?

N sockets share 127.0.0.1:P with SO_REUSEPORT, as N workers would. Socket 0 sends one datagram
to each of R responders (127.0.0.x, each its own port), which echo it back to P. The kernel
hands each answer to one socket of the group by a hash of the 4-tuple, not to the socket that
sent the request: the figure printed is the share of answers that reach their sender. Then one
member leaves and a new one joins (a worker restarted), and the share of responders whose
answers now reach another worker is printed: their owner would change with the restart.

    python bench/bench_reuseport.py --sockets 2 --responders 1000
"""

from __future__ import annotations

import argparse
import select
import socket


def group(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        out.append(s)
    return out


def where(members: list[socket.socket], responders: list[socket.socket], sender: socket.socket) -> dict[int, int]:
    """responder index -> index of the member its answer reached."""
    dest = members[0].getsockname()
    got: dict[int, int] = {}
    for start in range(0, len(responders), 50):  # in chunks: no socket buffer overflows
        chunk = range(start, min(start + 50, len(responders)))
        for i in chunk:
            sender.sendto(str(i).encode(), responders[i].getsockname())
        for i in chunk:  # each echoes to the group's address
            r = responders[i]
            ready, _, _ = select.select([r], [], [], 2.0)
            if ready:
                data, _ = r.recvfrom(64)
                r.sendto(data, dest)
        while len(got) < chunk.stop:
            ready, _, _ = select.select(members, [], [], 2.0)
            if not ready:
                break
            for s in ready:
                while True:
                    try:
                        data, _ = s.recvfrom(64)
                    except BlockingIOError:
                        break
                    got[int(data)] = members.index(s)
    return got


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=2)
    ap.add_argument("--responders", type=int, default=1000)
    args = ap.parse_args()
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    members = group(port, args.sockets)
    responders = []
    for i in range(args.responders):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind((f"127.0.0.{2 + i % 200}", 0))
        responders.append(r)
    first = where(members, responders, members[0])
    own = sum(1 for m in first.values() if m == 0)
    print(f"{args.sockets} sockets share 127.0.0.1:{port} (SO_REUSEPORT), {args.responders} responders")
    print(f"answers back to the socket that sent the request: {own / max(len(first), 1) * 100:.1f}% "
          f"({own} of {len(first)}; 1/N = {100 / args.sockets:.1f}%)")
    again = where(members, responders, members[0])
    same = sum(1 for i, m in first.items() if again.get(i) == m)
    print(f"same socket on a second round, group unchanged: {same / max(len(first), 1) * 100:.1f}%")
    # worker 0 restarts: its socket leaves the group and its new socket joins; members stay
    # listed by worker, so a changed index is an answer that now reaches another worker
    members[0].close()
    members = [*group(port, 1), *members[1:]]
    after = where(members, responders, members[0])
    moved = sum(1 for i, m in first.items() if after.get(i) != m)
    print(f"after worker 0's socket was closed and opened again: {moved / max(len(first), 1) * 100:.1f}% of the "
          f"responders' answers reach another worker")
    for s in members + responders:
        s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
