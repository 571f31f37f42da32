"""The asyncio adapter of the sans-I/O core (STYLE.md §2): what arrives goes in, what the
core returns goes out, one timer, events dispatched.

On every datagram batch, TCP message batch or timer it calls the core (the engine's front
door, the inbound endpoint), sends what they return over the flow each names (sockets.py),
re-arms one timer (the earlier of the engine's and the inbound endpoint's binding expiry)
and dispatches events: qualify results and transitions to the store (store/recorder.py),
the RTT histograms and the committed-transition feed (readmodel.py); binding changes to
the committer (store/committer.py), whose answer goes back to the endpoint. Nothing here
decides qualify or registrar semantics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .addr import Addr
from .net.sockets import SipSockets
from .qualify import state as st
from .qualify.engine import QualifyEngine
from .qualify.events import (
    Event,
    FlapChanged,
    LatencyChanged,
    PokeOverdue,
    PokeRepaired,
    QualifyResult,
    SecurityEvent,
    StateChanged,
    TransportError,
    VerdictChanged,
)
from .qualify.inbound import TCP, TLS, UDP, WS, WSS, BindingChanged, Flow, FlowPinned, InboundEvent, RegistryChanged
from .qualify.targets import TargetChanged
from .ratelog import RateLog
from .readmodel import Counters, TransitionFeed
from .resultmetrics import QualifyMetrics
from .store.committer import BindingCommitter
from .store.recorder import StateRecorder
from .store.silences import SilenceBook

if TYPE_CHECKING:
    from .cluster.vantage import Agreed, Vantage

log = logging.getLogger("sipqualify")


class CoreDriver:
    TIMER_BATCH = 4  # pokes stamped with one `now`: each batch is sent with its own fresh timestamp
    TURN_S = 0.002  # a timer turn sends batch after batch for at most this long, then the loop reads and serves

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float], sockets: SipSockets,
                 feed: TransitionFeed, metrics: QualifyMetrics, counters: Counters) -> None:
        self.loop = loop
        self.clock = clock
        self.sockets = sockets
        self.feed = feed
        self.metrics = metrics
        self.counters = counters
        self.engine: QualifyEngine | None = None
        self.recorder: StateRecorder | None = None
        self.committer: BindingCommitter | None = None
        self.silences: SilenceBook | None = None  # maintenance windows (qualify/silence.py)
        self.held_back = 0  # live events (verdict, latency, flap) of silenced peers not published
        self.vantage: Vantage | None = None  # [cluster] vantage_points > 1: transitions agreed across nodes
        self.ready_max_lag_s = 5.0  # [service] ready_max_lag: the watchdog repairs only within it
        self._watchdog_log = RateLog(log, 10.0)
        self.metrics_peer_limit = 10_000  # peers with per-peer response counts ([api] metrics_peer_limit)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._waiters: dict[str, list[asyncio.Future[QualifyResult]]] = {}
        self._drops_seen = 0  # the kernel's drop count of our UDP sockets, as last told to the engine

    def suppressed(self, peer: str) -> str | None:
        """Why our notifications (webhooks, verdict events) of the peer are held back now:
        `silenced` (a maintenance window, qualify/silence.py) or `flapping` (qualify/flap.py);
        None when they are not."""
        p = self.engine.peer(peer) if self.engine is not None else None
        if p is None:
            return None
        if self.silences is not None and self.silences.match(peer, p.cfg.group) is not None:
            return "silenced"
        if p.verdict.flapping:
            return "flapping"
        return None

    # ------------------------------------------------------------------ what arrives

    def on_datagram(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:  # sockets open a moment before the engine exists
            # t_rx: the kernel's receive time, so loop delays do not inflate RTTs
            self.engine.front.receive(data, addr, t_rx, UDP)

    def on_tcp_message(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:  # answers go back over this connection
            self.engine.front.receive(data, addr, t_rx, TCP)

    def on_tls_message(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:
            self.engine.front.receive(data, addr, t_rx, TLS)

    def on_ws_message(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:
            self.engine.front.receive(data, addr, t_rx, WS)

    def on_wss_message(self, data: bytes, addr: Addr, t_rx: float) -> None:
        if self.engine is not None:
            self.engine.front.receive(data, addr, t_rx, WSS)

    def on_closed(self, transport: str, addr: Addr) -> None:
        """A connection closed (WS/WSS): the bindings registered over it go."""
        if self.engine is not None:
            self.engine.inbound.flow_closed(Flow(transport, addr))
            self.pump()

    def on_batch_done(self) -> None:
        if self.engine is not None:
            self.pump()  # answers, events and the timer, once per batch of datagrams

    def on_icmp(self, addr: Addr, reason: str) -> None:
        self.counters.icmp_errors += 1
        if self.engine is not None:
            self.engine.transport_error(addr, self.clock(), reason)

    def on_tcp_connect_error(self, addr: Addr, reason: str) -> None:
        # like an ICMP error for UDP, but kept as the peers' reason; their give-up timer decides the state
        if self.engine is not None:
            self.engine.transport_error(addr, self.clock(), reason, connection=True)
            self.pump()

    def _on_timer(self) -> None:
        now = self.clock()
        if self._timer_at is not None:
            self.counters.scheduler_lag_s = max(0.0, now - self._timer_at)
        self._timer = None
        self._timer_at = None
        eng = self.engine
        assert eng is not None
        # Under load many pokes are due at once: they go out batch after batch in this one turn
        # (each batch stamped when it is really sent), for at most TURN_S; the loop then reads,
        # serves the API and comes back at once (call_later 0). One turn per batch cost a loop
        # iteration, an epoll_wait and a timer handle per TIMER_BATCH pokes.
        end = now + self.TURN_S
        while True:
            # a transaction timer due: what arrived is read first (it may be its answer)
            self._drops_seen = self.sockets.read_before_judging(eng, now, self._drops_seen)
            # reading what waited can take a while under load: the pokes below are stamped now,
            # when they are really sent, or their RTTs would include it (a false LAGGED at worst)
            now = self.clock()
            eng.inbound.handle_timer(now)  # binding expiry
            if not eng.handle_timer(now, limit=self.TIMER_BATCH):
                break
            self.flush()  # this batch leaves before the next one is stamped
            now = self.clock()
            if now >= end:
                break
        self.pump()  # re-arms at once (call_later 0) when more timers are due

    def self_check(self) -> None:
        """The liveness watchdog's sweep (qualify/watchdog.py), every second or so."""
        if self.engine is not None:
            now = self.clock()
            drops = self.engine.stats.receive_drops = self.sockets.udp_drops()
            if drops > self._drops_seen:  # also between give-ups: shown in /metrics
                self.engine.receive_loss(now)
            self._drops_seen = drops
            self.engine.self_check(now, self.ready_max_lag_s)
            self.pump()  # a repaired poke is due now: re-arm the timer

    async def qualify(self, name: str, wait: bool = True) -> QualifyResult | None:
        assert self.engine is not None
        fut: asyncio.Future[QualifyResult] = self.loop.create_future()
        if not self.engine.qualify(name, self.clock()):
            raise KeyError(name)
        self._waiters.setdefault(name, []).append(fut)
        self.pump()
        if not wait:
            return None
        return await asyncio.wait_for(fut, timeout=70)

    # ------------------------------------------------------------------ what goes out

    def pump(self) -> None:
        """What the core has to send goes out, its events are dispatched, its timer re-armed."""
        eng = self.flush()
        when, expiry = eng.get_timer(), eng.inbound.get_timer()
        if expiry is not None and (when is None or expiry < when):
            when = expiry
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = (
                self.loop.call_later(max(0.0, when - self.clock()), self._on_timer) if when is not None else None
            )
            self._timer_at = when

    def flush(self) -> QualifyEngine:
        """What the core has to send goes out and its events are dispatched (the timer stays)."""
        eng = self.engine
        assert eng is not None
        self.pump_inbound()  # answers first: a REGISTER's 200 OK goes out before the poke it causes
        self.sockets.send_many(eng.datagrams_to_send())
        for data, dest, local in eng.datagrams_to_send_from():  # peers with a qualify_source
            self.sockets.send_from(data, dest, local)
        while (ev := eng.next_event()) is not None:
            self._dispatch(ev)
        return eng

    def pump_inbound(self) -> None:
        """The inbound endpoint's answers, each over the flow it names, and its events."""
        assert self.engine is not None
        inbound = self.engine.inbound
        for data, flow in inbound.sends():
            self.sockets.send_on(data, flow)
        while (ev := inbound.next_event()) is not None:
            self._dispatch_inbound(ev)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _dispatch_inbound(self, ev: InboundEvent) -> None:
        # BindingArmed / BindingDisarmed: expiry runs on the endpoint's own timers (see pump)
        if isinstance(ev, BindingChanged):
            if self.committer is not None and ev.token == 0:  # an expired binding: nothing waits
                self.committer.delete_expired(ev.peer)
            elif self.committer is not None:
                self.loop.create_task(self._commit_binding(self.committer, ev))
        elif isinstance(ev, FlowPinned):
            self.sockets.mark_registered(ev.remote, ev.pinned)
        elif isinstance(ev, RegistryChanged):
            self.feed.registry(ev.peer, ev.status, ev.cause, ev.addr)
        elif isinstance(ev, SecurityEvent):
            # chan_sip's LocalAddress is its own address towards the phone: the SIP socket's, of
            # the phone's address family (TCP listens on the same address and port)
            v6 = ":" in ev.remote[0]
            local = next((a for a in self.sockets.local_addresses() if (":" in a[0]) == v6), ("", 0))
            self.feed.security(ev, local)

    async def _commit_binding(self, committer: BindingCommitter, ev: BindingChanged) -> None:
        """A binding change is stored (group-committed with its neighbours) before its REGISTER
        is answered; then the endpoint answers (500 if it could not be stored)."""
        error = await committer.commit(ev.peer, ev.binding, ev.to)
        if self.engine is not None:
            self.engine.inbound.commit_done(ev.token, error, self.clock())
            self.pump()  # the answer, and the poke that follows a REGISTER, go out now

    def dispatch_events(self, events: list[Event]) -> None:
        """Events of an engine in another process (workers/pool.py), handled as this one's."""
        for ev in events:
            self._dispatch(ev)

    def report_agreed(self, a: Agreed) -> None:
        """A change of a peer's state agreed by its vantage points (cluster/vantage.py): reported
        by this node, its primary, as its own engine's transitions are."""
        assert self.recorder is not None and self.engine is not None
        p = self.engine.peer(a.peer)
        ev = StateChanged(a.peer, a.old, a.new, a.lastms, p.maxms if p is not None else 0,
                          a.rtt_ms / 1000 if a.rtt_ms is not None else None, self.clock(), prev_lastms=a.prev_lastms,
                          silent=(a.old, a.new) == (st.UNREACHABLE, st.LAGGED), reason=a.reason)
        self.recorder.transition(ev, p, self.suppressed(ev.peer))
        self.feed.pending(ev)

    def _dispatch(self, ev: Event) -> None:
        recorder = self.recorder
        assert recorder is not None and self.engine is not None
        if isinstance(ev, QualifyResult):
            # a target's result (PEER#LABEL) is recorded under its own key: its history outlives it
            p = self.engine.peer(ev.peer) or self.engine.target(ev.peer)
            if ev.state != st.UNMONITORED:  # a forced poke of an unmonitored peer records nothing
                self.metrics.observe(ev, p.cfg if p is not None else None, self.metrics_peer_limit)
                recorder.sample(ev, p)
                if p is not None and p.transport == "tls" and ev.answered:
                    days = self.sockets.certs.crossed(p.dest, time.time())
                    if days is not None:
                        self.feed.tls_expiring(ev.peer, days, p.dest)
            if self._waiters:  # a forced qualify of a peer with targets: the first target's answer
                for fut in self._waiters.pop(p.parent.name if p is not None and p.parent else ev.peer, ()):
                    if not fut.done():
                        fut.set_result(ev)
        elif isinstance(ev, StateChanged):
            vantage = self.vantage
            if vantage is not None and vantage.covers(ev.peer):  # an observation; the primary reports
                vantage.local(ev.peer, ev.new, ev.lastms, ev.rtt * 1000 if ev.rtt is not None else None)
                return
            p = self.engine.peer(ev.peer)
            recorder.transition(ev, p, self.suppressed(ev.peer))
            self.feed.pending(ev)  # logged and published once committed: it survives a kill -9
        elif isinstance(ev, VerdictChanged | LatencyChanged | FlapChanged) and self.vantage is not None and \
                self.vantage.covers(ev.peer) and not self.vantage.primary(ev.peer):
            pass  # another vantage point reports this peer
        elif isinstance(ev, VerdictChanged | LatencyChanged | FlapChanged) and self.suppressed(ev.peer) == "silenced":
            self.held_back += 1  # a silenced peer's notifications are held back (README "Silences")
        elif isinstance(ev, VerdictChanged | LatencyChanged):
            self.feed.live(ev)
        elif isinstance(ev, TargetChanged):
            self.feed.target(ev)
        elif isinstance(ev, FlapChanged):
            if ev.flapping:
                log.warning("peer '%s' is flapping (penalty %.0f): its notifications are held back", ev.peer,
                            ev.penalty)
            else:
                log.info("peer '%s' settled (penalty %.0f, verdict %s): notifications resume", ev.peer, ev.penalty,
                         ev.verdict)
            self.feed.live(ev)
        elif isinstance(ev, PokeOverdue):
            self._watchdog_log(ev.time, "watchdog: peer '%s' poked %.1f s late (scheduler stalled or overloaded)",
                               ev.peer, ev.lag, key="overdue")
            self.feed.live(ev)
        elif isinstance(ev, PokeRepaired):
            log.error("watchdog: peer '%s' had no qualify result for %.0f s (its poke was lost): re-armed",
                      ev.peer, ev.silent_for)
            self.feed.live(ev)
        elif isinstance(ev, TransportError):
            log.debug("transport error %s for %s:%d (peer %s)", ev.reason, ev.addr[0], ev.addr[1], ev.peer)
