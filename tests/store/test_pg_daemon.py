"""`sipqualify run` with `[store] url` at a real PostgreSQL: the daemon (a separate process)
stores its transitions there, with its node id, and its API reads them back; the server
stopped under it makes /readyz fail with the cause and loses nothing once it is back; a second
node on the same database sees the first node's peers and transitions."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sipqualify.store.postgres import Store

from ..helpers import Postgres, api_get, endpoint, free_port


async def readyz(api_port: int, token: str) -> tuple[int, Any]:
    """/readyz with its body, 503 included (api_get drops the body of an error status)."""
    def call() -> tuple[int, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{api_port}/readyz")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    return await asyncio.to_thread(call)


async def test_a_daemon_stores_transitions_in_postgres(tmp_path: Path, own_server: Postgres) -> None:
    pg_server, pg_url = own_server, own_server.url()
    responder, port = await endpoint(200)
    api_port = free_port()
    state = tmp_path / "state"
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f'[general]\nbind = "127.0.0.1:{free_port()}"\n'
                    f'[store]\nurl = "{pg_url}"\n[service]\nnode_id = "node-a"\n'
                    f'[peers.alice]\nhost = "127.0.0.1"\nport = {port}\nqualify = true\nqualifyfreq = 1\n')
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api", f"127.0.0.1:{api_port}",
        "--state-dir", str(state), stderr=log)
    try:
        token = ""
        history: list[dict[str, object]] = []
        deadline = time.monotonic() + 30  # a deadline on a real condition: start-up is slow on a busy machine
        while time.monotonic() < deadline and proc.returncode is None:
            tok = state / "api-token"
            if tok.exists():
                token = tok.read_text().strip()
                status, body = await api_get(api_port, token, "/api/v1/peers/alice/history")
                if status == 200 and body["transitions"]:
                    history = body["transitions"]
                    break
            await asyncio.sleep(0.1)
        assert history, (tmp_path / "daemon.log").read_text()[-3000:]
        assert (history[0]["old"], history[0]["new"]) == ("UNKNOWN", "OK")
        dbname = pg_url.rsplit("/", 1)[1]
        rows = pg_server.sql("SELECT peer, old, new, node FROM transitions", dbname=dbname)
        assert ("alice", "UNKNOWN", "OK", "node-a") in rows
        assert not (state / "sipqualify.sqlite").exists()  # nothing went to SQLite
        status, ready = await api_get(api_port, token, "/readyz")
        assert status == 200, ready

        # the server goes away under the running daemon: not ready, with the cause; back: ready
        pg_server.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, ready = await readyz(api_port, token)
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503 and ready["checks"]["store"] is False, ready
        assert ready["errors"]["store"]["cause"]
        _, st = await api_get(api_port, token, "/api/v1/status")
        queued = st["store"]["samples_written"]
        pg_server.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, ready = await readyz(api_port, token)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200, ready
        _, st = await api_get(api_port, token, "/api/v1/status")
        assert st["store"]["samples_dropped"] == 0 and st["store"]["samples_written"] > queued
    finally:
        proc.terminate()
        await proc.wait()
        log.close()
        responder.close()
    # another node on the same database: the fleet's peers and transitions, each with its node
    other = Store(pg_url, node="node-b")
    other.open()
    try:
        assert other.fleet_states()["alice"].node == "node-a"
        assert [(t.peer, t.node) for t in other.transitions("alice")][0] == ("alice", "node-a")
    finally:
        other.close()
