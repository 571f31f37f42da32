"""pjsip.conf -> Config: res_pjsip's objects, and one qualified peer per static contact.

The file is read with the Asterisk config syntax of asterisk.py (templates, `#include`,
`#tryinclude`, `+=`). Each non-template section is one sorcery object whose `type=` says
what it is; a name may be used by several sections of different types (an AOR and an
endpoint called `ok-def`, as in asterisk-pjsip-observed.md §1). Types: `endpoint`, `aor`,
`contact`, `auth`, `identify`, `transport`, `registration`, `global`, `system`, plus the
ones res_pjsip modules add (`domain_alias`, `acl`, `phoneprov`, `resource_list`, `outbound-publish`,
`inbound-publication`, `asterisk-publication`) which are accepted and ignored.

What each option sipqualify uses means, and how its value is read, is declared once in
`PJSIP_OPTIONS` (held to docs/configuration.md by tests/config/test_pjsip_conf.py, both
ways). Options res_pjsip knows but sipqualify does not use (`PJSIP_KNOWN`) are accepted
silently; other names get a warning with file:line. A value res_pjsip would refuse (sorcery
then drops the object) is an error with file:line.

Qualifying (asterisk-pjsip-observed.md): each static `contact=` URI of an AOR is one peer,
named by its contact id `<aor>@@<md5(uri)>` (what `PJSIP_CONTACT()` takes). It is polled
with the `pjsip` policy (qualify/policy.py) every `qualify_frequency` s with the AOR's
`qualify_timeout`, From user = the endpoint's `from_user` or its name, that endpoint being
the alphabetically first one listing the AOR (res_pjsip's compositor order: `combo` before
`ok-def`). An AOR no endpoint lists is never polled (its contacts stay NonQualified), as in
Asterisk (§3.10).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..addr import split_hostport
from ..model import (
    DEFAULT_SIP_PORT,
    Config,
    ConfigMessage,
    OutboundAuth,
    PeerConfig,
    PjsipAor,
    PjsipAuth,
    PjsipConfig,
    PjsipEndpoint,
    PjsipIdentify,
)
from ..qualify.pjsip_registrar import aor_of, registered_contact_id
from ..sip.errors import SipParseError
from ..sip.uri import SipUri, parse_uri
from .asterisk import AsteriskConfig, Entry, Section, read_asterisk_config

HOSTNAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")
TIMER_F_MS: Final = 32_000  # qualify_timeout = 0: Unreachable when the transaction times out (64 x T1)

#: object types sipqualify reads; the others res_pjsip knows are accepted and ignored
TYPES: Final = ("endpoint", "aor", "contact", "auth", "identify", "transport", "registration", "global", "system")
OTHER_TYPES: Final = frozenset({"domain_alias", "acl", "phoneprov", "resource_list", "outbound-publish",
                                "inbound-publication", "asterisk-publication"})


# ---------------------------------------------------------------------------- values


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("yes", "true", "y", "t", "1", "on"):
        return True
    if low in ("no", "false", "n", "f", "0", "off"):
        return False
    raise ValueError(f"should be yes or no, not '{text}'")


def _uint(text: str) -> int:
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise ValueError(f"should be a whole number >= 0, not '{text}'")
    return int(t)


def _seconds_float(text: str) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise ValueError(f"should be a number of seconds, not '{text}'") from None
    if not 0 <= v <= 86400:
        raise ValueError(f"should be between 0 and 86400 seconds, not '{text}'")
    return v


def _refresh(text: str) -> int:
    v = _uint(text)
    if v == 0:
        raise ValueError("should be at least 1 second")
    return v


def _str(text: str) -> str:
    return text.strip()


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def sip_uri(text: str) -> SipUri:
    """A contact or proxy URI as res_pjsip takes it: `sip:` or `sips:`, with a host."""
    try:
        u = parse_uri(text.strip())
    except SipParseError as e:
        raise ValueError(f"'{text.strip()}' is not a SIP URI ({e})") from None
    if not isinstance(u, SipUri):
        raise ValueError(f"'{text.strip()}' is not a sip: or sips: URI")
    return u


def _uris(text: str) -> list[str]:
    out = _words(text)  # res_pjsip's permanent_uri_handler splits on ','
    for u in out:
        sip_uri(u)
    return out


def _proxy(text: str) -> str:
    if text.strip():
        sip_uri(text)
    return text.strip()


def _matches(text: str) -> list[str]:
    """identify `match=`: IP addresses, ip/prefix or ip/netmask networks, or host names
    (res_pjsip_endpoint_identifier_ip), comma-separated."""
    out = _words(text)
    for m in out:
        if not _is_ip_or_network(m) and not HOSTNAME.fullmatch(m):
            raise ValueError(f"'{m}' is not an IP address, network or host name")
    return out


def _is_ip_or_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text.strip("[]"), strict=False)
    except ValueError:
        return False
    return True


def _bind(text: str) -> tuple[str, int | None]:
    return split_hostport(text, ip_only=True, allow_zero_port=True)


def _transport_protocol(text: str) -> str:
    low = text.strip().lower()
    if low not in ("udp", "tcp", "tls", "ws", "wss", "flow"):
        raise ValueError(f"should be udp, tcp, tls, ws, wss or flow, not '{text}'")
    return low


# ---------------------------------------------------------------------------- the option table


@dataclass(frozen=True, slots=True)
class PjOption:
    """One pjsip.conf option sipqualify reads: where it goes and what docs/configuration.md says."""

    type: str  # the section's type=
    name: str
    read: Callable[[str], Any]  # raises ValueError (an error with file:line)
    attr: str  # attribute of the model object ("" : checked, kept nowhere)
    default: str  # markdown, as the docs show it
    unit: str
    meaning: str
    multi: bool = False  # repeated lines add up (contact=, aors=)


def _o(type_: str, name: str, read: Callable[[str], Any], attr: str, default: str, unit: str, meaning: str,
       multi: bool = False) -> PjOption:
    return PjOption(type_, name, read, attr, default, unit, meaning, multi)


_YN = "`yes` or `no`"
PJSIP_OPTIONS: Final = (
    _o("aor", "contact", _uris, "contacts", "none", "SIP URI(s)",
       "a permanent contact: qualified as its own peer", multi=True),
    _o("aor", "qualify_frequency", _uint, "qualify_frequency", "`0`", "seconds",
       "OPTIONS to each contact every so often (0 = not qualified)"),
    _o("aor", "qualify_timeout", _seconds_float, "qualify_timeout", "`3.0`", "seconds (decimal)",
       "no final answer by then: Unreachable (0 = wait for Timer F, 32 s)"),
    _o("aor", "qualify_2xx_only", _bool, "qualify_2xx_only", "`no`", _YN,
       "only a 2xx answer counts as Reachable"),
    _o("aor", "authenticate_qualify", _bool, "authenticate_qualify", "`no`", _YN,
       "shown in the AOR views; a challenge is answered with the endpoint's outbound_auth either way"),
    _o("aor", "max_contacts", _uint, "max_contacts", "`0`", "contacts",
       "contacts that may register to the AOR (0: registration refused)"),
    _o("aor", "remove_existing", _bool, "remove_existing", "`no`", _YN,
       "a contact over max_contacts replaces the one expiring soonest"),
    _o("aor", "remove_unavailable", _bool, "remove_unavailable", "`no`", _YN,
       "a contact over max_contacts replaces an Unreachable one first"),
    _o("aor", "minimum_expiration", _uint, "minimum_expiration", "`60`", "seconds",
       "shorter registrations get 423 Interval Too Brief"),
    _o("aor", "maximum_expiration", _uint, "maximum_expiration", "`7200`", "seconds",
       "longer registrations are capped to this"),
    _o("aor", "default_expiration", _uint, "default_expiration", "`3600`", "seconds",
       "a registration that asks for no expiry"),
    _o("aor", "outbound_proxy", _proxy, "outbound_proxy", "unset", "SIP URI",
       "send the AOR's OPTIONS to this proxy (the endpoint's wins)"),
    _o("aor", "support_path", _bool, "support_path", "`no`", _YN, "shown in `pjsip show aor`"),
    _o("aor", "mailboxes", _str, "mailboxes", "unset", "text", "shown in `pjsip show aor`"),
    _o("aor", "voicemail_extension", _str, "voicemail_extension", "unset", "text", "shown in `pjsip show aor`"),
    _o("endpoint", "aors", _words, "aors", "none", "AOR names",
       "the AORs whose contacts make this endpoint reachable", multi=True),
    _o("endpoint", "from_user", _str, "from_user", "the endpoint's name", "text",
       "user part of From and Contact in the OPTIONS"),
    _o("endpoint", "from_domain", _str, "from_domain", "the local address", "host",
       "host part of From in the OPTIONS"),
    _o("endpoint", "outbound_proxy", _proxy, "outbound_proxy", "unset", "SIP URI",
       "send the endpoint's OPTIONS to this proxy"),
    _o("endpoint", "auth", _str, "auth", "unset", "auth name",
       "inbound auth: the digest a REGISTER to its AORs must answer"),
    _o("endpoint", "outbound_auth", _str, "outbound_auth", "unset", "auth names",
       "answers a 401/407 to its contacts' OPTIONS (the section of the challenge's realm, else one "
       "without realm)"),
    _o("endpoint", "context", _str, "context", "`default`", "text", "shown in `pjsip show endpoint`"),
    _o("endpoint", "transport", _str, "transport", "unset", "transport name",
       "the OPTIONS use this transport's protocol"),
    _o("endpoint", "device_state_busy_at", _uint, "device_state_busy_at", "`0`", "channels",
       "the `0 of inf` column of `pjsip show endpoints`"),
    _o("auth", "auth_type", _str, "auth_type", "`userpass`", "text", "kept for the auth views"),
    _o("auth", "username", _str, "username", "unset", "text",
       "the digest user name of registering phones"),
    _o("auth", "password", _str, "password", "unset", "text", "the digest password, never shown"),
    _o("auth", "md5_cred", _str, "md5_cred", "unset", "text",
       "md5(username:realm:password), never shown"),
    _o("auth", "realm", _str, "realm", "unset", "text", "kept for the auth views"),
    _o("identify", "endpoint", _str, "endpoint", "unset", "endpoint name",
       "the endpoint requests from the `match` addresses come from"),
    _o("identify", "match", _matches, "match", "none", "IP addresses, networks or host names",
       "source addresses identified as the endpoint", multi=True),
    _o("transport", "protocol", _transport_protocol, "", "`udp`", "word",
       "the protocol of the OPTIONS of endpoints using this transport"),
    _o("transport", "bind", _bind, "", "`0.0.0.0:5060`", "IP address, optionally with `:port`",
       "the first UDP transport's is where sipqualify listens"),
    _o("global", "default_realm", _str, "", "`asterisk`", "text", "the realm of the registrar's challenges"),
    _o("global", "max_initial_qualify_time", _uint, "", "`0`", "seconds",
       "first poll of each AOR spread over this long (0 = over its qualify_frequency)"),
    _o("global", "rt_refresh", _refresh, "", "`10`", "seconds",
       "a sipqualify extension: PJSIP realtime rows inserted, changed or deleted take effect within this long"),
)

#: (type, lower-case name) -> option
PJSIP_INDEX: Final = {(o.type, o.name): o for o in PJSIP_OPTIONS}

# res_pjsip options sipqualify has no use for (Asterisk 20's names; `pjsip show endpoint` §4.7 and
# the sorcery registrations of res_pjsip): accepted silently
_ENDPOINT_KNOWN = """
    100rel accept_multiple_sdp_answers accountcode acl aggregate_mwi allow allow_overlap allow_subscribe
    allow_transfer allow_unauthenticated_options asymmetric_rtp_codec bind_rtp_to_media_address bundle
    call_group callerid callerid_privacy callerid_tag codec_prefs_incoming_answer codec_prefs_incoming_offer
    codec_prefs_outgoing_answer codec_prefs_outgoing_offer connected_line_method contact_acl contact_deny
    contact_permit cos_audio cos_video deny direct_media direct_media_glare_mitigation direct_media_method
    disable_direct_media_on_nat disallow dtls_auto_generate_cert dtls_ca_file dtls_ca_path dtls_cert_file
    dtls_cipher dtls_fingerprint dtls_private_key dtls_rekey dtls_setup dtls_verify dtmf_mode fax_detect
    fax_detect_timeout follow_early_media_fork follow_redirect_methods force_avp force_rport g726_non_standard
    geoloc_incoming_call_profile geoloc_outgoing_call_profile ice_support identify_by ignore_183_without_sdp
    inband_progress incoming_call_offer_pref incoming_mwi_mailbox language mailboxes max_audio_streams
    max_video_streams media_address media_encryption media_encryption_optimistic media_use_received_transport
    message_context moh_passthrough moh_suggest mwi_from_user mwi_subscribe_replaces_unsolicited
    named_call_group named_pickup_group notify_early_inuse_ringing one_touch_recording outgoing_call_offer_pref
    overlap_context permit pickup_group preferred_codec_only record_off_feature record_on_feature
    redirect_method refer_blind_progress rewrite_contact rpid_immediate rtcp_mux rtp_engine rtp_ipv6
    rtp_keepalive rtp_port_end rtp_port_start rtp_symmetric rtp_timeout rtp_timeout_hold sdp_owner sdp_session
    security_mechanisms security_negotiation send_aoc send_connected_line send_diversion send_history_info
    send_pai send_rpid set_var srtp_tag_32 stir_shaken stir_shaken_profile sub_min_expiry subscribe_context
    suppress_moh_on_sendonly suppress_q850_reason_headers t38_bind_udptl_to_media_address t38_udptl
    t38_udptl_ec t38_udptl_ipv6 t38_udptl_maxdatagram t38_udptl_nat tenantid timers timers_min_se
    timers_sess_expires tone_zone tos_audio tos_video trust_connected_line trust_id_inbound trust_id_outbound
    use_avpf use_ptime user_eq_phone voicemail_extension webrtc direct_media_method mailboxes
"""
PJSIP_KNOWN: Final = {
    "endpoint": frozenset(_ENDPOINT_KNOWN.split()),
    "aor": frozenset(),
    "contact": frozenset("""uri expiration_time qualify_frequency qualify_timeout qualify_2xx_only
        authenticate_qualify outbound_proxy path user_agent endpoint reg_server via_addr via_port call_id
        prune_on_boot""".split()),
    "auth": frozenset("nonce_lifetime oauth_clientid oauth_secret refresh_token supported_algorithms_uac "
                      "supported_algorithms_uas".split()),
    "identify": frozenset("match_header match_request_uri srv_lookups".split()),
    "transport": frozenset("""async_operations ca_list_file ca_list_path cert_file cipher cos domain
        external_media_address external_signaling_address external_signaling_port local_net method
        password priv_key_file require_client_cert tos verify_client verify_server websocket_write_timeout
        allow_reload symmetric_transport allow_wildcard_certs tcp_keepalive_enable tcp_keepalive_idle_time
        tcp_keepalive_interval_time tcp_keepalive_probe_count""".split()),
    "registration": frozenset("""auth_rejection_permanent client_uri contact_user contact_header_params
        endpoint expiration fatal_retry_interval forbidden_retry_interval line max_retries
        max_random_initial_delay outbound_auth outbound_proxy retry_interval security_mechanisms
        security_negotiation server_uri support_outbound support_path transport user_agent""".split()),
    "global": frozenset("""contact_expiration_check_interval debug default_from_user default_outbound_endpoint
        default_voicemail_extension disable_multi_domain endpoint_identifier_order
        ignore_uri_user_options keep_alive_interval max_forwards mwi_disable_initial_unsolicited
        mwi_tps_queue_high mwi_tps_queue_low norefersub regcontext send_contact_status_on_update_registration
        taskprocessor_overload_trigger unidentified_request_count unidentified_request_period
        unidentified_request_prune_interval use_callerid_contact user_agent allow_sending_180_after_183
        all_codecs_on_empty_reinvite feature_digit_timeout noreferto ignore_183_without_sdp""".split()),
    "system": frozenset("""compact_headers disable_rport disable_tcp_switch follow_early_media_fork
        accept_multiple_sdp_answers threadpool_auto_increment threadpool_idle_timeout threadpool_initial_size
        threadpool_max_size timer_b timer_t1""".split()),
}


# ---------------------------------------------------------------------------- the reader


def contact_id(aor: str, uri: str) -> str:
    """A static contact's sorcery id, `<aor>@@<md5(uri)>` (location.c:629)."""
    return f"{aor}@@{hashlib.md5(uri.encode()).hexdigest()}"


class PjsipConfReader:
    def __init__(self, parsed: AsteriskConfig, source: str) -> None:
        self.parsed = parsed
        self.cfg = Config(messages=list(parsed.messages), source=source)
        self.cfg.general.realm = "asterisk"  # res_pjsip's default_realm
        self.pj = PjsipConfig()
        self.cfg.pjsip = self.pj
        self._where: dict[tuple[str, str], Section] = {}
        self._unknown_seen: set[tuple[str, str, str]] = set()

    def _msg(self, severity: str, where: Entry | Section, text: str) -> None:
        option = where.key if isinstance(where, Entry) else None
        self.cfg.messages.append(ConfigMessage(severity, where.file, where.line, text, option))

    def read(self) -> Config:
        for sec in self.parsed.categories():
            typ = sec.get("type")
            if typ is None:
                self._msg("warning", sec, f"section [{sec.name}] has no type=: ignored (as res_pjsip)")
                continue
            t = typ.value.strip().lower()
            if t in OTHER_TYPES:
                continue
            if t not in TYPES:
                self._msg("warning", typ, f"unknown type '{typ.value}' for [{sec.name}]: section ignored")
                continue
            prior = self._where.get((t, sec.name))
            if prior is not None and t not in ("global", "system"):
                self._msg("error", sec, f"{t} '{sec.name}' is defined twice: here and at {prior.where}")
                continue
            self._where[(t, sec.name)] = sec
            self.object(t, sec)
        self._cross_check()
        self.pj.endpoint_of = {aor: ep.name for aor, ep in qualifying_endpoints(self.pj).items()}
        self._peers()
        return self.cfg

    def object(self, t: str, sec: Section) -> None:
        """One section (or realtime row, realtime/pjsip.py) of type `t` into `self.pj`."""
        obj: Any
        if t == "aor":
            obj = self.pj.aors.setdefault(sec.name, PjsipAor(sec.name, source=sec.where))
        elif t == "endpoint":
            obj = self.pj.endpoints.setdefault(sec.name, PjsipEndpoint(sec.name, source=sec.where))
        elif t == "auth":
            obj = self.pj.auths.setdefault(sec.name, PjsipAuth(sec.name, source=sec.where))
        elif t == "identify":
            obj = self.pj.identifies.setdefault(sec.name, PjsipIdentify(sec.name, source=sec.where))
        else:
            obj = None
        local: dict[str, Any] = {}
        for e in sec.entries:
            k = e.key.strip().lower()
            if k == "type":
                continue
            opt = PJSIP_INDEX.get((t, k))
            if opt is None:
                if k not in PJSIP_KNOWN[t] and (e.file, t, k) not in self._unknown_seen:
                    self._unknown_seen.add((e.file, t, k))
                    self._msg("warning", e, f"unknown option '{e.key}' for type={t} ignored")
                elif isinstance(obj, PjsipEndpoint):
                    _endpoint_setting(obj, k, e.value.strip())
                continue
            try:
                value = opt.read(e.value)
            except ValueError as err:
                self._msg("error", e, f"{t} '{sec.name}': {e.key} {err}")
                continue
            if not opt.attr:
                local[k] = value
            elif opt.multi:
                getattr(obj, opt.attr).extend(value)
            else:
                setattr(obj, opt.attr, value)
        if t == "transport":
            protocol = local.get("protocol", "udp")
            host, port = local.get("bind", ("0.0.0.0", None))
            bind = f"{host}:{port}" if port is not None else host
            self.pj.transports[sec.name] = (protocol, bind)
            if protocol == "udp" and not any(p == "udp" for p, _ in list(self.pj.transports.values())[:-1]):
                g = self.cfg.general  # res_pjsip's UDP socket: sipqualify's, as sip.conf's udpbindaddr
                g.udpbindaddr, g.bindport = host, port if port is not None else DEFAULT_SIP_PORT
        elif t == "global":
            if "max_initial_qualify_time" in local:
                self.pj.max_initial_qualify_time = local["max_initial_qualify_time"]
            if "rt_refresh" in local:
                self.cfg.general.rt_refresh_s = local["rt_refresh"]
            if local.get("default_realm"):
                self.cfg.general.realm = local["default_realm"]

    def _cross_check(self) -> None:
        for ident in self.pj.identifies.values():
            sec = self._where[("identify", ident.name)]
            if ident.endpoint not in self.pj.endpoints:
                self._msg("warning", sec.get("endpoint") or sec,
                          f"identify '{ident.name}': endpoint '{ident.endpoint}' is not defined: it matches nothing")
        for ep in self.pj.endpoints.values():
            sec = self._where[("endpoint", ep.name)]
            for aor in ep.aors:
                if aor not in self.pj.aors:
                    self._msg("warning", sec.get("aors") or sec, f"endpoint '{ep.name}' lists AOR '{aor}', "
                                                                 "which is not defined: it gives no contacts")
            for what in ("auth", "outbound_auth"):
                name = getattr(ep, what)
                if what == "outbound_auth":  # a list (res_pjsip's outbound_auths)
                    name = ",".join(n for n in _words(name) if n not in self.pj.auths)
                if name and name not in self.pj.auths:
                    self._msg("warning", sec.get(what) or sec, f"endpoint '{ep.name}': {what} '{name}' is "
                                                               "not defined")
            if ep.transport and ep.transport not in self.pj.transports:
                self._msg("warning", sec.get("transport") or sec, f"endpoint '{ep.name}': transport "
                                                                  f"'{ep.transport}' is not defined")

    def _peers(self) -> None:
        for aor in self.pj.aors.values():
            for name, p in aor_peers(self.pj, aor, qualifying_endpoint(self.pj, aor.name)).items():
                self.pj.peer_of[(aor.name, p.contact_uri or "")] = name
                self.cfg.peers[name] = p


def aor_peers(pj: PjsipConfig, aor: PjsipAor, ep: PjsipEndpoint | None) -> dict[str, PeerConfig]:
    """The peers of an AOR's static `contact=` URIs (pjsip.conf sections and ps_aors rows
    alike), by contact id; the same URI twice is one contact (same id), as in res_pjsip."""
    out: dict[str, PeerConfig] = {}
    for uri in aor.contacts:
        name = contact_id(aor.name, uri)
        if name not in out:
            out[name] = contact_peer(name, aor, uri, ep, pj)
    return out


def _endpoint_setting(ep: PjsipEndpoint, key: str, value: str) -> None:
    """An endpoint option kept only to be shown (PJSIPShowEndpoint); allow/disallow as res_pjsip
    applies them to the endpoint's codec list, in order."""
    if key not in ("allow", "disallow"):
        ep.settings[key] = value
        return
    for codec in _words(value.lower()):
        if key == "allow" and codec not in ep.codecs:
            ep.codecs.append(codec)
        elif key == "disallow":
            ep.codecs[:] = [] if codec == "all" else [c for c in ep.codecs if c != codec]


def qualifying_endpoint(pj: PjsipConfig, aor: str) -> PjsipEndpoint | None:
    """The endpoint a contact's OPTIONS are sent as: the first, by id, listing the AOR (the
    reader's index, `PjsipConfig.endpoint_of`, when there is one: O(1), not O(endpoints))."""
    if pj.endpoint_of is not None:
        name = pj.endpoint_of.get(aor)
        return pj.endpoints.get(name) if name is not None else None
    return min((ep for ep in pj.endpoints.values() if aor in ep.aors), key=lambda ep: ep.name, default=None)


def qualifying_endpoints(pj: PjsipConfig) -> dict[str, PjsipEndpoint]:
    """`qualifying_endpoint` of every AOR listed by an endpoint, in one pass."""
    out: dict[str, PjsipEndpoint] = {}
    for ep in sorted(pj.endpoints.values(), key=lambda ep: ep.name):
        for aor in ep.aors:
            out.setdefault(aor, ep)
    return out


def registered_contact_peer(cid: str, uri: str, pj: PjsipConfig | None) -> PeerConfig | None:
    """The one-model peer of a registered contact `<aor>;@<md5(uri)>` (None: its AOR is gone or
    the URI is not one): qualified like a static contact of its AOR, at the binding's address."""
    aor = pj.aors.get(aor_of(cid) or "") if pj is not None else None
    if pj is None or aor is None or registered_contact_id(aor.name, uri) != cid:
        return None
    try:
        cfg = contact_peer(cid, aor, uri, qualifying_endpoint(pj, aor.name), pj)
    except ValueError:
        return None
    cfg.dynamic, cfg.host, cfg.port = True, None, None
    return cfg


def contact_peer(name: str, aor: PjsipAor, uri: str, ep: PjsipEndpoint | None, pj: PjsipConfig) -> PeerConfig:
    """The one-model peer of a static contact (see the module docstring)."""
    u = sip_uri(uri)
    qualified = ep is not None and aor.qualify_frequency > 0
    timeout_ms = round(aor.qualify_timeout * 1000) or TIMER_F_MS
    transport = "tls" if u.scheme == "sips" else (u.params.get("transport") or "").lower()
    if not transport and ep is not None and ep.transport in pj.transports:
        transport = pj.transports[ep.transport][0]
    if transport not in ("udp", "tcp", "tls"):
        transport = "udp"
    proxy = (ep.outbound_proxy if ep is not None and ep.outbound_proxy else aor.outbound_proxy) or None
    if proxy:
        p = sip_uri(proxy)
        proxy = f"{p.host}:{p.port}" if p.port else p.host
    return PeerConfig(
        name=name,
        host=u.host,
        port=u.port,
        transport=transport,
        qualify_ms=timeout_ms if qualified else 0,
        qualifyfreq_ms=aor.qualify_frequency * 1000,
        fromuser=(ep.from_user or ep.name) if ep is not None else None,
        fromdomain=(ep.from_domain or None) if ep is not None else None,
        outboundproxy=proxy,
        context=ep.context if ep is not None else "default",
        retransmit="pjsip",
        semantics="pjsip",
        contact_uri=uri,
        qualify_2xx_only=aor.qualify_2xx_only,
        max_initial_qualify_ms=pj.max_initial_qualify_time * 1000,
        outbound_auths=outbound_auths(pj, ep),
        source=aor.source,
    )


def outbound_auths(pj: PjsipConfig, ep: PjsipEndpoint | None) -> tuple[OutboundAuth, ...]:
    """The credentials of `ep`'s `outbound_auth=` sections (comma-separated names, in order; an
    undefined one is skipped, warned by _cross_check), for a challenge to its OPTIONS."""
    out = []
    for name in _words(ep.outbound_auth) if ep is not None else ():
        a = pj.auths.get(name)
        if a is None:
            continue
        md5 = a.auth_type.strip().lower() == "md5"
        out.append(OutboundAuth(name, a.username, None if md5 or (not a.password and a.md5_cred) else a.password,
                                a.md5_cred or None, a.realm))
    return tuple(out)


def looks_like_pjsip(path: str) -> bool:
    """A pjsip.conf by name, or by content (a `type=endpoint|aor|transport` line)."""
    import os

    if "pjsip" in os.path.basename(path).lower():
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    for line in head.splitlines():
        k, eq, v = line.partition("=")
        if eq and k.strip().lower() == "type" and v.split(";")[0].strip().lower() in ("endpoint", "aor",
                                                                                     "transport"):
            return True
    return False


def load_pjsip_conf(path: str) -> Config:
    """Read a pjsip.conf (and its includes). Never raises for content: see `Config.messages`.
    An extconfig.conf next to it maps the PJSIP realtime families (config/realtime.py)."""
    import os

    from .realtime import PJSIP_FAMILIES, read_realtime

    cfg = PjsipConfReader(read_asterisk_config(path), path).read()
    cfg.realtime = read_realtime(os.path.dirname(os.path.abspath(path)), None, cfg.messages, PJSIP_FAMILIES)
    return cfg
