#!/usr/bin/env python3
"""Store benchmark: what the event loop pays per enqueue, and what the writer thread sustains.

Prints
- enqueue cost (µs/call) of record_sample / save_state / record_transition, measured on the
  calling thread while the writer runs;
- writer throughput (rows/s) for samples and for state upserts (insert, then update path),
  from the first enqueue to the end of `flush()`;
- open() time restoring N peers' state;
- a sustained run at the target load (default 20,000 samples/s plus one state upsert per
  sample over a million peers), with commit latency and the deepest queue seen;
- the time windows of `GET /api/v1/peers/NAME/stats` (issue 13 item 6) for a peer polled every
  `--window-step` seconds for 24 h: rows read and ms per request, before (every raw sample of the
  window, sorted: what Store.windows did before the rollups) and after (store/rollup.py), and
  the writer's sample throughput with and without the rollup upserts (SQLite: the rollups are
  SQLite's; skipped with --backend postgres).

    python bench/bench_store.py                             # 1,000,000 peers, 1,000,000 samples, 10 s sustained
    python bench/bench_store.py --peers 50000 --samples 200000 --duration 3   # CI short mode
    python bench/bench_store.py --only-windows              # the windows and the rollup's write overhead only
    python bench/bench_store.py --backend postgres          # PostgreSQL (store/postgres.py): a server
                                                            # started in a temp dir, or --url URL

Writer figures are also given as the writer's cost per row (µs of its time per row written),
to compare the backends.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipqualify.store import AnyStore, Store, TransitionRecord  # noqa: E402
from sipqualify.store import sqlite as store_sqlite  # noqa: E402
from sipqualify.store.windows import PERCENTILES, RTT_WINDOWS, percentile  # noqa: E402


def timed_flush(s: AnyStore, t0: float, rows: int, what: str) -> None:
    s.flush(timeout=600)
    dt = time.perf_counter() - t0
    print(f"  writer   {what:<22} {rows / dt:>12,.0f} rows/s   {dt / rows * 1e6:6.2f} µs/row   "
          f"({rows:,} rows in {dt:.2f} s)")


@contextlib.contextmanager
def backend(args: argparse.Namespace, tmp: str) -> Iterator[tuple[Callable[..., AnyStore], str, Callable[[], int]]]:
    """A store factory on the chosen backend, its description, and the database size in bytes."""
    if args.backend == "sqlite":
        path = str(Path(tmp) / "bench.sqlite")
        yield ((lambda **kw: Store(path, **kw)), f"SQLite {sqlite3.sqlite_version}",
               lambda: sum(f.stat().st_size for f in Path(tmp).iterdir()))
        return
    import psycopg

    from sipqualify.store.postgres import Store as PgStore

    server: Any = None
    url = args.url
    if url is None:  # a throwaway server like the tests' (tests/helpers.py), fsync on
        from tests.helpers import Postgres

        server = Postgres(fsync=True)
        url = server.url()
    try:
        with psycopg.connect(url, autocommit=True) as db:
            version = db.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]

        def size() -> int:
            with psycopg.connect(url, autocommit=True) as db:
                return int(db.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]

        yield (lambda **kw: PgStore(url, **kw)), f"PostgreSQL {version}", size
    finally:
        if server is not None:
            server.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--rate", type=int, default=20_000, help="samples/s in the sustained run")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of the sustained run")
    ap.add_argument("--dir", default=None, help="where to put the database (default: a temp dir)")
    ap.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--url", default=None, help="postgres: an existing (empty) database instead of a temp server")
    ap.add_argument("--window-step", type=float, default=1.0, help="seconds between the windowed peer's samples")
    ap.add_argument("--overhead-samples", type=int, default=None,
                    help="samples per write-overhead run (default: half of --samples)")
    ap.add_argument("--only-windows", action="store_true", help="only the windows and the rollup write overhead")
    args = ap.parse_args()
    if args.overhead_samples is None:
        args.overhead_samples = args.samples // 2
    if not args.only_windows:
        store_bench(args)
    if args.backend == "sqlite":
        windows_bench(args)


def windows_before(s: Store, peer: str, now: float) -> tuple[dict[str, object], int]:
    """The RTT windows as Store.windows computed them before the rollups: every answered sample of
    the last 24 h read, sorted per window."""
    longest = max(span for _, span in RTT_WINDOWS)
    sql = "SELECT time, rtt_ms FROM samples WHERE peer=? AND time>=? AND time<=? AND rtt_ms IS NOT NULL"
    with s._reader() as db:  # noqa: SLF001
        rows = db.execute(sql, (peer, now - longest, now)).fetchall()
    out: dict[str, object] = {}
    for name, span in RTT_WINDOWS:
        values = sorted(r for t, r in rows if t >= now - span)
        out[name] = {"samples": len(values), **{f"p{q}_ms": percentile(values, q) for q in PERCENTILES}}
    return out, len(rows)


def _ms(fn: object, runs: int) -> str:
    """'median (min)' ms of `runs` calls: the minimum is the figure least disturbed by a busy machine."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1e3)
    return f"{statistics.median(times):8.2f} ({min(times):.2f})"


def windows_bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        now = time.time()
        s = Store(str(Path(tmp) / "windows.sqlite"), max_queued_samples=2_000_000)
        s.open()
        n = int(86400 / args.window_step)
        for i in range(n):  # lognormal-ish RTTs around 20 ms, 1 % lost
            rtt = None if i % 100 == 7 else 20.0 * math.exp(math.sin(i * 0.7) * 0.8)
            s.record_sample("peer", now - 86400 + (i + 0.5) * args.window_step, rtt, 200, 1)
            if i % 50 == 0:
                s.record_sample(f"other{i % 1000}", now - 86400 + i * args.window_step, 5.0, 200, 1)
        for d in range(60):  # a flap a day for two months: 120 transitions
            s.record_transition("peer", now - d * 86400 - 600, "OK", "UNREACHABLE", -1, 2000, None)
            s.record_transition("peer", now - d * 86400 - 300, "UNREACHABLE", "OK", 20, 2000, 20.0)
        s.flush(timeout=600)
        print(f"time windows: 1 peer with {n:,} samples over 24 h (one every {args.window_step:g} s)")
        before, rows_before = windows_before(s, "peer", now)
        after, rows_after = s.rtt_windows("peer", now)
        ms_before = _ms(lambda: windows_before(s, "peer", now), 7)
        ms_after = _ms(lambda: s.rtt_windows("peer", now), 7)
        ms_uptime = _ms(lambda: [s.uptime_window("peer", now - d * 86400, now) for d in (1, 7, 30)], 7)
        ms_all = _ms(lambda: s.windows("peer", now), 7)
        print("  ms per request: median (min) of 7")
        print(f"  RTT windows before (raw samples)  {rows_before:>7,} rows read  {ms_before} ms")
        print(f"  RTT windows after  (rollups)      {rows_after:>7,} rows read  {ms_after} ms")
        print(f"  uptime 24h/7d/30d (rollups)                          {ms_uptime} ms")
        print(f"  whole Store.windows after                            {ms_all} ms")
        for name, _ in RTT_WINDOWS:
            b, a = before[name], after[name]
            assert isinstance(b, dict) and isinstance(a, dict)
            err = max(abs(a[k] / b[k] - 1) for k in b if k.endswith("_ms") and b[k])
            print(f"    {name:>3}: samples {b['samples']:,} = {a['samples']:,}, p50/p95/p99 before "
                  f"{b['p50_ms']:.2f}/{b['p95_ms']:.2f}/{b['p99_ms']:.2f} after {a['p50_ms']:.2f}/{a['p95_ms']:.2f}/"
                  f"{a['p99_ms']:.2f} ms, largest relative error {100 * err:.2f} %")
        s.close()

        # the migration of a database from before the rollups: built once from its rows
        path = str(Path(tmp) / "windows.sqlite")
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("DROP TABLE rtt_rollup")
            db.execute("DROP TABLE uptime_rollup")
            db.execute(f"PRAGMA user_version={len(store_sqlite.MIGRATIONS) - 1}")
            rows = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        t0 = time.perf_counter()
        s = Store(path)
        s.open()
        dt = time.perf_counter() - t0
        s.close()
        print(f"  migration building the rollups of {rows:,} samples: {dt:.2f} s ({rows / dt:,.0f} samples/s)")

        # the writer with and without the rollup upserts, alternated
        names = [f"peer{i:07d}" for i in range(args.peers)]
        real_rollup = store_sqlite._rollup_samples  # noqa: SLF001
        results: dict[str, list[float]] = {"with rollup": [], "without rollup": []}
        for run in range(4):
            label = "with rollup" if run % 2 == 0 else "without rollup"
            store_sqlite._rollup_samples = (  # type: ignore[assignment]  # noqa: SLF001
                real_rollup if label == "with rollup" else (lambda db, rows: 0))
            s = Store(str(Path(tmp) / f"w{run}.sqlite"), max_queued_samples=args.overhead_samples + 1)
            s.open()
            k = args.overhead_samples
            t0 = time.perf_counter()
            for i in range(k):
                s.record_sample(names[i % len(names)], now + i * 1e-3, 12.5 + i % 7, 200, 1)
            s.flush(timeout=600)
            results[label].append(k / (time.perf_counter() - t0))
            s.close()
        store_sqlite._rollup_samples = real_rollup  # noqa: SLF001
        for label, rates in results.items():
            print(f"  writer samples {label:<15} {', '.join(f'{r:,.0f}' for r in rates)} rows/s "
                  f"({args.overhead_samples:,} samples over {min(args.peers, args.overhead_samples):,} peers)")


def cold_start(make: Callable[..., AnyStore], n: int, busy: bool) -> None:
    """A cold start: n peers' first results at once (a transition UNKNOWN -> OK, a state and a
    sample each), written while (`busy`) another thread runs Python without a pause, as the
    event loop does when 16,700 answers a second come in; the writer shares the GIL with it."""
    import threading

    names = [f"cold{'B' if busy else 'Q'}{i:07d}" for i in range(n)]
    now = time.time()
    s = make(max_queued_samples=n + 1)
    s.open()
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for _ in range(1000):
                x += 1

    t = threading.Thread(target=spin, daemon=True)
    if busy:
        t.start()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        s.record_transition(name, now + i * 1e-4, "UNKNOWN", "OK", 3, 2000, 3.0)
        s.save_state(name, "OK", 3, 2000, 3.0, now + i * 1e-4, now + i * 1e-4)
        s.record_sample(name, now + i * 1e-4, 3.0, 200, 1)
    timed_flush(s, t0, 3 * n, f"cold start{', busy loop' if busy else ''}")
    stop.set()
    if busy:
        t.join()
    s.close()


def store_bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, backend(args, tmp) as (make, what, db_size):
        names = [f"peer{i:07d}" for i in range(args.peers)]
        now = time.time()
        cold = min(args.peers, 100_000)
        print(f"cold start, {cold:,} peers' first results (a transition, a state, a sample each), {what}:")
        cold_start(make, cold, busy=False)
        cold_start(make, cold, busy=True)
        # big enough that nothing is dropped: we measure the writer, not the overflow policy
        s = make(max_queued_samples=args.samples + 1)
        s.open()
        print(f"store benchmark: {args.peers:,} peers, {args.samples:,} samples, {what}")

        t0 = time.perf_counter()
        n = args.samples
        np = len(names)
        for i in range(n):
            s.record_sample(names[i % np], now + i * 1e-4, 12.5, 200, 1)
        enq = time.perf_counter() - t0
        print(f"  enqueue  record_sample          {enq / n * 1e6:>12.3f} µs/call")
        timed_flush(s, t0, n, "samples")

        t0 = time.perf_counter()
        for name in names:
            s.save_state(name, "OK", 12, 2000, 12.5, now, now)
        enq = time.perf_counter() - t0
        print(f"  enqueue  save_state             {enq / np * 1e6:>12.3f} µs/call")
        timed_flush(s, t0, np, "state upsert (insert)")

        t0 = time.perf_counter()
        for name in names:
            s.save_state(name, "LAGGED", 2500, 2000, 2500.0, now + 1, now + 1)
        timed_flush(s, t0, np, "state upsert (update)")

        k = 20_000
        t0 = time.perf_counter()
        for i in range(k):
            s.record_transition(names[i % np], now + i, "OK", "LAGGED", 2500, 2000, 2500.0)
        enq = time.perf_counter() - t0
        print(f"  enqueue  record_transition      {enq / k * 1e6:>12.3f} µs/call")
        timed_flush(s, t0, k, "transitions")
        s.close()

        # transition latency under load: enqueue -> on_transition_committed (after COMMIT)
        enqueued_at: dict[str, float] = {}
        latencies: list[float] = []

        def committed(rec: TransitionRecord) -> None:
            latencies.append(time.perf_counter() - enqueued_at.pop(rec.peer))

        t0 = time.perf_counter()
        s = make(on_transition_committed=committed)
        restored = s.open()
        print(f"  open()   restores {len(restored):,} peers in {time.perf_counter() - t0:.2f} s")

        # sustained: `rate` samples/s, each with its state upsert, paced in 10 ms ticks like the engine would
        per_tick = max(1, args.rate // 100)
        ticks = int(args.duration * 100)
        deepest = 0
        cost = 0.0
        i = 0
        start = time.perf_counter()
        commits0 = s.stats["commits"]
        max_commit = 0.0
        for tick in range(ticks):
            t0 = time.perf_counter()
            wall = time.time()
            for _ in range(per_tick):
                name = names[i % np]
                s.record_sample(name, wall, 12.5, 200, 1)
                s.save_state(name, "OK", 12, 2000, 12.5, wall, wall)
                i += 1
            cost += time.perf_counter() - t0
            if tick % 10 == 0:  # 10 transitions/s
                enqueued_at[f"flap{tick}"] = time.perf_counter()
                s.record_transition(f"flap{tick}", wall, "OK", "LAGGED", 2500, 2000, 2500.0)
            st = s.stats
            deepest = max(deepest, st["queue"])
            max_commit = max(max_commit, st["last_commit_ms"])
            sleep = start + (tick + 1) * 0.01 - time.perf_counter()
            if sleep > 0:
                time.sleep(sleep)
        elapsed = time.perf_counter() - start
        s.flush(timeout=600)
        st = s.stats
        print(
            f"  sustained {i / elapsed:,.0f} samples/s + as many state upserts for {elapsed:.1f} s: "
            f"enqueue {cost / (2 * i) * 1e6:.3f} µs/call, {st['commits'] - commits0} commits, "
            f"commit latency max {max_commit:.1f} ms, deepest queue {deepest:,}, "
            f"dropped {st['samples_dropped']}, errors {st['errors']}"
        )
        latencies.sort()
        print(
            f"  transition enqueue->committed under that load: median {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
            f"max {latencies[-1] * 1e3:.1f} ms ({len(latencies)} transitions)"
        )
        s.close()
        print(f"  database size {db_size() / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
