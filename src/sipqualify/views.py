"""PeerView: what the daemon says about one peer (HTTP API JSON, CLI, compat output).

The daemon builds these from config + engine state; the CLI gets them back as JSON and
formats them (`sipqualify.compat` for the Asterisk layouts). Field names are the stable
JSON interface documented in docs/api.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


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
    tls_cert_days_left: float | None = None  # TLS peers: days until the peer's (verified) certificate expires
    # TCP/TLS peers with keepalive: RFC 5626 pings, pongs, rtt_s, unanswered_s of their flow (net/tcp.py)
    flow_keepalive: dict[str, Any] | None = None
    dns: str | None = None  # how the host name resolved (net/dns.py Resolution.path); None: no name
    dns_error: str | None = None  # why it does not resolve now

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PeerView:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
