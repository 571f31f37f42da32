"""Registrar for pjsip.conf AORs (res_pjsip_registrar), sans-I/O.

It is the chan_sip `Registrar` (bans, nonces, challenges, security events) with PJSIP's
rules for a REGISTER whose To user names a pjsip.conf AOR; any other To user is left to the
chan_sip rules (sip.conf peers of the same daemon). Rules (res_pjsip_registrar.c of Asterisk
20.20.1, asterisk-pjsip-observed.md §3.8, §6, §8):

* the endpoint is the one whose `auth=` section has the digest's username and that lists
  the AOR; the digest is checked with that section's `password` (or `md5_cred`). An endpoint
  without `auth=` named by the From user registers to its AORs without a challenge;
* a good digest for an endpoint that does not list the AOR: 404 Not Found; an AOR with
  `max_contacts = 0`: 403 Forbidden (registration not allowed there);
* bindings are per contact, named `<aor>;@<md5(uri)>` (location.c:365); the same URI again
  is a refresh of the same contact;
* expiry: the Contact's `expires`, else the Expires header, else `default_expiration`;
  0 removes; under `minimum_expiration`: 423 Interval Too Brief with Min-Expires; over
  `maximum_expiration`: capped. `Contact: *` with `Expires: 0` removes every contact;
* more contacts than `max_contacts`: with `remove_unavailable` Unreachable contacts go
  first, then with `remove_existing` those expiring soonest; otherwise 403 Forbidden and the
  WARNING `... will exceed max contacts of N`;
* the 200 OK lists every contact of the AOR, `Contact: <uri>;expires=<seconds left>`, and an
  Expires header when the request had one.

Where the OPTIONS go: the address the REGISTER came from (received/rport), over the flow it
came on; res_pjsip uses the Contact URI unless the endpoint has `rewrite_contact = yes`,
which fails for a phone behind NAT (a deliberate difference, README).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

from ..addr import Addr
from ..model import PeerConfig, PjsipAor, PjsipConfig, PjsipEndpoint
from ..sip.abnf import delta_seconds
from ..sip.digest import Credentials
from ..sip.message import Request, SipParseError
from ..sip.uri import SipUri, parse_name_addr, parse_uri
from .events import SecurityEvent
from .registrar import Binding, RegisterOutcome, Registrar, RegistrarSettings, dialog_id, storable

log = logging.getLogger("sipqualify")

SEPARATOR = ";@"  # a registered contact's id: <aor>;@<md5(uri)>


def registered_contact_id(aor: str, uri: str) -> str:
    """location.c:365."""
    return f"{aor}{SEPARATOR}{hashlib.md5(uri.encode()).hexdigest()}"


def aor_of(contact_id: str) -> str | None:
    """The AOR of a registered contact id (None: not one)."""
    aor, sep, _ = contact_id.rpartition(SEPARATOR)
    return aor if sep else None


@dataclass(frozen=True, slots=True)
class _Contact:
    uri: str
    expires: int


class PjsipRegistrar(Registrar):
    """`unavailable(contact_id)`: the contact is Unreachable now (for `remove_unavailable`)."""

    def __init__(self, pj: PjsipConfig, peers: Callable[[str], PeerConfig | None],
                 settings: RegistrarSettings | None = None, *, useragent: str = "sipqualify",
                 unavailable: Callable[[str], bool] = lambda _: False) -> None:
        super().__init__(peers, settings or RegistrarSettings(), useragent)
        self.pj = pj
        self.unavailable = unavailable

    # ------------------------------------------------------------------ lookups

    def _auth_of(self, username: str) -> list[PjsipEndpoint]:
        return [ep for ep in self.pj.endpoints.values()
                if ep.auth and (a := self.pj.auths.get(ep.auth)) is not None and a.username == username]

    def _credentials(self, user: str) -> Credentials | None:
        for ep in self._auth_of(user):
            a = self.pj.auths[ep.auth]
            if a.password:
                return Credentials(secret=a.password)
            if a.md5_cred:
                return Credentials(md5_ha1=a.md5_cred)
        return super()._credentials(user)

    def contacts_of(self, aor: str) -> list[Binding]:
        prefix = aor + SEPARATOR
        return [b for k, b in self.bindings.items() if k.startswith(prefix)]

    # ------------------------------------------------------------------ the REGISTER

    def handle(self, req: Request, source: Addr, now: float, wall: float,
               transport: str = "udp") -> RegisterOutcome | None:
        if not self.banned(source[0], now):
            open_ep = self._open_endpoint(req)
            if open_ep is not None:
                return self._register(req, open_ep[0], open_ep[1], source, now, wall, transport)
        return super().handle(req, source, now, wall, transport)

    def _to_user(self, req: Request) -> str | None:
        try:
            u = parse_uri(parse_name_addr(req.headers.get("To") or "")[1])
        except SipParseError:
            return None
        return u.user if isinstance(u, SipUri) and u.user else None

    def _open_endpoint(self, req: Request) -> tuple[PjsipEndpoint, PjsipAor] | None:
        """An endpoint without `auth=`, named by the From user, registering to one of its AORs."""
        name = self._to_user(req)
        aor = self.pj.aors.get(name or "")
        if aor is None:
            return None
        try:
            f = parse_uri(parse_name_addr(req.headers.get("From") or "")[1])
        except SipParseError:
            return None
        ep = self.pj.endpoints.get(f.user or "") if isinstance(f, SipUri) else None
        if ep is None or ep.auth or aor.name not in ep.aors:
            return None
        return ep, aor

    def _accepted(self, req: Request, name: str, username: str, source: Addr, now: float, wall: float,
                  transport: str) -> RegisterOutcome:
        aor = self.pj.aors.get(name)
        eps = self._auth_of(username)
        if aor is None or not eps:
            return super()._accepted(req, name, username, source, now, wall, transport)
        ep = next((e for e in eps if aor.name in e.aors), None)
        if ep is None:  # res_pjsip_registrar: the AOR is not one of the endpoint's
            self.counters["bad_requests"] += 1
            return RegisterOutcome(self._reply(req, 404, "Not Found", source),
                                   security=self._event(req, eps[0].name, source, transport, "SuccessfulAuth"))
        return self._register(req, ep, aor, source, now, wall, transport)

    def _security(self, req: Request, name: str, source: Addr, transport: str, event: str,
                  *fields: tuple[str, str]) -> SecurityEvent:
        if name in self.pj.aors:  # res_pjsip reports what the digest said, whatever the name
            return SecurityEvent(event, name, dialog_id(req.call_id or ""), source, transport, fields)
        return super()._security(req, name, source, transport, event, *fields)

    def _event(self, req: Request, account: str, source: Addr, transport: str, event: str) -> SecurityEvent:
        return SecurityEvent(event, account, dialog_id(req.call_id or ""), source, transport,
                             (("UsingPassword", "1"),) if event == "SuccessfulAuth" else ())

    def _register(self, req: Request, ep: PjsipEndpoint, aor: PjsipAor, source: Addr, now: float, wall: float,
                  transport: str) -> RegisterOutcome:
        security = self._event(req, ep.name, source, transport, "SuccessfulAuth")
        if aor.max_contacts == 0:  # "AOR has no configured max_contacts": registration refused
            self.counters["forbidden"] += 1
            return RegisterOutcome(self._reply(req, 403, "Forbidden", source), security=security)
        header = req.headers.get("Expires")
        default = aor.default_expiration
        if header is not None and (n := delta_seconds(header)) is not None:
            default = n
        values = req.headers.get_all("Contact")
        existing = {b.contact: b for b in self.contacts_of(aor.name)}
        if values == ["*"]:
            if default != 0:
                self.counters["bad_requests"] += 1
                return RegisterOutcome(self._reply(req, 400, "Bad Request", source), security=security)
            out = self._answer(req, source, aor, (now, wall), header, [], list(existing.values()), [])
            out.security = security
            return out
        asked: list[_Contact] = []
        for v in values:
            try:
                _, curi, cparams = parse_name_addr(v)
                cu = parse_uri(curi)
            except SipParseError:
                cu = None
            if not isinstance(cu, SipUri):
                self.counters["bad_requests"] += 1
                return RegisterOutcome(self._reply(req, 400, "Bad Request", source), security=security)
            n = delta_seconds(cparams.get("expires") or "") if cparams.get("expires") is not None else None
            expires = default if n is None else n
            if 0 < expires < aor.minimum_expiration:
                self.counters["too_brief"] += 1
                return RegisterOutcome(self._reply(req, 423, "Interval Too Brief", source,
                                                   [("Min-Expires", str(aor.minimum_expiration))]),
                                       security=security)
            if aor.maximum_expiration and expires > aor.maximum_expiration:
                expires = aor.maximum_expiration
            asked.append(_Contact(curi, expires))
        adds = [c for c in asked if c.expires > 0]
        dels = [existing[c.uri] for c in asked if c.expires == 0 and c.uri in existing]
        keep = [b for u, b in existing.items() if all(c.uri != u for c in asked)]
        new = [c for c in adds if c.uri not in existing]
        room = aor.max_contacts - (len(keep) + len(adds))
        evicted: list[Binding] = []
        if room < 0 and new:
            order = sorted(keep, key=lambda b: (not (aor.remove_unavailable and self.unavailable(b.peer)),
                                                b.expires_mono))
            removable = [b for b in order if (aor.remove_unavailable and self.unavailable(b.peer))
                         or aor.remove_existing]
            evicted = removable[:-room]
            if len(evicted) < -room:
                self.counters["forbidden"] += 1
                log.warning(f"Registration attempt from endpoint '{ep.name}' ({source[0]}:{source[1]}) to "
                                     f"AOR '{aor.name}' will exceed max contacts of {aor.max_contacts}")
                return RegisterOutcome(self._reply(req, 403, "Forbidden", source), security=security)
        bound = [self._binding(req, ep, aor, c, source, now, wall, transport) for c in adds]
        out = self._answer(req, source, aor, (now, wall), header, bound, dels, evicted)
        out.security = security
        return out

    def _binding(self, req: Request, ep: PjsipEndpoint, aor: PjsipAor, c: _Contact, source: Addr, now: float,
                 wall: float, transport: str) -> Binding:
        via = req.top_via
        return Binding(registered_contact_id(aor.name, c.uri), c.uri, source, transport, wall + c.expires,
                       storable(req.headers.get("User-Agent") or ""), storable(", ".join(req.headers.get_all("Path"))),
                       req.call_id or "", req.cseq[0], via is not None and via.host != source[0], now + c.expires,
                       c.expires)

    def _answer(self, req: Request, source: Addr, aor: PjsipAor, clocks: tuple[float, float], header: str | None,
                bound: list[Binding], removed: list[Binding], evicted: list[Binding]) -> RegisterOutcome:
        """Apply the changes and build the 200 OK: Date (registrar_add_date_header), the AOR's
        contacts, Expires when the request had one. `clocks`: (monotonic now, wall)."""
        now, wall = clocks
        out = RegisterOutcome(self._reply(req, 200, "OK", source), peer=aor.name)
        logs = []
        for b in removed:
            self.bindings.pop(b.peer, None)
            out.changes.append((b.peer, None))
            self.counters["unregistered"] += 1
            logs.append(f"Removed contact '{b.contact}' from AOR '{aor.name}' due to request")
        for b in bound:
            old = self.bindings.get(b.peer)
            self.bindings[b.peer] = b
            out.changes.append((b.peer, b))
            self.counters["registered"] += 1
            if old is None:
                logs.append(f"Added contact '{b.contact}' to AOR '{aor.name}' with expiration of {b.granted} seconds")
        for b in evicted:
            self.bindings.pop(b.peer, None)
            out.changes.append((b.peer, None))
            self.counters["unregistered"] += 1
            reason = "remove unavailable" if aor.remove_unavailable and self.unavailable(b.peer) else "remove existing"
            logs.append(f"Removed contact '{b.contact}' from AOR '{aor.name}' due to {reason}")
        out.log = "\n".join(logs)
        headers = out.response.headers
        headers.add("Date", formatdate(wall, usegmt=True))  # strftime "%a, %d %b %Y %T GMT"
        for b in sorted(self.contacts_of(aor.name), key=lambda b: b.peer):
            headers.add("Contact", f"<{b.contact}>;expires={max(0, round(b.expires_mono - now))}")
        if header is not None:
            n = delta_seconds(header)
            expires = aor.default_expiration if n is None else n
            if expires:
                expires = max(min(expires, aor.maximum_expiration or expires), aor.minimum_expiration)
            headers.add("Expires", str(expires))
        return out

    def expiry_note(self, b: Binding) -> tuple[str, str, str]:
        aor = aor_of(b.peer)
        if aor is None:
            return super().expiry_note(b)
        return f"Removed contact '{b.contact}' from AOR '{aor}' due to expiration", "Removed", b.contact
