"""An AMI-compatible manager port (Asterisk Manager Interface), so existing tooling works.

Wire format and wording follow Asterisk 20's `main/manager.c` and the transcripts in
asterisk-observed.md §8: banner `Asterisk Call Manager/9.0.0`, `Key: Value` lines ending in
CRLF, a blank line ending each block, actions dispatched on the blank line, lines longer
than 1024 bytes refused. Users come from an Asterisk `manager.conf` (or the native TOML):
`secret`, `read`/`write` classes, `deny`/`permit` ACLs evaluated in order (the last match
wins). A wrong secret and an unknown user get the same answer after the same 1 s delay.
A slow client never stalls the daemon: each has a bounded output buffer; past it, the
client is disconnected with a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..addr import ip_literal, is_loopback
from ..compat import (
    escape_controls,
    format_sip_show_peer,
    format_sip_show_peers,
    fromdomain_parts,
    only_line_ends,
    sippeer_item,
)
from ..model import ConfigError, ConfigMessage
from ..qualify.events import SecurityEvent, StateChanged
from ..qualify.order import container_order
from ..qualify.state import LAGGED, UNREACHABLE, peer_status_word
from ..ratelog import RateLog
from ..views import PeerView
from .ami_actions import DEVICE_STATE, core_settings, core_status, device_state, event_mask, list_commands, mask_classes

if TYPE_CHECKING:
    from ..model import ServiceConfig
    from ..readmodel import ReadModel
    from ..store.base import TransitionRecord

log = logging.getLogger("sipqualify.ami")

MAX_LINE = 1024
MAX_HELD = 1 << 20  # input held while an action reads the shared store ([cluster] fleet view)
CLASSES = ("system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf", "reporting", "cdr",
           "dialplan", "originate", "agi", "cc", "aoc", "test", "security", "message")


@dataclass(slots=True)
class AmiUser:
    name: str
    secret: str
    read: frozenset[str]
    write: frozenset[str]
    acl: list[tuple[bool, ipaddress.IPv4Network | ipaddress.IPv6Network]] = field(default_factory=list)

    def allowed_from(self, host: str) -> bool:
        """acl.c ast_apply_ha: every rule in order, the last that matches wins, default permit.
        An IPv4 rule applies to an IPv4 address and to an IPv4-mapped IPv6 one (what a client
        of a dual-stack `::` listener looks like), an IPv6 rule only to a real IPv6 address."""
        addr = ip_literal(host)
        if addr is None:
            return False
        v4 = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else addr
        ok = True
        for permit, net in self.acl:
            a = v4 if net.version == 4 else (addr if v4 is None else None)
            if a is not None and a in net:
                ok = permit
        return ok


@dataclass(slots=True)
class AmiConfig:
    enabled: bool = False
    bindaddr: str = "127.0.0.1"
    port: int = 5038
    banner: str = "Asterisk Call Manager/9.0.0"
    peerstatus_time: bool = True  # restore PeerStatus `Time:` for Reachable/Lagged (Asterisk 12+ dropped it)
    authtimeout: float = 30.0
    authlimit: int = 50
    # Asterisk has only the global authlimit, which one address can fill with idle connections
    # and so lock the real manager user out: each source (an IPv4 address, an IPv6 /64) gets
    # at most this many of the unauthenticated slots. 0: no per-source limit.
    authlimit_per_ip: int = 5
    max_queue_bytes: int = 1_048_576
    users: dict[str, AmiUser] = field(default_factory=dict)
    messages: list[ConfigMessage] = field(default_factory=list)


def _classes(text: str) -> frozenset[str]:
    parts = {p.strip().lower() for p in text.split(",") if p.strip()}
    if "all" in parts:
        return frozenset(CLASSES) | {"all"}
    return frozenset(parts)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    addr, _, mask = text.partition("/")
    if mask and "." in mask:  # 127.0.0.1/255.255.255.255 (Asterisk's form)
        return ipaddress.ip_network(f"{addr}/{mask}", strict=False)
    return ipaddress.ip_network(text, strict=False)


def user_from_options(name: str, opts: dict[str, object]) -> AmiUser:
    """A manager user from the native TOML ([ami.users.NAME] secret/read/write/permit/deny)."""
    def listify(v: object) -> list[str]:
        return [str(x) for x in v] if isinstance(v, list) else ([str(v)] if v else [])

    acl: list[tuple[bool, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    for key in ("deny", "permit"):  # TOML has no order between keys: deny first, then permit
        acl += [(key == "permit", _network(x)) for x in listify(opts.get(key))]
    return AmiUser(name, str(opts.get("secret", "")), _classes(",".join(listify(opts.get("read", "all")))),
                   _classes(",".join(listify(opts.get("write", "all")))), acl)


def load_manager_conf(path: str) -> AmiConfig:
    """Read an Asterisk manager.conf ([general] enabled/port/bindaddr + one section per user).

    sipqualify's own [general] options: `authlimit_per_ip`, and `peerstatus_time` (yes/no:
    `Time:` in Reachable/Lagged PeerStatus; `no` gives Asterisk 12+'s blocks byte for byte)."""
    from ..config import read_asterisk_config as parse_file

    parsed = parse_file(path)
    cfg = AmiConfig(messages=list(parsed.messages))
    for sec in parsed.sections:
        if sec.is_template:
            continue
        if sec.name.lower() == "general":
            for e in sec.entries:
                k, v = e.key.lower(), e.value.strip()
                if k == "enabled":
                    cfg.enabled = v.lower() in ("yes", "true", "on", "1")
                elif k == "port":
                    if v.isdigit() and 0 < int(v) < 65536:
                        cfg.port = int(v)
                    else:
                        cfg.messages.append(ConfigMessage("error", e.file, e.line, f"bad port '{v}'", "port"))
                elif k == "bindaddr":
                    cfg.bindaddr = v
                elif k == "authtimeout" and v.isdigit():
                    cfg.authtimeout = float(v)
                elif k == "authlimit" and v.isdigit():
                    cfg.authlimit = int(v)
                elif k == "authlimit_per_ip":
                    if v.isdigit():
                        cfg.authlimit_per_ip = int(v)
                    else:
                        cfg.messages.append(ConfigMessage("error", e.file, e.line, f"bad authlimit_per_ip '{v}': "
                                                          "a number of connections (0: no limit)",
                                                          "authlimit_per_ip"))
                elif k == "peerstatus_time":
                    if v.lower() in ("yes", "true", "on", "1", "no", "false", "off", "0"):
                        cfg.peerstatus_time = v.lower() in ("yes", "true", "on", "1")
                    else:
                        cfg.messages.append(ConfigMessage("error", e.file, e.line, f"bad peerstatus_time '{v}': "
                                                          "yes or no", "peerstatus_time"))
            continue
        user = AmiUser(sec.name, "", frozenset(), frozenset())
        for e in sec.entries:
            k, v = e.key.lower(), e.value.strip()
            if k == "secret":
                user.secret = v
            elif k == "read":
                user.read = _classes(v)
            elif k == "write":
                user.write = _classes(v)
            elif k in ("permit", "deny"):
                try:
                    user.acl.append((k == "permit", _network(v)))
                except ValueError:
                    cfg.messages.append(ConfigMessage("error", e.file, e.line, f"bad {k} '{v}'", k))
        if not user.secret:
            cfg.messages.append(ConfigMessage("warning", sec.file, sec.line, f"manager user '{sec.name}' has no "
                                              "secret: it can never log in", "secret"))
        cfg.users[user.name] = user
    return cfg


def block(*pairs: tuple[str, object]) -> str:
    """One AMI message. Every message goes through here, so this is where values a phone or a
    client chose (User-Agent, Contact, ActionID, peer names...) lose their CR, LF and other
    control characters: a bare LF would otherwise start a header or a whole message of its own."""
    text = "".join(f"{k}: {v}\r\n" for k, v in pairs)
    if only_line_ends(text, len(pairs)):  # the usual case, in one pass over the message
        return text + "\r\n"
    return "".join(f"{escape_controls(k)}: {escape_controls(str(v))}\r\n" for k, v in pairs) + "\r\n"


def _view_name(v: PeerView) -> str:
    return v.name


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def _YN(b: bool) -> str:  # noqa: N802 - the SIPshowpeer Y/N form
    return "Y" if b else "N"


def peer_entry(v: PeerView, action_id: str | None) -> str:
    """One `Event: PeerEntry` of SIPpeers, field order as chan_sip (asterisk-qualify.md §3.3)."""
    aid = [("ActionID", action_id)] if action_id is not None else []
    return block(
        ("Event", "PeerEntry"), *aid, ("Channeltype", "SIP"), ("ObjectName", v.name), ("ChanObjectType", "peer"),
        ("IPaddress", v.addr_ip or "-none-"), ("IPport", v.addr_port if v.addr_ip else 0),
        ("Dynamic", _yn(v.dynamic)), ("AutoForcerport", _yn("auto_force_rport" in v.nat)),
        ("Forcerport", _yn("force_rport" in v.nat)), ("AutoComedia", _yn("auto_comedia" in v.nat)),
        ("Comedia", _yn("comedia" in v.nat)), ("VideoSupport", "no"), ("TextSupport", "no"),
        ("ACL", _yn(v.acl)), ("Status", v.status), ("RealtimeDevice", "no"), ("Description", v.description),
        ("Accountcode", ""),
    )


def _nat_flag(v: PeerView, mode: str) -> str:
    """SIPshowpeer's Y / N / A (auto, active) / a (auto, inactive) for force_rport or comedia."""
    if mode in v.nat:
        return "Y"
    if f"auto_{mode}" in v.nat:
        return "A" if v.nat_detected else "a"
    return "N"


def show_peer(v: PeerView, action_id: str | None) -> str:
    """`Action: SIPshowpeer`, keys in chan_sip's order (asterisk-observed.md §8.1); SIP-FromUser,
    SIP-FromDomain and Sip-FromDomain-Port (sic) only when set, as chan_sip."""
    aid = [("ActionID", action_id)] if action_id is not None else []
    from_pairs: list[tuple[str, object]] = [("SIP-FromUser", v.fromuser)] if v.fromuser else []
    fdom, fport = fromdomain_parts(v.fromdomain)
    if fdom:
        from_pairs += [("SIP-FromDomain", fdom), ("Sip-FromDomain-Port", fport)]
    return block(
        ("Response", "Success"), *aid, ("Channeltype", "SIP"), ("ObjectName", v.name), ("ChanObjectType", "peer"),
        ("SecretExist", _YN(v.secret_set)), ("RemoteSecretExist", "N"), ("MD5SecretExist", _YN(v.md5secret_set)),
        ("Context", v.context), ("Language", ""), ("ToneZone", "<Not set>"), ("AMAflags", "Unknown"),
        ("CID-CallingPres", "Presentation Allowed, Not Screened"), *from_pairs, ("Callgroup", ""), ("Pickupgroup", ""),
        ("Named Callgroup", ""), ("Named Pickupgroup", ""), ("MOHSuggest", ""), ("VoiceMailbox", ""),
        ("TransferMode", "open"), ("LastMsgsSent", 0), ("Maxforwards", 0), ("Call-limit", 0), ("Busy-level", 0),
        ("MaxCallBR", "384 kbps"), ("Dynamic", _YN(v.dynamic)), ("Callerid", '"" <>'),
        ("RegExpire", f"{v.expire} seconds"), ("SIP-AuthInsecure", "no"),
        ("SIP-Forcerport", _nat_flag(v, "force_rport")), ("SIP-Comedia", _nat_flag(v, "comedia")),
        ("ACL", _YN(v.acl)), ("SIP-CanReinvite", "Y"), ("SIP-DirectMedia", "Y"),
        ("SIP-PromiscRedir", "N"), ("SIP-UserPhone", "N"), ("SIP-VideoSupport", "N"), ("SIP-TextSupport", "N"),
        ("SIP-T.38Support", "N"), ("SIP-T.38EC", "Unknown"), ("SIP-T.38MaxDtgrm", 4294967295),
        ("SIP-Sess-Timers", "Accept"), ("SIP-Sess-Refresh", "uas"), ("SIP-Sess-Expires", 1800),
        ("SIP-Sess-Min", 90), ("SIP-RTP-Engine", "asterisk"), ("SIP-Encryption", "N"), ("SIP-RTCP-Mux", "N"),
        ("SIP-DTMFmode", "rfc2833"), ("ToHost", "" if v.dynamic else v.host), ("Address-IP", v.addr_ip or "(null)"),
        ("Address-Port", v.addr_port if v.addr_ip else 0), ("Default-addr-IP", "(null)"), ("Default-addr-port", 0),
        ("Default-Username", v.defaultuser or ""), ("Codecs", "(ulaw)"), ("Status", v.status),
        ("SIP-Useragent", v.useragent), ("Reg-Contact", v.regcontact), ("QualifyFreq", f"{v.qualifyfreq_ms} ms"),
        ("Parkinglot", ""), ("SIP-Use-Reason-Header", "N"), ("Description", v.description),
    )


def _list_complete(event: str, aid: str | None, n: int) -> str:
    tail: list[tuple[str, object]] = [("Event", event)]
    if aid is not None:
        tail.append(("ActionID", aid))
    return block(*tail, ("EventList", "Complete"), ("ListItems", n))


def _listack(aid: str | None, message: str) -> str:
    head: list[tuple[str, object]] = [("Response", "Success")]
    if aid is not None:
        head.append(("ActionID", aid))
    return block(*head, ("EventList", "start"), ("Message", message))


def sippeers_list(views: list[PeerView], aid: str | None) -> str:
    """The whole answer to `Action: SIPpeers` (views already in the order to send)."""
    return (_listack(aid, "Peer status list will follow") + "".join(peer_entry(v, aid) for v in views)
            + _list_complete("PeerlistComplete", aid, len(views)))


def peerstatus_list(views: list[PeerView], aid: str | None) -> str:
    """The whole answer to `Action: SIPpeerstatus`: hand-built events, `Privilege: System`,
    `Time` only for Reachable/Lagged, ActionID last (chan_sip S20:21013-21093)."""
    out = [_listack(aid, "Peer status will follow")]
    for v in views:
        pairs: list[tuple[str, object]] = [("Event", "PeerStatus"), ("Privilege", "System"), ("ChannelType", "SIP"),
                                           ("Peer", f"SIP/{v.name}"), ("PeerStatus", peer_status_word(v.state))]
        if v.state in ("OK", "LAGGED"):
            pairs.append(("Time", v.lastms))
        if aid is not None:
            pairs.append(("ActionID", aid))
        out.append(block(*pairs))
    out.append(_list_complete("SIPpeerstatusComplete", aid, len(views)))
    return "".join(out)


def peerstatus_event(ev: StateChanged, with_time: bool) -> str:
    """Unsolicited PeerStatus as Asterisk 20 sends it (no Time for Reachable/Lagged unless
    restored; `Time: -1` for Unreachable), asterisk-observed.md §8.3."""
    pairs: list[tuple[str, object]] = [("Event", "PeerStatus"), ("Privilege", "system,all"), ("ChannelType", "SIP"),
                                       ("Peer", f"SIP/{ev.peer}"), ("PeerStatus", ev.peer_status)]
    if ev.new == "UNREACHABLE":
        pairs.append(("Time", -1))
    elif with_time:
        pairs.append(("Time", ev.lastms))
    return block(*pairs)


def device_state_event(peer: str, state: str) -> str:
    """DeviceStateChange as Asterisk 20 sends it for a chan_sip peer (asterisk-differences.md 1)."""
    return block(("Event", "DeviceStateChange"), ("Privilege", "call,all"), ("Device", f"SIP/{peer}"),
                 ("State", state))


def security_tv(t: float | None) -> str:
    """A security event's EventTV / SessionTV (`%FT%T.%q%z`, local time); none is the epoch
    (Asterisk formats its zeroed sessionstart_tv: `1970-01-01T00:00:00.000+0000` in UTC)."""
    d = datetime.fromtimestamp(t or 0.0).astimezone()
    return f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond // 1000:03d}{d:%z}"


def security_addr(addr: tuple[str, int], transport: str = "tcp") -> str:
    """main/json.c ast_json_ipaddr: `IPV4/UDP/127.0.0.1/5060`; an IPv6 address unbracketed, an
    IPv4-mapped one as the IPv4 address (netsock2.c stringifies the mapped address)."""
    ip = addr[0]
    a = ip_literal(ip)
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        ip = str(a.ipv4_mapped)
    return f"{'IPV6' if ':' in ip else 'IPV4'}/{transport.upper()}/{ip}/{addr[1]}"


#: main/security_events.c `sec_events`: severity, EventVersion, and the IEs after RemoteAddress
#: in the order the AMI text lists them (required ones, then optional ones; `Module` is set by
#: neither manager.c nor chan_sip). An IE the reporter leaves NULL is left out: chan_sip sets no
#: SessionTV, manager.c sets no ACLName.
SECURITY_EVENTS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "FailedACL": ("Error", 1, ("ACLName", "SessionTV")),
    "InvalidAccountID": ("Error", 1, ("SessionTV",)),
    "SuccessfulAuth": ("Informational", 1, ("UsingPassword", "SessionTV")),
    "ChallengeResponseFailed": ("Error", 1, ("Challenge", "Response", "ExpectedResponse", "SessionTV")),
    "InvalidPassword": ("Error", 2, ("SessionTV", "Challenge", "ReceivedChallenge", "ReceivedHash")),
    "ChallengeSent": ("Informational", 1, ("Challenge", "SessionTV")),
}


def security_event(event: str, service: str, account: str, session_id: str, local: tuple[str, int],
                   remote: tuple[str, int], fields: dict[str, object], *, transport: str = "tcp",
                   now: float | None = None) -> str:
    """An AMI security event as main/security_events.c's security_event_to_ami_blob writes it:
    EventTV, Severity, Service, EventVersion, AccountID, SessionID, LocalAddress, RemoteAddress,
    then the event's own `fields` in its table order (SECURITY_EVENTS). `SessionTV` in `fields`
    is a time (None: the epoch); absent, there is no SessionTV line (chan_sip's events)."""
    severity, version, order = SECURITY_EVENTS[event]
    own: list[tuple[str, object]] = []
    for k in order:
        if k in fields:
            v = fields[k]
            own.append((k, security_tv(v if isinstance(v, float) else None) if k == "SessionTV" else v))
    return block(("Event", event), ("Privilege", "security,all"),
                 ("EventTV", security_tv(time.time() if now is None else now)), ("Severity", severity),
                 ("Service", service), ("EventVersion", version), ("AccountID", account), ("SessionID", session_id),
                 ("LocalAddress", security_addr(local, transport)), ("RemoteAddress", security_addr(remote, transport)),
                 *own)


def qualify_done_event(peer: str, action_id: str | None) -> str:
    pairs: list[tuple[str, object]] = [("Event", "SIPQualifyPeerDone"), ("Privilege", "call,all"), ("Peer", peer)]
    if action_id is not None:
        pairs.append(("ActionID", action_id))
    return block(*pairs)


ACTIONS: dict[str, tuple[str, str]] = {  # name -> (write classes, any one of them will do; synopsis)
    "Login": ("", "Login Manager."),
    "Challenge": ("", "Generate Challenge for MD5 Auth."),
    "Logoff": ("", "Logoff Manager."),
    "Ping": ("", "Keepalive command."),
    "Events": ("", "Control Event Flow."),
    "ListCommands": ("", "List available manager commands."),
    "SIPpeers": ("system,reporting", "List SIP peers (text format)."),
    "SIPshowpeer": ("system,reporting", "show SIP peer (text format)."),
    "SIPpeerstatus": ("system", "Show the status of one or all of the sip peers."),
    "SIPqualifypeer": ("system,reporting", "Qualify SIP peers."),
    "Command": ("command", "Execute Asterisk CLI Command."),
    "Getvar": ("call,reporting", "Gets a channel variable or function value."),
    "CoreSettings": ("system,reporting", "Show PBX core settings (version etc)."),
    "CoreStatus": ("system,reporting", "Show PBX core status variables."),
    "DeviceStateList": ("call,reporting", "List the current known device states."),
    "ExtensionStateList": ("call,reporting", "List the current known extension states."),
}


def source_key(host: str) -> str:
    """What one client controls: an IPv4 address, or an IPv6 /64 (one host usually holds a whole
    /64, so counting single IPv6 addresses would be no limit at all)."""
    addr = ip_literal(host)
    if addr is None:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


_SESSION_IDS = itertools.count(1)


class AmiSession(asyncio.Protocol):
    def __init__(self, server: AmiServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = ("", 0)
        self.local = ("", 0)
        # Asterisk prints the session's address (`0x%p`); an address is reused once a session is
        # freed, so two sessions of one log could share an id: a counter, shaped like one
        self.session_id = f"0x{0x7f0000000000 + next(_SESSION_IDS) * 0x10:x}"
        self.session_tv: float | None = None  # set at login, as Asterisk's sessionstart_tv
        self.source = ""
        self.buf = b""
        self.headers: list[tuple[str, str]] = []
        self.user: AmiUser | None = None
        self.events_on = True
        self.mask: frozenset[str] | None = None  # `Events: system,call`: only these classes
        self.challenge: str | None = None
        self.closed = False
        self.busy = False  # a login failure is being delayed: ignore further input
        self.waiting = False  # an action reads the shared store: further input waits, answers stay in order
        self._auth_timer: asyncio.TimerHandle | None = None

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        local = transport.get_extra_info("sockname") or ("", 0)
        self.local = (str(local[0]), int(local[1]))
        self.source = source_key(self.peer[0])
        srv = self.server
        srv.counters["connections"] += 1
        per_ip = srv.config.authlimit_per_ip
        if per_ip and srv.unauthenticated(self.source) >= per_ip:
            srv.counters["refused_authlimit_per_ip"] += 1
            srv.ratelog(time.monotonic(), "AMI: refusing %s:%d, %d unauthenticated sessions from %s (authlimit_per_ip)",
                        *self.peer, per_ip, self.source, key="authlimit_per_ip")
            transport.close()
            return
        if srv.unauthenticated() >= srv.config.authlimit:
            srv.counters["refused_authlimit"] += 1
            srv.ratelog(time.monotonic(), "AMI: refusing %s:%d, %d unauthenticated sessions (authlimit)",
                        *self.peer, srv.config.authlimit, key="authlimit")
            transport.close()
            return
        srv.sessions.add(self)
        # from the connection, not from the last byte: trickling a Login that never ends
        # holds a slot no longer than sending nothing
        self._auth_timer = asyncio.get_running_loop().call_later(srv.config.authtimeout, self._auth_expired)
        self.write(escape_controls(srv.config.banner) + "\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.sessions.discard(self)
        if self._auth_timer is not None:
            self._auth_timer.cancel()

    def wants(self, cls: str) -> bool:
        """Unsolicited events of class `cls` go to this session (logged in, read class, mask)."""
        return (self.user is not None and self.events_on and cls in self.user.read
                and (self.mask is None or cls in self.mask))

    def _auth_expired(self) -> None:
        if self.user is None and not self.closed:
            self.server.counters["auth_timeouts"] += 1
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def write(self, text: str) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        if t.get_write_buffer_size() > self.server.config.max_queue_bytes:
            self.server.counters["slow_disconnects"] += 1
            log.warning("AMI: %s:%d reads too slowly (%d bytes queued): disconnected", *self.peer,
                        t.get_write_buffer_size())
            t.abort()
            self.closed = True
            return
        t.write(text.encode("utf-8", "replace"))

    # -------------------------------------------------------------- input

    def data_received(self, data: bytes) -> None:
        if self.busy or self.closed:
            return
        self.buf += data
        if self.waiting and len(self.buf) > MAX_HELD:
            self.server.counters["oversize_lines"] += 1
            log.warning("AMI: %s:%d sent over %d bytes while an action was answered: disconnected", *self.peer,
                        MAX_HELD)
            self.close()
            return
        while not self.closed and not self.busy and not self.waiting:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > MAX_LINE:
                    self.server.counters["oversize_lines"] += 1
                    log.warning("AMI: %s:%d sent a line over %d bytes: disconnected", *self.peer, MAX_LINE)
                    self.close()
                return
            line = self.buf[:nl]
            self.buf = self.buf[nl + 1:]
            if len(line) > MAX_LINE:
                self.server.counters["oversize_lines"] += 1
                log.warning("AMI: %s:%d sent a line over %d bytes: disconnected", *self.peer, MAX_LINE)
                self.close()
                return
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if text == "":
                if self.headers:
                    hdrs, self.headers = self.headers, []
                    self.dispatch(hdrs)
                continue
            key, colon, value = text.partition(":")
            if not colon:
                continue  # Asterisk ignores lines that are not "Key: Value"
            if len(self.headers) < 128:
                self.headers.append((key.strip(), value.strip()))

    # -------------------------------------------------------------- actions

    def dispatch(self, hdrs: list[tuple[str, str]]) -> None:
        """handle(), but a bug an action trips over costs that action, not the connection: it is
        answered, counted and logged (no traceback for what a client sent)."""
        try:
            self.handle(hdrs)
        except Exception as e:  # noqa: BLE001 - the last line of defence of one session
            self.server.counters["action_errors"] += 1
            self.server.ratelog(time.monotonic(), "AMI: %s:%d: action failed: %s: %s", *self.peer,
                                type(e).__name__, e, key="action_error")
            log.debug("AMI: action failed", exc_info=True)
            aid = next((v for k, v in hdrs if k.lower() == "actionid"), None)
            self.busy = False
            self.error(aid, "Internal error")

    def handle(self, hdrs: list[tuple[str, str]]) -> None:
        m: dict[str, str] = {}
        for k, v in hdrs:
            m.setdefault(k.lower(), v)
        action = m.get("action", "")
        aid = m.get("actionid") or None  # astman_get_header: an empty ActionID is not echoed
        srv = self.server
        srv.counters["actions"] += 1
        if not action:
            self.error(aid, "Missing action in request")
            return
        name = next((a for a in ACTIONS if a.lower() == action.lower()), None)
        if self.user is None and (name is None or name not in ("Login", "Challenge", "Logoff")):
            self.error(aid, "Permission denied")
            return
        if name is None:
            srv.counters["unknown_actions"] += 1
            self.error(aid, f"Invalid/unknown command: {action}. Use Action: ListCommands to show available commands.")
            return
        need = ACTIONS[name][0]
        if need and self.user is not None and not any(c in self.user.write for c in need.split(",")):
            self.error(aid, "Permission denied")
            return
        extra = srv.extra_actions.get(name)
        if extra is not None:
            extra(self, m, aid)
        else:
            getattr(self, f"do_{name.lower()}")(m, aid)

    def reply(self, aid: str | None, *pairs: tuple[str, object], response: str = "Success") -> None:
        head: list[tuple[str, object]] = [("Response", response)]
        if aid is not None:
            head.append(("ActionID", aid))
        self.write(block(*head, *pairs))

    def error(self, aid: str | None, message: str) -> None:
        self.reply(aid, ("Message", message), response="Error")

    def do_challenge(self, m: dict[str, str], aid: str | None) -> None:
        if m.get("authtype", "").lower() != "md5":
            self.error(aid, "Must specify AuthType")
            return
        self.challenge = f"{int.from_bytes(os.urandom(4), 'big'):d}"
        self.reply(aid, ("Challenge", self.challenge))

    def _authenticate(self, m: dict[str, str]) -> AmiUser | None:
        """manager.c authenticate(): the user, or None after reporting the failure as Asterisk
        does, in its order: no Username (nothing reported), unknown user (InvalidAccountID), the
        user's deny/permit refuses the address (FailedACL), MD5 with a wrong Key
        (ChallengeResponseFailed; no Key, no Challenge or no secret: nothing reported), a wrong
        Secret (InvalidPassword; a user without a secret: nothing reported)."""
        name = m.get("username", "")
        if not name:
            return None
        user = self.server.config.users.get(name)
        if user is None:
            self._security("InvalidAccountID", name)
        elif not user.allowed_from(self.peer[0]):
            self._security("FailedACL", name)
        elif m.get("authtype", "").lower() == "md5":
            key = m.get("key", "")
            if key and self.challenge and user.secret:
                want = hashlib.md5((self.challenge + user.secret).encode()).hexdigest()
                # bytes: compare_digest refuses str with non-ASCII characters (TypeError); case
                # counts, as strcmp
                if hmac.compare_digest(want.encode(), key.encode("utf-8", "replace")):
                    return user
                # AccountID: the session's user name, empty until a login succeeded
                self._security("ChallengeResponseFailed", "", Challenge=self.challenge, Response=key,
                               ExpectedResponse=want)
        elif user.secret:
            if hmac.compare_digest(user.secret.encode(), m.get("secret", "").encode()):
                return user
            self._security("InvalidPassword", name)
        return None

    def do_login(self, m: dict[str, str], aid: str | None) -> None:
        if self.user is not None:
            self.reply(aid, ("Message", "Already authenticated"))
            return
        srv = self.server
        user = self._authenticate(m)
        if user is None:
            # the same words and the same delay whatever failed
            srv.counters["auth_failures"] += 1
            log.warning("AMI: %s:%d failed to authenticate as '%s'", *self.peer,
                        escape_controls(m.get("username", "")))
            self.busy = True
            asyncio.get_running_loop().call_later(1.0, self._fail_login, aid)
            return
        self.user = user
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        # manager.c set_eventmask: the same strings_to_mask as `Action: Events`; an empty or
        # invalid one leaves the session's default (every class the user reads)
        mask = event_mask(m.get("events", "").strip())
        if mask >= 0:
            self.events_on, self.mask = mask > 0, mask_classes(mask)
        log.info("AMI: manager '%s' logged on from %s", user.name if user else "", self.peer[0])
        self.reply(aid, ("Message", "Authentication accepted"))
        if self.wants("system"):
            counters, now = srv.model.counters, time.time()
            self.write(block(("Event", "FullyBooted"), ("Privilege", "system,all"),
                             ("Uptime", int(now - counters.started)),
                             ("LastReload", int(now - (counters.last_reload or counters.started))),
                             ("Status", "Fully Booted")))
        self.session_tv = time.time()
        self._security("SuccessfulAuth", user.name, UsingPassword=0, now=self.session_tv)

    def _security(self, event: str, account: str, now: float | None = None, **fields: object) -> None:
        """A security event about this session (`Service: AMI`; SessionTV the login instant,
        the epoch before one)."""
        self.server.broadcast("security", security_event(
            event, "AMI", account, self.session_id, self.local, self.peer,
            {**fields, "SessionTV": self.session_tv}, now=now))

    def _fail_login(self, aid: str | None) -> None:
        self.busy = False
        self.error(aid, "Authentication failed")
        self.close()

    def do_logoff(self, m: dict[str, str], aid: str | None) -> None:
        self.reply(aid, ("Message", "Thanks for all the fish."), response="Goodbye")
        self.close()

    def do_ping(self, m: dict[str, str], aid: str | None) -> None:
        t = time.time()
        self.reply(aid, ("Ping", "Pong"), ("Timestamp", f"{int(t)}.{int((t % 1) * 1e6):06d}"))

    def do_events(self, m: dict[str, str], aid: str | None) -> None:
        """manager.c action_events: the mask as strings_to_mask reads it, On for any class."""
        mask = event_mask(m.get("eventmask", ""))
        if mask < 0:
            self.error(aid, "Invalid event mask")
            return
        self.events_on, self.mask = mask > 0, mask_classes(mask)
        self.reply(aid, ("Events", "On" if self.events_on else "Off"))

    def do_listcommands(self, m: dict[str, str], aid: str | None) -> None:
        self.reply(aid, *list_commands(ACTIONS, self.user.write if self.user else frozenset()))

    def do_coresettings(self, m: dict[str, str], aid: str | None) -> None:
        self.reply(aid, *core_settings(self.server.config.banner))

    def do_corestatus(self, m: dict[str, str], aid: str | None) -> None:
        counters = self.server.model.counters
        self.reply(aid, *core_status(counters.started, counters.last_reload))

    def do_devicestatelist(self, m: dict[str, str], aid: str | None) -> None:
        """res_manager_devicestate.c action_devicestatelist: the device-state cache as
        DeviceStateChange events without Privilege, ActionID after Event; here every peer."""
        head: list[tuple[str, object]] = [("Event", "DeviceStateChange")]
        if aid is not None:
            head.append(("ActionID", aid))

        def answer(remote: list[PeerView]) -> None:
            views = self._views(remote)
            self.write(_listack(aid, "Device State Changes will follow")
                       + "".join(block(*head, ("Device", f"SIP/{v.name}"), ("State", device_state(v))) for v in views)
                       + _list_complete("DeviceStateListComplete", aid, len(views)))

        self._with_fleet(aid, None, answer)

    def do_extensionstatelist(self, m: dict[str, str], aid: str | None) -> None:
        """pbx.c action_extensionstatelist with no dialplan hints (sipqualify has no dialplan)."""
        self.write(_listack(aid, "Extension Statuses will follow")
                   + _list_complete("ExtensionStateListComplete", aid, 0))

    def _with_fleet(self, aid: str | None, name: str | None, answer: Callable[[list[PeerView]], None]) -> None:
        """`answer(remote)` with the static peers other nodes qualify (`name`: that one), read from
        the shared store ([cluster]); at once with none on one node. Input waits meanwhile, so the
        answers of a client's actions keep their order."""
        model = self.server.model
        if not model.fleet_shared:
            answer([])
            return
        self.waiting = True

        def done(task: asyncio.Task[list[PeerView]]) -> None:
            self.waiting = False
            if self.closed:
                return
            try:
                remote = task.result()
            except Exception as e:  # noqa: BLE001 - the store is down: this node's peers, said so in the log
                self.server.ratelog(time.monotonic(), "AMI: other nodes' peers not listed: shared store: %s", e,
                                    key="fleet_store")
                remote = []
            try:
                answer(remote)
            except Exception:  # noqa: BLE001 - as dispatch(): the action is answered, the session lives
                log.debug("AMI: action failed", exc_info=True)
                self.error(aid, "Internal error")
            self.data_received(b"")  # the input held meanwhile

        asyncio.get_running_loop().create_task(model.remote_views(name)).add_done_callback(done)

    def _views(self, remote: list[PeerView]) -> list[PeerView]:
        return sorted([*self.server.model.views(), *remote], key=lambda v: v.name.encode())

    def do_sippeers(self, m: dict[str, str], aid: str | None) -> None:
        self._with_fleet(aid, None, lambda remote: self.write(sippeers_list(self._views(remote), aid)))

    def _find(self, m: dict[str, str], aid: str | None, answer: Callable[[PeerView | None], None]) -> None:
        """The peer an action names: this node's, else (cluster) another node's from the store."""
        name = m.get("peer", "")
        if name.upper().startswith("SIP/"):
            name = name[4:]
        if not name:
            self.error(aid, f"Peer: {name} missing.")
            return
        model = self.server.model
        p = model.peer(name)
        if p is not None:
            answer(model.view(p))
            return
        self._with_fleet(aid, name, lambda remote: answer(remote[0] if remote else None))

    def do_sipshowpeer(self, m: dict[str, str], aid: str | None) -> None:
        name = m.get("peer", "")
        if not name:
            self.error(aid, "Peer: <name> missing.")
            return

        def answer(v: PeerView | None) -> None:
            if v is None:
                self.error(aid, f"Peer {name} not found.")
            else:
                self.write(show_peer(v, aid))

        self._find(m, aid, answer)

    def do_sippeerstatus(self, m: dict[str, str], aid: str | None) -> None:
        if m.get("peer"):
            def one(v: PeerView | None) -> None:
                if v is None:
                    self.error(aid, "No such peer")
                else:
                    self.write(peerstatus_list([v], aid))

            self._find(m, aid, one)
            return
        # chan_sip walks its peers container: hash order, not names (qualify/order.py)
        self._with_fleet(aid, None, lambda remote: self.write(
            peerstatus_list(container_order([*self.server.model.views(), *remote], _view_name), aid)))

    def do_sipqualifypeer(self, m: dict[str, str], aid: str | None) -> None:
        name = m.get("peer", "")
        if not name:
            self.error(aid, "Peer: <name> missing.")
            return
        model = self.server.model
        if model.peer(name) is None:
            self.error(aid, "Peer not found")
            return
        self.reply(aid, ("Message", "SIP peer found - will qualify"))
        # SIPQualifyPeerDone goes to every session with `call` events (on_qualify), after the reply
        asyncio.get_running_loop().create_task(model.qualify(name, wait=False, action_id=aid))

    def do_getvar(self, m: dict[str, str], aid: str | None) -> None:
        """manager.c action_getvar without channels: `SIPPEER(peer[,item])` is read as chan_sip
        reads it; any other variable or function is unset here and, as in Asterisk for an unset
        variable or a function that fails, answers Success with an empty Value."""
        var = m.get("variable", "")
        if not var:
            self.error(aid, "No variable specified")
            return
        if m.get("channel"):
            self.error(aid, "No such channel")
            return
        value = ""
        fn, paren, args = var.partition("(")
        if paren and var.endswith(")") and fn == "SIPPEER":
            name, _, item = args[:-1].partition(",")
            model = self.server.model
            p = model.peer(name) if name else None
            if p is not None:
                value = sippeer_item(model.view(p), item)
        self.reply(aid, ("Variable", var), ("Value", value))

    def do_command(self, m: dict[str, str], aid: str | None) -> None:
        cmd = " ".join(m.get("command", "").split()).lower()
        model = self.server.model
        if cmd == "sip show peers":
            text = format_sip_show_peers(model.views())
        elif cmd.startswith("sip show peer "):
            name = m.get("command", "").split()[-1]
            p = model.peer(name)
            text = format_sip_show_peer(model.view(p)) if p is not None else f"Peer {name} not found.\n"
        else:
            self.error(aid, "Command output follows")
            return
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.reply(aid, ("Message", "Command output follows"), *(("Output", ln) for ln in lines))


class AmiServer:
    def __init__(self, model: ReadModel, config: AmiConfig) -> None:
        self.model = model
        self.config = config
        self.sessions: set[AmiSession] = set()
        self.server: asyncio.base_events.Server | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "actions", "unknown_actions", "auth_failures", "auth_timeouts", "refused_authlimit",
             "refused_authlimit_per_ip", "slow_disconnects", "oversize_lines", "events", "action_errors"), 0)
        self.port = config.port
        self.ratelog = RateLog(log, 10.0)
        self.device_states: dict[str, str] = {}  # peer -> the last DeviceStateChange State sent
        # actions and state-change events added by other modules (ami_pjsip.py): a hook returning
        # True has handled the transition (no chan_sip PeerStatus for it)
        self.extra_actions: dict[str, Callable[[AmiSession, dict[str, str], str | None], None]] = {}
        self.state_hooks: list[Callable[[StateChanged], bool]] = []
        self.qualify_hooks: list[Callable[[str], bool]] = []  # True: no SIPQualifyPeerDone for this peer
        # True: the registry event was a registered PJSIP contact's, published by the hook
        self.registry_hooks: list[Callable[[str, str, str], bool]] = []

    @classmethod
    def from_config(cls, model: ReadModel, svc: ServiceConfig, manager_conf: str | None) -> AmiServer | None:
        """The AMI port as configured: a manager.conf (`run --manager-conf` or [ami] manager_conf)
        with the native [ami] options over it; None when it is not enabled. ConfigError for an
        enabled port with no user, or errors in manager.conf (each logged)."""

        log = logging.getLogger("sipqualify")  # the daemon's start-up lines, as before this moved here
        path = manager_conf or svc.manager_conf
        cfg = load_manager_conf(path) if path else AmiConfig()
        errors = [m for m in cfg.messages if m.severity == "error"]
        for m in cfg.messages:
            (log.error if m.severity == "error" else log.warning)("%s", m)
        if errors:
            raise ConfigError(errors)
        for name, opts in svc.ami_users.items():
            cfg.users[name] = user_from_options(name, opts)
        if svc.ami_enabled is not None:
            cfg.enabled = svc.ami_enabled
        elif not path and svc.ami_users:
            cfg.enabled = True
        if svc.ami_listen is not None:
            cfg.bindaddr, cfg.port = svc.ami_listen
        if svc.ami_banner:
            cfg.banner = svc.ami_banner
        if svc.ami_peerstatus_time is not None:
            cfg.peerstatus_time = svc.ami_peerstatus_time
        if not cfg.enabled:
            return None
        if not cfg.users:
            raise ConfigError([ConfigMessage("error", path or "ami", 0, "AMI is enabled but no manager user is "
                                             "configured", option="users")])
        if not is_loopback(cfg.bindaddr) and not any(u.acl for u in cfg.users.values()):
            log.warning("AMI listens on %s with no permit/deny ACL on any user", cfg.bindaddr)
        return cls(model, cfg)

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    def unauthenticated(self, source: str | None = None) -> int:
        """Sessions not logged in yet (from `source`, a source_key(), if given)."""
        return sum(1 for s in self.sessions if s.user is None and (source is None or s.source == source))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: AmiSession(self), self.config.bindaddr, self.config.port)
        sock = self.server.sockets[0]
        self.port = int(sock.getsockname()[1])
        self.model.add_listener(self.on_state_changed)
        self.model.add_registry_listener(self.publish_registry)
        self.model.add_security_listener(self.publish_security)
        self.model.add_qualify_listener(self.on_qualify)
        log.info("AMI listening on %s:%d", self.config.bindaddr, self.port)

    async def close(self) -> None:
        for s in list(self.sessions):
            s.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def publish_registry(self, peer: str, status: str, cause: str, addr: tuple[str, int] | None) -> None:
        """PeerStatus Registered / Unregistered / Rejected, field order as chan_sip
        (asterisk-qualify.md §3.2): Cause, Address, Port only when they apply."""
        if any(hook(peer, status, cause) for hook in self.registry_hooks):
            return
        pairs: list[tuple[str, object]] = [("Event", "PeerStatus"), ("Privilege", "system,all"),
                                           ("ChannelType", "SIP"), ("Peer", f"SIP/{peer}"), ("PeerStatus", status)]
        if status == "Registered" and addr is not None:
            pairs.append(("Address", f"{addr[0]}:{addr[1]}"))
        elif status == "Unregistered":
            pairs.append(("Cause", cause or "Expired"))
        elif status == "Rejected":
            pairs.append(("Cause", cause))
            if addr is not None:
                pairs += [("Address", addr[0]), ("Port", addr[1])]
        self.broadcast("system", block(*pairs))
        # chan_sip calls ast_devstate_changed() when a binding is stored or expires; the state
        # is then sip_devicestate's: an address now (by its qualify state), or none (UNAVAILABLE)
        if status == "Registered":
            p = self.model.peer(peer)
            self._device_state(peer, device_state(self.model.view(p)) if p is not None else "NOT_INUSE")
        elif status == "Unregistered":
            self._device_state(peer, "UNAVAILABLE")

    def publish_security(self, ev: SecurityEvent, local: tuple[str, int]) -> None:
        """chan_sip's security events for REGISTERs (`Service: SIP`, no SessionTV). A flood of
        bad REGISTERs is bounded before it gets here (the per-source budget, authfail bans) and
        per session by its output bound (max_queue_bytes: a reader that falls behind is
        disconnected)."""
        self.broadcast("security", security_event(ev.event, "SIP", ev.account, ev.session_id, local, ev.remote,
                                                  dict(ev.fields), transport=ev.transport))

    def broadcast(self, cls: str, text: str) -> None:
        """One unsolicited event to every session that wants class `cls`."""
        self.counters["events"] += 1
        for s in list(self.sessions):
            if s.wants(cls):
                s.write(text)

    def on_qualify(self, peer: str, action_id: str | None) -> None:
        """SIPQualifyPeerDone, broadcast as chan_sip does for AMI and CLI qualifies; the
        ActionID only when an AMI action asked (asterisk-differences.md 4)."""
        if any(hook(peer) for hook in self.qualify_hooks):
            return
        self.broadcast("call", qualify_done_event(peer, action_id))

    def on_state_changed(self, ev: StateChanged) -> None:
        """PeerStatus, then DeviceStateChange when the device state changes (chan_sip calls
        ast_devstate_changed after manager_event PeerStatus; the device-state cache drops
        repeats). A peer's first one stands for the one Asterisk sends at start-up."""
        if any(hook(ev) for hook in self.state_hooks):
            return
        if not ev.silent:
            self.broadcast("system", peerstatus_event(ev, self.config.peerstatus_time))
        state = DEVICE_STATE.get(ev.new)
        if state is not None:
            p = self.model.peer(ev.peer)  # sip_devicestate: a peer with no address is UNAVAILABLE
            self._device_state(ev.peer, "UNAVAILABLE" if p is not None and p.addr is None else state)

    def publish_fleet(self, rec: TransitionRecord) -> None:
        """Another node's transition, followed from the shared store (`[ami] fleet_events`): the
        same PeerStatus and DeviceStateChange as for this node's own."""
        self.on_state_changed(StateChanged(rec.peer, rec.old, rec.new, rec.lastms, rec.maxms,
                                           rec.rtt_ms / 1000 if rec.rtt_ms is not None else None, rec.time,
                                           silent=(rec.old, rec.new) == (UNREACHABLE, LAGGED), reason=rec.reason))

    def _device_state(self, peer: str, state: str) -> None:
        """DeviceStateChange when the peer's device state changed (the cache drops repeats)."""
        if self.device_states.get(peer) != state:
            self.device_states[peer] = state
            self.broadcast("call", device_state_event(peer, state))
