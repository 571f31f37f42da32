"""`sipqualify run` against real SIP peers from Debian: SIPp, Kamailio, sipsak (testbeds.md §2).

Expected behaviour is chan_sip's, as observed in shared/reference/asterisk-observed.md §0:
any final response means reachable (§0.4), RTT > maxms is LAGGED, no answer within 2 x maxms is
UNREACHABLE with ICMP ignored (§0.2), an unreachable peer is re-poked 2 x maxms + 10 s after its
previous poke (§0.3).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from . import peers as peers_module
from .peers import (
    BARESIP_CONFIG,
    LOOPBACK,
    Daemon,
    Kamailio,
    Lab,
    Sipp,
    Tshark,
    free_port,
    header_names,
    options_request,
    peer,
    require_binary,
    sip_conf,
    sqlite_rows,
    status_ms,
)

realpeer = pytest.mark.realpeer
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port on 127.0.0.1 that is bound (so no ICMP) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        yield int(s.getsockname()[1])


def log_times(log: str, needle: str) -> list[float]:
    """Timestamps (epoch s) of the daemon log lines containing `needle` ("[2026-11-24 01:09:18,712] ...")."""
    out = []
    for line in log.splitlines():
        m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]", line)
        if m and needle in line:
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp() + int(m.group(2)) / 1000)
    return out


# --------------------------------------------------------------------------- 1, 2, 5: SIPp


@realpeer
def test_sipp_answering_200_is_ok(lab: Lab) -> None:
    sipp = Sipp(lab, "uas_200.xml")
    d = Daemon(lab, sip_conf({"ok": peer(sipp.port, qualify="yes", qualifyfreq=5)}))
    p = d.wait_state("ok", "OK")
    assert re.fullmatch(r"OK \(\d+ ms\)", p["status"]), p["status"]
    assert status_ms(p["status"]) < 100 and p["lastms"] == status_ms(p["status"])
    assert p["maxms"] == 2000  # qualify=yes
    assert (p["addr_ip"], p["addr_port"]) == (LOOPBACK, sipp.port)
    assert p["qualifies"] >= 1 and p["timeouts"] == 0 and p["retransmissions"] == 0
    assert p["rtt_ms"] is not None and 0 < p["rtt_ms"] < 100
    table = d.cli("peers")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("ok "))
    assert f"{LOOPBACK}" in row and str(sipp.port) in row and p["status"] in row
    assert "1 sip peers [Monitored: 1 online, 0 offline Unmonitored: 0 online, 0 offline]" in table.stdout
    assert "Peer 'ok' is now Reachable. (" in d.log_text()


@realpeer
def test_sipp_answering_after_700ms_is_lagged(lab: Lab) -> None:
    sipp = Sipp(lab, "uas_slow.xml")
    d = Daemon(lab, sip_conf({"slow": peer(sipp.port, qualify=500, qualifyfreq=2)}))
    p = d.wait_state("slow", "LAGGED")
    assert re.fullmatch(r"LAGGED \(7\d\d ms\)", p["status"]), p["status"]
    assert 700 <= p["lastms"] < 900 and p["maxms"] == 500
    assert p["retransmissions"] == 0  # the flat 1000 ms retransmit timer has not fired at +700 ms (§0.1)
    assert re.search(r"Peer 'slow' is now Lagged\. \(7\d\dms / 500ms\)", d.log_text())


@realpeer
def test_sipp_answering_404_is_still_ok(lab: Lab) -> None:
    """Any final response is a sign of life: 404 Not Found -> OK (N ms) (§0.4)."""
    sipp = Sipp(lab, "uas_404.xml")
    d = Daemon(lab, sip_conf({"notfound": peer(sipp.port, qualify="yes", qualifyfreq=5)}))
    p = d.wait_state("notfound", "OK")
    assert status_ms(p["status"]) < 100 and p["timeouts"] == 0


# --------------------------------------------------------------------------- 3: Kamailio


@realpeer
def test_kamailio_sl_send_reply_is_ok(lab: Lab) -> None:
    kam = Kamailio(lab)
    d = Daemon(lab, sip_conf({"kamailio": peer(kam.port, qualify="yes", qualifyfreq=5)}))
    p = d.wait_state("kamailio", "OK")
    assert status_ms(p["status"]) < 100
    assert "OPTIONS from 127.0.0.1:" in kam.proc.log_text()  # it really was Kamailio that answered


# --------------------------------------------------------------------------- 4: silent and closed ports


@realpeer
def test_silent_and_closed_ports_are_unreachable(lab: Lab, silent_port: int) -> None:
    """No answer within 2 x maxms -> UNREACHABLE; the ICMP port-unreachable of a closed port does not
    shorten that (chan_sip ignores it): both take ~1 s with qualify=500 and one retransmission (§0.2)."""
    closed_port = free_port()
    d = Daemon(lab, sip_conf({
        "silent": peer(silent_port, qualify=500, qualifyfreq=2),
        "closed": peer(closed_port, qualify=500, qualifyfreq=2),
    }))
    for name in ("silent", "closed"):
        p = d.wait_state(name, "UNREACHABLE", timeout=10)
        assert p["status"] == "UNREACHABLE" and p["lastms"] == -1, p
        assert p["timeouts"] >= 1
        assert p["retransmissions"] >= 1, f"{name}: given up without the +1000 ms retransmission: {p}"
    log = d.log_text()
    started = log_times(log, "sipqualify started")
    assert started, log
    for name in ("silent", "closed"):
        down = log_times(log, f"Peer '{name}' is now UNREACHABLE!")
        assert down, log
        # first poke at start (+ <= 100 ms stagger); given up at +2 x 500 ms; never early on ICMP
        assert 0.9 <= down[0] - started[0] <= 3.0, (name, down[0] - started[0], log)
    table = d.cli("peers")
    assert "2 sip peers [Monitored: 0 online, 2 offline Unmonitored: 0 online, 0 offline]" in table.stdout


# --------------------------------------------------------------------------- transport=tcp: SIPp over TCP


@realpeer
def test_tcp_peer_is_qualified_over_one_kept_connection(lab: Lab) -> None:
    """chan_sip qualifies a `transport=tcp` peer over TCP: one connection, kept for the next
    pokes, no retransmissions; the peer stopping makes it UNREACHABLE (no answer, then the
    connection refused), and it is OK again once it listens again."""
    sipp = Sipp(lab, "uas_200.xml", transport="tcp")
    d = Daemon(lab, sip_conf({"tcp-trunk": peer(sipp.port, qualify=500, qualifyfreq=1, transport="tcp")},
                             {"tcpenable": "yes"}))
    p = d.wait_for("tcp-trunk", lambda p: p["state"] == "OK" and p["qualifies"] >= 4, "OK after 4 qualifies")
    assert p["retransmissions"] == 0 and p["timeouts"] == 0, p
    st = json.loads(d.cli("status").stdout)["tcp"]
    assert st["connects"] == 1 and st["connect_errors"] == 0, st  # one connection, kept
    assert st["messages_out"] >= 4 and st["messages_in"] >= 4, st
    sipp.stop()
    p = d.wait_state("tcp-trunk", "UNREACHABLE", timeout=10)
    assert p["retransmissions"] == 0, p
    d.wait_for("tcp-trunk", lambda p: json.loads(d.cli("status").stdout)["tcp"]["connect_errors"] >= 1,
               "a refused reconnection counted")
    sipp.restart()
    d.wait_state("tcp-trunk", "OK", timeout=20)
    assert "Peer 'tcp-trunk' is now Reachable." in d.log_text()


# --------------------------------------------------------------------------- baresip registering


@realpeer
def test_baresip_registers_with_digest_and_is_qualified(lab: Lab) -> None:
    """A real phone stack (baresip 1.0 / libre) against the registrar: digest auth with qop,
    the binding at its address, qualified OK (baresip answers OPTIONS), and its REGISTER with
    Expires 0 when it stops makes the peer UNKNOWN again. (libre gives up on a 401 that also
    offers SHA-256, which is why MD5 alone is challenged by default, as chan_sip does.)"""
    baresip = require_binary("baresip", "baresip-core")
    phone_port = free_port()
    cfg = lab.tmp / "baresip"
    cfg.mkdir()
    (cfg / "config").write_text(BARESIP_CONFIG.format(port=phone_port, transports="udp"))
    d = Daemon(lab, sip_conf({"1001": {"type": "friend", "host": "dynamic", "secret": "s3cret", "qualify": "yes",
                                      "qualifyfreq": 2}}, {"realm": "pbx.test"}))
    (cfg / "accounts").write_text(f"<sip:1001@{LOOPBACK}:{d.sip_port}>;auth_pass=s3cret;regint=60\n")
    phone = lab.spawn("baresip", [baresip, "-f", str(cfg), "-t", "8"])
    p = d.wait_for("1001", lambda p: p["state"] == "OK" and p["qualifies"] >= 2, "registered and qualified twice")
    assert (p["addr_ip"], p["addr_port"]) == (LOOPBACK, phone_port), p
    assert p["useragent"].startswith("baresip"), p
    assert p["regcontact"].startswith("sip:1001"), p
    assert "Registered SIP '1001' at" in d.log_text()
    table = d.cli("registrations")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("1001 "))
    assert f"{LOOPBACK}:{phone_port}" in row and "udp" in row and "baresip" in row, table.stdout
    assert table.stdout.rstrip().endswith("1 registration"), table.stdout
    (reg,) = json.loads(d.cli("registrations", "--json").stdout)
    assert (reg["peer"], reg["port"], reg["transport"]) == ("1001", phone_port, "udp") and 0 < reg["expires_in"] <= 60
    phone.finish(time.monotonic() + 15)  # -t 8: baresip quits and unregisters (REGISTER, Expires: 0)
    d.wait_for("1001", lambda p: p["addr_ip"] in (None, "") and p["state"] == "UNKNOWN", "unregistered", timeout=10)
    assert "Unregistered SIP '1001'" in d.log_text()
    assert d.cli("registrations").stdout.strip().endswith("0 registrations")


PJSIP_CONF = """[udp]
type = transport
protocol = udp
bind = 127.0.0.1:@SIPPORT@
[1001-auth]
type = auth
auth_type = userpass
username = 1001
password = s3cret
[1001]
type = aor
max_contacts = 1
remove_existing = yes
qualify_frequency = 2
[1001]
type = endpoint
aors = 1001
auth = 1001-auth
"""


@realpeer
def test_baresip_registers_to_a_pjsip_aor_and_is_qualified(lab: Lab) -> None:
    """baresip against a pjsip.conf endpoint: digest from the endpoint's auth section, the
    contact `1001;@<md5(uri)>` qualified with the AOR's settings at baresip's address, listed by
    `pjsip show contacts` as Asterisk lists it, removed by baresip's unregister with res_pjsip's
    log lines."""
    baresip = require_binary("baresip", "baresip-core")
    phone_port = free_port()
    cfg = lab.tmp / "baresip"
    cfg.mkdir()
    (cfg / "config").write_text(BARESIP_CONFIG.format(port=phone_port, transports="udp"))
    d = Daemon(lab, PJSIP_CONF, name="pjsip")
    (cfg / "accounts").write_text(f"<sip:1001@{LOOPBACK}:{d.sip_port}>;auth_pass=s3cret;regint=60\n")
    phone = lab.spawn("baresip", [baresip, "-f", str(cfg), "-t", "10"])
    t_end = time.monotonic() + 15
    regs: list[dict[str, object]] = []
    while not regs and time.monotonic() < t_end:
        regs = json.loads(d.cli("registrations", "--json").stdout)
        time.sleep(0.1)
    assert len(regs) == 1, f"baresip did not register:\n{d.log_text()}\n{phone.log_tail()}"
    cid, uri = str(regs[0]["peer"]), str(regs[0]["contact"])
    assert cid.startswith("1001;@") and uri.startswith("sip:1001") and regs[0]["port"] == phone_port, regs
    p = d.wait_for(cid, lambda p: p["state"] == "OK" and p["qualifies"] >= 2, "qualified twice")
    assert (p["addr_ip"], p["addr_port"]) == (LOOPBACK, phone_port), p
    assert f"Added contact '{uri}' to AOR '1001' with expiration of 60 seconds" in d.log_text()
    assert re.search(rf"Contact 1001/{re.escape(uri)} is now Reachable\.  RTT: \d+\.\d{{3}} msec", d.log_text())
    show = d.cli("pjsip", "show", "contacts")
    assert show.returncode == 0, show.stderr
    row = next(line for line in show.stdout.splitlines() if line.startswith("  Contact:  1001/"))
    assert row.startswith(f"  Contact:  {'1001/' + uri:<46} ") and " Avail   " in row, show.stdout
    assert show.stdout.endswith("\nObjects found: 1\n"), show.stdout
    phone.finish(time.monotonic() + 15)  # -t 10: baresip quits and unregisters (REGISTER, Expires: 0)
    t_end = time.monotonic() + 10
    while cid in d.peers() and time.monotonic() < t_end:
        time.sleep(0.1)
    assert cid not in d.peers(), d.log_text()
    assert f"Removed contact '{uri}' from AOR '1001' due to request" in d.log_text()
    assert f"Contact 1001/{uri} has been deleted" in d.log_text()


# --------------------------------------------------------------------------- 6: sipsak against the daemon


@realpeer
def test_sipsak_options_to_the_daemon_gets_200(lab: Lab) -> None:
    sipsak = require_binary("sipsak", "sipsak")
    d = Daemon(lab, sip_conf({}))
    r = subprocess.run([sipsak, "-vvv", "-s", f"sip:probe@{LOOPBACK}:{d.sip_port}"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SIP/2.0 200 OK" in r.stdout
    # -vvv prints the request, then "message received", "received from: ...", and the reply itself
    m = re.search(r"^(SIP/2\.0 200 OK\n.*?)\n\n", r.stdout, re.M | re.S)
    assert m, r.stdout
    reply = m.group(1)
    for h in ("allow", "accept", "supported"):
        assert h in header_names(reply.replace("\n", "\r\n").encode()), f"no {h} header in sipsak's capture:\n{reply}"
    assert re.search(r"^Allow:.*\bOPTIONS\b", reply, re.M | re.I), reply

    # cross-check with our own OPTIONS on a raw socket: the reply matches the request
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(3)
        req = options_request(d.sip_port, int(s.getsockname()[1]), call_id="cross-check-1@realpeers")
        s.sendto(req, (LOOPBACK, d.sip_port))
        msg, src = s.recvfrom(65535)
    assert src == (LOOPBACK, d.sip_port)  # answered from the SIP socket it listens on
    head = msg.decode("utf-8", "replace").split("\r\n\r\n", 1)[0]
    assert head.startswith("SIP/2.0 200 OK\r\n"), head
    assert {"via", "from", "to", "call-id", "cseq", "allow", "accept", "supported", "content-length"} \
        <= header_names(msg), head
    branch = re.search(rb"branch=([^;\r\n]+)", req)
    assert branch and branch.group(1).decode() in head
    assert re.search(r"^Call-ID: cross-check-1@realpeers\r?$", head, re.M | re.I), head
    assert re.search(r"^CSeq: 1 OPTIONS\r?$", head, re.M | re.I), head
    assert re.search(r"^To: .*;tag=", head, re.M | re.I), head


# --------------------------------------------------------------------------- 7: sipqualify ping


def ping(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sipqualify.cli", "ping", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def last_line(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {r.stderr}"
    return lines[-1]


@realpeer
def test_ping_nagios_codes(lab: Lab, silent_port: int) -> None:
    sipp = Sipp(lab, "uas_200.xml")
    uri = f"sip:{LOOPBACK}:{sipp.port}"

    r = ping(uri, "--count", "3", "--interval", "0.2")
    assert r.returncode == 0, r.stdout + r.stderr
    line = last_line(r)
    assert line.startswith("SIP OK - "), line
    assert re.search(r"\| rtt=\d+\.\d+ms;", line), line

    r = ping(uri, "-w", "0.0001")
    assert r.returncode == 1, r.stdout + r.stderr
    assert last_line(r).startswith("SIP WARNING - "), r.stdout

    t0 = time.monotonic()
    r = ping(f"sip:{LOOPBACK}:{silent_port}", "--timeout", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert last_line(r).startswith("SIP CRITICAL - "), r.stdout
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- 8: outage


@realpeer
def test_outage_unreachable_then_ok_again(lab: Lab) -> None:
    sipp = Sipp(lab, "uas_200.xml")
    d = Daemon(lab, sip_conf({"flap": peer(sipp.port, qualify=500, qualifyfreq=2)}))
    d.wait_state("flap", "OK")
    sipp.proc.stop(grace=0.5)  # "the UAS dies": SIGTERM, SIGKILL after 0.5 s
    # next poke <= 2 s after the last answer, given up 1 s later
    p = d.wait_state("flap", "UNREACHABLE", timeout=8)
    assert p["lastms"] == -1
    sipp.restart()  # same port
    # unreachable peers are re-poked 2 x maxms + 10 s = 11 s after the failed poke (§0.3)
    p = d.wait_state("flap", "OK", timeout=16)
    assert status_ms(p["status"]) < 100
    log = d.log_text()
    assert "Peer 'flap' is now UNREACHABLE!  Last qualify: " in log
    assert len(log_times(log, "Peer 'flap' is now Reachable. (")) == 2, log


# --------------------------------------------------------------------------- 9: restart restores state


@realpeer
def test_restart_restores_state_from_sqlite(lab: Lab) -> None:
    sipp = Sipp(lab, "uas_200.xml")
    closed_port = free_port()
    conf = sip_conf({
        "alive": peer(sipp.port, qualify=3000, qualifyfreq=60),
        "dead": peer(closed_port, qualify=500, qualifyfreq=60),
    })
    d = Daemon(lab, conf)
    before = d.wait_state("alive", "OK")
    d.wait_state("dead", "UNREACHABLE", timeout=10)
    rc = d.stop()
    assert rc in (0, -signal.SIGTERM), f"sipqualify run exited with rc={rc} on SIGTERM:\n{d.proc.log_tail()}"

    db = d.state_dir / "sipqualify.sqlite"
    assert db.is_file(), sorted(os.listdir(d.state_dir))
    rows = sqlite_rows(db, "SELECT peer, old, new FROM transitions ORDER BY id")
    assert any(r[0] == "alive" and "OK" in r[2].upper() for r in rows), rows
    assert any(r[0] == "dead" and "UNREACHABLE" in r[2].upper() for r in rows), rows

    # The peer dies while the daemon is down. With qualify=3000 the first poke after the restart gives up
    # only after 6 s, so until then the status can only come from the state the first run stored.
    sipp.stop()
    t0 = time.monotonic()
    d.start()
    now = d.peers()
    assert time.monotonic() - t0 < 5.5, "too slow to tell restored state from the first poke's result"
    assert now["alive"]["status"] == before["status"], (now["alive"], before)
    assert now["alive"]["lastms"] == before["lastms"]
    assert now["dead"]["status"] == "UNREACHABLE"
    # and the restored peer really is qualified again by the new run
    d.wait_state("alive", "UNREACHABLE", timeout=12)


# --------------------------------------------------------------------------- 10: on the wire (tshark)


@realpeer
def test_wire_options_and_flat_1000ms_retransmissions(lab: Lab, silent_port: int) -> None:
    """What a silent peer sees with qualify=yes: the first OPTIONS and 4 byte-identical retransmissions
    1000 ms apart (§0.1), Request-URI without the port (§0.6); then UNREACHABLE at +4 s (§0.2)."""
    sipp = Sipp(lab, "uas_200.xml")
    cap = Tshark(lab, f"udp and host {LOOPBACK} and (port {silent_port} or port {sipp.port})")
    d = Daemon(lab, sip_conf({"dead": peer(silent_port, qualify="yes", qualifyfreq=60),
                              "alive": peer(sipp.port, qualify="yes", qualifyfreq=60)}))
    d.wait_state("alive", "OK")
    d.wait_state("dead", "UNREACHABLE", timeout=10)
    cap.stop()
    rows = cap.sip("frame.time_epoch", "udp.srcport", "udp.dstport", "sip.Method", "sip.r-uri", "sip.Call-ID",
                   "sip.CSeq", "sip.Status-Code", "udp.payload")
    to_dead = [r for r in rows if r[2] == str(silent_port)]
    assert len(to_dead) == 5, rows
    assert all(r[3] == "OPTIONS" and r[4] == f"sip:{LOOPBACK}" for r in to_dead), to_dead
    assert len({r[8] for r in to_dead}) == 1, "retransmissions are not byte-identical"
    assert all(r[1] == str(d.sip_port) for r in to_dead), "not sent from the daemon's SIP socket"
    t = [float(r[0]) for r in to_dead]
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert all(0.9 <= g <= 1.15 for g in gaps), gaps
    alive = [r for r in rows if str(sipp.port) in (r[1], r[2])]
    assert [r[3] or r[7] for r in alive][:2] == ["OPTIONS", "200"], alive
    assert alive[0][4] == f"sip:{LOOPBACK}" and alive[0][5] == alive[1][5], alive


# --------------------------------------------------------------------------- the CI rule itself


def test_missing_binary_skips_locally_but_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(peers_module, "SBIN_DIRS", (str(tmp_path),))
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"^sipp not installed: apt-get install sip-tester$"):
        require_binary("sipp", "sip-tester")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="sipp not installed"):
        require_binary("sipp", "sip-tester")
    fake = tmp_path / "sipp"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert require_binary("sipp", "sip-tester") == str(fake)


def test_missing_sipp_fails_a_real_test_under_ci(tmp_path: Path) -> None:
    """End to end: pytest itself, with CI=1 and no sipp on PATH, reports a failure (not a skip)."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    env.update(PATH=str(empty), CI="1")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "bt"),
            "tests/realpeers/test_real_peers.py::test_sipp_answering_200_is_ok"]
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed" in r.stdout and "sipp not installed: apt-get install sip-tester" in r.stdout, r.stdout
    env.pop("CI")
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout + r.stderr
