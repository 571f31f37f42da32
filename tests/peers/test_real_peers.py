"""Against real peers from Debian: SIPp, Kamailio and sipsak (run for real in CI)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .lab import Daemon, Kamailio, Sipp, free_port, require

pytestmark = pytest.mark.realpeer


def conf(peers: dict[str, dict[str, object]], general: str = "") -> str:
    out = ["[general]", "udpbindaddr=127.0.0.1:SIPPORT", "qualifygap=10", general, ""]
    for name, opts in peers.items():
        out += [f"[{name}]", "type=peer", *(f"{k}={v}" for k, v in opts.items()), ""]
    return "\n".join(out)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[list[object]]:
    started: list[object] = []
    yield started
    for thing in reversed(started):
        thing.stop()  # type: ignore[attr-defined]


def ms(status: str) -> int:
    m = re.search(r"\((\d+) ms\)", status)
    assert m, status
    return int(m.group(1))


def test_sipp_kamailio_404_silent_and_closed(tmp_path: Path, lab: list[object]) -> None:
    """SIPp answering 200 -> OK; SIPp after 700 ms with qualify=500 -> LAGGED (7xx ms);
    SIPp answering 404 -> OK (any final response); Kamailio -> OK; a bound port that never
    answers and a closed port -> UNREACHABLE (ICMP counted, state by chan_sip rules)."""
    p200, pslow, p404, pkam, psilent, pclosed = (free_port() for _ in range(6))
    lab.append(Sipp("uas_200.xml", p200, tmp_path))
    lab.append(Sipp("uas_slow.xml", pslow, tmp_path))
    lab.append(Sipp("uas_404.xml", p404, tmp_path))
    lab.append(Kamailio(pkam, tmp_path))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", psilent))
    d = Daemon(conf({
        "sipp-ok": {"host": "127.0.0.1", "port": p200, "qualify": "yes", "qualifyfreq": 2},
        "sipp-slow": {"host": "127.0.0.1", "port": pslow, "qualify": 500, "qualifyfreq": 2},
        "sipp-404": {"host": "127.0.0.1", "port": p404, "qualify": "yes", "qualifyfreq": 2},
        "kamailio": {"host": "127.0.0.1", "port": pkam, "qualify": "yes", "qualifyfreq": 2},
        "silent": {"host": "127.0.0.1", "port": psilent, "qualify": 500, "qualifyfreq": 2},
        "closed": {"host": "127.0.0.1", "port": pclosed, "qualify": 500, "qualifyfreq": 2},
    }), tmp_path)
    lab.append(d)
    try:
        st = d.wait_status("sipp-ok", lambda s: s.startswith("OK ("))
        assert ms(str(st["status"])) < 100
        st = d.wait_status("sipp-slow", lambda s: s.startswith("LAGGED ("))
        assert 700 <= ms(str(st["status"])) < 900
        d.wait_status("sipp-404", lambda s: s.startswith("OK ("))
        d.wait_status("kamailio", lambda s: s.startswith("OK ("))
        d.wait_status("silent", lambda s: s == "UNREACHABLE")
        d.wait_status("closed", lambda s: s == "UNREACHABLE")
        r = d.cli("status")
        assert r.returncode == 0
        assert '"icmp_errors": 0' not in r.stdout  # the closed port's ICMP was seen and counted
        r = d.cli("peers")
        assert "6 sip peers [Monitored: 4 online, 2 offline Unmonitored: 0 online, 0 offline]" in r.stdout
    finally:
        silent.close()


def test_outage_and_recovery_with_sipp(tmp_path: Path, lab: list[object]) -> None:
    port = free_port()
    sipp = Sipp("uas_200.xml", port, tmp_path)
    lab.append(sipp)
    d = Daemon(conf({"flap": {"host": "127.0.0.1", "port": port, "qualify": 500, "qualifyfreq": 1}}), tmp_path)
    lab.append(d)
    d.wait_status("flap", lambda s: s.startswith("OK ("))
    sipp.stop()
    d.wait_status("flap", lambda s: s == "UNREACHABLE", timeout=10)
    lab.append(Sipp("uas_200.xml", port, tmp_path))
    d.wait_status("flap", lambda s: s.startswith("OK ("), timeout=20)  # next poke: <= 11 s later
    d.stop()
    lab.remove(d)
    log = (tmp_path / "daemon.log").read_text()
    assert "Peer 'flap' is now Reachable. (" in log
    assert "Peer 'flap' is now UNREACHABLE!  Last qualify: " in log


def test_sipsak_against_our_socket(tmp_path: Path, lab: list[object]) -> None:
    """sipsak sends OPTIONS to sipqualify itself: 200 with Allow/Accept/Supported (res_pjsip style)."""
    sipsak = require("sipsak", "sipsak")
    d = Daemon(conf({}), tmp_path)
    lab.append(d)
    r = subprocess.run([sipsak, "-vvv", "-s", f"sip:probe@127.0.0.1:{d.sip_port}"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIP/2.0 200 OK" in r.stdout
    for h in ("Allow: OPTIONS", "Accept: application/sdp", "Supported:"):
        assert h in r.stdout


def test_ping_nagios_codes(tmp_path: Path, lab: list[object]) -> None:
    port = free_port()
    lab.append(Sipp("uas_200.xml", port, tmp_path))
    silent_port = free_port()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", silent_port))

    def ping(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sipqualify.cli", "ping", *args], capture_output=True,
                              text=True, timeout=60)

    try:
        r = ping(f"sip:127.0.0.1:{port}", "-n", "3", "-i", "0.2")
        assert r.returncode == 0, r.stdout
        assert "3 requests sent, 3 answered, 0% loss" in r.stdout
        assert r.stdout.strip().splitlines()[-1].startswith(f"SIP OK - sip:127.0.0.1:{port}: 3/3 answered")
        assert re.search(r"\| rtt=\d+\.\d{3}ms;;;0 loss=0%;;;0;100$", r.stdout.strip())
        r = ping(f"sip:127.0.0.1:{port}", "-w", "0.0001")
        assert r.returncode == 1 and "SIP WARNING" in r.stdout
        r = ping(f"127.0.0.1:{silent_port}", "-t", "1")
        assert r.returncode == 2 and "SIP CRITICAL" in r.stdout
        assert "no answer from" in r.stdout and "2 transmissions" in r.stdout  # at 0 and 0.5 s (Timer E = T1)
        r = ping("sip:no-such-host.invalid")
        assert r.returncode == 3 and "SIP UNKNOWN" in r.stdout
    finally:
        silent.close()


def test_restart_restores_state_and_history(tmp_path: Path, lab: list[object]) -> None:
    port = free_port()
    lab.append(Sipp("uas_200.xml", port, tmp_path))
    text = conf({"a": {"host": "127.0.0.1", "port": port, "qualify": "yes", "qualifyfreq": 60},
                 "dead": {"host": "127.0.0.1", "port": free_port(), "qualify": 500, "qualifyfreq": 60}})
    d = Daemon(text, tmp_path)
    d.wait_status("a", lambda s: s.startswith("OK ("))
    d.wait_status("dead", lambda s: s == "UNREACHABLE")
    d.stop()
    # first pokes only after 5 s: what the new daemon shows at once comes from SQLite
    d2 = Daemon(text.replace("qualifygap=10", "qualifygap=5000\nqualifypeers=0"), tmp_path)
    lab.append(d2)
    t0 = time.monotonic()
    p = d2.peers()
    assert time.monotonic() - t0 < 5
    assert str(p["a"]["status"]).startswith("OK (") and p["dead"]["status"] == "UNREACHABLE"


def test_missing_peer_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With CI set, a missing real peer is a failure, not a skip."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="apt-get install nonexistent-pkg"):
        require("no-such-sip-tool", "nonexistent-pkg")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require("no-such-sip-tool", "nonexistent-pkg")
