"""Helpers shared by the benchmarks (run as `python bench/NAME.py`: this directory is on sys.path)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process, from /proc/PID/stat (the anchors' method)."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, sys) CPU seconds of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def tree_cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process and all its descendants alive now (Kamailio forks its workers)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in tree:
                tree.add(child)
                todo.append(child)
    total = 0.0
    for p in tree:
        try:
            total += cpu_seconds(p)
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


# The reference SIP server of the benches (anchors-performance.md): answers OPTIONS with 200 from
# the stateless reply module, anything else 404 (fork=no: one process does everything).
KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
maxbuffer={maxbuffer}
fork={fork}
children={children}
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "textops.so"
loadmodule "maxfwd.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unix:{rundir}/kamailio_ctl")
request_route {{
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("404", "Not here");
}}
"""


# The responder's receive buffer: Kamailio probes up to `maxbuffer` (its default, 256 KiB, gives
# a 512 KiB buffer: about 400 requests, 25 ms at 16,700/s), raised to what our socket has, so
# that a responder descheduled for a moment on a busy 2-core machine does not drop requests
# (anchors-performance.md: "checked never to be the bottleneck").
RESPONDER_BUFFER = 4 * 1024 * 1024
KAMAILIO_DEFAULT_BUFFER = 262144


def kamailio_cfg(port: int, rundir: Path, fork: str = "yes", children: int = 2,
                 maxbuffer: int = RESPONDER_BUFFER) -> str:
    return KAMAILIO_CFG.format(port=port, rundir=rundir, fork=fork, children=children, maxbuffer=maxbuffer)


def kamailio_binary() -> str | None:
    kam = shutil.which("kamailio") or "/usr/sbin/kamailio"
    return kam if os.path.exists(kam) else None


def missing_kamailio(bench: str) -> int:
    """What a bench returns when Kamailio (the reference responder) is not installed: skipped,
    except under CI, where a missing peer is a failure."""
    print(f"{bench}: kamailio not installed (apt-get install kamailio); skipped")
    return 0 if not os.environ.get("CI") else 1


def stop(proc: subprocess.Popen[bytes], grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaped either way."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_kamailio(kam: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """The reference responder (KAMAILIO_CFG, two children) on 127.0.0.1:`port`, logging to tmp/kam.log."""
    (tmp / "kamailio.cfg").write_text(kamailio_cfg(port, tmp))
    return subprocess.Popen([kam, "-f", str(tmp / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "kam.log", "wb"))


def peers_conf(path: Path, sip_port: int, kport: int, peers: int, freq: int, *, fromuser: bool = False) -> Path:
    """A sip.conf of `peers` peers all at Kamailio's `kport`, each `qualifyfreq=freq`, the start-up
    stagger spread over 1 s (`fromuser`: each peer its own From user, to match the wire)."""
    lines = ["[general]", f"udpbindaddr=127.0.0.1:{sip_port}", "qualifygap=100",
             f"qualifypeers={max(0, peers // (10 * freq) - 1)}", ""]
    for i in range(peers):
        lines += [f"[p{i:06d}]", "type=peer", "host=127.0.0.1", f"port={kport}", "qualify=yes",
                  f"qualifyfreq={freq}", *([f"fromuser=p{i:06d}"] if fromuser else []), ""]
    path.write_text("\n".join(lines))
    return path


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket(s) bound to `port` (a full receive buffer),
    from the `drops` column of /proc/net/udp and /proc/net/udp6."""
    total = 0
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 12 and int(f[1].rsplit(":", 1)[1], 16) == port:
                total += int(f[-1])
    return total


def sipp_reference(kport: int, rate: float, seconds: float, tmp: Path) -> tuple[float, float] | None:
    """SIPp's OPTIONS client (scenarios/options_uac.xml) against the responder on `kport` at `rate`
    calls/s for `seconds`: (answered/s, CPU µs per answered transaction), or None without SIPp.
    The reference a run's own figures are divided by (machines differ by up to 2x; SIPp, in C++
    with no state to keep, is the practical ceiling: anchors-performance.md)."""
    sipp = shutil.which("sipp")
    if sipp is None:
        return None
    work = tmp / "sipp-reference"
    work.mkdir(exist_ok=True)
    total = int(rate * seconds)
    cmd = [sipp, f"127.0.0.1:{kport}", "-sf", str(Path(__file__).parent / "scenarios" / "options_uac.xml"),
           "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(total), "-r", f"{rate:.0f}", "-rp", "1000",
           "-l", str(max(100, int(rate * 2))), "-buff_size", str(4 * 1024 * 1024), "-nostdin",
           "-timeout", f"{seconds + 60:.0f}s", "-trace_stat", "-stf", str(work / "stat.csv"), "-fd", "1"]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=seconds + 90, check=False)
    span = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    answered = sipp_count(sipp_last_stats(work / "stat.csv"), "SuccessfulCall")
    return answered / span, cpu / max(answered, 1) * 1e6


def sipp_last_stats(path: Path) -> dict[str, str]:
    """The final (cumulative) row of a SIPp -trace_stat CSV, by column name; {} if absent."""
    try:
        rows = [r for r in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";") if r]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return {k.strip(): v.strip() for k, v in zip(rows[0], rows[-1], strict=False)}


def sipp_count(stats: dict[str, str], name: str) -> int:
    """A cumulative counter of a -trace_stat row (`name(C)`), 0 if absent."""
    try:
        return int(float(stats.get(f"{name}(C)", "0") or 0))
    except ValueError:
        return 0


def run_on_postgres(url: str | None, main: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """`asyncio.run(main(url))`; with no `url`, on a temporary PostgreSQL server made for it (fsync
    on, as a production server; tests/helpers.py's, so the bench needs the repository's root on
    sys.path), removed afterwards."""
    server = None
    if url is None:
        from tests.helpers import Postgres

        server = Postgres(fsync=True)
        url = server.url()
    try:
        asyncio.run(main(url))
    finally:
        if server is not None:
            server.close()


def api(base: str, token: str, path: str, timeout: float = 30) -> Any:
    """GET `path` of a daemon's HTTP API (JSON)."""
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_api(state_dir: Path, base: str, tries: int, interval: float) -> str | None:
    """The daemon's API token once its API answers /healthz (it writes the token into its state
    directory at start); None if it did not within `tries` x `interval` seconds."""
    for _ in range(tries):
        time.sleep(interval)
        try:
            token = (state_dir / "api-token").read_text().strip()
            api(base, token, "/healthz", timeout=60)
            return token
        except OSError:
            continue
    return None
