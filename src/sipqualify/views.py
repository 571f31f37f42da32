"""PeerView: what the daemon says about one peer (HTTP API JSON, CLI, compat output).

The daemon builds these from config + engine state; the CLI gets them back as JSON and
formats them (`sipqualify.compat` for the Asterisk layouts). Field names are the stable
JSON interface documented in docs/api.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .model import PeerConfig
from .qualify.silence import Silence
from .qualify.stats import LatencyStats


@dataclass(slots=True)
class PeerView:
    name: str
    status: str  # compat string: "OK (12 ms)", "LAGGED (2500 ms)", "UNREACHABLE", "UNKNOWN", "Unmonitored"
    state: str  # OK | LAGGED | UNREACHABLE | UNKNOWN | UNMONITORED
    lastms: int  # chan_sip encoding: -1 no answer, 0 unknown, >0 last RTT in whole ms (floor 1)
    maxms: int  # qualify threshold, 0 = unmonitored
    qualifyfreq_ms: int
    keepalive_ms: int  # keepalive= (a CRLF every N s) in ms, as `sip show peer` prints it; 0 = off
    host: str  # as configured ("dynamic" for dynamic peers)
    addr_ip: str | None  # address in use (resolved / registered); None when unknown
    addr_port: int  # 0 when unknown
    dynamic: bool
    transport: str  # udp | tcp | tls
    nat: list[str]  # e.g. ["auto_force_rport"]
    nat_detected: bool  # for "Auto (Yes)" vs "Auto (No)"
    acl: bool
    defaultuser: str | None
    fromuser: str | None
    fromdomain: str | None
    description: str
    context: str
    secret_set: bool
    md5secret_set: bool
    useragent: str  # from REGISTER (dynamic peers); "" otherwise
    regcontact: str  # registered Contact; "" otherwise
    regexten: str
    expire: int  # seconds until registration expiry, -1 when none
    rtt_ms: float | None  # precise last RTT in ms (None when no answer / never)
    last_qualify: float | None  # wall-clock time of the last result
    last_change: float | None  # wall-clock time of the last state transition
    qualifies: int  # qualify transactions completed since start
    timeouts: int
    retransmissions: int
    transport_error: str | None = None  # why the last TCP/TLS connection could not be opened; None: it could
    qualify_source: str | None = None  # our address its qualify requests leave from (qualify_source); None: SIP socket
    tls_cert_days_left: float | None = None  # TLS peers: days until the peer's (verified) certificate expires
    # TCP/TLS peers with keepalive: RFC 5626 pings, pongs, rtt_s, unanswered_s of their flow (net/tcp.py)
    flow_keepalive: dict[str, Any] | None = None
    dns: str | None = None  # how the host name resolved (net/dns.py Resolution.path); None: no name
    dns_error: str | None = None  # why it does not resolve now
    # beyond chan_sip (qualify/verdict.py): the verdict beside the chan_sip state
    verdict: str = "unknown"  # up | degraded | down | pending | unknown
    reason: str = ""  # timeout, refused, auth_required, lagged, degraded:NNN, reply:NNN; "" none
    policy: str = ""  # the [[policies]] name in force; "" none
    pending_toward: str = ""  # pending: the verdict being counted toward; "" otherwise
    pending_count: int = 0  # ... outcomes counted so far
    pending_of: int = 0  # ... of this many (down_after / up_after)
    # qualify_targets = all: each DNS target's own state (label, transport, host, port, address,
    # state, status, lastms, rtt_ms, last_change, last_qualify, qualifies, timeouts, transport_error)
    targets: list[dict[str, Any]] | None = None
    flapping: bool = False  # flap damping (qualify/flap.py) holds its notifications back
    flap_penalty: float = 0.0  # its penalty now (0 without damping or once decayed)
    silenced: bool = False  # a silence (maintenance window) holds its notifications back
    silence_id: int | None = None  # ... this one (the one ending last)
    silenced_until: float | None = None  # ... until then (UNIX time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerView:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def remote_view(cfg: PeerConfig, row: dict[str, Any]) -> PeerView:
    """A static peer another node of the cluster qualifies ([cluster] with a shared store): its
    configuration (every node reads the same) and its owner's last stored state (`row` of the
    fleet view: state, lastms, maxms, rtt_ms, changed_at, updated_at), for the AMI port's lists.
    Its address is the configured IP literal (a host name's address is the owner's to know)."""
    from .net.resolve import literal
    from .qualify.state import UNKNOWN, UNMONITORED, status_string

    maxms = int(row.get("maxms") or cfg.qualify_ms)
    lastms = int(row.get("lastms") or 0) if maxms else 0
    state = str(row.get("state") or (UNKNOWN if maxms else UNMONITORED))
    ip = literal(cfg.host) if cfg.host else None
    return PeerView(
        name=cfg.name, status=status_string(maxms, lastms), state=state, lastms=lastms, maxms=maxms,
        qualifyfreq_ms=cfg.qualifyfreq_ms, keepalive_ms=cfg.keepalive_s * 1000, host=cfg.host or "",
        addr_ip=ip, addr_port=(cfg.port or _default_port(cfg.transport)) if ip else 0, dynamic=False,
        transport=cfg.transport, nat=list(cfg.nat), nat_detected=False, acl=False, defaultuser=cfg.defaultuser,
        fromuser=cfg.fromuser, fromdomain=cfg.fromdomain, description=cfg.description, context=cfg.context,
        secret_set=bool(cfg.secret), md5secret_set=bool(cfg.md5secret), useragent="", regcontact="", regexten="",
        expire=-1, rtt_ms=row.get("rtt_ms"), last_qualify=row.get("updated_at"), last_change=row.get("changed_at"),
        qualifies=0, timeouts=0, retransmissions=0)


def _default_port(transport: str) -> int:
    from .net.resolve import default_port

    return default_port(transport)


def format_verdict(v: PeerView, stats: str = "") -> str:
    """`peer NAME --verdict`: what follows `sip show peer` (which stays chan_sip's, byte for byte)."""
    verdict = v.verdict + (f" ({v.reason})" if v.reason else "")
    if v.pending_toward:
        verdict += f", {v.pending_count} of {v.pending_of} toward {v.pending_toward}"
    return f"  Verdict      : {verdict}\n  Policy       : {v.policy or '(none)'}\n{flap_line(v)}{stats}\n"


def silence_fields(s: Silence | None) -> dict[str, Any]:
    """The peer view's `silenced`, `silence_id`, `silenced_until`."""
    if s is None:
        return {}
    return {"silenced": True, "silence_id": s.id, "silenced_until": s.until}


def flap_line(v: PeerView) -> str:
    """Flap damping's state, when there is one (qualify/flap.py)."""
    if not v.flapping and not v.flap_penalty:
        return ""
    return f"  Flapping     : {'yes' if v.flapping else 'no'} (penalty {v.flap_penalty:.0f})\n"


def stats_json(name: str, stats: LatencyStats | None, v: PeerView) -> dict[str, Any]:
    """`GET /api/v1/peers/NAME/stats`: the verdict and the latency statistics (qualify/stats.py)."""
    body: dict[str, Any] = {"peer": name, "verdict": v.verdict, "reason": v.reason, "policy": v.policy,
                            "pending_toward": v.pending_toward, "pending_count": v.pending_count,
                            "pending_of": v.pending_of, "flapping": v.flapping, "flap_penalty": v.flap_penalty}
    body.update((stats or LatencyStats()).to_json())
    return body


def format_stats(s: dict[str, Any]) -> str:
    """`peer NAME --verdict`: the statistics lines."""
    return _latency_line(s) + _window_lines(s)


def _window_lines(s: dict[str, Any]) -> str:
    """Percentiles and uptime over time windows (store/windows.py), when the daemon has a store."""
    out = ""
    if "rtt_windows" in s:
        parts = [f"{name} " + ("-" if w["p50_ms"] is None else
                               f"{w['p50_ms']:.1f}/{w['p95_ms']:.1f}/{w['p99_ms']:.1f} ms ({w['samples']})")
                 for name, w in s["rtt_windows"].items()]
        out += f"  RTT p50/95/99: {', '.join(parts)}\n"
    if "uptime" in s:
        parts = [f"{name} " + ("-" if u["pct"] is None else f"{u['pct']:.3f} %") for name, u in s["uptime"].items()]
        out += f"  Uptime       : {', '.join(parts)}\n"
    return out


def _latency_line(s: dict[str, Any]) -> str:
    if s["avg_ms"] is None:
        return f"  Latency      : no answer yet ({s['loss_pct']:.1f} % lost of {s['loss_window']})\n"
    return (f"  Latency      : avg {s['avg_ms']:.1f} ms, std {s['std_ms']:.1f} ms, est {s['est_ms']:.1f} ms "
            f"(dev {s['dev_ms']:.1f}), jitter {s['jitter_ms']:.1f} ms, {s['loss_pct']:.1f} % lost of "
            f"{s['loss_window']}\n")


def display_bytes(data: bytes) -> str:
    """A SIP message as text that is safe to show: UTF-8 (what is not, as `\\xNN`), one line per
    CRLF-ended line (the CRLFs become `\\n`), every other control or format character (a lone CR
    or LF, NUL, ESC, bidi overrides...) escaped as `\\xNN` / `\\uNNNN`: a terminal or a page shows
    what arrived and is never steered by it."""
    lines = data.split(b"\r\n")
    return "\n".join(_escape_line(line.decode("utf-8", "backslashreplace")) for line in lines)


def _escape_line(s: str) -> str:
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable() or ch == " ":
            out.append(ch)
        elif ch == "\t":
            out.append("\\t")
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)
