#!/usr/bin/env python3
"""Instructions per answered transaction of the whole daemon, saturated, under callgrind.

CPU-time figures on a shared 2-core VM swing by +-20 % between runs of the same build (other
jobs, the responder on the same cores); instruction counts do not depend on the load. This runs
the real `sipqualify run` (a generated sip.conf, `[store] sample_every = 10`) under
`valgrind --tool=callgrind`, answered by Kamailio (`sl_send_reply`), with enough peers at
`qualifyfreq = 1` that the daemon, about 50x slower under valgrind, is saturated: every loop
turn has pokes due and answers waiting, as a native daemon has near its ceiling. After a warm-up
the counters are zeroed (`callgrind_control -z`), and after the measured seconds dumped; the
figure is the user-space instructions of every thread of the daemon over the transactions it
answered meanwhile. Kernel work (system calls, the loopback stack) is not counted: compare builds
of the shell and the engine with it, not system-call strategies.

    python bench/bench_instructions.py                      # 2,000 peers, 40 s measured
    PYTHONPATH=src python bench/bench_instructions.py       # a checkout's tree (compiled or not)
    python bench/bench_instructions.py --short              # CI: 1,000 peers, 15 s measured
    python bench/bench_instructions.py --save cg.out        # keep the dump: callgrind_annotate cg.out
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import api, free_port, kamailio_binary, missing_kamailio, peers_conf, start_kamailio, stop, wait_api


def total_instructions(dump: Path) -> int:
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=2000)
    ap.add_argument("--warmup", type=float, default=30, help="seconds after the API answers, before counting")
    ap.add_argument("--measure", type=float, default=40)
    ap.add_argument("--short", action="store_true", help="CI mode: 1,000 peers, 20 s warm-up, 15 s measured")
    ap.add_argument("--save", type=Path, help="copy the measured callgrind dump here (for callgrind_annotate)")
    args = ap.parse_args()
    if args.short:
        args.peers, args.warmup, args.measure = 1000, 20, 15
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_instructions")
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        print("bench_instructions: valgrind is not installed (apt-get install valgrind)")
        return 1 if os.environ.get("CI") else 0
    tmp = Path(tempfile.mkdtemp(prefix="sq-instr-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        kport, sport, aport = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        procs.append(start_kamailio(kam, tmp, kport))
        conf = peers_conf(tmp / "sip.conf", sport, kport, args.peers, 1, fromuser=True)
        (tmp / "sipqualify.toml").write_text(f'sip_conf = "{conf}"\n[store]\nsample_every = 10\n')
        out = tmp / "callgrind.out"
        daemon = subprocess.Popen(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "sipqualify.cli",
             "run", "-c", str(tmp / "sipqualify.toml"), "--api", f"127.0.0.1:{aport}", "--state-dir",
             str(tmp / "state"), "--log-level", "warning"],
            env=dict(os.environ, PYTHONHASHSEED="0"), stderr=open(tmp / "daemon.log", "wb"))
        procs.append(daemon)
        base = f"http://127.0.0.1:{aport}"
        token = wait_api(tmp / "state", base, 1200, 0.5)  # under valgrind: up to 10 minutes on a busy machine
        if token is None:
            log = (tmp / "daemon.log").read_text()[-500:]
            print("bench_instructions: the daemon did not start under valgrind:", log)
            return 1
        time.sleep(args.warmup)
        s0 = api(base, token, "/api/v1/status")
        subprocess.run([control, "-z", str(daemon.pid)], check=True, capture_output=True)
        time.sleep(args.measure)
        s1 = api(base, token, "/api/v1/status")
        subprocess.run([control, "-d", str(daemon.pid)], check=True, capture_output=True)
        dumps = sorted(tmp.glob("callgrind.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        instr = total_instructions(dumps[-1])
        if args.save is not None:
            shutil.copyfile(dumps[-1], args.save)
        e0, e1 = s0["engine"], s1["engine"]
        assert isinstance(e0, dict) and isinstance(e1, dict)
        answered = e1["answered"] - e0["answered"]
        import sipqualify.driver as drv
        import sipqualify.qualify.engine as eng
        build = ", ".join(f"{m.__name__.rsplit('.', 1)[1]} "
                          f"{'compiled' if m.__file__ and m.__file__.endswith('.so') else 'pure'}" for m in (eng, drv))
        print(f"daemon under callgrind, {args.peers:,} peers x 1 s, sample_every 10 ({build})")
        print(f"answered                      {answered:,} in {args.measure:.0f} s ({answered / args.measure:,.0f}/s: "
              "saturated, valgrind runs it ~50x slower)")
        print(f"instructions (user space)     {instr:,}")
        print(f"per answered transaction      {instr / max(answered, 1):,.0f}")
        return 0
    finally:
        for p in reversed(procs):
            stop(p, 30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
