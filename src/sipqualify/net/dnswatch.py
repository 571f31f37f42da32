"""Static peers' host names, resolved at (re)load and again when their TTL runs out.

The asyncio side of net/dns.py for the daemon. One timer per peer with a DNS name (IP
literals and dynamic peers have none): when it fires the name is resolved anew in a task of
its own, so a slow or dead DNS server delays nobody else. Compat (chan_sip): the peer is
qualified at the first target, first address; `on_change(name, addr)` hands a new address
to the engine (`QualifyEngine.set_address`). With `qualify_targets = all` every target counts
(qualify/targets.py): a change of the set (records added or removed, an address changed) is
handed over whole by `on_targets(name, resolution, previous)` (`QualifyEngine.set_targets`).

A failure keeps the last good address (as chan_sip's dnsmgr does), records its reason for
`peer X` and the API, and is tried again after 1, 2, 4 ... 300 s (or when a negative
answer's cache time runs out, which the resolver's cache enforces).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..addr import Addr
from ..model import GeneralConfig, PeerConfig
from ..qualify.targets import Target
from .dns import DnsError, Resolution, SipResolver
from .resolve import default_port, literal

log = logging.getLogger("sipqualify.dns")

MIN_REFRESH_S = 1.0  # a TTL of 0 must not turn into a busy loop
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 300.0
LOAD_CONCURRENCY = 64


@dataclass(slots=True)
class PeerDnsState:
    """What `peer X` and the API show about a peer's name."""

    # (host, port, transport (None: not written, NAPTR decides), srvlookup, qualify_targets)
    key: tuple[str, int | None, str | None, bool, str]
    resolution: Resolution | None = None
    addr: Addr | None = None  # the target in use (compat: the first)
    error: str | None = None  # the last failure's reason; None after a success
    error_kind: str | None = None
    failures: int = 0  # in a row
    next_at: float | None = None  # loop time of the next lookup
    handle: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        for pending in (self.handle, self.task):
            if pending is not None:
                pending.cancel()
        self.handle = self.task = None


def backoff_s(failures: int) -> float:
    return float(min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** max(0, failures - 1)))


class PeerDns:
    """The per-peer re-resolve timers and what they found."""

    def __init__(self, on_change: Callable[[str, Addr, Addr | None, Resolution], None],
                 on_error: Callable[[str, DnsError], None] | None = None,
                 on_targets: Callable[[str, Resolution, Resolution | None], None] | None = None) -> None:
        self.on_change = on_change
        self.on_error = on_error
        self.on_targets = on_targets
        self.resolver = SipResolver()
        self._server: Addr | None = None
        self._states: dict[str, PeerDnsState] = {}
        self.lookups = 0
        self.failures = 0

    def state(self, name: str) -> PeerDnsState | None:
        return self._states.get(name)

    def targets(self, name: str) -> tuple[Target, ...]:
        """Every target of a `qualify_targets = all` peer's last good resolution; () otherwise."""
        st = self._states.get(name)
        if st is None or st.key[4] != "all" or st.resolution is None:
            return ()
        return st.resolution.targets

    def transport(self, name: str) -> str | None:
        """The transport the DNS chose (NAPTR, or the SRV service it came from) for the first
        target; None when the peer's config names it or the name never resolved."""
        st = self._states.get(name)
        if st is None or st.key[2] is not None or st.resolution is None:
            return None
        return st.resolution.targets[0].transport

    def describe(self, name: str) -> tuple[str | None, str | None]:
        """(how the peer's name resolved, why it does not resolve now) for `peer X` and the API."""
        st = self._states.get(name)
        if st is None:
            return None, None
        return (st.resolution.path if st.resolution is not None else None), st.error

    def configure(self, general: GeneralConfig, transports: Iterable[str]) -> None:
        server = general.dns_server
        transports = tuple(transports)
        if server != self._server or transports != self.resolver.transports:
            self.resolver = SipResolver(server, transports=transports)
            self._server = server

    async def load(self, peers: Iterable[PeerConfig], general: GeneralConfig) -> dict[str, Addr | None]:
        """Every static peer's address (IP literals as written); name -> address (None: failed). Peers
        whose (host, port, transport) did not change keep their state and their timer."""
        loop = asyncio.get_running_loop()
        wanted: dict[str, tuple[str, int | None, str | None, bool, str]] = {}
        out: dict[str, Addr | None] = {}
        for p in peers:
            if not p.host or p.dynamic:
                continue
            lit = literal(p.host)
            if lit is not None:
                out[p.name] = (lit, p.port or default_port(p.transport))
                continue
            transport = p.transport if p.transport_named else None  # RFC 3263 §4.1: NAPTR when not written
            wanted[p.name] = (p.host, p.port, transport, general.srvlookup, p.qualify_targets)
        for name in list(self._states):
            if wanted.get(name) != self._states[name].key:
                self._states.pop(name).cancel()
        sem = asyncio.Semaphore(LOAD_CONCURRENCY)

        async def one(name: str, st: PeerDnsState) -> None:
            async with sem:
                await self._lookup(name, st, loop, notify=False)

        fresh = []
        for name, key in wanted.items():
            st = self._states.get(name)
            if st is None:
                st = self._states[name] = PeerDnsState(key)
                fresh.append(one(name, st))
        await asyncio.gather(*fresh)
        for name in wanted:
            out[name] = self._states[name].addr
        return out

    def close(self) -> None:
        for st in self._states.values():
            st.cancel()
        self._states.clear()

    # ------------------------------------------------------------------ lookups

    async def _lookup(self, name: str, st: PeerDnsState, loop: asyncio.AbstractEventLoop, *, notify: bool) -> None:
        host, port, transport, srv, mode = st.key
        self.lookups += 1
        try:
            res = await self.resolver.resolve(host, port, transport, srv=srv)
        except DnsError as e:
            self.failures += 1
            st.failures += 1
            first = st.error != e.reason
            st.error, st.error_kind = e.reason, e.kind
            delay = backoff_s(st.failures)
            if first:
                log.warning("peer '%s': cannot resolve '%s': %s (next try in %g s%s)", name, host, e.reason, delay,
                            f", keeping {st.addr[0]}:{st.addr[1]}" if st.addr else "")
                if self.on_error is not None:
                    self.on_error(name, e)
            self._arm(name, st, loop, delay)
            return
        if st.error is not None:
            log.info("peer '%s': '%s' resolves again (%s)", name, host, res.path)
        st.failures = 0
        st.error = st.error_kind = None
        previous, st.resolution = st.resolution, res
        new = res.targets[0].addr
        old, st.addr = st.addr, new
        if mode == "all" and self.on_targets is not None:
            if notify and (previous is None or previous.targets != res.targets):
                self.on_targets(name, res, previous)
        elif notify and (new != old or (previous is not None and previous.targets[0].transport
                                        != res.targets[0].transport)):
            self.on_change(name, new, old, res)
        self._arm(name, st, loop, max(MIN_REFRESH_S, res.ttl))

    def _arm(self, name: str, st: PeerDnsState, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        if math.isinf(delay):
            return
        st.next_at = loop.time() + delay
        st.handle = loop.call_at(st.next_at, self._due, name, st, loop)

    def _due(self, name: str, st: PeerDnsState, loop: asyncio.AbstractEventLoop) -> None:
        st.handle = None
        if self._states.get(name) is not st:
            return
        st.task = loop.create_task(self._run(name, st, loop))

    async def _run(self, name: str, st: PeerDnsState, loop: asyncio.AbstractEventLoop) -> None:
        try:
            await self._lookup(name, st, loop, notify=True)
        except Exception:  # never let one peer's lookup end the refreshing of the others
            log.exception("peer '%s': DNS refresh failed", name)
            self._arm(name, st, loop, BACKOFF_MAX_S)
        finally:
            st.task = None
