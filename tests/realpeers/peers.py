"""Real SIP peers from Debian for the tests: SIPp, Kamailio, sipsak, and `sipqualify run` itself.

Recipes come from shared/reference/testbeds.md §2 and §4. Rules kept here, in one place:

* `require_binary("sipp", "sip-tester")` skips a test when the binary is missing, but makes it
  FAIL when the environment variable `CI` is set: in CI a missing peer is a broken test bed.
* Only 127.0.0.1 is used, and every port is picked free at run time (bind to port 0):
  5060-5090 may be taken by anything else running on the machine.
* Every process is started through a `Lab`, which stops it at teardown: SIGTERM, then SIGKILL
  (to its whole process group, so Kamailio's children go too) after 3 s.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from .. import helpers

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
KAMAILIO_TEMPLATE = HERE / "kamailio.cfg.tmpl"
KAMAILIO_WS_TEMPLATE = HERE / "kamailio-ws.cfg.tmpl"  # a WebSocket peer (kamailio-websocket-modules)
LOOPBACK = "127.0.0.1"
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")  # kamailio lives in /usr/sbin, often not on a user's PATH
TERM_GRACE_S = 3.0


# --------------------------------------------------------------------------- binaries


def require_binary(binary: str, package: str) -> str:
    """Path of `binary`; skip the test if it is missing, or fail it when `CI` is set."""
    path = shutil.which(binary) or shutil.which(binary, path=os.pathsep.join(SBIN_DIRS))
    if path:
        return path
    missing(f"{binary} not installed: apt-get install {package}")


def missing(msg: str) -> NoReturn:
    """Skip the test for want of a program or module; fail it when `CI` is set."""
    if os.environ.get("CI"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


# --------------------------------------------------------------------------- ports


def free_port(*, udp: bool = True, tcp: bool = False) -> int:
    """A port on 127.0.0.1 free for UDP and TCP (tests/helpers.py: below the ephemeral range)."""
    return helpers.free_port()


def free_tcp_port() -> int:
    return free_port(udp=False, tcp=True)


# --------------------------------------------------------------------------- raw SIP


def options_request(port: int, local_port: int, call_id: str | None = None, user: str = "probe") -> bytes:
    call_id = call_id or f"{uuid.uuid4().hex}@realpeers"
    return (
        f"OPTIONS sip:{user}@{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:realpeers@{LOOPBACK}:{local_port}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{user}@{LOOPBACK}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:realpeers@{LOOPBACK}:{local_port}>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def send_options_tcp(port: int, timeout: float = 1.0) -> bytes | None:
    """One OPTIONS over a fresh TCP connection; what comes back first, or None."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
            s.sendall(options_request(port, int(s.getsockname()[1])).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
            return s.recv(65535) or None
    except OSError:
        return None


def send_options(port: int, timeout: float = 1.0) -> bytes | None:
    """Send one OPTIONS from a fresh socket; the first datagram that comes back, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        s.settimeout(timeout)
        s.sendto(options_request(port, int(s.getsockname()[1])), (LOOPBACK, port))
        try:
            return s.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return None


def header_names(message: bytes) -> set[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return {line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:] if ":" in line}


def wait_answering(port: int, what: str, timeout: float = 10.0, per_try: float = 0.3,
                   proc: Proc | None = None, tcp: bool = False) -> None:
    """Wait until something answers an OPTIONS on 127.0.0.1:port (its startup self-test)."""
    t_end = time.monotonic() + timeout
    probe = send_options_tcp if tcp else send_options
    while time.monotonic() < t_end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with rc={proc.returncode}:\n{proc.log_tail()}")
        if probe(port, per_try) is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} does not answer OPTIONS on {LOOPBACK}:{port}" +
                         (f":\n{proc.log_tail()}" if proc else ""))


# --------------------------------------------------------------------------- processes


class Proc:
    """One child process with its output in a log file, started in its own session."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      cwd=cwd, env=dict(env) if env is not None else None, start_new_session=True)
        self.pid = self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_text()[-n:]

    def terminate(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic) for the exit, then SIGKILL the whole group."""
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:  # the group: also catches children the main process left behind (Kamailio workers)
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            pass
        if not self._log.closed:
            self._log.close()

    def stop(self, grace: float = TERM_GRACE_S) -> None:
        self.terminate()
        self.finish(time.monotonic() + grace)


class Lab:
    """Starts processes for one test and stops every one of them at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        self._n = 0

    def spawn(self, name: str, argv: list[str], cwd: Path | None = None,
              env: Mapping[str, str] | None = None) -> Proc:
        self._n += 1
        p = Proc(name, argv, self.tmp / f"{self._n:02d}-{name}.log", cwd=cwd, env=env)
        self.procs.append(p)
        return p

    def stop(self, proc: Proc, grace: float = TERM_GRACE_S) -> None:
        proc.stop(grace)

    def close(self) -> None:
        """SIGTERM everything at once, then SIGKILL whatever is still there after 3 s."""
        for p in reversed(self.procs):
            p.terminate()
        deadline = time.monotonic() + TERM_GRACE_S
        for p in reversed(self.procs):
            p.finish(deadline)
        self.procs.clear()


# --------------------------------------------------------------------------- SIPp


class Sipp:
    """SIPp as a UAS answering OPTIONS with a scenario from scenarios/ (testbeds.md §2 SIPp)."""

    def __init__(self, lab: Lab, scenario: str, port: int | None = None, ready_timeout: float = 10.0,
                 transport: str = "udp") -> None:
        self.lab = lab
        self.binary = require_binary("sipp", "sip-tester")
        self.scenario = SCENARIOS / scenario
        assert self.scenario.is_file(), self.scenario
        self.tcp = transport == "tcp"
        self.port = port or free_port(udp=not self.tcp, tcp=self.tcp)
        self.proc = self._start(ready_timeout)

    def _start(self, ready_timeout: float) -> Proc:
        workdir = self.lab.tmp / f"sipp-{self.port}"
        workdir.mkdir(exist_ok=True)
        argv = [self.binary, "-sf", str(self.scenario), "-i", LOOPBACK, "-p", str(self.port),
                "-cp", str(free_port()),  # its UDP control socket: the default 8888 may be taken
                "-nostdin", "-trace_err", *(["-t", "t1"] if self.tcp else [])]
        proc = self.lab.spawn(f"sipp-{self.scenario.stem}-{self.port}", argv, cwd=workdir)
        slow = "slow" in self.scenario.stem
        wait_answering(self.port, f"SIPp ({self.scenario.name})", ready_timeout, per_try=1.2 if slow else 0.3,
                       proc=proc, tcp=self.tcp)
        return proc

    def stop(self) -> None:
        self.proc.stop()

    def restart(self, ready_timeout: float = 10.0) -> None:
        """Start again on the same port (after stop())."""
        self.proc = self._start(ready_timeout)


# --------------------------------------------------------------------------- Kamailio


def kamailio_module_dir() -> str:
    for d in sorted(glob.glob("/usr/lib/*/kamailio/modules")) + ["/usr/lib/kamailio/modules",
                                                                  "/usr/local/lib64/kamailio/modules"]:
        if os.path.isfile(os.path.join(d, "sl.so")):
            return d + "/"
    raise AssertionError("kamailio is installed but its modules (sl.so) were not found")


def require_kamailio_module(module: str, package: str) -> None:
    """Skip the test when a Kamailio module is missing (fail it when `CI` is set)."""
    require_binary("kamailio", "kamailio")
    if not os.path.isfile(kamailio_module_dir() + module):
        msg = f"kamailio module {module} not installed: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


class Kamailio:
    """Kamailio answering OPTIONS with sl_send_reply("200","OK") (or as `template` says), in the
    foreground (-DD -E)."""

    def __init__(self, lab: Lab, port: int | None = None, template: Path = KAMAILIO_TEMPLATE) -> None:
        self.binary = require_binary("kamailio", "kamailio")
        self.lab = lab
        self.template = template
        self.port = port or free_port()
        self.rundir = lab.tmp / f"kamailio-{self.port}"
        self.rundir.mkdir()
        self.proc = self._start()

    def _config(self) -> dict[str, str]:
        """Template fields beyond @PORT@ and @MPATH@ (KamailioTls adds its listener)."""
        return {"@DISABLE_TCP@": "yes", "@LISTEN@": "", "@MODULES@": ""}

    def _start(self) -> Proc:
        cfg = self.rundir / "kamailio.cfg"
        text = self.template.read_text().replace("@PORT@", str(self.port)).replace("@MPATH@", kamailio_module_dir())
        for key, value in self._config().items():
            text = text.replace(key, value)
        cfg.write_text(text)
        proc = self.lab.spawn(f"kamailio-{self.port}", [self.binary, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M",
                                                        "4", "-Y", str(self.rundir), "-w", str(self.rundir)],
                              cwd=self.rundir)
        wait_answering(self.port, "kamailio", 15.0, proc=proc)
        return proc

    def stop(self) -> None:
        self.proc.stop()


KAMAILIO_TLS_CFG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = {cert}
private_key = {key}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


class KamailioTls(Kamailio):
    """Kamailio with the tls module (package kamailio-tls-modules) answering OPTIONS on
    tls:127.0.0.1:`tls_port` as well as on UDP `port`, with the server certificate `cert` and
    its key `key` (PEM files, e.g. from trustme)."""

    def __init__(self, lab: Lab, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self.tls_port = free_tcp_port()
        super().__init__(lab)

    def _config(self) -> dict[str, str]:
        tls_so = Path(kamailio_module_dir()) / "tls.so"
        if not tls_so.is_file():
            missing(f"{tls_so} missing: apt-get install kamailio-tls-modules")
        tls_cfg = self.rundir / "tls.cfg"
        tls_cfg.write_text(KAMAILIO_TLS_CFG.format(cert=self.cert, key=self.key))
        return {"@DISABLE_TCP@": "no", "@LISTEN@": f"enable_tls=yes\nlisten=tls:{LOOPBACK}:{self.tls_port}",
                "@MODULES@": f'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")'}


# --------------------------------------------------------------------------- tshark


class Tshark:
    """A tshark capture on lo (needs root or capture rights); `sip()` decodes the SIP in it."""

    def __init__(self, lab: Lab, bpf: str, name: str = "capture") -> None:
        self.binary = require_binary("tshark", "tshark")
        self.pcap = lab.tmp / f"{name}.pcap"
        self.proc = lab.spawn(f"tshark-{name}", [self.binary, "-i", "lo", "-f", bpf, "-w", str(self.pcap)])
        t_end = time.monotonic() + 15
        while "Capture started" not in self.proc.log_text() and "Capturing on" not in self.proc.log_text():
            if self.proc.poll() is not None or time.monotonic() > t_end:
                raise AssertionError(f"tshark did not start capturing:\n{self.proc.log_tail()}")
            time.sleep(0.05)
        time.sleep(0.2)  # "Capturing on" is printed just before the capture loop runs

    def stop(self) -> None:
        time.sleep(0.2)  # let the last packets reach the capture
        self.proc.stop()

    def sip(self, *fields: str) -> list[list[str]]:
        """One row per SIP packet with the requested tshark fields (call after stop())."""
        argv = [self.binary, "-r", str(self.pcap), "-Y", "sip", "-T", "fields", "-E", "separator=\t"]
        for f in fields:
            argv += ["-e", f]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        return [line.split("\t") for line in r.stdout.splitlines() if line.strip()]


# --------------------------------------------------------------------------- baresip


# baresip 1.0 (baresip-core) as a headless phone: `baresip -f DIR -t SECONDS` with this as DIR/config
# and its accounts in DIR/accounts; more lines (sip_cafile) may be appended.
BARESIP_CONFIG = """sip_listen\t\t127.0.0.1:{port}
sip_transports\t\t{transports}
audio_player\t\taufile,/dev/null
audio_source\t\tausine,440
audio_alert\t\taufile,/dev/null
module_path\t\t/usr/lib/baresip/modules
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taufile.so
module_app\t\taccount.so
"""


# --------------------------------------------------------------------------- the daemon


def sip_conf(peers: Mapping[str, Mapping[str, object]], general: Mapping[str, object] | None = None) -> str:
    """An Asterisk sip.conf; "@SIPPORT@" in it is replaced by the daemon's SIP port."""
    gen: dict[str, object] = {"udpbindaddr": f"{LOOPBACK}:@SIPPORT@", "qualifygap": 100, "qualifypeers": 1}
    gen.update(general or {})
    lines = ["[general]", *(f"{k}={v}" for k, v in gen.items()), ""]
    for name, opts in peers.items():
        lines += [f"[{name}]", "type=peer", *(f"{k}={v}" for k, v in opts.items()), ""]
    return "\n".join(lines)


def peer(port: int, **opts: object) -> dict[str, object]:
    """sip.conf options of a peer on 127.0.0.1:port."""
    return {"host": LOOPBACK, "port": port, **opts}


_MS = re.compile(r"^(OK|LAGGED) \((\d+) ms\)$")


def status_ms(status: object) -> int:
    m = _MS.match(str(status))
    assert m, f"not a reachable status with a time: {status!r}"
    return int(m.group(2))


class Daemon:
    """`sipqualify run` as a real subprocess, driven through the CLI like an operator would."""

    def __init__(self, lab: Lab, conf_text: str, state_dir: Path | None = None, name: str = "daemon",
                 sip_port: int | None = None, api_port: int | None = None) -> None:
        self.lab = lab
        self.sip_port = sip_port or free_port(udp=True, tcp=True)
        self.api_port = api_port or free_tcp_port()
        self.api = f"{LOOPBACK}:{self.api_port}"
        self.state_dir = state_dir or lab.tmp / "state"
        self.conf = lab.tmp / f"{name}-sip.conf"
        self.conf.write_text(conf_text.replace("@SIPPORT@", str(self.sip_port)))
        self.name = name
        self.proc = self.start()

    def start(self, timeout: float = 10.0) -> Proc:
        proc = self.lab.spawn(self.name, [sys.executable, "-m", "sipqualify.cli", "run", "-c", str(self.conf),
                                          "--api", self.api, "--state-dir", str(self.state_dir)])
        self.proc = proc
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.cli("peers", "--json", timeout=5).returncode == 0:
                return proc
            if proc.poll() is not None:
                raise AssertionError(f"sipqualify run exited with rc={proc.returncode}:\n{proc.log_tail()}")
            time.sleep(0.1)
        raise AssertionError(f"sipqualify run did not answer `peers --json` within {timeout} s:\n{proc.log_tail()}")

    def stop(self, grace: float = 10.0) -> int | None:
        self.proc.stop(grace)
        return self.proc.returncode

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sipqualify.cli", *args, "--api", self.api,
                               "--state-dir", str(self.state_dir)], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def peers(self) -> dict[str, dict[str, Any]]:
        r = self.cli("peers", "--json", timeout=10)
        assert r.returncode == 0, f"peers --json: rc={r.returncode} {r.stderr}"
        return {p["name"]: p for p in json.loads(r.stdout)}

    def peer(self, name: str) -> dict[str, Any]:
        return self.peers()[name]

    def wait_for(self, name: str, pred: Callable[[dict[str, Any]], bool], what: str,
                 timeout: float = 15.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll `peers --json` until `pred(peer)`; the peer's JSON object at that moment."""
        t_end = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while True:
            last = self.peer(name)
            if pred(last):
                return last
            if time.monotonic() > t_end:
                keys = ("status", "state", "lastms", "qualifies", "timeouts", "retransmissions")
                brief = {k: last.get(k) for k in keys}
                raise AssertionError(f"peer {name!r} not {what} within {timeout} s; last: {brief}\n"
                                     f"daemon log:\n{self.proc.log_tail()}")
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon died rc={self.proc.returncode}:\n{self.proc.log_tail()}")
            time.sleep(interval)

    def wait_state(self, name: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_for(name, lambda p: p["state"] == state, state, timeout)

    def log_text(self) -> str:
        return self.proc.log_text()


def sqlite_rows(db: Path, sql: str) -> list[list[str]]:
    """Rows from the sqlite3 command-line shell (separator "|")."""
    binary = require_binary("sqlite3", "sqlite3")
    r = subprocess.run([binary, "-readonly", str(db), sql], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return [line.split("|") for line in r.stdout.splitlines() if line]
