#!/usr/bin/env python3
"""Where the running daemon's bytes per peer go (issue 15): tracemalloc inside `sipqualify run`.

The real daemon (`sipqualify.cli main`, in this process, with tracemalloc on) reads a sip.conf
of N peers all answered by Kamailio (`sl_send_reply`, bench/common.py) on 127.0.0.1; after
`--after` seconds (long enough for every peer to be qualified once) a snapshot is taken and
the allocation sites holding the most bytes are printed, in bytes per peer, then the daemon
is stopped. tracemalloc counts Python's own allocations only (not the arenas' free space:
that is bench_million.py's VmRSS figure), and slows the daemon down, so keep N modest.

    python bench/bench_daemon_trace.py --peers 20000 --after 100

`--heap` (no tracemalloc, so N can be large) prints instead where the process's resident
bytes are: pymalloc's arenas (live blocks, free blocks, overheads: `sys._debugmallocstats`)
and glibc's heap (in use, free: `mallinfo2`), which holds Python's objects over 512 bytes
(big dicts' tables) and what C libraries allocate (SQLite's page cache above all).

    python bench/bench_daemon_trace.py --peers 100000 --after 100 --heap
"""

from __future__ import annotations

import argparse
import ctypes
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


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _pymalloc_stats() -> dict[str, int]:
    """The totals of `sys._debugmallocstats()` (which writes to fd 2), read through a temporary
    file (a pipe read afterwards could fill and block the write)."""
    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("#"):
            out.setdefault(key.strip("# ").strip(), int(value.strip().replace(",", "")))
        elif sep and "unused pools" in key:
            out["unused pools"] = int(value.strip().replace(",", ""))
    return out


def heap_report(n: int) -> None:
    rss = _rss()
    pm = _pymalloc_stats()
    print(f"== where `sipqualify run`'s resident bytes are, {n:,} peers: VmRSS {rss / 2**20:,.0f} MiB "
          f"({rss / n:,.0f} B/peer, fixed costs included)")
    arenas = pm.get("arenas allocated current", 0) * 1024 * 1024
    live = pm.get("bytes in allocated blocks", 0)
    free = pm.get("bytes in available blocks", 0)
    print(f"pymalloc arenas      {arenas / 2**20:8,.1f} MiB: live blocks {live / n:6,.0f} B/peer, "
          f"free blocks {free / n:5,.0f} B/peer, unused pools "
          f"{pm.get('unused pools', 0) / n:4,.0f} B/peer")
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        print(f"glibc heap           {mi.arena / 2**20:8,.1f} MiB: in use {mi.uordblks / n:6,.0f} B/peer, free "
              f"{mi.fordblks / n:5,.0f} B/peer; mmap'd chunks {mi.hblkhd / 2**20:,.1f} MiB "
              f"({mi.hblkhd / n:,.0f} B/peer: tables of the big dicts and lists)")
        heap_rss = _heap_rss()
        if heap_rss is not None:  # free chunks whose pages were given back are counted free, not resident
            print(f"  [heap] resident    {heap_rss / 2**20:8,.1f} MiB ({heap_rss / n:,.0f} B/peer; in use + free "
                  f"{(mi.uordblks + mi.fordblks) / n:,.0f} B/peer)")
    except (OSError, AttributeError):
        print("glibc heap           (no glibc mallinfo2 here)")
    try:  # the library _sqlite3 is linked to: the same handle, so its global counters
        lib = ctypes.CDLL("libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        used = lib.sqlite3_memory_used()
        print(f"  of which SQLite    {used / 2**20:8,.1f} MiB ({used / n:,.0f} B/peer: page caches of every "
              "connection, bounded by cache_size)")
    except (OSError, AttributeError):
        print("  SQLite             (libsqlite3.so.0 not found)")
    import gc

    from sipqualify.store.base import BaseStore

    gc.unfreeze()  # the daemon froze what it loaded (gc.get_objects does not list it); it stops next
    for store in (o for o in gc.get_objects() if isinstance(o, BaseStore)):  # what waits for the writer
        print(f"store queues         {store._depths()}")
    from sipqualify.config.memory import _malloc_trim

    trim = _malloc_trim()
    if trim is not None:  # how much of the glibc heap's free space goes back to the kernel
        trim(0)
        after = _rss()
        print(f"after malloc_trim(0) VmRSS {after / 2**20:,.0f} MiB ({after / n:,.0f} B/peer)")
    sys.stdout.flush()


_MADE: dict[type, object] = {}  # the daemon's store and engine, as they are made (--heap-every)


def _remember(cls: type) -> None:
    init = cls.__init__

    def wrapped(self: object, *a: object, **kw: object) -> None:
        init(self, *a, **kw)  # type: ignore[misc]
        _MADE[cls] = self

    cls.__init__ = wrapped  # type: ignore[misc]


def _heap_rss() -> int | None:
    """Resident bytes of the [heap] mapping (glibc's main arena), from /proc/self/smaps."""
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        if not line[:1].isupper():  # a mapping's header line
            inside = line.endswith("[heap]")
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    return None


def _rss() -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))


def progress(n: int, every: float, stop_at: float) -> None:
    """`--heap-every S`: one line every S seconds while the daemon runs (what grows, and when): VmRSS,
    pymalloc's live and free bytes, glibc's, the store's queues and the engine's transactions."""
    from sipqualify.qualify.engine import QualifyEngine
    from sipqualify.store.base import BaseStore

    t0 = time.monotonic()
    while time.monotonic() - t0 < stop_at - every:
        time.sleep(every)
        pm = _pymalloc_stats()
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        mi = libc.mallinfo2()
        store, engine = _MADE.get(BaseStore), _MADE.get(QualifyEngine)
        depths = store._depths() if isinstance(store, BaseStore) else {}
        txns = f"txns {len(engine._txns):,} linger {engine.lingering():,}" if isinstance(engine, QualifyEngine) else ""
        live, free = pm.get("bytes in allocated blocks", 0), pm.get("bytes in available blocks", 0)
        print(f"t={time.monotonic() - t0:5.0f}s VmRSS {_rss() / n:6,.0f} B/peer; "
              f"pymalloc live {live / n:5,.0f} free {free / n:4,.0f}"
              f" unused pools {pm.get('unused pools', 0) / n:4,.0f}; glibc in use {mi.uordblks / n:4,.0f} free "
              f"{mi.fordblks / n:4,.0f}; {txns}; store {' '.join(f'{k[7:]}={v:,}' for k, v in depths.items())}",
              flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=20_000)
    ap.add_argument("--after", type=float, default=100.0, help="seconds before the snapshot")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--heap", action="store_true", help="where the resident bytes are, without tracemalloc")
    ap.add_argument("--heap-every", type=float, default=0.0, metavar="S",
                    help="with --heap: also a line every S seconds while it runs (what grows, and when)")
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
        if args.heap:
            heap_report(args.peers)
        else:
            report(args.peers, args.top)
        os.kill(os.getpid(), signal.SIGTERM)  # the daemon's own clean shutdown

    if not args.heap:
        tracemalloc.start()
    threading.Thread(target=snapshot, daemon=True).start()
    if args.heap and args.heap_every > 0:
        from sipqualify.qualify.engine import QualifyEngine
        from sipqualify.store.base import BaseStore

        _remember(QualifyEngine)
        _remember(BaseStore)
        threading.Thread(target=progress, args=(args.peers, args.heap_every, args.after), daemon=True).start()
    from sipqualify.cli import main as cli

    try:
        return cli(["run", "-c", str(tmp / "sip.conf"), "--api", f"127.0.0.1:{free_port()}",
                    "--state-dir", str(tmp / "state"), "--log-level", "warning"]) or 0
    finally:
        stop(kamailio)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
