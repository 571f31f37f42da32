"""The daemon in-process on loopback: built-in endpoints, HTTP API, CLI contract, reload, restart."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sipqualify.demo import DemoEndpoint
from sipqualify.service import Service, ServiceOptions

from .helpers import api, cli, endpoint, free_port, sip_conf, wait_for


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def test_daemon_states_api_cli_reload_restart(tmp_path: Path, state: Path) -> None:
    ok_t, ok_port = await endpoint(200)
    nf_t, nf_port = await endpoint(404)
    slow_t, slow_port = await endpoint(200, delay=0.7)
    dead_port = free_port()
    sip_port = free_port()
    conf = tmp_path / "sip.conf"
    peers = {
        "ok": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes", "qualifyfreq": 1},
        "nf": {"host": "127.0.0.1", "port": nf_port, "qualify": "yes", "qualifyfreq": 1},
        "slow": {"host": "127.0.0.1", "port": slow_port, "qualify": 500, "qualifyfreq": 1},
        "dead": {"host": "127.0.0.1", "port": dead_port, "qualify": 500, "qualifyfreq": 1},
        "off": {"host": "127.0.0.1", "port": ok_port, "qualify": "no"},
        "phone": {"host": "dynamic", "qualify": "yes", "defaultuser": "1001"},
    }
    sip_conf(conf, sip_port, peers, "qualifygap=10")
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(state)))
    await svc.start()
    try:
        assert svc.engine is not None
        await wait_for(lambda: all(p.state not in ("UNKNOWN",) for p in svc.engine.peers() if p.name != "phone"))
        st = {p.name: p.status for p in svc.engine.peers()}
        assert st["ok"].startswith("OK (") and st["nf"].startswith("OK (")
        assert st["slow"].startswith("LAGGED (7") and st["dead"] == "UNREACHABLE"
        assert st["off"] == "Unmonitored" and st["phone"] == "UNKNOWN"
        assert (state / "api-token").stat().st_mode & 0o777 == 0o600

        # API: auth, detail, history, status
        assert (await api(svc, "GET", "/api/v1/peers", token="wrong"))[0] == 401
        code, body = await api(svc, "GET", "/api/v1/peers/ok")
        assert code == 200 and body["status"].startswith("OK") and body["addr_port"] == ok_port
        assert (await api(svc, "GET", "/api/v1/peers/nope"))[0] == 404
        code, body = await api(svc, "GET", "/readyz")
        assert code == 200 and body["ready"] is True
        code, body = await api(svc, "GET", "/api/v1/status")
        assert code == 200 and body["engine"]["answered"] > 0 and body["engine"]["responses_by_class"]["4xx"] > 0
        await asyncio.to_thread(svc.store.flush)  # type: ignore[union-attr]
        code, body = await api(svc, "GET", "/api/v1/peers/dead/history")
        assert [t["new"] for t in body["transitions"]] == ["UNREACHABLE"]

        # CLI against the running daemon (same --api / --state-dir as the daemon)
        where = ["--api", f"127.0.0.1:{svc.api_addr[1]}", "--state-dir", str(state)]
        rc, out, err = await cli("peers", *where)
        assert rc == 0 and out.splitlines()[0].startswith("Name/username") and "6 sip peers [Monitored:" in out
        assert "phone/1001" in out and "(Unspecified)" in out
        rc, out, _ = await cli("get", "slow", "status", *where)
        assert rc == 0 and out.startswith("LAGGED (7")
        rc, out, _ = await cli("qualify", "dead", *where)
        assert rc == 0 and "no answer" in out
        rc, out, err = await cli("peer", "nope", *where)
        assert (rc, out, err) == (1, "", "Peer nope not found.\n")  # chan_sip's words, sipqualify's exit code
        rc, out, err = await cli("qualify", "nope", *where)
        assert (rc, out, err) == (1, "", "Peer 'nope' not found\n")
        rc, out, _ = await cli("peers", "--json", *where)
        assert {p["name"] for p in json.loads(out)} == set(peers)

        # reload: 'nf' removed, 'new' added, 'ok' keeps its state without a new transition
        n_trans = len((await api(svc, "GET", "/api/v1/peers/ok/history"))[1]["transitions"])
        del peers["nf"]
        peers["new"] = {"host": "127.0.0.1", "port": ok_port, "qualify": "yes"}
        sip_conf(conf, sip_port, peers, "qualifygap=10")
        rc, out, _ = await cli("reload", *where)
        assert (rc, out) == (0, "")  # `sip reload` prints nothing
        assert svc.engine.peer("nf") is None and svc.engine.peer("ok").status.startswith("OK")  # type: ignore[union-attr]
        await wait_for(lambda: svc.engine.peer("new").state == "OK")  # type: ignore[union-attr]
        await asyncio.to_thread(svc.store.flush)  # type: ignore[union-attr]
        assert len((await api(svc, "GET", "/api/v1/peers/ok/history"))[1]["transitions"]) == n_trans

        # a broken config on reload is refused and the running one stays
        conf.write_text("[general]\nqualifygap=-1\n")
        rc, out, err = await cli("reload", *where)
        assert rc == 1 and "qualifygap" in err
        assert svc.engine.peer("ok") is not None
        sip_conf(conf, sip_port, peers, "qualifygap=5000\nqualifypeers=0")  # first poke only after 5 s
    finally:
        await svc.close()

    # restart: state restored from SQLite before the first new poke
    svc2 = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(state)))
    await svc2.start()
    try:
        assert svc2.engine is not None
        st = {p.name: p.status for p in svc2.engine.peers()}
        assert st["dead"] == "UNREACHABLE" and st["slow"].startswith("LAGGED") and st["ok"].startswith("OK")
        assert svc2.model.view(svc2.engine.peer("dead")).last_change is not None  # type: ignore[arg-type]
    finally:
        await svc2.close()
        for t in (ok_t, nf_t, slow_t):
            t.close()


async def test_client_without_daemon_fails_with_one_line(tmp_path: Path) -> None:
    rc, out, err = await cli("peers", "--api", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
                             "--state-dir", str(tmp_path))
    assert rc == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "cannot reach the daemon" in err


async def test_run_rejects_bad_config_with_file_line(tmp_path: Path) -> None:
    conf = tmp_path / "sip.conf"
    conf.write_text("[general]\n[p]\ntype=peer\nhost=127.0.0.1\nport=99999\n")
    rc, out, err = await cli("run", "-c", str(conf), "--state-dir", str(tmp_path / "s"))
    assert rc == 1 and f"{conf}:5: error [port]" in err


async def test_api_refuses_non_loopback_without_token(tmp_path: Path) -> None:
    conf = tmp_path / "sip.conf"
    sip_conf(conf, free_port(), {})
    rc, out, err = await cli("run", "-c", str(conf), "--api", "0.0.0.0:0", "--state-dir", str(tmp_path / "s"))
    assert rc == 1 and "non-loopback" in err


async def test_sighup_reloads(tmp_path: Path) -> None:
    ok_t, ok_port = await endpoint(200)
    conf = tmp_path / "sip.conf"
    sip_port, api_port = free_port(), free_port(socket.SOCK_STREAM)
    sip_conf(conf, sip_port, {"a": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes"}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipqualify.cli", "run", "-c", str(conf), "--api", f"127.0.0.1:{api_port}",
        "--state-dir", str(tmp_path / "s"), stderr=asyncio.subprocess.PIPE)
    where = ["--api", f"127.0.0.1:{api_port}", "--state-dir", str(tmp_path / "s")]
    try:
        for _ in range(100):
            rc, out, _ = await cli("peers", *where)
            if rc == 0 and "OK (" in out:
                break
            await asyncio.sleep(0.1)
        sip_conf(conf, sip_port, {"a": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes"},
                                  "b": {"host": "127.0.0.1", "port": ok_port, "qualify": "yes"}})
        os.kill(proc.pid, signal.SIGHUP)
        for _ in range(100):
            rc, out, _ = await cli("peers", *where)
            if "2 sip peers" in out:
                break
            await asyncio.sleep(0.1)
        assert "2 sip peers" in out
    finally:
        proc.terminate()
        _, err = await proc.communicate()
        ok_t.close()
    assert proc.returncode == 0, err.decode()[-2000:]


async def test_ipv6_peer_from_ipv6_socket(tmp_path: Path) -> None:
    """UDP over IPv6 from its own socket: a peer on ::1 is qualified through [::1]."""
    loop = asyncio.get_running_loop()
    try:
        t, _ = await loop.create_datagram_endpoint(lambda: DemoEndpoint(200, "OK"), local_addr=("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    port = int(t.get_extra_info("sockname")[1])
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f'[general]\nbind = ["127.0.0.1:0", "[::1]:0"]\n[peers.v6]\nhost = "::1"\nport = {port}\n'
                    f'qualify = true\n[peers.v6name]\nhost = "[::1]:{port}"\nqualify = true\n')
    svc = Service(ServiceOptions(str(conf), "127.0.0.1", 0, str(tmp_path / "s")))
    await svc.start()
    try:
        assert svc.engine is not None
        await wait_for(lambda: all(p.state == "OK" for p in svc.engine.peers()))
        code, body = await api(svc, "GET", "/api/v1/peers/v6")
        assert body["addr_ip"] == "::1" and body["status"].startswith("OK (")
    finally:
        await svc.close()
        t.close()


async def test_api_over_tls(tmp_path: Path) -> None:
    """[api] tls_cert/tls_key: the API speaks HTTPS and the CLI (given the same -c) follows."""
    import subprocess as sp

    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    sp.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
            "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
    api_port = free_port(socket.SOCK_STREAM)
    conf = tmp_path / "sipqualify.toml"
    conf.write_text(f'[general]\nbind = ["127.0.0.1:{free_port()}"]\n[api]\nlisten = "127.0.0.1:{api_port}"\n'
                    f'tls_cert = "{cert}"\ntls_key = "{key}"\n[store]\nstate_dir = "{tmp_path / "s"}"\n'
                    f'[peers.a]\nhost = "127.0.0.1"\nport = {free_port()}\nqualify = false\n')
    svc = Service(ServiceOptions(str(conf)))
    await svc.start()
    try:
        rc, out, err = await cli("peers", "-c", str(conf))
        assert rc == 0, err
        assert "1 sip peers" in out
        assert "Secure" in await asyncio.to_thread(tls_login, api_port, svc.token)  # the dashboard's cookie
        plain = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{api_port}/healthz", timeout=5).read())
        raise AssertionError(f"plain HTTP answered: {plain!r}")
    except (urllib.error.URLError, ConnectionResetError, http_client_errors()):
        pass
    finally:
        await svc.close()


def tls_login(port: int, token: str) -> str:
    """Log in to the dashboard over HTTPS (the test's self-signed certificate): the Set-Cookie."""
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("POST", "/login", body=f"token={token}",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = conn.getresponse()
        assert r.status == 303, r.status
        return r.getheader("Set-Cookie") or ""
    finally:
        conn.close()


def http_client_errors() -> type[Exception]:
    import http.client

    return http.client.HTTPException


async def test_demo_shows_every_state_and_a_registered_phone(tmp_path: Path, capsys: Any) -> None:
    """`sipqualify demo` (the Quick start): within a few seconds the table has OK, LAGGED,
    UNREACHABLE, UNKNOWN and Unmonitored, and phone-1002 has registered with digest auth and
    is qualified at the address it registered from."""
    from sipqualify.demo import run_demo

    os.environ["SIPQUALIFY_DEMO_QUIET"] = "1"
    try:
        assert await run_demo(duration=7.5, interval=7.0, state_dir=str(tmp_path / "demo")) == 0
    finally:
        del os.environ["SIPQUALIFY_DEMO_QUIET"]
    out = capsys.readouterr().out
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/login\?once=\d+\.", out), out[:500]  # a one-time link
    table = out.split("--- ")[-1]
    rows = {line.split()[0]: line for line in table.splitlines()[2:] if line.strip() and "sip peers" not in line}
    assert "OK (" in rows["pbx-healthy"] and "LAGGED (" in rows["trunk-slow"], table
    assert "UNREACHABLE" in rows["phone-silent"] and "Unmonitored" in rows["fax-noqualify"], table
    assert "UNKNOWN" in rows["phone-1001/1001"] and "(Unspecified)" in rows["phone-1001/1001"], table
    phone = rows["phone-1002"]
    assert "127.0.0.1" in phone and " D " in phone and "OK (" in phone, table
