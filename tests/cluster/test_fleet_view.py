"""The fleet view beyond the list (issue 15): two `sipqualify run` nodes on 127.0.0.2 and .3
sharing 20 static peers through a real etcd and a real PostgreSQL store, each with a webhook
receiver of its own.

- node A answers `GET /api/v1/peers/X` for a peer node B owns: 200, `owner` B, `live: false`,
  its stored state and history; `sipqualify peer X` against A prints the owner line; a name no
  node has is still 404;
- the far end of one of B's peers (and of one of A's) stops answering: A's `/events?fleet=1`
  stream shows each transition exactly once, marked with its node; A's plain `/events` shows
  A's own only; B's webhooks fire for B's peer, A's never do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from ..helpers import Postgres
from .conftest import Etcd
from .fleet import Node, cli_peer, fleet_toml, responder, settled, until

PEERS = [f"f{i:02d}" for i in range(20)]
FREQ = 2
LEASE = 2


class Hooks:
    """Webhook receivers at /NODE: the transitions each node's webhooks POSTed."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.got[request.match_info["node"]].append(await request.json())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/{node}", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def of(self, node: str, peer: str) -> list[tuple[str, str]]:
        return [(e["old"], e["new"]) for e in self.got[node] if e["peer"] == peer]


class Stream:
    """An SSE stream of a node, read in the background: the transitions it sent."""

    def __init__(self, node: Node, query: str) -> None:
        self.node, self.query = node, query
        self.events: list[dict[str, Any]] = []
        self.opened = asyncio.Event()
        self.session = aiohttp.ClientSession()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        url = f"http://{self.node.api[0]}:{self.node.api[1]}/events{self.query}"
        async with self.session.get(url, headers={"Authorization": f"Bearer {self.node.token}"}) as r:
            assert r.status == 200
            kind = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith(": sipqualify event stream"):
                    self.opened.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "transition":
                    self.events.append(json.loads(line[6:]))

    def of(self, peer: str) -> list[tuple[str, str, str]]:
        return [(e["old"], e["new"], e["node"]) for e in self.events if e["peer"] == peer]

    async def close(self) -> None:
        self.task.cancel()
        await self.session.close()


async def test_any_node_shows_another_nodes_peer_and_its_transitions(etcd: Etcd, tmp_path: Path) -> None:
    pg = Postgres()
    nodes: list[Node] = []
    streams: list[Stream] = []
    hooks = Hooks()
    try:
        resp, port = await responder("127.0.0.1")
        await hooks.start()

        def node(i: int) -> Node:
            ip, name = f"127.0.0.{i}", f"n{i}"
            conf = fleet_toml(ip, name, etcd.url, LEASE, PEERS, "127.0.0.1", port, FREQ, pg.url())
            conf += f'\n[[webhooks]]\nid = "{name}"\nurl = "http://127.0.0.1:{hooks.port}/{name}"\n'
            return Node(tmp_path, ip, name, conf)

        nodes = [node(2), node(3)]
        a, b = nodes
        for n in nodes:
            await n.start()
        for n in nodes:
            await n.ready()
        await until(lambda: settled(nodes, len(PEERS)), 30, "two members sharing all peers")

        async def all_ok() -> bool:
            code, body = await a.get("/api/v1/peers")
            return code == 200 and all(r.get("state") == "OK" for r in body["peers"]) and len(body["peers"]) == 20

        await until(all_ok, 30, "every peer OK in A's fleet view (B's from the shared store)")
        # one scrape of A counts the whole fleet, by owner and stored state (A's own rows go in with its
        # store's next batch, and the counts are read at most every 10 s: waited for, not assumed)
        want = {("n2", "OK"), ("n3", "OK")}

        seen: list[dict[tuple[str, str], int]] = []

        async def counted() -> bool:
            counts = await a.fleet_metric()
            seen.append(counts)
            return set(counts) == want and sum(counts.values()) == len(PEERS)

        try:
            await until(counted, 30, "A's sipqualify_fleet_peers with both nodes' peers")
        except AssertionError as e:
            rows = pg.sql("SELECT peer, node, state FROM peer_state ORDER BY peer")
            raise AssertionError(f"{e}: last counted {seen[-1:]}, stored {rows}") from None
        _, body = await a.get("/api/v1/peers")
        of_b = sorted(r["name"] for r in body["peers"] if r["node"] == "n3" and not r["local"])
        of_a = sorted(r["name"] for r in body["peers"] if r["local"])
        assert of_a and of_b

        # 1. A answers for B's peer, from the store, marked as B's
        x, y = of_b[0], of_a[0]
        code, px = await a.get(f"/api/v1/peers/{x}")
        assert code == 200, (code, a.log())
        assert px["owner"] == "n3" and px["live"] is False and px["stored_by"] == "n3"
        assert px["state"] == "OK" and px["peer_status"] == "Reachable" and px["maxms"] == 2000
        assert time.time() - px["updated_at"] < 60
        assert [(t["old"], t["new"], t["node"]) for t in px["history"]] == [("UNKNOWN", "OK", "n3")]
        # ... its stats windows and history from the shared store; a forced qualify names the owner
        # (B's samples go in with its store's next batch, after the transition and its state row)
        sx: dict[str, Any] = {}

        async def sampled() -> bool:
            nonlocal sx
            code, sx = await a.get(f"/api/v1/peers/{x}/stats")
            assert code == 200 and sx["owner"] == "n3" and sx["live"] is False, (code, sx)
            return bool(sx["rtt_windows"]["5m"]["samples"] > 0)

        await until(sampled, 10, "B's samples of its peer in the shared store")
        assert sx["uptime"]["24h"]["pct"] == 100.0, sx
        code, hx = await a.get(f"/api/v1/peers/{x}/history")
        assert code == 200 and [(t["old"], t["new"]) for t in hx["transitions"]] == [("UNKNOWN", "OK")]
        code, qx = await a.post(f"/api/v1/peers/{x}/qualify")
        assert code == 409 and qx["owner"] == "n3" and "qualified by node n3" in qx["error"], (code, qx)
        assert (await a.post("/api/v1/peers/nobody/qualify"))[0] == 404
        code, py = await a.get(f"/api/v1/peers/{y}")  # A's own: as today, no owner marks
        assert code == 200 and "owner" not in py and "live" not in py and py["name"] == y
        assert (await a.get("/api/v1/peers/nobody"))[0] == 404
        out = await asyncio.to_thread(cli_peer, a, x)
        assert out.returncode == 0, out.stderr
        assert "Owner        : n3 (stored state, updated" in out.stdout and "UNKNOWN -> OK" in out.stdout, out.stdout
        out = await asyncio.to_thread(cli_peer, a, "nobody")
        assert out.returncode != 0 and "Peer nobody not found." in out.stdout + out.stderr

        # 2. the fleet stream of A: B's transitions (and A's), once each, with their node
        fleet, plain = Stream(a, "?fleet=1"), Stream(a, "")
        streams = [fleet, plain]
        for s in streams:
            await asyncio.wait_for(s.opened.wait(), 10)
        status = (await a.cluster())["fleet_events"]
        assert status["connected"] is True, status
        resp.mute |= {x, y}
        await until(lambda: ("OK", "UNREACHABLE", "n3") in fleet.of(x) and ("OK", "UNREACHABLE", "n2") in fleet.of(y),
                    30, "both transitions to UNREACHABLE on A's fleet stream")
        resp.mute -= {x, y}
        await until(lambda: fleet.of(x)[-1:] == [("UNREACHABLE", "OK", "n3")]
                    and fleet.of(y)[-1:] == [("UNREACHABLE", "OK", "n2")]
                    and plain.of(y)[-1:] == [("UNREACHABLE", "OK", "n2")]
                    and hooks.of("n3", x)[-1:] == [("UNREACHABLE", "OK")]
                    and hooks.of("n2", y)[-1:] == [("UNREACHABLE", "OK")], 30, "both back OK, reported")
        assert fleet.of(x) == [("OK", "UNREACHABLE", "n3"), ("UNREACHABLE", "OK", "n3")]
        assert fleet.of(y) == [("OK", "UNREACHABLE", "n2"), ("UNREACHABLE", "OK", "n2")]
        ids = [e["id"] for e in fleet.events]
        assert ids == sorted(set(ids))  # commit order, no repeat
        assert plain.of(x) == []  # the plain stream: this node's transitions only
        assert plain.of(y) == fleet.of(y)
        # reported once, by the owner: B's webhooks fired for x, A's never did. The first result of
        # each peer (UNKNOWN -> OK) is reported once, by whichever node held it first: a node that
        # joins before the other is seen in the group (a busy machine) holds every peer until it is
        for peer in (x, y):
            assert [h for n in ("n2", "n3") for h in hooks.of(n, peer) if h[0] == "UNKNOWN"] == [("UNKNOWN", "OK")]
        later = {(n, peer): [h for h in hooks.of(n, peer) if h[0] != "UNKNOWN"]
                 for n in ("n2", "n3") for peer in (x, y)}
        assert later[("n3", x)] == [("OK", "UNREACHABLE"), ("UNREACHABLE", "OK")]
        assert later[("n2", x)] == []
        assert later[("n3", y)] == []

        # resuming (Last-Event-ID 0): the fleet stream replays every node's rows, the plain one A's only
        fleet0, plain0 = Stream(a, "?fleet=1&last_event_id=0"), Stream(a, "?last_event_id=0")
        streams += [fleet0, plain0]
        await until(lambda: fleet0.of(x)[-1:] == [("UNREACHABLE", "OK", "n3")], 10, "the fleet replay")
        assert fleet0.of(x)[0][:2] == ("UNKNOWN", "OK") and fleet0.of(x)[1:] == fleet.of(x)  # first: its first holder's
        assert {e["peer"] for e in fleet0.events} == set(PEERS)
        await until(lambda: plain0.of(y)[-1:] == [("UNREACHABLE", "OK", "n2")], 10, "the plain replay")
        last = plain0.events[-1]["id"]
        assert {e["node"] for e in plain0.events} == {"n2"}
        assert not [e for e in fleet0.events if e["id"] < last and e["node"] == "n2"
                    and e["id"] not in {p["id"] for p in plain0.events}]  # none of A's left out
    finally:
        for s in streams:
            await s.close()
        for n in nodes:
            await n.stop()
        if hooks.runner is not None:
            await hooks.runner.cleanup()
        pg.close()


async def test_a_node_joining_names_itself_owner_of_the_share_it_starts_from_the_store(
        etcd: Etcd, tmp_path: Path) -> None:
    """B joins after A has qualified every peer: B's first share starts from A's stored rows (no
    transition) and the shared store names B their owner within a batch, as a takeover does.
    Regression: the rows kept A's name until B's next transition, and the fleet's counts by owner
    (`sipqualify_fleet_peers`) said A had all the peers."""
    pg = Postgres()
    nodes: list[Node] = []
    try:
        resp, port = await responder("127.0.0.1")

        def node(i: int) -> Node:
            ip, name = f"127.0.0.{i}", f"n{i}"
            return Node(tmp_path, ip, name, fleet_toml(ip, name, etcd.url, LEASE, PEERS, "127.0.0.1", port, FREQ,
                                                       pg.url()))

        a, b = node(2), node(3)
        nodes = [a]
        await a.start()
        await a.ready()
        await until(lambda: len(pg.sql("SELECT peer FROM peer_state WHERE node='n2' AND state='OK'")) == len(PEERS),
                    30, "A's rows: every peer OK")
        nodes.append(b)
        await b.start()
        await b.ready()
        await until(lambda: settled(nodes, len(PEERS)), 30, "two members sharing all peers")
        _, body = await b.get("/api/v1/peers")
        owner = {r["name"]: r["node"] for r in body["peers"]}
        assert set(owner.values()) == {"n2", "n3"}

        def stored() -> dict[str, str]:
            return {str(p): str(n) for p, n in pg.sql("SELECT peer, node FROM peer_state")}

        await until(lambda: stored() == owner, 10, "the stored rows name each peer's owner")
        assert all(s == "OK" for (s,) in pg.sql("SELECT state FROM peer_state"))
        # B started its share from A's rows: A's UNKNOWN -> OK is each peer's only transition
        rows = pg.sql("SELECT peer, node FROM transitions")
        assert sorted(p for p, _ in rows) == sorted(PEERS) and {n for _, n in rows} == {"n2"}, rows
    finally:
        for n in nodes:
            await n.stop()
        pg.close()
