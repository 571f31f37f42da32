"""A real DNS server for the resolution tests: dnsmasq (Debian `dnsmasq-base`) on a loopback port.

Every record comes from the command line (`--srv-host`, `--naptr-record`, `--host-record`),
nothing from the host: `--no-resolv --no-hosts --conf-file=/dev/null`. Names under `.test`
that it does not know get NXDOMAIN (`--local=/test/`); other names are REFUSED (no upstream).
Like every real program of the suite, a missing dnsmasq skips, and fails when `CI` is set.
"""

from __future__ import annotations

import time

import dns.exception
import dns.resolver

from ..helpers import free_port
from ..realpeers.conftest import lab  # noqa: F401 - the same fixture: stops every process at teardown
from ..realpeers.peers import Lab, Proc, require_binary

LOOPBACK = "127.0.0.1"


class Dnsmasq:
    """dnsmasq answering with `records`; `restart()` swaps them on the same port."""

    def __init__(self, procs: Lab, records: list[str], ttl: int = 60) -> None:
        self.lab = procs
        self.binary = require_binary("dnsmasq", "dnsmasq-base")
        self.port = free_port()
        self.ttl = ttl
        self.proc = self._start(records)

    @property
    def server(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def _start(self, records: list[str]) -> Proc:
        argv = [self.binary, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--port={self.port}", f"--listen-address={LOOPBACK}", "--bind-interfaces", "--pid-file=",
                "--local=/test/", f"--local-ttl={self.ttl}", "--log-queries",
                "--host-record=ready.test,127.0.0.9", *records]
        proc = self.lab.spawn(f"dnsmasq-{self.port}", argv)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = [LOOPBACK], self.port
        deadline = time.monotonic() + 10
        while True:
            try:
                r.resolve("ready.test", "A", lifetime=0.3)
                return proc
            except dns.exception.DNSException:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"dnsmasq did not answer on port {self.port}:\n{proc.log_tail()}") from None

    def restart(self, records: list[str]) -> None:
        self.proc.stop()
        self.proc = self._start(records)

    def log(self) -> str:
        return self.proc.log_text()
