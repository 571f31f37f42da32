"""Registrar for dynamic peers (RFC 3261 §10), sans-I/O, with chan_sip's behaviour.

`Registrar.handle(request, source, now)` returns a `RegisterOutcome`: the response to send,
and what changed (a binding added/refreshed or removed, the AMI PeerStatus to publish, and
the security event chan_sip would report for it: `sip_report_security_event`).
The shell must store a new binding before it sends the 200 OK (so a daemon killed right
after answering still has it) and must then tell the engine, which pokes the peer at once,
like chan_sip after every REGISTER.

Rules (chan_sip `register_verify` with `alwaysauthreject=yes`):
* the peer is the user part of the To URI; it must exist and be `host=dynamic`;
* no credentials -> 401 with a challenge; an unknown peer gets the same 401 (no user
  enumeration), and a wrong password or unknown peer with credentials -> 403 `Forbidden`;
* an expired but genuine nonce -> 401 with `stale=true`;
* `authfail_limit` failures within `authfail_window` from one address ban it (no answers)
  for `authfail_ban`; a failure counts only when it carries a nonce issued to that address,
  and a nonce issued to another address gets a fresh 401 (a forged source bans nobody);
* `Expires` from the Contact's `expires` parameter, else the Expires header, else
  `defaultexpiry`; 0 (or `Contact: *` with `Expires: 0`) unregisters; below `minexpiry`
  -> 423 Interval Too Brief with Min-Expires; above `maxexpiry` -> capped;
* the binding's address is where the REGISTER came from (received/rport, RFC 3581) when
  `force_rport` applies (`nat=force_rport` or `yes`, or `auto_force_rport` and NAT detected:
  the top Via's address is not the source address, chan_sip `check_for_nat`), else the
  Contact's host:port. `comedia`/`auto_comedia` concern media only; `nat` on the binding
  records whether NAT was detected ("Auto (Yes)" in `sip show peers`).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from ..addr import Addr, ip_literal, is_ip
from ..model import DEFAULT_SIP_PORT, PeerConfig
from ..sip.abnf import delta_seconds
from ..sip.digest import Credentials, DigestAuthenticator, parse_auth_header
from ..sip.message import Request, Response, SipParseError, make_response
from ..sip.options import ALLOW
from ..sip.uri import SipUri, parse_name_addr, parse_uri
from .events import SecurityEvent


@dataclass(slots=True)
class Binding:
    peer: str
    contact: str  # Contact URI as registered
    addr: Addr  # where OPTIONS go (received address when NAT applies)
    transport: str
    expires_at: float  # wall-clock UNIX time: stored and shown, never a timer
    useragent: str = ""
    path: str = ""
    call_id: str = ""
    cseq: int = 0
    nat: bool = False
    # The same moment on the engine's monotonic clock: expiry runs on this, so a wall-clock
    # step neither ends a binding early nor stretches it.
    expires_mono: float = 0.0
    granted: int = 0  # the seconds granted: a restart never restores more than this


@dataclass(slots=True)
class RegisterOutcome:
    response: Response
    binding: Binding | None = None  # added or refreshed (store it before sending the 200)
    removed: str | None = None  # peer whose binding was removed
    peer_status: str | None = None  # "Registered" | "Unregistered" | "Rejected"
    peer: str = ""  # the peer (To user) the PeerStatus is about
    cause: str = ""  # AMI Cause for Unregistered / Rejected
    log: str = ""
    security: SecurityEvent | None = None  # chan_sip's security event for this REGISTER
    # PJSIP (qualify/pjsip_registrar.py): every contact binding added or refreshed (a Binding)
    # or removed (None), by contact id, in order; `binding` and `removed` stay unset then
    changes: list[tuple[str, Binding | None]] = field(default_factory=list)


@dataclass(slots=True)
class RegistrarSettings:
    realm: str = "sipqualify"
    minexpiry: int = 60
    maxexpiry: int = 3600
    defaultexpiry: int = 120
    nonce_ttl: float = 30.0
    authfail_limit: int = 10
    authfail_window: float = 60.0
    authfail_ban: float = 300.0
    # memory bounds under a spray of sources: addresses with failures being counted (the
    # oldest count is forgotten first) and banned addresses (the oldest ban is lifted first)
    authfail_max_sources: int = 100_000
    authfail_max_banned: int = 100_000
    algorithms: tuple[str, ...] = ("MD5",)  # challenged with, in this order


@dataclass
class Registrar:
    peers: Callable[[str], PeerConfig | None]
    settings: RegistrarSettings = field(default_factory=RegistrarSettings)
    useragent: str = "sipqualify"
    auth: DigestAuthenticator = field(init=False)
    bindings: dict[str, Binding] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("registered", "unregistered", "challenged", "forbidden", "stale", "too_brief", "bad_requests", "banned",
         "dropped_banned"), 0))
    # Per source address: [failures in the window, window start], oldest window first, so
    # expired windows and the cap's victims come off the front: O(1) per failure, never a scan.
    failures: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)
    # banned address -> banned until, in the order banned (with a fixed ban length, the order
    # of expiry), so expired bans also come off the front and len() is the banned count
    bans: OrderedDict[str, float] = field(default_factory=OrderedDict)
    failure_work: int = 0  # table entries examined by failure accounting (tests bound it)

    def __post_init__(self) -> None:
        self.auth = DigestAuthenticator(self.settings.realm, nonce_ttl=self.settings.nonce_ttl,
                                        algorithms=self.settings.algorithms)

    def _credentials(self, user: str) -> Credentials | None:
        p = self.peers(user)
        if p is None or not p.dynamic:
            return None
        if p.secret:
            return Credentials(secret=p.secret)
        if p.md5secret:
            return Credentials(md5_ha1=p.md5secret)
        return None

    def _reply(self, req: Request, status: int, reason: str, source: Addr,
               extra: list[tuple[str, str]] | None = None) -> Response:
        # never amplify: refusals to unauthenticated sources carry only what their status needs
        base = [("Server", self.useragent), ("Allow", ALLOW)] if status < 300 else []
        return make_response(req, status, reason, received=source, to_tag="as" + os.urandom(4).hex(),
                             extra=[*base, *(extra or [])])

    def banned(self, ip: str, now: float) -> bool:
        until = self.bans.get(ip)
        return until is not None and until > now

    def banned_count(self, now: float) -> int:
        """Addresses banned now. Exact while `authfail_ban` is unchanged; after a change at
        run time a ban that ends earlier may sit behind a longer one until that one ends."""
        self._lift_bans(now)
        return len(self.bans)

    def _lift_bans(self, now: float) -> None:
        bans = self.bans
        while bans:
            self.failure_work += 1
            ip, until = next(iter(bans.items()))
            if until > now:
                return
            del bans[ip]

    def count_failure(self, ip: str, now: float) -> bool:
        """Count a failure from `ip`; True when it just got banned. Amortised O(1): each entry
        is added once and removed once, from the front (window over, or the cap)."""
        s = self.settings
        failures = self.failures
        while failures:  # windows are ordered by start: expired ones are at the front
            self.failure_work += 1
            first, (_, start) = next(iter(failures.items()))
            if now - start <= s.authfail_window:
                break
            del failures[first]
        self.failure_work += 1
        f = failures.get(ip)
        if f is None or now - f[1] > s.authfail_window:  # (a window shortened at run time)
            failures.pop(ip, None)
            f = failures[ip] = [0.0, now]
            while len(failures) > s.authfail_max_sources:
                self.failure_work += 1
                failures.popitem(last=False)
        f[0] += 1
        if s.authfail_ban > 0 and f[0] >= s.authfail_limit:
            del failures[ip]
            self._lift_bans(now)
            self.bans.pop(ip, None)
            self.bans[ip] = now + s.authfail_ban
            while len(self.bans) > s.authfail_max_banned:
                self.failure_work += 1
                self.bans.popitem(last=False)
            self.counters["banned"] += 1
            return True
        return False

    def handle(self, req: Request, source: Addr, now: float, wall: float,
               transport: str = "udp") -> RegisterOutcome | None:
        """`now`: the engine's monotonic clock (nonces, bans, binding expiry); `wall`: UNIX time,
        only for the binding's expiry as stored and shown;
        `transport`: what the REGISTER really came over (its binding's, whatever the Via says).
        None: the source is banned after repeated failures and gets no answer at all."""
        if self.banned(source[0], now):
            self.counters["dropped_banned"] += 1
            return None
        try:
            _, to_uri, _ = parse_name_addr(req.headers.get("To") or "")
            uri = parse_uri(to_uri)
        except SipParseError as e:
            self.counters["bad_requests"] += 1
            return RegisterOutcome(self._reply(req, 400, f"Bad To header ({e.reason[:60]})", source))
        if not isinstance(uri, SipUri) or not uri.user:
            self.counters["bad_requests"] += 1
            return RegisterOutcome(self._reply(req, 404, "Not Found", source))
        name = uri.user
        result = self.auth.verify("REGISTER", req.headers.get("Authorization"), self._credentials, now, source[0])
        if not result.ok:
            if result.reason in ("no-credentials", "stale", "bad-nonce"):
                key = "stale" if result.reason == "stale" else "challenged"
                self.counters[key] += 1
                # the same challenge for every user, known or not, secret or md5secret (no user
                # enumeration); with SHA-256 offered too, MD5 comes first, which UAs pick (RFC 8760
                # §2.4), and an md5secret user answering with SHA-256 is refused like a wrong password
                challenge = self.auth.challenge(now, source[0], stale=result.reason == "stale")
                nonce = parse_auth_header(challenge[0])[1].get("nonce", "")
                return RegisterOutcome(self._reply(req, 401, "Unauthorized", source,
                                                   [("WWW-Authenticate", c) for c in challenge]),
                                       security=self._security(req, name, source, transport, "ChallengeSent",
                                                               ("Challenge", nonce)))
            self.counters["forbidden"] += 1
            # held against the source only with a nonce that was sent to it: anyone can forge a
            # phone's address, nobody else receives its nonces (see sip/digest.py)
            if result.nonce_issued and self.count_failure(source[0], now):
                logmsg = (f"{source[0]}: {self.settings.authfail_limit} failed registrations: ignored for "
                          f"{self.settings.authfail_ban:.0f} s")
            else:
                logmsg = f"Registration from '{name}' failed for '{source[0]}:{source[1]}' - {result.reason}"
            peer = self.peers(name)
            cause = "AUTH_SECRET_FAILED" if peer is not None and peer.dynamic else (
                "AUTH_PEER_NOT_DYNAMIC" if peer is not None else "URI_NOT_FOUND")
            # security_events.c: the nonce of the dialog (the one answered: a nonce that is not
            # ours got a fresh 401 above), the nonce and the response received
            sent = _digest_params(req)
            nonce = sent.get("nonce", "")
            security = self._security(req, name, source, transport, "InvalidPassword", ("Challenge", nonce),
                                      ("ReceivedChallenge", nonce), ("ReceivedHash", sent.get("response", "")))
            return RegisterOutcome(self._reply(req, 403, "Forbidden", source), peer_status="Rejected" if peer else None,
                                   cause=cause, log=logmsg, peer=name, security=security)
        return self._accepted(req, name, result.username, source, now, wall, transport)

    def _accepted(self, req: Request, name: str, username: str, source: Addr, now: float, wall: float,
                  transport: str) -> RegisterOutcome:
        """The digest of `username` is good for a REGISTER to `name` (the To user): chan_sip
        wants them to be the same peer."""
        if username != name:
            self.counters["forbidden"] += 1
            peer = self.peers(name)
            # chan_sip reports AUTH_USERNAME_MISMATCH with the digest username as the response and
            # the peer's `defaultuser` (its `username`) as the expected one
            security = self._security(req, name, source, transport, "ChallengeResponseFailed",
                                      ("Challenge", _digest_params(req).get("nonce", "")),
                                      ("Response", username),
                                      ("ExpectedResponse", (peer.defaultuser or "") if peer else ""))
            return RegisterOutcome(self._reply(req, 403, "Forbidden", source), peer_status="Rejected",
                                   cause="AUTH_USERNAME_MISMATCH", peer=name, security=security)
        peer = self.peers(name)
        assert peer is not None
        out = self._update(req, peer, source, now, wall, transport)
        # AUTH_SUCCESSFUL whatever the Contact then gives (200, 400, 423): the peer has a secret
        out.security = self._security(req, name, source, transport, "SuccessfulAuth", ("UsingPassword", "1"))
        return out

    def _security(self, req: Request, name: str, source: Addr, transport: str, event: str,
                  *fields: tuple[str, str]) -> SecurityEvent:
        """The security event chan_sip's `sip_report_security_event` reports for this REGISTER,
        after register_verify's order: an unknown peer is InvalidAccountID (AUTH_NOT_FOUND) and a
        peer that is not `host=dynamic` FailedACL `peer_not_dynamic`, whatever the digest said;
        only a dynamic peer gets `event` (check_auth's verdict)."""
        peer = self.peers(name)
        if peer is None:
            event, fields = "InvalidAccountID", ()
        elif not peer.dynamic:
            event, fields = "FailedACL", (("ACLName", "peer_not_dynamic"),)
        return SecurityEvent(event, name, dialog_id(req.call_id or ""), source, transport, fields)

    def _update(self, req: Request, peer: PeerConfig, source: Addr, now: float, wall: float,
                transport: str) -> RegisterOutcome:
        s = self.settings
        contacts = req.headers.get_all("Contact")
        default = _delta_seconds(req.headers.get("Expires"), s.defaultexpiry)
        if not contacts:  # a query: answer with the current binding
            b = self.bindings.get(peer.name)
            extra = [("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_mono - now))}")] if b else []
            return RegisterOutcome(self._reply(req, 200, "OK", source, extra))
        if contacts == ["*"]:
            if default != 0:
                self.counters["bad_requests"] += 1
                return RegisterOutcome(self._reply(req, 400, "Bad Request (Contact: * needs Expires: 0)", source))
            return self._remove(req, peer, source)
        try:
            _, curi, cparams = parse_name_addr(contacts[0])
            cu = parse_uri(curi)
        except SipParseError as e:
            self.counters["bad_requests"] += 1
            return RegisterOutcome(self._reply(req, 400, f"Bad Contact ({e.reason[:60]})", source))
        if not isinstance(cu, SipUri):
            self.counters["bad_requests"] += 1
            return RegisterOutcome(self._reply(req, 400, "Bad Contact", source))
        expires = _delta_seconds(cparams.get("expires"), default)
        if expires == 0:
            return self._remove(req, peer, source)
        if expires < s.minexpiry:
            self.counters["too_brief"] += 1
            return RegisterOutcome(self._reply(req, 423, "Interval Too Brief", source,
                                               [("Min-Expires", str(s.minexpiry))]))
        expires = min(expires, s.maxexpiry)
        via = req.top_via
        contact_addr = (cu.host.strip("[]"), cu.port or DEFAULT_SIP_PORT)
        nat = _nat_detected(via.host if via else None, source)
        # a Contact host name is not resolved on the event loop: the source address is used
        addr = source if _use_source(peer, nat) or not is_ip(contact_addr[0]) else contact_addr
        b = Binding(peer.name, curi, addr, transport, wall + expires,
                    storable(req.headers.get("User-Agent") or ""), storable(", ".join(req.headers.get_all("Path"))),
                    req.call_id or "", req.cseq[0], nat, now + expires, expires)
        old = self.bindings.get(peer.name)
        self.bindings[peer.name] = b
        self.counters["registered"] += 1
        extra = [("Contact", f"<{curi}>;expires={expires}"), ("Expires", str(expires))]
        msg = "" if old is not None and old.addr == addr else f"Registered SIP '{peer.name}' at {addr[0]}:{addr[1]}"
        return RegisterOutcome(self._reply(req, 200, "OK", source, extra), binding=b, peer_status="Registered",
                               peer=peer.name, log=msg)

    def _remove(self, req: Request, peer: PeerConfig, source: Addr) -> RegisterOutcome:
        had = self.bindings.pop(peer.name, None)
        if had is not None:
            self.counters["unregistered"] += 1
        return RegisterOutcome(self._reply(req, 200, "OK", source), removed=peer.name if had else None, peer=peer.name,
                               peer_status="Unregistered" if had else None, cause="Expired",
                               log=f"Unregistered SIP '{peer.name}'" if had else "")

    def expire(self, name: str) -> Binding | None:
        return self.bindings.pop(name, None)

    def expiry_note(self, b: Binding) -> tuple[str, str, str]:
        """What an expired binding is logged and published as: (log line, status, cause)."""
        return f"Unregistered SIP '{b.peer}' (expired)", "Unregistered", "Expired"


def _digest_params(req: Request) -> dict[str, str]:
    """The Authorization's parameters, which chan_sip's security events quote (sip_digest_parser)."""
    return parse_auth_header(req.headers.get("Authorization") or "")[1]


def dialog_id(call_id: str) -> str:
    """A security event's SessionID: chan_sip prints its dialog's address (`%p` of the sip_pvt,
    one per Call-ID, shared by the 401 and the REGISTER that answers it); the same shape here,
    the same for every REGISTER of one Call-ID."""
    h = hashlib.blake2b(call_id.encode("utf-8", "surrogateescape"), digest_size=4).digest()
    return f"0x{0x7f0000000000 + int.from_bytes(h, 'big') * 0x10:x}"


def _delta_seconds(value: str | None, default: int) -> int:
    """An Expires value (ASCII delta-seconds only: `int()` also takes full-width digits, signs
    and underscores), or `default` when absent or not a number."""
    n = delta_seconds(value) if value is not None else None
    return default if n is None else n


def storable(text: str) -> str:
    """Free text a phone sent (User-Agent, Path) as SQLite can store it: the parser keeps
    invalid UTF-8 as lone surrogates, which sqlite3 refuses to encode (the binding could not be
    stored, so the phone would get a 500 on every REGISTER and the store would look failed)."""
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _nat_detected(via_host: str | None, source: Addr) -> bool:
    """chan_sip `check_for_nat`: NAT when the top Via's sent-by address is not the address the
    request came from (addresses only, not ports; a host name never equals an address)."""
    if via_host is None:
        return True
    via = ip_literal(via_host.strip("[]"))
    return via is None or via != ip_literal(source[0])


def _use_source(peer: PeerConfig, detected: bool) -> bool:
    """Where the binding points (chan_sip `parse_register_contact`): the REGISTER's source when
    `force_rport` applies (`nat=force_rport`, deprecated `yes`, or `auto_force_rport` with NAT
    detected), else the Contact. `comedia`/`auto_comedia` are about media, not signalling."""
    if "force_rport" in peer.nat or "yes" in peer.nat:
        return True
    return "auto_force_rport" in peer.nat and detected
