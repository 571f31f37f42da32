"""The one peer model every config reader produces and every other layer consumes.

sip.conf, the native TOML format (and later pjsip.conf) all end up as a `Config`:
a `GeneralConfig` (the `[general]` section), a `ServiceConfig` (things Asterisk has no
equivalent for: API address, state directory, retention) and an ordered mapping of
`PeerConfig`. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .profile import shared_profile

# chan_sip compile-time constants (sip.h, identical in Asterisk 16/18/20).
DEFAULT_MAXMS = 2000  # qualify=yes
DEFAULT_QUALIFYFREQ_MS = 60_000
DEFAULT_FREQ_NOTOK_MS = 10_000
DEFAULT_QUALIFY_GAP_MS = 100
DEFAULT_QUALIFY_PEERS = 1
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061
DEFAULT_WS_PORT = 80  # a ws/wss peer with no port= (RFC 7118 §5.2: the URI's default)
DEFAULT_WSS_PORT = 443
DEFAULT_WS_BINDPORT = 8088  # our WebSocket listeners: Asterisk's http.conf bindport / tlsbindport
DEFAULT_WSS_BINDPORT = 8089
WS_PATH = "/ws"  # where browser phones connect (chan_sip's, via res_http_websocket)

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 7060  # documented in README and docs/cli.md

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
NAT_MODES = ("no", "force_rport", "comedia", "auto_force_rport", "auto_comedia")
RETRANSMIT_POLICIES = ("asterisk", "rfc3261")
QUALIFY_HEADERS = ("own", "asterisk")  # Allow/Supported of the qualify OPTIONS (sip/options.py)
QUALIFY_METHODS = ("OPTIONS", "INFO", "NOTIFY")  # the qualify request's method (NOTIFY: Event: keep-alive)
QUALIFY_TARGETS = ("first", "all")  # first: chan_sip's one DNS target; all: every target, rolled up (PJSIP)


@dataclass(frozen=True, slots=True)
class OutboundAuth:
    """One pjsip.conf `type=auth` section an endpoint's `outbound_auth` names: the credentials
    answering a challenge to its contacts' OPTIONS (qualify/auth.py). `realm` "" answers any."""

    name: str
    username: str
    password: str | None  # None: md5_cred only (auth_type = md5)
    md5_cred: str | None
    realm: str = ""


#: the PeerConfig fields each peer keeps itself; the others are shared by the peers with equal
#: values (profile.py, issue 15: a million peers), `source`'s line aside
PEER_OWN_FIELDS = ("name", "host", "port", "secret", "md5secret", "defaultuser", "fromuser", "description",
                   "contact_uri")


@shared_profile(own=PEER_OWN_FIELDS, located="source")
@dataclass
class PeerConfig:
    """One monitored (or unmonitored) SIP peer, as configured.

    `qualify_ms` is chan_sip's `maxms`: 0 means Unmonitored, `qualify=yes` gives the
    general default (2000 unless `[general] qualify=` says otherwise). Each peer stores only
    PEER_OWN_FIELDS and its `source` line; every other field reads from an immutable profile
    shared by the peers with equal values (profile.py): fields, constructor, equality, repr and
    `dataclasses.replace` are those of this dataclass.
    """

    name: str
    host: str | None = None  # hostname or IP literal as written; None when dynamic
    port: int | None = None  # None: default for the transport, and no port in R-URI/To
    transport: str = "udp"
    # transport= written (for the peer or in [general]): chan_sip's SRV of that transport; False:
    # RFC 3263 NAPTR decides (net/dns.py), when no port is written either
    transport_named: bool = True
    dynamic: bool = False
    qualify_ms: int = 0
    qualifyfreq_ms: int = DEFAULT_QUALIFYFREQ_MS
    defaultuser: str | None = None
    fromuser: str | None = None
    fromdomain: str | None = None
    outboundproxy: str | None = None
    nat: tuple[str, ...] = ("auto_force_rport",)
    description: str = ""
    secret: str | None = None
    md5secret: str | None = None
    qualify_auth: bool = False  # answer a 401/407 to a poke with secret/md5secret (qualify/auth.py)
    # pjsip.conf: the qualifying endpoint's outbound_auth sections, in its order (qualify/auth.py)
    outbound_auths: tuple[OutboundAuth, ...] = ()
    context: str = "default"
    retransmit: str = "asterisk"  # one of RETRANSMIT_POLICIES
    port_in_uri: bool = False  # chan_sip never puts the port in the poke's R-URI/To; opt in here
    # probe shape (sip/options.py build_options): all off by default, chan_sip's request byte for byte
    qualify_to_user: str | None = None  # user part of To
    qualify_ruri_user: str | None = None  # user part of the Request-URI (a static host's; chan_sip: none)
    qualify_max_forwards: int = 70
    qualify_headers_extra: tuple[str, ...] = ()  # whole header lines, before Content-Length
    qualify_method: str = "OPTIONS"  # one of QUALIFY_METHODS
    # (ip, port) of ours the UDP qualify request leaves from (port 0: a free one); None: the SIP socket
    qualify_source: tuple[str, int] | None = None
    group: str = "default"  # Prometheus RTT histogram group (`sipqualify_rtt_seconds{group=...}`)
    rtt_histogram: bool = False  # also a per-peer RTT histogram (for trunks)
    keepalive_s: int = 0  # chan_sip keepalive=: a bare CRLF every N s to the peer's address (0 = off)
    # verdict policy (qualify/verdict.py; the defaults are chan_sip's: any final response is up, 1/1, no retry)
    policy: str = ""  # name of the [[policies]] table in force ("" none)
    reply_up: str = ""  # status codes that mean up, normalized ("" = every final response)
    reply_degraded: str = ""  # status codes that mean degraded ("" = none)
    down_after: int = 1  # consecutive down outcomes before down
    up_after: int = 1  # consecutive alive outcomes before up
    retry_interval_s: int = 0  # re-poll this soon after a down outcome still being counted (0 = off)
    latency_delta_ms: int = 0  # a LatencyChanged event when the EWMA moves more than this (0 = off)
    qualify_targets: str = "first"  # one of QUALIFY_TARGETS (qualify/targets.py)
    # flap damping (qualify/flap.py; off while flap_suppress is 0)
    flap_penalty: int = 1000  # added per change of the confirmed verdict
    flap_suppress: int = 0  # flapping from this penalty on (0 = off)
    flap_reuse: int = 750  # settled below this penalty
    flap_half_life_s: int = 900  # the penalty halves in this time
    source: str = ""  # "file:line" of the section header, for messages
    # pjsip.conf contacts (config/pjsip.py): whose qualify semantics ("chan_sip" | "pjsip"), the
    # contact URI sent verbatim as Request-URI, and the endpoint's from_domain for From/Contact
    semantics: str = "chan_sip"
    contact_uri: str | None = None
    qualify_2xx_only: bool = False
    max_initial_qualify_ms: int = 0  # pjsip.conf [global] max_initial_qualify_time


@dataclass(slots=True)
class GeneralConfig:
    """sip.conf `[general]`: what chan_sip reads there and we honour."""

    udpbindaddr: str = "0.0.0.0"
    bindport: int = DEFAULT_SIP_PORT
    # Extra bind addresses (e.g. "::" for IPv6); the first of each family is used.
    extra_bindaddrs: list[tuple[str, int]] = field(default_factory=list)
    tcpenable: bool = False  # also listen for SIP over TCP on each bind address (inbound only)
    qualify_ms: int = 0  # default for peers that say qualify=yes is DEFAULT_MAXMS unless set here
    qualifyfreq_ms: int = DEFAULT_QUALIFYFREQ_MS
    qualifygap_ms: int = DEFAULT_QUALIFY_GAP_MS
    qualifypeers: int = DEFAULT_QUALIFY_PEERS
    # load hygiene (qualify/ratecap.py): all off by default, chan_sip's timing
    jitter: float = 0.0  # each re-poll delay stretched or shrunk by up to this share
    max_rate: int = 0  # scheduled pokes per second, all peers (0: no cap)
    max_rate_per_destination: int = 0  # ... per destination IP address (0: no cap)
    useragent: str = ""  # empty: "sipqualify <version>"
    qualify_headers: str = "own"  # one of QUALIFY_HEADERS
    fromdomain: str | None = None
    externip: str | None = None
    context: str = "default"
    # registrar (sip.conf [general] names)
    realm: str = "sipqualify"
    # digest algorithms challenged with, in this order (PJSIP's supported_algorithms_uas); MD5
    # only by default, as chan_sip: some phones (baresip/libre) give up on a 401 that also
    # offers an algorithm they do not know
    auth_algorithms: tuple[str, ...] = ("MD5",)
    minexpiry: int = 60
    maxexpiry: int = 3600
    defaultexpiry: int = 120
    authfail_limit: int = 10  # failed REGISTERs from one address within authfail_window before a ban
    authfail_window: int = 60  # seconds
    authfail_ban: int = 300  # seconds during which that address is ignored (0 = never ban)
    # TLS (chan_sip's [general] tls* names; net/tls.py says what each means)
    tlsenable: bool = False  # a TLS listener on tlsbindaddr, and peers may use transport=tls
    tlsbindaddr: tuple[str, int] = ("0.0.0.0", DEFAULT_SIPS_PORT)
    # SIP over WebSocket (RFC 7118; net/ws.py): browser phones connect to WS_PATH
    wsenable: bool = False  # a ws:// listener on wsbindaddr
    wsbindaddr: tuple[str, int] = ("0.0.0.0", DEFAULT_WS_BINDPORT)
    wssenable: bool = False  # a wss:// listener on wssbindaddr (tlscertfile/tlsprivatekey)
    wssbindaddr: tuple[str, int] = ("0.0.0.0", DEFAULT_WSS_BINDPORT)
    tlscertfile: str | None = None  # PEM: our certificate (chain), server and client
    tlsprivatekey: str | None = None  # PEM: its key (default: in tlscertfile)
    tlscafile: str | None = None  # what peers' certificates are verified against (default: system store)
    tlscapath: str | None = None
    tlscipher: str | None = None  # OpenSSL cipher list
    tlsclientmethod: str = "sslv23"  # sslv23 (negotiate) | tlsv1_2 | tlsv1_3
    tlsdontverifyserver: bool = False
    tls_expiry_warn_days: int = 14  # a TLS peer's certificate with fewer days left: a warning event
    srvlookup: bool = True  # chan_sip: SRV of the peer's transport before A/AAAA (net/dns.py)
    dns_server: tuple[str, int] | None = None  # (ip, port) to ask instead of the system's resolv.conf
    rt_refresh_s: int = 10  # realtime: changed rows take effect within this many seconds


@dataclass(slots=True)
class ServiceConfig:
    """What Asterisk has no equivalent for: our own daemon's settings."""

    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    api_token: str | None = None  # None: generated into state_dir/api-token (mode 0600)
    state_dir: str | None = None  # None: decided by the CLI (see docs/cli.md)
    sample_retention_s: int = 7 * 24 * 3600
    sample_every: int = 1  # [store] sample_every: one RTT sample in N per peer is stored (1: all)
    transition_retention_s: int = 90 * 24 * 3600
    store_url: str | None = None  # [store] url: PostgreSQL (store/postgres.py) instead of SQLite files in state_dir
    node_id: str | None = None  # None: the host name; names this node's rows in a shared store
    log_format: str = "plain"  # plain | asterisk | json (logformat.py); `run --log-format` beats it
    respond_options: bool = True  # answer inbound OPTIONS with 200 like res_pjsip
    options_unknown_user_404: bool = False  # ... but 404 when the Request-URI user is not a peer
    match_source_address: bool = True  # responses must come from where the request went
    metrics_peer_limit: int = 10_000  # per-peer Prometheus series for at most this many peers
    tcp_idle_timeout_s: int = 3600  # SIP over TCP: a connection silent this long is closed (0 = never)
    tcp_max_connections: int = 10_000  # SIP over TCP: more are refused at once
    tcp_max_connections_per_ip: int = 100  # ... and more than this many from one address
    tcp_max_unfinished_bytes: int = 4 * 1024 * 1024  # SIP over TCP: unfinished messages, all connections
    ready_max_lag_s: int = 5  # /readyz fails while the qualify scheduler is behind by more (qualify/watchdog.py)
    tcp_message_timeout_s: int = 10  # SIP over TCP: an unfinished message older than this closes its connection
    api_tls_cert: str | None = None  # PEM certificate (chain): the API speaks HTTPS
    api_tls_key: str | None = None  # PEM private key (defaults to the certificate file)
    api_header_timeout_s: float = 10.0  # API: no complete request head this long after connect/last answer: closed
    api_max_event_subscribers: int = 100  # API: concurrent /events streams; more get 503
    manager_conf: str | None = None  # Asterisk manager.conf for the AMI port
    ami_enabled: bool | None = None  # None: as manager.conf [general] enabled says (off without one)
    ami_listen: tuple[str, int] | None = None  # overrides manager.conf bindaddr/port
    ami_banner: str | None = None
    # Time: in Reachable/Lagged PeerStatus (false = exactly Asterisk 12+); None: as manager.conf
    # [general] peerstatus_time says (yes without one)
    ami_peerstatus_time: bool | None = None
    ami_users: dict[str, dict[str, object]] = field(default_factory=dict)
    # [cluster] with a shared store: PeerStatus of the other nodes' transitions too (followed from the store)
    ami_fleet_events: bool = False
    webhooks: list[dict[str, object]] = field(default_factory=list)  # [[webhooks]] tables, checked by the reader
    # [cluster] (cluster/): static peers partitioned across the nodes of a tooz group on etcd or Redis
    cluster_url: str | None = None  # "etcd3+http://127.0.0.1:2379" or "redis://127.0.0.1:6379"; None: one node
    cluster_group: str = "sipqualify"
    cluster_lease_s: int = 20  # membership lease (TTL) on the coordinator
    # a static peer is probed from this many nodes, UNREACHABLE only when a quorum of them agrees
    # (cluster/vantage.py; > 1 needs a shared PostgreSQL store)
    cluster_vantage_points: int = 1


@dataclass(slots=True)
class ConfigMessage:
    """A warning or error found while reading configuration, with where it was found."""

    severity: str  # "error" | "warning"
    file: str
    line: int
    message: str
    option: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        opt = f" [{self.option}]" if self.option else ""
        return f"{where}: {self.severity}{opt}: {self.message}"


@dataclass(slots=True)
class PjsipAor:
    """A pjsip.conf `type=aor` section: what concerns qualifying and registering."""

    name: str
    contacts: list[str] = field(default_factory=list)  # static contact= URIs, in order
    max_contacts: int = 0
    qualify_frequency: int = 0  # seconds; 0 = not qualified
    qualify_timeout: float = 3.0  # seconds; 0 = until Timer F (32 s)
    qualify_2xx_only: bool = False
    authenticate_qualify: bool = False
    remove_existing: bool = False
    remove_unavailable: bool = False
    minimum_expiration: int = 60
    maximum_expiration: int = 7200
    default_expiration: int = 3600
    outbound_proxy: str = ""
    support_path: bool = False
    mailboxes: str = ""
    voicemail_extension: str = ""
    source: str = ""


@dataclass(slots=True)
class PjsipEndpoint:
    """A pjsip.conf `type=endpoint` section: the options that shape its contacts' qualify."""

    name: str
    aors: list[str] = field(default_factory=list)
    auth: str = ""
    outbound_auth: str = ""
    outbound_proxy: str = ""
    from_user: str = ""
    from_domain: str = ""
    context: str = "default"
    transport: str = ""
    device_state_busy_at: int = 0
    # res_pjsip options sipqualify does not use, as written (last one wins), for PJSIPShowEndpoint;
    # `allow=`/`disallow=` applied in order to `codecs` ("all" kept as a word)
    settings: dict[str, str] = field(default_factory=dict)
    codecs: list[str] = field(default_factory=list)
    source: str = ""


@dataclass(slots=True)
class PjsipAuth:
    name: str
    auth_type: str = "userpass"
    username: str = ""
    password: str = ""
    md5_cred: str = ""
    realm: str = ""
    source: str = ""


@dataclass(slots=True)
class PjsipIdentify:
    """A pjsip.conf `type=identify` section: requests from these addresses are the endpoint's."""

    name: str
    endpoint: str = ""
    match: list[str] = field(default_factory=list)  # IPs, CIDRs (ip/prefix or ip/netmask), host names
    source: str = ""


@dataclass(slots=True)
class PjsipConfig:
    """The PJSIP objects read from a pjsip.conf, by id in config order."""

    endpoints: dict[str, PjsipEndpoint] = field(default_factory=dict)
    aors: dict[str, PjsipAor] = field(default_factory=dict)
    auths: dict[str, PjsipAuth] = field(default_factory=dict)
    identifies: dict[str, PjsipIdentify] = field(default_factory=dict)
    transports: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (protocol, bind)
    max_initial_qualify_time: int = 0  # [global]; 0 = qualify_frequency
    peer_of: dict[tuple[str, str], str] = field(default_factory=dict)  # (aor, uri) -> peer name
    # aor -> the endpoint its contacts are qualified as (config/pjsip.py qualifying_endpoint),
    # indexed by the reader; None: not indexed (then looked up each time)
    endpoint_of: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class RealtimeMapping:
    """One extconfig.conf line: `family => driver,database[,table]`."""

    family: str  # sippeers, ps_endpoints, ...
    driver: str  # pgsql | sqlite3 | odbc ...
    database: str  # res_config_sqlite3.conf section (pgsql: ignored, as res_config_pgsql does)
    table: str  # defaults to the family
    where: str = ""  # file:line


@dataclass(slots=True)
class RealtimeConfig:
    """extconfig.conf and the driver files next to it (config/realtime.py)."""

    mappings: dict[str, RealtimeMapping] = field(default_factory=dict)  # family -> mapping
    pgsql: dict[str, str] = field(default_factory=dict)  # res_pgsql.conf [general]: dbhost, dbport, ...
    sqlite3: dict[str, str] = field(default_factory=dict)  # res_config_sqlite3.conf: section -> dbfile
    proto: PeerConfig | None = None  # what a realtime row starts from: sip.conf's [general] defaults
    followed: tuple[str, ...] = ()  # the mapped families the config's kind follows (sippeers or ps_*)


@dataclass(slots=True)
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    peers: dict[str, PeerConfig] = field(default_factory=dict)  # config order preserved
    pjsip: PjsipConfig | None = None  # read from a pjsip.conf (config/pjsip.py)
    realtime: RealtimeConfig | None = None  # extconfig.conf next to the config file (config/realtime.py)
    messages: list[ConfigMessage] = field(default_factory=list)
    source: str = ""

    @property
    def errors(self) -> list[ConfigMessage]:
        return [m for m in self.messages if m.severity == "error"]

    @property
    def warnings(self) -> list[ConfigMessage]:
        return [m for m in self.messages if m.severity == "warning"]


class ConfigError(Exception):
    """Raised when a configuration cannot be used at all; carries every message found."""

    def __init__(self, messages: list[ConfigMessage]) -> None:
        self.messages = messages
        super().__init__("\n".join(str(m) for m in messages) or "invalid configuration")
