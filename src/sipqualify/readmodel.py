"""What the surfaces (HTTP API, /metrics, the AMI port, the event stream, webhooks) read.

`ReadModel` is the one protocol they depend on: peer views, status, registrations, the
store's history queries, the RTT histograms, subscriptions to committed transitions and
registry events, and the two commands they may give (qualify a peer, reload). The surfaces
never see the service object; `ShellReadModel` answers from what the shell (`Shell`) holds,
and `TransitionFeed` fans out what has been committed. The RTT histograms are kept here
(`QualifyMetrics`, resultmetrics.py: compiled), fed by the shell with each qualify result.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .addr import Addr
from .qualify import state as st
from .qualify.events import LiveEvent, QualifyResult, SecurityEvent, StateChanged
from .qualify.pjsip_state import PjsipStates, endpoint_line, registry_change
from .qualify.targets import TargetChanged
from .resultmetrics import QualifyMetrics
from .sip.uri import format_host
from .views import PeerView, display_bytes, remote_view, silence_fields
from .workers.mirror import workers_status

if TYPE_CHECKING:
    import asyncio

    from .cluster import Cluster
    from .cluster.vantage import Vantage
    from .model import Config, PjsipConfig
    from .qualify.engine import EngineStats, Peer, QualifyEngine, ReloadSummary, TargetPeer
    from .qualify.registrar import Registrar
    from .qualify.watchdog import WatchdogStats
    from .store import AnyStore, TransitionRecord
    from .store.silences import SilenceBook

log = logging.getLogger("sipqualify")

Json = dict[str, Any]


@dataclass
class Counters:
    started: float = field(default_factory=time.time)
    reloads: int = 0
    last_reload: float | None = None  # wall clock of the last successful reload
    reload_errors: int = 0
    icmp_errors: int = 0
    source_errors: int = 0  # qualify_source addresses that could not be bound, at start, reloads, realtime changes
    loop_lag_max_ms: float = 0.0
    scheduler_lag_s: float = 0.0  # how late the last timer batch ran


def process_usage() -> Json:
    """The daemon's CPU time (user + system) and resident memory, as a dashboard shows them."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):  # not Linux: the peak, in KiB
        rss = ru.ru_maxrss * 1024
    return {"cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "rss_bytes": rss}


class ReadModel(Protocol):
    """The surfaces' view of the daemon."""

    @property
    def token(self) -> str: ...  # the API's bearer token
    @property
    def config(self) -> Config: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def metrics(self) -> QualifyMetrics: ...
    @property
    def store(self) -> AnyStore | None: ...  # history: transitions, RTT series, stats
    @property
    def loaded(self) -> bool: ...  # peers loaded and scheduled

    def peers(self) -> Iterable[Peer]: ...
    def peer(self, name: str) -> Peer | None: ...
    def targets(self, name: str) -> list[TargetPeer]: ...  # qualify_targets = all: the peer's DNS targets
    def view(self, p: Peer) -> PeerView: ...
    def views(self) -> list[PeerView]: ...
    def tls_cert_days_left(self, p: Peer) -> float | None: ...  # TLS peers: days left of their certificate
    def flow_keepalive(self, p: Peer) -> Json | None: ...  # TCP/TLS peers: RFC 5626 ping/pong of their flow
    def engine_stats(self) -> EngineStats | None: ...
    def now(self) -> float: ...  # engine (monotonic) time, for state that decays (flap penalty)
    def watchdog_stats(self) -> WatchdogStats | None: ...
    @property
    def silences(self) -> SilenceBook | None: ...  # maintenance windows (store/silences.py)
    def status(self) -> Json: ...
    def registrations(self) -> list[Json]: ...
    def registrar_stats(self) -> dict[str, int] | None: ...
    def tcp_stats(self) -> Json | None: ...
    def ami_stats(self) -> tuple[dict[str, int], int] | None: ...  # counters, sessions
    def storage_health(self) -> dict[str, Json]: ...
    def ready(self) -> dict[str, bool]: ...  # engine loaded, SIP sockets open
    def scheduler_health(self) -> Json: ...  # the watchdog: ok, lag_s, and while not ok cause and since
    def add_listener(self, cb: Callable[[StateChanged], None]) -> None: ...
    def add_registry_listener(self, cb: Callable[[str, str, str, Addr | None], None]) -> None: ...
    def add_security_listener(self, cb: Callable[[SecurityEvent, Addr], None]) -> None: ...  # (event, local)
    def add_live_listener(self, cb: Callable[[LiveEvent], None]) -> None: ...
    def add_record_listener(self, cb: Callable[[TransitionRecord], None]) -> None: ...
    def add_tls_listener(self, cb: Callable[[str, float, Addr | None], None]) -> None: ...
    def add_target_listener(self, cb: Callable[[TargetChanged], None]) -> None: ...
    def add_qualify_listener(self, cb: Callable[[str, str | None], None]) -> None: ...
    def qualify(self, name: str, wait: bool = True,
                action_id: str | None = None) -> Coroutine[Any, Any, QualifyResult | None]: ...
    def reload(self) -> Coroutine[Any, Any, ReloadSummary]: ...
    def watch(self, name: str) -> float: ...  # capture the peer's exchanges: until when (UNIX time)
    def exchange(self, name: str) -> Json: ...  # the last exchange captured (qualify/capture.py)
    def cluster_status(self) -> Json | None: ...  # [cluster]: this node in its group (None: one node)
    def count_fleet(self) -> Coroutine[Any, Any, dict[tuple[str, str], int]]: ...  # (node, state) -> peers
    def vantage_view(self, name: str) -> Json | None: ...  # its vantage points ([cluster] vantage_points > 1)
    @property
    def fleet_shared(self) -> bool: ...  # [cluster] with a shared store: other nodes' peers can be shown
    def remote_views(self, name: str | None = None) -> Coroutine[Any, Any, list[PeerView]]: ...
    def fleet_counts(self) -> dict[tuple[str, str], int]: ...  # ... as last counted
    def fleet(self) -> Coroutine[Any, Any, tuple[str, list[Json]] | None]: ...  # (this node, other nodes' peers)
    def fleet_peer(self, name: str) -> Coroutine[Any, Any, Json | None]: ...  # a peer another node qualifies


class Sockets(Protocol):
    def local_addresses(self) -> list[Addr]: ...
    def tcp_snapshot(self) -> Json | None: ...
    def tls_snapshot(self) -> Json | None: ...
    def ws_snapshot(self) -> Json | None: ...
    def wss_snapshot(self) -> Json | None: ...
    def cert_days_left(self, dest: Addr | None, now_wall: float) -> float | None: ...
    def flow_keepalive(self, dest: Addr | None) -> Json | None: ...


class AmiStats(Protocol):
    @property
    def counters(self) -> dict[str, int]: ...
    @property
    def session_count(self) -> int: ...


class BindingHealth(Protocol):
    def health(self) -> Json: ...


class DnsStatus(Protocol):
    def describe(self, name: str) -> tuple[str | None, str | None]: ...  # (how it resolved, why it does not)


class Shell(Protocol):
    """What ShellReadModel reads from the composition root."""

    @property
    def token(self) -> str: ...
    @property
    def config(self) -> Config: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def feed(self) -> TransitionFeed: ...
    @property
    def metrics(self) -> QualifyMetrics: ...
    @property
    def store(self) -> AnyStore | None: ...
    @property
    def engine(self) -> QualifyEngine | None: ...
    @property
    def registrar(self) -> Registrar | None: ...
    @property
    def committer(self) -> BindingHealth | None: ...
    @property
    def realtime(self) -> BindingHealth | None: ...  # realtime/sync.py RealtimePeers
    @property
    def sockets(self) -> Sockets: ...
    @property
    def ami(self) -> AmiStats | None: ...
    @property
    def loaded(self) -> bool: ...
    @property
    def dns(self) -> DnsStatus: ...
    @property
    def silences(self) -> SilenceBook | None: ...
    @property
    def cluster(self) -> Cluster | None: ...  # cluster/member.py
    @property
    def vantage(self) -> Vantage | None: ...  # cluster/vantage.py

    def clock(self) -> float: ...
    def wallclock(self) -> float: ...
    def wall(self, t: float) -> float: ...
    def qualify(self, name: str, wait: bool = True) -> Coroutine[Any, Any, QualifyResult | None]: ...
    def reload(self) -> Coroutine[Any, Any, ReloadSummary]: ...


def _hostport(a: Addr) -> str:
    return f"{format_host(a[0])}:{a[1]}"


class ShellReadModel:
    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.qualify_listeners: list[Callable[[str, str | None], None]] = []  # (peer, AMI ActionID)
        self._behind_since: float | None = None  # wall time the scheduler fell behind (readyz)

    @property
    def token(self) -> str:
        return self.shell.token

    @property
    def config(self) -> Config:
        return self.shell.config

    @property
    def counters(self) -> Counters:
        return self.shell.counters

    @property
    def metrics(self) -> QualifyMetrics:
        return self.shell.metrics

    @property
    def store(self) -> AnyStore | None:
        return self.shell.store

    @property
    def loaded(self) -> bool:
        return self.shell.engine is not None and self.shell.loaded

    def peers(self) -> Iterable[Peer]:
        eng = self.shell.engine
        return eng.peers() if eng is not None else ()

    def peer(self, name: str) -> Peer | None:
        eng = self.shell.engine
        return eng.peer(name) if eng is not None else None

    def targets(self, name: str) -> list[TargetPeer]:
        eng = self.shell.engine
        return eng.targets(name) if eng is not None else []

    def engine_stats(self) -> EngineStats | None:
        eng = self.shell.engine
        return eng.snapshot_stats() if eng is not None else None

    def now(self) -> float:
        return self.shell.clock()

    def watchdog_stats(self) -> WatchdogStats | None:
        eng = self.shell.engine
        return eng.watchdog.stats if eng is not None else None

    @property
    def silences(self) -> SilenceBook | None:
        return self.shell.silences

    def qualify(self, name: str, wait: bool = True,
                action_id: str | None = None) -> Coroutine[Any, Any, QualifyResult | None]:
        """A forced qualify (AMI, HTTP, CLI). Listeners hear of it at once, as chan_sip sends
        SIPQualifyPeerDone when the poke is queued; `action_id` is the AMI action's, if any."""
        if self.peer(name) is not None:
            for cb in self.qualify_listeners:
                cb(name, action_id)
        return self.shell.qualify(name, wait)

    def watch(self, name: str) -> float:
        """Keep the peer's next OPTIONS exchanges (the last one) for a while: until when, by the
        wall clock. KeyError: no such peer; qualify.capture.CaptureFull: too many watched."""
        eng = self.shell.engine
        if eng is None or eng.peer(name) is None:
            raise KeyError(name)
        return round(self.shell.wall(eng.capture.watch(name, self.shell.clock())), 3)

    def exchange(self, name: str) -> Json:
        """The last exchange captured for a watched peer, as sent and received (KeyError: no such peer)."""
        eng = self.shell.engine
        if eng is None or eng.peer(name) is None:
            raise KeyError(name)
        now, wall = self.shell.clock(), self.shell.wall
        until = eng.capture.until(name, now)
        x = eng.capture.exchange(name, now)
        out: Json = {"peer": name, "watching_until": round(wall(until), 3) if until is not None else None,
                     "request": None, "response": None, "rtt_ms": None}
        if x is None:
            return out
        req = x.request
        out["request"] = {"time": round(wall(req.time), 6), "to": _hostport(req.dest),
                          "transmissions": x.transmissions, "size": len(req.data), "bytes": display_bytes(req.data)}
        res = x.response
        if res is not None:
            out["response"] = {"time": round(wall(res.time), 6), "from": _hostport(res.source),
                               "status": res.status, "size": len(res.data), "bytes": display_bytes(res.data)}
            out["rtt_ms"] = round(max(0.0, res.time - req.time) * 1000, 3)
        return out

    def add_qualify_listener(self, cb: Callable[[str, str | None], None]) -> None:
        self.qualify_listeners.append(cb)

    def reload(self) -> Coroutine[Any, Any, ReloadSummary]:
        return self.shell.reload()

    def add_listener(self, cb: Callable[[StateChanged], None]) -> None:
        self.shell.feed.listeners.append(cb)

    def add_registry_listener(self, cb: Callable[[str, str, str, Addr | None], None]) -> None:
        self.shell.feed.registry_listeners.append(cb)

    def add_security_listener(self, cb: Callable[[SecurityEvent, Addr], None]) -> None:
        self.shell.feed.security_listeners.append(cb)

    def add_live_listener(self, cb: Callable[[LiveEvent], None]) -> None:
        self.shell.feed.live_listeners.append(cb)

    def add_record_listener(self, cb: Callable[[TransitionRecord], None]) -> None:
        self.shell.feed.record_listeners.append(cb)

    def add_tls_listener(self, cb: Callable[[str, float, Addr | None], None]) -> None:
        self.shell.feed.tls_listeners.append(cb)

    def add_target_listener(self, cb: Callable[[TargetChanged], None]) -> None:
        self.shell.feed.target_listeners.append(cb)

    def view(self, p: Peer) -> PeerView:
        shell = self.shell
        cfg = p.cfg
        b = shell.registrar.bindings.get(p.name) if shell.registrar is not None else None
        addr = p.addr
        dns, dns_error = shell.dns.describe(p.name)
        return PeerView(
            name=p.name,
            status=p.status,
            state=p.state,
            lastms=p.lastms,
            maxms=p.maxms,
            qualifyfreq_ms=cfg.qualifyfreq_ms,
            keepalive_ms=cfg.keepalive_s * 1000,
            host="dynamic" if cfg.dynamic else (cfg.host or ""),
            addr_ip=addr[0] if addr else None,
            addr_port=addr[1] if addr else 0,
            dynamic=cfg.dynamic,
            transport=b.transport if b else p.transport,  # static: the config's, or the one NAPTR chose
            nat=list(cfg.nat),
            nat_detected=bool(b.nat) if b else False,
            acl=False,
            defaultuser=cfg.defaultuser,
            fromuser=cfg.fromuser,
            fromdomain=cfg.fromdomain,
            description=cfg.description,
            context=cfg.context,
            secret_set=bool(cfg.secret),
            md5secret_set=bool(cfg.md5secret),
            useragent=b.useragent if b else "",
            regcontact=b.contact if b else "",
            regexten="",
            expire=max(0, int(b.expires_mono - shell.clock())) if b else -1,
            rtt_ms=p.rtt * 1000 if p.rtt is not None else None,
            last_qualify=shell.wall(p.last_qualify) if p.last_qualify is not None else None,
            last_change=shell.wall(p.last_change) if p.last_change is not None else None,
            qualifies=p.qualifies,
            timeouts=p.timeouts,
            retransmissions=p.retransmissions,
            transport_error=p.transport_error,
            qualify_source=shell.engine.source_of(p) if shell.engine is not None else None,
            tls_cert_days_left=self.tls_cert_days_left(p),
            flow_keepalive=self.flow_keepalive(p),
            dns=dns,
            dns_error=dns_error,
            verdict=p.verdict.verdict,
            reason=p.verdict.reason,
            policy=p.verdict.policy.name,
            pending_toward=p.verdict.toward,
            pending_count=p.verdict.streak,
            pending_of=p.verdict.threshold,
            targets=self._targets(p),
            flapping=p.verdict.flapping,
            flap_penalty=round(p.verdict.flap_penalty(shell.clock()), 1),
            **silence_fields(shell.silences.match(p.name, cfg.group) if shell.silences is not None else None),
        )

    def _targets(self, p: Peer) -> list[Json] | None:
        targets = self.targets(p.name)
        if not targets:
            return None
        wall = self.shell.wall
        return [{"label": t.target.label, "transport": t.transport, "host": t.target.host, "port": t.target.port,
                 "address": t.target.address, "state": t.state, "status": t.status, "lastms": t.lastms,
                 "rtt_ms": t.rtt * 1000 if t.rtt is not None else None,
                 "last_change": wall(t.last_change) if t.last_change is not None else None,
                 "last_qualify": wall(t.last_qualify) if t.last_qualify is not None else None,
                 "qualifies": t.qualifies, "timeouts": t.timeouts, "transport_error": t.transport_error}
                for t in targets]

    def views(self) -> list[PeerView]:
        return [self.view(p) for p in self.peers()]

    def tls_cert_days_left(self, p: Peer) -> float | None:
        if p.transport != "tls":
            return None
        return self.shell.sockets.cert_days_left(p.dest, self.shell.wallclock())

    def flow_keepalive(self, p: Peer) -> Json | None:
        if p.transport not in ("tcp", "tls"):
            return None
        return self.shell.sockets.flow_keepalive(p.dest)

    def cluster_status(self) -> Json | None:
        c = self.shell.cluster
        if c is None:
            return None
        v = self.shell.vantage
        return {**dataclasses.asdict(c.status()), "fleet_events": c.follower.status() if c.follower else None,
                "vantage": v.status() if v is not None else None}

    def vantage_view(self, name: str) -> Json | None:
        """A peer's vantage points, quorum and their observations (None: not probed from several nodes)."""
        v = self.shell.vantage
        return v.agreement.view(name) if v is not None else None

    def fleet_counts(self) -> dict[tuple[str, str], int]:
        c = self.shell.cluster
        return c.fleet_counts if c is not None else {}

    async def count_fleet(self) -> dict[tuple[str, str], int]:
        """The whole fleet's peers by owner node and stored state (empty: one node, or no shared store)."""
        c = self.shell.cluster
        if c is None:
            return {}
        return await c.count_fleet(self.shell.store, self.shell.config.service.store_url is not None)

    @property
    def fleet_shared(self) -> bool:
        return self.shell.cluster is not None and self.shell.config.service.store_url is not None

    async def remote_views(self, name: str | None = None) -> list[PeerView]:
        """The static peers other nodes qualify (`name`: that one only), as the AMI port lists them:
        their configuration and their owner's stored state ([cluster] with a shared store; else none)."""
        c = self.shell.cluster
        if c is None or not self.fleet_shared:
            return []
        cfg = self.shell.config
        if name is not None:
            row = await c.remote_peer(name, cfg, self.shell.store)
            rows = [row] if row is not None else []
        else:
            rows = await c.remote_peers(cfg, self.shell.store)
        return [remote_view(p, r) for r in rows if (p := cfg.peers.get(r["name"])) is not None and not p.dynamic]

    async def fleet(self) -> tuple[str, list[Json]] | None:
        c = self.shell.cluster
        if c is None:
            return None
        return c.node_id, await c.remote_peers(self.shell.config, self.shell.store)

    async def fleet_peer(self, name: str) -> Json | None:
        c = self.shell.cluster
        if c is None:
            return None
        return await c.remote_peer(name, self.shell.config, self.shell.store)

    def status(self) -> Json:
        shell = self.shell
        eng = shell.engine
        assert eng is not None
        return {
            "uptime_s": round(time.time() - shell.counters.started, 3),
            "peers": len(eng),
            "qualified": sum(1 for p in eng.peers() if p.maxms),
            "engine": dataclasses.asdict(eng.snapshot_stats()),
            "watchdog": dataclasses.asdict(eng.watchdog.stats),
            "service": dataclasses.asdict(shell.counters),
            "store": shell.store.stats if shell.store is not None else {},
            "sip": [{"ip": ip, "port": port} for ip, port in shell.sockets.local_addresses()],
            "cluster": self.cluster_status(),
            "tcp": shell.sockets.tcp_snapshot(),
            "tls": shell.sockets.tls_snapshot(),
            "ws": shell.sockets.ws_snapshot(),
            "wss": shell.sockets.wss_snapshot(),
            "registrar": self.registrar_stats(),
            "process": process_usage(),
            "workers": workers_status(eng),
        }

    def registrations(self) -> list[Json]:
        """The registrar's bindings (like `pjsip show contacts`), by peer name."""
        reg = self.shell.registrar
        if reg is None:
            return []
        now, wall = self.shell.clock(), self.shell.wallclock()
        # what is left is monotonic; expires_at is when that is by the wall clock as it is now
        return [{"peer": b.peer, "contact": b.contact, "address": b.addr[0], "port": b.addr[1],
                 "transport": b.transport, "useragent": b.useragent, "path": b.path, "call_id": b.call_id,
                 "cseq": b.cseq, "nat": b.nat, "expires_at": round(wall + max(0.0, b.expires_mono - now), 3),
                 "expires_in": max(0, int(b.expires_mono - now))}
                for _, b in sorted(reg.bindings.items())]

    def registrar_stats(self) -> dict[str, int] | None:
        reg, eng = self.shell.registrar, self.shell.engine
        if reg is None:
            return None
        assert eng is not None
        txns = eng.inbound.server_txns
        return {**reg.counters, "bindings": len(reg.bindings),
                "retransmissions_absorbed": txns.absorbed,
                "retransmissions_answered": txns.resent,
                "banned_sources": reg.banned_count(self.shell.clock())}

    def tcp_stats(self) -> Json | None:
        return self.shell.sockets.tcp_snapshot()

    def ami_stats(self) -> tuple[dict[str, int], int] | None:
        ami = self.shell.ami
        return (ami.counters, ami.session_count) if ami is not None else None

    def storage_health(self) -> dict[str, Json]:
        """Per database: `ok`, and while not, the `cause` and `since` of the failure (for /readyz)."""
        out: dict[str, Json] = {}
        if self.shell.store is not None:
            out["store"] = self.shell.store.health()
        if self.shell.committer is not None:
            out["bindings"] = self.shell.committer.health()
        if self.shell.realtime is not None:
            out["realtime"] = self.shell.realtime.health()
        return out

    def scheduler_health(self) -> Json:
        """How far behind the qualify scheduler is now (the earliest due timer's age, qualify/watchdog.py):
        not ok beyond `[service] ready_max_lag`."""
        eng = self.shell.engine
        due = eng.get_timer() if eng is not None else None
        now = self.shell.clock()
        lag = max(0.0, now - due) if due is not None else 0.0
        limit = float(self.shell.config.service.ready_max_lag_s)
        if lag <= limit:
            self._behind_since = None
            return {"ok": True, "lag_s": round(lag, 3)}
        if self._behind_since is None:
            self._behind_since = self.shell.wallclock() - lag
        return {"ok": False, "lag_s": round(lag, 3), "since": self._behind_since,
                "cause": f"the qualify scheduler is {lag:.1f} s behind (more than {limit:g} s)"}

    def ready(self) -> dict[str, bool]:
        return {"engine": self.loaded, "sip_sockets": bool(self.shell.sockets.local_addresses())}


class TransitionFeed:
    """State transitions are logged and published (AMI, event stream, webhooks) only once
    their row is committed, so whatever was reported survives a kill -9; registry events
    (Registered / Unregistered / Rejected) go out at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.listeners: list[Callable[[StateChanged], None]] = []  # committed transitions (AMI)
        self.record_listeners: list[Callable[[TransitionRecord], None]] = []  # event stream, webhooks
        self.registry_listeners: list[Callable[[str, str, str, Addr | None], None]] = []
        self.security_listeners: list[Callable[[SecurityEvent, Addr], None]] = []  # (event, local address)
        self.tls_listeners: list[Callable[[str, float, Addr | None], None]] = []  # certificate expiry warnings
        self.live_listeners: list[Callable[[LiveEvent], None]] = []  # verdict / latency: live, like registry
        self.target_listeners: list[Callable[[TargetChanged], None]] = []  # a peer's DNS target changed state
        self._pending: dict[str, deque[StateChanged]] = {}  # transitions waiting for their COMMIT
        self._committed: list[TransitionRecord] = []  # committed, not yet handled on the loop
        self._lock = threading.Lock()
        self.pjsip: PjsipStates | None = None  # pjsip.conf contacts log res_pjsip's lines

    def set_pjsip(self, pj: PjsipConfig | None, state_of: Callable[[str], tuple[str | None, float | None]],
                  registered: Iterable[tuple[str, str]] = ()) -> None:
        """(Re)load the pjsip.conf objects; the first load logs the endpoints online from the
        start (unqualified AORs with a contact), as res_pjsip does at load. `registered`: the
        registered contacts restored at start, (contact id, URI)."""
        states = PjsipStates(pj, self.pjsip, state_of, registered) if pj is not None else None
        for name, online in states.initial if states is not None else ():
            log.info("%s", endpoint_line(name, online))
        self.pjsip = states

    def pending(self, ev: StateChanged) -> None:
        self._pending.setdefault(ev.peer, deque()).append(ev)

    def committed(self, rec: TransitionRecord) -> None:
        # called on the store's writer thread after COMMIT: one loop wake-up per batch, not per
        # record (each wake-up is a write to the loop's self-pipe)
        with self._lock:
            self._committed.append(rec)
            if len(self._committed) > 1:
                return
        self.loop.call_soon_threadsafe(self._drain)

    def registry(self, peer: str, status: str, cause: str, addr: Addr | None) -> None:
        if self.pjsip is not None:  # a registered PJSIP contact Created / Removed: res_pjsip's lines
            ch = registry_change(self.pjsip, peer, status, cause)
            for line in ch.lines() if ch is not None else ():
                log.info("%s", line)
        for cb in self.registry_listeners:
            cb(peer, status, cause, addr)

    def security(self, ev: SecurityEvent, local: Addr) -> None:
        for cb in self.security_listeners:
            cb(ev, local)

    def tls_expiring(self, peer: str, days: float, addr: Addr | None) -> None:
        """A TLS peer's certificate fell under `tls_expiry_warn_days` (once per crossing)."""
        log.warning("peer '%s': TLS certificate expires in %.1f days", peer, days)
        for cb in self.tls_listeners:
            cb(peer, days, addr)

    def live(self, ev: LiveEvent) -> None:
        for cb in self.live_listeners:
            cb(ev)

    def target(self, ev: TargetChanged) -> None:
        """One DNS target of a `qualify_targets = all` peer changed state: a log line and the
        event stream's `target` event (live only; the peer's own transition is the rollup's)."""
        log.info("%s", ev.log_line())
        for cb in self.target_listeners:
            cb(ev)

    def _drain(self) -> None:
        with self._lock:
            recs, self._committed = self._committed, []
        for rec in recs:
            self._publish(rec)

    def _publish(self, rec: TransitionRecord) -> None:
        for notify in self.record_listeners:
            notify(rec)
        q = self._pending.get(rec.peer)
        ev = q.popleft() if q else None
        if q is not None and not q:
            del self._pending[rec.peer]
        if ev is None:
            return
        if not ev.silent and self.pjsip is not None and self.pjsip.knows(ev.peer):
            for line in self.pjsip.update(ev.peer, ev.new, ev.rtt):  # Asterisk: verbose, not NOTICE
                log.info("%s", line)
        elif not ev.silent:
            line = ev.log_line()
            log.warning("%s", line) if ev.new == st.UNREACHABLE else log.info("%s", line)
            if ev.reason:
                log.warning("peer '%s': %s", ev.peer, ev.reason)
        for listener in self.listeners:
            listener(ev)
