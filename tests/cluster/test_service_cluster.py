"""The daemon in-process with `[cluster]` on a real Redis: it loads only its share of the static
peers, gives part of it away when another member joins and takes it back when that one leaves,
keeps every dynamic peer, and re-partitions on a reload."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sipqualify.cluster import Cluster
from sipqualify.service import Service, ServiceOptions

from ..helpers import free_port, wait_for
from .conftest import Redis

STATIC = [f"s{i}" for i in range(40)]


def conf(path: Path, redis: Redis, static: list[str]) -> str:
    lines = ["[general]", f'bind = ["127.0.0.1:{free_port()}"]', "", "[cluster]", f'url = "{redis.url}"',
             'node_id = "svc"', "lease = 2", "", "[peers.phone]", 'host = "dynamic"', 'secret = "s3cret-phone"',
             "qualify = true", ""]
    for n in static:
        lines += [f"[peers.{n}]", 'host = "127.0.0.1"', f"port = {free_port()}", "qualify = false", ""]
    path.write_text("\n".join(lines))
    return str(path)


def loaded(svc: Service) -> set[str]:
    assert svc.engine is not None
    return {p.name for p in svc.engine.peers()}


async def test_service_loads_its_share_and_follows_the_group(redis_server: Redis, tmp_path: Path) -> None:
    path = conf(tmp_path / "sipqualify.toml", redis_server, STATIC)
    svc = Service(ServiceOptions(path, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    other: Cluster | None = None
    try:
        assert loaded(svc) == {*STATIC, "phone"}  # alone in the group: every static peer, and the dynamic one

        async def nothing(gained: list[str], lost: list[str]) -> None:
            pass

        other = Cluster(asyncio.get_running_loop(), time.monotonic, redis_server.url, "sipqualify", "other", 2,
                        nothing)
        await other.start(STATIC, timeout=10)
        await wait_for(lambda: 0 < len(loaded(svc) - {"phone"}) < len(STATIC), timeout=10)
        await wait_for(lambda: (loaded(svc) - {"phone"}) | other.owned == set(STATIC) and
                       not (loaded(svc) & other.owned), timeout=10)
        assert "phone" in loaded(svc)  # a dynamic peer is never handed away

        await other.close()  # it leaves: the share comes back
        other = None
        await wait_for(lambda: loaded(svc) == {*STATIC, "phone"}, timeout=10)

        conf(tmp_path / "sipqualify.toml", redis_server, [*STATIC, "s-new"])
        await svc.reload()
        await wait_for(lambda: "s-new" in loaded(svc), timeout=10)
        assert svc.cluster is not None and svc.cluster.status().owned == len(STATIC) + 1
    finally:
        if other is not None:
            await other.close()
        await svc.close()
