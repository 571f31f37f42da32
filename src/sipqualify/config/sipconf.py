"""sip.conf -> Config, with chan_sip's rules for the options sipqualify uses.

chan_sip (Asterisk 16-20) reads `[general]` first, then builds one peer per non-template
section other than `[general]` and `[authentication]` (asterisk-qualify.md §1.1):

* a section needs `type=`; the first `type` decides (missing or unknown: warned, skipped),
  and every `type` line adds to it (`friend` = `peer` + `user`). Sections that are only
  `type=user` are not peers and are skipped silently.
* a peer starts from the `[general]` defaults chan_sip copies into it (`qualify`,
  `qualifyfreq`, `nat`, `context`, `transport`); then its options apply in order, last wins.
* `qualify=yes` is `[general] qualify` when that is non-zero, else 2000 ms; `qualify`
  and `qualifyfreq` take a leading integer the way `sscanf("%d")` does.
* `port=` wins over a port in `host=`, whatever the order.
* only the first `[general]` counts (chan_sip reads it with `ast_variable_browse()`).

Options chan_sip knows but sipqualify does not use are accepted silently; truly unknown
options get one warning per option name and file. Only what makes a peer or the service
unusable is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..model import (
    DEFAULT_MAXMS,
    DEFAULT_QUALIFY_GAP_MS,
    DEFAULT_QUALIFY_PEERS,
    DEFAULT_QUALIFYFREQ_MS,
    Config,
    ConfigMessage,
    GeneralConfig,
    PeerConfig,
)
from .asterisk import AsteriskConfig, Entry, Section, read_asterisk_config
from .values import is_ip, parse_algorithms, parse_nat, parse_port, scan_int, split_hostport

# What we read. Everything in CHAN_SIP_KNOWN is accepted and ignored.
GENERAL_OPTIONS = {
    "udpbindaddr", "bindaddr", "bindport", "qualify", "qualifyfreq", "qualifygap", "qualifypeers", "useragent",
    "fromdomain", "externip", "externaddr", "context", "nat", "transport", "tcpenable", "tlsenable",
    "realm", "minexpiry", "maxexpiry", "defaultexpiry", "authfail_limit", "authfail_window", "authfail_ban",
    "supported_algorithms_uas",
}
PEER_OPTIONS = {
    "type", "host", "port", "transport", "qualify", "qualifyfreq", "defaultuser", "username", "fromuser",
    "fromdomain", "outboundproxy", "nat", "description", "secret", "md5secret", "context", "keepalive",
}
# chan_sip options (general and peer) sipqualify has no use for; common in real files.
CHAN_SIP_KNOWN = frozenset("""
    accept_outofcall_message accountcode acl allow allowexternaldomains allowguest allowoverlap allowsubscribe
    allowtransfer alwaysauthreject amaflags auth auth_message_requests auth_options_requests authfailureevents
    authlimit authtimeout autocreatepeer autodomain autoframing avpf bindaddr buggymwi busylevel call-limit
    callcounter callerid callevents callgroup callingpres callbackextension canreinvite cid_number cid_tag
    checkmwi compactheaders constantssrc contactacl contactdeny contactpermit cos_audio cos_sip cos_text
    cos_video defaultexpiry defaultip deny directmedia directmediaacl directmediadeny directmediapermit
    directrtpsetup disallow disallowed_methods discard_remote_hold_retrieval domain domainsasrealm dtlscafile
    dtlscapath dtlscertfile dtlscipher dtlsenable dtlsfingerprint dtlsprivatekey dtlsrekey dtlssetup
    dtlsverify dtmfmode dumphistory dynamic_exclude_static engine externhost externrefresh externtcpport
    externtlsport faxdetect force_avp forwardloopdetected fullname g726nonstandard hash_dialogs hash_peers
    hash_users hasvoicemail icesupport ignore_requested_pref ignoreregexpire ignoresdpversion insecure jbenable
    jbforce jbimpl jblog jbmaxsize jbresyncthreshold jbtargetextra keepalive language legacy_useroption_parsing
    limitonpeers localnet match_auth_username matchexternaddrlocally maxcallbitrate maxexpiry maxforwards
    maxmsgsize minexpiry mailbox mohinterpret mohsuggest mwi_from mwiexpiry namedcallgroup namedpickupgroup
    notifycid notifyhold notifyringing outofcall_message_context parkinglot path pedantic permit pickupgroup
    preferred_codec_only prematuremedia progressinband promiscredir qualifysmoothing qualifytimer realm
    record_off_feature record_on_feature recordhistory regcontext regexten regextenonqualify register
    registerattempts registertimeout remotesecret rfc2833compensate rpid_immediate rpid_update rtcachefriends
    rtautoclear rtcp_mux rtpholdtimeout rtpkeepalive rtptimeout rtsavepath rtsavesysname rtupdate sdpowner
    sdpsession send_diversion sendrpid session-expires session-minse session-refresher session-timers setvar
    shrinkcallerid sipdebug snom_aoc_enabled srvlookup storesipcause subscribe_network_change_event
    subscribecontext subscribemwi supportpath t1min t38_udptl t38pt_udptl t38pt_usertpsource tcpauthlimit
    tcpauthtimeout tcpbindaddr textsupport timerb timert1 tlsbindaddr tlscafile tlscapath tlscertfile
    tlscipher tlsclientmethod tlsdontverifyserver tlsprivatekey tlsverifyclient tonezone tos tos_audio tos_sip
    tos_text tos_video trustid_outbound trunkname trustrpid udptl unsolicited_mailbox use_q850_reason
    useclientcode usereqphone videosupport vmexten websocket_enabled websocket_write_timeout
    allowsubscribe rtp_engine stunaddr icesupport encryption encryption_taglen ignorecryptolifetime
    ringinuse parkinglot ignoresdpversion sdpowner host_dynamic description_is_fullname
""".split())

GeneralOverride = Callable[[GeneralConfig, "PeerDefaults"], None]


@dataclass(slots=True)
class PeerDefaults:
    """`[general]` values chan_sip copies into every peer that GeneralConfig does not hold."""

    nat: tuple[str, ...] = ("auto_force_rport",)
    transport: str = "udp"


def new_peer(name: str, general: GeneralConfig, defaults: PeerDefaults, source: str) -> PeerConfig:
    """A peer as chan_sip's `set_peer_defaults()` leaves it, before its own options.

    `fromdomain` is not copied: chan_sip keeps `[general] fromdomain` as a per-dialog
    default (`sip show peer` shows the peer's own, empty, value).
    """
    return PeerConfig(
        name=name,
        qualify_ms=general.qualify_ms,
        qualifyfreq_ms=general.qualifyfreq_ms,
        nat=defaults.nat,
        context=general.context,
        transport=defaults.transport,
        source=source,
    )


class SipConfReader:
    """Turns the sections of a sip.conf into a Config."""

    def __init__(self, parsed: AsteriskConfig, source: str) -> None:
        self.parsed = parsed
        self.cfg = Config(messages=list(parsed.messages), source=source)
        self.defaults = PeerDefaults()
        self._unknown_seen: set[tuple[str, str]] = set()
        self._tcp = False
        self._tls = False

    # ---------------------------------------------------------------- messages

    def _msg(self, severity: str, where: Entry | Section, text: str, option: str | None) -> None:
        if option is None and isinstance(where, Entry):
            option = where.key
        self.cfg.messages.append(ConfigMessage(severity, where.file, where.line, text, option))

    def error(self, where: Entry | Section, text: str, option: str | None = None) -> None:
        self._msg("error", where, text, option)

    def warning(self, where: Entry | Section, text: str, option: str | None = None) -> None:
        self._msg("warning", where, text, option)

    def unknown(self, e: Entry) -> None:
        k = e.key.lower()
        if k in CHAN_SIP_KNOWN or k in GENERAL_OPTIONS or k in PEER_OPTIONS:
            return  # a known option in the other kind of section: chan_sip ignores it too
        if (e.file, k) not in self._unknown_seen:
            self._unknown_seen.add((e.file, k))
            self.warning(e, f"unknown option '{e.key}' ignored")

    def _scan(self, e: Entry) -> int | None:
        """sscanf("%d") like chan_sip, warning about any text after the number."""
        scanned = scan_int(e.value)
        if scanned is None:
            return None
        n, rest = scanned
        if rest:
            self.warning(e, f"text after the number ignored: '{e.value}' read as {n}")
        return n

    # ---------------------------------------------------------------- [general]

    def read(self, override: GeneralOverride | None = None) -> Config:
        general = self.parsed.find("general", templates=False)
        if general is not None:
            self._general(general)
        if override is not None:
            override(self.cfg.general, self.defaults)
        seen: dict[str, Section] = {}
        for sec in self.parsed.categories():
            low = sec.name.lower()
            if low == "general" and sec is not general:
                assert general is not None
                self.warning(sec, f"second [general] ignored: chan_sip reads only the first one ({general.where}); "
                                  "write [general](+) to add to it")
                continue
            if low in ("general", "authentication"):
                continue
            self._peer(sec, seen)
        return self.cfg

    def _general(self, sec: Section) -> None:
        g = self.cfg.general
        bind_port: int | None = None
        transport: Entry | None = None
        for e in sec.entries:
            k, v = e.key.lower(), e.value
            if k in ("udpbindaddr", "bindaddr"):
                try:
                    host, port = split_hostport(v, allow_zero_port=True)
                    if not is_ip(host):
                        raise ValueError(f"'{host}' is not an IP address")
                except ValueError as err:
                    self.error(e, f"bad bind address: {err}")
                    continue
                g.udpbindaddr, bind_port = host, port
            elif k == "bindport":
                try:
                    g.bindport = parse_port(v, allow_zero=True)
                except ValueError as err:
                    self.error(e, str(err))
            elif k == "qualify":
                g.qualify_ms = self._qualify(e, DEFAULT_MAXMS, "qualify")
            elif k == "qualifyfreq":
                g.qualifyfreq_ms = self._qualifyfreq(e, DEFAULT_QUALIFYFREQ_MS)
            elif k == "qualifygap":
                n = self._scan(e)
                if n is None:
                    self.warning(e, f"qualifygap should be milliseconds, not '{v}': using {DEFAULT_QUALIFY_GAP_MS}")
                    n = DEFAULT_QUALIFY_GAP_MS
                elif n < 0:
                    self.error(e, f"qualifygap cannot be negative ({n})")
                    continue
                g.qualifygap_ms = n
            elif k == "qualifypeers":
                n = self._scan(e)
                if n is None:
                    self.warning(e, f"qualifypeers should be a number, not '{v}': using {DEFAULT_QUALIFY_PEERS}")
                    n = DEFAULT_QUALIFY_PEERS
                elif n < 0:
                    self.warning(e, f"qualifypeers={n}: every peer is poked at once at start-up (as chan_sip)")
                g.qualifypeers = n
            elif k == "useragent":
                g.useragent = v
            elif k == "fromdomain":
                g.fromdomain = v or None
            elif k in ("externip", "externaddr"):
                g.externip = self._externip(e)
            elif k == "context":
                g.context = v
            elif k == "nat":
                self.defaults.nat = self._nat(e)
            elif k == "transport":
                transport = e
            elif k == "tcpenable":
                self._tcp = g.tcpenable = _true(v)
            elif k == "tlsenable":
                self._tls = _true(v)
            elif k == "realm":
                g.realm = v or g.realm
            elif k == "supported_algorithms_uas":  # not chan_sip: PJSIP's name (sipqualify extension)
                algs, bad = parse_algorithms(v.split(","))
                if bad:
                    self.warning(e, f"unknown digest algorithm(s) {', '.join(bad)} ignored (md5, sha-256)")
                if algs:
                    g.auth_algorithms = algs
                else:
                    self.warning(e, f"no usable digest algorithm in '{v}': using {', '.join(g.auth_algorithms)}")
            elif k in ("minexpiry", "maxexpiry", "defaultexpiry", "authfail_limit", "authfail_window", "authfail_ban"):
                n = self._scan(e)
                if n is None or n < (0 if k == "authfail_ban" else 1):
                    self.warning(e, f"{k} should be a positive number, not '{v}': using {getattr(g, k)}")
                else:
                    setattr(g, k, n)
            else:
                self.unknown(e)
        if bind_port is not None:  # chan_sip: a port in udpbindaddr beats bindport
            g.bindport = bind_port
        if transport is not None:
            self.defaults.transport = self._transport(transport, "udp")

    def _qualify(self, e: Entry, yes_ms: int, what: str) -> int:
        """`qualify=`: yes (`yes_ms`), no (0) or milliseconds; anything else warns and means no."""
        low = e.value.strip().lower()
        q = 0 if low == "no" else yes_ms if low == "yes" else self._scan(e)
        if q is None or q < 0:
            self.warning(e, f"{what} should be 'yes', 'no' or a number of milliseconds, not '{e.value}': using no")
            return 0
        return q

    def _qualifyfreq(self, e: Entry, fallback_ms: int) -> int:
        """`qualifyfreq=` seconds, as ms; not a positive number warns and gives `fallback_ms`."""
        n = self._scan(e)
        if n is None or n <= 0:
            self.warning(e, f"qualifyfreq should be a positive number of seconds, not '{e.value}': using "
                            f"{fallback_ms // 1000}")
            return fallback_ms
        return n * 1000

    def _externip(self, e: Entry) -> str | None:
        if not e.value.strip():
            return None
        try:
            host, port = split_hostport(e.value)
        except ValueError as err:
            self.error(e, f"bad {e.key}: {err}")
            return None
        if port is not None:
            self.warning(e, f"the port in {e.key} is not used: sipqualify advertises its own bind port")
        return host

    def _nat(self, e: Entry) -> tuple[str, ...]:
        if e.value.strip().lower() in ("no", "false", "off", "0", "n", "f"):
            return ("no",)
        modes, problems = parse_nat(e.value.split(","))
        for p in problems:
            self.warning(e, p)
        return modes

    def _transport(self, e: Entry, fallback: str) -> str:
        """First usable word of a chan_sip transport list (matched on 3 letters like chan_sip)."""
        for word in (w.strip().lower() for w in e.value.split(",")):
            if word.startswith("udp"):
                return "udp"
            if word.startswith(("tcp", "tls")):
                proto = word[:3]
                if (proto == "tcp" and self._tcp) or (proto == "tls" and self._tls):
                    return proto
                self.warning(e, f"'{proto}' is not a valid transport when {proto}enable=no (as chan_sip): "
                                f"skipped")
            elif word.startswith("ws"):
                self.warning(e, f"transport '{word[:3].rstrip(',')}' (WebSocket) is not supported by sipqualify: "
                                "using udp")
                return "udp"
            elif word:
                self.warning(e, f"'{word}' is not a valid transport type: skipped")
        return fallback

    # ---------------------------------------------------------------- peers

    def _peer(self, sec: Section, seen: dict[str, Section]) -> None:
        first = sec.first("type")
        if first is None:
            self.warning(sec, f"section [{sec.name}] has no type=: ignored (as chan_sip)", option="type")
            return
        if first.value.strip().lower() not in ("peer", "friend", "user"):
            self.warning(first, f"unknown type '{first.value}' for [{sec.name}]: section ignored (as chan_sip)")
            return
        if not any(e.value.strip().lower() in ("peer", "friend") for e in sec.get_all("type")):
            return  # type=user: not a peer
        prior = seen.get(sec.name.lower())
        if prior is not None:
            self.error(sec, f"peer '{sec.name}' is defined twice: here and at {prior.where}")
            return
        seen[sec.name.lower()] = sec

        g = self.cfg.general
        p = new_peer(sec.name, g, self.defaults, sec.where)
        host_port: int | None = None
        port: int | None = None
        host_entry: Entry | None = None
        for e in sec.entries:
            k, v = e.key.lower(), e.value
            if k == "type":
                continue
            if k == "host":
                host_entry = e
                if v.strip().lower() == "dynamic":
                    p.dynamic, p.host, host_port = True, None, None
                    continue
                try:
                    host, host_port = split_hostport(v)
                except ValueError as err:
                    self.error(e, f"bad host: {err}")
                    continue
                p.dynamic, p.host = False, host
            elif k == "port":
                try:
                    port = parse_port(v)
                except ValueError as err:
                    self.error(e, str(err))
            elif k == "transport":
                p.transport = self._transport(e, self.defaults.transport)
            elif k == "qualify":
                p.qualify_ms = self._qualify(e, g.qualify_ms or DEFAULT_MAXMS, f"qualify of peer '{sec.name}'")
            elif k == "qualifyfreq":
                p.qualifyfreq_ms = self._qualifyfreq(e, g.qualifyfreq_ms)
            elif k in ("defaultuser", "username"):
                p.defaultuser = v or None
            elif k == "fromuser":
                p.fromuser = v or None
            elif k == "fromdomain":
                p.fromdomain = v or None
            elif k == "outboundproxy":
                p.outboundproxy = v or None
            elif k == "nat":
                p.nat = self._nat(e)
            elif k == "description":
                p.description = v
            elif k == "secret":
                p.secret = v or None
            elif k == "md5secret":
                p.md5secret = v or None
            elif k == "keepalive":
                low = v.strip().lower()
                if low in ("no", "0", ""):
                    p.keepalive_s = 0
                elif low == "yes":
                    p.keepalive_s = 60  # DEFAULT_KEEPALIVE_INTERVAL
                else:
                    n = self._scan(e)
                    if n is None or n < 0:
                        self.warning(e, f"keepalive should be yes, no or seconds, not '{v}': off")
                        n = 0
                    p.keepalive_s = n
            elif k == "context":
                p.context = v
            else:
                self.unknown(e)
        p.port = port if port is not None else host_port
        if host_entry is None:
            self.warning(sec, f"peer '{sec.name}' has no host=: it has no address and is never qualified "
                              "(write host=dynamic for phones that register)", option="host")
        self.cfg.peers[p.name] = p


def _true(text: str) -> bool:
    """Asterisk's `ast_true()`."""
    return text.strip().lower() in ("yes", "true", "y", "t", "1", "on")


def load_sip_conf(path: str, *, general_override: GeneralOverride | None = None) -> Config:
    """Read a sip.conf (and its includes). Never raises for content: see `Config.messages`.

    `general_override` runs after `[general]` is read and before peers are built, so values
    it sets are inherited by peers exactly as if they had been in `[general]`.
    """
    return SipConfReader(read_asterisk_config(path), path).read(general_override)
