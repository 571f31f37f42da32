"""The inbound endpoint on a virtual clock: requests in, (bytes, flow) and events out.

The test plays the shell: it feeds what arrives through the engine's one front door, stores
BindingChanged when it chooses (so a commit can be held open while a retransmission
arrives), and fires binding expiry at the time BindingArmed asked for. No sockets, no
asyncio, no sleeps."""

from __future__ import annotations

from sipqualify.model import PeerConfig
from sipqualify.qualify.engine import QualifyEngine
from sipqualify.qualify.events import SecurityEvent
from sipqualify.qualify.inbound import (
    TCP,
    UDP,
    WS,
    BindingChanged,
    BindingDisarmed,
    Flow,
    FlowPinned,
    RegistryChanged,
)
from sipqualify.qualify.registrar import Binding, Registrar, RegistrarSettings, dialog_id
from sipqualify.sip.digest import authorization
from sipqualify.sip.message import parse_message

from .helpers import Shell

Addr = tuple[str, int]
PHONE: Addr = ("192.0.2.50", 5060)
CONN: Addr = ("192.0.2.60", 40123)  # a phone's TCP connection (ephemeral port)
PEERS = {
    "1001": PeerConfig(name="1001", host="dynamic", dynamic=True, secret="s3cret", qualify_ms=2000,
                       qualifyfreq_ms=60_000),
    "p": PeerConfig(name="p", host="192.0.2.9", qualify_ms=2000, qualifyfreq_ms=60_000),
}


def make_shell(registrar: bool = True) -> Shell:
    eng = QualifyEngine(local_address=lambda d: ("192.0.2.1", 5060), wallclock=lambda: 1e9)
    eng.load(list(PEERS.values()), 0.0, addresses={"p": ("192.0.2.9", 5060)})
    if registrar:
        eng.inbound.registrar = Registrar(PEERS.get, RegistrarSettings(realm="pbx.test", minexpiry=60))
    shell = Shell(eng)
    shell.flush()
    return shell


def register(cseq: int, auth: str = "", *, expires: int = 600, branch: str = "", via: str = "UDP 192.0.2.50:5060",
             contact: str = "<sip:1001@192.0.2.50>") -> bytes:
    lines = ["REGISTER sip:pbx.test SIP/2.0", f"Via: SIP/2.0/{via};branch=z9hG4bK{branch or cseq};rport",
             "Max-Forwards: 70", "From: <sip:1001@pbx.test>;tag=g", "To: <sip:1001@pbx.test>",
             "Call-ID: reg-1001", f"CSeq: {cseq} REGISTER", f"Contact: {contact}", f"Expires: {expires}"]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def credentials(shell: Shell, nc: int = 1) -> str:
    challenge = next(d for _, d, _ in reversed(shell.sent) if d.startswith(b"SIP/2.0 401"))
    www = parse_message(challenge).headers.get_all("WWW-Authenticate")[0]
    return authorization(www, "1001", "s3cret", "REGISTER", "sip:pbx.test", nc=nc, cnonce="abcd")


def request(method: str, uri: str = "sip:192.0.2.1:5060", via: str = "UDP 192.0.2.50:5070;rport") -> bytes:
    return (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK{method}1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:probe@192.0.2.50>;tag=1\r\nTo: <{uri}>\r\nCall-ID: {method}-1\r\nCSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


# ---------------------------------------------------------------------- REGISTER


def test_register_is_challenged_then_answered_200_only_after_its_commit() -> None:
    """RFC 3261 §10.3 with digest (§22.4): 401 at once; the authenticated REGISTER becomes a
    BindingChanged, and its 200 OK, the PeerStatus and the poke (chan_sip pokes after every
    REGISTER) come only once the shell says it is stored."""
    s = make_shell()
    s.deliver(register(1), PHONE)
    assert s.answers() == ["SIP/2.0 401 Unauthorized"] and not s.commits
    s.deliver(register(2, credentials(s)), PHONE)
    assert s.answers() == ["SIP/2.0 401 Unauthorized"]  # nothing before the commit
    (c,) = s.commits
    assert c.peer == "1001" and c.binding is not None and c.binding.addr == PHONE and c.token > 0
    assert not s.pokes
    s.now = 0.25
    s.store_all()
    assert s.answers()[-1] == "SIP/2.0 200 OK"
    assert s.sent[-1][2] == Flow(UDP, PHONE)
    assert [(t, a) for t, _, a in s.pokes] == [(0.25, PHONE)]  # the poke, at the commit's time
    assert RegistryChanged("1001", "Registered", "", PHONE) in s.events
    assert s.expiry == {"1001": 600.0}  # granted from when the REGISTER arrived
    assert s.engine.peer("1001").addr == PHONE  # type: ignore[union-attr]


def test_retransmission_is_absorbed_while_committing_and_answered_with_the_same_bytes_after() -> None:
    """RFC 3261 §17.2.2: a retransmitted REGISTER is not processed again. While its binding is
    being stored it is absorbed (no second BindingChanged, no answer); after the 200 OK it gets
    that very 200 again, byte for byte (same To tag), not a 403 for a replayed nonce count."""
    s = make_shell()
    s.deliver(register(1), PHONE)
    again = register(2, credentials(s))
    s.deliver(again, PHONE)
    s.now = 0.5  # Timer E: the phone retransmits after T1
    s.deliver(again, PHONE)
    assert len(s.commits) == 1 and s.answers() == ["SIP/2.0 401 Unauthorized"]
    assert s.engine.inbound.server_txns.absorbed == 1
    s.now = 0.6
    s.store_all()
    first_200 = s.sent[-1][1]
    s.now = 1.5
    s.deliver(again, PHONE)
    assert s.sent[-1][1] == first_200 and s.answers().count("SIP/2.0 200 OK") == 2
    assert s.engine.inbound.server_txns.resent == 1 and not s.commits
    # reported once, for the REGISTER handled (chan_sip would report each copy again)
    assert [e.event for e in s.events if isinstance(e, SecurityEvent)] == ["ChallengeSent", "SuccessfulAuth"]


def test_a_failed_commit_answers_500_and_changes_nothing() -> None:
    s = make_shell()
    s.deliver(register(1), PHONE)
    s.deliver(register(2, credentials(s)), PHONE)
    s.store_all(error="OperationalError: disk I/O error")
    assert s.answers()[-1] == "SIP/2.0 500 Server Internal Error"
    assert not s.pokes and not s.expiry and not [e for e in s.events if isinstance(e, RegistryChanged)]


def test_binding_expires_on_the_virtual_clock() -> None:
    """A 60 s registration ends at 60 s on the engine clock: deleted from the store (token 0:
    nobody waits), the engine unregistered (its next poke makes it UNKNOWN silently), and
    PeerStatus Unregistered/Expired published. A refresh before then moves the expiry."""
    s = make_shell()
    s.deliver(register(1, expires=60), PHONE)
    s.deliver(register(2, credentials(s), expires=60), PHONE)
    s.store_all()
    assert s.expiry == {"1001": 60.0}
    s.advance(30.0)
    s.deliver(register(3, credentials(s, nc=2), expires=60), PHONE)  # a refresh at 30 s
    s.store_all()
    assert s.expiry == {"1001": 90.0}
    s.advance(89.9)
    assert s.engine.peer("1001").addr == PHONE  # type: ignore[union-attr]
    s.advance(91.0)
    (c,) = s.commits
    assert (c.token, c.peer, c.binding) == (0, "1001", None)  # token 0: deleted, nobody waits for it
    s.store_all()
    assert s.stored[-1] == ("1001", None)
    assert s.engine.peer("1001").addr is None  # type: ignore[union-attr]
    assert s.events[-1] == RegistryChanged("1001", "Unregistered", "Expired", None)
    assert s.engine.inbound.registrar is not None and "1001" not in s.engine.inbound.registrar.bindings


def test_an_expiry_timer_of_a_refreshed_binding_does_nothing() -> None:
    s = make_shell()
    s.deliver(register(1, expires=60), PHONE)
    s.deliver(register(2, credentials(s), expires=60), PHONE)
    s.store_all()
    s.now = 10.0
    s.deliver(register(3, credentials(s, nc=2), expires=60), PHONE)
    s.store_all()
    n = len(s.events)
    s.engine.inbound.expire("1001", 60.0, 60.0)  # the old timer, had it not been replaced
    s.flush()
    assert len(s.events) == n and s.engine.peer("1001").addr == PHONE  # type: ignore[union-attr]


def test_unregister_disarms_expiry_and_unregisters() -> None:
    s = make_shell()
    s.deliver(register(1), PHONE)
    s.deliver(register(2, credentials(s)), PHONE)
    s.store_all()
    s.deliver(register(3, credentials(s, nc=2), expires=0), PHONE)
    (c,) = s.commits
    assert c.binding is None and c.peer == "1001"
    s.store_all()
    assert s.answers()[-1] == "SIP/2.0 200 OK" and not s.expiry
    assert s.engine.peer("1001").addr is None  # type: ignore[union-attr]
    # chan_sip reports the REGISTER's security event once it is handled: after the PeerStatus
    assert s.events[-2:] == [RegistryChanged("1001", "Unregistered", "Expired", PHONE),
                             SecurityEvent("SuccessfulAuth", "1001", dialog_id("reg-1001"), PHONE, UDP,
                                           (("UsingPassword", "1"),))]


# ---------------------------------------------------------------------- TCP flows


def test_tcp_register_is_answered_on_its_connection_and_the_peer_is_qualified_over_it() -> None:
    """RFC 3261 §18.2.2: over TCP the answer goes back on the connection, whatever the Via's
    sent-by says; the peer's OPTIONS go to that connection, which is pinned (never UDP)."""
    s = make_shell()
    s.deliver(register(1, via="TCP 192.0.2.60:5060"), CONN, TCP)
    assert s.sent[-1][2] == Flow(TCP, CONN)
    s.deliver(register(2, credentials(s), via="TCP 192.0.2.60:5060"), CONN, TCP)
    s.store_all()
    assert s.sent[-1][2] == Flow(TCP, CONN) and s.answers()[-1] == "SIP/2.0 200 OK"
    assert FlowPinned(CONN, True) in s.events and s.engine.inbound.pinned(CONN)
    assert [a for _, _, a in s.pokes] == [CONN]
    p = s.engine.peer("1001")
    assert p is not None and p.transport == "tcp" and p.dest == CONN
    s.deliver(register(3, credentials(s, nc=2), via="TCP 192.0.2.60:5060", expires=0), CONN, TCP)
    s.store_all()
    assert s.events[-3] == FlowPinned(CONN, False) and not s.engine.inbound.pinned(CONN)
    assert isinstance(s.events[-1], SecurityEvent) and s.events[-1].transport == TCP


def test_closed_websocket_drops_its_bindings_and_a_closed_tcp_connection_does_not() -> None:
    """RFC 7118 §5: a WebSocket phone's Contact (`*.invalid`) is reachable over its connection
    only: when it closes the binding goes (stored delete, unpinned, PeerStatus Unregistered, the
    peer loses its address). A TCP binding stays (chan_sip): its pokes go unanswered."""
    s = make_shell()
    s.deliver(register(1, via="TCP 192.0.2.60:5060"), CONN, TCP)
    s.deliver(register(2, credentials(s), via="TCP 192.0.2.60:5060"), CONN, TCP)
    s.store_all()
    s.engine.inbound.flow_closed(Flow(TCP, CONN))
    s.flush()
    assert s.engine.inbound.pinned(CONN) and s.engine.peer("1001").dest == CONN  # type: ignore[union-attr]
    ws_conn = ("192.0.2.61", 50000)
    ws_via, ws_contact = "WS k3x9q2.invalid", "<sip:ab@k3x9q2.invalid;transport=ws>"
    s.deliver(register(3, via=ws_via, contact=ws_contact), ws_conn, WS)
    s.deliver(register(4, credentials(s), via=ws_via, contact=ws_contact), ws_conn, WS)
    s.store_all()
    assert s.sent[-1][2] == Flow(WS, ws_conn) and s.answers()[-1] == "SIP/2.0 200 OK"
    p = s.engine.peer("1001")
    assert p is not None and p.transport == "ws" and p.dest == ws_conn and p.ruri == ws_contact.strip("<>")
    assert not s.engine.inbound.pinned(CONN) and s.engine.inbound.pinned(ws_conn)
    s.engine.inbound.flow_closed(Flow(TCP, ws_conn))  # another transport's connection of that address: nothing
    s.engine.inbound.flow_closed(Flow(WS, ("192.0.2.61", 50001)))  # another WebSocket: nothing
    s.flush()
    assert s.engine.inbound.pinned(ws_conn)
    n = len(s.events)
    s.engine.inbound.flow_closed(Flow(WS, ws_conn))
    s.flush()
    assert s.events[n:] == [BindingDisarmed("1001"), BindingChanged(0, "1001", None), FlowPinned(ws_conn, False),
                            RegistryChanged("1001", "Unregistered", "Connection closed", None)]
    assert p.dest is None and p.transport == "udp" and not s.engine.inbound.pinned(ws_conn)
    assert s.engine.inbound.registrar is not None and "1001" not in s.engine.inbound.registrar.bindings
    assert "1001" not in s.expiry


def test_a_websocket_binding_read_back_at_start_is_dropped() -> None:
    """Connections do not survive a restart: a WebSocket binding with none is removed (a TCP
    binding is kept, with no connection, until it expires)."""
    s = make_shell()
    ib = s.engine.inbound
    ib.restore([Binding("1001", "sip:ab@k3x9q2.invalid;transport=ws", ("192.0.2.61", 50000), WS, 1e9 + 600, "",
                        "", "c", 1, True, 600.0, 600)])
    ib.apply_bindings()
    s.flush()
    assert RegistryChanged("1001", "Unregistered", "Connection closed", None) in s.events
    assert ib.registrar is not None and ib.registrar.bindings == {} and ib.get_timer() is None


def test_options_over_tcp_are_answered_on_the_connection() -> None:
    s = make_shell()
    s.deliver(request("OPTIONS", via="TCP 192.0.2.60:5060"), CONN, TCP)
    (_, data, flow), = s.sent
    assert data.startswith(b"SIP/2.0 200 OK\r\n") and flow == Flow(TCP, CONN)


# ---------------------------------------------------------------------- OPTIONS, 405, 501


def test_options_200_404_416() -> None:
    """res_pjsip: 200 with Allow/Accept/Supported; 404 for a user that is no peer (when asked
    to check); 416 Unsupported URI Scheme (RFC 3261 §8.2.2.1) for a tel: URI."""
    s = make_shell()
    s.engine.inbound.known_user = lambda user: user in PEERS
    s.deliver(request("OPTIONS"), PHONE)
    s.deliver(request("OPTIONS", "sip:1001@192.0.2.1"), PHONE)
    s.deliver(request("OPTIONS", "sip:ghost@192.0.2.1"), PHONE)
    s.deliver(request("OPTIONS", "tel:+15551234"), PHONE)
    assert s.answers() == ["SIP/2.0 200 OK", "SIP/2.0 200 OK", "SIP/2.0 404 Not Found",
                           "SIP/2.0 416 Unsupported URI Scheme"]
    assert b"Accept: application/sdp\r\n" in s.sent[0][1]
    assert all(f == Flow(UDP, PHONE[:1] + (5070,)) or f == Flow(UDP, PHONE) for _, _, f in s.sent)
    assert s.engine.stats.requests_answered == 4


def test_405_with_allow_and_501() -> None:
    """RFC 3261 §8.2.1: a method we know but do not serve gets 405 with Allow; one we do not
    know 501. Without a registrar REGISTER is 501 too; ACK is never answered."""
    s = make_shell(registrar=False)
    for m in ("INFO", "FROBNICATE", "REGISTER", "ACK"):
        s.deliver(request(m), PHONE)
    assert s.answers() == ["SIP/2.0 405 Method Not Allowed", "SIP/2.0 501 Not Implemented",
                           "SIP/2.0 501 Not Implemented"]
    assert b"\r\nAllow: " in s.sent[0][1]


def test_rport_answer_goes_to_the_source_port_and_without_rport_to_the_via_port() -> None:
    s = make_shell()
    s.deliver(request("OPTIONS"), PHONE)  # Via 5070 with rport, source 5060
    s.deliver(request("OPTIONS", via="UDP 192.0.2.50:5070"), PHONE)
    assert [f for _, _, f in s.sent] == [Flow(UDP, PHONE), Flow(UDP, ("192.0.2.50", 5070))]

# ---------------------------------------------------------------- binding expiry on the endpoint's own timers
# (virtual clock): one pending expiry per binding, a refresh replaces it, an unregister removes it,
# and the timer heap stays bounded however often bindings are refreshed.


def test_expiry_fires_on_the_endpoints_timer() -> None:
    s = make_shell()
    s.deliver(register(1, expires=60), PHONE)
    s.deliver(register(2, credentials(s), expires=60), PHONE)
    s.store_all()
    inbound = s.engine.inbound
    when = inbound.get_timer()
    assert when is not None and inbound.expiries == {"1001": when}
    inbound.handle_timer(when - 0.001)
    assert inbound.registrar is not None and "1001" in inbound.registrar.bindings
    inbound.handle_timer(when)
    s.flush()
    assert "1001" not in inbound.registrar.bindings and inbound.get_timer() is None
    assert s.commits[-1].token == 0 and s.commits[-1].binding is None  # the delete to store


def test_refreshes_keep_one_pending_expiry_and_a_bounded_heap() -> None:
    s = make_shell()
    inbound = s.engine.inbound
    for i in range(10_000):
        inbound._arm(Binding("1001", "<sip:1001@192.0.2.50>", PHONE, "udp", 1e9 + 100.0 + i, expires_mono=100.0 + i))
    assert inbound.expiries == {"1001": 10_099.0} and inbound.get_timer() == 10_099.0
    assert len(inbound._expiry_heap) <= 2 * len(inbound.expiries) + 65
