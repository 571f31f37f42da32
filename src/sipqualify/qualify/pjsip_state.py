"""PJSIP contact, AOR and endpoint states: the table, the derivations and the strings.

Theory of operation. A pjsip.conf contact is qualified by the engine as a peer with the
`pjsip` policy (qualify/policy.py): its give-up is `qualify_timeout`, so a reply is never
"late" and the engine's states map one to one onto res_pjsip's contact statuses
(asterisk-pjsip-observed.md §4, O:320-334). Everything that turns them into what PJSIP
users see lives in this file:

    engine state     status (enum)   long label (log, AMI, PJSIP_CONTACT)   CLI label
    UNKNOWN          CREATED         NonQualified                           NonQual
    UNMONITORED      CREATED         NonQualified                           NonQual
    OK (LAGGED)      AVAILABLE       Reachable                              Avail
    UNREACHABLE      UNAVAILABLE     Unreachable                            Unavail
    (no status)      UNKNOWN         Unknown                                Unknown
    (deleted)        REMOVED         Removed                                Removed

* An AOR is available when one of its contacts is Reachable, or when it is not qualified
  (`qualify_frequency = 0`) and has a contact (§8: `nq` is Reachable from load on).
* An endpoint is online ("Not in use") when one of its AORs is available, otherwise offline
  ("Unavailable"). Endpoints start offline; `Endpoint X is now Unreachable` is only said
  after having been Reachable (C:`ast_sip_persistent_endpoint_update_state`).
* RTT is in microseconds, counted from the first transmission; the CLI shows
  `%11.3f` milliseconds when Avail and `nan` otherwise, the log `RTT: %.3f msec` (0.000
  when unreachable), AMI `RoundtripUsec` (`N/A` unless Reachable).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..model import PjsipAor, PjsipConfig
from . import state as st

REACHABLE = "Reachable"
UNREACHABLE = "Unreachable"
NON_QUALIFIED = "NonQualified"
UNKNOWN = "Unknown"
REMOVED = "Removed"

# engine state -> long label; the table above, as data
STATUS_OF_STATE: dict[str, str] = {
    st.UNKNOWN: NON_QUALIFIED,
    st.UNMONITORED: NON_QUALIFIED,
    st.OK: REACHABLE,
    st.LAGGED: REACHABLE,  # never made by the pjsip policy (give-up = qualify_timeout)
    st.UNREACHABLE: UNREACHABLE,
}
# long label -> the CLI's short label (location.c / pjsip_options.c short_status_map)
SHORT_LABEL: dict[str, str] = {
    REACHABLE: "Avail",
    UNREACHABLE: "Unavail",
    NON_QUALIFIED: "NonQual",
    UNKNOWN: "Unknown",
    REMOVED: "Removed",
}


def contact_status(engine_state: str | None) -> str:
    """The long label of a contact whose peer is in `engine_state` (None: no status object)."""
    return UNKNOWN if engine_state is None else STATUS_OF_STATE.get(engine_state, UNKNOWN)


def rtt_usec(rtt_s: float | None) -> int:
    return 0 if rtt_s is None else int(round(rtt_s * 1_000_000))


def uri_hash(uri: str) -> str:
    """The CLI's Hash column: the first 10 hex digits of md5(contact URI)."""
    return hashlib.md5(uri.encode()).hexdigest()[:10]


def contact_line(aor: str, uri: str, status: str, rtt_s: float | None) -> str:
    """pjsip_options.c:741, two spaces before RTT; RTT 0.000 when not Reachable."""
    usec = rtt_usec(rtt_s) if status == REACHABLE else 0
    return f"Contact {aor}/{uri} is now {status}.  RTT: {usec / 1000:.3f} msec"


def endpoint_line(endpoint: str, online: bool) -> str:
    """pjsip_configuration.c:1563/1576."""
    return f"Endpoint {endpoint} is now {REACHABLE if online else UNREACHABLE}"


@dataclass(frozen=True, slots=True)
class ContactState:
    aor: str
    uri: str
    status: str  # a long label
    rtt_s: float | None  # of the last Reachable result

    @property
    def short(self) -> str:
        return SHORT_LABEL[self.status]

    @property
    def rtt_text(self) -> str:
        """`pjsip show contacts`' RTT column (L:`cli_contact_print_body`)."""
        return f"{rtt_usec(self.rtt_s) / 1000:11.3f}" if self.status == REACHABLE else f"{'nan':>11}"


def aor_available(aor: PjsipAor, statuses: list[str]) -> bool:
    """`statuses`: the long labels of the AOR's contacts."""
    if not statuses:
        return False
    if aor.qualify_frequency == 0:
        return True
    return REACHABLE in statuses


@dataclass(frozen=True, slots=True)
class PjsipChange:
    """One contact's status change and what it did to endpoints (log lines, AMI events)."""

    contact: ContactState
    endpoints: list[tuple[str, bool]]  # endpoints that went online (True) / offline, by name
    referencing: list[str]  # the endpoints listing the contact's AOR, by name (one ContactStatus each)
    created: bool = False  # a registered contact's status object made (AMI only, no log line)

    def lines(self) -> list[str]:
        """The log lines, endpoint lines first (§6 order); a deleted contact's line comes first
        (pjsip_options.c:1034, then the endpoint's)."""
        c = self.contact
        eps = [endpoint_line(n, on) for n, on in self.endpoints]
        if c.status == REMOVED:
            return [f"Contact {c.aor}/{c.uri} has been deleted", *eps]
        return eps if self.created else [*eps, contact_line(c.aor, c.uri, c.status, c.rtt_s)]


class PjsipStates:
    """Contact statuses in, contact and endpoint transitions out (log lines, AMI events).

    Fed with each contact's engine state as it changes; sans-I/O and clock-free."""

    def __init__(self, pj: PjsipConfig, old: PjsipStates | None = None,
                 state_of: Callable[[str], tuple[str | None, float | None]] | None = None,
                 registered: Iterable[tuple[str, str]] = ()) -> None:
        """`old`: the states before a reload, kept for the contacts and endpoints that remain;
        otherwise `state_of` seeds each contact from its peer's state (a restart).
        `registered`: (contact id, URI) of the registered contacts known now (restored)."""
        self.pj = pj
        self.contacts: dict[tuple[str, str], ContactState] = {
            (a.name, uri): ContactState(a.name, uri, NON_QUALIFIED, None)
            for a in pj.aors.values() for uri in a.contacts
        }
        self.online: dict[str, bool] = {name: False for name in pj.endpoints}
        self._by_peer = {peer: key for key, peer in pj.peer_of.items()}
        self._registered: dict[str, dict[tuple[str, str], str]] = {}  # aor -> registered contacts' keys -> peer
        self.initial: list[tuple[str, bool]] = []  # endpoints online at (first) load
        if old is not None:
            self.contacts.update((k, v) for k, v in old.contacts.items() if k in self.contacts)
            self.online.update((k, v) for k, v in old.online.items() if k in self.online)
            for aor, keys in old._registered.items():  # registered contacts of AORs still there
                if aor in pj.aors:
                    self._registered[aor] = dict(keys)
                    self._by_peer.update((peer, key) for key, peer in keys.items())
                    self.contacts.update((key, old.contacts[key]) for key in keys)
        for peer, uri in registered:
            aor, sep, _ = peer.rpartition(";@")
            if sep and peer not in self._by_peer and aor in pj.aors:
                self._add_registered(peer, aor, uri)
        if old is None:
            self.initial = self._endpoints()
            for peer in self._by_peer:
                state, rtt = state_of(peer) if state_of is not None else (None, None)
                if state is not None:
                    self.change(peer, state, rtt)

    def knows(self, peer: str) -> bool:
        return peer in self._by_peer

    def of_aor(self, aor: str) -> list[ContactState]:
        a = self.pj.aors.get(aor)
        if a is None:
            return []
        return [*(self.contacts[(aor, u)] for u in dict.fromkeys(a.contacts)),
                *(self.contacts[k] for k in self._registered.get(aor, {}))]

    def created(self, peer: str, aor: str, uri: str) -> PjsipChange | None:
        """A contact registered to `aor` (None: already known, a refresh; or no such AOR)."""
        if peer in self._by_peer or aor not in self.pj.aors:
            return None
        c = self._add_registered(peer, aor, uri)
        return PjsipChange(c, self._endpoints(), self._referencing(aor), created=True)

    def _add_registered(self, peer: str, aor: str, uri: str) -> ContactState:
        key = (aor, uri)
        self._by_peer[peer] = key
        self._registered.setdefault(aor, {})[key] = peer
        c = self.contacts[key] = ContactState(aor, uri, NON_QUALIFIED, None)
        return c

    def removed(self, peer: str) -> PjsipChange | None:
        """A registered contact removed (unregistered, expired, replaced)."""
        key = self._by_peer.get(peer)
        if key is None or key not in self._registered.get(key[0], {}):
            return None
        del self._by_peer[peer], self._registered[key[0]][key]
        del self.contacts[key]
        return PjsipChange(ContactState(key[0], key[1], REMOVED, None), self._endpoints(), self._referencing(key[0]))

    def _referencing(self, aor: str) -> list[str]:
        return sorted(n for n, ep in self.pj.endpoints.items() if aor in ep.aors)

    def endpoint_online(self, name: str) -> bool:
        ep = self.pj.endpoints[name]
        return any(aor_available(self.pj.aors[a], [c.status for c in self.of_aor(a)])
                   for a in ep.aors if a in self.pj.aors)

    def change(self, peer: str, engine_state: str, rtt_s: float | None) -> PjsipChange | None:
        """A contact's peer changed state: None when its PJSIP status did not (or it is not a contact)."""
        key = self._by_peer.get(peer)
        if key is None:
            return None
        old = self.contacts[key]
        status = contact_status(engine_state)
        new = ContactState(key[0], key[1], status, rtt_s if status == REACHABLE else None)
        self.contacts[key] = new
        if status == old.status:
            return None
        return PjsipChange(new, self._endpoints(), self._referencing(key[0]))

    def update(self, peer: str, engine_state: str, rtt_s: float | None) -> list[str]:
        """`change()` as log lines."""
        ch = self.change(peer, engine_state, rtt_s)
        return ch.lines() if ch is not None else []

    def _endpoints(self) -> list[tuple[str, bool]]:
        out = []
        for name in sorted(self.pj.endpoints):  # `combo` before `ok-def` (§6)
            now = self.endpoint_online(name)
            if now != self.online[name]:
                self.online[name] = now
                out.append((name, now))
        return out


def registry_change(states: PjsipStates, peer: str, status: str, uri: str) -> PjsipChange | None:
    """A registry event (qualify/inbound.py `RegistryChanged`) as a registered contact's
    change: `Created` (its URI in `uri`) or `Removed`; None for anything else."""
    aor, sep, _ = peer.rpartition(";@")
    if not sep:
        return None
    if status == "Created":
        return states.created(peer, aor, uri)
    return states.removed(peer) if status == "Removed" else None
