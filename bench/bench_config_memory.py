#!/usr/bin/env python3
"""What reading a big sip.conf leaves in the process (issue 15, daemon memory per peer).

Writes bench_million.py's daemon sip.conf of N peers (type, host, port,
qualify, qualifyfreq), then in a fresh interpreter: VmRSS before `load_config`, after it
(the Config kept, as the daemon keeps it), after `gc.collect()` and after `release_memory()`
(config/memory.py: gc + glibc `malloc_trim(0)`, what the daemon runs after each load), and
pymalloc's arena figures (`sys._debugmallocstats`). Bytes per peer = growth / N.

    python bench/bench_config_memory.py                 # 100,000 peers
    python bench/bench_config_memory.py --peers 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_million import write_sipconf

SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = r"""
import gc, os, sys, time
sys.path.insert(0, sys.argv[1])
from sipqualify.config import load_config
from sipqualify.config.memory import _malloc_trim, release_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def arenas():
    # sys._debugmallocstats writes to the C stderr (fd 2): read it back through a pipe file
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    sys._debugmallocstats()
    os.dup2(saved, 2)
    os.close(w)
    text = os.read(r, 1 << 20).decode()
    os.close(r)
    out = {}
    for line in text.splitlines():
        if line.startswith("# arenas highwater mark") or line.startswith("# arenas allocated current"):
            out[line.split("=")[0].strip("# ").strip()] = int(line.split("=")[1].replace(",", ""))
        if line.startswith("# bytes in allocated blocks") or line.startswith("# bytes in available blocks"):
            out[line.split("=")[0].strip("# ").strip()] = int(line.split("=")[1].replace(",", ""))
    return out

n = int(sys.argv[3])
gc.collect()
r0 = rss()
cfg = load_config(sys.argv[2])
r1 = rss()
t0 = time.perf_counter()
gc.collect()
t1 = time.perf_counter()
r2 = rss()
trim = _malloc_trim()
if trim is not None:  # release_memory() is these two steps: gc.collect(), then malloc_trim(0)
    trim(0)
t2 = time.perf_counter()
r3 = rss()
assert release_memory() == (trim is not None)
a = arenas()
print(f"peers read                    {len(cfg.peers):,}")
print(f"after load_config             {(r1 - r0) / n:,.0f} bytes/peer")
print(f"after gc.collect()            {(r2 - r0) / n:,.0f} bytes/peer ({(t1 - t0) * 1e3:.0f} ms)")
print(f"after malloc_trim(0)          {(r3 - r0) / n:,.0f} bytes/peer ({(t2 - t1) * 1e3:.1f} ms; "
      f"{'glibc' if trim is not None else 'no malloc_trim here'})")
print(f"pymalloc arenas               {a.get('arenas allocated current', 0):,} now "
      f"(high-water {a.get('arenas highwater mark', 0):,}): "
      f"{a.get('bytes in allocated blocks', 0) / 2**20:,.1f} MiB live, "
      f"{a.get('bytes in available blocks', 0) / 2**20:,.1f} MiB free in them")
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sq-cfgmem-") as tmp:
        conf = Path(tmp) / "sip.conf"
        write_sipconf(conf, args.peers, 5060, 5070)
        print(f"== load_config of a sip.conf with {args.peers:,} peers ({conf.stat().st_size / 2**20:.1f} MiB)")
        return subprocess.call([sys.executable, "-c", CHILD, SRC, str(conf), str(args.peers)],
                               env=dict(os.environ, PYTHONPATH=SRC))


if __name__ == "__main__":
    sys.exit(main())
