"""`sipqualify run --workers 2` for real: a daemon process, two worker processes, 200 static
peers on 127.0.0.x answering from an asyncio responder in this test, the API, the CLI and the
event stream of the main process showing one merged view; a peer that stops answering is one
UNREACHABLE transition; a worker killed with SIGKILL is restarted and its peers go on without a
false transition; SIGTERM leaves no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from sipqualify.demo import DemoEndpoint
from sipqualify.workers.hrw import owner

from ..helpers import cli, free_port

PEERS = 200


class Responder(DemoEndpoint):
    """Answers 200 while up; remembers the source ports the OPTIONS came from."""

    def __init__(self, name: str, up: dict[str, bool], sources: set[int]) -> None:
        super().__init__(200, "OK", up=lambda: up[name])
        self.sources = sources

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.sources.add(int(addr[1]))
        super().datagram_received(data, addr)


def children(pid: int) -> set[int]:
    out: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(x) for x in f.read().split())
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def until(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_two_workers_merged_view_kill9_and_sigterm(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    up: dict[str, bool] = {}
    transports = []
    sources: set[int] = set()
    sip_port = free_port()
    lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "qualifyfreq=2", "qualifygap=10",
             "qualifypeers=20", ""]
    names = [f"p{i:03d}" for i in range(PEERS)]
    for i, name in enumerate(names):
        up[name] = True
        t, _ = await loop.create_datagram_endpoint(
            lambda n=name: Responder(n, up, sources),  # type: ignore[misc]
            local_addr=(f"127.0.0.{10 + i % 50}", 0))
        transports.append(t)
        port = t.get_extra_info("sockname")[1]
        lines += [f"[{name}]", "type=peer", f"host=127.0.0.{10 + i % 50}", f"port={port}", "qualify=yes", ""]
    conf = tmp_path / "sip.conf"
    conf.write_text("\n".join(lines))
    api_port = free_port()
    state = tmp_path / "state"
    proc = await daemon(conf, api_port, state, tmp_path / "daemon.log")
    base = f"http://127.0.0.1:{api_port}"
    client = ["-c", str(conf), "--api", f"127.0.0.1:{api_port}", "--state-dir", str(state)]
    try:
        async with aiohttp.ClientSession() as http:
            token = ""

            async def peers() -> dict[str, Any] | None:
                nonlocal token
                if not token:
                    tok = state / "api-token"
                    if not tok.exists():
                        return None
                    token = tok.read_text().strip()
                try:
                    async with http.get(f"{base}/api/v1/peers", headers={"Authorization": f"Bearer {token}"}) as r:
                        if r.status != 200:
                            return None
                        body = await r.json()
                except aiohttp.ClientError:
                    return None
                items = body["peers"] if isinstance(body, dict) else body
                return {p["name"]: p for p in items}

            async def all_ok() -> dict[str, Any] | None:
                got = await peers()
                return got if got and len(got) == PEERS and all(p["state"] == "OK" for p in got.values()) else None

            await until(all_ok, 60, "all 200 peers OK")
            workers = await until(lambda: _two(children(proc.pid)), 10, "two worker processes")
            # the OPTIONS came from the workers' own ports, never from the main SIP port
            assert len(sources) == 2 and sip_port not in sources

            # the CLI, for a peer of each worker
            for w in (0, 1):
                name = next(n for n in names if owner(n, 2) == w)
                code, out, err = await cli("peer", name, *client)
                assert code == 0, err
                assert "Status       : OK" in out and name in out

            # every transition from now on
            seen: list[dict[str, Any]] = []
            sse = await http.get(f"{base}/events", headers={"Authorization": f"Bearer {token}"})
            assert sse.status == 200

            async def read() -> None:
                name = ""
                async for raw in sse.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "transition":
                        seen.append(json.loads(line[6:]))

            reader = loop.create_task(read())
            victim = names[7]
            up[victim] = False

            async def victim_down() -> bool:
                return any(e["peer"] == victim for e in seen)

            await until(victim_down, 30, "the silent peer's transition")
            assert [(e["peer"], e["peer_status"]) for e in seen] == [(victim, "Unreachable")]

            # kill -9 one worker: restarted, its peers keep being qualified, no false transition
            async with http.get(f"{base}/api/v1/status", headers={"Authorization": f"Bearer {token}"}) as r:
                answered_before = (await r.json())["engine"]["answered"]
            killed = sorted(workers)[0]
            os.kill(killed, signal.SIGKILL)

            async def restarted() -> set[int] | None:
                now = children(proc.pid)
                return now if len(now) == 2 and killed not in now else None

            await until(restarted, 20, "the worker restarted")
            before = await peers()
            assert before is not None

            async def qualified_again() -> bool:
                got = await peers()
                return got is not None and all(
                    got[n]["qualifies"] >= before[n]["qualifies"] + 2 for n in names if n != victim)

            await until(qualified_again, 30, "every peer qualified twice after the restart")
            async with http.get(f"{base}/api/v1/status", headers={"Authorization": f"Bearer {token}"}) as r:
                status = await r.json()
            ws = status["workers"]
            # the killed worker's counters are kept: the merged counters never go down
            assert status["engine"]["answered"] >= answered_before + 2 * (PEERS - 1)
            assert [w["index"] for w in ws] == [0, 1] and sum(w["peers"] for w in ws) == PEERS
            assert [w["restarts"] for w in ws] == [1 if w["pid"] not in workers else 0 for w in ws]
            assert sum(w["restarts"] for w in ws) == 1 and killed not in [w["pid"] for w in ws]
            final = await peers()
            assert final is not None
            assert {n: p["state"] for n, p in final.items() if p["state"] != "OK"} == {victim: "UNREACHABLE"}
            assert [(e["peer"], e["peer_status"]) for e in seen] == [(victim, "Unreachable")]
            reader.cancel()
            sse.close()

        # SIGTERM: the daemon and every worker gone
        everyone = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await all_gone(everyone)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for t in transports:
            t.close()


async def daemon(conf: Path, api_port: int, state: Path, log: Path) -> asyncio.subprocess.Process:
    """`sipqualify run --workers 2`, its stderr to `log`."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api", f"127.0.0.1:{api_port}",
        "--state-dir", str(state), "--workers", "2", "--log-level", "warning",
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("w"))


async def all_gone(pids: set[int]) -> None:
    for pid in pids:
        await until(lambda p=pid: _gone(p), 10, f"worker {pid} gone")  # type: ignore[misc]


async def _two(pids: set[int]) -> set[int] | None:
    return pids if len(pids) == 2 else None


async def _gone(pid: int) -> bool:
    return not alive(pid)


async def test_workers_die_with_a_killed_main_process(tmp_path: Path) -> None:
    """kill -9 of the main process: no worker is left behind (PR_SET_PDEATHSIG, the pipe's end)."""
    conf = tmp_path / "sip.conf"
    conf.write_text("\n".join(["[general]", f"udpbindaddr=127.0.0.1:{free_port()}", "",
                               "[a]", "type=peer", "host=127.0.0.1", "port=9", "qualify=yes", ""]))
    proc = await daemon(conf, free_port(), tmp_path / "state", tmp_path / "daemon.log")
    try:
        workers = await until(lambda: _two(children(proc.pid)), 30, "two worker processes")
        proc.kill()
        await proc.wait()
        await all_gone(workers)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
