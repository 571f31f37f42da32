"""The NAT proof (issue 4): a real Linux NAT in network namespaces, a SIPp phone behind it.

    lan (phone, 10.231.1.2) -- nat (MASQUERADE, UDP conntrack timeouts 10 s) -- wan (sipqualify, 10.231.2.2)

The wan side has no route back to the lan: only NAT bindings let packets in. Shown:
1. qualify=yes, qualifyfreq=5: after 60 s with no traffic from the phone, sipqualify's OPTIONS
   still reach it through the NAT and it stays OK;
2. qualify off: after the conntrack timeout, an OPTIONS sent to the binding is dropped at the
   NAT (a forced qualify gets no answer; a monitored peer with a long qualifyfreq becomes
   UNREACHABLE when forced);
3. the phone's mapping changes (new source port): the next REGISTER moves the binding and
   qualify follows it.
Everything (namespaces, veths, rules) is created here and removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..realpeers.peers import require_binary

pytestmark = pytest.mark.realpeer
SCENARIO = Path(__file__).parent / "scenarios" / "phone_register.xml"
TAG = f"sq{os.getpid() % 100000}"
LAN, NAT, WAN = f"{TAG}l", f"{TAG}n", f"{TAG}w"
SERVER = "10.231.2.2"
PHONE = "10.231.1.2"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def netns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def teardown() -> None:
    for ns in (LAN, NAT, WAN):
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    def fail_or_skip(msg: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)

    if os.geteuid() != 0:
        fail_or_skip("the NAT lab needs root (network namespaces, iptables)")
    for binary, pkg in (("ip", "iproute2"), ("iptables", "iptables")):
        if not shutil.which(binary) and not os.path.exists(f"/usr/sbin/{binary}"):
            fail_or_skip(f"{binary} not installed: apt-get install {pkg}")
    require_binary("sipp", "sip-tester")
    teardown()
    try:
        for ns in (LAN, NAT, WAN):
            sh("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as e:
        teardown()
        fail_or_skip(f"cannot create network namespaces here: {e.stderr.strip()}")
    try:
        sh("ip", "link", "add", f"{TAG}a", "type", "veth", "peer", "name", f"{TAG}b")
        sh("ip", "link", "set", f"{TAG}a", "netns", LAN)
        sh("ip", "link", "set", f"{TAG}b", "netns", NAT)
        sh("ip", "link", "add", f"{TAG}c", "type", "veth", "peer", "name", f"{TAG}d")
        sh("ip", "link", "set", f"{TAG}c", "netns", WAN)
        sh("ip", "link", "set", f"{TAG}d", "netns", NAT)
        netns(LAN, "ip", "addr", "add", f"{PHONE}/24", "dev", f"{TAG}a")
        netns(NAT, "ip", "addr", "add", "10.231.1.1/24", "dev", f"{TAG}b")
        netns(NAT, "ip", "addr", "add", "10.231.2.1/24", "dev", f"{TAG}d")
        netns(WAN, "ip", "addr", "add", f"{SERVER}/24", "dev", f"{TAG}c")
        for ns, dev in ((LAN, f"{TAG}a"), (NAT, f"{TAG}b"), (NAT, f"{TAG}d"), (WAN, f"{TAG}c")):
            netns(ns, "ip", "link", "set", dev, "up")
        for ns in (LAN, NAT, WAN):
            netns(ns, "ip", "link", "set", "lo", "up")
        netns(LAN, "ip", "route", "add", "default", "via", "10.231.1.1")  # wan has no route back
        netns(NAT, "sysctl", "-w", "net.ipv4.ip_forward=1")
        netns(NAT, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", f"{TAG}d", "-j", "MASQUERADE")
        netns(NAT, "sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout=10")
        netns(NAT, "sysctl", "-w", "net.netfilter.nf_conntrack_udp_timeout_stream=10")
        assert netns(WAN, "ping", "-c", "1", "-W", "1", PHONE, check=False).returncode != 0  # no way in
        yield tmp_path
    finally:
        teardown()


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        conf = tmp / "sip.conf"
        conf.write_text(f"""[general]
udpbindaddr={SERVER}:5060
qualifygap=10
[phone](!)
type=friend
host=dynamic
secret=s3cret
nat=force_rport
[1001](phone)
qualify=yes
qualifyfreq=5
[1002](phone)
qualify=no
[1003](phone)
qualify=yes
qualifyfreq=3600
""")
        self.log = open(tmp / "daemon.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["ip", "netns", "exec", WAN, sys.executable, "-m", "sipqualify.cli", "run", "-c",
                                      str(conf), "--api", "127.0.0.1:7060", "--state-dir", str(self.state)],
                                     stdout=self.log, stderr=self.log)
        for _ in range(100):
            if self.cli("peers").returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError((tmp / "daemon.log").read_text()[-2000:])

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return netns(WAN, sys.executable, "-m", "sipqualify.cli", *args, "--api", "127.0.0.1:7060", "--state-dir",
                     str(self.state), check=False)

    def peer(self, name: str) -> dict[str, object]:
        r = self.cli("peer", name, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]

    def wait(self, name: str, pred: object, timeout: float = 20) -> dict[str, object]:
        t_end = time.monotonic() + timeout
        v: dict[str, object] = {}
        while time.monotonic() < t_end:
            v = self.peer(name)
            if callable(pred) and pred(v):
                return v
            time.sleep(0.3)
        raise AssertionError(f"{name}: {v}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def phone(user: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    sipp = require_binary("sipp", "sip-tester")
    work = tmp / f"sipp-{user}-{port}"
    work.mkdir(exist_ok=True)
    scenario = work / "phone.xml"  # SIPp's [authentication] takes no keyword: one file per user
    scenario.write_text(SCENARIO.read_text().replace("username=1001", f"username={user}"))
    return subprocess.Popen(["ip", "netns", "exec", LAN, sipp, "-sf", str(scenario), "-s", user, f"{SERVER}:5060",
                             "-i", PHONE, "-p", str(port), "-m", "1", "-aa", "-nostdin", "-trace_err",
                             "-cp", str(port + 1000)], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_nat_bindings_kept_open_by_qualify(lab: Path) -> None:
    d = Daemon(lab)
    phones: list[subprocess.Popen[bytes]] = []
    try:
        phones += [phone("1001", 5070, lab), phone("1002", 5071, lab), phone("1003", 5073, lab)]
        for name in ("1001", "1003"):
            v = d.wait(name, lambda v: v["status"] != "UNKNOWN" and v["addr_ip"] is not None)
            assert v["addr_ip"] == "10.231.2.1"  # the NAT's address: the received address, not the Contact
        d.wait("1002", lambda v: v["addr_ip"] == "10.231.2.1")
        first = d.peer("1001")
        assert str(first["status"]).startswith("OK (")

        # 2. qualify off / long qualifyfreq: after the 10 s conntrack timeout the NAT drops our OPTIONS
        time.sleep(15)
        r = d.cli("qualify", "1002")
        assert r.returncode == 0 and "no answer" in r.stdout, r.stdout
        r = d.cli("qualify", "1003")
        assert "no answer" in r.stdout and d.peer("1003")["status"] == "UNREACHABLE"

        # 1. qualifyfreq=5 < 10 s: 60 s later 1001 is still OK, every OPTIONS answered through the NAT
        time.sleep(45)
        later = d.peer("1001")
        assert str(later["status"]).startswith("OK (")
        assert int(later["qualifies"]) >= int(first["qualifies"]) + 10  # type: ignore[call-overload]
        assert later["timeouts"] == first["timeouts"] == 0

        # 3. the phone's mapping changes: a new source port; the next REGISTER moves the binding
        phones[0].terminate()
        phones[0].wait(10)
        phones.append(phone("1001", 5075, lab))
        moved = d.wait("1001", lambda v: v["addr_port"] == 5075 and str(v["status"]).startswith("OK ("))
        assert moved["addr_ip"] == "10.231.2.1"
        n = int(moved["qualifies"])  # type: ignore[call-overload]
        d.wait("1001", lambda v: int(v["qualifies"]) >= n + 2 and v["timeouts"] == 0)  # type: ignore[call-overload]
    finally:
        for p in phones:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        d.stop()
