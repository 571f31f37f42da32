"""Asterisk 20's `pjsip show ...` layouts, byte for byte, from a PJSIP snapshot.

Sources: asterisk-pjsip-observed.md §4 (real Asterisk 20.20.1 output, which wins), and
res/res_pjsip/location.c (`cli_contact_print_header/body`, `cli_aor_print_header/body`),
pjsip_configuration.c (`cli_endpoint_print_header/body`) and pjsip_cli.c
(`ast_sip_cli_print_sorcery_objectset`) of the 20.20.1 tree.

The daemon builds the snapshot (`pjsip_snapshot`, also `GET /api/v1/pjsip`): AORs and
endpoints by name, each AOR's contacts in res_pjsip's container order (by contact id), each
contact's long status label (qualify/pjsip_state.py) and RTT in µs. The CLI formats it here.

Layout rules taken from the captures: indents are 9 + 2 per level; the name column of a
contact row is `55 - indent` wide, of an AOR row `50 - indent`, of an endpoint row
`60 - indent`; the headers are printed as Asterisk prints them (copied below).

One difference, on purpose: `pjsip show contact` of a static contact shows its AOR's
`qualify_frequency`, `qualify_timeout`, `qualify_2xx_only` and `authenticate_qualify`, the
values it is really qualified with; Asterisk shows the contact object's unused defaults
(0 and 3.000000), which misleads whoever reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any, Final

from .config.pjsip import qualifying_endpoint
from .model import PjsipAor, PjsipConfig, PjsipEndpoint
from .qualify.pjsip_state import REACHABLE, SHORT_LABEL, aor_available, contact_status, rtt_usec, uri_hash

Json = dict[str, Any]
RULE = "=" * 90 + "\n"

CONTACTS_HEADER = "  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>\n"
AORS_HEADER = ("      Aor:  <Aor..............................................>  <MaxContact>\n"
               "    Contact:  <Aor/ContactUri............................> <Hash....> <Status> <RTT(ms)..>\n")
ENDPOINTS_HEADER = (
    " Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>\n"
    "    I/OAuth:  <AuthId/UserName...........................................................>\n"
    "        Aor:  <Aor............................................>  <MaxContact>\n"
    "      Contact:  <Aor/ContactUri..........................> <Hash....> <Status> <RTT(ms)..>\n"
    "  Transport:  <TransportId........>  <Type>  <cos>  <tos>  <BindAddress..................>\n"
    "   Identify:  <Identify/Endpoint.........................................................>\n"
    "        Match:  <criteria.........................>\n"
    "    Channel:  <ChannelId......................................>  <State.....>  <Time.....>\n"
    "        Exten: <DialedExten...........>  CLCID: <ConnectedLineCID.......>\n")


def _tf(v: bool) -> str:
    return "true" if v else "false"


def _yn(v: bool) -> str:
    return "yes" if v else "no"


# ---------------------------------------------------------------------------- the snapshot


Found = tuple[str, str, "str | None", "float | None", "Json | None"]  # id, URI, engine state, RTT (s), binding


def pjsip_snapshot(pj: PjsipConfig, state_of: Callable[[str], tuple[str | None, float | None]],
                   registrations: list[Json] | None = None, only: Collection[str] | None = None) -> Json:
    """The PJSIP objects and their contacts' statuses; `state_of(peer)` gives the engine state
    and last RTT of a contact's peer ((None, None): no such peer); `registrations` the
    registrar's bindings (ReadModel.registrations()), of which those named `<aor>;@<md5>`
    are the AORs' registered contacts. `only`: just these AORs and the endpoints all of whose
    AORs are among them (what one function call or one PJSIPShowEndpoint needs: its cost is
    then that of the few objects, not of the whole configuration), each endpoint then with
    its `params` (`endpoint_params`)."""
    registered: dict[str, list[Found]] = {}
    for r in registrations or ():
        aor, sep, _ = r["peer"].rpartition(";@")
        if sep and aor in pj.aors and (only is None or aor in only):
            ep = qualifying_endpoint(pj, aor)
            registered.setdefault(aor, []).append((r["peer"], r["contact"], *state_of(r["peer"]), {
                "endpoint": ep.name if ep is not None else "", "call_id": r["call_id"],
                "user_agent": r["useragent"], "via_addr": r["address"], "via_port": r["port"],
                "expiration_time": int(r["expires_at"])}))
    aors = []
    wanted = pj.aors.values() if only is None else [pj.aors[n] for n in set(only) if n in pj.aors]
    for a in sorted(wanted, key=lambda a: a.name):
        peers = [pj.peer_of.get((a.name, u), "") for u in dict.fromkeys(a.contacts)]
        found: list[Found] = [(p, u, *state_of(p), None) for p, u in zip(peers, dict.fromkeys(a.contacts), strict=True)]
        found += registered.get(a.name, [])
        found.sort(key=lambda c: c[0])  # res_pjsip's container order: by contact id
        statuses = [contact_status(state) for _, _, state, _, _ in found]
        contacts: list[Json] = [
            {"id": cid, "uri": uri, "status": status, "rtt_us": rtt_usec(rtt) if status == REACHABLE else None,
             "binding": binding}
            for (cid, uri, _, rtt, binding), status in zip(found, statuses, strict=True)]
        aors.append({"name": a.name, "max_contacts": a.max_contacts, "contacts": contacts,
                     "params": aor_params(a), "available": aor_available(a, statuses)})
    avail = {a["name"]: a["available"] for a in aors}
    endpoints = []
    for ep in sorted(pj.endpoints.values(), key=lambda e: e.name):
        if only is not None and not all(a in avail for a in ep.aors if a in pj.aors):
            continue
        auths = {what: [f"{n}/{pj.auths[n].username}" for n in auth_names(getattr(ep, what)) if n in pj.auths]
                 for what in ("auth", "outbound_auth")}  # an undefined one is skipped, as res_pjsip
        endpoints.append({"name": ep.name, "aors": ep.aors, "in_auth": auths["auth"],
                          "out_auth": auths["outbound_auth"], "busy_at": ep.device_state_busy_at,
                          "online": any(avail.get(a, False) for a in ep.aors)})
        if only is not None:  # a few objects: their whole option set too (`pjsip show endpoint`)
            endpoints[-1]["params"] = dict(endpoint_params(ep))
    return {"aors": aors, "endpoints": endpoints}


def auth_names(text: str) -> list[str]:
    """An `auth=` / `outbound_auth=` value: the names, comma-separated."""
    return [w.strip() for w in text.split(",") if w.strip()]


# ---------------------------------------------------------------------------- endpoint options

# An endpoint's res_pjsip options with Asterisk 20.20.1's defaults, in the order AMI's EndpointDetail
# lists them (its sorcery object set, asterisk-pjsip-observed.md §5.4; defaults from §4.7)
_ENDPOINT_DETAIL: Final = (
    ("rpid_immediate", "false"), ("webrtc", "no"), ("ignore_183_without_sdp", "false"), ("send_aoc", "false"),
    ("device_state_busy_at", "0"), ("t38_udptl_maxdatagram", "0"),
    ("codec_prefs_incoming_answer", "prefer:pending, operation:intersect, keep:all, transcode:allow"),
    ("security_negotiation", "no"), ("dtls_rekey", "0"), ("rtp_port_end", "0"), ("named_pickup_group", ""),
    ("direct_media_method", "invite"), ("send_rpid", "false"), ("pickup_group", ""), ("sdp_session", "Asterisk"),
    ("dtls_verify", "No"), ("message_context", ""), ("tenantid", ""), ("mailboxes", ""),
    ("record_on_feature", "automixmon"), ("dtls_private_key", ""), ("dtls_fingerprint", "SHA-256"),
    ("overlap_context", ""), ("outgoing_call_offer_pref", "remote_merge"), ("rtp_port_start", "0"),
    ("from_domain", ""), ("timers_sess_expires", "1800"), ("named_call_group", ""), ("dtls_cipher", ""),
    ("media_encryption_optimistic", "false"), ("suppress_q850_reason_headers", "false"), ("aors", ""),
    ("identify_by", "username,ip"), ("callerid_privacy", "allowed_not_screened"),
    ("mwi_subscribe_replaces_unsolicited", "no"), ("cos_audio", "0"), ("follow_early_media_fork", "true"),
    ("context", "default"), ("rtp_symmetric", "false"), ("transport", ""), ("moh_suggest", "default"),
    ("t38_udptl", "false"), ("fax_detect", "false"), ("t38_bind_udptl_to_media_address", "false"), ("tos_video", "0"),
    ("srtp_tag_32", "false"), ("refer_blind_progress", "true"), ("max_audio_streams", "1"), ("bundle", "false"),
    ("use_avpf", "false"), ("call_group", ""), ("send_connected_line", "yes"), ("fax_detect_timeout", "0"),
    ("sdp_owner", "-"), ("force_rport", "true"), ("callerid_tag", ""), ("rtp_timeout_hold", "0"),
    ("suppress_moh_on_sendonly", "false"), ("use_ptime", "false"), ("media_address", ""), ("voicemail_extension", ""),
    ("rtp_timeout", "0"), ("stir_shaken", "no"), ("set_var", ""), ("contact_acl", ""),
    ("preferred_codec_only", "false"), ("geoloc_outgoing_call_profile", ""), ("force_avp", "false"),
    ("record_off_feature", "automixmon"), ("from_user", ""), ("send_diversion", "true"),
    ("send_history_info", "false"), ("t38_udptl_ipv6", "false"), ("tone_zone", ""), ("language", ""),
    ("allow_subscribe", "true"), ("rtp_ipv6", "false"), ("callerid", "<unknown>"), ("moh_passthrough", "false"),
    ("cos_video", "0"), ("dtls_auto_generate_cert", "No"), ("asymmetric_rtp_codec", "false"),
    ("geoloc_incoming_call_profile", ""), ("ice_support", "false"), ("aggregate_mwi", "true"),
    ("one_touch_recording", "false"), ("mwi_from_user", ""), ("redirect_method", "user"), ("accountcode", ""),
    ("codec_prefs_outgoing_answer", "prefer:pending, operation:intersect, keep:all, transcode:allow"),
    ("allow", "(nothing)"), ("rewrite_contact", "false"), ("user_eq_phone", "false"), ("rtp_engine", "asterisk"),
    ("follow_redirect_methods", ""), ("subscribe_context", ""), ("notify_early_inuse_ringing", "false"),
    ("incoming_mwi_mailbox", ""), ("incoming_call_offer_pref", "local"), ("allow_unauthenticated_options", "false"),
    ("auth", ""), ("direct_media_glare_mitigation", "none"), ("trust_id_inbound", "false"),
    ("stir_shaken_profile", ""), ("bind_rtp_to_media_address", "false"), ("disable_direct_media_on_nat", "false"),
    ("media_encryption", "no"), ("media_use_received_transport", "false"), ("allow_overlap", "true"),
    ("dtmf_mode", "rfc4733"), ("outbound_auth", ""), ("tos_audio", "0"), ("dtls_cert_file", ""), ("dtls_ca_path", ""),
    ("dtls_setup", "active"), ("connected_line_method", "invite"), ("g726_non_standard", "false"), ("100rel", "yes"),
    ("timers", "yes"), ("direct_media", "true"), ("acl", ""), ("timers_min_se", "90"), ("trust_id_outbound", "false"),
    ("sub_min_expiry", "0"), ("rtcp_mux", "false"), ("max_video_streams", "1"),
    ("accept_multiple_sdp_answers", "false"),
    ("codec_prefs_incoming_offer", "prefer:pending, operation:intersect, keep:all, transcode:allow"),
    ("codec_prefs_outgoing_offer", "prefer:pending, operation:union, keep:all, transcode:allow"),
    ("trust_connected_line", "yes"), ("send_pai", "false"), ("rtp_keepalive", "0"), ("t38_udptl_ec", "none"),
    ("t38_udptl_nat", "false"), ("allow_transfer", "true"), ("dtls_ca_file", ""), ("outbound_proxy", ""),
    ("inband_progress", "false"),
)


def endpoint_params(ep: PjsipEndpoint) -> list[tuple[str, str]]:
    """(option, value) of every res_pjsip endpoint option, in EndpointDetail's order: the ones
    sipqualify reads as Asterisk prints them, the others as written in pjsip.conf (booleans as
    `true`/`false`), else Asterisk's default. `pjsip show endpoint` lists them by name."""
    return [(n, _endpoint_value(ep, n, d)) for n, d in _ENDPOINT_DETAIL]


def _endpoint_value(ep: PjsipEndpoint, name: str, default: str) -> str:
    modelled = {"aors": ",".join(ep.aors), "auth": ",".join(auth_names(ep.auth)),
                "outbound_auth": ",".join(auth_names(ep.outbound_auth)),
                "outbound_proxy": ep.outbound_proxy, "from_user": ep.from_user, "from_domain": ep.from_domain,
                "context": ep.context, "transport": ep.transport,
                "device_state_busy_at": str(ep.device_state_busy_at),
                "allow": f"({'|'.join(ep.codecs)})" if ep.codecs else "(nothing)"}
    if name in modelled:
        return modelled[name]
    value = ep.settings.get(name)
    if value is None:
        return default
    if default in ("true", "false"):  # OPT_BOOL_T prints true/false whatever was written
        low = value.lower()
        if low in ("yes", "true", "y", "t", "1", "on"):
            return "true"
        if low in ("no", "false", "n", "f", "0", "off"):
            return "false"
    return value


def aor_params(a: PjsipAor) -> dict[str, str]:
    """The qualify and registration fields `pjsip show aor` lists (§4.5), as it prints them."""
    return {
        "authenticate_qualify": _tf(a.authenticate_qualify),
        "default_expiration": str(a.default_expiration),
        "mailboxes": a.mailboxes,
        "max_contacts": str(a.max_contacts),
        "maximum_expiration": str(a.maximum_expiration),
        "minimum_expiration": str(a.minimum_expiration),
        "outbound_proxy": a.outbound_proxy,
        "qualify_2xx_only": _tf(a.qualify_2xx_only),
        "qualify_frequency": str(a.qualify_frequency),
        "qualify_timeout": f"{a.qualify_timeout:f}",
        "remove_existing": _tf(a.remove_existing),
        "remove_unavailable": _tf(a.remove_unavailable),
        "support_path": _tf(a.support_path),
        "voicemail_extension": a.voicemail_extension,
    }


# ---------------------------------------------------------------------------- rows


def _contact_row(aor: str, c: Json, level: int) -> str:
    indent = 9 + 2 * level
    w = 55 - indent
    name = f"{aor}/{c['uri']}"[:w]
    status = c["status"]
    rtt = f"{c['rtt_us'] / 1000:11.3f}" if status == REACHABLE and c["rtt_us"] is not None else f"{'nan':>11}"
    return f"{'Contact':>{indent}}:  {name:<{w}} {uri_hash(c['uri'])} {SHORT_LABEL[status][:7]:<7} {rtt}\n"


def _aor_rows(a: Json, level: int) -> str:
    indent = 9 + 2 * level
    w = 50 - indent
    out = f"{'Aor':>{indent}}:  {a['name'][:w]:<{w}} {a['max_contacts']:12d}\n"
    return out + "".join(_contact_row(a["name"], c, level + 1) for c in a["contacts"])


def _objectset(params: list[tuple[str, str]]) -> str:
    """pjsip_cli.c: names padded to the longest, a rule as long as the longest line."""
    width = max(len("ParameterName"), *(len(k) for k, _ in params))
    lines = [f"{'ParameterName':<{width}} : ParameterValue"] + [f"{k:<{width}} : {v}" for k, v in params]
    rule = "=" * max(len(ln) for ln in lines)
    return "\n" + "".join(f" {ln}\n" for ln in [lines[0], rule, *lines[1:]])


# ---------------------------------------------------------------------------- commands


def _like(pattern: str | None) -> Callable[[str], bool]:
    if not pattern:
        return lambda _: True
    rx = re.compile(pattern)
    return lambda text: rx.search(text) is not None


def _all_contacts(snap: Json) -> list[tuple[str, Json]]:
    return sorted(((a["name"], c) for a in snap["aors"] for c in a["contacts"]), key=lambda x: f"{x[0]}/{x[1]['uri']}")


def show_contacts(snap: Json, like: str | None = None) -> str:
    """`pjsip show contacts [like REGEX]` (§4.1, §4.2); rows sorted by `aor/uri`."""
    keep = _like(like)
    rows = [(a, c) for a, c in _all_contacts(snap) if keep(f"{a}/{c['uri']}")]
    body = "".join(_contact_row(a, c, 0) for a, c in rows)
    return f"\n{CONTACTS_HEADER}{RULE}\n{body}\nObjects found: {len(rows)}\n"


def not_found(key: str) -> str:
    """pjsip_cli.c:228, followed by an empty line."""
    return f"Unable to find object {key}.\n\n"


def show_contact(snap: Json, key: str) -> str | None:
    """`pjsip show contact AOR/URI` (§4.3); None when there is no such contact."""
    aors = {a["name"]: a for a in snap["aors"]}
    found = next(((a, c) for a, c in _all_contacts(snap) if f"{a}/{c['uri']}" == key), None)
    if found is None:
        return None
    aor, c = found
    return f"\n{CONTACTS_HEADER}{RULE}\n{_contact_row(aor, c, 0)}{_objectset(contact_params(aors[aor], c))}"


def contact_params(aor: Json, c: Json) -> list[tuple[str, str]]:
    """A contact's sorcery fields as `pjsip show contact` and PJSIP_CONTACT() print them (§4.3,
    §7), the qualify ones being its AOR's (the module docstring's deliberate difference)."""
    p = aor["params"]
    b = c.get("binding") or {"call_id": "", "endpoint": "", "expiration_time": 0, "user_agent": "", "via_addr": "",
                             "via_port": 0}
    return [
        ("authenticate_qualify", _yn(p["authenticate_qualify"] == "true")),
        ("call_id", b["call_id"]), ("endpoint", b["endpoint"]), ("expiration_time", str(b["expiration_time"])),
        ("outbound_proxy", p["outbound_proxy"]), ("path", ""), ("prune_on_boot", "no"),
        ("qualify_2xx_only", p["qualify_2xx_only"]),
        ("qualify_frequency", p["qualify_frequency"]), ("qualify_timeout", p["qualify_timeout"]),
        ("reg_server", ""), ("uri", c["uri"]), ("user_agent", b["user_agent"]), ("via_addr", b["via_addr"]),
        ("via_port", str(b["via_port"])),
    ]


# ---------------------------------------------------------------------------- dialplan functions

PJSIP_FUNCTIONS: Final = ("PJSIP_CONTACT", "PJSIP_AOR")


def function_aor(fn: str, data: str) -> str:
    """The AOR a PJSIP_CONTACT() / PJSIP_AOR() call reads (for a snapshot of it alone)."""
    name = data.partition(",")[0].strip()
    if fn == "PJSIP_AOR":
        return name
    return name.split("@@")[0] if "@@" in name else name.split(";@")[0]


def read_function(snap: Json, fn: str, data: str) -> tuple[int, str, str]:
    """`PJSIP_CONTACT(contact_id,field)` / `PJSIP_AOR(aor,field)` read as func_pjsip_contact.c /
    func_pjsip_aor.c do: (return value, result, the message Asterisk logs or ""). Return values:
    0 success; 1 unknown field (empty result); -1 missing argument or no such object. Contact ids:
    `<aor>@@<md5(uri)>` (static: its AOR must exist) or `<aor>;@<md5(uri)>` (registered); the
    contact's `status` is the long label, `rtt` µs or `N/A` unless Reachable; an AOR's `contact`
    is its contacts' ids joined by `,` (by id), its other fields as `pjsip show aor` prints them."""
    what = "contact" if fn == "PJSIP_CONTACT" else "AOR"
    name, _, field = (part.strip() for part in data.partition(","))
    if not data.strip():
        return -1, "", f"Cannot call {fn} without arguments"
    if not name:
        return -1, "", f"Cannot call {fn} without {'a contact' if what == 'contact' else 'an AOR'} name to query"
    if not field:
        return -1, "", f"Cannot call {fn} with an empty field name to query"
    aors = {a["name"]: a for a in snap["aors"]}
    if what == "AOR":
        a = aors.get(name)
        if a is None:
            return -1, "", f"Failed to retrieve information for AOR '{name}'"
        if field == "contact":
            return 0, ",".join(c["id"] for c in a["contacts"]), ""
        value = a["params"].get(field)
        return (1, "", f"Unknown property '{field}' for PJSIP AOR") if value is None else (0, value, "")
    static = "@@" in name
    a = aors.get(function_aor(fn, name))
    c = next((c for c in a["contacts"] if c["id"] == name and bool(c.get("binding")) != static), None) \
        if a is not None else None
    if a is None or c is None:
        return -1, "", f"Failed to retrieve information for contact '{name}'"
    if field == "status":
        return 0, c["status"], ""
    if field == "rtt":
        return 0, str(c["rtt_us"]) if c["status"] == REACHABLE and c["rtt_us"] is not None else "N/A", ""
    value = dict(contact_params(a, c)).get(field)
    return (1, "", f"Unknown property '{field}' for PJSIP contact") if value is None else (0, value, "")


def show_aors(snap: Json, like: str | None = None) -> str:
    """`pjsip show aors [like REGEX]` (§4.4)."""
    keep = _like(like)
    aors = [a for a in snap["aors"] if keep(a["name"])]
    body = "".join("\n" + _aor_rows(a, 0) for a in aors)
    return f"\n{AORS_HEADER}{RULE}{body}\n\nObjects found: {len(aors)}\n"


def show_aor(snap: Json, name: str) -> str | None:
    """`pjsip show aor NAME` (§4.5)."""
    a = next((a for a in snap["aors"] if a["name"] == name), None)
    if a is None:
        return None
    params = list(a["params"].items())
    contacts = [("contact", c["uri"]) for c in a["contacts"]] or [("contact", "")]
    params[1:1] = contacts  # after authenticate_qualify: alphabetical
    return f"\n{AORS_HEADER}{RULE}\n{_aor_rows(a, 0)}\n{_objectset(params)}"


def _endpoint_rows(snap: Json, ep: Json) -> str:
    aors = {a["name"]: a for a in snap["aors"]}
    state = "Not in use" if ep["online"] else "Unavailable"
    busy = str(ep["busy_at"]) if ep["busy_at"] else "inf"
    out = f"{'Endpoint':>9}:  {ep['name'][:51]:<51}  {state:<12.12}  0 of {busy}\n"
    # outbound first, one line per auth (pjsip_configuration.c cli_endpoint_print_body)
    out += "".join(f"{'OutAuth':>11}:  {a}\n" for a in ep["out_auth"])
    out += "".join(f"{'InAuth':>11}:  {a}\n" for a in ep["in_auth"])
    return out + "".join(_aor_rows(aors[n], 1) for n in ep["aors"] if n in aors)


def show_endpoints(snap: Json, like: str | None = None) -> str:
    """`pjsip show endpoints [like REGEX]` (§4.6): the reachability columns."""
    keep = _like(like)
    eps = [e for e in snap["endpoints"] if keep(e["name"])]
    body = "".join("\n" + _endpoint_rows(snap, e) for e in eps)
    return f"\n{ENDPOINTS_HEADER}{RULE}{body}\n\nObjects found: {len(eps)}\n"


def show_endpoint(snap: Json, name: str) -> str | None:
    """`pjsip show endpoint NAME` (§4.7): its rows, then (with a snapshot that has the
    endpoint's `params`) every option by name, pjsip_cli.c's object set."""
    ep = next((e for e in snap["endpoints"] if e["name"] == name), None)
    if ep is None:
        return None
    head = f"\n{ENDPOINTS_HEADER}{RULE}\n{_endpoint_rows(snap, ep)}\n"
    return head + (_objectset(sorted(ep["params"].items())) if "params" in ep else "\n")
