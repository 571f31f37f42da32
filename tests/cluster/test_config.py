"""`[cluster]` in the TOML: read into ServiceConfig; a bad value is an error with its file:line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sipqualify.cluster import open_cluster
from sipqualify.config import check_config, load_config
from sipqualify.model import ConfigError


def test_cluster_options_are_read(tmp_path: Path) -> None:
    f = tmp_path / "sipqualify.toml"
    f.write_text('[cluster]\nurl = "redis://127.0.0.1:6379"\ngroup = "pop1"\nnode_id = "sq-1"\nlease = 6\n')
    svc = load_config(str(f)).service
    assert (svc.cluster_url, svc.cluster_group, svc.node_id, svc.cluster_lease_s) == \
        ("redis://127.0.0.1:6379", "pop1", "sq-1", 6)


def test_cluster_defaults_are_one_node(tmp_path: Path) -> None:
    f = tmp_path / "sipqualify.toml"
    f.write_text("[general]\n")
    svc = load_config(str(f)).service
    assert svc.cluster_url is None and svc.cluster_group == "sipqualify" and svc.cluster_lease_s == 20


def test_bad_cluster_values_are_errors_with_their_line(tmp_path: Path) -> None:
    f = tmp_path / "sipqualify.toml"
    f.write_text('[general]\n\n[cluster]\nurl = "zookeeper://h:2181"\nlease = 1\ncolour = "red"\n')
    msgs = {m.line: m for m in check_config(str(f))}
    assert msgs[4].severity == "error" and "etcd3+http://HOST:PORT" in msgs[4].message
    assert msgs[5].severity == "error" and "lease" in msgs[5].message
    assert msgs[6].severity == "warning" and "colour" in msgs[6].message


def test_vantage_points_are_read_and_need_a_shared_store(tmp_path: Path) -> None:
    f = tmp_path / "sipqualify.toml"
    f.write_text('[cluster]\nurl = "redis://127.0.0.1:1"\nvantage_points = 3\n')
    cfg = load_config(str(f))
    assert cfg.service.cluster_vantage_points == 3
    (w,) = cfg.messages  # said at check time; `run --store-url` may still bring the store
    assert (w.severity, w.line) == ("warning", 3) and "needs a shared PostgreSQL store" in w.message
    f.write_text('[cluster]\nurl = "redis://127.0.0.1:1"\nvantage_points = 3\n[store]\nurl = "postgresql://h/db"\n')
    assert load_config(str(f)).messages == []
    f.write_text('[cluster]\nvantage_points = 2\n')
    (w,) = load_config(str(f)).messages
    assert w.severity == "warning" and "without [cluster] url" in w.message
    f.write_text('[cluster]\nurl = "redis://127.0.0.1:1"\nvantage_points = 3\n')
    f.write_text('[cluster]\nurl = "redis://127.0.0.1:1"\nvantage_points = 0\n')
    (m,) = check_config(str(f))
    assert m.severity == "error" and m.line == 3 and "vantage_points" in m.message

    async def start() -> None:
        await open_cluster(cfg, asyncio.get_running_loop(), lambda: 0.0, lambda gained, lost: asyncio.sleep(0))

    with pytest.raises(ConfigError) as e:  # refused before anything joins the group
        asyncio.run(start())
    assert "vantage_points = 3 needs a shared PostgreSQL store" in str(e.value.messages[0].message)
