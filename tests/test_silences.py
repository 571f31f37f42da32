"""Silences / maintenance windows (issue 13 item 9): per peer or group, from the API and the CLI,
stored in SQLite (they survive a restart), with an end time; qualifying goes on, webhooks and
verdict events are held back, and what is still reported is marked."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sipqualify.api.http import parse_until
from sipqualify.cli import CliError, until_time
from sipqualify.demo import DemoEndpoint
from sipqualify.qualify.silence import Silence, Silences
from sipqualify.service import Service, ServiceOptions

from .helpers import api, cli, free_port, sip_conf, wait_for


def test_match_by_peer_or_group_the_one_ending_last_and_expiry() -> None:
    s = Silences([Silence(1, "a", None, 100.0), Silence(2, None, "desk", 200.0), Silence(3, "a", None, 150.0)])
    m = s.match("a", "default", 50.0)
    assert m is not None and m.id == 3
    m = s.match("a", "desk", 50.0)
    assert m is not None and m.id == 2
    assert s.match("b", "default", 50.0) is None
    assert s.match("a", "default", 150.0) is None  # ends at 150: not at 150
    assert [x.id for x in s.active(120.0)] == [2, 3]  # 1 expired and dropped
    assert s.remove(2) and not s.remove(2)


def test_until_forms() -> None:
    assert parse_until(1795463111) == 1795463111.0
    assert parse_until("2026-11-23T19:45:11Z") == 1795463111.0
    for bad in ("2026-11-23T19:45:11", "tomorrow", True, None, [1]):
        with pytest.raises(ValueError):
            parse_until(bad)
    assert until_time("90m", 1000.0) == 1000.0 + 5400
    assert until_time("1d", 0.0) == 86400.0
    assert until_time("2026-11-23T19:45:11+00:00", 0.0) == 1795463111.0
    with pytest.raises(CliError):
        until_time("soon", 0.0)


async def post(svc: Service, body: Any, token: str | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token or svc.token}"}) as http:
        async with http.post(f"http://127.0.0.1:{svc.api_addr[1]}/api/v1/silences", json=body) as r:
            return r.status, await r.json()


async def test_silence_holds_back_marks_and_survives_restart(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    port = free_port()
    uas = DemoEndpoint(200, "OK")
    t, _ = await loop.create_datagram_endpoint(lambda: uas, local_addr=("127.0.0.1", port))
    sip = sip_conf(tmp_path / "sip.conf", free_port(), {
        "pbx": {"host": "127.0.0.1", "port": port, "qualify": "100"},
        "other": {"host": "127.0.0.1", "port": port, "qualify": "100"},
    }, "qualifygap=10")
    opts = ServiceOptions(sip, "127.0.0.1", 0, str(tmp_path / "s"))
    svc = Service(opts)
    await svc.start()
    try:
        until = time.time() + 3600
        assert (await post(svc, {"peer": "pbx", "until": until}, token="wrong"))[0] == 401
        assert (await post(svc, {"peer": "nope", "until": until}))[0] == 404
        assert (await post(svc, {"peer": "pbx", "until": time.time() - 1}))[0] == 409
        assert (await post(svc, {"peer": "pbx", "group": "g", "until": until}))[0] == 400
        assert (await post(svc, {"peer": "pbx", "until": "tomorrow"}))[0] == 400
        code, s = await post(svc, {"peer": "pbx", "until": until, "comment": "firmware upgrade"})
        assert code == 201 and (s["peer"], s["group"], s["comment"]) == ("pbx", None, "firmware upgrade")
        code, body = await api(svc, "GET", "/api/v1/silences")
        assert [x["id"] for x in body["silences"]] == [s["id"]]
        code, view = await api(svc, "GET", "/api/v1/peers/pbx")
        assert (view["silenced"], view["silence_id"], view["silenced_until"]) == (True, s["id"], until)
        assert (await api(svc, "GET", "/api/v1/peers/other"))[1]["silenced"] is False

        # qualifying goes on; the transition is stored and marked, the verdict event held back
        await wait_for(lambda: (p := svc.engine.peer("pbx")) is not None and p.state == "OK")  # type: ignore[union-attr]
        held = svc.core.held_back
        uas.status = 0
        assert (await api(svc, "POST", "/api/v1/peers/pbx/qualify"))[0] == 200
        store = svc.store
        assert store is not None
        await wait_for(lambda: any(x.new == "UNREACHABLE" for x in store.transitions("pbx")))
        rec = [x for x in store.transitions("pbx") if x.new == "UNREACHABLE"][-1]
        assert rec.suppressed == "silenced"
        assert svc.core.held_back > held  # the verdict's change to down
        p = svc.engine.peer("pbx")  # type: ignore[union-attr]
        assert p is not None and p.verdict.verdict == "down"  # judged all the same
    finally:
        await svc.close()
    svc = Service(opts)  # a restart keeps it
    await svc.start()
    try:
        code, body = await api(svc, "GET", "/api/v1/silences")
        assert [x["id"] for x in body["silences"]] == [s["id"]]
        assert (await api(svc, "GET", "/api/v1/peers/pbx"))[1]["silenced"] is True
        assert (await api(svc, "DELETE", f"/api/v1/silences/{s['id']}"))[0] == 200
        assert (await api(svc, "DELETE", f"/api/v1/silences/{s['id']}"))[0] == 404
        assert (await api(svc, "GET", "/api/v1/peers/pbx"))[1]["silenced"] is False
    finally:
        await svc.close()
        t.close()


async def test_cli_silence_silences_unsilence_by_group(tmp_path: Path) -> None:
    sip = sip_conf(tmp_path / "sip.conf", free_port(), {"pbx": {"host": "127.0.0.1", "port": free_port()}})
    svc = Service(ServiceOptions(sip, "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    base = ["--api", f"127.0.0.1:{svc.api_addr[1]}", "--state-dir", str(tmp_path / "s")]
    try:
        code, out, err = await cli("silence", "default", "--group", "--until", "2h", "--comment", "night work",
                                   *base)
        assert code == 0, err
        assert out.startswith("silence 1: group default until ")
        code, out, _ = await cli("silences", *base)
        assert code == 0 and "group default" in out and "night work" in out
        assert (await api(svc, "GET", "/api/v1/peers/pbx"))[1]["silenced"] is True  # its group is silenced
        code, out, _ = await cli("peer", "pbx", *base)
        assert "  Silenced     : until " in out
        code, _, _ = await cli("unsilence", "1", *base)
        assert code == 0
        code, out, _ = await cli("silences", "--json", *base)
        assert out.strip() == "[]"
        code, _, err = await cli("unsilence", "1", *base)
        assert code != 0 and "no silence 1" in err
    finally:
        await svc.close()
