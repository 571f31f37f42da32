"""Real SIP peers from Debian for tests: SIPp, Kamailio, sipsak (testbeds.md §2).

`require("sipp", "sip-tester")` skips when the binary is missing, but FAILS when the `CI`
environment variable is set: in CI a missing peer is a broken test bed, not a reason to skip.
Every process started here is stopped (SIGTERM, then SIGKILL) by the fixture that made it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def require(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path:
        return path
    msg = f"{binary} not installed: apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes], timeout: float = 4.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wait_udp_answers(port: int, timeout: float = 10.0) -> None:
    """Wait until something answers an OPTIONS on 127.0.0.1:port."""
    msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKprobe;rport\r\n"
           "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe-{n}@lab\r\n"
           "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    t_end = time.monotonic() + timeout
    n = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < t_end:
            n += 1
            s.sendto(msg.replace("{n}", str(n)).encode(), ("127.0.0.1", port))
            try:
                s.recvfrom(65535)
                return
            except (TimeoutError, ConnectionRefusedError, OSError):
                time.sleep(0.1)
    raise AssertionError(f"nothing answers OPTIONS on 127.0.0.1:{port}")


class Sipp:
    """SIPp as a UAS answering OPTIONS with a scenario from scenarios/."""

    def __init__(self, scenario: str, port: int, tmp: Path) -> None:
        self.port = port
        sipp = require("sipp", "sip-tester")
        self.proc = subprocess.Popen(
            [sipp, "-sf", str(HERE / "scenarios" / scenario), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
             "-trace_err", "-buff_size", "1048576"],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_udp_answers(port)

    def stop(self) -> None:
        stop(self.proc)


KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{rundir}/kamailio_ctl")
request_route {{
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("404", "Not here");
}}
"""


class Kamailio:
    def __init__(self, port: int, tmp: Path) -> None:
        kam = require("kamailio", "kamailio")
        self.port = port
        cfg = tmp / "kamailio.cfg"
        mpath = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules/", "/usr/lib/aarch64-linux-gnu/"
                                  "kamailio/modules/", "/usr/lib/kamailio/modules/") if os.path.isdir(p)),
                     "/usr/lib/x86_64-linux-gnu/kamailio/modules/")
        cfg.write_text(KAMAILIO_CFG.format(port=port, rundir=tmp).replace(
            "/usr/lib/x86_64-linux-gnu/kamailio/modules/", mpath))
        self.log = open(tmp / "kamailio.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([kam, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4", "-Y", str(tmp)],
                                     stdout=self.log, stderr=self.log)
        try:
            wait_udp_answers(port)
        except AssertionError:
            self.stop()
            raise AssertionError("kamailio did not start: " + (tmp / "kamailio.log").read_text()[-2000:]) from None

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


class Daemon:
    """`sipqualify run` as a real subprocess, driven through the CLI like an operator would."""

    def __init__(self, conf_text: str, tmp: Path) -> None:
        self.sip_port = free_port()
        self.api_port = free_port(socket.SOCK_STREAM)
        self.state = tmp / "state"
        self.conf = tmp / "sip.conf"
        self.conf.write_text(conf_text.replace("SIPPORT", str(self.sip_port)))
        self.log = open(tmp / "daemon.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(self.conf), "--api",
             f"127.0.0.1:{self.api_port}", "--state-dir", str(self.state)], stdout=self.log, stderr=self.log)
        t_end = time.monotonic() + 15
        while time.monotonic() < t_end:
            if self.cli("peers").returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("daemon did not start: " + (tmp / "daemon.log").read_text()[-3000:])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sipqualify.cli", *args, "--api", f"127.0.0.1:{self.api_port}",
                               "--state-dir", str(self.state)], capture_output=True, text=True, timeout=90)

    def peers(self) -> dict[str, dict[str, object]]:
        import json

        r = self.cli("peers", "--json")
        assert r.returncode == 0, r.stderr
        return {p["name"]: p for p in json.loads(r.stdout)}

    def wait_status(self, name: str, pred: object, timeout: float = 15.0) -> dict[str, object]:
        t_end = time.monotonic() + timeout
        last: dict[str, object] = {}
        while time.monotonic() < t_end:
            last = self.peers()[name]
            if callable(pred) and pred(str(last["status"])):
                return last
            time.sleep(0.2)
        raise AssertionError(f"peer {name}: status stayed {last.get('status')!r}")

    def stop(self) -> None:
        stop(self.proc, timeout=10)
        self.log.close()
