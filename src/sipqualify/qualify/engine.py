"""The qualify engine: chan_sip's poke cycle for any number of peers, sans-I/O.

Surface (the shape of aioquic's QuicConnection; see ../shared/STYLE.md):

    engine.load(peers, now, addresses=..., restored=...)   # start-up and `sip reload`
    engine.receive_datagram(data, addr, now)                # anything that arrived (dispatch.py)
    engine.handle_timer(now)                                # when get_timer() said so
    engine.get_timer() -> float | None                      # next wake-up
    engine.datagrams_to_send() -> [(bytes, (ip, port))]
    engine.datagrams_to_send_from() -> [(bytes, (ip, port), (our ip, our port))]  # qualify_source
    engine.next_event() -> StateChanged | QualifyResult | TransportError | None

The engine never reads a clock, never touches a socket and never blocks. Two heaps hold
every timer with lazy deletion, so each operation is O(log N) whatever the number of peers:
one for the transactions in flight (retransmission, give-up), one for what is scheduled
(pokes, keepalives); responses find their transaction through a branch -> transaction dict
in O(1). (Asterisk spends most of its qualify CPU scanning its
scheduler, Kamailio comparing URIs: anchors-performance.md.)

The poke cycle, as chan_sip does it (asterisk-qualify.md §1.4, asterisk-observed.md §0):

* poke: new Call-ID/branch/tag, `CSeq: 102 OPTIONS`, RTT clock starts at the first send,
  give-up ("noanswer") at 2 x maxms after it; a retransmission due on that same instant
  is still sent (retransmission timers sort before give-up timers at equal times).
* any final response (200-699) = reachable; 1xx never completes a poke.
* next poke: `qualifyfreq` after a reachable answer, 10 s after a LAGGED answer or a give-up.
* forced poke (`sipqualify qualify PEER`): unlike chan_sip it keeps the peer's periodic
  schedule, because it also gets a give-up timer (chan_sip orphans the peer, §0.9).

Overload never makes a false state (README "Overload"). When the shell cannot keep up,
the schedule stretches: pokes run late, and that lateness is reported (watchdog.py). What
must not stretch is a poke already sent, because its give-up judges the peer:

* due transaction timers run before due pokes, however far behind the pokes are; in one
  heap, pokes overdue by minutes sorted before the retransmissions of the pokes just sent,
  so a retransmission went out only at its give-up, and a single lost datagram made a
  healthy peer UNREACHABLE;
* a retransmission due while the shell stalled (later than LATE_S) is not sent late: the
  poke starts again with a fresh transaction, whose RTT clock and give-up are true ones
  (a late retransmission would charge our stall to the peer as RTT, then give it up);
* a give-up while our own receive path lost datagrams (`receive_loss`: the kernel dropped
  answers from a full socket buffer) is inconclusive: the peer is poked again soon instead
  of being judged, up to INCONCLUSIVE_MAX times in a row.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Final

from mypy_extensions import mypyc_attr

from ..addr import Addr
from ..model import DEFAULT_MAXMS, DEFAULT_SIP_PORT, DEFAULT_SIPS_PORT, QUALIFY_METHODS, GeneralConfig, PeerConfig
from ..sip.fastpath import PEEK
from ..sip.message import Response
from ..sip.options import (
    ALLOW,
    ASTERISK_ALLOW,
    ASTERISK_SUPPORTED,
    BRANCH_LEN,
    OutgoingOptions,
    build_options,
    format_host,
)
from ..sip.pjsip_options import build_pjsip_options
from ..sip.transaction import (
    COMPLETED,
    FINAL,
    PROCEEDING,
    PROVISIONAL,
    RETRANSMIT,
    RETRANSMITTED,
    T4,
    TIMEOUT,
    TRYING,
    ClientTransaction,
)
from . import auth
from . import state as st
from .capture import Capture
from .dispatch import Dispatcher
from .events import Event, FlapChanged, LatencyChanged, QualifyResult, StateChanged, TransportError, VerdictChanged
from .inbound import STREAMS, UDP, InboundEndpoint
from .order import container_order
from .policy import CHAN_SIP, QualifyPolicy, initial_delay_s, policy_for
from .ratecap import RateCap, jitter_factor
from .stats import LatencyStats
from .targets import SEP, Target, TargetChanged, rollup, target_key, verdict_result
from .timers import TimerQueues
from .verdict import UNKNOWN, PeerVerdict, initial_verdict, policy_of
from .watchdog import Watchdog

log = logging.getLogger("sipqualify.engine")


# Timer kinds of the schedule heap, in the order they fire when due at the same instant;
# transaction timers (own heap) fire before both. A transaction has ONE heap entry at a time,
# due at min(next retransmission, give-up); when both fall on the same instant the
# retransmission is sent first, then the peer is given up (chan_sip order).
_K_POKE = 2  # scheduled poke
_K_KEEPALIVE = 3  # keepalive= CRLF
# A schedule-heap entry is (when, key, peer), key = kind << _KIND_SHIFT | seq: at equal times
# pokes sort before keepalives, each kind in the order pushed (as (when, kind, seq) did), and
# no two keys are equal, so a peer is never compared. The key is also the entry's generation
# (lazy deletion): the entry is live while the peer's poke_gen (ka_gen) holds its key; a
# pending entry is cancelled by moving that on (`+= 1` never gives the key of another entry).
# Keys stay below 2**60 (a 32-byte int) for 2**57 pushes.
_KIND_SHIFT = 57
_POKE_KEYS = _K_POKE << _KIND_SHIFT
_KA_KEYS = _K_KEEPALIVE << _KIND_SHIFT  # keys from here on are keepalives'
_RUNNING = (TRYING, PROCEEDING)  # a poke still waiting for its final answer
LATE_S = 0.1  # a retransmission later than this restarts its poke (the shell stalled)
TXN_FIFOS = 8  # transaction timer delays (ms) given a FIFO queue; timers at other delays go to the heap
POKE_FIFOS = 8  # re-poll delays (ms) given a FIFO queue (peers' qualifyfreq values, chan_sip's 10 s re-poll)
INCONCLUSIVE_RETRY_S = 1.0  # a give-up during our own receive loss: poked again after this
INCONCLUSIVE_MAX = 3  # restarts or retries in a row per peer; then the poke is judged as usual
LINGER_S = T4  # Timer K: how long a completed poke's branch still absorbs retransmitted responses
# completed pokes linger in generations of this long, each dropped whole once its newest is T4 old:
# a branch absorbs retransmitted responses for T4 to T4 + LINGER_TICK_S
LINGER_TICK_S = 1.0



class Peer:
    """Runtime state of one peer. Small on purpose: a million of these must fit in < 1 GiB."""

    __slots__ = (
        "cfg",
        "name",
        "maxms",
        "addr",
        "dest",
        "lastms",
        "rtt",
        "txn",
        "poke_gen",
        "removed",
        "last_change",
        "last_qualify",
        "qualifies",
        "timeouts",
        "retransmissions",
        "transitions",
        "ka_gen",
        "_ruri",
        "transport",
        "transport_error",
        "verdict",
        "stats",
        "parent",
    )

    def __init__(self, cfg: PeerConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.maxms = cfg.qualify_ms
        self.addr: Addr | None = None
        self.dest: Addr | None = None  # where OPTIONS go: addr, or the outbound proxy
        self.lastms = 0
        self.rtt: float | None = None
        self.txn: ClientTransaction | None = None
        self.poke_gen = 0  # the key of its live poke entry (schedule heap); anything else: none
        self.removed = False
        self.last_change: float | None = None
        self.last_qualify: float | None = None
        self.qualifies = 0
        self.timeouts = 0
        self.retransmissions = 0
        self.transitions = 0
        self.ka_gen = 0  # the same for its keepalive
        self._ruri: str | None = None  # a registered Contact; None: request_uri(cfg), made per poke
        self.transport = cfg.transport  # of the OPTIONS: the config's, or the registration's
        # why the last connection to the peer could not be opened (TCP/TLS): "connection refused",
        # "certificate has expired" ...; cleared by the next answer
        self.transport_error: str | None = None
        # beside the chan_sip state (qualify/verdict.py); shared while settled: change it through
        # own_verdict() / settle_verdict() only
        self.verdict: PeerVerdict = initial_verdict(policy_of(cfg))
        self.stats: LatencyStats | None = None  # qualify/stats.py, from the first result on
        self.parent: Peer | None = None  # a target's peer (qualify/targets.py); None for peers

    def own_verdict(self) -> PeerVerdict:
        """The peer's verdict, made its own (a copy of the shared settled one) to be changed; hand
        it back with settle_verdict() when done."""
        v = self.verdict
        if v.shared:
            v = self.verdict = v.owned()
        return v

    def settle_verdict(self) -> None:
        """After a change: the shared object again when the verdict is settled (verdict.py)."""
        self.verdict = self.verdict.settled()

    def reset_verdict(self) -> bool:
        """PeerVerdict.reset on the peer's verdict (nothing known any more); True if the shown
        verdict or reason changed."""
        v = self.verdict
        if v.shared and v.confirmed == UNKNOWN and not v.reason and v.status is None:
            return False  # already the initial verdict: reset changes nothing
        changed = self.own_verdict().reset()
        self.settle_verdict()
        return changed

    @property
    def ruri(self) -> str:
        """The poke's Request-URI. Not kept per static peer (60-odd bytes each, a million
        peers): rebuilt from the config at each poke (0.2 µs)."""
        return self._ruri or request_uri(self.cfg)

    @ruri.setter
    def ruri(self, value: str | None) -> None:
        self._ruri = value

    @property
    def state(self) -> str:
        return st.state_of(self.maxms, self.lastms)

    @property
    def status(self) -> str:
        return st.status_string(self.maxms, self.lastms)


class TargetPeer(Peer):
    """One DNS target of a `qualify_targets = all` peer: poked like a peer, keyed `PEER#LABEL`,
    never listed among the peers; its results roll up into `parent` (qualify/targets.py)."""

    __slots__ = ("target",)

    def __init__(self, parent: Peer, target: Target) -> None:
        super().__init__(parent.cfg)
        self.name = target_key(parent.name, target.label)
        self.parent = parent
        self.target = target
        self.transport = target.transport
        self.addr = self.dest = target.addr


def request_uri(cfg: PeerConfig) -> str:
    """chan_sip's poke R-URI: `sip:tohost` (no user: defaultuser is not used; no port unless
    asked with port_in_uri), `sips:` for TLS; `sip:user@tohost` with `qualify_ruri_user`. A
    pjsip.conf contact: its URI verbatim."""
    if cfg.contact_uri:
        return cfg.contact_uri
    scheme = "sips" if cfg.transport == "tls" else "sip"
    host = cfg.host or "invalid"
    if ":" in host and not host.startswith("["):  # format_host, inlined: once per poke, compiled
        host = f"[{host}]"
    if cfg.qualify_ruri_user:
        host = f"{cfg.qualify_ruri_user}@{host}"
    if cfg.port_in_uri and cfg.port:
        default = DEFAULT_SIPS_PORT if cfg.transport == "tls" else DEFAULT_SIP_PORT
        if cfg.port != default:
            return f"{scheme}:{host}:{cfg.port}"
    return f"{scheme}:{host}"


#: the start of a poke's request line, by the method a CSeq names (QUALIFY_METHODS)
_REQUEST_LINE: Final = {m: f"{m} ".encode() for m in QUALIFY_METHODS}
# a completed poke's request, while its branch lingers (Timer K): only its method is read again
_LINGERING: Final = {m.encode(): line for m, line in _REQUEST_LINE.items()}
_new_tuple: Final = tuple.__new__


def _result(peer: str, now: float, answered: bool, rtt: float | None, status: int | None, transmissions: int,
            forced: bool, state: str) -> QualifyResult:
    """QualifyResult(...), without running the NamedTuple's `__new__`, a Python function (from the
    compiled engine: ≈ 2.3x the cost, once per transaction)."""
    r: QualifyResult = _new_tuple(QualifyResult, (peer, now, answered, rtt, status, transmissions, forced, state))
    return r


def with_user(uri: str, user: str) -> str:
    """`uri` (`sip:`/`sips:`, perhaps with a user) with the user part `user`: the To of a peer's
    `qualify_to_user`."""
    scheme, _, rest = uri.partition(":")
    at = rest.find("@")
    if at >= 0 and not any(c in rest[:at] for c in ";?"):
        rest = rest[at + 1:]
    return f"{scheme}:{user}@{rest}"


def source_text(src: Addr) -> str:
    """A `qualify_source` as written: `ip`, `ip:port`, `[v6]:port` (port 0: none written)."""
    return f"{format_host(src[0])}:{src[1]}" if src[1] else src[0]


@dataclass(slots=True)
class EngineStats:
    polls: int = 0  # pokes started
    transmissions: int = 0  # OPTIONS datagrams (first sends + retransmissions)
    retransmissions: int = 0
    answered: int = 0
    timeouts: int = 0
    responses_by_class: dict[str, int] = field(default_factory=dict)  # filled by QualifyEngine.snapshot_stats
    rx_datagrams: int = 0
    rx_malformed: int = 0
    rx_keepalive: int = 0
    stray_responses: int = 0  # no transaction with that branch
    mismatched_responses: int = 0  # branch known but CSeq/Call-ID/source wrong
    retransmitted_responses: int = 0
    requests_answered: int = 0
    transport_errors: int = 0
    internal_errors: int = 0
    transitions: int = 0
    keepalives: int = 0
    rate_limited: int = 0  # datagrams from one address beyond its budget, dropped before parsing
    source_errors: int = 0  # datagrams not sent: their peer's qualify_source has no socket (set_sources)
    late_restarts: int = 0  # pokes started again: a retransmission came due while the shell stalled
    inconclusive: int = 0  # give-ups not judged: our own socket lost datagrams meanwhile (receive_loss)
    receive_drops: int = 0  # set by the shell, each second: the kernel's drops on the UDP sockets feeding us


@dataclass(slots=True)
class ReloadSummary:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def qualify_headers(general: GeneralConfig) -> tuple[str, str]:
    """Allow and Supported of our OPTIONS: what sipqualify serves (no Supported), or chan_sip's."""
    return (ASTERISK_ALLOW, ASTERISK_SUPPORTED) if general.qualify_headers == "asterisk" else (ALLOW, "")


def _peer_name(p: Peer) -> str:
    return p.name


def stagger_offsets_ms(count: int, gap_ms: int, per_group: int) -> list[int]:
    """sip_poke_all_peers() offsets, off-by-one included (asterisk-observed.md §0.8).

    With the defaults (gap 100, 1 peer per group) the offsets are 0, 100, 100, 200, 200...:
    the first group holds `qualifypeers` peers, later groups `qualifypeers + 1`. qualifypeers=0 gives
    one peer per gap starting at `gap`; a negative value puts every peer at 0.
    """
    out: list[int] = []
    ms = num = 0
    for _ in range(count):
        if num == per_group:
            ms += gap_ms
            num = 0
        else:
            num += 1
        out.append(ms)
    return out


def _linger_light(txn: ClientTransaction) -> None:
    """A completed UDP poke lingers T4 (Timer K) to absorb retransmitted answers, and only its
    branch, Call-ID, CSeq and method are read again: the request's bytes (≈ 450 B) go, its
    method's shared request-line prefix stays (at 16,700 pokes/s ≈ 83,000 lingering pokes)."""
    if txn.state == COMPLETED:
        req = txn.request
        line = _LINGERING.get(req[:req.find(b" ")])
        if line is not None:
            txn.request = line


# compiled with mypyc, `run --workers N` still subclasses it in Python (workers/mirror.py MirrorEngine)
@mypyc_attr(allow_interpreted_subclasses=True)
class QualifyEngine:
    def __init__(
        self,
        general: GeneralConfig | None = None,
        *,
        local_address: Callable[[Addr], Addr],
        wallclock: Callable[[], float] = time.time,
        useragent: str = "",
        policy: QualifyPolicy = CHAN_SIP,
        match_source: bool = True,
        respond_options: bool = True,
        from_user: str = "asterisk",
        from_display: str = "asterisk",
    ) -> None:
        from .. import __version__

        self.general = general or GeneralConfig()
        self.local_address = local_address
        self.wallclock = wallclock
        self.useragent = useragent or self.general.useragent or f"sipqualify {__version__}"
        self.policy = policy
        self.match_source = match_source
        self.respond_options = respond_options
        self.from_user = from_user
        self.from_display = from_display
        self.stats = EngineStats()
        # every request sent to us (OPTIONS answers, REGISTER, 405/501) and where answers go
        self.inbound = InboundEndpoint(self, self.stats, useragent=self.useragent, respond_options=respond_options,
                                       wallclock=wallclock)
        # what arrives is parsed once there: responses come back to receive_response
        self.front = Dispatcher(self, self.inbound, self.stats)
        self._peers: dict[str, Peer] = {}
        self._targets: dict[str, dict[str, TargetPeer]] = {}  # peer -> label -> target (qualify_targets = all)
        self._txns: dict[str, ClientTransaction] = {}
        # pokes and keepalives: (when, key, peer); re-polls after a result at a peer's usual delay
        # (its qualifyfreq) wait in FIFO queues (qualify/timers.py)
        self._pokes: TimerQueues[Peer] = TimerQueues(POKE_FIFOS)
        # transactions in flight: (wake, seq, txn); most are armed at one delay (the first
        # retransmission's) and wait in its FIFO queue (qualify/timers.py)
        self._txn_timers: TimerQueues[ClientTransaction] = TimerQueues(TXN_FIFOS)
        self._lost_at = float("-inf")  # when the shell last saw our receive path lose datagrams
        self._inconclusive: dict[str, int] = {}  # peer -> give-ups in a row not judged (receive_loss)
        self._seq = itertools.count()
        self._out: list[tuple[bytes, Addr]] = []
        self._out_from: list[tuple[bytes, Addr, Addr]] = []  # (data, dest, local): a qualify_source's socket
        # a peer's qualify_source -> the local address its socket is bound to, or why it has none
        # (the shell opens one socket per distinct source and says so here: set_sources)
        self.sources: dict[Addr, Addr | str] = {}
        self._events: deque[Event] = deque()
        self._forced: set[str] = set()  # branches of forced pokes in flight
        self._by_class = [0] * 7  # responses by status class (index 1..6)
        # completed UDP pokes (Timer K), out of _txns: (when the generation closes, branch -> txn),
        # oldest first; one dict per LINGER_TICK_S, dropped whole (no timer, no removal per poke)
        self._lingering: deque[tuple[float, dict[str, ClientTransaction]]] = deque()
        self._date_sec = -1
        self._date = ""
        self._allow, self._supported = qualify_headers(self.general)
        self._auth: dict[str, auth.AuthAttempt] = {}  # branch of an authenticated poke in flight -> its state
        self._origins: dict[str, float] = {}  # ... of a pjsip.conf contact -> its poll's first send (auth.py)
        # registered PJSIP contacts (qualify/pjsip_registrar.py) are peers made when they register,
        # from (contact id, URI) by this (the service's), dropped when they go
        self.adopt: Callable[[str, str], PeerConfig | None] | None = None
        self._adopted: set[str] = set()
        self._loaded_at = 0.0
        self.watchdog = Watchdog()  # lateness and lost pokes (qualify/watchdog.py)
        self.ratecap: RateCap | None = None  # [general] max_rate, max_rate_per_destination (qualify/ratecap.py)
        self._reserved: set[Peer] = set()  # pokes deferred by the rate cap, sent when their slot comes
        self._load_hygiene(self.general)
        self.capture = Capture()  # the last exchange of the few peers somebody watches (qualify/capture.py)

    # ------------------------------------------------------------------ peers

    def peer(self, name: str) -> Peer | None:
        return self._peers.get(name)

    def peers(self) -> Iterator[Peer]:
        return iter(self._peers.values())

    def __len__(self) -> int:
        return len(self._peers)

    def load(
        self,
        peers: Iterable[PeerConfig],
        now: float,
        *,
        addresses: dict[str, Addr | None] | None = None,
        destinations: dict[str, Addr | None] | None = None,
        restored: dict[str, int] | None = None,
        general: GeneralConfig | None = None,
        restored_changed: dict[str, float] | None = None,
    ) -> ReloadSummary:
        """Load (or `sip reload`) the peer set, then poke every qualified peer, staggered.

        `addresses` maps a peer to its resolved (ip, port); `destinations` to where its
        OPTIONS go when that differs (outbound proxy). Peers that survive a reload keep
        their state and publish nothing, like chan_sip. `restored` seeds `lastms` of new
        peers from the store (restart restores state).
        """
        if general is not None:
            self.general = general
            self._allow, self._supported = qualify_headers(general)
            self._load_hygiene(general)
        addresses = addresses or {}
        destinations = destinations or {}
        restored = restored or {}
        summary = ReloadSummary()
        new: dict[str, Peer] = {}
        for cfg in peers:
            new[cfg.name] = self._take(cfg, summary, addresses, destinations, restored, restored_changed)
        self._loaded_at = now
        for name, p in self._peers.items():
            if name in new:
                continue
            kept = self.adopt(name, p.ruri or "") if name in self._adopted and self.adopt else None
            if kept is not None:  # a registered contact whose AOR is still there
                p.cfg, p.maxms = kept, kept.qualify_ms
                new[name] = p
                continue
            self._adopted.discard(name)
            summary.removed.append(name)
            self._drop(p)
        self._peers = new
        for name, targets in list(self._targets.items()):
            for t in targets.values():
                if name in new:
                    t.cfg, t.maxms = new[name].cfg, new[name].maxms
                else:
                    self._drop(t)
            if name not in new:
                del self._targets[name]
        self._mark_sources(new.values())
        for p in new.values():  # chan_sip sip_keepalive_all_peers: at 0 ms after (re)load
            self._schedule_keepalive(p, now)
        self.poke_all(now)
        return summary

    def _take(self, cfg: PeerConfig, summary: ReloadSummary, addresses: dict[str, Addr | None],
              destinations: dict[str, Addr | None], restored: dict[str, int],
              restored_changed: dict[str, float] | None) -> Peer:
        """The peer `cfg` describes: new, or the running one with its state kept."""
        old = self._peers.get(cfg.name)
        if old is None:
            p = Peer(cfg)
            p.lastms = restored.get(cfg.name, 0) if cfg.qualify_ms else 0
            if restored_changed and cfg.name in restored_changed:
                p.last_change = restored_changed[cfg.name]  # engine time (may be before 0)
            summary.added.append(cfg.name)
        else:
            p = old
            (summary.unchanged if old.cfg == cfg else summary.changed).append(cfg.name)
            p.cfg = cfg
            p.maxms = cfg.qualify_ms
            p.ruri = None
            p.transport = cfg.transport
            pol = policy_of(cfg)
            if p.verdict.policy is not pol:
                p.own_verdict().policy = pol
                p.settle_verdict()
            if p.maxms == 0:
                p.lastms = 0
                p.reset_verdict()
        p.addr = addresses.get(cfg.name, p.addr if old is not None else None)
        p.dest = destinations.get(cfg.name) or p.addr
        return p

    def update(self, peers: Iterable[PeerConfig], removed: Iterable[str], now: float, *,
               addresses: dict[str, Addr | None] | None = None,
               destinations: dict[str, Addr | None] | None = None,
               restored: dict[str, int] | None = None, restored_changed: dict[str, float] | None = None,
               spread_s: float = 0.0) -> ReloadSummary:
        """Some peers added, changed or removed (a realtime row), the others untouched: each
        added or changed peer is poked at once (chan_sip's `sip_poke_peer_now` for a realtime
        peer), its keepalive restarted; a removed peer's transaction ends. `restored` seeds new
        peers' `lastms` as in `load` (a peer handed over by another node starts from its last
        known state: no false transition); `spread_s` spreads the pokes evenly over that many
        seconds instead of all at once (a handover of many peers)."""
        summary = ReloadSummary()
        cfgs = list(peers)
        step = spread_s / len(cfgs) if cfgs and spread_s > 0 else 0.0
        for i, cfg in enumerate(cfgs):
            p = self._peers[cfg.name] = self._take(cfg, summary, addresses or {}, destinations or {}, restored or {},
                                                   restored_changed)
            self._mark_sources((p,))
            self._schedule_keepalive(p, now)
            if p.maxms > 0:
                self._schedule_poke(p, now + i * step)
        for name in removed:
            gone = self._peers.pop(name, None)
            if gone is not None:
                summary.removed.append(name)
                self._drop(gone)
        return summary

    def poke_all(self, now: float) -> None:
        """Schedule every qualified peer at its stagger offset (replacing pending pokes), in
        chan_sip's container order (qualify/order.py)."""
        qualified = container_order((p for p in self._peers.values() if p.maxms > 0 and not p.cfg.contact_uri),
                                    _peer_name)
        offsets = stagger_offsets_ms(len(qualified), self.general.qualifygap_ms, self.general.qualifypeers)
        for p, off in zip(qualified, offsets, strict=True):
            self._schedule_poke(p, now + off / 1000.0)
        last = now + (offsets[-1] / 1000.0 if offsets else 0.0)
        for p in self._peers.values():  # pjsip.conf contacts: their AOR's first poll (qualify/policy.py)
            if p.maxms > 0 and p.cfg.contact_uri:
                c = p.cfg
                at = now + initial_delay_s(c.name.split("@@")[0], c.qualifyfreq_ms / 1000.0,
                                           c.max_initial_qualify_ms / 1000.0)
                self._schedule_poke(p, at)
                last = max(last, at)
        self.watchdog.reloaded(last)

    def registered(self, name: str, addr: Addr, now: float, contact: str | None = None, *,
                   transport: str | None = None, dest: Addr | None = None) -> None:
        """A dynamic peer registered (or refreshed): new address, and a poke right away
        (chan_sip pokes after every successful REGISTER; the periodic cycle restarts from it).
        The poke's Request-URI is the registered Contact, as chan_sip's `fullcontact`.
        `transport`: the one the REGISTER came over (the OPTIONS' Via says it); `dest`: where
        OPTIONS go when not `addr` (over TCP: the remote end of the REGISTER's connection)."""
        p = self._peers.get(name)
        new = p is None and (p := self._adopt(name, contact or "")) is not None
        if p is None:
            return
        p.addr = addr
        p.dest = dest or addr
        p.transport = transport or p.cfg.transport
        if contact:
            p.ruri = contact
        if p.cfg.keepalive_s:
            self._schedule_keepalive(p, now + p.cfg.keepalive_s)
        if p.maxms and (new or name not in self._adopted):  # res_pjsip: a refresh sends nothing
            self._poke(p, now, forced=False)

    def _adopt(self, name: str, contact: str) -> Peer | None:
        cfg = self.adopt(name, contact) if self.adopt is not None and contact else None
        if cfg is None:
            return None
        p = self._peers[name] = Peer(cfg)
        self._adopted.add(name)
        return p

    def bound(self, name: str, addr: Addr, contact: str, transport: str, dest: Addr | None) -> bool:
        """A dynamic peer's binding, applied after a (re)load without a poke. False: no such
        dynamic peer."""
        p = self._peers.get(name)
        if p is None and (p := self._adopt(name, contact)) is not None and p.maxms:  # restored at start
            c = p.cfg
            self._schedule_poke(p, self._loaded_at + initial_delay_s(name, c.qualifyfreq_ms / 1000.0,
                                                                     c.max_initial_qualify_ms / 1000.0))
        if p is None or not p.cfg.dynamic:
            return False
        p.addr = addr
        p.dest = dest or addr
        p.ruri = contact
        if transport in STREAMS:
            p.transport = transport
        return True

    def set_address(self, name: str, addr: Addr, now: float, transport: str | None = None) -> bool:
        """A static peer's host name resolves to a new address (net/dnswatch.py): OPTIONS go
        there from the next poke on (a poke in flight finishes where it went, as with chan_sip's
        dnsmgr). A peer that had no address is poked at once; chan_sip would wait for a reload.
        An outbound proxy stays where OPTIONS go. `transport`: the one DNS chose (NAPTR), when
        the config names none. False: no such static peer."""
        p = self._peers.get(name)
        if p is None or p.cfg.dynamic:
            return False
        had = p.addr
        if p.dest is None or p.dest == had:
            p.dest = addr
        p.addr = addr
        if transport is not None:
            p.transport = transport
        if had is None and p.maxms:
            self._poke(p, now, forced=False)
        return True

    def targets(self, name: str) -> list[TargetPeer]:
        """The targets of a `qualify_targets = all` peer, in resolution order; [] otherwise."""
        return list(self._targets.get(name, {}).values())

    def entries(self) -> Iterator[Peer]:
        """Everything that is poked: the peers and the targets of `qualify_targets = all` peers."""
        yield from self._peers.values()
        for targets in self._targets.values():
            yield from targets.values()

    def target(self, key: str) -> TargetPeer | None:
        """A target by its key (`PEER#LABEL`)."""
        name, _, label = key.rpartition(SEP)  # a label holds no '#' (host names cannot), a peer name may
        return self._targets.get(name, {}).get(label)

    def set_targets(self, name: str, targets: Iterable[Target], now: float, *,
                    poke: bool = True) -> tuple[list[str], list[str]]:
        """Qualify each of `targets` on its own (qualify_targets = all); [] goes back to the peer
        itself. Targets that stay keep their state and schedule; new ones are poked at once
        (`poke`; at a (re)load the peer's staggered poke starts them), gone ones are dropped and
        the peer's state is rolled up again. Returns the labels (added, removed)."""
        p = self._peers.get(name)
        if p is None or p.cfg.dynamic:
            return [], []
        old = self._targets.get(name, {})
        new: dict[str, TargetPeer] = {}
        added: list[str] = []
        for spec in targets:
            t = old.get(spec.label)
            if t is None:
                t = TargetPeer(p, spec)
                added.append(spec.label)
            new[spec.label] = t
        removed = [label for label in old if label not in new]
        for label in removed:
            self._drop(old[label])
        if new:
            self._targets[name] = new
            first = next(iter(new.values()))
            p.addr = p.dest = first.addr
        else:
            self._targets.pop(name, None)
        if poke and p.maxms:
            for label in added:
                self._poke(new[label], now, forced=False)
        if removed and new:
            self._roll_up(p, now)
        return added, removed

    def unregistered(self, name: str) -> None:
        """Registration removed or expired: no address; the next poke makes it UNKNOWN
        silently, as chan_sip's expire_register does."""
        p = self._peers.get(name)
        if p is not None and name in self._adopted:  # a registered PJSIP contact: gone
            self._adopted.discard(name)
            del self._peers[name]
            self._drop(p)
        elif p is not None:
            p.addr = p.dest = None
            p.ruri = None
            p.transport = p.cfg.transport

    def _drop(self, p: Peer) -> None:
        p.removed = True
        self._reserved.discard(p)
        self._inconclusive.pop(p.name, None)
        if self.capture.watched:
            self.capture.forget(p.name)
        p.poke_gen += 1
        self._end_txn(p)

    # ------------------------------------------------------------------ driving

    def qualify(self, name: str, now: float) -> bool:
        """Forced qualify (CLI / AMI SIPqualifypeer). False if the peer is unknown or has
        no address. Works on unmonitored peers too (the result is reported, not recorded)."""
        p = self._peers.get(name)
        if p is None or (p.dest is None and name not in self._targets):
            return False
        self._poke(p, now, forced=True)
        return True

    def get_timer(self) -> float | None:
        t = self.txn_timer()
        while True:
            e, src = self._pokes.first()
            if e is None:
                return t
            when, key, obj = e
            if (obj.poke_gen if key < _KA_KEYS else obj.ka_gen) == key and not obj.removed:  # live
                return when if t is None or when < t else t
            self._pokes.pop(src)

    def txn_timer(self) -> float | None:
        """When the earliest transaction timer (retransmission, give-up) is due. A shell reads
        what has arrived before it runs one (the answer may be waiting in a socket)."""
        while True:
            e, src = self._txn_timers.first()
            if e is None:
                return None
            if e[2].wake == e[0]:
                return e[0]
            self._txn_timers.pop(src)

    def receive_loss(self, now: float) -> None:
        """The shell saw our own receive path lose datagrams (the kernel's drop count of a SIP
        socket went up) by `now`: a give-up of a transaction in flight then is inconclusive."""
        self._lost_at = now

    def handle_timer(self, now: float, limit: int | None = None) -> bool:
        """Run every timer due at `now` (at most `limit` of them). Returns True when more
        are due, so that a shell can send what this batch produced, read what arrived and
        come back with a fresh `now`: the RTT clock of a poke starts at the `now` it was
        sent with, so a long burst must not share one stale timestamp."""
        if self._lingering:
            self._expire_linger(now)
        done = 0
        while True:  # first what is in flight: it must not wait for late pokes
            e, src = self._txn_timers.first()
            if e is None or e[0] > now:
                break
            if limit is not None and done >= limit:
                return True
            self._txn_timers.pop(src)
            when, txn = e[0], e[2]
            if txn.wake != when:
                continue
            done += 1
            try:
                self._txn_timer(txn, now, when)
            except Exception:  # never let one peer's bug stop every other peer
                self.stats.internal_errors += 1
                log.exception("internal error handling a timer")
        while True:
            pe, psrc = self._pokes.first()
            if pe is None or pe[0] > now:
                break
            if limit is not None and done >= limit:
                return True
            self._pokes.pop(psrc)
            when, key, obj = pe
            if (obj.poke_gen if key < _KA_KEYS else obj.ka_gen) != key or obj.removed:
                continue  # cancelled or replaced (lazy deletion), or the peer is gone
            done += 1
            try:
                if key < _KA_KEYS:  # a poke
                    if now - when > 10.0 and (late := self.watchdog.poke_ran(obj, when, now)) is not None:
                        self._events.append(late)  # later than its interval (qualify/watchdog.py)
                    if self.ratecap is not None and not self._admitted(obj, now):
                        continue  # deferred to its slot by the rate cap
                    self._poke(obj, now, forced=False)  # RTT clock: when it is really sent
                else:
                    self._keepalive(obj, now)
            except Exception:  # never let one peer's bug stop every other peer
                self.stats.internal_errors += 1
                log.exception("internal error handling a timer")
        return False

    def self_check(self, now: float, behind_s: float = 5.0) -> None:
        """The liveness watchdog's sweep (qualify/watchdog.py): the shell calls it every second
        or so; lost pokes are re-armed and reported (PokeRepaired)."""
        self._events.extend(self.watchdog.check(self, now, behind_s))
        if self.ratecap is not None:  # deferral is lateness: shown with the watchdog's figures
            self.watchdog.stats.deferred_pokes = self.ratecap.deferred
            self.watchdog.stats.last_defer_s = self.ratecap.last_defer_s

    def rearm(self, p: Peer, now: float) -> None:
        """The watchdog's repair: whatever the peer's poke state, a fresh poke now."""
        self._end_txn(p)
        self._schedule_poke(p, now)

    def backlog_s(self, now: float) -> float:
        """How far ahead the rate cap has deferred pokes (0 without a cap)."""
        return self.ratecap.backlog_s(now) if self.ratecap is not None else 0.0

    def _load_hygiene(self, g: GeneralConfig) -> None:
        if g.max_rate or g.max_rate_per_destination:
            if self.ratecap is None or (self.ratecap.max_rate, self.ratecap.per_destination) != (
                    g.max_rate, g.max_rate_per_destination):
                self.ratecap = RateCap(g.max_rate, g.max_rate_per_destination)
        else:
            self.ratecap = None
            self._reserved.clear()

    def _admitted(self, p: Peer, now: float) -> bool:
        """The rate cap (qualify/ratecap.py): may this scheduled poke go now? If not it is
        re-armed at its reserved slot."""
        if p in self._reserved:
            self._reserved.discard(p)
            return True
        if p.dest is None or self.ratecap is None:
            return True
        at = self.ratecap.admit(p.dest[0], now)
        if at <= now:
            return True
        self._reserved.add(p)
        self._schedule_poke(p, at)
        return False

    def giveup_s(self, p: Peer) -> float:
        return policy_for(p.cfg, self.policy).giveup_s(p.maxms or DEFAULT_MAXMS)

    def receive_datagram(self, data: bytes, addr: Addr, now: float, transport: str = UDP) -> None:
        """Anything that arrived, through the front door (`self.front`, qualify/dispatch.py)."""
        self.front.receive(data, addr, now, transport)

    def transport_error(self, addr: Addr, now: float, reason: str, *, connection: bool = False) -> None:
        """ICMP error for a datagram we sent to `addr`, or (`connection`) a TCP/TLS connection to
        `addr` that could not be opened. Counted and reported; the state still follows chan_sip
        (the give-up timer decides), as Asterisk ignores ICMP. A connection failure is also kept
        as the reason of each peer waiting on it (`Peer.transport_error`, shown in `peer X` and
        carried by its transition to UNREACHABLE)."""
        self.stats.transport_errors += 1
        peer = None
        for txn in self._txns.values():
            if txn.dest == addr and isinstance(txn.owner, Peer):
                peer = peer or txn.owner.name
                txn.owner.own_verdict().refused = True  # the give-up's reason: refused, not timeout
                if not connection:
                    break
                txn.owner.transport_error = reason
        self._events.append(TransportError(peer, addr, now, reason))

    def set_sources(self, bound: dict[Addr, Addr | str]) -> None:
        """The sockets of the peers' `qualify_source`s: each configured source (ip, port; port 0: a
        free one) -> the local address its socket is bound to, or why there is none (the peers
        using it send nothing and carry that reason: `Peer.transport_error`, set here for the
        loaded peers). Requests built from now on carry the bound address in Via, From and Contact."""
        self.sources = dict(bound)
        self._mark_sources(self.entries())

    def source_of(self, p: Peer) -> str | None:
        """Where the peer's qualify requests leave from, as shown: its `qualify_source` socket's
        bound `ip:port` (over TCP/TLS the address its connection is opened from; a source without
        a socket: as configured); None: the SIP socket."""
        src = p.cfg.qualify_source
        if src is None:
            return None
        if p.transport != UDP:
            return src[0]
        bound = self.sources.get(src)
        return source_text(bound if isinstance(bound, tuple) else src)

    def _mark_sources(self, peers: Iterable[Peer]) -> None:
        """Peers whose `qualify_source` has no socket carry why (shown before their first give-up)."""
        if not any(isinstance(why, str) for why in self.sources.values()):
            return
        for p in peers:
            src = p.cfg.qualify_source
            if src is not None and p.transport == UDP and isinstance(why := self.sources.get(src), str):
                p.transport_error = f"qualify_source {source_text(src)}: {why}"

    def snapshot_stats(self) -> EngineStats:
        """Counters, with the per-class response counts (kept in a list on the hot path) filled in."""
        self.stats.responses_by_class = {f"{i}xx": n for i, n in enumerate(self._by_class) if i}
        return self.stats

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._out = self._out, []
        return out

    def datagrams_to_send_from(self) -> list[tuple[bytes, Addr, Addr]]:
        """Datagrams of peers with a `qualify_source`: (data, dest, the local address to send from)."""
        out, self._out_from = self._out_from, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ internals

    def _push(self, when: float, kind: int, p: Peer) -> int:
        """A schedule-heap entry; its key (the peer's poke_gen or ka_gen from now on)."""
        key = kind << _KIND_SHIFT | next(self._seq)
        self._pokes.push((when, key, p))
        return key

    def _schedule_keepalive(self, p: Peer, when: float) -> None:
        if p.cfg.keepalive_s > 0:
            p.ka_gen = self._push(when, _K_KEEPALIVE, p)
        else:
            p.ka_gen += 1  # a pending keepalive is cancelled

    def _keepalive(self, p: Peer, now: float) -> None:
        """keepalive=N (chan_sip sip_send_keepalive): a bare CRLF, no answer expected. Unlike
        chan_sip it stops while the peer has no address and restarts when it registers. On a
        TCP/TLS flow it is RFC 5626 §4.4.1's double-CRLF ping instead, whose single-CRLF pong
        the connection times (net/tcp.py), so the flow's liveness is known between qualifies."""
        if p.dest is None:
            return
        self._send(p, b"\r\n\r\n" if p.transport in ("tcp", "tls") else b"\r\n", p.dest)
        self.stats.keepalives += 1
        self._schedule_keepalive(p, now + p.cfg.keepalive_s)

    def _schedule_poke(self, p: Peer, when: float, now: float | None = None) -> None:
        """`now` (the re-poll after a result): `when` is `now` + the peer's delay, and it may wait
        in that delay's FIFO queue (due after everything in it) instead of the heap."""
        key = p.poke_gen = _POKE_KEYS | next(self._seq)  # _push, inlined: once per poke
        self._pokes.push((when, key, p), now)

    def _end_txn(self, p: Peer) -> None:
        txn = p.txn
        if txn is not None:
            txn.terminate()
            self._txns.pop(txn.branch, None)
            self._forced.discard(txn.branch)
            self._auth.pop(txn.branch, None)
            self._origins.pop(txn.branch, None)
            p.txn = None

    def _linger(self, txn: ClientTransaction, now: float) -> None:
        """Timer K: a completed UDP poke leaves _txns and still absorbs retransmitted responses
        for T4 (to T4 + LINGER_TICK_S), in the current generation."""
        self._txns.pop(txn.branch, None)
        gens = self._lingering
        if not gens or now >= gens[-1][0]:
            self._expire_linger(now)
            gens.append((now + LINGER_TICK_S, {}))
        gens[-1][1][txn.branch] = txn

    def _expire_linger(self, now: float) -> None:
        gens = self._lingering
        while gens and gens[0][0] + LINGER_S <= now:  # its newest poke completed T4 ago
            gens.popleft()

    def _lingering_txn(self, branch: str, now: float) -> ClientTransaction | None:
        """A completed poke still lingering (Timer K) at `now`, by branch; None when none."""
        for closes, gen in self._lingering:
            if closes + LINGER_S > now and (txn := gen.get(branch)) is not None:
                return txn
        return None

    def lingering(self) -> int:
        """How many completed pokes linger (Timer K) in memory."""
        return sum(len(gen) for _, gen in self._lingering)

    def _date_header(self) -> str:
        t = self.wallclock()
        sec = int(t)
        if sec != self._date_sec:
            self._date_sec = sec
            self._date = formatdate(sec, usegmt=True)
        return self._date

    def _poke(self, p: Peer, now: float, *, forced: bool) -> None:
        if self._targets and p.parent is None and (targets := self._targets.get(p.name)):
            p.poke_gen += 1  # the peer sends nothing itself: each target is poked on its own
            for t in targets.values():
                self._poke(t, now, forced=forced)
            return
        # sip_poke_peer step 1: nothing to do for unmonitored (unless forced) or address-less peers
        if (p.maxms == 0 and not forced) or p.dest is None:
            p.poke_gen += 1
            self._end_txn(p)
            p.lastms = st.lastms_without_address(p.maxms, p.lastms)
            old = p.verdict.verdict
            if p.maxms and p.reset_verdict():
                self._verdict_changed(p, old, now)
            return
        # step 2: a still-running poke is abandoned
        if p.txn is not None:
            self._end_txn(p)
        cfg = p.cfg
        dest = p.dest
        policy = policy_for(cfg, self.policy)
        if cfg.semantics == "pjsip":  # res_pjsip's request shape (sip/pjsip_options.py)
            req = build_pjsip_options(p.ruri, self._local(p, dest), transport=p.transport.upper(),
                                      from_user=cfg.fromuser or self.from_user, from_domain=cfg.fromdomain,
                                      useragent=self.useragent)
        else:
            req = build_options(
                p.ruri,
                self._local(p, dest),
                transport=p.transport.upper(),
                from_user=cfg.fromuser or self.from_user,
                from_display=self.from_display,
                useragent=self.useragent,
                date=self._date_header(),
                allow=self._allow,
                supported=self._supported,
                to_uri=with_user(p.ruri, cfg.qualify_to_user) if cfg.qualify_to_user else None,
                method=cfg.qualify_method,
                max_forwards=cfg.qualify_max_forwards,
                extra_headers=cfg.qualify_headers_extra,
            )
        self._start_txn(p, req, policy, now, forced=forced)
        self.stats.polls += 1

    def _local(self, p: Peer, dest: Addr) -> Addr:
        """Our address as the peer sees it (Via, From, Contact): the SIP socket's, or the socket of
        the peer's `qualify_source` (over UDP; one that could not be opened: as configured, and
        `_send` sends nothing). Over TCP/TLS the answer comes back over the connection (RFC 3261
        §18.2.2), which the shell opens from the source's address: the SIP socket's address stays."""
        src = p.cfg.qualify_source
        if src is None or p.transport != UDP:
            return self.local_address(dest)
        bound = self.sources.get(src)
        return bound if isinstance(bound, tuple) else src

    def _send(self, p: Peer, data: bytes, dest: Addr) -> None:
        """A datagram for the peer: over the SIP socket, or from its `qualify_source`'s socket. A
        source without a socket (or of the other address family) sends nothing: counted, and its
        reason is the peer's transport error, so the give-up that follows says why."""
        src = p.cfg.qualify_source
        if src is None or p.transport != UDP:
            self._out.append((data, dest))
            return
        bound = self.sources.get(src, "no socket opened for it")
        if isinstance(bound, tuple):
            if (":" in bound[0]) == (":" in dest[0]):
                self._out_from.append((data, dest, bound))
                return
            bound = f"an IPv{6 if ':' in bound[0] else 4} address cannot reach {format_host(dest[0])}"
        self.stats.source_errors += 1
        p.transport_error = f"qualify_source {source_text(src)}: {bound}"

    def _start_txn(self, p: Peer, req: OutgoingOptions, policy: QualifyPolicy, now: float, *, forced: bool) -> None:
        """Send `req` to the peer as a new client transaction (a poke, or its authenticated
        retry), with its own give-up timer."""
        dest = p.dest
        assert dest is not None
        data, branch = req.data, req.branch
        reliable = p.transport in STREAMS
        txn = ClientTransaction(
            branch,
            data,
            dest,
            reliable=reliable,
            policy=policy.retransmit_for(p.cfg.retransmit),
            owner=p,
            call_id=req.call_id,
            cseq=req.cseq,
        )
        self._txns[branch] = txn
        p.txn = txn
        if forced:
            self._forced.add(branch)
        # step 4: cancel the pending poke, send, stamp the RTT clock
        p.poke_gen += 1
        self._send(p, data, dest)
        self.stats.transmissions += 1
        txn.start(now)
        if self.capture.watched and self.capture.wants(p.name, now):
            self.capture.sent(p.name, branch, data, dest, now)
        # step 5: give-up timer (chan_sip: not for forced pokes; we always set one)
        txn.giveup_at = now + policy.giveup_s(p.maxms or DEFAULT_MAXMS)
        self._arm_txn(txn, now)

    def _arm_txn(self, txn: ClientTransaction, now: float) -> None:
        nt, gu = txn.next_timer, txn.giveup_at
        wake = gu if nt is None else (nt if gu is None or nt < gu else gu)
        txn.wake = wake
        if wake is None:
            return
        self._txn_timers.push((wake, next(self._seq), txn), now)

    def _txn_timer(self, txn: ClientTransaction, now: float, when: float) -> None:
        txn.wake = None
        p = txn.owner
        assert isinstance(p, Peer)
        if txn.next_timer is not None and txn.next_timer <= now:
            if now - when > LATE_S and self._retry(p):  # we stalled: a fresh poke, not a late copy
                self.stats.late_restarts += 1
                forced = txn.branch in self._forced
                self._end_txn(p)
                self._poke(p, now, forced=forced)
                return
            outcome = txn.on_timer(now)
            if outcome == RETRANSMIT:
                self._send(p, txn.request, txn.dest)
                self.stats.transmissions += 1
                self.stats.retransmissions += 1
                p.retransmissions += 1
                if self.capture.watched and self.capture.wants(p.name, now):
                    self.capture.retransmitted(p.name, txn.branch)
            elif outcome == TIMEOUT:
                # Timer F before our give-up (only with a give-up later than 32 s): no answer
                self._give_up(txn, now, force=True)
                return
        if txn.giveup_at is not None and txn.giveup_at <= now:
            self._give_up(txn, now)
            return
        if txn.state in _RUNNING:
            self._arm_txn(txn, now)

    def _inconclusive_give_up(self, p: Peer, txn: ClientTransaction, now: float) -> bool:
        """A give-up while our own socket lost datagrams (receive_loss) judges nothing: the
        answer may be among them. The peer is poked again soon, at most INCONCLUSIVE_MAX times
        in a row (a peer that stays silent is then judged as usual)."""
        if self._lost_at < txn.first_sent or p.maxms == 0 or p.removed or not self._retry(p):
            self._inconclusive.pop(p.name, None)
            return False
        self.stats.inconclusive += 1
        self._schedule_poke(p, now + INCONCLUSIVE_RETRY_S)
        return True

    def _retry(self, p: Peer) -> bool:
        """May the peer's poke be started again rather than judged (our own stall or loss)? Yes
        INCONCLUSIVE_MAX times in a row; an answer resets the count."""
        n = self._inconclusive.get(p.name, 0)
        if n >= INCONCLUSIVE_MAX:
            del self._inconclusive[p.name]
            return False
        self._inconclusive[p.name] = n + 1
        return True

    def _give_up(self, txn: ClientTransaction, now: float, force: bool = False) -> None:
        p = txn.owner
        assert isinstance(p, Peer)
        if not force and txn.state not in _RUNNING:
            return
        txn.terminate()
        self._txns.pop(txn.branch, None)
        self._auth.pop(txn.branch, None)
        origin = self._poll_origin(txn, pop=True)
        if p.txn is txn:
            p.txn = None
        forced = txn.branch in self._forced
        self._forced.discard(txn.branch)
        if not forced and self._inconclusive_give_up(p, txn, now):
            return
        self.stats.timeouts += 1
        p.timeouts += 1
        p.last_qualify = now
        if p.maxms == 0 or p.removed:
            self._events.append(_result(p.name, now, False, None, None, txn.transmissions, forced, p.state))
            return
        # sip_poke_noanswer: only if lastms > -1 (OK, LAGGED or UNKNOWN) does anything change
        new = self._apply(p, p.state, st.NO_REPLY, -1, None, now)
        self._events.append(_result(p.name, now, False, None, None, txn.transmissions, forced, new))
        self._judge(p, None, False, now)
        self._stats(p).lost()
        self._schedule_next(p, origin, now, new)

    def _judge(self, p: Peer, status: int | None, lagged: bool, now: float, auth_failed: bool = False) -> None:
        """Feed one result to the peer's verdict (qualify/verdict.py); report a change, unless
        flap damping holds it back (qualify/flap.py)."""
        v = p.verdict
        if v.shared:  # settled (verdict.py): most results leave it as it is
            if v.unchanged_by(status, lagged, auth_failed):
                return
            v = p.own_verdict()
        before = v.confirmed
        old = v.observe(status, lagged, auth_failed)
        flap = v.damp(before, now) if v.policy.flap is not None or v.flap is not None else None
        p.settle_verdict()  # the events below read the same values from `v`
        if flap is not None:
            assert v.flap is not None
            self._events.append(FlapChanged(p.name, v.flapping, v.flap.penalty, v.verdict, v.reason,
                                            v.policy.name, now))
        if old is not None:
            self._verdict_changed(p, old, now)

    @staticmethod
    def _stats(p: Peer) -> LatencyStats:
        s = p.stats
        if s is None:
            s = p.stats = LatencyStats()
        return s

    def _verdict_changed(self, p: Peer, old: str, now: float) -> None:
        v = p.verdict
        if v.flapping:
            return  # held back while it flaps: the FlapChanged that ends it carries the verdict
        self._events.append(VerdictChanged(p.name, old, v.verdict, v.reason, v.policy.name, now,
                                           v.streak, v.threshold))

    def _apply(self, p: Peer, old: str, result: str, lastms: int, rtt: float | None, now: float) -> str:
        """Record one result through the transition table; report a change. Returns the new state."""
        new, publish = st.TRANSITIONS[(old, result)]
        prev = p.lastms
        p.lastms = lastms
        p.rtt = rtt
        if p.parent is not None:
            return self._apply_target(p, p.parent, old, new, now)
        if new != old:
            p.last_change = now
            self.stats.transitions += 1
            p.transitions += 1
            self._events.append(
                StateChanged(p.name, old, new, lastms, p.maxms, rtt, now, prev_lastms=prev, silent=not publish,
                             reason=p.transport_error if new == st.UNREACHABLE else None)
            )
        return new

    def _apply_target(self, t: Peer, p: Peer, old: str, new: str, now: float) -> str:
        """A target's result: its own change is a TargetChanged; the peer's is the rollup's."""
        if new != old:
            t.last_change = now
            t.transitions += 1
            label = t.name[len(p.name) + 1:]
            self._events.append(TargetChanged(p.name, label, old, new, t.lastms, t.rtt, now,
                                              t.transport_error if new == st.UNREACHABLE else None))
        p.last_qualify = now
        self._roll_up(p, now)
        return new

    def _roll_up(self, p: Peer, now: float) -> None:
        if p.maxms == 0 or p.removed:
            return
        verdict = rollup((t.lastms, t.rtt) for t in self._targets.get(p.name, {}).values())
        if verdict is not None:
            lastms, rtt = verdict
            self._apply(p, p.state, verdict_result(p.maxms, lastms), lastms, rtt, now)

    def receive_response(self, msg: Response, addr: Addr, now: float, data: bytes = b"") -> None:
        """A parsed response (from the front door): it completes one of our pokes, or is counted.
        `data`: the message as received, kept only for a watched peer (qualify/capture.py)."""
        status = msg.status
        branch = msg.branch
        txn = self._txns.get(branch) if branch else None
        if txn is None and branch and self._lingering:
            txn = self._lingering_txn(branch, now)
        if txn is None:
            self.stats.stray_responses += 1
            return
        num, method = msg.cseq
        if (
            (prefix := _REQUEST_LINE.get(method)) is None
            or not txn.request.startswith(prefix)  # the poke's method (qualify_method), as CSeq says
            or num != txn.cseq
            or msg.call_id != txn.call_id
            or (self.match_source and addr != txn.dest)
        ):
            self.stats.mismatched_responses += 1
            return
        self._response(txn, status, addr, now, data, msg)

    def receive_fast(self, data: bytes, addr: Addr, now: float) -> bool:
        """The hot path (sip/fastpath.py): a plain response that matches one of our pokes
        exactly (branch, Call-ID, CSeq, source) is taken from its bytes, without building a
        Response. False: anything else, for the front door's full parse and receive_response,
        which count and judge it (mismatched, malformed, a challenge to answer...)."""
        peek = PEEK(data)
        if peek is None:
            return False
        status, branch, call_id, cseq = peek
        txn = self._txns.get(branch)
        if txn is None and self._lingering:
            txn = self._lingering_txn(branch, now)
        if (
            txn is None
            or status in auth.CHALLENGES  # their WWW-Authenticate is needed: full parse
            or call_id != txn.call_id
            or cseq != b"%d %s" % (txn.cseq, txn.request[:txn.request.find(b" ")])
            or (self.match_source and addr != txn.dest)
        ):
            return False
        self._response(txn, status, addr, now, data, None)
        return True

    def _response(self, txn: ClientTransaction, status: int, addr: Addr, now: float, data: bytes,
                  msg: Response | None) -> None:
        """A response matched to `txn`. `msg`: the parsed message (None from the fast path,
        which never passes a challenge)."""
        outcome = txn.on_response(status, now)
        if outcome == RETRANSMITTED:
            self.stats.retransmitted_responses += 1
            return
        self._by_class[status // 100 if status < 700 else 6] += 1
        if self.capture.watched and isinstance(txn.owner, Peer) and self.capture.wants(txn.owner.name, now):
            self.capture.received(txn.owner.name, txn.branch, data, addr, status, now)
        if outcome == PROVISIONAL:
            return
        if outcome != FINAL:
            return
        txn.wake = None
        if txn.reliable:
            self._txns.pop(txn.branch, None)
        else:  # Timer K: the branch absorbs retransmitted responses for a while
            self._linger(txn, now)
        p = txn.owner
        assert isinstance(p, Peer)
        if p.txn is txn:
            p.txn = None
        step = auth.ANSWER
        if status in auth.CHALLENGES and not p.removed and msg is not None:
            step = self._challenged(p, txn, msg, now)
            if step == auth.RETRY:
                _linger_light(txn)
                return
        elif self._auth:
            self._auth.pop(txn.branch, None)
        self._on_answer(p, txn, status, now, auth_failed=step == auth.FAILED)
        _linger_light(txn)

    def _challenged(self, p: Peer, txn: ClientTransaction, msg: Response, now: float) -> str:
        """A 401/407 to a poke: answered with credentials when the peer has them (qualify/auth.py
        decides; RETRY: the authenticated request is on its way)."""
        attempt = self._auth.pop(txn.branch, None)
        if attempt is None:
            if not auth.has_credentials(p.cfg):
                return auth.ANSWER  # chan_sip: the challenge is the answer
            attempt = auth.AuthAttempt(txn.request, txn.branch, txn.cseq)
        step, req = auth.next_step(p.cfg, attempt, msg.status, msg.headers.get_all(auth.HEADERS[msg.status][0]))
        if req is None or p.dest is None:
            return auth.FAILED if step == auth.RETRY else step
        forced = txn.branch in self._forced
        self._forced.discard(txn.branch)
        giveup_at = txn.giveup_at
        self._start_txn(p, req, policy_for(p.cfg, self.policy), now, forced=forced)
        self._auth[req.branch] = attempt
        if p.cfg.semantics == "pjsip":  # res_pjsip: still the poll that started at the first send (auth.py)
            if attempt.origin is None:
                attempt.origin = txn.first_sent
            self._origins.pop(txn.branch, None)
            self._origins[req.branch] = attempt.origin
            if p.txn is not None and giveup_at is not None:
                p.txn.giveup_at = giveup_at
                self._arm_txn(p.txn, now)
        return auth.RETRY

    def _poll_origin(self, txn: ClientTransaction, *, pop: bool = False) -> float:
        """When the poll `txn` answers for was first sent: its own first send, but for the
        authenticated retry of a pjsip.conf contact the challenged request's (qualify/auth.py)."""
        origin = (self._origins.pop if pop else self._origins.get)(txn.branch, None) if self._origins else None
        return txn.first_sent if origin is None else origin

    def _on_answer(self, p: Peer, txn: ClientTransaction, status: int, now: float, *,
                   auth_failed: bool = False) -> None:
        self.stats.answered += 1
        p.transport_error = None
        if self._inconclusive:
            self._inconclusive.pop(p.name, None)
        p.qualifies += 1
        p.last_qualify = now
        origin = self._poll_origin(txn)
        rtt = now - origin
        if rtt < 0.0:  # a kernel receive timestamp a hair before our send stamp
            rtt = 0.0
        if p.maxms == 0 or p.removed:
            # handle_response_peerpoke step 2: nothing recorded for unmonitored peers
            self._forced.discard(txn.branch)
            self._poll_origin(txn, pop=True)
            self._events.append(_result(p.name, now, True, rtt, status, txn.transmissions, True, p.state))
            return
        if not policy_for(p.cfg, self.policy).counts_as_reply(status):
            # a policy may refuse some final responses (e.g. 2xx-only): treated as no answer
            self._give_up(txn, now, force=True)
            return
        self._poll_origin(txn, pop=True)
        ping = st.pingtime_ms(rtt)
        new = self._apply(p, p.state, st.result_kind(p.maxms, ping), ping, rtt, now)
        forced = txn.branch in self._forced
        self._forced.discard(txn.branch)
        self._events.append(_result(p.name, now, True, rtt, status, txn.transmissions, forced, new))
        self._judge(p, status, ping > p.maxms, now, auth_failed)
        s = p.stats  # _stats, inlined: once per answer
        if s is None:
            s = p.stats = LatencyStats()
        s.answered(rtt)
        if p.cfg.latency_delta_ms:
            prev = s.reported
            if s.latency_changed(p.cfg.latency_delta_ms / 1000.0) and prev is not None:
                self._events.append(LatencyChanged(p.name, s.est, prev, s.avg, s.dev, now))
        self._schedule_next(p, origin, now, new)

    def _schedule_next(self, p: Peer, first_sent: float, now: float, new: str) -> None:
        """The next poll at the peer's policy's time (chan_sip: after the result; PJSIP: on its
        grid), brought forward by a verdict's retry_interval while it counts failures."""
        freq = p.cfg.qualifyfreq_ms / 1000.0
        at = policy_for(p.cfg, self.policy).next_poll(first_sent, now, freq, new)
        delay = p.verdict.next_poke_in(at - now)
        if self.general.jitter:  # load hygiene (qualify/ratecap.py): peers drift apart
            delay *= jitter_factor(p.name, p.qualifies + p.timeouts, self.general.jitter)
        self._schedule_poke(p, now + delay, now)

    def owns_branch(self, data: bytes) -> bool:
        """A response whose first branch starts with one of our transactions' (bytes, no parsing:
        0.4 µs). Wrong either way only decides whether the datagram is charged to its source."""
        i = data.find(b";branch=z9hG4bK") + 8
        if i <= 7 or not data.startswith(b"SIP/2.0 "):
            return False
        branch = data[i:i + BRANCH_LEN].decode("latin-1")
        return branch in self._txns or any(branch in gen for _, gen in self._lingering)
