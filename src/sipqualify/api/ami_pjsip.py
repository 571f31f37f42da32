"""The AMI side of pjsip.conf contacts, as Asterisk 20.20.1 sends it (asterisk-pjsip-observed.md §5).

Events, on a contact's status change (qualify/pjsip_state.py decides what changed):

* `PeerStatus` with `ChannelType: PJSIP`, `Peer: PJSIP/<endpoint>`, `PeerStatus:
  Reachable|Unreachable` (no Time, no Address) for each endpoint that went online or offline,
  by name; endpoints start offline, so a first Unreachable sends none (§5.6);
* `ContactStatus` (`URI`, `ContactStatus`, `AOR`, `EndpointName`, `RoundtripUsec`), once per
  endpoint listing the AOR, by endpoint name;
* `DeviceStateChange` (`Device: PJSIP/<endpoint>`, `NOT_INUSE` / `UNAVAILABLE`) per endpoint
  that changed.

In Asterisk the DeviceStateChange of one endpoint may come before the ContactStatus events
(another thread publishes it); here they always come in that order: PeerStatus, ContactStatus,
DeviceStateChange. These replace the chan_sip-style PeerStatus a pjsip.conf contact would
otherwise get.

Actions: `PJSIPShowContacts` (res_pjsip lists registered contacts only, never static ones:
without a registrar it answers `No Contacts found`), `PJSIPShowAors`, `PJSIPQualify`.
Three of res_pjsip's error texts end in a newline, which Asterisk sends as a bare LF before the
CRLF (§5); here they end like every other line (a deliberate difference: a stray LF ends the
message early for a parser that splits on LF, and no AMI line of sipqualify carries a control
character).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from ..compat import escape_controls
from ..pjsip_compat import (
    PJSIP_FUNCTIONS,
    Json,
    auth_names,
    endpoint_params,
    function_aor,
    pjsip_snapshot,
    read_function,
)
from ..qualify.events import StateChanged
from ..qualify.pjsip_state import PjsipChange, PjsipStates, registry_change, rtt_usec
from .ami import ACTIONS, AmiSession, _list_complete, _listack, block

if TYPE_CHECKING:
    from ..model import PjsipConfig
    from .ami import AmiServer


def contact_status_event(uri: str, status: str, aor: str, endpoint: str, rtt_us: int) -> str:
    return block(("Event", "ContactStatus"), ("Privilege", "system,all"), ("URI", uri), ("ContactStatus", status),
                 ("AOR", aor), ("EndpointName", endpoint), ("RoundtripUsec", rtt_us))


def pjsip_peer_status_event(endpoint: str, online: bool) -> str:
    return block(("Event", "PeerStatus"), ("Privilege", "system,all"), ("ChannelType", "PJSIP"),
                 ("Peer", f"PJSIP/{endpoint}"), ("PeerStatus", "Reachable" if online else "Unreachable"))


def pjsip_device_state_event(endpoint: str, online: bool) -> str:
    return block(("Event", "DeviceStateChange"), ("Privilege", "call,all"), ("Device", f"PJSIP/{endpoint}"),
                 ("State", "NOT_INUSE" if online else "UNAVAILABLE"))


def change_events(ch: PjsipChange) -> list[tuple[str, str]]:
    """(event class, message) for one contact change, in the order they are sent."""
    c = ch.contact
    usec = rtt_usec(c.rtt_s) if c.status == "Reachable" else 0
    return [*(("system", pjsip_peer_status_event(n, on)) for n, on in ch.endpoints),
            *(("system", contact_status_event(c.uri, c.status, c.aor, n, usec)) for n in ch.referencing),
            *(("call", pjsip_device_state_event(n, on)) for n, on in ch.endpoints)]


# AorList's field order: res_pjsip's object set, in its hash order (§5.2)
_AOR_FIELDS = (("MinimumExpiration", "minimum_expiration"), ("DefaultExpiration", "default_expiration"),
               ("QualifyTimeout", "qualify_timeout"), ("Qualify2xxOnly", "qualify_2xx_only"),
               ("Mailboxes", "mailboxes"), ("SupportPath", "support_path"),
               ("RemoveUnavailable", "remove_unavailable"), ("VoicemailExtension", "voicemail_extension"),
               ("MaxContacts", "max_contacts"), ("AuthenticateQualify", "authenticate_qualify"))
_AOR_FIELDS_2 = (("MaximumExpiration", "maximum_expiration"), ("QualifyFrequency", "qualify_frequency"),
                 ("RemoveExisting", "remove_existing"), ("OutboundProxy", "outbound_proxy"))


def _head(event: str, aid: str | None) -> list[tuple[str, object]]:
    """res_pjsip.c ast_sip_create_ami_event: `Event`, then `ActionID` when the action had one."""
    head: list[tuple[str, object]] = [("Event", event)]
    if aid is not None:
        head.append(("ActionID", aid))
    return head


def aor_list(snap: Json, aid: str | None) -> str:
    """The whole answer to `Action: PJSIPShowAors`."""
    out = [_listack(aid, "A listing of AORs follows, presented as AorList events")]
    for a in snap["aors"]:
        p = a["params"]
        head = _head("AorList", aid)
        contacts = ",".join(f"{a['name']}/{c['uri']}" for c in a["contacts"])
        out.append(block(*head, ("ObjectType", "aor"), ("ObjectName", a["name"]),
                         *((k, p[f]) for k, f in _AOR_FIELDS), ("Contacts", contacts),
                         *((k, p[f]) for k, f in _AOR_FIELDS_2)))
    return "".join(out) + _list_complete("AorListComplete", aid, len(snap["aors"]))


def contact_list(snap: Json, aid: str | None) -> str | None:
    """The whole answer to `Action: PJSIPShowContacts`: registered contacts only, by id, in the
    captured field order (§5.1); None when there is none (`No Contacts found`)."""
    found = sorted(((a, c) for a in snap["aors"] for c in a["contacts"] if c.get("binding")),
                   key=lambda ac: ac[1]["id"])
    if not found:
        return None
    out = [_listack(aid, "A listing of Contacts follows, presented as ContactList events")]
    for a, c in found:
        b, p = c["binding"], a["params"]
        head = _head("ContactList", aid)
        out.append(block(*head, ("ObjectType", "contact"), ("ObjectName", c["id"]), ("ViaAddr", b["via_addr"]),
                         ("QualifyTimeout", p["qualify_timeout"]), ("Qualify2xxOnly", p["qualify_2xx_only"]),
                         ("CallId", b["call_id"]), ("RegServer", ""), ("PruneOnBoot", "no"), ("Path", ""),
                         ("Endpoint", b["endpoint"]), ("ViaPort", b["via_port"]),
                         ("AuthenticateQualify", "yes" if p["authenticate_qualify"] == "true" else "no"),
                         ("Uri", c["uri"]), ("QualifyFrequency", p["qualify_frequency"]),
                         ("UserAgent", b["user_agent"]), ("ExpirationTime", b["expiration_time"]),
                         ("OutboundProxy", p["outbound_proxy"]), ("Status", c["status"]),
                         ("RoundtripUsec", c["rtt_us"] if c["status"] == "Reachable" else "N/A")))
    return "".join(out) + _list_complete("ContactListComplete", aid, len(found))


# ---------------------------------------------------------------------------- endpoints


# AuthDetail's field order: the auth object set in res_pjsip's hash order (§5.4, phone1-auth)
_AUTH_DETAIL: Final = ("oauth_secret", "password_digest", "supported_algorithms_uas", "refresh_token", "username",
                       "md5_cred", "realm", "auth_type", "password", "supported_algorithms_uac", "nonce_lifetime",
                       "oauth_clientid")


def camel(name: str) -> str:
    """utils.c ast_to_camel_case with `_` as delimiter: `t38_udptl_ec` -> `T38UdptlEc`."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _names(text: str) -> str:
    """An auth list as ast_sip_auths_to_str prints it: names joined by `,`."""
    return ",".join(auth_names(text))


def _device_state(ep: Json) -> str:
    return "Not in use" if ep["online"] else "Unavailable"


def endpoint_list(snap: Json, pj: PjsipConfig, aid: str | None) -> str | None:
    """The whole answer to `Action: PJSIPShowEndpoints` (pjsip_configuration.c
    `format_ami_endpoints`, §5.3): one `Contacts:` line per AOR found, each `aor/uri,` with its
    trailing comma; None when there is no endpoint (`No endpoints found`)."""
    if not snap["endpoints"]:
        return None
    aors = {a["name"]: a for a in snap["aors"]}
    out = [_listack(aid, "A listing of Endpoints follows, presented as EndpointList events")]
    for e in snap["endpoints"]:
        ep = pj.endpoints[e["name"]]
        contacts = [("Contacts", "".join(f"{n}/{c['uri']}," for c in aors[n]["contacts"]))
                    for n in ep.aors if n in aors]
        out.append(block(*_head("EndpointList", aid), ("ObjectType", "endpoint"), ("ObjectName", ep.name),
                         ("Transport", ep.transport), ("Aor", ",".join(ep.aors)), ("Auths", _names(ep.auth)),
                         ("OutboundAuths", _names(ep.outbound_auth)), *contacts,
                         ("DeviceState", _device_state(e)), ("ActiveChannels", 0)))
    return "".join(out) + _list_complete("EndpointListComplete", aid, len(snap["endpoints"]))


def _contact_detail(aor: Json, c: Json, endpoint: str, aid: str | None) -> str:
    """location.c/pjsip_options.c `ast_sip_format_contact_ami` in 20.20.1's field order (§5.4):
    ViaAddress and CallID only when set; the qualify fields are the AOR's (the contact views'
    deliberate difference, pjsip_compat.py)."""
    b, p = c.get("binding"), aor["params"]
    via = [("ViaAddress", f"{b['via_addr']}:{b['via_port']}" if b["via_port"] else b["via_addr"])] \
        if b and b["via_addr"] else []
    call_id = [("CallID", b["call_id"])] if b and b["call_id"] else []
    return block(*_head("ContactStatusDetail", aid), ("AOR", aor["name"]), ("URI", c["uri"]),
                 ("UserAgent", b["user_agent"] if b else ""), ("RegExpire", b["expiration_time"] if b else 0),
                 *via, *call_id, ("Status", c["status"]),
                 ("RoundtripUsec", c["rtt_us"] if c["status"] == "Reachable" else "N/A"), ("EndpointName", endpoint),
                 ("ID", c["id"]), ("AuthenticateQualify", int(p["authenticate_qualify"] == "true")),
                 ("OutboundProxy", p["outbound_proxy"]), ("Path", ""), ("QualifyFrequency", p["qualify_frequency"]),
                 ("QualifyTimeout", f"{float(p['qualify_timeout']):.3f}"),
                 ("Qualify2xxOnly", int(p["qualify_2xx_only"] == "true")))


def endpoint_detail(snap: Json, pj: PjsipConfig, name: str, aid: str | None) -> str | None:
    """The whole answer to `Action: PJSIPShowEndpoint` (pjsip_configuration.c
    `ami_show_endpoint`, §5.4); None when there is no such endpoint. Events in res_pjsip's
    formatter order: EndpointDetail, AuthDetail (inbound then outbound auths), AorDetail per
    AOR, ContactStatusDetail per AOR's contact; ListItems counts them plus one, as Asterisk.
    Not sent: TransportDetail and IdentifyDetail (configuration, not reachability), and the
    auths' secrets (Password, Md5Cred, which Asterisk prints, are empty here)."""
    e = next((e for e in snap["endpoints"] if e["name"] == name), None)
    ep = pj.endpoints.get(name)
    if e is None or ep is None:
        return None
    aors = {a["name"]: a for a in snap["aors"]}
    events = [block(*_head("EndpointDetail", aid), ("ObjectType", "endpoint"), ("ObjectName", name),
                    *((camel(n), v) for n, v in endpoint_params(ep)),
                    ("DeviceState", _device_state(e)), ("ActiveChannels", 0))]
    for auth_name in [*_names(ep.auth).split(","), *_names(ep.outbound_auth).split(",")]:
        a = pj.auths.get(auth_name)
        if a is None:
            continue
        values = {"supported_algorithms_uas": "MD5", "supported_algorithms_uac": "MD5", "nonce_lifetime": "32",
                  "username": a.username, "realm": a.realm, "auth_type": a.auth_type}
        events.append(block(*_head("AuthDetail", aid), ("ObjectType", "auth"), ("ObjectName", a.name),
                            *((camel(f), values.get(f, "")) for f in _AUTH_DETAIL), ("EndpointName", name)))
    found = [aors[n] for n in ep.aors if n in aors]
    for a in found:
        p = a["params"]
        registered = sum(1 for c in a["contacts"] if c.get("binding"))
        events.append(block(*_head("AorDetail", aid), ("ObjectType", "aor"), ("ObjectName", a["name"]),
                            *((k, p[f]) for k, f in _AOR_FIELDS),
                            ("Contacts", ",".join(f"{a['name']}/{c['uri']}" for c in a["contacts"])),
                            *((k, p[f]) for k, f in _AOR_FIELDS_2), ("TotalContacts", len(a["contacts"])),
                            ("ContactsRegistered", registered), ("EndpointName", name)))
    events += [_contact_detail(a, c, name, aid) for a in found for c in a["contacts"]]
    return (_listack(aid, "Following are Events for each object associated with the Endpoint") + "".join(events)
            + _list_complete("EndpointDetailComplete", aid, len(events)))


class PjsipAmi:
    """Hooked into one AmiServer: its pjsip.conf events and actions."""

    def __init__(self, server: AmiServer) -> None:
        self.server = server
        self.states: PjsipStates | None = None
        self._pj: PjsipConfig | None = None
        self._refresh()

    def _refresh(self) -> PjsipStates | None:
        model = self.server.model
        pj = model.config.pjsip
        if pj is not self._pj:  # loaded or reloaded: keep what remains, seed the rest from the engine
            self._pj = pj
            self.states = None if pj is None else PjsipStates(
                pj, self.states, lambda n: (p.state, p.rtt) if (p := model.peer(n)) is not None else (None, None),
                [(r["peer"], r["contact"]) for r in model.registrations()])
        return self.states

    def on_state_changed(self, ev: StateChanged) -> bool:
        """True when `ev` is a pjsip.conf contact's (its events are sent here, not chan_sip's)."""
        states = self._refresh()
        if states is None or not states.knows(ev.peer):
            return False
        ch = states.change(ev.peer, ev.new, ev.rtt)
        for cls, text in change_events(ch) if ch is not None else ():
            self.server.broadcast(cls, text)
        return True

    def on_registry(self, peer: str, status: str, cause: str) -> bool:
        """A registered contact Created (ContactStatus NonQualified, §5.6) or Removed."""
        states = self._refresh()
        if states is None or status not in ("Created", "Removed") or ";@" not in peer:
            return False
        ch = registry_change(states, peer, status, cause)
        for cls, text in change_events(ch) if ch is not None else ():
            self.server.broadcast(cls, text)
        return True

    def is_contact(self, peer: str) -> bool:
        states = self._refresh()
        return states is not None and states.knows(peer)

    def snapshot(self, only: list[str] | None = None) -> Json:
        """The whole snapshot, or (`only`) that of these AORs and their endpoints."""
        model = self.server.model
        pj = model.config.pjsip
        if pj is None:
            return {"aors": [], "endpoints": []}
        return pjsip_snapshot(pj, lambda n: (p.state, p.rtt) if (p := model.peer(n)) is not None else (None, None),
                              model.registrations(), only)

    # ------------------------------------------------------------------ actions

    def show_contacts(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        text = contact_list(self.snapshot(), aid)
        if text is None:
            session.error(aid, "No Contacts found")  # static contacts are never listed (§5.1)
        else:
            session.write(text)

    def show_aors(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        session.write(aor_list(self.snapshot(), aid))

    def show_endpoints(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        pj = self.server.model.config.pjsip
        text = endpoint_list(self.snapshot(), pj, aid) if pj is not None else None
        if text is None:
            session.error(aid, "No endpoints found")
        else:
            session.write(text)

    def show_endpoint(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        name = m.get("endpoint", "")
        if not name:
            session.error(aid, "PJSIPShowEndpoint requires an endpoint name")
            return
        if name[:6].lower() == "pjsip/":
            name = name[6:]
        pj = self.server.model.config.pjsip
        ep = pj.endpoints.get(name) if pj is not None else None
        text = endpoint_detail(self.snapshot(ep.aors), pj, name, aid) if pj is not None and ep else None
        if text is None:
            session.error(aid, f"Unable to retrieve endpoint {name}")
        else:
            session.write(text)

    def getvar(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        """`Getvar` of `PJSIP_CONTACT(id,field)` / `PJSIP_AOR(aor,field)` (manager.c action_getvar:
        the function's result, empty when it fails, Success either way); anything else as before."""
        var = m.get("variable", "")
        fn, paren, data = var.partition("(")
        if not paren or not var.endswith(")") or fn not in PJSIP_FUNCTIONS or m.get("channel"):
            session.do_getvar(m, aid)
            return
        res, value, why = read_function(self.snapshot([function_aor(fn, data[:-1])]), fn, data[:-1])
        if res:
            self.server.ratelog(time.monotonic(), "AMI: Getvar %s: %s", escape_controls(var), why, key="pjsip-func")
        session.reply(aid, ("Variable", var), ("Value", value))

    def qualify(self, session: AmiSession, m: dict[str, str], aid: str | None) -> None:
        name = m.get("endpoint", "")
        if not name:
            session.error(aid, "Endpoint parameter missing.")
            return
        pj = self.server.model.config.pjsip
        ep = pj.endpoints.get(name) if pj is not None else None
        if pj is None or ep is None:
            session.error(aid, "Unable to retrieve endpoint")
            return
        if not ep.aors:
            session.error(aid, "No AoRs configured for endpoint")
            return
        session.reply(aid, ("Message", "Endpoint found, will qualify"))
        loop = asyncio.get_running_loop()
        for aor in ep.aors:
            for uri in dict.fromkeys(pj.aors[aor].contacts if aor in pj.aors else []):
                loop.create_task(self.server.model.qualify(pj.peer_of[(aor, uri)], wait=False))


def register(server: AmiServer) -> PjsipAmi:
    """Adds the PJSIP actions and events to `server` (called where the server is built)."""
    ACTIONS.update(PJSIP_ACTIONS)
    pjsip = PjsipAmi(server)
    server.extra_actions.update({"PJSIPShowContacts": pjsip.show_contacts, "PJSIPShowAors": pjsip.show_aors,
                                 "PJSIPShowEndpoints": pjsip.show_endpoints,
                                 "PJSIPShowEndpoint": pjsip.show_endpoint, "PJSIPQualify": pjsip.qualify})
    server.extra_actions["Getvar"] = pjsip.getvar
    server.state_hooks.append(pjsip.on_state_changed)
    server.registry_hooks.append(pjsip.on_registry)
    server.qualify_hooks.append(pjsip.is_contact)  # PJSIPQualify sends no completion event (§5.5)
    return pjsip


PJSIP_ACTIONS = {  # name -> (required write class, synopsis), as ami.ACTIONS
    "PJSIPShowContacts": ("system", "Lists PJSIP Contacts."),
    "PJSIPShowAors": ("system", "Lists PJSIP AORs."),
    "PJSIPShowEndpoints": ("system", "Lists PJSIP endpoints."),  # pjsip_manager.xml
    "PJSIPShowEndpoint": ("system", "Detail listing of an endpoint and its objects."),
    "PJSIPQualify": ("system,reporting", "Qualify a chan_pjsip endpoint."),  # pjsip_options.c
}
