#!/usr/bin/env python3
"""Registrar load with SIPp: N distinct users register with digest auth (REGISTER, 401,
REGISTER with Authorization, 200) at a target rate against the daemon on loopback.

The load generator is SIPp 3.6.1 (`sipp`, Debian package sip-tester) running
scenarios/register_uac.xml. Each user's digest credentials come from the injection file:
SIPp parses an injected field whose text contains "[authentication" as the authentication
keyword, so a line `u000001;[authentication username=u000001 password=pw1]` and `[field1]`
on the Authorization line of the second REGISTER give every call its own digest username
(sipqualify, like chan_sip, requires it to be the peer's name). SIPp answers the first
WWW-Authenticate header only (MD5 here: the daemon lists MD5 before SHA-256; were SHA-256
first, SIPp would abort with "createAuthHeader: authentication must use MD5 or AKAv1-MD5").

The daemon answers at most 2,000 requests/s per source address, so the users are split over
--sources SIPp processes, each bound to its own 127.0.1.k (-t u1) and starting rate/sources
calls/s. The daemon qualifies each peer right after it registers, with OPTIONS to the
REGISTER's source, i.e. to that SIPp's socket: the out-of-call scenario
scenarios/options_uas_ooc.xml answers 200. Each call stays up --hold seconds after its 200, so
every SIPp still runs when its peers' OPTIONS arrive; peers are counted after all SIPps exit
(an answered peer stays OK for qualifyfreq=600 s), and the bench then listens on the SIPps'
addresses for 1 s to count OPTIONS that came too late (none should: else raise --hold).

Prints SIPp's counts (successful/failed calls and why, retransmissions, OPTIONS answered),
authenticated registrations/s (first REGISTER sent to last 200 received, from SIPp's -trace_rtt
timestamps), daemon CPU per registration (both REGISTER transactions, the binding commit, the
poke and its 200), bindings stored in SQLite, and peers qualified OK via the HTTP API. SIPp
counts a call as failed when, after its 200, the 403 for its retransmitted second REGISTER
arrives (the nc was used already), so "registered" counts 200s, not successful calls.

    python3 bench/bench_register.py --users 10000 --rate 2500     # the figure in docs/performance.md
    python3 bench/bench_register.py --users 1000 --rate 500 --sources 10   # CI short mode
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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

from common import cpu_seconds, free_port, sipp_count, sipp_last_stats, stop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIOS = HERE / "scenarios"
FAILED_COLUMNS = ("FailedCannotSendMessage", "FailedMaxUDPRetrans", "FailedTcpConnect", "FailedTcpClosed",
                  "FailedUnexpectedMessage", "FailedCallRejected", "FailedCmdNotSent", "FailedRegexpDoesntMatch",
                  "FailedRegexpShouldntMatch", "FailedRegexpHdrNotFound", "FailedOutboundCongestion",
                  "FailedTimeoutOnRecv", "FailedTimeoutOnSend")


def user(i: int) -> str:
    return f"u{i:06d}"


def epoch(stamp: str) -> float:
    """SIPp writes times as 'YYYY-MM-DD<TAB>HH:MM:SS.us<TAB>EPOCH.us'."""
    return float(stamp.split("\t")[-1])


UNEXPECTED = re.compile(r"while (expecting '\d+'|pausing) \(index \d+\), received 'SIP/2\.0 (\d+)")


def unexpected(errors: Path, into: dict[str, int]) -> None:
    """Why SIPp aborted calls: 'NNN while expecting ...' or 'NNN while pausing' (after the 200)."""
    try:
        text = errors.read_text(errors="replace")
    except OSError:
        return
    for m in UNEXPECTED.finditer(text):
        key = f"{m[2]} while {m[1]}".replace("'", "")
        into[key] = into.get(key, 0) + 1


def rtt_samples(workdir: Path, start: float) -> list[tuple[float, float]]:
    """(absolute time of the 200, registration time in s) per call, from -trace_rtt. SIPp
    writes 'Date_ms;response_time_ms;rtd_no', Date_ms counted from its own start time."""
    out = []
    for f in workdir.glob("*_rtt.csv"):
        for line in f.read_text(errors="replace").splitlines():
            parts = line.split(";")
            if len(parts) >= 3 and parts[2].strip() == "reg":
                try:
                    out.append((start + float(parts[0]) / 1000, float(parts[1]) / 1000))
                except ValueError:
                    continue
    return out


def wait_for_api(port: int, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the daemon exited with {proc.returncode} before its API came up")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("error: the daemon's API did not come up")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still clean up (SIPps, daemon, work directory)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=2500, help="new registrations started per second (all sources)")
    ap.add_argument("--sources", type=int, default=10,
                    help="SIPp processes, each on its own source address 127.0.1.k (the daemon answers at most "
                         "2,000 requests/s per address; a registration is 2 requests)")
    ap.add_argument("--hold", type=float, default=5.0,
                    help="seconds each call (so SIPp) stays up after its 200, to answer the daemon's OPTIONS")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (SIPp logs, daemon state)")
    ap.add_argument("--daemon-cpu", type=int, default=0 if (os.cpu_count() or 1) > 1 else -1,
                    help="pin the daemon (all its threads) to this one CPU, SIPp to the others; -1: no pinning")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    pin = args.daemon_cpu if args.daemon_cpu in cpus and len(cpus) > 1 else None
    others = {c for c in cpus if c != pin} if pin is not None else set(cpus)
    sipp = shutil.which("sipp")
    if sipp is None:
        print("error: sipp not found on PATH; install SIPp 3.6.1 (apt-get install sip-tester)", file=sys.stderr)
        return 1
    sources = max(1, min(args.sources, args.users, 254))
    if 2 * args.rate / sources > 2000:
        print(f"note: {2 * args.rate / sources:,.0f} requests/s per source is above the daemon's per-address "
              "answer budget (2,000/s, burst 4,000): expect unanswered REGISTERs", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="sq-reg-"))
    daemon: subprocess.Popen[bytes] | None = None
    sipps: list[subprocess.Popen[bytes]] = []
    late_socks: list[socket.socket] = []
    try:
        sip_port, api_port = free_port(), free_port(socket.SOCK_STREAM)
        lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "authfail_ban=0", "[t](!)", "type=friend",
                 "host=dynamic", "qualify=yes", "qualifyfreq=600", "nat=force_rport", ""]
        for i in range(args.users):
            lines += [f"[{user(i)}](t)", f"secret=pw{i}", ""]
        (tmp / "sip.conf").write_text("\n".join(lines))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                                         os.environ.get("PYTHONPATH")]))}
        with open(tmp / "daemon.log", "wb") as dlog:  # e.g. "is now UNREACHABLE!" lines when overloaded
            daemon = subprocess.Popen(
                [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(tmp / "sip.conf"), "--api",
                 f"127.0.0.1:{api_port}", "--state-dir", str(tmp / "s"), "--log-level", "warning"],
                env=env, stdin=subprocess.DEVNULL, stdout=dlog, stderr=subprocess.STDOUT,
                preexec_fn=(lambda: os.sched_setaffinity(0, {pin})) if pin is not None else None)
        wait_for_api(api_port, daemon)

        # one SIPp per source address, each with its slice of the users and of the rate
        hold_ms = int(args.hold * 1000)
        jobs = []
        addrs: list[tuple[str, int]] = []
        for k in range(sources):
            users = range(k, args.users, sources)
            work = tmp / f"sipp{k + 1}"
            work.mkdir()
            (work / "users.csv").write_text("SEQUENTIAL\n" + "".join(
                f"{user(i)};[authentication username={user(i)} password=pw{i}]\n" for i in users))
            ip = f"127.0.1.{k + 1}"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ip, 0))
                port = s.getsockname()[1]
            rate = args.rate / sources
            budget = len(users) / rate + args.hold + 40  # SIPp's own global timeout: it never hangs the bench
            cmd = [sipp, "-sf", str(SCENARIOS / "register_uac.xml"), "-oocsf", str(SCENARIOS / "options_uas_ooc.xml"),
                   "-inf", str(work / "users.csv"), f"127.0.0.1:{sip_port}", "-i", ip, "-p", str(port), "-t", "u1",
                   "-m", str(len(users)), "-r", f"{rate:.3f}", "-rp", "1000", "-d", str(hold_ms),
                   "-l", str(len(users) + 10), "-buff_size", str(4 * 1024 * 1024), "-timeout", f"{budget:.0f}s",
                   "-nostdin", "-default_behaviors", "all,-bye",  # an aborted REGISTER call sends no BYE
                   "-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "3600",
                   "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-error_file", str(work / "errors.log"),
                   "-trace_screen", "-screen_file", str(work / "screen.log")]
            jobs.append((work, budget, cmd))
            addrs.append((ip, port))

        c0, t0 = cpu_seconds(daemon.pid), time.time()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children so far: none of ours
        for work, _, cmd in jobs:
            with open(work / "stderr.log", "wb") as err:
                sipps.append(subprocess.Popen(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=err, preexec_fn=lambda: os.sched_setaffinity(0, others)))
        deadline = time.monotonic() + max(b for _, b, _ in jobs) + 15
        for p in sipps:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(p)
        c1, t1 = cpu_seconds(daemon.pid), time.time()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # now: every SIPp (the daemon is still running)
        sipp_cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        # Is --hold long enough? Take over the SIPps' addresses and count daemon OPTIONS that arrive now:
        # they get no answer, so their peers would not be OK for a reason that is the bench's, not the daemon's.
        for ip, port in addrs:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.bind((ip, port))
            except OSError:
                s.close()
                continue
            s.setblocking(False)
            late_socks.append(s)
        late_from = time.monotonic()

        # SIPp's own figures
        ok = failed = retrans = answered = 0
        failures: dict[str, int] = {}
        why: dict[str, int] = {}
        samples: list[tuple[float, float]] = []
        troubles = []
        for (work, _, _), p in zip(jobs, sipps, strict=True):
            st = sipp_last_stats(work / "stat.csv")
            if not st:
                tail = (work / "stderr.log").read_text(errors="replace").strip().splitlines()[-3:]
                troubles.append(f"{work.name}: no statistics (rc {p.returncode}) {' | '.join(tail)}")
                continue
            ok += sipp_count(st, "SuccessfulCall")
            failed += sipp_count(st, "FailedCall")
            retrans += sipp_count(st, "Retransmissions")
            answered += sipp_count(st, "AutoAnswered")
            for c in FAILED_COLUMNS:
                if sipp_count(st, c):
                    failures[c] = failures.get(c, 0) + sipp_count(st, c)
            unexpected(work / "errors.log", why)
            if p.returncode not in (0, 1):
                troubles.append(f"{work.name}: sipp rc {p.returncode}")
            samples += rtt_samples(work, epoch(st.get("StartTime", "0")) if st.get("StartTime") else t0)

        # what the daemon kept
        db_path = tmp / "s" / "bindings.sqlite"
        stored = 0
        for _ in range(50):  # the bindings are group-committed by a writer thread
            try:
                with sqlite3.connect(db_path) as db:
                    stored = db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if stored >= len(samples):
                break
            time.sleep(0.1)
        token = (tmp / "s" / "api-token").read_text().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1/peers",
                                     headers={"Authorization": f"Bearer {token}"})
        peers = json.loads(urllib.request.urlopen(req, timeout=60).read())["peers"]
        states: dict[str, int] = {}
        for p in peers:
            states[str(p.get("state"))] = states.get(str(p.get("state")), 0) + 1
        ok_peers = states.get("OK", 0)
        time.sleep(max(0.0, late_from + 1.0 - time.monotonic()))  # listen for at least 1 s
        late = 0
        for s in late_socks:
            while True:
                try:
                    late += s.recv(65535).startswith(b"OPTIONS")
                except BlockingIOError:
                    break
    finally:
        for s in late_socks:
            s.close()
        for p in sipps:
            stop(p)
        if daemon is not None:
            stop(daemon)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    regs = len(samples)
    if samples:
        first = min(t - rt for t, rt in samples)
        span = max(max(t for t, _ in samples) - first, 1e-3)
        lat = sorted(rt for _, rt in samples)
        pct = {q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 for q in (0.5, 0.99)}
    else:
        span, pct = t1 - t0, {0.5: 0.0, 0.99: 0.0}
    cpu = c1 - c0
    per = cpu / max(regs, 1) * 1e6
    print(f"users / offered rate           {args.users:,} / {args.rate:,.0f} per s from {sources} SIPp processes "
          f"(127.0.1.1-{sources}, -t u1)")
    print(f"CPUs                           daemon (all threads) "
          f"{f'pinned to CPU {pin}' if pin is not None else 'not pinned'}; SIPp on {sorted(others)}")
    print(f"SIPp calls                     {ok:,} successful, {failed:,} failed{f' {failures}' if failures else ''}; "
          f"{retrans:,} retransmissions; {answered:,} daemon OPTIONS answered (out-of-call); "
          f"SIPp CPU {sipp_cpu:.2f} s in all")
    if why:
        print("SIPp aborted calls on         " + ", ".join(f"{n:,} x {k}" for k, n in sorted(why.items())))
    print(f"registered (200 after 401)     {regs:,} in {span:.2f} s = {regs / span:,.0f}/s; "
          f"no 200 {args.users - regs:,}; first REGISTER to 200 p50 {pct[0.5]:.0f} ms, p99 {pct[0.99]:.0f} ms")
    print(f"daemon CPU                     {cpu:.2f} s = {per:.0f} us per authenticated registration (both "
          f"REGISTER transactions, binding commit, the poke); {cpu / span:.0%} of one core while loaded, "
          f"so ~{1e6 / max(per, 1e-9):,.0f}/s at 100%")
    print(f"bindings in SQLite             {stored:,}")
    others = ", ".join(f"{n:,} {st}" for st, n in sorted(states.items()) if st != "OK")
    print(f"peers qualified OK afterwards  {ok_peers:,} of {len(peers):,}{f' ({others})' if others else ''}; "
          f"{late:,} OPTIONS arrived after SIPp exited (unanswered{': raise --hold' if late else ''})")
    for t in troubles:
        print(f"warning: {t}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
