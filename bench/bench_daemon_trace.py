#!/usr/bin/env python3
"""Where the running daemon's bytes per peer go (issue 15): tracemalloc inside `sipqualify run`.

The real daemon (`sipqualify.cli main`, in this process, with tracemalloc on) reads a sip.conf
of N peers all answered by Kamailio (`sl_send_reply`, bench/common.py) on 127.0.0.1; after
`--after` seconds (long enough for every peer to be qualified once) a snapshot is taken and
the allocation sites holding the most bytes are printed, in bytes per peer, then the daemon
is stopped. tracemalloc counts Python's own allocations only (not the arenas' free space:
that is bench_million.py's VmRSS figure), and slows the daemon down, so keep N modest.

    python bench/bench_daemon_trace.py --peers 20000 --after 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from bench_million import write_sipconf
from common import free_port, kamailio_binary, missing_kamailio, start_kamailio, stop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def report(n: int, top: int) -> None:
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "<frozen *>")])
    stats = snap.statistics("lineno")
    print(f"== tracemalloc in `sipqualify run`, {n:,} peers: {sum(s.size for s in stats) / n:,.0f} bytes/peer "
          "of live Python allocations (imports excluded)")
    for s in stats[:top]:
        frame = s.traceback[0]
        print(f"{s.size / n:8.1f} B/peer {s.count:9,} blocks  {frame.filename}:{frame.lineno}")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=20_000)
    ap.add_argument("--after", type=float, default=100.0, help="seconds before the snapshot")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_daemon_trace")
    tmp = Path(tempfile.mkdtemp(prefix="sq-trace-"))
    kport, sport = free_port(), free_port()
    kamailio = start_kamailio(kam, tmp, kport)
    write_sipconf(tmp / "sip.conf", args.peers, sport, kport)  # bench_million.py's daemon sip.conf

    def snapshot() -> None:
        time.sleep(args.after)
        report(args.peers, args.top)
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own clean shutdown

    tracemalloc.start()
    threading.Thread(target=snapshot, daemon=True).start()
    from sipqualify.cli import main as cli

    try:
        return cli(["run", "-c", str(tmp / "sip.conf"), "--api", f"127.0.0.1:{free_port()}",
                    "--state-dir", str(tmp / "state"), "--log-level", "warning"]) or 0
    finally:
        stop(kamailio)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
