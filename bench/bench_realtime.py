#!/usr/bin/env python3
"""Realtime benchmark: N sippeers rows in a real PostgreSQL (Debian's, started here in a temp
dir as the tests do), loaded and qualified by the daemon in this process against Kamailio.

Prints
- the first load: reading and turning N rows into peers, and the whole start-up;
- memory: the process's RSS growth over the start-up, per peer;
- qualify: time until every peer is OK (first pokes spread over ~10 s, as bench_e2e);
- one idle pass of the change check (the table's fingerprint) without the trigger;
- the refresh when 1 % of the rows change: time from the UPDATE's commit until the last
  changed peer is applied, and the CPU this process spent meanwhile, polling (no trigger)
  and with the LISTEN/NOTIFY trigger;
- the event loop's longest stall (a 10 ms timer's lateness) while the rows are read and
  turned into peers: the conversion runs on a worker thread;
- PJSIP realtime: N `ps_aors` (one static contact each) + N `ps_endpoints` rows loaded into
  contacts, the loop's longest stall meanwhile, and the refresh when 1 % of the AORs change.

    python bench/bench_realtime.py                  # 100,000 peers
    python bench/bench_realtime.py --peers 5000     # CI short mode
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from common import free_port, kamailio_binary, missing_kamailio, start_kamailio, stop  # noqa: E402

from sipqualify.realtime import RealtimePeers  # noqa: E402
from sipqualify.realtime.backends import trigger_sql  # noqa: E402
from sipqualify.service import Service, ServiceOptions  # noqa: E402


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def wait(cond: object, timeout: float, why: object = None) -> float:
    t0 = time.perf_counter()
    while not cond():  # type: ignore[operator]
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"bench_realtime: condition not met in time {why() if why else ''}")  # type: ignore
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def max_lag(work: object) -> tuple[object, float]:
    """`work`'s result and the longest a 10 ms sleep overshot meanwhile (the loop blocked)."""
    done, worst = False, 0.0

    async def probe() -> None:
        nonlocal worst
        while not done:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - t0 - 0.01)
    task = asyncio.get_running_loop().create_task(probe())
    try:
        result = await work  # type: ignore[misc]
    finally:
        done = True
        await task
    return result, worst


async def pjsip(args: argparse.Namespace, pg: object, tmp: Path, kport: int) -> None:
    """PJSIP realtime: ps_aors + ps_endpoints rows -> contacts, and a 1 % change followed."""
    from sipqualify.config import load_config
    from sipqualify.realtime import open_realtime
    from tests.realtime.conftest import PS_TABLES

    n = args.peers
    pg.sql(*PS_TABLES)  # type: ignore[attr-defined]
    pg.sql(f"INSERT INTO ps_aors (id, contact, qualify_frequency, qualify_timeout) SELECT 'a' || i, "  # type: ignore
           f"'sip:a' || i || '@127.0.0.1:{kport}', {args.freq}, 3.0 FROM generate_series(1, {n}) AS i",
           f"INSERT INTO ps_endpoints (id, aors, context) SELECT 'a' || i, 'a' || i, 'phones' "
           f"FROM generate_series(1, {n}) AS i")
    d = tmp / "pjsip"
    d.mkdir()
    (d / "pjsip.conf").write_text(f"[udp]\ntype=transport\nprotocol=udp\nbind=127.0.0.1:{free_port()}\n"
                                  "[global]\ntype=global\nrt_refresh=2\n")
    (d / "extconfig.conf").write_text("[settings]\nps_endpoints => pgsql,general,ps_endpoints\n"
                                      "ps_aors => pgsql,general,ps_aors\n")
    (d / "res_pgsql.conf").write_text(f"[general]\ndbhost=127.0.0.1\ndbport={pg.port}\n")  # type: ignore
    rt = open_realtime(load_config(str(d / "pjsip.conf")))
    assert rt is not None
    t0, c0 = time.perf_counter(), time.process_time()
    peers, lag = await max_lag(rt.load())
    print(f"  pjsip    load {n:,} ps_aors + {n:,} ps_endpoints rows -> {len(peers):,} contacts: "  # type: ignore
          f"{time.perf_counter() - t0:.2f} s, {time.process_time() - c0:.2f} s CPU; "
          f"longest loop stall meanwhile {lag * 1000:.0f} ms")
    applied: list[int] = []

    async def apply(changed: list[object], removed: list[str]) -> None:
        applied.append(len(changed) + len(removed))
    rt.start(apply)  # type: ignore[arg-type]
    await wait(lambda: rt.stats["refreshes"] >= 2, 120, rt.health)
    changed = max(1, n // 100)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.to_thread(pg.sql, "UPDATE ps_aors SET qualify_frequency = qualify_frequency + 1 "  # type: ignore
                            "WHERE substr(id, 2)::int % 100 = 0")
    t_commit = time.perf_counter()
    _, lag = await max_lag(wait(lambda: sum(applied) >= changed, 120, rt.health))
    print(f"  pjsip    refresh {changed:,} of {n:,} AORs changed, polling (rt_refresh=2): applied "
          f"{time.perf_counter() - t_commit:.2f} s after the commit, {time.process_time() - c0:.2f} s CPU, "
          f"longest loop stall {lag * 1000:.0f} ms")
    await rt.close()


async def refresh(svc: Service, pg: object, n: int, freq: int, label: str) -> None:
    rt = svc.realtime
    assert rt is not None
    applied = rt.stats["applied"]
    changed = max(1, n // 100)
    c0, t0 = time.process_time(), time.perf_counter()
    # off the loop: the UPDATE may wait for a row lock a write-back of the daemon holds
    await asyncio.to_thread(pg.sql, f"UPDATE sippeers SET qualifyfreq = {freq} WHERE id % 100 = 0")  # type: ignore
    t_commit = time.perf_counter()
    await wait(lambda: rt.stats["applied"] >= applied + changed, 120, rt.health)
    dt, cpu = time.perf_counter() - t_commit, time.process_time() - c0
    print(f"  refresh  {label:<30} {changed:>7,} of {n:,} rows changed: applied {dt:6.2f} s after the commit, "
          f"{cpu:.2f} s CPU (UPDATE took {t_commit - t0:.2f} s)")


async def run(args: argparse.Namespace, tmp: Path, kport: int) -> None:
    from tests.realtime.conftest import PG_SERIAL, SIPPEERS, Postgres

    pg = Postgres()
    try:
        pg.sql(SIPPEERS.format(serial=PG_SERIAL))
        t0 = time.perf_counter()
        pg.sql("INSERT INTO sippeers (name, host, port, type, qualify, qualifyfreq, context) "
               f"SELECT 'rt' || lpad(i::text, 7, '0'), '127.0.0.1', {kport}, 'peer', 'yes', {args.freq}, 'phones' "
               f"FROM generate_series(1, {args.peers}) AS i")
        print(f"bench_realtime: {args.peers:,} sippeers rows inserted in {time.perf_counter() - t0:.1f} s")
        sport = free_port()
        (tmp / "sip.conf").write_text(f"[general]\nudpbindaddr=127.0.0.1:{sport}\nqualifygap=100\n"
                                      f"qualifypeers={max(0, args.peers // 100 - 1)}\nrt_refresh=2\n")
        (tmp / "extconfig.conf").write_text("[settings]\nsippeers => pgsql,general,sippeers\n")
        (tmp / "res_pgsql.conf").write_text(f"[general]\ndbhost=127.0.0.1\ndbport={pg.port}\n")
        from sipqualify.config import load_config
        from sipqualify.realtime import open_realtime

        probe = open_realtime(load_config(str(tmp / "sip.conf")))  # the first load alone, before the daemon
        assert probe is not None
        assert isinstance(probe, RealtimePeers)
        t0 = time.perf_counter()
        rows = await probe.backend.rows()
        fetched = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe._reader().peers(rows)
        print(f"  load     read {len(rows):,} rows {fetched:.2f} s, "
              f"made peers of them {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        _, lag = await max_lag(probe.load())
        print(f"  load     the same through RealtimePeers.load (conversion on a worker thread): "
              f"{time.perf_counter() - t0:.2f} s, longest loop stall meanwhile {lag * 1000:.0f} ms")
        await probe.close()
        del rows, probe
        rss0 = rss_bytes()
        svc = Service(ServiceOptions(str(tmp / "sip.conf"), "127.0.0.1", 0, str(tmp / "state")))
        t0 = time.perf_counter()
        await svc.start()
        started = time.perf_counter() - t0
        assert svc.realtime is not None and svc.engine is not None
        rss = rss_bytes() - rss0
        print(f"  load     start-up with {len(svc.engine):,} realtime peers: {started:.2f} s")
        print(f"  memory   RSS +{rss / 2**20:,.0f} MiB over the start-up: {rss / args.peers:,.0f} bytes per peer")
        backend = svc.realtime.backend
        engine = svc.engine
        dt = await wait(lambda: all(p.state == "OK" for p in engine.peers()), 300)
        print(f"  qualify  every peer OK {started + dt:.1f} s after start (first pokes spread over "
              f"{args.peers // max(1, args.peers // 100) * 0.1:.0f} s)")
        t0 = time.perf_counter()
        await backend.fingerprint()
        print(f"  idle     one change check (table fingerprint, no trigger): {time.perf_counter() - t0:.3f} s")
        await refresh(svc, pg, args.peers, args.freq + 1, "polling (rt_refresh=2)")
        # found at the next pass: from then on, changes come by NOTIFY
        await asyncio.to_thread(pg.sql, trigger_sql("sippeers"))
        rt = svc.realtime
        await wait(lambda: getattr(backend, "listening", False), 60, rt.health)
        passes = rt.stats["refreshes"]  # the full pass that follows LISTEN, before measuring
        await wait(lambda: rt.stats["refreshes"] > passes + 1, 60, rt.health)
        await refresh(svc, pg, args.peers, args.freq + 2, "LISTEN/NOTIFY trigger")
        await svc.close()
        await pjsip(args, pg, tmp, kport)
    finally:
        pg.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", type=int, default=100_000)
    ap.add_argument("--freq", type=int, default=60, help="qualifyfreq of the rows, seconds")
    args = ap.parse_args()
    kam = kamailio_binary()
    if kam is None:
        return missing_kamailio("bench_realtime")
    tmp = Path(tempfile.mkdtemp(prefix="sq-rt-"))
    kport = free_port()
    kam_proc = start_kamailio(kam, tmp, kport)
    try:
        asyncio.run(run(args, tmp, kport))
    finally:
        stop(kam_proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
