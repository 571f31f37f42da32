#!/usr/bin/env python3
"""Registrar load: N distinct users register with digest auth (401, then REGISTER with
Authorization), at a target rate, against the daemon on loopback.

The load generator is an asyncio UA in this process (SIPp 3.6.1 cannot take a per-call
digest username from an injection file, and sipqualify, like chan_sip, requires the digest
username to be the peer's name). Prints authenticated registrations/s, daemon CPU per
REGISTER transaction (the 401 round included), bindings stored in SQLite, and how many peers
were qualified (OK) afterwards.

    python bench/bench_register.py --users 10000 --rate 2500     # the figure in docs/performance.md
    python bench/bench_register.py --users 1000 --rate 500        # CI short mode
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import cpu_seconds, free_port  # noqa: E402

from sipqualify.sip.digest import parse_auth_header  # noqa: E402


class Tally:
    def __init__(self, users: int, done: asyncio.Future[None]) -> None:
        self.users, self.done, self.ok, self.failed = users, done, 0, 0
        self.statuses: dict[int, int] = {}
        self.last = 0.0


class UA(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int], tally: Tally) -> None:
        self.server = server
        self.tally = tally
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.ip = "127.0.0.1"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ip, self.port = transport.get_extra_info("sockname")[:2]

    def request(self, i: int, cseq: int, auth: str = "") -> bytes:
        user = f"u{i:06d}"
        lines = [f"REGISTER sip:127.0.0.1:{self.server[1]} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.ip}:{self.port};branch=z9hG4bK{i}x{cseq};rport",
                 f"From: <sip:{user}@127.0.0.1>;tag=t{i}", f"To: <sip:{user}@127.0.0.1>",
                 f"Call-ID: reg-{i}@bench", f"CSeq: {cseq} REGISTER", f"Contact: <sip:{user}@{self.ip}:{self.port}>",
                 "Expires: 3600", "Max-Forwards: 70"]
        if auth:
            lines.append(auth)
        return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

    def send(self, i: int) -> None:
        assert self.transport is not None
        self.transport.sendto(self.request(i, 1), self.server)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        first, *lines = head.split("\r\n")
        if first.startswith("OPTIONS"):  # the daemon qualifies us: answer 200
            hdrs = [ln for ln in lines if ln.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
            assert self.transport is not None
            self.transport.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(hdrs) + "\r\nContent-Length: 0\r\n\r\n")
                                  .encode(), addr)
            return
        status = int(first.split()[1])
        call = next(ln for ln in lines if ln.startswith("Call-ID:"))
        i = int(call.split("reg-")[1].split("@")[0])
        if status == 401:
            challenge = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("WWW-Authenticate:")
                             and "MD5" in ln)
            _, p = parse_auth_header(challenge)
            user = f"u{i:06d}"
            uri = f"sip:127.0.0.1:{self.server[1]}"
            ha1 = hashlib.md5(f"{user}:{p['realm']}:pw{i}".encode()).hexdigest()
            ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
            resp = hashlib.md5(f"{ha1}:{p['nonce']}:00000001:c{i}:auth:{ha2}".encode()).hexdigest()
            auth = (f'Authorization: Digest username="{user}", realm="{p["realm"]}", nonce="{p["nonce"]}", '
                    f'uri="{uri}", response="{resp}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c{i}"')
            assert self.transport is not None
            self.transport.sendto(self.request(i, 2, auth), self.server)
            return
        t = self.tally
        if status == 200:
            t.ok += 1
            t.last = time.monotonic()
        else:
            t.failed += 1
            t.statuses[status] = t.statuses.get(status, 0) + 1
        if t.ok + t.failed >= t.users and not t.done.done():
            t.done.set_result(None)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=2500, help="new registrations started per second")
    ap.add_argument("--sources", type=int, default=50, help="source addresses (127.0.1.x) the phones use")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sq-reg-"))
    sip_port, api_port = free_port(), free_port(socket.SOCK_STREAM)
    lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "authfail_ban=0", "[t](!)", "type=friend",
             "host=dynamic", "qualify=yes", "qualifyfreq=600", "nat=force_rport", ""]
    for i in range(args.users):
        lines += [f"[u{i:06d}](t)", f"secret=pw{i}", ""]
    (tmp / "sip.conf").write_text("\n".join(lines))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(tmp / "sip.conf"), "--api",
        f"127.0.0.1:{api_port}", "--state-dir", str(tmp / "s"), "--log-level", "warning")
    for _ in range(300):
        await asyncio.sleep(0.1)
        try:
            socket.create_connection(("127.0.0.1", api_port), 0.2).close()
            break
        except OSError:
            continue
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    ua = Tally(args.users, done)
    uas: list[UA] = []
    transports = []
    for k in range(args.sources):  # many phones behind many addresses (the daemon budgets answers per address)
        tr, u = await loop.create_datagram_endpoint(lambda: UA(("127.0.0.1", sip_port), ua),
                                                    local_addr=(f"127.0.1.{k + 1}", 0))
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        uas.append(u)
        transports.append(tr)
    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
    for i in range(args.users):
        uas[i % len(uas)].send(i)
        due = t0 + (i + 1) / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    try:
        await asyncio.wait_for(done, 20)
    except TimeoutError:
        pass
    c1, t1 = cpu_seconds(proc.pid), (ua.last or time.monotonic())
    await asyncio.sleep(3)  # the pokes that follow each REGISTER
    token = (tmp / "s" / "api-token").read_text().strip()
    req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1/peers",
                                 headers={"Authorization": f"Bearer {token}"})
    peers = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(req, timeout=60).read()))["peers"]
    ok_peers = sum(1 for p in peers if p["state"] == "OK")
    with sqlite3.connect(tmp / "s" / "bindings.sqlite") as db:
        stored = db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]
    proc.terminate()
    await proc.wait()
    for tr in transports:
        tr.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"users / offered rate           {args.users:,} / {args.rate:,.0f} per s")
    print(f"registered (200 after 401)     {ua.ok:,} in {t1 - t0:.1f} s = {ua.ok / (t1 - t0):,.0f}/s; "
          f"failed {ua.failed:,} {ua.statuses}; unanswered {args.users - ua.ok - ua.failed:,} (UDP drops: this "
          "generator never retransmits)")
    print(f"daemon CPU                     {c1 - c0:.2f} s = {(c1 - c0) / max(ua.ok, 1) * 1e6:.0f} us per "
          f"authenticated registration (both REGISTER transactions, binding commit, the poke)")
    print(f"bindings in SQLite             {stored:,}")
    print(f"peers qualified OK afterwards  {ok_peers:,} of {len(peers):,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
