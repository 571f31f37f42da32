"""Registrar restart, end to end with a real daemon process: REGISTER answered, `kill -9`
at once, restart on the same state dir: the binding is there (it was committed before the
200 OK), qualify resumes, and expiry is honoured across the restart, including a binding
that expired while the daemon was down."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from .helpers import Phone, api_get, free_port, wait_for

# added to the bounds that are about time (expiry on time): room for a loaded 2-core machine
LOADED = 2.0

CONF = """[general]
udpbindaddr=127.0.0.1:{port}
realm=pbx.test
minexpiry=1
[phone](!)
type=friend
host=dynamic
qualify=yes
qualifyfreq=1
nat=force_rport
[1001](phone)
secret=pw1001
[1002](phone)
secret=pw1002
"""


class Daemon:
    """`sipqualify run` as a subprocess, on fixed SIP and API ports and one state dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.sip = ("127.0.0.1", free_port())
        self.api_port = free_port(socket.SOCK_STREAM)
        self.state = tmp_path / "s"
        self.conf = tmp_path / "sip.conf"
        self.conf.write_text(CONF.format(port=self.sip[1]))
        self.proc: asyncio.subprocess.Process | None = None
        self.token = ""

    def log(self) -> str:
        p = self.tmp / "daemon.log"
        return p.read_text()[-3000:] if p.exists() else ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipqualify.cli", "run", "-c", str(self.conf),
            "--api", f"127.0.0.1:{self.api_port}", "--state-dir", str(self.state),
            stderr=open(self.tmp / "daemon.log", "ab"))  # noqa: SIM115
        t_end = time.monotonic() + 30  # a deadline, not a count of tries: start-up is slow on a loaded machine
        while time.monotonic() < t_end:
            if self.proc.returncode is not None:
                break
            tok = self.state / "api-token"  # written before the API listens
            if tok.exists():
                self.token = tok.read_text().strip()
                if (await self.get("/readyz"))[0] == 200:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"daemon not ready:\n{self.log()}")

    async def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
        assert self.proc.returncode == -signal.SIGKILL

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def get(self, path: str) -> tuple[int, Any]:
        return await api_get(self.api_port, self.token, path)

    async def peers(self) -> dict[str, dict[str, Any]]:
        status, body = await self.get("/api/v1/peers")
        assert status == 200, status
        return {p["name"]: p for p in body["peers"]}

    def rows(self) -> dict[str, tuple[str, int, float]]:
        with sqlite3.connect(self.state / "bindings.sqlite") as db:
            return {r[0]: (r[1], r[2], r[3]) for r in db.execute("SELECT peer, ip, port, expires_at FROM bindings")}


async def phones() -> tuple[list[asyncio.BaseTransport], Phone, Phone, int, int]:
    """One UA per peer, so each peer's OPTIONS are counted on their own."""
    loop = asyncio.get_running_loop()
    t1, ph1 = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    t2, ph2 = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return [t1, t2], ph1, ph2, t1.get_extra_info("sockname")[1], t2.get_extra_info("sockname")[1]


async def poll(d: Daemon, pred: Any, timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the API until pred(peers) holds; returns those peers."""
    t_end = time.monotonic() + timeout
    last: dict[str, dict[str, Any]] = {}
    while time.monotonic() < t_end:
        last = await d.peers()
        if pred(last):
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met in time: {last}")


async def register_then_kill(d: Daemon, ph1: Phone, ph2: Phone, short: int) -> float:
    """1001 for 300 s, 1002 for `short` s; SIGKILL the instant the last 200 OK arrives.
    Returns (an upper bound of) 1002's expiry time, wall clock."""
    ok1 = await ph1.register_auth(d.sip, "1001", "pw1001", expires=300)
    assert ok1.status == 200
    ok2 = await ph2.register_auth(d.sip, "1002", "pw1002", expires=short)
    if ok2.status == 200:
        await d.kill9()  # no sleep: the binding must already be committed
    assert ok2.status == 200 and f"expires={short}" in (ok2.headers.get("Contact") or "")
    return time.time() + short


async def test_kill9_right_after_200_keeps_binding_and_expiry(tmp_path: Path) -> None:
    ts, ph1, ph2, port1, port2 = await phones()
    d = Daemon(tmp_path)
    try:
        await d.start()
        expiry2 = await register_then_kill(d, ph1, ph2, short=5)
        rows = d.rows()  # both committed before their 200 OK
        assert (rows["1001"][:2], rows["1002"][:2]) == (("127.0.0.1", port1), ("127.0.0.1", port2))
        assert rows["1002"][2] <= expiry2
        seen1, seen2 = ph1.options, ph2.options

        restarted = time.time()
        await d.start()
        assert time.time() < expiry2 - 1, "restart too slow for this test's 1002 expiry"
        peers = await d.peers()
        for name, port in (("1001", port1), ("1002", port2)):  # bindings restored at start
            assert (peers[name]["addr_ip"], peers[name]["addr_port"]) == ("127.0.0.1", port), peers[name]
        assert 290 < peers["1001"]["expire"] <= 300 and 0 < peers["1002"]["expire"] <= 5

        # qualify resumed: this daemon's own OPTIONS answered by each phone
        peers = await poll(d, lambda ps: all(
            ps[n]["state"] == "OK" and ps[n]["qualifies"] >= 1 and (ps[n]["last_qualify"] or 0) >= restarted
            for n in ("1001", "1002")), timeout=5)
        await wait_for(lambda: ph1.options > seen1 and ph2.options > seen2, timeout=5)

        # 1002's expiry, counted from the original REGISTER, is honoured by the new process
        await asyncio.sleep(max(0.0, expiry2 - time.time()))  # real time passes: the behaviour is about time
        await wait_for(lambda: "1002" not in d.rows(), timeout=1.5 + LOADED)
        peers = await poll(d, lambda ps: ps["1002"]["state"] == "UNKNOWN", timeout=2.5 + LOADED)
        assert peers["1002"]["addr_ip"] is None and peers["1002"]["addr_port"] == 0
        assert peers["1002"]["expire"] == -1 and peers["1002"]["status"] == "UNKNOWN"
        assert time.time() < expiry2 + 3.5 + LOADED  # on time, not merely eventually
        stopped, seen1 = ph2.options, ph1.options
        # no more OPTIONS to the expired contact while 1001 (qualifyfreq=1) is qualified twice ...
        await wait_for(lambda: ph1.options >= seen1 + 2)
        assert ph2.options == stopped
        peers = await d.peers()  # ... while 1001 keeps its binding and stays qualified
        assert peers["1001"]["state"] == "OK" and peers["1001"]["addr_port"] == port1
        assert set(d.rows()) == {"1001"}
    finally:
        await d.stop()
        for t in ts:
            t.close()


async def test_binding_expired_while_down_is_not_restored(tmp_path: Path) -> None:
    ts, ph1, ph2, port1, port2 = await phones()
    d = Daemon(tmp_path)
    try:
        await d.start()
        expiry2 = await register_then_kill(d, ph1, ph2, short=1)
        assert set(d.rows()) == {"1001", "1002"}
        await asyncio.sleep(max(0.0, expiry2 - time.time()) + 0.2)  # 1002 expires while down (real time passes)
        seen2 = ph2.options

        await d.start()
        peers = await d.peers()
        assert (peers["1002"]["addr_ip"], peers["1002"]["addr_port"], peers["1002"]["expire"]) == (None, 0, -1)
        assert set(d.rows()) == {"1001"}  # the stale row is dropped at start-up
        assert (peers["1001"]["addr_ip"], peers["1001"]["addr_port"]) == ("127.0.0.1", port1)
        await poll(d, lambda ps: ps["1001"]["state"] == "OK" and ps["1001"]["qualifies"] >= 1
                   and ps["1002"]["state"] == "UNKNOWN", timeout=5 + LOADED)
        seen1 = ph1.options
        await wait_for(lambda: ph1.options >= seen1 + 2)  # 1001 (qualifyfreq=1) qualified twice more ...
        assert ph2.options == seen2  # ... and 1002 never qualified at the stale address
    finally:
        await d.stop()
        for t in ts:
            t.close()
