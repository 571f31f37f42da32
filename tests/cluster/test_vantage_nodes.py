"""Vantage points for real (issue 15): three `sipqualify run` nodes on 127.0.0.2-4 with
`vantage_points = 3`, a real etcd and a real PostgreSQL store, 12 static peers answered by one
responder on 127.0.0.1.

- every node probes every peer; each peer's first OK is reported once, by the primary it had then;
- the responder stops answering node n2 only (n2's network trouble): n2 sees all 12 peers
  UNREACHABLE, the other nodes still reach them, and nothing is reported: no UNREACHABLE row,
  every primary's agreed state stays OK while it holds n2's UNREACHABLE observation;
- it stops answering n3 too: a quorum (2 of 3); each peer goes UNREACHABLE once, reported by
  its primary, the reason naming the two vantage points; answered again, back OK once;
- n4 is killed (-9): the survivors agree on 2 vantage points and go on reporting.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from ..helpers import Postgres
from .conftest import Etcd
from .fleet import Node, cli_peer, fleet_toml, responder, until

PEERS = [f"v{i:02d}" for i in range(12)]
FREQ = 2
LEASE = 2
IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def rows(pg: Postgres, sql: str) -> list[tuple[Any, ...]]:
    return pg.sql(sql)


def transitions(pg: Postgres) -> list[tuple[Any, ...]]:
    return rows(pg, "SELECT peer, old, new, node, reason FROM transitions ORDER BY id")


async def views(node: Node) -> dict[str, dict[str, Any]]:
    out = {}
    for p in PEERS:
        code, body = await node.get(f"/api/v1/peers/{p}")
        assert code == 200, (code, body, node.log())
        out[p] = body
    return out


async def test_a_peer_is_unreachable_only_when_a_quorum_of_vantage_points_agrees(etcd: Etcd, tmp_path: Path) -> None:
    pg = Postgres()
    nodes: list[Node] = []
    try:
        resp, port = await responder("127.0.0.1")
        for i, ip in enumerate(IPS):
            name = f"n{i + 2}"
            conf = fleet_toml(ip, name, etcd.url, LEASE, PEERS, "127.0.0.1", port, FREQ, pg.url(),
                              vantage_points=3)
            nodes.append(Node(tmp_path, ip, name, conf))
        for n in nodes:
            await n.start()
        for n in nodes:
            await n.ready()

        async def everyone_probes_all() -> bool:
            states = [await x.cluster() for x in nodes]
            return all(len(s["members"]) == 3 and s["live"] and s["owned"] == len(PEERS)
                       and s["vantage_points"] == 3 and (s["vantage"] or {}).get("peers") == len(PEERS)
                       for s in states)

        await until(everyone_probes_all, 40, "three members, each probing all 12 peers")
        await until(lambda: len(transitions(pg)) >= len(PEERS), 40, "every peer's first OK reported")
        first = transitions(pg)
        assert sorted(r[0] for r in first) == PEERS, first  # once each
        assert {(r[1], r[2]) for r in first} == {("UNKNOWN", "OK")}
        order = {p: v["vantage"]["nodes"] for p, v in (await views(nodes[0])).items()}
        primaries = {p: nodes_[0] for p, nodes_ in order.items()}
        # reported by the peer's primary at the time: a node that started a little later (outside
        # the settle window) may have become a peer's primary after its first OK was reported
        assert {r[3] for r in first} <= {"n2", "n3", "n4"}, first
        assert len(set(primaries.values())) > 1  # the primaries are spread over the nodes
        # every node shows the same vantage points for a peer
        for n in nodes[1:]:
            assert {p: v["vantage"]["nodes"] for p, v in (await views(n)).items()} == order
        by_node = {n.node_id: n for n in nodes}

        async def primaries_hold(node_id: str, state: str) -> bool:
            """Every peer's primary has `node_id`'s observation `state` and says what it agreed."""
            for p, owner in primaries.items():
                v = (await by_node[owner].get(f"/api/v1/peers/{p}"))[1]["vantage"]
                if v["observations"].get(node_id, {}).get("state") != state:
                    return False
            return True

        # 1. n2's network trouble: only n2 sees the peers gone; nobody reports it
        resp.deaf.add(IPS[0])
        await until(lambda: primaries_hold("n2", "UNREACHABLE"), 40, "n2's UNREACHABLE at every primary")
        local = await views(nodes[0])
        assert all(v["state"] == "UNREACHABLE" for v in local.values()), local  # n2's own engine
        for p, owner in primaries.items():
            v = (await by_node[owner].get(f"/api/v1/peers/{p}"))[1]["vantage"]
            assert v["agreed"] == "OK" and v["quorum"] == 2, v
        assert transitions(pg) == first  # not one UNREACHABLE reported
        p0 = PEERS[0]  # `sipqualify peer` on its primary shows who saw what
        primary0 = by_node[primaries[p0]]

        async def others_ok_at_primary() -> bool:
            obs = (await primary0.get(f"/api/v1/peers/{p0}"))[1]["vantage"]["observations"]
            return all(obs.get(n, {}).get("state") == "OK" for n in ("n3", "n4"))

        await until(others_ok_at_primary, 20, "n3's and n4's OK at the primary")
        out = await asyncio.to_thread(cli_peer, primary0, p0)
        assert out.returncode == 0, out.stderr
        assert "  Vantage      : 2 of 3 to agree; agreed OK (primary: this node)\n" in out.stdout, out.stdout
        assert all(f"{n} {st}" in out.stdout for n, st in (("n2", "UNREACHABLE"), ("n3", "OK ("), ("n4", "OK ("))), \
            out.stdout
        held = sum([(await x.cluster())["vantage"]["held_back"] for x in nodes])
        assert held >= sum(1 for o in primaries.values() if o == "n2"), held  # counted where it was seen

        # 2. n3 too: a quorum; each peer UNREACHABLE once, by its primary
        resp.deaf.add(IPS[1])
        await until(lambda: len(transitions(pg)) >= 2 * len(PEERS), 40, "the quorum's UNREACHABLE reported")
        down = transitions(pg)[len(PEERS):]
        assert sorted(r[0] for r in down) == PEERS, down
        assert all((r[1], r[2]) == ("OK", "UNREACHABLE") and r[3] == primaries[r[0]] for r in down), down
        assert all(r[4] == "2 of 3 vantage points: " + ", ".join(n for n in order[r[0]] if n != "n4")
                   for r in down), down
        resp.deaf.clear()
        await until(lambda: len(transitions(pg)) >= 3 * len(PEERS), 40, "back OK, reported")
        up = transitions(pg)[2 * len(PEERS):]
        assert sorted(r[0] for r in up) == PEERS and all(r[2] == "OK" and r[3] == primaries[r[0]] for r in up), up
        await until(lambda: dict(rows(pg, "SELECT peer, state FROM peer_state")) == dict.fromkeys(PEERS, "OK"), 20,
                    "the agreed states stored (state rows go in with the next batch, after the transitions)")
        assert dict(rows(pg, "SELECT peer, node FROM peer_state")) == primaries  # by the primaries only

        # 3. n4 dies: the survivors go on with two vantage points each; n2's trouble alone still reports nothing
        nodes[2].kill9()
        await until(lambda: all_two(nodes[:2]), 40, "two vantage points left")
        before = len(transitions(pg))
        resp.deaf.add(IPS[0])
        await until(lambda: n3_reaches_and_n2_not(nodes[1]), 40, "n2's UNREACHABLE at n3, n3 still OK")
        assert all(r[2] != "UNREACHABLE" for r in transitions(pg)[before:]), transitions(pg)[before:]
        resp.deaf.add(IPS[1])  # both survivors: 2 of 2
        await until(lambda: Counter(r[2] for r in transitions(pg)[before:])["UNREACHABLE"] == len(PEERS), 40,
                    "each peer UNREACHABLE once on both survivors' word")
    finally:
        for n in nodes:
            await n.stop()
        pg.close()


async def all_two(nodes: list[Node]) -> bool:
    for n in nodes:
        s = await n.cluster()
        if len(s["members"]) != 2:
            return False
        if any(set(v["vantage"]["nodes"]) != {"n2", "n3"} for v in (await views(n)).values()):
            return False
    return True


async def n3_reaches_and_n2_not(n3: Node) -> bool:
    for v in (await views(n3)).values():
        obs = v["vantage"]["observations"]
        if obs.get("n2", {}).get("state") != "UNREACHABLE" or obs.get("n3", {}).get("state") != "OK":
            return False
    return True


async def test_a_restarted_vantage_point_observes_its_peers_afresh(etcd: Etcd, tmp_path: Path) -> None:
    """A node that (re)starts on a store holding its peers' agreed OK writes its own observation
    UNKNOWN, then what its engine sees: its engine starts the peers from UNKNOWN, not from the
    agreed state (restored, the first OK would be no transition and the row would stay UNKNOWN,
    shown by `sipqualify peer` and weighed by the primary as a node that does not reach the peer)."""
    pg = Postgres()
    node: Node | None = None
    try:
        resp, port = await responder("127.0.0.1")
        conf = fleet_toml(IPS[0], "n2", etcd.url, LEASE, PEERS, "127.0.0.1", port, FREQ, pg.url(), vantage_points=2)

        def observed() -> dict[str, str]:
            return dict(rows(pg, "SELECT peer, state FROM observations WHERE node = 'n2'"))

        for turn in range(2):
            node = Node(tmp_path, IPS[0], "n2", conf)
            await node.start()
            await node.ready()
            await until(lambda: observed() == dict.fromkeys(PEERS, "OK"), 40,
                        f"n2's own OK observation of every peer (start {turn + 1})")
            await until(lambda: dict(rows(pg, "SELECT peer, state FROM peer_state")) == dict.fromkeys(PEERS, "OK"),
                        20, "the agreed OK stored")
            await node.stop()
        assert len(transitions(pg)) == len(PEERS), transitions(pg)  # the restart reported nothing again
    finally:
        if node is not None:
            await node.stop()
        pg.close()
