"""Webhooks: receiver down, daemon killed with kill -9, restarted, receiver back: every event
delivered once, in order per peer, signed with HMAC-SHA256."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .helpers import cli, endpoint, free_port, wait_for

SECRET = "whsec-0123456789"


async def start_daemon(tmp_path: Path, conf: Path, api_port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api", f"127.0.0.1:{api_port}",
        "--state-dir", str(tmp_path / "s"), stderr=open(tmp_path / "daemon.log", "ab"))  # noqa: SIM115
    where = ["--api", f"127.0.0.1:{api_port}", "--state-dir", str(tmp_path / "s")]
    for _ in range(100):
        if (await cli("peers", *where))[0] == 0:
            return proc
        await asyncio.sleep(0.1)
    raise AssertionError((tmp_path / "daemon.log").read_text()[-2000:])


def transitions(tmp_path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(tmp_path / "s" / "sipqualify.sqlite") as db:
        return [(r[0], r[1], r[2]) for r in db.execute("SELECT id, peer, new FROM transitions ORDER BY id")]


async def test_outbox_survives_receiver_outage_and_kill_9(tmp_path: Path) -> None:
    flap_t, flap_port = await endpoint(200)
    hook_port = free_port(socket.SOCK_STREAM)
    api_port = free_port(socket.SOCK_STREAM)
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f"""
[general]
bind = ["127.0.0.1:{free_port()}"]
qualifygap = 10
[peers.flap]
host = "127.0.0.1"
port = {flap_port}
qualify = 500
qualifyfreq = 1
[peers.dead]
host = "127.0.0.1"
port = {free_port()}
qualify = 500
qualifyfreq = 1
[[webhooks]]
id = "noc"
url = "http://127.0.0.1:{hook_port}/hook"
secret = "{SECRET}"
""")
    # receiver down from the start
    proc = await start_daemon(tmp_path, conf, api_port)
    try:
        # flap OK, dead UNREACHABLE: 2 events queued for a dead receiver
        await wait_for(lambda: {("flap", "OK"), ("dead", "UNREACHABLE")} <= {t[1:] for t in transitions(tmp_path)},
                       timeout=30)
        flap_t.close()  # flap goes UNREACHABLE
        await wait_for(lambda: len(transitions(tmp_path)) >= 3, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
        before = transitions(tmp_path)
        assert len(before) >= 3

        proc = await start_daemon(tmp_path, conf, api_port)
        # the outage outlasts the restart: the new process first retries against a dead receiver
        await asyncio.sleep(1.0)
        # receiver back
        got: list[dict[str, Any]] = []
        keys: list[str] = []

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            assert request.headers["X-Sipqualify-Signature"] == "sha256=" + hmac.new(
                SECRET.encode(), body, hashlib.sha256).hexdigest()
            keys.append(request.headers["Idempotency-Key"])
            got.append(json.loads(body))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", hook_port).start()
        try:
            t_end = time.monotonic() + 20
            while time.monotonic() < t_end:
                stored = transitions(tmp_path)
                if len(got) >= len(stored) >= len(before):
                    break
                await asyncio.sleep(0.2)
        finally:
            await runner.cleanup()
        stored = transitions(tmp_path)
        assert [e["id"] for e in got] == [i for i, _, _ in stored]  # every event, in commit order
        assert len(set(keys)) == len(keys) == len(stored)  # exactly once per receiver
        assert all(k == f"noc-{e['id']}" for k, e in zip(keys, got, strict=True))
        for peer in ("flap", "dead"):
            ids = [e["id"] for e in got if e["peer"] == peer]
            assert ids == sorted(ids)
        assert {(e["peer"], e["new"]) for e in got} >= {("dead", "UNREACHABLE"), ("flap", "OK"),
                                                       ("flap", "UNREACHABLE")}
    finally:
        proc.terminate()
        await proc.wait()
