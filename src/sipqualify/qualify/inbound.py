"""Inbound SIP, sans-I/O: every request sent to sipqualify, and where each answer goes.

The front door (dispatch.py) parses what arrives once (the per-source budget and the
malformed-input log live there) and hands every request here with the `Flow` it came over.
This endpoint owns what a UAS does:

* OPTIONS answered like res_pjsip (200 with Allow/Accept/Supported; 404 for a user that
  names no peer when `known_user` is set; 416 for a URI that is not sip:/sips:), 405 for a
  method we know but do not serve (RFC 3261 §8.2.1, with Allow), 501 for the rest, 400 for
  a request with defects;
* REGISTER: the registrar, behind non-INVITE server transactions (RFC 3261 §17.2.2): a
  retransmission is absorbed while the first copy is being committed, answered again with
  the very same bytes after;
* where each answer goes: back over the TCP connection a request came over (§18.2.2), else
  to the UDP address the top Via asks for (RFC 3581); a peer registered over TCP is
  qualified over that connection only (`pinned`).

Surface (the engine's shape, STYLE.md §2):

    endpoint.receive_request(request, flow, now)   # from the front door (dispatch.py)
    endpoint.commit_done(token, error, now)        # the shell stored a BindingChanged
    endpoint.get_timer() -> float | None           # when the next binding expires
    endpoint.handle_timer(now)                     # expire the bindings due by `now`
    endpoint.sends() -> [(bytes, Flow)]
    endpoint.next_event() -> InboundEvent | None

Binding expiry runs on the endpoint's own timers, on the shell's clock (monotonic, as
`Binding.expires_mono`): one pending expiry per binding, replaced by a refresh, removed by an
unregister. BindingArmed / BindingDisarmed still say so, for a shell that keeps its own.

A binding change is never answered before it is stored: `receive_request` emits
`BindingChanged(token, ...)`, the shell commits it (group commit, SQLite) and calls
`commit_done(token, error, now)`, which answers (500 when the store failed), tells the
qualify engine (`registered`: a poke at once, as chan_sip) and publishes the PeerStatus.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from ..addr import Addr
from ..sip.message import Request, Response, grant_keep, make_response
from ..sip.options import ALLOW
from ..sip.server_txn import PENDING, ServerTransactions
from .events import SecurityEvent
from .registrar import Binding, RegisterOutcome, Registrar

log = logging.getLogger("sipqualify")

UDP = "udp"
TCP = "tcp"
TLS = "tls"
WS = "ws"  # SIP over WebSocket (RFC 7118)
WSS = "wss"
WEBSOCKETS = (WS, WSS)
STREAMS = (TCP, TLS, WS, WSS)  # connection transports: answers and pokes go over the request's connection
# RFC 6223: the `keep=` we grant a flow whose request asked with a bare `;keep` in its Via (TCP/TLS:
# the CRLF ping of RFC 5626 §4.4.1, which net/tcp.py answers); §4.4.1's 95-120 s for TCP
KEEP_INTERVAL_S = 120

ACCEPT = "application/sdp"
KNOWN_METHODS = frozenset(("INVITE", "BYE", "CANCEL", "SUBSCRIBE", "NOTIFY", "REFER", "INFO", "MESSAGE", "PUBLISH",
                           "UPDATE", "PRACK"))


@dataclass(frozen=True, slots=True)
class Flow:
    """What a message came over, and so where its answer goes. UDP: the datagram's source
    address; TCP, TLS, WS, WSS: the remote end of the connection."""

    transport: str  # UDP | TCP | TLS | WS | WSS
    remote: Addr


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BindingChanged:
    """Store this (None: delete the peer's binding), then call `commit_done(token, ...)`.
    token 0: nothing waits for it (an expired binding's delete)."""

    token: int
    peer: str
    binding: Binding | None
    to: str = ""  # the REGISTER's To header (what a failure is logged about)


@dataclass(frozen=True, slots=True)
class BindingArmed:
    """A binding is in force until `binding.expires_mono`: call `expire` then."""

    binding: Binding


@dataclass(frozen=True, slots=True)
class BindingDisarmed:
    """The peer's binding is gone: its expiry timer is no longer needed."""

    peer: str


@dataclass(frozen=True, slots=True)
class FlowPinned:
    """A connection now carries (True) or no longer carries (False) a registered peer's
    traffic: the transport keeps a pinned connection when it must make room."""

    remote: Addr
    pinned: bool


@dataclass(frozen=True, slots=True)
class RegistryChanged:
    """AMI PeerStatus `Registered` / `Unregistered` / `Rejected` (and the event stream); for a
    registered PJSIP contact (qualify/pjsip_registrar.py) `Created` / `Removed`, with its
    contact URI as `cause` (AMI ContactStatus, res_pjsip's log lines)."""

    peer: str
    status: str
    cause: str
    addr: Addr | None


InboundEvent = BindingChanged | BindingArmed | BindingDisarmed | FlowPinned | RegistryChanged | SecurityEvent


class Qualifier(Protocol):
    """What the endpoint tells the qualify engine about registrations."""

    def registered(self, name: str, addr: Addr, now: float, contact: str | None = None, *,
                   transport: str | None = None, dest: Addr | None = None) -> None: ...

    def unregistered(self, name: str) -> None: ...

    def bound(self, name: str, addr: Addr, contact: str, transport: str, dest: Addr | None) -> bool: ...


class AnswerCounter(Protocol):
    requests_answered: int


@dataclass(slots=True)
class _Commit:
    req: Request
    flow: Flow
    out: RegisterOutcome
    key: Hashable | None
    pending: int = 1  # BindingChanged still being stored (a PJSIP REGISTER may change several)
    error: str | None = None


class InboundEndpoint:
    def __init__(self, qualifier: Qualifier, stats: AnswerCounter, *, useragent: str,
                 respond_options: bool = True, wallclock: Callable[[], float]) -> None:
        self.qualifier = qualifier
        self.stats = stats
        self.useragent = useragent
        self.respond_options = respond_options
        self.wallclock = wallclock  # only for a binding's expiry as stored and shown
        # set: OPTIONS whose Request-URI names a user this returns False for get 404 (res_pjsip)
        self.known_user: Callable[[str], bool] | None = None
        # set: OPTIONS from an address this returns True for (an identified endpoint's) are never 404
        self.identified: Callable[[str], bool] | None = None
        self.registrar: Registrar | None = None  # None: REGISTER is answered 501
        self.server_txns = ServerTransactions()
        self._out: list[tuple[bytes, Flow]] = []
        self._events: deque[InboundEvent] = deque()
        self._commits: dict[int, _Commit] = {}
        self._tokens = itertools.count(1)
        self._tcp_flows: dict[str, Addr] = {}  # peer registered over TCP -> its connection
        self._pinned: dict[Addr, int] = {}  # those connections (refcount): TCP only, never UDP
        self.expiries: dict[str, float] = {}  # peer -> when its binding expires (one each)
        self._expiry_heap: list[tuple[float, str]] = []  # may hold replaced entries, see _arm

    # ------------------------------------------------------------------ surface

    def sends(self) -> list[tuple[bytes, Flow]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> InboundEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When the next binding expires (None: no binding)."""
        heap, live = self._expiry_heap, self.expiries
        while heap and live.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # replaced by a refresh or removed
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        """Expire every binding due by `now`."""
        while (when := self.get_timer()) is not None and when <= now:
            _, peer = heapq.heappop(self._expiry_heap)
            del self.expiries[peer]
            self.expire(peer, when, now)

    def pinned(self, dest: Addr) -> bool:
        """A peer registered over the connection from `dest`: never sent to over UDP."""
        return dest in self._pinned

    def receive_request(self, req: Request, flow: Flow, now: float) -> None:
        """A parsed request (the dispatcher has dropped those with no Via or Call-ID)."""
        method = req.method
        if method == "ACK":
            return
        if method == "REGISTER" and self.registrar is not None and not req.defects:
            self._register(self.registrar, req, flow, now)
            return
        if req.defects:
            d = req.defects[0][:100]
            status, reason = 400, d[:1].upper() + d[1:]
        elif method == "OPTIONS" and self.respond_options:
            status, reason = self._options_status(req.uri, flow.remote)
        elif method == "OPTIONS":
            status, reason = 404, "Not Found"
        elif method in KNOWN_METHODS:
            status, reason = 405, "Method Not Allowed"  # RFC 3261 §8.2.1, with Allow
        else:
            status, reason = 501, "Not Implemented"
        extra = [
            ("Server", self.useragent),
            ("Allow", ALLOW),
            ("Accept", ACCEPT),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ""),
        ]
        if status != 200:
            extra = extra[:2]
        resp = make_response(req, status, reason, received=flow.remote, to_tag="as" + os.urandom(4).hex(), extra=extra)
        self._answer(self._keep(resp, flow).to_bytes(), req, flow)
        self.stats.requests_answered += 1

    def commit_done(self, token: int, error: str | None, now: float) -> None:
        """The BindingChanged with this token is stored (`error` None) or could not be (the
        REGISTER is answered 500 and nothing changes for the engine)."""
        c = self._commits.pop(token, None)
        if c is None:
            return
        c.pending -= 1
        c.error = c.error or error
        if c.pending:
            return
        out = c.out
        if c.error is not None:
            out.response = make_response(c.req, 500, "Server Internal Error", received=c.flow.remote)
            out.binding = out.removed = None
            out.peer_status = None
            out.changes = []
        self._finish(c.req, c.flow, out, c.key, now)

    def expire(self, peer: str, expires_mono: float, now: float) -> None:
        """The expiry timer of the binding in force until `expires_mono` fired."""
        reg = self.registrar
        if reg is None:
            return
        b = reg.bindings.get(peer)
        if b is None or b.expires_mono != expires_mono:
            return  # refreshed or removed since
        self.expiries.pop(peer, None)
        self._drop(reg, peer, "Expired")

    def flow_closed(self, flow: Flow) -> None:
        """A connection is gone. Over a WebSocket the bindings registered over it are removed at
        once (the peer becomes UNKNOWN, as at expiry; PeerStatus `Unregistered`, Cause
        `Connection closed`): a browser phone's Contact (`*.invalid`, RFC 7118 §5) is reachable
        over that connection only, and the phone registers again over a new one. A TCP/TLS
        binding stays until it expires (chan_sip): its pokes go unanswered, UNREACHABLE."""
        reg = self.registrar
        if flow.transport not in WEBSOCKETS or reg is None or flow.remote not in self._pinned:
            return
        for peer in [p for p, remote in self._tcp_flows.items() if remote == flow.remote]:
            b = reg.bindings.get(peer)
            if b is not None and b.transport == flow.transport:
                self._disarm(peer)
                self._drop(reg, peer, "Connection closed")

    def _drop(self, reg: Registrar, peer: str, cause: str) -> None:
        """The binding of `peer` is gone without a REGISTER (expired, its connection closed)."""
        b = reg.bindings.get(peer)
        reg.expire(peer)
        # stored through the same queue as a REGISTER that follows at once (if the delete
        # fails, BindingStore.load drops the expired row at the next start anyway)
        self._events.append(BindingChanged(0, peer, None))
        if b is not None and cause == "Expired":  # the registrar's words (chan_sip's or res_pjsip's)
            line, status, cause = reg.expiry_note(b)
        else:
            line, status = f"Unregistered SIP '{peer}' ({cause.lower()})", "Unregistered"
        log.info("%s", line)
        self._unpin(peer)
        self.qualifier.unregistered(peer)
        self._events.append(RegistryChanged(peer, status, cause, None))

    def restore(self, bindings: Iterable[Binding]) -> None:
        """Bindings read back from storage at start-up."""
        assert self.registrar is not None
        for b in bindings:
            self.registrar.bindings[b.peer] = b
            self._arm(b)

    def apply_bindings(self) -> None:
        """After a (re)load: registered peers keep their address and Contact. A TCP binding
        with no connection yet (a restart) gets port 0, never a UDP peer's address: its pokes
        are dropped, so it is UNREACHABLE until the phone connects and registers again. A
        WebSocket binding with no connection is removed, as when its connection closes."""
        reg = self.registrar
        if reg is None:
            return
        for b in list(reg.bindings.values()):
            if b.transport in WEBSOCKETS and b.peer not in self._tcp_flows:
                self._disarm(b.peer)
                self._drop(reg, b.peer, "Connection closed")
                continue
            dest = None
            if b.transport in STREAMS:
                dest = self._tcp_flows.get(b.peer) or (b.addr[0], 0)
            if self.qualifier.bound(b.peer, b.addr, b.contact, b.transport, dest) and dest is not None:
                self._pin(b.peer, dest)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _keep(resp: Response, flow: Flow) -> Response:
        """RFC 6223 `keep`: granted on TCP/TLS flows, where we answer the CRLF ping."""
        if flow.transport in (TCP, TLS):  # the CRLF ping: not on WebSockets
            grant_keep(resp, KEEP_INTERVAL_S)
        return resp

    def _answer(self, data: bytes, req: Request, flow: Flow) -> None:
        if flow.transport == UDP:  # RFC 3261 §18.2.2 / RFC 3581: the Via's port unless rport
            dest = req.response_dest(flow.remote)
            self._out.append((data, flow if dest == flow.remote else Flow(UDP, dest)))
        else:  # on the connection the request came over, whatever the Via says
            self._out.append((data, flow))

    def _options_status(self, uri: str, source: Addr) -> tuple[int, str]:
        """res_pjsip: 416 for a Request-URI that is not sip:/sips:; 404 for a user part that names
        no peer (only when `known_user` is set) unless the source is an identified endpoint's
        (`identified`: pjsip.conf `type=identify`); otherwise 200. No user part: 200."""
        scheme, _, rest = uri.partition(":")
        if scheme.lower() not in ("sip", "sips"):
            return 416, "Unsupported URI Scheme"
        if self.known_user is not None and not (self.identified is not None and self.identified(source[0])):
            user, at, _ = rest.partition("@")
            if at:
                user = unquote(user.partition(";")[0].partition(":")[0])
                if user and not self.known_user(user):
                    return 404, "Not Found"
        return 200, "OK"

    def _register(self, reg: Registrar, req: Request, flow: Flow, now: float) -> None:
        """Challenges and refusals are answered at once; a binding change is stored first
        (BindingChanged) and answered in `commit_done`. A retransmitted REGISTER is not
        handled again (RFC 3261 §17.2.2): absorbed while the first copy is being stored,
        else answered with the very same response."""
        key = self.server_txns.key(req, flow.remote)
        if key is not None:
            hit = self.server_txns.lookup(key, now)
            if hit is PENDING:
                return
            if isinstance(hit, bytes):
                self._answer(hit, req, flow)
                return
        out = reg.handle(req, flow.remote, now, self.wallclock(), flow.transport)
        if out is None:
            return  # banned source: no answer (never amplify, never help a guesser)
        if out.binding is not None:
            changes: list[tuple[str, Binding | None]] = [(out.binding.peer, out.binding)]
        elif out.removed is not None:
            changes = [(out.removed, None)]
        else:
            changes = out.changes
        if not changes:
            self._finish(req, flow, out, key, now)
            return
        c = _Commit(req, flow, out, key, len(changes))
        for peer, b in changes:
            token = next(self._tokens)
            self._commits[token] = c
            self._events.append(BindingChanged(token, peer, b, req.headers.get("To") or ""))

    def _finish(self, req: Request, flow: Flow, out: RegisterOutcome, key: Hashable | None, now: float) -> None:
        data = self._keep(out.response, flow).to_bytes()
        if key is not None:
            self.server_txns.answered(key, data)
        self._answer(data, req, flow)
        for line in out.log.splitlines():
            log.info("%s", line)
        if out.binding is not None:
            self._bound(out.binding, flow, now)
        elif out.removed is not None:
            self._unbound(out.removed)
        for peer, b in out.changes:  # PJSIP contacts: each one created, refreshed or removed
            if b is None:
                self._unbound(peer)
                self._events.append(RegistryChanged(peer, "Removed", "", flow.remote))
                continue
            fresh = peer not in self.expiries  # not a refresh (nor one restored at start)
            self._bound(b, flow, now)
            if fresh:
                self._events.append(RegistryChanged(peer, "Created", b.contact, flow.remote))
        if out.peer_status is not None:
            self._events.append(RegistryChanged(out.peer, out.peer_status, out.cause,
                                                out.binding.addr if out.binding else flow.remote))
        if out.security is not None:  # chan_sip reports it once handle_request_register returns
            self._events.append(out.security)

    def _bound(self, b: Binding, flow: Flow, now: float) -> None:
        self._arm(b)
        conn = flow.remote if b.transport in STREAMS else None  # qualified over the REGISTER's connection
        self._unpin(b.peer)
        if conn is not None:
            self._pin(b.peer, conn)
        self.qualifier.registered(b.peer, b.addr, now, b.contact, transport=b.transport, dest=conn)

    def _unbound(self, peer: str) -> None:
        self._disarm(peer)
        self._unpin(peer)
        self.qualifier.unregistered(peer)

    def _arm(self, b: Binding) -> None:
        # a refresh replaces the pending expiry (10,000 phones re-registering each minute would
        # otherwise keep an hour of dead timers each): the replaced heap entry is skipped when
        # it comes up, and the heap is rebuilt when such entries outnumber the live ones
        self.expiries[b.peer] = b.expires_mono
        heap = self._expiry_heap
        if len(heap) > 2 * len(self.expiries) + 64:
            heap[:] = [(when, peer) for peer, when in self.expiries.items()]
            heapq.heapify(heap)
        else:
            heapq.heappush(heap, (b.expires_mono, b.peer))
        self._events.append(BindingArmed(b))

    def _disarm(self, peer: str) -> None:
        self.expiries.pop(peer, None)
        self._events.append(BindingDisarmed(peer))

    def _pin(self, peer: str, conn: Addr) -> None:
        self._unpin(peer)
        self._tcp_flows[peer] = conn
        n = self._pinned.get(conn, 0)
        self._pinned[conn] = n + 1
        self._events.append(FlowPinned(conn, True))

    def _unpin(self, peer: str) -> None:
        old = self._tcp_flows.pop(peer, None)
        if old is None:
            return
        n = self._pinned.get(old, 1) - 1
        if n > 0:
            self._pinned[old] = n
        else:
            self._pinned.pop(old, None)
            self._events.append(FlowPinned(old, False))  # no binding over it any more
