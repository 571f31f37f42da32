"""Real coordinators for the cluster tests: Debian's etcd (3.4, v3 API through its gRPC gateway)
and redis-server, each started in a temporary directory on a free loopback port. Like every
real program of the suite, a missing one skips, and fails when `CI` is set."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import free_port


def need(binary: str, package: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if os.path.exists(f"/usr/bin/{binary}") else None)
    if path is None:
        msg = f"{binary} not installed: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


class Server:
    """A coordinator process; `pause()`/`resume()` (SIGSTOP/SIGCONT) make it unreachable and back."""

    url = ""

    def __init__(self, argv: list[str], dir: Path, ready: str) -> None:
        self.dir = dir
        self.log = dir / "log"
        self.proc = subprocess.Popen(argv, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
        deadline = time.monotonic() + 30
        while not self._ready(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"{argv[0]} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _ready(self, what: str) -> bool:
        raise NotImplementedError

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Etcd(Server):
    def __init__(self, extra_hosts: tuple[str, ...] = ()) -> None:
        binary = need("etcd", "etcd-server")
        d = Path(tempfile.mkdtemp(prefix="sipq-etcd-"))
        self.port, peer = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
        clients = ",".join(f"http://{h}:{self.port}" for h in ("127.0.0.1", *extra_hosts))
        self.url = f"etcd3+http://127.0.0.1:{self.port}"
        super().__init__([binary, "--name", "t", "--data-dir", str(d / "data"), "--listen-client-urls", clients,
                          "--advertise-client-urls", f"http://127.0.0.1:{self.port}",
                          "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                          "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                          "--initial-cluster", f"t=http://127.0.0.1:{peer}", "--log-level", "warn"], d, "")

    def _ready(self, what: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return b'"true"' in r.read()
        except OSError:
            return False


class Redis(Server):
    def __init__(self) -> None:
        binary = need("redis-server", "redis-server")
        d = Path(tempfile.mkdtemp(prefix="sipq-redis-"))
        self.port = free_port(socket.SOCK_STREAM)
        self.url = f"redis://127.0.0.1:{self.port}"
        super().__init__([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(d)], d, "")

    def _ready(self, what: str) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


def _tooz() -> None:
    if os.environ.get("CI"):
        import tooz  # noqa: F401
    else:
        pytest.importorskip("tooz")


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    _tooz()
    e = Etcd()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture
def redis_server() -> Iterator[Redis]:
    _tooz()
    r = Redis()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(params=["etcd", "redis"])
def coordinator(request: pytest.FixtureRequest) -> Iterator[Server]:
    _tooz()
    s: Server = Etcd() if request.param == "etcd" else Redis()
    try:
        yield s
    finally:
        s.close()
