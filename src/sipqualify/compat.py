"""Asterisk's CLI layouts, byte for byte: `sip show peers`, `sip show peer`, SIPPEER().

Sources: asterisk-observed.md §3 (real Asterisk 20 output, which wins) and
asterisk-qualify.md §1.7 / §2 (chan_sip's printf formats). Fields chan_sip prints but
sipqualify does not model (codecs, T.38, session timers...) show the values an ordinary
chan_sip peer shows, so that scripts parsing the output keep working.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .qualify.state import is_online
from .views import PeerView

# Characters that end a line for some reader (CR, LF, VT, FF, NEL, U+2028/9 for
# str.splitlines), that drive a terminal (ESC, C1 CSI, BEL, BS, DEL) or that reorder what
# is shown (bidi controls), plus lone surrogates (undecodable bytes that cannot be printed).
_OTHER = ("\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
          "\ud800-\udfff")
_UNSAFE = re.compile(f"[\r\n{_OTHER}]")
_UNSAFE_BESIDES_CRLF = re.compile(f"[{_OTHER}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character shown as a Python-style escape (`\\n`, `\\x1b`,
    `\\u2028`): the one helper for values a peer or client chose that go to a terminal or
    into an AMI line. Printable text (any script, backslashes included) is returned as is, so
    ordinary output stays byte for byte Asterisk's."""
    return text if _UNSAFE.search(text) is None else _UNSAFE.sub(_escape_one, text)


def only_line_ends(text: str, lines: int) -> bool:
    """True if `text`'s only control characters are the CRLFs ending its `lines` lines: the
    one-pass check that lets a caller skip escape_controls() value by value."""
    return text.count("\n") == lines and text.count("\r") == lines and _UNSAFE_BESIDES_CRLF.search(text) is None


ROW = "%-25.25s %-39.39s %-3.3s %-10.10s %-10.10s %-3.3s %-8s %-11s %-32.32s %s\n"
HEADER = ROW % ("Name/username", "Host", "Dyn", "Forcerport", "Comedia", "ACL", "Port", "Status", "Description", "")


def _nat_word(v: PeerView, forced: str, auto: str) -> str:
    if forced in v.nat:
        return "Yes"
    if auto in v.nat:
        return "Auto (Yes)" if v.nat_detected else "Auto (No)"
    return "No"


def forcerport(v: PeerView) -> str:
    return _nat_word(v, "force_rport", "auto_force_rport")


def comedia(v: PeerView) -> str:
    return _nat_word(v, "comedia", "auto_comedia")


def status_counts(views: Sequence[PeerView]) -> tuple[int, int, int, int]:
    """(monitored online, monitored offline, unmonitored online, unmonitored offline)."""
    mon_on = mon_off = un_on = un_off = 0
    for v in views:
        if v.maxms:
            if is_online(v.maxms, v.lastms):
                mon_on += 1
            else:
                mon_off += 1
        elif v.addr_ip and v.addr_port:
            un_on += 1
        else:
            un_off += 1
    return mon_on, mon_off, un_on, un_off


def _sort_key(v: PeerView) -> bytes:
    return v.name.encode()  # strcmp order


def format_sip_show_peers(views: Sequence[PeerView]) -> str:
    out = [HEADER]
    for v in sorted(views, key=_sort_key):
        name = f"{v.name}/{v.defaultuser}" if v.defaultuser else v.name
        out.append(ROW % (
            escape_controls(name),  # before the column widths, so that they still line up
            v.addr_ip if v.addr_ip else "(Unspecified)",
            " D " if v.dynamic else "   ",
            forcerport(v),
            comedia(v),
            " A " if v.acl else "   ",
            str(v.addr_port if v.addr_ip else 0),
            v.status,
            escape_controls(v.description),
            "",
        ))
    a, b, c, d = status_counts(views)
    out.append(f"{len(views)} sip peers [Monitored: {a} online, {b} offline Unmonitored: {c} online, {d} offline]\n")
    return "".join(out)


def _yn(b: bool) -> str:
    return "Yes" if b else "No"


def format_sip_show_peer(v: PeerView) -> str:
    addr = f"{v.addr_ip}:{v.addr_port}" if v.addr_ip else "(null)"
    symmetric = comedia(v)  # chan_sip's "Symmetric RTP" line is the comedia setting, worded alike
    transport = v.transport.upper()
    fdom, fport = fromdomain_parts(v.fromdomain)
    lines = [
        "",
        "",
        f"  * Name       : {v.name}",
        f"  Description  : {v.description}",
        f"  Secret       : {'<Set>' if v.secret_set else '<Not set>'}",
        f"  MD5Secret    : {'<Set>' if v.md5secret_set else '<Not set>'}",
        "  Remote Secret: <Not set>",
        f"  Context      : {v.context}",
        "  Record On feature : automon",
        "  Record Off feature : automon",
        "  Subscr.Cont. : <Not set>",
        "  Language     : ",
        "  Tonezone     : <Not set>",
        "  AMA flags    : Unknown",
        "  Transfer mode: open",
        "  CallingPres  : Presentation Allowed, Not Screened",
        *([f"  FromUser     : {v.fromuser}"] if v.fromuser else []),
        *([f"  FromDomain   : {fdom} Port {fport}"] if fdom else []),
        "  Callgroup    : ",
        "  Pickupgroup  : ",
        "  Named Callgr : ",
        "  Nam. Pickupgr: ",
        "  MOH Suggest  : ",
        "  Mailbox      : ",
        "  VM Extension : asterisk",
        "  LastMsgsSent : 0/0",
        "  Call limit   : 0",
        "  Max forwards : 0",
        f"  Dynamic      : {_yn(v.dynamic)}",
        '  Callerid     : "" <>',
        "  MaxCallBR    : 384 kbps",
        f"  Expire       : {v.expire}",
        "  Insecure     : no",
        f"  Force rport  : {forcerport(v)}",
        f"  Symmetric RTP: {symmetric}",
        f"  ACL          : {_yn(v.acl)}",
        "  ContactACL   : No",
        "  DirectMedACL : No",
        "  T.38 support : No",
        "  T.38 EC mode : Unknown",
        "  T.38 MaxDtgrm: 4294967295",
        "  DirectMedia  : Yes",
        "  PromiscRedir : No",
        "  User=Phone   : No",
        "  Video Support: No",
        "  Text Support : No",
        "  Ign SDP ver  : No",
        "  Trust RPID   : No",
        "  Send RPID    : No",
        "  Path support : No",
        "  Path         : N/A",
        "  TrustIDOutbnd: Legacy",
        "  Subscriptions: Yes",
        "  Overlap dial : Yes",
        "  DTMFmode     : rfc2833",
        "  Timer T1     : 500",
        "  Timer B      : 32000",
        f"  ToHost       : {'' if v.dynamic else v.host}",
        f"  Addr->IP     : {addr}",
        "  Defaddr->IP  : (null)",
        f"  Prim.Transp. : {transport}",
        f"  Allowed.Trsp : {transport}",
        f"  Def. Username: {v.defaultuser or ''}",
        "  SIP Options  : (none)",
        "  Codecs       : (ulaw)",
        "  Auto-Framing : No",
        f"  Status       : {v.status}",
        f"  Useragent    : {v.useragent}",
        f"  Reg. Contact : {v.regcontact}",
        f"  Qualify Freq : {v.qualifyfreq_ms} ms",
        f"  Keepalive    : {v.keepalive_ms} ms",
        "  Sess-Timers  : Accept",
        "  Sess-Refresh : uas",
        "  Sess-Expires : 1800 secs",
        "  Min-Sess     : 90 secs",
        "  RTP Engine   : asterisk",
        "  Parkinglot   : ",
        "  Use Reason   : No",
        "  Encryption   : No",
        "  RTCP Mux     : No",
    ]
    # a registered phone chooses its User-Agent and Contact: none of it may start a line;
    # chan_sip ends the page with an empty line (`ast_cli(fd, "\n")`)
    return "\n".join(escape_controls(ln) for ln in lines) + "\n\n"


STANDARD_SIP_PORT = 5060


def fromdomain_parts(fromdomain: str | None) -> tuple[str, int]:
    """chan_sip's `fromdomain=host[:port]` split at the first colon into (domain, port): the
    port is 5060 when absent or not a valid port (chan_sip's fromdomainport 0 shows as
    STANDARD_SIP_PORT). ("", 5060) when unset."""
    if not fromdomain:
        return "", STANDARD_SIP_PORT
    dom, colon, rest = fromdomain.partition(":")
    port = int(rest) if colon and rest.isascii() and rest.isdigit() and 0 < int(rest) < 65536 else 0
    return dom, port or STANDARD_SIP_PORT


SIPPEER_ITEMS: tuple[str, ...] = (
    "ip", "port", "status", "language", "regexten", "limit", "busylevel", "curcalls", "maxforwards",
    "accountcode", "callgroup", "pickupgroup", "namedcallgroup", "namedpickupgroup", "useragent", "mailbox",
    "context", "expire", "dynamic", "callerid_name", "callerid_num", "codecs", "encryption",
)


def sippeer_item(v: PeerView, item: str = "ip") -> str:
    """SIPPEER(name,item) as chan_sip answers it (asterisk-qualify.md §2)."""
    it = item.strip().lower() or "ip"
    if it == "ip":
        return v.addr_ip if v.addr_ip else "(null)"
    if it == "port":
        return str(v.addr_port if v.addr_ip else 0)
    if it == "status":
        return v.status
    if it == "useragent":
        return v.useragent
    if it == "regexten":
        return v.regexten
    if it == "context":
        return v.context
    if it == "dynamic":
        return "yes" if v.dynamic else "no"
    if it == "expire":
        return str(v.expire)
    if it == "limit":
        return "0"  # chan_sip: call-limit 0 unless call-limit= / callcounter= is set (neither is modelled)
    if it in ("busylevel", "curcalls", "maxforwards", "encryption"):
        return "0"
    if it == "codecs":
        return "(ulaw)"
    if it.startswith("codec[") and it.endswith("]"):
        # the x-th preferred codec of the peer's list, which is "(ulaw)" (see Codecs above)
        n = it[6:-1].strip()
        return "ulaw" if n.isascii() and n.isdigit() and int(n) == 0 else ""
    return ""
