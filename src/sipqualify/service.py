"""The daemon: wires config, the sans-I/O engine, sockets, the store and the API together.

This is the thin asyncio shell of STYLE.md §2: on a datagram or a timer it calls the
engine, sends what the engine returns, re-arms one timer and dispatches events. Nothing
here decides qualify semantics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .addr import Addr
from .config import load_config
from .model import Config, ConfigError, ConfigMessage, PeerConfig
from .net.limits import prepare_open_files, tcp_connection_cap
from .net.resolve import resolve_peers, resolve_proxies
from .net.tcp import TcpServer
from .net.udp import LocalAddressSelector, UdpEndpoint, open_udp
from .qualify import state as st
from .qualify.engine import Peer, QualifyEngine, ReloadSummary
from .qualify.events import QualifyResult, StateChanged, TransportError
from .qualify.inbound import (
    TCP,
    UDP,
    BindingArmed,
    BindingChanged,
    BindingDisarmed,
    Flow,
    FlowPinned,
    InboundEvent,
    RegistryChanged,
)
from .qualify.registrar import Binding, Registrar, RegistrarSettings
from .store import Store, TransitionRecord
from .store.bindings import BindingStore
from .store.sqlite import FileWatch
from .views import PeerView

if TYPE_CHECKING:
    from aiohttp import web

    from .api.ami import AmiServer
    from .api.webhooks import WebhookDispatcher

log = logging.getLogger("sipqualify")


def default_state_dir() -> Path:
    env = os.environ.get("SIPQUALIFY_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "sipqualify"


def ensure_token(state_dir: Path, configured: str | None) -> str:
    """The API token: from the config, else a generated file readable only by its owner."""
    if configured:
        return configured
    path = state_dir / "api-token"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


@dataclass
class ServiceOptions:
    config_path: str | None
    api_host: str | None = None
    api_port: int | None = None
    state_dir: str | None = None
    config: Config | None = None  # used instead of reading config_path (demo)
    sip_bind: list[Addr] | None = None  # override [general] bind addresses (demo, tests)
    manager_conf: str | None = None  # `run --manager-conf FILE`


@dataclass
class Counters:
    started: float = field(default_factory=time.time)
    reloads: int = 0
    reload_errors: int = 0
    icmp_errors: int = 0
    loop_lag_max_ms: float = 0.0
    scheduler_lag_s: float = 0.0  # how late the last timer batch ran


class Service:
    def __init__(self, opts: ServiceOptions) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.config: Config = Config()
        self.engine: QualifyEngine | None = None
        self.store: Store | None = None
        self.endpoints: dict[int, UdpEndpoint] = {}
        self.tcp: TcpServer | None = None  # [general] tcpenable: SIP over TCP, inbound
        self._tcp_static: set[Addr] = set()  # static transport=tcp peers: we connect to them
        self.counters = Counters()
        self.token = ""
        self.state_dir = Path(".")
        self.api_addr: Addr = ("127.0.0.1", 0)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Engine time is time.monotonic(), not loop.time(): uvloop's loop.time() is libuv's
        # cached millisecond clock, far too coarse for RTTs measured in microseconds.
        self.clock = time.monotonic
        self._wall_offset = time.time() - self.clock()
        self.wallclock = time.time  # bindings: only for their expiry as stored and shown (tests step it)
        self._waiters: dict[str, list[asyncio.Future[QualifyResult]]] = {}
        self._listeners: list[Callable[[StateChanged], None]] = []
        self._stopped = asyncio.Event()
        self._api_runner: web.AppRunner | None = None
        self.ami: AmiServer | None = None
        self.registrar: Registrar | None = None  # owned by the inbound endpoint; here for the read side
        self.bindings: BindingStore | None = None
        self._binding_queue: list[tuple[str, Binding | None, asyncio.Future[None]]] = []
        self._binding_flushing = False
        self._expiry_timers: dict[str, asyncio.TimerHandle] = {}  # peer -> its binding's expiry
        self._binding_failure: dict[str, Any] | None = None  # cause and since, until a store succeeds
        self._bindings_file: FileWatch | None = None
        self.loaded = False  # peers loaded and scheduled (readiness)
        self.webhooks: WebhookDispatcher | None = None
        self._pending: dict[str, deque[StateChanged]] = {}  # transitions waiting for their COMMIT
        self._committed: list[TransitionRecord] = []  # committed, not yet handled on the loop
        self._committed_lock = threading.Lock()
        from .api.events import EventHub

        self.events = EventHub()
        from .api.metrics import RttHistogram

        self.rtt_groups: dict[str, RttHistogram] = {}  # per PeerConfig.group
        self.rtt_peers: dict[str, RttHistogram] = {}  # peers with rtt_histogram = true
        # responses by status class, per peer, for as many peers as get per-peer metric series
        self.responses_by_peer: dict[str, list[int]] = {}
        self._hist_cls = RttHistogram

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        prepare_open_files(self.loop)  # before anything opens a file: each TCP connection is one
        self.config = self.opts.config if self.opts.config is not None else self._read_config()
        svc = self.config.service
        self.state_dir = Path(self.opts.state_dir or svc.state_dir or default_state_dir())
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.token = ensure_token(self.state_dir, svc.api_token)
        self.events.max_subscribers = svc.api_max_event_subscribers
        self.store = Store(
            str(self.state_dir / "sipqualify.sqlite"),
            sample_retention_s=svc.sample_retention_s,
            transition_retention_s=svc.transition_retention_s,
            on_transition_committed=self._transition_committed,
        )
        restored = await asyncio.to_thread(self.store.open)  # 1M peers: seconds; keep the loop free
        await self._open_sockets()
        g = self.config.general
        self.engine = QualifyEngine(
            g,
            local_address=LocalAddressSelector(
                {fam: ep.local for fam, ep in self.endpoints.items()}, externip=g.externip
            ),
            useragent=g.useragent,
            wallclock=self.wallclock,
            match_source=svc.match_source_address,
            respond_options=svc.respond_options,
        )
        if svc.options_unknown_user_404:  # OPTIONS to a user that is not a peer: 404, like res_pjsip
            self.engine.inbound.known_user = lambda user: user in self.config.peers
        # the registrar answers REGISTER from the first datagram on (never a 501 during start-up)
        registered = await self._start_registrar()
        from .api.http import start_api

        host = self.opts.api_host or svc.api_host
        port = self.opts.api_port if self.opts.api_port is not None else svc.api_port
        self._api_runner, self.api_addr = await start_api(self, host, port)
        await self._start_ami()
        await self._start_webhooks()
        peers = self._udp_only(list(self.config.peers.values()), self.config.general.tcpenable)
        addrs = await resolve_peers(peers)
        proxies = await resolve_proxies(peers)
        addrs.update(registered)
        self.engine.load(
            peers,
            self.clock(),
            addresses=addrs,
            destinations=proxies,
            restored={n: r.lastms for n, r in restored.items()},
            restored_changed={n: r.changed_at - self._wall_offset for n, r in restored.items()
                              if r.changed_at is not None},
        )
        self.engine.inbound.apply_bindings()
        self._pump_inbound()
        self._collect_tcp_peers()
        self._log_unresolved(peers, addrs)
        self._settle_gc()
        self.loaded = True
        self._pump()
        self.loop.create_task(self._watch_loop_lag())
        log.info(
            "sipqualify started: %d peers (%d qualified), SIP on %s, API on http://%s:%d",
            len(peers),
            sum(1 for p in peers if p.qualify_ms),
            ", ".join(f"{ep.local[0]}:{ep.local[1]}" for ep in self.endpoints.values()),
            *self.api_addr,
        )

    def add_listener(self, cb: Callable[[StateChanged], None]) -> None:
        """Called with every state transition as the engine reports it (AMI, event stream)."""
        self._listeners.append(cb)

    async def _start_registrar(self) -> dict[str, Addr | None]:
        """Registrar for host=dynamic peers; bindings restored from SQLite (expired ones dropped)."""
        assert self.engine is not None
        g = self.config.general
        self.registrar = Registrar(lambda name: self.config.peers.get(name),
                                   RegistrarSettings(realm=g.realm, minexpiry=g.minexpiry, maxexpiry=g.maxexpiry,
                                                     defaultexpiry=g.defaultexpiry, authfail_limit=g.authfail_limit,
                                                     authfail_window=g.authfail_window,
                                                     authfail_ban=g.authfail_ban, algorithms=g.auth_algorithms),
                                   useragent=self.engine.useragent)
        self.bindings = BindingStore(self.state_dir / "bindings.sqlite")
        self._bindings_file = FileWatch(str(self.state_dir / "bindings.sqlite"))
        loaded = await asyncio.to_thread(self.bindings.load, self.wallclock(), self.clock(), g.maxexpiry)
        restored = [b for b in loaded if (p := self.config.peers.get(b.peer)) is not None and p.dynamic]
        inbound = self.engine.inbound
        inbound.registrar = self.registrar
        inbound.restore(restored)
        self._pump_inbound()
        return {b.peer: b.addr for b in restored}

    def _commit_binding(self, ev: BindingChanged) -> None:
        """A binding change is stored before its REGISTER is answered (in a task, group-committed
        with its neighbours); then the endpoint answers (500 if it could not be stored)."""
        if ev.token == 0:  # an expired binding: nothing waits for its delete
            task = self.loop.create_task(self._store_binding(ev.peer, None))
            task.add_done_callback(partial(_log_expiry_failure, ev.peer))
        else:
            self.loop.create_task(self._commit_register(ev))

    async def _commit_register(self, ev: BindingChanged) -> None:
        error = None
        try:
            await self._store_binding(ev.peer, ev.binding)  # stored before the 200 is sent
        except sqlite3.Error as e:
            error = f"{type(e).__name__}: {e}"
            if self._binding_failure is None:  # once per episode: it ends at the next stored binding
                self._binding_failure = {"cause": error, "since": time.time()}
                log.error("cannot store the binding of '%s' (%s): answering 500 until bindings can be stored",
                          ev.to, e)
        else:
            if self._binding_failure is not None:
                log.warning("bindings are stored again (failing since %.0f s)",
                            time.time() - self._binding_failure["since"])
                self._binding_failure = None
        if self.engine is not None:
            self.engine.inbound.commit_done(ev.token, error, self.clock())
            self._pump()  # the answer, and the poke that follows a REGISTER, go out now

    def storage_health(self) -> dict[str, dict[str, Any]]:
        """Per database: `ok`, and while not, the `cause` and `since` of the failure (for /readyz)."""
        out: dict[str, dict[str, Any]] = {}
        if self.store is not None:
            out["store"] = self.store.health()
        if self.bindings is not None:
            vanished = self._bindings_file.check() if self._bindings_file is not None else None
            failure = vanished or self._binding_failure
            out["bindings"] = {"ok": False, **failure} if failure else {"ok": True, "cause": None, "since": None}
        return out

    async def _store_binding(self, peer: str, b: Binding | None) -> None:
        """Group commit: every binding change that arrives while a commit is running goes into
        the next one, so a burst of REGISTERs costs a few transactions, not one each."""
        fut: asyncio.Future[None] = self.loop.create_future()
        self._binding_queue.append((peer, b, fut))
        if not self._binding_flushing:
            self._binding_flushing = True
            self.loop.create_task(self._flush_bindings())
        await fut

    BINDING_WINDOW = 0.002  # REGISTERs within 2 ms of the first share one commit

    async def _flush_bindings(self) -> None:
        try:
            while self._binding_queue:
                if len(self._binding_queue) < 256:
                    await asyncio.sleep(self.BINDING_WINDOW)
                batch, self._binding_queue = self._binding_queue, []
                try:
                    assert self.bindings is not None
                    await asyncio.to_thread(self.bindings.apply, [(p, b) for p, b, _ in batch])
                except Exception as e:  # each waiter gets the error and answers 500
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e if isinstance(e, sqlite3.Error) else sqlite3.Error(str(e)))
                    continue
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._binding_flushing = False

    def _publish_registry(self, peer: str, status: str, cause: str, addr: Addr | None) -> None:
        """Registered / Unregistered / Rejected to the AMI port and the event stream."""
        if self.ami is not None:
            self.ami.publish_registry(peer, status, cause, addr)
        self.events.publish({"peer": peer, "peer_status": status, "cause": cause, "time": time.time(),
                             "address": f"{addr[0]}:{addr[1]}" if addr else None})

    def _arm_expiry(self, b: Binding) -> None:
        # monotonic, as the loop's timers: a wall-clock step neither ends a binding nor stretches it
        delay = max(0.0, b.expires_mono - self.clock())
        old = self._expiry_timers.pop(b.peer, None)
        if old is not None:  # a refresh replaces the timer (10,000 phones re-registering each
            old.cancel()  # minute would otherwise keep an hour of dead timers each)
        self._expiry_timers[b.peer] = self.loop.call_later(delay, self._expire, b.peer, b.expires_mono)

    def _disarm_expiry(self, peer: str) -> None:
        old = self._expiry_timers.pop(peer, None)
        if old is not None:
            old.cancel()

    def _expire(self, peer: str, expires_mono: float) -> None:
        self._expiry_timers.pop(peer, None)
        if self.engine is None or self.bindings is None:
            return  # closed
        self.engine.inbound.expire(peer, expires_mono, self.clock())
        self._pump()

    async def _start_webhooks(self) -> None:
        from .api.webhooks import Webhook, WebhookDispatcher

        hooks = []
        for raw in self.config.service.webhooks:
            hooks.append(Webhook(
                id=str(raw["id"]), url=str(raw["url"]), secret=str(raw.get("secret", "")),
                peers=[str(x) for x in raw.get("peers", [])],  # type: ignore[attr-defined]
                states=[str(x).upper() for x in raw.get("states", [])],  # type: ignore[attr-defined]
                timeout_s=float(raw.get("timeout", 5.0)),  # type: ignore[arg-type]
            ))
        if hooks:
            self.webhooks = WebhookDispatcher(self, hooks, self.state_dir / "webhooks.sqlite")
            await self.webhooks.start()

    async def _start_ami(self) -> None:
        from .api.ami import AmiConfig, AmiServer, load_manager_conf, user_from_options
        from .api.http import is_loopback

        svc = self.config.service
        path = self.opts.manager_conf or svc.manager_conf
        cfg = load_manager_conf(path) if path else AmiConfig()
        errors = [m for m in cfg.messages if m.severity == "error"]
        for m in cfg.messages:
            (log.error if m.severity == "error" else log.warning)("%s", m)
        if errors:
            raise ConfigError(errors)
        for name, opts in svc.ami_users.items():
            cfg.users[name] = user_from_options(name, opts)
        if svc.ami_enabled is not None:
            cfg.enabled = svc.ami_enabled
        elif not path and svc.ami_users:
            cfg.enabled = True
        if svc.ami_listen is not None:
            cfg.bindaddr, cfg.port = svc.ami_listen
        if svc.ami_banner:
            cfg.banner = svc.ami_banner
        cfg.peerstatus_time = svc.ami_peerstatus_time
        if not cfg.enabled:
            return
        if not cfg.users:
            raise ConfigError([ConfigMessage("error", path or "ami", 0, "AMI is enabled but no manager user is "
                                             "configured", option="users")])
        if not is_loopback(cfg.bindaddr) and not any(u.acl for u in cfg.users.values()):
            log.warning("AMI listens on %s with no permit/deny ACL on any user", cfg.bindaddr)
        self.ami = AmiServer(self, cfg)
        await self.ami.start()

    def _read_config(self) -> Config:
        if not self.opts.config_path:
            raise ConfigError([])
        cfg = load_config(self.opts.config_path)
        for m in cfg.warnings:
            log.warning("%s", m)
        return cfg

    async def _open_sockets(self) -> None:
        g = self.config.general
        binds: list[Addr] = self.opts.sip_bind or [(g.udpbindaddr, g.bindport), *g.extra_bindaddrs]
        optional: set[Addr] = set()
        if binds[0][0] == "0.0.0.0" and not any(":" in h for h, _ in binds):
            # a wildcard IPv4 bind also gets the IPv6 wildcard, so IPv6 peers work out of the box
            binds.append(("::", binds[0][1]))
            optional.add(binds[-1])
        for host, port in binds:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            if fam in self.endpoints:
                continue  # one socket per family
            try:
                ep = await open_udp(host, port, self._on_datagram, self._on_icmp, self.clock, self._on_batch_done)
            except OSError as e:
                if (host, port) in optional:
                    log.info("no IPv6 SIP socket on [%s]:%d (%s); IPv4 only", host, port, e)
                    continue
                raise OSError(e.errno, f"cannot bind SIP socket {host}:{port}: {e.strerror}") from None
            self.endpoints[fam] = ep
        if g.tcpenable:  # a TCP listener on the address and port of each UDP socket
            svc = self.config.service
            self.tcp = TcpServer(self._on_tcp_message, clock=self.clock, on_batch_done=self._on_batch_done,
                                 idle_timeout=svc.tcp_idle_timeout_s,
                                 max_connections=tcp_connection_cap(svc.tcp_max_connections),
                                 max_per_ip=svc.tcp_max_connections_per_ip,
                                 max_unfinished=svc.tcp_max_unfinished_bytes, message_timeout=svc.tcp_message_timeout_s)
            self.tcp.on_connect_error = self._on_tcp_connect_error
            for ep in self.endpoints.values():
                try:
                    await self.tcp.listen(*ep.local)
                except OSError as e:
                    if any(ep.local[1] == port and ep.local[0] == host.strip("[]") for host, port in optional):
                        log.info("no IPv6 SIP TCP socket on [%s]:%d (%s)", ep.local[0], ep.local[1], e)
                        continue
                    raise OSError(e.errno, f"cannot bind SIP TCP socket {ep.local[0]}:{ep.local[1]}: "
                                           f"{e.strerror}") from None
            log.info("SIP over TCP on %s", ", ".join(f"{ip}:{port}" for ip, port in self.tcp.locals))

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
        if self._timer is not None:
            self._timer.cancel()
        for handle in self._expiry_timers.values():
            handle.cancel()
        self._expiry_timers.clear()
        if self.ami is not None:
            await self.ami.close()
            self.ami = None
        self.events.close()
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
        if self._api_runner is not None:
            await self._api_runner.cleanup()
            self._api_runner = None
        for ep in self.endpoints.values():
            ep.close()
        self.endpoints.clear()
        if self.tcp is not None:
            self.tcp.close()
        if self.store is not None and self.engine is not None:
            self._save_all_states()
        if self.bindings is not None:
            self.bindings.close()
            self.bindings = None
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None

    def _save_all_states(self) -> None:
        assert self.store is not None and self.engine is not None
        for p in self.engine.peers():
            self._save_state(p)

    # ------------------------------------------------------------------ reload

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
        peers = self._udp_only(list(cfg.peers.values()), cfg.general.tcpenable)
        addrs = await resolve_peers(peers)
        proxies = await resolve_proxies(peers)
        restored = {n: r.lastms for n, r in (await asyncio.to_thread(self.store.states)).items()}
        summary = self.engine.load(
            peers, self.clock(), addresses=addrs, destinations=proxies, restored=restored, general=cfg.general
        )
        self.config = cfg
        self.store.forget_peers(summary.removed)
        self.counters.reloads += 1
        self.engine.inbound.apply_bindings()
        self._pump_inbound()
        self._collect_tcp_peers()
        self._log_unresolved(peers, addrs)
        self._settle_gc()
        self._pump()
        log.info(
            "Reloading SIP: %d added, %d removed, %d changed, %d unchanged",
            len(summary.added),
            len(summary.removed),
            len(summary.changed),
            len(summary.unchanged),
        )
        return summary

    @staticmethod
    def _settle_gc() -> None:
        """Peers and config live as long as the daemon: move them out of the cyclic GC's
        way (gc.freeze), and collect rarely; the hot path allocates no cycles. Without this,
        full collections over a large peer set pause the loop for tens of ms and inflate RTTs."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)

    @staticmethod
    def _udp_only(peers: list[PeerConfig], tcp: bool = False) -> list[PeerConfig]:
        """With `tcpenable`, a static `transport=tcp` peer is qualified over a TCP connection
        sipqualify opens (and keeps), as chan_sip does. A dynamic peer is qualified over the
        transport it registered with (its binding's). TLS is not implemented: warned, and
        qualified over UDP rather than with a Via naming a transport the datagram does not use."""
        import dataclasses

        out = []
        for p in peers:
            if p.transport == "udp" or (tcp and p.transport == "tcp" and not p.dynamic):
                out.append(p)
                continue
            if not (tcp and p.transport == "tcp"):  # a dynamic tcp peer: its binding says (no warning)
                log.warning("peer '%s' (%s): transport=%s is not supported by the daemon yet; qualified over UDP",
                            p.name, p.source, p.transport)
            out.append(dataclasses.replace(p, transport="udp"))
        return out

    def _collect_tcp_peers(self) -> None:
        """Destinations of static tcp peers: sending to one opens a connection if there is none."""
        assert self.engine is not None
        if self.tcp is None:  # no tcpenable: no tcp peers (and no walk over a million peers)
            return
        self._tcp_static = {p.dest for p in self.engine.peers()
                            if p.transport == "tcp" and not p.cfg.dynamic and p.dest is not None}

    def _on_tcp_connect_error(self, addr: Addr, reason: str) -> None:
        # like an ICMP error for UDP: counted on the peer; its give-up timer decides the state
        if self.engine is not None:
            self.engine.transport_error(addr, self.clock(), f"tcp-connect-{reason}")
            self._pump()

    def _log_unresolved(self, peers: list[PeerConfig], addrs: dict[str, Addr | None]) -> None:
        for p in peers:
            if p.host and not p.dynamic and addrs.get(p.name) is None:
                log.warning("peer '%s': cannot resolve host '%s' (%s)", p.name, p.host, p.source)

    # ------------------------------------------------------------------ the shell

    def _on_datagram(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is None:  # sockets open a moment before the engine exists
            return
        # t_rx: the kernel's receive time, so loop delays do not inflate RTTs
        self.engine.front.receive(data, addr, t_rx, UDP)

    def _on_tcp_message(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is None or self.tcp is None:
            return
        self.engine.front.receive(data, addr, t_rx, TCP)  # answers go back over this connection

    def _on_batch_done(self) -> None:
        if self.engine is not None:
            self._pump()  # answers, events and the timer, once per batch of datagrams

    def _on_icmp(self, addr: Addr, reason: str) -> None:
        self.counters.icmp_errors += 1
        if self.engine is not None:
            self.engine.transport_error(addr, self.clock(), reason)

    TIMER_BATCH = 4  # pokes per loop turn: each batch is sent with its own fresh timestamp

    def _on_timer(self) -> None:
        now = self.clock()
        if self._timer_at is not None:
            self.counters.scheduler_lag_s = max(0.0, now - self._timer_at)
        self._timer = None
        self._timer_at = None
        assert self.engine is not None
        self.engine.handle_timer(now, limit=self.TIMER_BATCH)
        self._pump()  # re-arms at once (call_later 0) when more timers are due

    def _pump(self) -> None:
        eng = self.engine
        assert eng is not None
        self._pump_inbound()  # answers first: a REGISTER's 200 OK goes out before the poke it causes
        send = self._send
        for data, dest in eng.datagrams_to_send():
            send(data, dest)
        while (ev := eng.next_event()) is not None:
            self._dispatch(ev)
        when = eng.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = (
                self.loop.call_later(max(0.0, when - self.clock()), self._on_timer) if when is not None else None
            )
            self._timer_at = when

    def _pump_inbound(self) -> None:
        """The inbound endpoint's answers, each over the flow it names, and its events."""
        assert self.engine is not None
        inbound = self.engine.inbound
        for data, flow in inbound.sends():
            self._send_on(data, flow)
        while (ev := inbound.next_event()) is not None:
            self._dispatch_inbound(ev)

    def _dispatch_inbound(self, ev: InboundEvent) -> None:
        if isinstance(ev, BindingChanged):
            self._commit_binding(ev)
        elif isinstance(ev, BindingArmed):
            self._arm_expiry(ev.binding)
        elif isinstance(ev, BindingDisarmed):
            self._disarm_expiry(ev.peer)
        elif isinstance(ev, FlowPinned):
            if self.tcp is not None:  # a pinned connection is kept when room is needed
                self.tcp.mark_registered(ev.remote, ev.pinned)
        elif isinstance(ev, RegistryChanged):
            self._publish_registry(ev.peer, ev.status, ev.cause, ev.addr)

    def _send_on(self, data: bytes, flow: Flow) -> None:
        """An answer: over the connection its request came over (dropped and counted when that
        is gone), else over UDP."""
        if flow.transport == TCP:
            if self.tcp is not None and not self.tcp.send(flow.remote, data):
                self.tcp.stats["no_connection"] += 1
            return
        dest = flow.remote
        ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def _send(self, data: bytes, dest: Addr) -> None:
        """Over the TCP connection from `dest` if there is one, else over UDP; but never over UDP
        to a peer registered over TCP whose connection is gone (dropped and counted: its give-up
        timer makes it UNREACHABLE, as Asterisk does when the connection is lost)."""
        tcp = self.tcp
        if tcp is not None:
            if tcp.send(dest, data):
                return
            if dest in self._tcp_static:  # a tcp peer: open (or wait for) our connection to it
                tcp.connect_and_send(dest, data)
                return
            if self.engine is not None and self.engine.inbound.pinned(dest):
                tcp.stats["no_connection"] += 1
                return
        ep = self.endpoints.get(socket.AF_INET6 if ":" in dest[0] else socket.AF_INET)
        if ep is not None:
            ep.sendto(data, dest)

    def wall(self, t: float) -> float:
        return self._wall_offset + t

    def _dispatch(self, ev: StateChanged | QualifyResult | TransportError) -> None:
        store = self.store
        assert store is not None and self.engine is not None
        if isinstance(ev, QualifyResult):
            if ev.state != st.UNMONITORED:  # a forced poke of an unmonitored peer records nothing
                if ev.rtt is not None:
                    self._observe_rtt(ev.peer, ev.rtt)
                if ev.status_code is not None:
                    classes = self.responses_by_peer.get(ev.peer)
                    if classes is None and len(self.responses_by_peer) < self.config.service.metrics_peer_limit:
                        classes = self.responses_by_peer[ev.peer] = [0] * 7
                    if classes is not None:
                        classes[min(ev.status_code // 100, 6)] += 1
                store.record_sample(ev.peer, self._wall_offset + ev.time,
                                    ev.rtt * 1000 if ev.rtt is not None else None, ev.status_code, ev.transmissions)
            if self._waiters:
                for fut in self._waiters.pop(ev.peer, ()):
                    if not fut.done():
                        fut.set_result(ev)
        elif isinstance(ev, StateChanged):
            # current state is stored on every transition (and for every peer at shutdown):
            # enough to restore it, without an upsert per transaction
            p = self.engine.peer(ev.peer)
            if p is not None:
                self._save_state(p)
            store.record_transition(
                ev.peer, self.wall(ev.time), ev.old, ev.new, ev.lastms, ev.maxms,
                ev.rtt * 1000 if ev.rtt is not None else None,
            )
            # logged and published (AMI, event stream, webhooks) only once committed, see
            # _transition_committed: whatever was reported survives a kill -9
            self._pending.setdefault(ev.peer, deque()).append(ev)
        elif isinstance(ev, TransportError):
            log.debug("ICMP %s from %s:%d (peer %s)", ev.reason, ev.addr[0], ev.addr[1], ev.peer)

    def _observe_rtt(self, name: str, rtt: float) -> None:
        p = self.engine.peer(name) if self.engine is not None else None
        if p is None:
            return
        cfg = p.cfg
        h = self.rtt_groups.get(cfg.group)
        if h is None:
            h = self.rtt_groups[cfg.group] = self._hist_cls()
        h.observe(rtt)
        if cfg.rtt_histogram:
            ph = self.rtt_peers.get(name)
            if ph is None:
                ph = self.rtt_peers[name] = self._hist_cls()
            ph.observe(rtt)

    def _transition_committed(self, rec: TransitionRecord) -> None:
        # called on the store's writer thread after COMMIT: one loop wake-up per batch, not per
        # record (each wake-up is a write to the loop's self-pipe)
        with self._committed_lock:
            self._committed.append(rec)
            if len(self._committed) > 1:
                return
        self.loop.call_soon_threadsafe(self._drain_committed)

    def _drain_committed(self) -> None:
        with self._committed_lock:
            recs, self._committed = self._committed, []
        for rec in recs:
            self._log_transition(rec)

    def _log_transition(self, rec: TransitionRecord) -> None:
        self.events.publish(rec)
        if self.webhooks is not None:
            self.webhooks.notify()
        q = self._pending.get(rec.peer)
        ev = q.popleft() if q else None
        if q is not None and not q:
            del self._pending[rec.peer]
        if ev is None:
            return
        if not ev.silent:
            line = ev.log_line()
            log.warning("%s", line) if ev.new == st.UNREACHABLE else log.info("%s", line)
        for cb in self._listeners:
            cb(ev)

    def _save_state(self, p: Peer) -> None:
        assert self.store is not None
        self.store.save_state(
            p.name,
            p.state,
            p.lastms,
            p.maxms,
            p.rtt * 1000 if p.rtt is not None else None,
            self.wall(p.last_change) if p.last_change is not None else None,
            time.time(),
        )

    async def _watch_loop_lag(self) -> None:
        while not self._stopped.is_set():
            t0 = self.clock()
            await asyncio.sleep(0.25)
            lag = (self.clock() - t0 - 0.25) * 1000
            self.counters.loop_lag_max_ms = max(self.counters.loop_lag_max_ms * 0.99, lag)

    # ------------------------------------------------------------------ queries

    async def qualify(self, name: str, wait: bool = True) -> QualifyResult | None:
        assert self.engine is not None
        fut: asyncio.Future[QualifyResult] = self.loop.create_future()
        if not self.engine.qualify(name, self.clock()):
            raise KeyError(name)
        self._waiters.setdefault(name, []).append(fut)
        self._pump()
        if not wait:
            return None
        return await asyncio.wait_for(fut, timeout=70)

    def view(self, p: Peer) -> PeerView:
        cfg = p.cfg
        b = self.registrar.bindings.get(p.name) if self.registrar is not None else None
        addr = p.addr
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
            transport=b.transport if b else cfg.transport,
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
            expire=max(0, int(b.expires_mono - self.clock())) if b else -1,
            rtt_ms=p.rtt * 1000 if p.rtt is not None else None,
            last_qualify=self.wall(p.last_qualify) if p.last_qualify is not None else None,
            last_change=self.wall(p.last_change) if p.last_change is not None else None,
            qualifies=p.qualifies,
            timeouts=p.timeouts,
            retransmissions=p.retransmissions,
        )

    def views(self) -> list[PeerView]:
        assert self.engine is not None
        return [self.view(p) for p in self.engine.peers()]

    def status(self) -> dict[str, Any]:
        assert self.engine is not None
        from dataclasses import asdict

        return {
            "uptime_s": round(time.time() - self.counters.started, 3),
            "peers": len(self.engine),
            "qualified": sum(1 for p in self.engine.peers() if p.maxms),
            "engine": asdict(self.engine.snapshot_stats()),
            "service": asdict(self.counters),
            "store": self.store.stats if self.store is not None else {},
            "sip": [{"ip": ep.local[0], "port": ep.local[1]} for ep in self.endpoints.values()],
            "tcp": self.tcp.snapshot() if self.tcp is not None else None,
            "registrar": self.registrar_stats(),
        }

    def registrations(self) -> list[dict[str, Any]]:
        """The registrar's bindings (like `pjsip show contacts`), by peer name."""
        if self.registrar is None:
            return []
        now, wall = self.clock(), self.wallclock()
        # what is left is monotonic; expires_at is when that is by the wall clock as it is now
        return [{"peer": b.peer, "contact": b.contact, "address": b.addr[0], "port": b.addr[1],
                 "transport": b.transport, "useragent": b.useragent, "path": b.path, "call_id": b.call_id,
                 "cseq": b.cseq, "nat": b.nat, "expires_at": round(wall + max(0.0, b.expires_mono - now), 3),
                 "expires_in": max(0, int(b.expires_mono - now))}
                for _, b in sorted(self.registrar.bindings.items())]

    def registrar_stats(self) -> dict[str, int] | None:
        if self.registrar is None:
            return None
        txns = self.engine.inbound.server_txns if self.engine is not None else None
        assert txns is not None
        return {**self.registrar.counters, "bindings": len(self.registrar.bindings),
                "retransmissions_absorbed": txns.absorbed,
                "retransmissions_answered": txns.resent,
                "banned_sources": self.registrar.banned_count(self.clock())}


def _log_expiry_failure(peer: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cannot delete the expired binding of '%s': %s", peer, task.exception())
