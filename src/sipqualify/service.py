"""The daemon's composition root (STYLE.md §4): config, the sans-I/O core and its adapters.

Builds and wires the rooms: SIP sockets (sockets.py), the asyncio adapter that drives the
core (driver.py), the stores (store/: the qualify store, the binding committer, the state
recorder), the read model and the committed-transition feed (readmodel.py), and the surfaces
(api/surfaces.py), which read readmodel.ReadModel, never this module. Owns the clock, start,
reload and shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .addr import Addr
from .api.surfaces import Surfaces
from .cluster import Cluster, open_cluster
from .cluster.vantage import Vantage
from .config import load_config
from .config.memory import release_memory
from .config.pjsip import registered_contact_peer
from .driver import CoreDriver
from .model import Config, ConfigError, PeerConfig, PjsipConfig
from .net.dns import DnsError, Resolution
from .net.dnswatch import PeerDns
from .net.limits import prepare_open_files
from .net.resolve import default_port, literal, resolve_host, resolve_proxies
from .net.sockets import SipSockets
from .qualify.engine import QualifyEngine, ReloadSummary, source_text
from .qualify.events import QualifyResult
from .qualify.pjsip_identify import Identifier, hostnames
from .qualify.pjsip_registrar import PjsipRegistrar, aor_of
from .qualify.registrar import Registrar, RegistrarSettings
from .qualify.state import UNREACHABLE
from .readmodel import Counters, ShellReadModel, TransitionFeed
from .realtime import PjsipRealtime, RealtimeStore, open_realtime
from .resultmetrics import QualifyMetrics
from .store import AnyStore, open_store
from .store.base import PeerStateRecord
from .store.committer import BindingCommitter
from .store.recorder import StateRecorder
from .store.silences import SilenceBook
from .store.statedir import default_state_dir, ensure_token
from .workers import DEFAULT_WORKERS

if TYPE_CHECKING:
    from .api.ami import AmiServer
    from .api.events import EventHub
    from .net.tcp import TcpServer
    from .store import postgres
    from .store.base import TransitionRecord
    from .store.bindings import BindingStore
    from .workers.pool import WorkerPool

__all__ = ["Counters", "Service", "ServiceOptions", "default_state_dir", "ensure_token"]

log = logging.getLogger("sipqualify")


@dataclass
class ServiceOptions:
    config_path: str | None
    api_host: str | None = None
    api_port: int | None = None
    state_dir: str | None = None
    config: Config | None = None  # used instead of reading config_path (demo)
    sip_bind: list[Addr] | None = None  # override [general] bind addresses (demo, tests)
    manager_conf: str | None = None  # `run --manager-conf FILE`
    workers: int = DEFAULT_WORKERS  # `run --workers N`: > 1 qualifies static peers in N processes (workers/)
    log_level: str = "info"  # the workers' (they log to the same stderr)
    store_url: str | None = None  # `run --store-url URL`: beats the TOML's [store] url


class Service:
    def __init__(self, opts: ServiceOptions) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.config: Config = Config()
        self.store: AnyStore | None = None
        self.registrar: Registrar | None = None  # owned by the inbound endpoint; here for the read side
        self.identifier = Identifier(())  # pjsip.conf `type=identify`: source address -> endpoint
        self.realtime: RealtimeStore | None = None  # extconfig.conf sippeers or ps_* tables (realtime/)
        self.cluster: Cluster | None = None  # [cluster]: this node's share of the static peers (cluster/)
        self.vantage: Vantage | None = None  # [cluster] vantage_points > 1 (cluster/vantage.py)
        # Engine time is time.monotonic(), not loop.time(): uvloop's loop.time() is libuv's
        # cached millisecond clock, far too coarse for RTTs measured in microseconds.
        self.clock = time.monotonic
        self._wall_offset = time.time() - self.clock()
        self.wallclock = time.time  # bindings: only for their expiry as stored and shown (tests step it)
        self.sockets = SipSockets(self.clock)
        self.counters = Counters()
        self.token = ""
        self.state_dir = Path(".")
        self.loaded = False  # peers loaded and scheduled (readiness)
        self.metrics = QualifyMetrics()
        self.feed = TransitionFeed(self.loop)
        self.model = ShellReadModel(self)  # what the surfaces read
        self.surfaces = Surfaces(self.model)
        self.core = CoreDriver(self.loop, self.clock, self.sockets, self.feed, self.metrics, self.counters)
        # static peers' host names, re-resolved on TTL
        self.dns = PeerDns(self._dns_changed, self._dns_failed, self._dns_targets)
        self._stopped = asyncio.Event()
        self.pool: WorkerPool | None = None  # `run --workers N` (workers/pool.py)

    @property
    def engine(self) -> QualifyEngine | None:
        return self.core.engine

    @property
    def silences(self) -> SilenceBook | None:
        return self.core.silences

    @property
    def committer(self) -> BindingCommitter | None:
        return self.core.committer

    @property
    def tcp(self) -> TcpServer | None:
        return self.sockets.tcp

    @property
    def bindings(self) -> BindingStore | postgres.BindingStore | None:
        return self.committer.store if self.committer is not None else None

    @property
    def ami(self) -> AmiServer | None:
        return self.surfaces.ami

    @property
    def events(self) -> EventHub:
        return self.surfaces.events

    @property
    def api_addr(self) -> Addr:
        return self.surfaces.api_addr

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        prepare_open_files(self.loop)  # before anything opens a file: each TCP connection is one
        self.config = self.opts.config if self.opts.config is not None else self._read_config()
        self.realtime = open_realtime(self.config)
        if self.realtime is not None:  # realtime rows join the file's peers (the file wins a name)
            self.config.peers.update(await self.realtime.load())
        svc, g = self.config.service, self.config.general
        if self.opts.store_url:
            svc.store_url = self.opts.store_url
        self.state_dir = Path(self.opts.state_dir or svc.state_dir or default_state_dir())
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.token = ensure_token(self.state_dir, svc.api_token)
        self.store = open_store(svc, self.state_dir, self.feed.committed)
        restored = await asyncio.to_thread(self.store.open)  # 1M peers: seconds; keep the loop free
        self.core.recorder = StateRecorder(self.store, self._wall_offset)
        self.core.recorder.sample_every = svc.sample_every
        self.core.silences = SilenceBook(
            self.state_dir / "silences.sqlite" if svc.store_url is None
            else await asyncio.to_thread(_pg().SilenceStore, svc.store_url), time.time)
        await self.core.silences.open()
        core = self.core
        await self.sockets.open(self.opts.sip_bind or [(g.udpbindaddr, g.bindport), *g.extra_bindaddrs], g, svc,
                                on_datagram=core.on_datagram, on_tcp_message=core.on_tcp_message,
                                on_icmp=core.on_icmp, on_batch_done=core.on_batch_done,
                                on_tcp_connect_error=core.on_tcp_connect_error, on_tls_message=core.on_tls_message,
                                on_ws_message=core.on_ws_message, on_wss_message=core.on_wss_message,
                                on_closed=core.on_closed)
        engine = core.engine = self._engine_class()(
            g, local_address=self.sockets.local_address_selector(g.externip), useragent=g.useragent,
            wallclock=self.wallclock, match_source=svc.match_source_address, respond_options=svc.respond_options)
        self._start_workers()
        self.sockets.pinned = engine.inbound.pinned
        if svc.options_unknown_user_404:  # OPTIONS to a user that is not a peer: 404, like res_pjsip
            engine.inbound.known_user = lambda user: user in self.config.peers or (
                (pj := self.config.pjsip) is not None and (user in pj.endpoints or user in pj.aors))
            engine.inbound.identified = lambda ip: self.identifier.endpoint(ip) is not None
        # the registrar answers REGISTER from the first datagram on (never a 501 during start-up)
        registered = await self._start_registrar()
        host = self.opts.api_host or svc.api_host
        port = self.opts.api_port if self.opts.api_port is not None else svc.api_port
        await self.surfaces.start(host, port, self.opts.manager_conf, self.state_dir)
        self.cluster = await open_cluster(self.config, self.loop, self.clock, self._ownership_changed)
        if self.cluster is not None and self.cluster.k > 1:  # before the load: its first transitions are observations
            await self._start_vantage(self.cluster)
        if self.cluster is not None and svc.store_url is not None:  # `/events?fleet=1`: every node's transitions
            hub, ami, me = self.surfaces.events, self.surfaces.ami, self.cluster.node_id
            hub.fleet = True
            ami_fleet = ami if ami is not None and svc.ami_fleet_events else None  # [ami] fleet_events

            def publish(rec: TransitionRecord) -> None:
                hub.publish_fleet(rec)
                if ami_fleet is not None and rec.node != me:  # this node's own come from its engine
                    ami_fleet.publish_fleet(rec)

            await self.cluster.follow(svc.store_url, self.store, publish, lambda: any(
                s.fleet for s in hub.subscribers) or (ami_fleet is not None and ami_fleet.session_count > 0))
        if self.cluster is not None and svc.store_url is not None:  # the share's state as its last owner left it
            restored = self._restorable(await asyncio.to_thread(self.store.states))
        changed = {n: r.changed_at - self._wall_offset for n, r in restored.items() if r.changed_at is not None}
        await self._load(self.config, {n: r.lastms for n, r in restored.items()}, changed, registered)
        if self.cluster is not None and svc.store_url is not None and core.recorder is not None \
                and self.engine is not None:
            # the share taken at start, as a takeover does (_ownership_changed): the shared store names
            # this node as the owner of a peer started from another node's row (no transition rewrites it)
            me = self.cluster.node_id
            for name, r in restored.items():
                if r.node != me and (taken := self.engine.peer(name)) is not None:
                    core.recorder.save_state(taken)
        self.loaded = True
        core.pump()
        self._follow_realtime()
        self.loop.create_task(self._watch_loop_lag())
        peers = self.config.peers.values()
        log.info("sipqualify started: %d peers (%d qualified), SIP on %s, API on http://%s:%d", len(peers),
                 sum(1 for p in peers if p.qualify_ms),
                 ", ".join(f"{ip}:{port}" for ip, port in self.sockets.local_addresses()), *self.api_addr)

    async def _start_vantage(self, cluster: Cluster) -> None:
        """[cluster] vantage_points > 1: each static peer's state agreed by its vantage points (cluster/vantage.py)."""
        from .cluster.vantage import Held

        store, url = self.store, self.config.service.store_url
        assert store is not None and url is not None

        def read_stored(names: list[str]) -> dict[str, Held]:
            rows = store.states() if len(names) > 100 else {n: r for n in names if (r := store.state_of(n))}
            return {n: Held(r.state, r.lastms, r.rtt_ms, r.changed_at) for n in names if (r := rows.get(n)) is not None}

        v = self.vantage = Vantage(url, cluster.node_id, self.core.report_agreed, read_stored)
        self.core.vantage = v
        assert self.core.recorder is not None
        self.core.recorder.vantage = v
        await v.set_probers(cluster.probers)
        cluster.on_probers = v.set_probers
        v.start()

    def _engine_class(self) -> type[QualifyEngine]:
        if self.opts.workers <= 1:
            return QualifyEngine
        from .workers.mirror import MirrorEngine
        return MirrorEngine

    def _start_workers(self) -> None:
        """`run --workers N`, N > 1: static peers go to N worker processes (workers/pool.py)."""
        from .workers.mirror import MirrorEngine
        from .workers.pool import WorkerPool

        engine = self.engine
        if not isinstance(engine, MirrorEngine):
            return
        engine.local_only = lambda name: self.realtime is not None and name in self.realtime.peers
        self.pool = WorkerPool(self.opts.workers, engine, self.core, self.sockets.local_addresses(),
                               self.config.general, self.config.service, self.opts.log_level)
        self.pool.start()

    def _follow_realtime(self) -> None:
        """Rows followed live; registrations and lastms written back (chan_sip rtupdate=yes)."""
        rt = self.realtime
        if rt is None:
            return
        assert self.committer is not None and self.engine is not None
        engine = self.engine
        self.committer.after_commit.append(
            lambda peer, b: rt.registered(peer, b, p.lastms if (p := engine.peer(peer)) else 0))
        self.feed.listeners.append(lambda ev: rt.transition(ev.peer, ev.lastms))
        if isinstance(rt, PjsipRealtime):
            rt.on_identify = self._identify_changed
        rt.start(self._realtime_changed)

    async def _identify_changed(self) -> None:
        """ps_endpoint_id_ips rows changed: the source-address identification is made again."""
        pj = self.config.pjsip
        self.identifier = Identifier.from_config(pj, await _resolve_identify(pj))

    async def _realtime_changed(self, changed: list[PeerConfig], removed: list[str]) -> None:
        """Realtime rows inserted, changed or deleted: only those peers go to the engine."""
        for name in removed:
            self.config.peers.pop(name, None)
        self.config.peers.update((p.name, p) for p in changed)
        if self.cluster is not None:  # a static row that is another node's share stays out
            self.cluster.set_names(n for n, p in self.config.peers.items() if not p.dynamic)
            removed = [*removed, *(p.name for p in changed if not self.cluster.keeps(p))]
            changed = [p for p in changed if self.cluster.keeps(p)]
        await self._peers_changed(changed, removed)

    async def _ownership_changed(self, gained: list[str], lost: list[str]) -> None:
        """[cluster] membership changed: static peers handed to this node start from their last
        known state (no false transition), their pokes spread over a quarter of a qualify period; the
        ones handed away stop at once."""
        peers = [p for n in gained if (p := self.config.peers.get(n)) is not None]
        assert self.store is not None
        try:
            states = self._restorable(await asyncio.to_thread(self.store.states))
        except Exception as e:  # the store is down: the peers still move, from UNKNOWN
            log.warning("cluster: no stored state for the %d peers taken over (%s): they start UNKNOWN", len(peers), e)
            states = {}
        restored = {n: r.lastms for n, r in states.items()}
        changed_at = {n: r.changed_at - self._wall_offset for n, r in states.items() if r.changed_at is not None}
        freq = min((p.qualifyfreq_ms for p in peers if p.qualify_ms), default=0) / 1000.0
        await self._peers_changed(peers, lost, restored=restored, restored_changed=changed_at, spread_s=freq / 4)
        if self.core.recorder is not None and self.engine is not None:  # the shared store names the new owner now
            for name in gained:
                if (taken := self.engine.peer(name)) is not None:
                    self.core.recorder.save_state(taken)

    def _restorable(self, states: dict[str, PeerStateRecord]) -> dict[str, PeerStateRecord]:
        """The stored states an engine starts its peers from. With vantage points, a covered peer's
        stored state is the state its primary agreed, not what this node's engine saw: the engine
        starts it UNKNOWN, so that its first answer is a transition and so this node's observation
        (never left at the UNKNOWN row written when the peer was gained)."""
        v = self.vantage
        if v is None:
            return states
        return {n: r for n, r in states.items() if not v.covers(n)}

    async def _peers_changed(self, changed: list[PeerConfig], removed: list[str], **engine_kw: Any) -> None:
        """Some peers changed, came or went: only those go to the engine (the others untouched)."""
        assert self.engine is not None
        lit = {p.name: (ip, p.port or default_port(p.transport)) for p in changed if p.host and not p.dynamic
               and (ip := literal(p.host)) is not None}
        # IP literals need no DNS work; a host name (new, or of a removed peer) goes through the watcher
        named = any(p.host and not p.dynamic and p.name not in lit for p in changed) or \
            any(self.dns.state(n) for n in removed)
        addrs = await self.dns.load(self.config.peers.values(), self.config.general) if named else lit
        proxies = await resolve_proxies(changed)
        if self.sockets.sources or any(p.qualify_source for p in changed):  # else nothing to open or close
            self._open_sources(self.config.peers.values())
        self.engine.update(changed, removed, self.clock(), addresses={p.name: addrs.get(p.name) for p in changed},
                           destinations=proxies, **engine_kw)
        self.engine.inbound.apply_bindings()
        self.core.pump()

    def _open_sources(self, peers: Iterable[PeerConfig]) -> None:
        """One UDP socket per distinct `qualify_source` of the peers (sockets.py opens new ones,
        closes unused ones); the engine learns where each is bound. One that cannot be bound is
        an error naming its peers, counted; they send nothing and show why (their transport error)."""
        assert self.engine is not None
        users: dict[Addr, list[str]] = {}
        for p in peers:  # UDP sockets; a tcp/tls peer connects from its source's address (sockets.py)
            if p.qualify_source is not None and p.transport == "udp":
                users.setdefault(p.qualify_source, []).append(p.name)
        bound = self.sockets.sync_sources(users)
        for src, why in bound.items():
            if isinstance(why, str):
                self.counters.source_errors += 1
                names = users[src]
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                log.error("peer %s%s: qualify_source %s %s; its qualify requests are not sent",
                          ", ".join(f"'{n}'" for n in names[:3]), more, source_text(src), why)
        self.engine.set_sources(bound)

    async def _start_registrar(self) -> dict[str, Addr | None]:
        """Registrar for host=dynamic peers; bindings restored from SQLite (expired ones dropped)."""
        assert self.engine is not None
        g = self.config.general
        settings = RegistrarSettings(realm=g.realm, minexpiry=g.minexpiry, maxexpiry=g.maxexpiry,
                                     defaultexpiry=g.defaultexpiry, authfail_limit=g.authfail_limit,
                                     authfail_window=g.authfail_window, authfail_ban=g.authfail_ban,
                                     algorithms=g.auth_algorithms)
        engine, pj = self.engine, self.config.pjsip
        if pj is not None:  # pjsip.conf AORs by res_pjsip_registrar's rules, sip.conf peers by chan_sip's
            self.registrar = PjsipRegistrar(pj, lambda name: self.config.peers.get(name), settings,
                                            useragent=engine.useragent, unavailable=lambda cid: (
                                                (p := engine.peer(cid)) is not None and p.state == UNREACHABLE))
        else:
            self.registrar = Registrar(lambda name: self.config.peers.get(name), settings,
                                       useragent=self.engine.useragent)
        self.feed.registry_listeners.append(self._contact_removed)
        svc = self.config.service
        committer = self.core.committer = BindingCommitter(
            self.state_dir / "bindings.sqlite" if svc.store_url is None
            else await asyncio.to_thread(_pg().BindingStore, svc.store_url, svc.node_id))
        maxexpiry = max([g.maxexpiry, *(a.maximum_expiration for a in pj.aors.values())] if pj else [g.maxexpiry])
        loaded = await asyncio.to_thread(committer.store.load, self.wallclock(), self.clock(), maxexpiry)
        restored = [b for b in loaded if ((p := self.config.peers.get(b.peer)) is not None and p.dynamic)
                    or registered_contact_peer(b.peer, b.contact, pj) is not None]
        self.engine.inbound.registrar = self.registrar
        self.engine.inbound.restore(restored)
        self.core.pump_inbound()
        return {b.peer: b.addr for b in restored}

    def _contact_removed(self, peer: str, status: str, cause: str, addr: Addr | None) -> None:
        """A registered PJSIP contact is gone for good: its state row too (behind NAT a phone's
        contact id changes with its port, and the rows would pile up)."""
        if status == "Removed" and self.store is not None and aor_of(peer) is not None:
            self.store.forget_peers([peer])

    async def _load(self, cfg: Config, restored: dict[str, int], restored_changed: dict[str, float] | None = None,
                    registered: dict[str, Addr | None] | None = None) -> ReloadSummary:
        """(Re)load the peer set: resolved, handed to the engine, registered peers kept bound."""
        assert self.engine is not None
        cluster = self.cluster
        peers = [p for p in cfg.peers.values() if cluster is None or cluster.keeps(p)]
        self.dns.configure(cfg.general, ("udp", "tcp", "tls"))
        addrs = await self.dns.load(peers, cfg.general)
        proxies = await resolve_proxies(peers)
        identifier = Identifier.from_config(cfg.pjsip, await _resolve_identify(cfg.pjsip))
        addrs.update(registered or {})
        self.core.metrics_peer_limit = cfg.service.metrics_peer_limit
        if self.core.recorder is not None:
            self.core.recorder.sample_every = cfg.service.sample_every
        self.core.ready_max_lag_s = float(cfg.service.ready_max_lag_s)
        # before `now` is read: a full collection here took 14-34 ms, and the first poke left that late;
        # then glibc's free heap top back to the system (config/memory.py)
        release_memory()
        self.engine.adopt = lambda cid, uri: registered_contact_peer(cid, uri, cfg.pjsip)
        self.identifier = identifier
        if isinstance(self.registrar, PjsipRegistrar) and cfg.pjsip is not None:
            self.registrar.pj = cfg.pjsip
        self._open_sources(peers)
        now = self.clock()
        summary = self.engine.load(peers, now, addresses=addrs, destinations=proxies, restored=restored,
                                   general=cfg.general, restored_changed=restored_changed)
        for p in peers:  # qualify_targets = all: each target on its own, started by the peer's staggered poke
            if p.qualify_targets == "all" or self.engine.targets(p.name):
                self.engine.set_targets(p.name, self.dns.targets(p.name), now, poke=False)
            transport, addr = self.dns.transport(p.name), addrs.get(p.name)
            if transport is not None and addr is not None:  # no transport written: the one NAPTR chose
                self.engine.set_address(p.name, addr, now, transport)
        self.config = cfg
        engine = self.engine
        reg = self.registrar
        self.feed.set_pjsip(cfg.pjsip, lambda n: (e.state, e.rtt) if (e := engine.peer(n)) else (None, None),
                            [(b.peer, b.contact) for b in reg.bindings.values()] if reg is not None else [])
        self.engine.inbound.apply_bindings()
        self.core.pump_inbound()
        self.sockets.collect_tcp_peers(self.engine.entries())
        self._settle_gc()
        return summary

    def _dns_changed(self, name: str, addr: Addr, old: Addr | None, res: Resolution) -> None:
        """A peer's name resolves to a new address: the engine qualifies it there from now on."""
        log.info("peer '%s': '%s' now resolves to %s:%d (was %s; %s)", name, res.name, addr[0], addr[1],
                 f"{old[0]}:{old[1]}" if old else "unresolved", res.path)
        transport = self.dns.transport(name)
        if self.engine is not None and self.engine.set_address(name, addr, self.clock(), transport):
            if transport not in (None, "udp"):
                self.sockets.collect_tcp_peers(self.engine.entries())
            self.core.pump()
        self.events.publish_dns(name, "changed", addr, old, res.path, None)

    def _dns_targets(self, name: str, res: Resolution, old: Resolution | None) -> None:
        """A `qualify_targets = all` peer's set of targets changed: the new ones are qualified at
        once, the gone ones no more (their samples stay in the store under their keys)."""
        if self.engine is None:
            return
        added, removed = self.engine.set_targets(name, res.targets, self.clock())
        if not added and not removed:
            return
        if any(t.transport != "udp" for t in res.targets):  # where a new TCP/TLS target's connection goes
            self.sockets.collect_tcp_peers(self.engine.entries())
        log.info("peer '%s': '%s' targets changed: %s (%s)", name, res.name,
                 ", ".join([*(f"+{t}" for t in added), *(f"-{t}" for t in removed)]), res.path)
        self.core.pump()
        self.events.publish_targets(name, added, removed, res.path)

    def _dns_failed(self, name: str, err: DnsError) -> None:
        st = self.dns.state(name)
        self.events.publish_dns(name, "failed", None, st.addr if st else None, None, err.reason)

    def _read_config(self) -> Config:
        if not self.opts.config_path:
            raise ConfigError([])
        cfg = load_config(self.opts.config_path)
        for m in cfg.warnings:
            log.warning("%s", m)
        return cfg

    async def run_forever(self) -> None:
        for sig, handler in ((signal.SIGHUP, self._sighup), (signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)):
            try:
                self.loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):
                pass
        await self._stopped.wait()
        await self.close()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        if self.cluster is not None:  # leave the group first: the survivors take the peers over at once
            await self.cluster.close()
        if self.vantage is not None:
            await self.vantage.close()
        self.dns.close()
        if self.pool is not None:
            await self.pool.close()
        if self.realtime is not None:
            await self.realtime.close()
        self.core.close()
        await self.surfaces.close()
        await self.sockets.aclose()
        if self.core.recorder is not None and self.engine is not None:
            for p in self.engine.peers():
                self.core.recorder.save_state(p)
        if self.core.committer is not None:
            self.core.committer.close()
            self.core.committer = None
        if self.core.silences is not None:
            self.core.silences.close()
            self.core.silences = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None

    def _sighup(self) -> None:
        self.loop.create_task(self._reload_logged())

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except ConfigError as e:
            log.error("reload failed, keeping the running configuration:\n%s", e)

    async def reload(self) -> ReloadSummary:
        """`sip reload`: re-read config; peers added/removed; unchanged peers keep state."""
        assert self.engine is not None and self.store is not None
        try:
            cfg = self._read_config() if self.opts.config is None else self.opts.config
        except ConfigError:
            self.counters.reload_errors += 1
            raise
        if self.realtime is not None:  # `sip reload` keeps the realtime peers last loaded
            self.realtime.rejoin(cfg)
        restored = {n: r.lastms for n, r in self._restorable(await asyncio.to_thread(self.store.states)).items()}
        summary = await self._load(cfg, restored)
        if self.cluster is not None:  # peers handed away on a reload are not forgotten: they may come back
            self.cluster.set_names(n for n, p in cfg.peers.items() if not p.dynamic)
        self.store.forget_peers([n for n in summary.removed if n not in cfg.peers])
        self.counters.reloads += 1
        self.counters.last_reload = time.time()
        self.core.pump()
        log.info("Reloading SIP: %d added, %d removed, %d changed, %d unchanged", len(summary.added),
                 len(summary.removed), len(summary.changed), len(summary.unchanged))
        return summary

    @staticmethod
    def _settle_gc() -> None:
        """Peers and config live as long as the daemon: move them out of the cyclic GC's
        way (gc.freeze), and collect rarely; the hot path allocates no cycles. Without this,
        full collections over a large peer set pause the loop for tens of ms and inflate RTTs.
        The collection itself runs in `_load` before the engine reads the clock, so the first
        poke leaves on the stagger grid (asterisk-differences.md item 10)."""
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)

    async def _watch_loop_lag(self) -> None:
        n = 0
        while not self._stopped.is_set():
            t0 = self.clock()
            await asyncio.sleep(0.25)
            lag = (self.clock() - t0 - 0.25) * 1000
            self.counters.loop_lag_max_ms = max(self.counters.loop_lag_max_ms * 0.99, lag)
            n += 1
            if n % 4 == 0 and self.loaded:  # the liveness watchdog, once a second (qualify/watchdog.py)
                self.core.self_check()

    def wall(self, t: float) -> float:
        return self._wall_offset + t

    def qualify(self, name: str, wait: bool = True) -> Coroutine[Any, Any, QualifyResult | None]:
        return self.core.qualify(name, wait)


async def _resolve_identify(pj: PjsipConfig | None) -> dict[str, list[str]]:
    """The addresses (IPv4 and IPv6, first of each) of the host names of identify `match=`."""
    names = hostnames(m for i in pj.identifies.values() for m in i.match) if pj is not None else []
    out: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        found = [await resolve_host(name, families=(fam,)) for fam in (socket.AF_INET, socket.AF_INET6)]
        out[name] = [a for a in found if a is not None]
    return out


def _pg() -> ModuleType:
    """store/postgres.py, imported when a [store] url asks for it (psycopg is loaded only then)."""
    from .store import postgres

    return postgres
