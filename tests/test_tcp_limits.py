"""Limits of SIP over TCP that need more than one connection to see: the [service] options
for unfinished messages, and the daemon at its open-files limit (item 3 of the hardening
issue), run as a process with a low RLIMIT_NOFILE of its own."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sipqualify.config import check_config, load_config
from sipqualify.net.limits import connection_cap

from .helpers import TcpPhone, api_get, free_port, options_lines


def test_unfinished_message_options(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[service]\ntcp_message_timeout = "soon"\ntcp_max_unfinished_bytes = 1000\n')
    assert [(m.severity, m.line, m.option) for m in check_config(str(bad))] == [
        ("error", 2, "tcp_message_timeout"), ("error", 3, "tcp_max_unfinished_bytes")]
    ok = tmp_path / "ok.toml"
    ok.write_text('[service]\ntcp_message_timeout = "30"\ntcp_max_unfinished_bytes = 1048576\n')
    svc = load_config(str(ok)).service
    assert (svc.tcp_message_timeout_s, svc.tcp_max_unfinished_bytes) == (30, 1048576)
    empty = tmp_path / "empty.toml"
    empty.write_text("[service]\n")
    dflt = load_config(str(empty)).service
    assert (dflt.tcp_message_timeout_s, dflt.tcp_max_unfinished_bytes) == (10, 4 * 1024 * 1024)


LIMIT = 256  # the daemon's RLIMIT_NOFILE, soft and hard: far below what it is asked to hold

CONF = """[general]
udpbindaddr=127.0.0.1:{port}
tcpenable=yes
realm=pbx.test
[1001]
type=friend
host=dynamic
secret=s3cret
transport=tcp
"""


class LimitedDaemon:
    """`sipqualify run` as a process whose open-files limit is LIMIT (soft and hard)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "s"
        self.api_port = free_port(socket.SOCK_STREAM)
        for _ in range(20):  # the TCP port of the free UDP port's number must be free too
            port = free_port()
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        self.sip = ("127.0.0.1", port)
        (tmp_path / "sip.conf").write_text(CONF.format(port=port))
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""

    def log(self) -> str:
        return (self.tmp / "daemon.log").read_text()

    async def start(self) -> None:
        def limit() -> None:  # in the child only: the test process keeps its own limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

        with open(self.tmp / "daemon.log", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(self.tmp / "sip.conf"),
                 "--api", f"127.0.0.1:{self.api_port}", "--state-dir", str(self.state)],
                stderr=err, preexec_fn=limit)
        t_end = time.monotonic() + 20
        while time.monotonic() < t_end and self.proc.poll() is None:
            tok = self.state / "api-token"  # written before the API listens
            if tok.exists():
                self.token = tok.read_text().strip()
                if (await self.get("/readyz"))[0] == 200:
                    return
            await asyncio.sleep(0.05)
        raise AssertionError(f"daemon not ready:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def get(self, path: str) -> tuple[int, Any]:
        return await api_get(self.api_port, self.token, path)

    async def tcp_status(self, pred: Any, timeout: float = 20) -> dict[str, Any]:
        """Polls /api/v1/status until pred(its `tcp`) holds; every answer must be a 200."""
        t_end = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < t_end:
            status, body = await self.get("/api/v1/status")
            assert status == 200, f"the API did not answer ({status}):\n{self.log()[-3000:]}"
            last = body["tcp"]
            if pred(last):
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"condition not met in time: {last}")


async def open_many(server: tuple[str, int], n: int, sources: int, strict: bool = True) -> list[socket.socket]:
    """`n` connections to `server` from `sources` loopback addresses (the per-address limit
    must not be what stops them); connected in the kernel, whatever the daemon does next.
    Not `strict`: one the kernel does not take (a full listen backlog) is left out."""
    def run() -> list[socket.socket]:
        out = []
        for i in range(n):
            s = socket.socket()
            s.settimeout(10)
            try:
                s.bind((f"127.0.0.{1 + i % sources}", 0))
                s.connect(server)
            except OSError:
                s.close()
                if strict:
                    raise
                continue
            out.append(s)
        return out
    return await asyncio.to_thread(run)


async def test_daemon_at_its_open_files_limit_sizes_the_cap_and_keeps_answering(tmp_path: Path) -> None:
    """Item 3: with 256 open files at most, the default tcp_max_connections=10000 is sized
    down to leave room for the API, AMI and store; 320 connections (more than the limit) are
    admitted up to that cap and the rest make room or are refused cleanly; the API keeps
    answering, a phone still registers over TCP, and stderr has no traceback storm. When the
    API's own clients then take every file left, accept() failures are counted and logged in
    a line or two, and the API answers again once they are gone."""
    d = LimitedDaemon(tmp_path)
    await d.start()
    conns: list[socket.socket] = []
    try:
        st = await d.tcp_status(lambda t: True)
        cap = st["limits"]["max_connections"]
        assert 0 < cap <= LIMIT - 128  # room left for everything else
        conns += await open_many(d.sip, 320, sources=4)
        st = await d.tcp_status(lambda t: t["accepted"] + t["refused"] >= 320)
        assert st["connections"] <= cap and st["evicted"] + st["refused"] >= 320 - cap
        phone = await TcpPhone().connect(d.sip)  # the cap is full of idle connections: one makes room
        assert (await phone.register_auth(d.sip, "1001", "s3cret")).status == 200
        assert (await phone.request(options_lines(d.sip))).status == 200
        phone.close()
        # the API's clients take every file left (200: more than that, fewer than what the
        # files left plus the API's listen backlog of 128): the SIP listener's accept() fails now
        api = await open_many(("127.0.0.1", d.api_port), 200, sources=1, strict=False)
        try:
            conns += await open_many(d.sip, 50, sources=4)
            failed = f"TCP 127.0.0.1:{d.sip[1]}: accept() failed"
            t_end = time.monotonic() + 20
            while failed not in d.log():  # the API cannot be asked: no file is left for it
                assert time.monotonic() < t_end, d.log()[-3000:]
                assert d.proc is not None and d.proc.poll() is None
                await asyncio.sleep(0.05)
        finally:
            for s in api:
                s.close()
        st = await d.tcp_status(lambda t: t["accept_errors"] >= 1)
        log = d.log()
        assert "Traceback" not in log and "Too many open files" in log
        assert len(log.splitlines()) <= 20, log[-3000:]
    finally:
        for s in conns:
            s.close()
        d.stop()


def test_soft_open_files_limit_raised_to_the_hard_one() -> None:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, LIMIT))

    out = subprocess.run(
        [sys.executable, "-c", "import resource; from sipqualify.net.limits import raise_open_files_limit as r; "
                               "print(r(), *resource.getrlimit(resource.RLIMIT_NOFILE))"],
        capture_output=True, text=True, preexec_fn=limit, check=True)
    assert out.stdout.split() == [str(LIMIT)] * 3


def test_connection_cap_leaves_room_for_the_rest() -> None:
    assert connection_cap(10_000, 1024) == 1024 - 128 - 102  # the common soft limit
    assert connection_cap(10_000, 256) == 256 - 128 - 25
    assert connection_cap(10_000, 65_536) == 10_000  # room enough: as configured
    assert connection_cap(10_000, 100) == 25  # a tiny limit: a quarter, and a warning
    assert connection_cap(500, resource.RLIM_INFINITY) == 500
