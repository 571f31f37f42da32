"""sip.conf -> Config, with chan_sip's parsing rules for the options we use.

Values and defaults follow chan_sip 16-20 (asterisk-qualify.md §1.1): `qualify=yes` is the
general `qualify` value when that is non-zero, else 2000 ms; junk `qualify` is 0 with a
warning; `qualifyfreq` is seconds; `qualifygap` ms (negative rejected). Options chan_sip
knows but sipqualify has no use for are accepted silently; truly unknown options get one
warning per option name and file. Nothing here is fatal except what makes a peer unusable.
"""

from __future__ import annotations

from ..model import (
    DEFAULT_MAXMS,
    NAT_MODES,
    Config,
    GeneralConfig,
    PeerConfig,
)
from .astconf import Entry, ParsedConfig, Section, parse_file

GENERAL_USED = {
    "udpbindaddr", "bindaddr", "bindport", "qualify", "qualifyfreq", "qualifygap", "qualifypeers",
    "useragent", "fromdomain", "externip", "context", "nat",
}
PEER_USED = {
    "type", "host", "port", "transport", "qualify", "qualifyfreq", "defaultuser", "username", "fromuser",
    "fromdomain", "outboundproxy", "nat", "description", "secret", "md5secret", "context",
}
# chan_sip options sipqualify reads without using (common in real files): accepted silently.
CHAN_SIP_KNOWN = {
    "disallow", "allow", "dtmfmode", "canreinvite", "directmedia", "insecure", "callerid", "mailbox",
    "call-limit", "deny", "permit", "language", "callgroup", "pickupgroup", "namedcallgroup",
    "namedpickupgroup", "setvar", "accountcode", "amaflags", "regexten", "busylevel", "videosupport",
    "textsupport", "trustrpid", "sendrpid", "encryption", "avpf", "icesupport", "force_avp", "dtlsenable",
    "dtlsverify", "dtlscertfile", "dtlsprivatekey", "dtlssetup", "dtlsfingerprint", "dtlsrekey",
    "dtlscafile", "dtlscapath", "dtlscipher", "rtcp_mux", "cid_number", "fullname", "trunkname",
    "host_dynamic", "defaultip", "auth", "remotesecret", "subscribecontext", "allowsubscribe",
    "allowtransfer", "allowoverlap", "progressinband", "promiscredir", "useclientcode", "usereqphone",
    "t38pt_udptl", "t38pt_usertpsource", "faxdetect", "rfc2833compensate", "session-timers",
    "session-expires", "session-minse", "session-refresher", "timert1", "timerb", "t1min", "rtptimeout",
    "rtpholdtimeout", "rtpkeepalive", "keepalive", "maxcallbitrate", "mohinterpret", "mohsuggest",
    "parkinglot", "vmexten", "autoframing", "ignoresdpversion", "rpid_update", "rpid_immediate",
    "contactpermit", "contactdeny", "contactacl", "directmediapermit", "directmediadeny", "directmediaacl",
    "acl", "mwi_from", "buggymwi", "hasvoicemail", "constantssrc", "cos_audio", "cos_video", "cos_sip",
    "tos_audio", "tos_video", "tos_sip", "qualifysmoothing", "sdpowner", "sdpsession", "callcounter",
    "tonezone", "supportpath", "forwardloopdetected", "snom_aoc_enabled", "discard_remote_hold_retrieval",
    "record_on_feature", "record_off_feature", "unsolicited_mailbox", "use_q850_reason", "maxforwards",
    "preferred_codec_only", "callingpres", "path", "outofcall_message_context", "regcontext", "g726nonstandard",
    "allowguest", "alwaysauthreject", "tcpenable",
    "tlsenable", "tcpbindaddr", "tlsbindaddr", "srvlookup", "pedantic", "tos", "maxexpiry", "minexpiry",
    "defaultexpiry", "registertimeout", "registerattempts", "register", "realm", "domain", "localnet",
    "externhost", "externrefresh", "externtcpport", "externtlsport", "rtcachefriends", "rtupdate",
    "rtsavesysname", "ignoreregexpire", "regextenonqualify", "legacy_useroption_parsing",
    "send_diversion", "shrinkcallerid", "notifyringing", "notifyhold", "notifycid", "callevents",
    "authfailureevents", "limitonpeers", "compactheaders", "match_auth_username", "recordhistory",
    "dumphistory", "allowexternaldomains", "autodomain",
    "checkmwi", "useragent", "tlscertfile", "tlsprivatekey",
    "tlscipher", "tlscafile", "tlscapath", "tlsverifyclient", "tlsdontverifyserver", "tlsclientmethod",
    "websocket_enabled", "websocket_write_timeout", "jbenable", "jbforce", "jbmaxsize", "jbresyncthreshold",
    "jbimpl", "jblog", "jbtargetextra", "storesipcause", "authlimit", "authtimeout", "tcpauthtimeout",
    "tcpauthlimit", "t38_udptl", "udptl", "directrtpsetup", "subscribe_network_change_event", "sipdebug", "transport",
    "prematuremedia", "trustid_outbound", "bindport", "matchexternaddrlocally", "dynamic_exclude_static",
    "engine", "nat", "mwiexpiry",
    "accept_outofcall_message", "auth_message_requests", "auth_options_requests",
    "disallowed_methods", "subscribemwi", "hash_users", "hash_peers", "hash_dialogs",
    "ignore_requested_pref", "maxmsgsize", "qualifytimer",
}


def _parse_qualify(text: str, general_default: int) -> int | None:
    v = text.strip().lower()
    if v in ("no", "false", "off", "0", "n"):
        return 0
    if v in ("yes", "true", "on", "y"):
        return general_default or DEFAULT_MAXMS
    if v.isdigit():
        return int(v)
    return None


def _parse_hostport(text: str) -> tuple[str, int | None] | None:
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return host, int(rest[1:]) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        return host, int(port)
    return text, None


def _nat(text: str) -> tuple[tuple[str, ...], str | None]:
    out: list[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if part in NAT_MODES:
            out.append(part)
        elif part == "yes":
            out += ["force_rport", "comedia"]
        elif part in ("never", "route"):
            out.append("no" if part == "never" else "force_rport")
            return tuple(out), f"nat={part} is deprecated; treated as {out[-1]}"
        elif part:
            return tuple(out) or ("auto_force_rport",), f"unknown nat mode '{part}'"
    return tuple(out) or ("no",), None


class SipConfLoader:
    """Turns a ParsedConfig of sip.conf into a Config."""

    def __init__(self, parsed: ParsedConfig, source: str) -> None:
        self.p = parsed
        self.source = source
        self.cfg = Config(messages=list(parsed.messages), source=source)
        self._warned: set[tuple[str, str]] = set()

    def warn(self, e: Entry, msg: str) -> None:
        self.p.warning(e.file, e.line, msg, option=e.key)
        self.cfg.messages.append(self.p.messages[-1])

    def error(self, e: Entry | Section, msg: str, option: str | None = None) -> None:
        self.p.error(e.file, e.line, msg, option=option or (e.key if isinstance(e, Entry) else None))
        self.cfg.messages.append(self.p.messages[-1])

    def unknown(self, e: Entry) -> None:
        k = (e.file, e.key.lower())
        if k in self._warned:
            return
        self._warned.add(k)
        self.warn(e, f"unknown option '{e.key}' ignored")

    def _int(self, e: Entry, lo: int | None = None, hi: int | None = None) -> int | None:
        v = e.value.strip()
        try:
            n = int(v)
        except ValueError:
            self.error(e, f"'{e.value}' is not a number")
            return None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.error(e, f"{n} is out of range ({rng})")
            return None
        return n

    def load(self) -> Config:
        g = self.cfg.general
        general_nat: tuple[str, ...] = ("auto_force_rport",)
        for sec in self.p.sections:
            if sec.name.lower() == "general":
                general_nat = self._general(sec, g) or general_nat
        for sec in self.p.sections:
            if sec.is_template or sec.name.lower() in ("general", "authentication"):
                continue
            self._peer(sec, g, general_nat)
        return self.cfg

    def _general(self, sec: Section, g: GeneralConfig) -> tuple[str, ...] | None:
        nat: tuple[str, ...] | None = None
        for e in sec.entries:
            k = e.key.lower()
            v = e.value
            if k in ("udpbindaddr", "bindaddr"):
                hp = _parse_hostport(v)
                if hp is None or not hp[0]:
                    self.error(e, f"bad bind address '{v}'")
                    continue
                g.udpbindaddr = hp[0]
                if hp[1] is not None:
                    if not 0 <= hp[1] < 65536:
                        self.error(e, f"port {hp[1]} out of range")
                        continue
                    g.bindport = hp[1]
            elif k == "bindport":
                n = self._int(e, 0, 65535)
                if n is not None:
                    g.bindport = n
            elif k == "qualify":
                q = _parse_qualify(v, 0)
                if q is None:
                    self.warn(e, f"qualify '{v}' is neither yes, no nor a number of ms: using no")
                    q = 0
                g.qualify_ms = q
            elif k == "qualifyfreq":
                n = self._int(e, 1)
                if n is not None:
                    g.qualifyfreq_ms = n * 1000
            elif k == "qualifygap":
                n = self._int(e, 0)
                if n is not None:
                    g.qualifygap_ms = n
            elif k == "qualifypeers":
                n = self._int(e)
                if n is not None:
                    g.qualifypeers = n
            elif k == "useragent":
                g.useragent = v
            elif k == "fromdomain":
                g.fromdomain = v or None
            elif k == "externip":
                g.externip = v or None
            elif k == "context":
                g.context = v
            elif k == "nat":
                nat, msg = _nat(v)
                if msg:
                    self.warn(e, msg)
            elif k not in CHAN_SIP_KNOWN:
                self.unknown(e)
        return nat

    def _peer(self, sec: Section, g: GeneralConfig, general_nat: tuple[str, ...]) -> None:
        type_e = sec.get("type")
        if type_e is None:
            self.warn(Entry("type", "", sec.file, sec.line), f"[{sec.name}] has no type=: section ignored")
            return
        t = type_e.value.lower()
        if t == "user":
            return
        if t not in ("peer", "friend"):
            self.error(type_e, f"type must be peer, friend or user, not '{type_e.value}'")
            return
        if sec.name in self.cfg.peers:
            first = self.cfg.peers[sec.name].source
            self.error(sec, f"peer '{sec.name}' defined twice (first at {first})")
            return
        p = PeerConfig(
            name=sec.name,
            qualify_ms=g.qualify_ms,
            qualifyfreq_ms=g.qualifyfreq_ms,
            nat=general_nat,
            context=g.context,
            fromdomain=g.fromdomain,
            source=f"{sec.file}:{sec.line}",
        )
        ok = True
        for e in sec.entries:
            k = e.key.lower()
            v = e.value
            if k == "type":
                continue
            if k == "host":
                if not v:
                    self.error(e, "host is empty")
                    ok = False
                elif v.lower() == "dynamic":
                    p.dynamic, p.host = True, None
                else:
                    hp = _parse_hostport(v)
                    if hp is None:
                        self.error(e, f"bad host '{v}'")
                        ok = False
                    else:
                        p.dynamic, p.host = False, hp[0]
                        if hp[1] is not None:
                            p.port = hp[1]
            elif k == "port":
                n = self._int(e, 1, 65535)
                if n is None:
                    ok = False
                else:
                    p.port = n
            elif k == "transport":
                first = v.split(",")[0].strip().lower()
                if first in ("udp", "tcp", "tls"):
                    p.transport = first
                else:
                    self.warn(e, f"transport '{first}' is not supported by sipqualify: using udp")
                    p.transport = "udp"
            elif k == "qualify":
                q = _parse_qualify(v, g.qualify_ms)
                if q is None:
                    self.warn(e, f"qualify '{v}' is neither yes, no nor a number of ms: using no")
                    q = 0
                p.qualify_ms = q
            elif k == "qualifyfreq":
                try:
                    n = int(v)
                    if n < 1:
                        raise ValueError
                    p.qualifyfreq_ms = n * 1000
                except ValueError:
                    self.warn(e, f"qualifyfreq '{v}' is not a positive number of seconds: using "
                                 f"{g.qualifyfreq_ms // 1000}")
                    p.qualifyfreq_ms = g.qualifyfreq_ms
            elif k in ("defaultuser", "username"):
                p.defaultuser = v or None
            elif k == "fromuser":
                p.fromuser = v or None
            elif k == "fromdomain":
                p.fromdomain = v or None
            elif k == "outboundproxy":
                p.outboundproxy = v or None
            elif k == "nat":
                p.nat, msg = _nat(v)
                if msg:
                    self.warn(e, msg)
            elif k == "description":
                p.description = v
            elif k == "secret":
                p.secret = v or None
            elif k == "md5secret":
                p.md5secret = v or None
            elif k == "context":
                p.context = v
            elif k not in CHAN_SIP_KNOWN:
                self.unknown(e)
        if not p.dynamic and not p.host:
            self.error(sec, f"peer '{sec.name}' has no host= (use host=dynamic for phones that register)",
                       option="host")
            ok = False
        if ok:
            self.cfg.peers[p.name] = p


def load_sip_conf(path: str) -> Config:
    parsed = parse_file(path)
    return SipConfLoader(parsed, path).load()
