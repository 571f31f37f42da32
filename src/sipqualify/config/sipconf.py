"""sip.conf -> Config, with chan_sip's rules for the options sipqualify uses.

chan_sip (Asterisk 16-20) reads `[general]` first, then builds one peer per non-template
section other than `[general]` and `[authentication]` (asterisk-qualify.md §1.1):

* a section needs `type=`; the first `type` decides (missing or unknown: warned, skipped),
  and every `type` line adds to it (`friend` = `peer` + `user`). Sections that are only
  `type=user` are not peers and are skipped silently.
* a peer starts from the `[general]` defaults chan_sip copies into it (`qualify`,
  `qualifyfreq`, `keepalive`, `nat`, `context`, `transport`); then its options apply in
  order, last wins.
* `qualify=yes` is `[general] qualify` when that is non-zero, else 2000 ms; `qualify`
  and `qualifyfreq` take a leading integer the way `sscanf("%d")` does.
* `port=` wins over a port in `host=`, whatever the order.
* only the first `[general]` counts (chan_sip reads it with `ast_variable_browse()`).

What each option means and how its value is read is declared once, in options.OPTIONS
(shared with the TOML reader). Options chan_sip knows but sipqualify does not use
(CHAN_SIP_KNOWN) are accepted silently; truly unknown options get one warning per option
name and file. Only what makes a peer or the service unusable is an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..model import PEER_OWN_FIELDS, Config, ConfigMessage, GeneralConfig, PeerConfig
from ..profile import fresh
from .asterisk import AsteriskConfig, Entry, Section, read_asterisk_config
from .options import NOTHING, SIPCONF_OPTIONS, Ctx, Option, assign, current
from .realtime import read_realtime

# chan_sip options (general and peer) sipqualify has no use for; common in real files.
CHAN_SIP_KNOWN = frozenset("""
    accept_outofcall_message accountcode acl allow allowexternaldomains allowguest allowoverlap allowsubscribe
    allowtransfer alwaysauthreject amaflags auth auth_message_requests auth_options_requests authfailureevents
    authlimit authtimeout autocreatepeer autodomain autoframing avpf buggymwi busylevel call-limit
    callbackextension callcounter callerid callevents callgroup callingpres canreinvite checkmwi cid_number
    cid_tag compactheaders constantssrc contactacl contactdeny contactpermit cos_audio cos_sip cos_text
    cos_video defaultip deny description_is_fullname directmedia directmediaacl directmediadeny
    directmediapermit directrtpsetup disallow disallowed_methods discard_remote_hold_retrieval domain
    domainsasrealm dtlscafile dtlscapath dtlscertfile dtlscipher dtlsenable dtlsfingerprint dtlsprivatekey
    dtlsrekey dtlssetup dtlsverify dtmfmode dumphistory dynamic_exclude_static encryption encryption_taglen
    engine externhost externrefresh externtcpport externtlsport faxdetect force_avp forwardloopdetected fullname
    g726nonstandard hash_dialogs hash_peers hash_users hasvoicemail host_dynamic icesupport
    ignore_requested_pref ignorecryptolifetime ignoreregexpire ignoresdpversion insecure jbenable jbforce jbimpl
    jblog jbmaxsize jbresyncthreshold jbtargetextra language legacy_useroption_parsing limitonpeers localnet
    mailbox match_auth_username matchexternaddrlocally maxcallbitrate maxforwards maxmsgsize mohinterpret
    mohsuggest mwi_from mwiexpiry namedcallgroup namedpickupgroup notifycid notifyhold notifyringing
    outofcall_message_context parkinglot path pedantic permit pickupgroup preferred_codec_only prematuremedia
    progressinband promiscredir qualifysmoothing qualifytimer record_off_feature record_on_feature recordhistory
    regcontext regexten regextenonqualify register registerattempts registertimeout remotesecret
    rfc2833compensate ringinuse rpid_immediate rpid_update rtautoclear rtcachefriends rtcp_mux rtp_engine
    rtpholdtimeout rtpkeepalive rtptimeout rtsavepath rtsavesysname rtupdate sdpowner sdpsession send_diversion
    sendrpid session-expires session-minse session-refresher session-timers setvar shrinkcallerid sipdebug
    snom_aoc_enabled storesipcause stunaddr subscribe_network_change_event subscribecontext
    subscribemwi supportpath t1min t38_udptl t38pt_udptl t38pt_usertpsource tcpauthlimit tcpauthtimeout
    tcpbindaddr textsupport timerb timert1
    tlsverifyclient tonezone tos tos_audio tos_sip tos_text tos_video
    trunkname trustid_outbound trustrpid udptl unsolicited_mailbox use_q850_reason useclientcode usereqphone
    videosupport vmexten websocket_enabled websocket_write_timeout
""".split())

#: names sip.conf knows in some section: elsewhere they are ignored silently, as chan_sip does
SIPCONF_KNOWN = CHAN_SIP_KNOWN | {n for opts in SIPCONF_OPTIONS.values() for n in opts}

GeneralOverride = Callable[[GeneralConfig, "PeerDefaults"], None]


@dataclass(slots=True)
class PeerDefaults:
    """`[general]` values peers depend on that GeneralConfig does not hold."""

    nat: tuple[str, ...] = ("auto_force_rport",)
    transport: str = "udp"
    transport_named: bool = False  # [general] transport= written
    keepalive_s: int = 0  # chan_sip default_keepalive: copied into every peer (set_peer_defaults)
    # verdict policy keys (qualify/verdict.py), copied into every peer like keepalive
    reply_up: str = ""
    reply_degraded: str = ""
    down_after: int = 1
    up_after: int = 1
    retry_interval_s: int = 0
    latency_delta_ms: int = 0
    qualify_targets: str = "first"  # sipqualify's: [general] qualify_targets, copied into every peer
    flap_penalty: int = 1000
    flap_suppress: int = 0
    flap_reuse: int = 750
    flap_half_life_s: int = 900
    # probe shape (sip/options.py), copied into every peer like keepalive
    qualify_to_user: str | None = None
    qualify_ruri_user: str | None = None
    qualify_max_forwards: int = 70
    qualify_headers_extra: tuple[str, ...] = ()
    qualify_method: str = "OPTIONS"
    qualify_source: tuple[str, int] | None = None


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
        transport_named=defaults.transport_named,
        keepalive_s=defaults.keepalive_s,
        reply_up=defaults.reply_up,
        reply_degraded=defaults.reply_degraded,
        down_after=defaults.down_after,
        up_after=defaults.up_after,
        retry_interval_s=defaults.retry_interval_s,
        latency_delta_ms=defaults.latency_delta_ms,
        qualify_targets=defaults.qualify_targets,
        flap_penalty=defaults.flap_penalty,
        flap_suppress=defaults.flap_suppress,
        flap_reuse=defaults.flap_reuse,
        flap_half_life_s=defaults.flap_half_life_s,
        qualify_to_user=defaults.qualify_to_user,
        qualify_ruri_user=defaults.qualify_ruri_user,
        qualify_max_forwards=defaults.qualify_max_forwards,
        qualify_headers_extra=defaults.qualify_headers_extra,
        qualify_method=defaults.qualify_method,
        qualify_source=defaults.qualify_source,
        source=source,
    )


class SipConfReader:
    """Turns the sections of a sip.conf into a Config, option by option through options.OPTIONS."""

    def __init__(self, parsed: AsteriskConfig, source: str) -> None:
        self.parsed = parsed
        self.cfg = Config(messages=list(parsed.messages), source=source)
        self.defaults = PeerDefaults()
        self._unknown_seen: set[tuple[str, str]] = set()
        self._repeated: set[str] = set()  # Option.repeat options seen in the section being read
        self.proto = new_peer("", self.cfg.general, self.defaults, "")
        self._kept: dict[tuple[type, object], object] = {}  # see _keep (dropped with the reader)

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
        if k in SIPCONF_KNOWN:
            return  # a known option in the other kind of section, or one we have no use for: chan_sip ignores it too
        if (e.file, k) not in self._unknown_seen:
            self._unknown_seen.add((e.file, k))
            self.warning(e, f"unknown option '{e.key}' ignored")

    def _apply(self, opt: Option, e: Entry, objs: dict[str, Any], base: dict[str, Any], ctx: Ctx) -> None:
        ctx.fallback = current(base, opt.target)
        value = opt.kind.conf(self, e, e.key, e.value, ctx)
        if value is NOTHING:
            return
        if opt.repeat:  # a line adds to those before it in the section; the first replaces the inherited
            if value and opt.name in self._repeated:
                value = current(objs, opt.target) + value
            self._repeated.add(opt.name)
        assign(objs, opt.target, value)

    # ---------------------------------------------------------------- [general]

    def read(self, override: GeneralOverride | None = None) -> Config:
        general = self.parsed.find("general", templates=False)
        if general is not None:
            self._general(general)
        if override is not None:
            override(self.cfg.general, self.defaults)
        seen: dict[str, Section] = {}
        proto = self.proto = new_peer("", self.cfg.general, self.defaults, "")  # what every peer starts from
        self._keep(proto, None)
        for sec in self.parsed.categories():
            low = sec.name.lower()
            if low == "general" and sec is not general:
                assert general is not None
                self.warning(sec, f"second [general] ignored: chan_sip reads only the first one ({general.where}); "
                                  "write [general](+) to add to it")
                continue
            if low in ("general", "authentication"):
                continue
            self._peer(sec, seen, proto)
        return self.cfg

    def _general(self, sec: Section) -> None:
        g = self.cfg.general
        self._repeated.clear()
        local: dict[str, Any] = {}
        objs = {"general": g, "defaults": self.defaults, "local": local}
        base = {"general": GeneralConfig(), "defaults": PeerDefaults()}  # chan_sip falls back to its defaults
        ctx = Ctx()
        options = SIPCONF_OPTIONS["general"]
        late: dict[str, tuple[Option, Entry]] = {}
        for e in sec.entries:
            opt = options.get(e.key.lower())
            if opt is None:
                self.unknown(e)
            elif opt.last:
                late[opt.name] = (opt, e)  # the last one counts
            else:
                self._apply(opt, e, objs, base, ctx)
        ctx.tcp, ctx.tls = g.tcpenable, g.tlsenable
        for opt, e in late.values():
            self._apply(opt, e, objs, base, ctx)
            self.defaults.transport_named |= opt.name == "transport"
        if "bindaddr" in local:
            g.udpbindaddr, port = local["bindaddr"]
            if port is not None:  # chan_sip: a port in udpbindaddr beats bindport
                g.bindport = port

    # ---------------------------------------------------------------- peers

    def _peer(self, sec: Section, seen: dict[str, Section], proto: PeerConfig) -> None:
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

        p = replace(proto, name=sec.name, source=sec.where)
        self._repeated.clear()
        local: dict[str, Any] = {}
        objs = {"peer": p, "local": local}
        base = {"peer": proto}  # a junk value falls back to what the peer inherits (chan_sip)
        ctx = Ctx(general=self.cfg.general, peer=sec.name, tcp=self.cfg.general.tcpenable,
                  tls=self.cfg.general.tlsenable)
        options = SIPCONF_OPTIONS["peer"]
        has_host = False
        for e in sec.entries:
            opt = options.get(e.key.lower())
            if opt is None:
                self.unknown(e)
            elif opt.name == "type":
                continue  # read above
            else:
                has_host |= opt.name == "host"
                p.transport_named |= opt.name == "transport"
                self._apply(opt, e, objs, base, ctx)
        host_port: int | None = None
        if "host" in local:
            p.host, host_port = local["host"]
            p.dynamic = p.host is None
        port = local.get("port")
        p.port = port if port is not None else host_port
        if not has_host:
            self.warning(sec, f"peer '{sec.name}' has no host=: it has no address and is never qualified "
                              "(write host=dynamic for phones that register)", option="host")
        if p.qualify_auth and not (p.secret or p.md5secret):
            self.warning(sec, f"peer '{sec.name}' has qualify_auth=yes but no secret or md5secret: "
                              "a challenge to its OPTIONS counts as an answer", option="qualify_auth")
        self._keep(p, proto)
        self.cfg.peers[p.name] = p

    def _keep(self, p: PeerConfig, proto: PeerConfig | None) -> None:
        """What the peer keeps of its section, in objects of its own or shared with the other peers.

        Its values were read out of the section's strings, which live among the reader's
        temporaries (sections, entries) until the whole file is read; one of them kept by a
        peer would keep its whole pymalloc arena (256 KiB-1 MiB) from being given back. So every
        string, int and tuple a peer holds beyond what it inherits is either the equal value an
        earlier peer already holds, or a new copy made now, among the peers (issue 15: daemon
        memory per peer; `bench/bench_config_memory.py`). `proto` None: every value (the
        prototype peer itself, whose `[general]` values every peer shares). Only the fields a
        peer keeps itself are looked at: the others are in a profile shared by equal peers,
        which holds copies of its own (model.PEER_OWN_FIELDS, profile.py).
        """
        for f in _PEER_FIELDS:
            v = getattr(p, f)
            if type(v) in _KEPT_TYPES and (proto is None or v is not getattr(proto, f)):
                setattr(p, f, self._kept_value(v))

    def _kept_value(self, v: Any) -> Any:
        key = (type(v), v)  # 1, 1.0 and True are equal: one entry per type
        try:
            got = self._kept.get(key)
        except TypeError:  # a tuple of unhashable values: kept as it is
            return v
        if got is None:
            if type(v) is str:
                got = fresh(v)  # a new object
            elif type(v) is tuple:
                got = tuple(self._kept_value(x) if type(x) in _KEPT_TYPES else x for x in v)
            else:
                got = v  # ints are made by the option readers, already among the peers
            self._kept[key] = got
        return got


_PEER_FIELDS = PEER_OWN_FIELDS
_KEPT_TYPES = (str, int, tuple)


def load_sip_conf(path: str, *, general_override: GeneralOverride | None = None) -> Config:
    """Read a sip.conf (and its includes). Never raises for content: see `Config.messages`.

    `general_override` runs after `[general]` is read and before peers are built, so values
    it sets are inherited by peers exactly as if they had been in `[general]`. An
    extconfig.conf next to it is read too (config/realtime.py): realtime rows start from the
    same defaults as the file's peers.
    """
    reader = SipConfReader(read_asterisk_config(path), path)
    cfg = reader.read(general_override)
    cfg.realtime = read_realtime(os.path.dirname(os.path.abspath(path)), reader.proto, cfg.messages)
    return cfg
