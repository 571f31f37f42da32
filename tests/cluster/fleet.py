"""A fleet of `sipqualify run` processes and the UDP responder that answers (and counts) their OPTIONS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..helpers import free_port


class Responder(asyncio.DatagramProtocol):
    """Answers every OPTIONS with 200 OK and records (time, source IP, peer) — the peer is the
    Request-URI's user part (each test peer has `qualify_ruri_user` = its name). The peers in
    `mute` get no answer (their far end is gone); nor does any OPTIONS from a source address in
    `deaf` (the network between that node and every peer is broken)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str, str]] = []
        self.mute: set[str] = set()
        self.deaf: set[str] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        lines = data.decode("utf8", "replace").split("\r\n")
        if not lines[0].startswith("OPTIONS "):
            return
        user = lines[0].split(" ")[1].removeprefix("sip:").split("@")[0]
        self.seen.append((time.monotonic(), addr[0], user))
        if user in self.mute or addr[0] in self.deaf:
            return
        keep = [ln for ln in lines[1:] if ln.split(":")[0].strip().lower() in ("via", "v", "from", "f", "call-id",
                                                                                "i", "cseq")]
        to = next((ln for ln in lines[1:] if ln.split(":")[0].strip().lower() in ("to", "t")), "To: <sip:x@x>")
        reply = "\r\n".join(["SIP/2.0 200 OK", *keep, to + ";tag=r1", "Content-Length: 0", "", ""])
        assert self.transport is not None
        self.transport.sendto(reply.encode(), addr)

    def sources(self, since: float, until: float | None = None) -> dict[str, set[str]]:
        """peer -> the source addresses that probed it in [since, until)."""
        out: dict[str, set[str]] = defaultdict(set)
        for t, src, user in self.seen:
            if t >= since and (until is None or t < until):
                out[user].add(src)
        return out

    def per_source(self, since: float, until: float) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for t, src, _ in self.seen:
            if since <= t < until:
                out[src] += 1
        return dict(out)


async def responder(host: str) -> tuple[Responder, int]:
    r = Responder()
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: r, local_addr=(host, 0))
    assert r.transport is not None
    return r, int(r.transport.get_extra_info("sockname")[1])


def fleet_toml(ip: str, node_id: str, cluster_url: str, lease: int, peers: list[str], peer_host: str, peer_port: int,
               qualifyfreq: int, store_url: str | None = None, token: str | None = None,
               stagger: tuple[int, int] = (10, 20), vantage_points: int = 1) -> str:
    """`stagger`: (qualifygap ms, qualifypeers): the first pokes' spread, and so the probes' phases."""
    lines = ["[general]", f'bind = ["{ip}:{free_port()}"]', f"qualifyfreq = {qualifyfreq}",
             f"qualifygap = {stagger[0]}", f"qualifypeers = {stagger[1]}", "",
             "[cluster]", f'url = "{cluster_url}"', f'node_id = "{node_id}"',
             f"lease = {lease}", f"vantage_points = {vantage_points}", ""]
    if store_url:
        lines += ["[store]", f'url = "{store_url}"', ""]
    if token:  # an API on a non-loopback address needs one
        lines += ["[api]", f'token = "{token}"', ""]
    for n in peers:
        lines += [f"[peers.{n}]", f'host = "{peer_host}"', f"port = {peer_port}", "qualify = true",
                  f'qualify_ruri_user = "{n}"', ""]
    return "\n".join(lines)


class Node:
    """One `sipqualify run` process; `netns` runs it inside that network namespace."""

    def __init__(self, tmp: Path, ip: str, node_id: str, conf: str, netns: str | None = None,
                 token: str | None = None) -> None:
        self.ip, self.node_id, self.netns = ip, node_id, netns
        self.dir = tmp / node_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "sipqualify.toml"
        self.conf.write_text(conf)
        self.api = (ip, free_port(socket.SOCK_STREAM))
        self.proc: asyncio.subprocess.Process | None = None
        self.token = token or ""

    def log(self) -> str:
        p = self.dir / "log"
        return p.read_text()[-4000:] if p.exists() else ""

    async def start(self) -> None:
        argv = [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(self.conf), "--api",
                f"{self.api[0]}:{self.api[1]}", "--state-dir", str(self.dir / "state")]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        self.proc = await asyncio.create_subprocess_exec(*argv, stderr=open(self.dir / "log", "ab"),  # noqa: SIM115
                                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def ready(self, timeout: float = 60) -> None:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            assert self.proc is not None
            if self.proc.returncode is not None:
                break
            tok = self.dir / "state" / "api-token"
            if self.token or tok.exists():
                self.token = self.token or tok.read_text().strip()
                if (await self.get("/readyz"))[0] == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"node {self.node_id} not ready:\n{self.log()}")

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str) -> tuple[int, Any]:
        return await self.request("POST", path)

    async def request(self, method: str, path: str) -> tuple[int, Any]:
        """(status, JSON body) of one API call; an error's body too; (0, None) when unreachable."""
        def call() -> tuple[int, Any]:
            req = urllib.request.Request(f"http://{self.api[0]}:{self.api[1]}{path}", method=method,
                                         headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                try:
                    return e.code, json.loads(e.read() or b"null")
                except ValueError:
                    return e.code, None
            except OSError:
                return 0, None

        return await asyncio.to_thread(call)

    async def metrics(self, query: str = "") -> str:
        def call() -> str:
            req = urllib.request.Request(f"http://{self.api[0]}:{self.api[1]}/metrics{query}",
                                         headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return str(r.read().decode())

        return await asyncio.to_thread(call)

    async def metric(self, name: str) -> float:
        """One unlabelled sample of /metrics."""
        text = await self.metrics()
        return next(float(ln.split()[1]) for ln in text.splitlines() if ln.startswith(name + " "))

    async def fleet_metric(self) -> dict[tuple[str, str], int]:
        """`sipqualify_fleet_peers`: (node, state) -> peers."""
        out: dict[tuple[str, str], int] = {}
        for ln in (await self.metrics()).splitlines():
            if ln.startswith("sipqualify_fleet_peers{"):
                labels = dict(kv.split("=", 1) for kv in ln[ln.index("{") + 1:ln.index("}")].split(","))
                out[(labels["node"].strip('"'), labels["state"].strip('"'))] = int(float(ln.rsplit(" ", 1)[1]))
        return out

    async def cluster(self) -> dict[str, Any]:
        code, body = await self.get("/api/v1/status")
        assert code == 200, (code, self.log())
        return dict(body["cluster"])

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def cli_peer(node: Node, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipqualify.cli", "peer", name, "--api",
                           f"{node.api[0]}:{node.api[1]}", "--state-dir", str(node.dir / "state")],
                          capture_output=True, text=True, timeout=30)


async def until(pred: Any, timeout: float, what: str) -> None:
    """Wait for a real condition (async or plain predicate), polling, with a deadline."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        r = pred()
        if asyncio.iscoroutine(r):
            r = await r
        if r:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in {timeout} s: {what}")


async def settled(nodes: list[Node], total: int) -> bool:
    """Every node sees them all as members, is live, and together they own each static peer once."""
    states = [await x.cluster() for x in nodes]
    return all(len(s["members"]) == len(nodes) and s["live"] for s in states) and \
        sum(s["owned"] for s in states) == total
