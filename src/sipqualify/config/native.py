"""Native sipqualify.toml -> Config. The schema is documented in docs/configuration.md.

```toml
sip_conf = "/etc/asterisk/sip.conf"  # optional: [general] and peers from a sip.conf first
[general]     # sip.conf [general] keys and units (tcpenable = true), plus bind = ["0.0.0.0:5060", "[::]:5060"]
[api]         # listen = "127.0.0.1:7060", token = "...", metrics_peer_limit = 10000
[store]       # state_dir, sample_retention, transition_retention ("7d", "12h", "1h30m" or seconds)
[service]     # respond_options, options_unknown_user_404, match_source_address, tcp_* limits
[ami]         # manager_conf, enabled, listen, banner, peerstatus_time, [ami.users.NAME]
[peers.NAME]  # the sip.conf peer options, plus retransmit, port_in_uri, group and rtt_histogram
```

With `sip_conf`, TOML overrides it: `[general]` keys apply before the sip.conf peers are
built (peers that inherit a value see the TOML one), and a `[peers.NAME]` that names a
sip.conf peer changes only the keys it sets. tomllib reports no positions for values,
so `KeyLines` finds the line of a key by scanning the text.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from typing import Any

from ..model import (
    DEFAULT_MAXMS,
    DEFAULT_SIP_PORT,
    RETRANSMIT_POLICIES,
    TRANSPORTS,
    Config,
    ConfigMessage,
    GeneralConfig,
    PeerConfig,
)
from .sipconf import PeerDefaults, load_sip_conf, new_peer
from .values import is_ip, parse_algorithms, parse_duration, parse_nat, split_hostport

TOP_KEYS = ("sip_conf", "general", "api", "store", "service", "ami", "peers", "webhooks")
PEER_STRINGS = ("defaultuser", "fromuser", "fromdomain", "outboundproxy", "description", "secret", "md5secret",
                "context")

Path = tuple[str, ...]


class KeyLines:
    """Line numbers of tables and keys in a TOML text (best effort; tomllib gives none)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        table: Path = ()
        in_multiline: str | None = None
        for n, raw in enumerate(text.splitlines(), 1):
            s = raw.strip()
            if in_multiline:
                if in_multiline in s:
                    in_multiline = None
                continue
            if not s or s.startswith("#"):
                continue
            if s.startswith("["):
                inner = s.lstrip("[")
                keys, _ = _dotted_keys(inner, "]")
                if keys:
                    table = tuple(keys)
                    self.lines.setdefault(table, n)
                continue
            keys, rest = _dotted_keys(s, "=")
            if not keys:
                continue
            for i in range(1, len(keys) + 1):
                self.lines.setdefault(table + tuple(keys[:i]), n)
            for q in ('"""', "'''"):
                if rest.lstrip().startswith(q) and rest.count(q) == 1:
                    in_multiline = q

    def line(self, path: Path) -> int:
        """The line of `path`, else of its nearest enclosing table, else 0."""
        for i in range(len(path), 0, -1):
            if path[:i] in self.lines:
                return self.lines[path[:i]]
        return 0


def _dotted_keys(s: str, stop: str) -> tuple[list[str], str]:
    """`a."b.c".d =` -> ["a", "b.c", "d"] and the text after `stop`; ([], "") if not a key."""
    keys: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c in "\"'":
            end = s.find(c, i + 1)
            if end < 0:
                return [], ""
            cur.append(s[i + 1:end])
            i = end + 1
            continue
        if c == ".":
            keys.append("".join(cur).strip())
            cur = []
        elif c == stop:
            keys.append("".join(cur).strip())
            return keys, s[i + 1:]
        else:
            cur.append(c)
        i += 1
    return [], ""


class TomlReader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.keys = KeyLines(text)
        self.messages: list[ConfigMessage] = []

    def error(self, where: Path, text: str) -> None:
        self.messages.append(ConfigMessage("error", self.path, self.keys.line(where), text,
                                           where[-1] if where else None))

    def warning(self, where: Path, text: str) -> None:
        self.messages.append(ConfigMessage("warning", self.path, self.keys.line(where), text,
                                           where[-1] if where else None))

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        v = data.get(key, {})
        if not isinstance(v, dict):
            self.error((key,), f"'{key}' must be a table ([{key}])")
            return {}
        return v

    def relpath(self, v: str) -> str:
        return v if os.path.isabs(v) else os.path.join(self.base, v)

    # ---------------------------------------------------------------- typed values

    def want_int(self, where: Path, v: Any, lo: int | None = None, hi: int | None = None, unit: str = "") -> int | None:
        if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f" {lo}..{hi}" if hi is not None else f" >= {lo}" if lo is not None else ""
            self.error(where, f"{where[-1]} must be an integer{rng}{unit}, not {v!r}")
            return None
        return v

    def want_str(self, where: Path, v: Any) -> str | None:
        if not isinstance(v, str):
            self.error(where, f"{where[-1]} must be a string, not {v!r}")
            return None
        return v

    def want_bool(self, where: Path, v: Any) -> bool | None:
        if not isinstance(v, bool):
            self.error(where, f"{where[-1]} must be true or false, not {v!r}")
            return None
        return v

    def qualify(self, where: Path, v: Any, general_ms: int) -> int | None:
        if isinstance(v, bool):
            return (general_ms or DEFAULT_MAXMS) if v else 0
        if isinstance(v, str) and v.lower() in ("yes", "no"):
            return (general_ms or DEFAULT_MAXMS) if v.lower() == "yes" else 0
        return self.want_int(where, v, 0, unit=" (milliseconds), true or false")

    def nat(self, where: Path, v: Any) -> tuple[str, ...] | None:
        words = v.split(",") if isinstance(v, str) else v
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            self.error(where, "nat must be a string or a list of strings")
            return None
        modes, problems = parse_nat(words)
        for p in problems:
            self.error(where, p)
        return None if problems else modes

    def hostport(self, where: Path, v: Any, *, need_port: bool, ip_only: bool) -> tuple[str, int | None] | None:
        if not isinstance(v, str):
            self.error(where, f"{where[-1]} must be a string like \"127.0.0.1:5060\" or \"[::1]:5060\"")
            return None
        try:
            host, port = split_hostport(v, allow_zero_port=True)
            if ip_only and not is_ip(host):
                raise ValueError(f"'{host}' is not an IP address")
            if need_port and port is None:
                raise ValueError("a port is required")
        except ValueError as err:
            self.error(where, f"bad address {v!r}: {err}")
            return None
        return host, port

    # ---------------------------------------------------------------- sections

    def general(self, gen: dict[str, Any]) -> Callable[[GeneralConfig, PeerDefaults], None]:
        """Validate [general] now; return what applies it (to a sip.conf's general or a fresh one)."""
        g_set: dict[str, object] = {}  # GeneralConfig attributes
        d_set: dict[str, object] = {}  # PeerDefaults attributes
        for k, v in gen.items():
            w: Path = ("general", k)
            if k == "qualify":
                q = self.qualify(w, v, 0)
                if q is not None:
                    g_set["qualify_ms"] = q
            elif k == "qualifyfreq":
                n = self.want_int(w, v, 1, unit=" (seconds)")
                if n is not None:
                    g_set["qualifyfreq_ms"] = n * 1000
            elif k == "qualifygap":
                n = self.want_int(w, v, 0, unit=" (milliseconds)")
                if n is not None:
                    g_set["qualifygap_ms"] = n
            elif k == "qualifypeers":
                n = self.want_int(w, v)
                if n is not None:
                    g_set["qualifypeers"] = n
            elif k in ("useragent", "context", "fromdomain", "externip"):
                s = self.want_str(w, v)
                if s is not None:
                    g_set[k] = s if k in ("useragent", "context") else (s or None)
            elif k == "nat":
                modes = self.nat(w, v)
                if modes is not None:
                    d_set["nat"] = modes
            elif k == "transport":
                if v not in TRANSPORTS:
                    self.error(w, f"transport must be one of {', '.join(TRANSPORTS)}, not {v!r}")
                else:
                    d_set["transport"] = v
            elif k == "tcpenable":
                b = self.want_bool(w, v)
                if b is not None:
                    g_set["tcpenable"] = b
            elif k == "realm":
                s = self.want_str(w, v)
                if s:
                    g_set["realm"] = s
            elif k in ("minexpiry", "maxexpiry", "defaultexpiry", "authfail_limit", "authfail_window", "authfail_ban"):
                n = self.want_int(w, v, 0 if k == "authfail_ban" else 1)
                if n is not None:
                    g_set[k] = n
            elif k == "supported_algorithms_uas":
                words = v if isinstance(v, list) else str(v).split(",")
                algs, bad = parse_algorithms([str(x) for x in words])
                if bad or not algs:
                    self.error(w, f"supported_algorithms_uas: {', '.join(bad) or 'nothing'} is not md5 or sha-256")
                else:
                    g_set["auth_algorithms"] = algs
            elif k == "bind":
                binds = v if isinstance(v, list) else [v]
                parsed: list[tuple[str, int]] = []
                for b in binds:
                    hp = self.hostport(w, b, need_port=False, ip_only=True)
                    if hp is not None:
                        parsed.append((hp[0], DEFAULT_SIP_PORT if hp[1] is None else hp[1]))
                if parsed and len(parsed) == len(binds):
                    (g_set["udpbindaddr"], g_set["bindport"]), g_set["extra_bindaddrs"] = parsed[0], parsed[1:]
            else:
                self.warning(w, f"unknown option '{k}' in [general] ignored")

        def apply(g: GeneralConfig, d: PeerDefaults) -> None:
            for attr, val in g_set.items():
                setattr(g, attr, val)
            for attr, val in d_set.items():
                setattr(d, attr, val)

        return apply

    def api(self, cfg: Config, api: dict[str, Any]) -> None:
        svc = cfg.service
        for k, v in api.items():
            w: Path = ("api", k)
            if k == "listen":
                hp = self.hostport(w, v, need_port=True, ip_only=False)
                if hp is not None and hp[1] is not None:
                    svc.api_host, svc.api_port = hp[0], hp[1]
            elif k == "token":
                if not isinstance(v, str) or len(v) < 16:
                    self.error(w, "token must be a string of at least 16 characters")
                else:
                    svc.api_token = v
            elif k == "metrics_peer_limit":
                n = self.want_int(w, v, 0)
                if n is not None:
                    svc.metrics_peer_limit = n
            elif k == "header_timeout":
                try:
                    d = parse_duration(v)
                except ValueError as err:
                    self.error(w, f"{k}: {err}")
                else:
                    if d < 1:
                        self.error(w, f"{k} must be at least 1 second")
                    else:
                        svc.api_header_timeout_s = d
            elif k == "max_event_subscribers":
                n = self.want_int(w, v, 1)
                if n is not None:
                    svc.api_max_event_subscribers = n
            elif k in ("tls_cert", "tls_key"):
                s = self.want_str(w, v)
                if s is not None:
                    path = self.relpath(s)
                    if not os.path.isfile(path):
                        self.error(w, f"{k} {path}: no such file")
                    else:
                        setattr(svc, f"api_{k}", path)
            else:
                self.warning(w, f"unknown option '{k}' in [api] ignored")

    def store(self, cfg: Config, store: dict[str, Any]) -> None:
        svc = cfg.service
        for k, v in store.items():
            w: Path = ("store", k)
            if k == "state_dir":
                s = self.want_str(w, v)
                if s:
                    svc.state_dir = self.relpath(s)
            elif k in ("sample_retention", "transition_retention"):
                try:
                    setattr(svc, f"{k}_s", parse_duration(v))
                except ValueError as err:
                    self.error(w, f"{k}: {err}")
            else:
                self.warning(w, f"unknown option '{k}' in [store] ignored")

    def service(self, cfg: Config, table: dict[str, Any]) -> None:
        for k, v in table.items():
            w: Path = ("service", k)
            if k in ("respond_options", "match_source_address", "options_unknown_user_404"):
                b = self.want_bool(w, v)
                if b is not None:
                    setattr(cfg.service, k, b)
            elif k in ("tcp_idle_timeout", "tcp_message_timeout"):
                try:
                    setattr(cfg.service, f"{k}_s", parse_duration(v))
                except ValueError as err:
                    self.error(w, f"{k}: {err}")
            elif k == "tcp_max_unfinished_bytes":  # less than one message of 64 KiB would refuse a valid one
                n = self.want_int(w, v, 65536)
                if n is not None:
                    cfg.service.tcp_max_unfinished_bytes = n
            elif k in ("tcp_max_connections", "tcp_max_connections_per_ip"):
                n = self.want_int(w, v, 1)
                if n is not None:
                    setattr(cfg.service, k, n)
            else:
                self.warning(w, f"unknown option '{k}' in [service] ignored")

    def ami(self, cfg: Config, ami: dict[str, Any]) -> None:
        svc = cfg.service
        for k, v in ami.items():
            w: Path = ("ami", k)
            if k == "manager_conf":
                s = self.want_str(w, v)
                if s:
                    svc.manager_conf = self.relpath(s)
            elif k in ("enabled", "peerstatus_time"):
                b = self.want_bool(w, v)
                if b is not None:
                    setattr(svc, f"ami_{k}", b)
            elif k == "listen":
                hp = self.hostport(w, v, need_port=True, ip_only=False)
                if hp is not None and hp[1] is not None:
                    svc.ami_listen = (hp[0], hp[1])
            elif k == "banner":
                s = self.want_str(w, v)
                if s is not None:
                    svc.ami_banner = s
            elif k == "users":
                if not isinstance(v, dict) or not all(isinstance(u, dict) for u in v.values()):
                    self.error(w, "[ami.users.NAME] tables expected")
                    continue
                for uname, opts in v.items():
                    if not isinstance(opts.get("secret"), str) or not opts.get("secret"):
                        self.error(("ami", "users", uname, "secret"), f"AMI user '{uname}' needs a secret")
                    else:
                        svc.ami_users[uname] = opts
            else:
                self.warning(w, f"unknown option '{k}' in [ami] ignored")

    def peers(self, cfg: Config, peers: dict[str, Any], defaults: PeerDefaults) -> None:
        # peer names are case-insensitive, as in chan_sip's peer table (an index: O(1) per peer,
        # a carrier's 100,000-peer file must not take minutes)
        by_lower = {k.lower(): k for k in cfg.peers}
        for name, t in peers.items():
            where: Path = ("peers", name)
            if not isinstance(t, dict):
                self.error(where, f"peer '{name}' must be a table ([peers.{name}])")
                continue
            key = by_lower.get(name.lower(), name)
            by_lower.setdefault(name.lower(), key)
            p = cfg.peers.get(key)
            merged = p is not None
            if p is None:
                p = new_peer(name, cfg.general, defaults, f"{self.path}:{self.keys.line(where)}")
            if self.peer(p, t, where, cfg.general) or merged:
                cfg.peers[key] = p

    def peer(self, p: PeerConfig, t: dict[str, Any], where: Path, g: GeneralConfig) -> bool:
        """Apply one [peers.NAME] table to `p`; False if the peer cannot be used at all."""
        ok = True
        host_port: int | None = None
        port: int | None = None
        for k, v in t.items():
            w = (*where, k)
            if k == "host":
                if isinstance(v, str) and v.strip().lower() == "dynamic":
                    p.dynamic, p.host = True, None
                    continue
                hp = self.hostport(w, v, need_port=False, ip_only=False)
                if hp is None:
                    ok = False
                else:
                    p.dynamic, p.host = False, hp[0]
                    host_port = hp[1]
            elif k == "port":
                port = self.want_int(w, v, 1, 65535)
            elif k == "transport":
                if v not in TRANSPORTS:
                    self.error(w, f"transport must be one of {', '.join(TRANSPORTS)}, not {v!r}")
                else:
                    p.transport = v
            elif k == "qualify":
                q = self.qualify(w, v, g.qualify_ms)
                if q is not None:
                    p.qualify_ms = q
            elif k == "qualifyfreq":
                n = self.want_int(w, v, 1, unit=" (seconds)")
                if n is not None:
                    p.qualifyfreq_ms = n * 1000
            elif k == "nat":
                modes = self.nat(w, v)
                if modes is not None:
                    p.nat = modes
            elif k == "retransmit":
                if v not in RETRANSMIT_POLICIES:
                    self.error(w, f"retransmit must be one of {', '.join(RETRANSMIT_POLICIES)}, not {v!r}")
                else:
                    p.retransmit = v
            elif k == "port_in_uri":
                b = self.want_bool(w, v)
                if b is not None:
                    p.port_in_uri = b
            elif k == "rtt_histogram":
                b = self.want_bool(w, v)
                if b is not None:
                    p.rtt_histogram = b
            elif k == "keepalive":
                if v is True:
                    p.keepalive_s = 60
                elif v is False:
                    p.keepalive_s = 0
                else:
                    n = self.want_int(w, v, 0)
                    if n is not None:
                        p.keepalive_s = n
            elif k == "group":
                s = self.want_str(w, v)
                if s is not None:
                    p.group = s
            elif k in PEER_STRINGS:
                s = self.want_str(w, v)
                if s is not None:
                    setattr(p, k, s if k in ("description", "context") else (s or None))
            else:
                self.warning(w, f"unknown option '{k}' for a peer ignored")
        if port is not None or host_port is not None:
            p.port = port if port is not None else host_port
        if not p.dynamic and not p.host:
            if ok:
                self.error(where, f"peer '{p.name}' needs host = \"name or address\" (or host = \"dynamic\")")
            return False
        return ok


def _syntax_line(e: tomllib.TOMLDecodeError) -> int:
    lineno = getattr(e, "lineno", None)  # Python 3.14+
    if isinstance(lineno, int):
        return lineno
    m = re.search(r"line (\d+)", str(e))
    return int(m.group(1)) if m else 0


WEBHOOK_KEYS = ("id", "url", "secret", "peers", "states", "timeout")


def _webhooks(r: TomlReader, cfg: Config, hooks: Any) -> None:
    """`[[webhooks]]` tables: id (the receiver id, unique), url (http/https), secret (HMAC key),
    peers (glob patterns), states (OK, LAGGED, UNREACHABLE, UNKNOWN), timeout (seconds)."""
    if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
        r.error(("webhooks",), "webhooks must be [[webhooks]] tables")
        return
    seen: set[str] = set()
    for i, h in enumerate(hooks):
        w: Path = ("webhooks", str(i))
        hid, url = h.get("id"), h.get("url")
        if not isinstance(hid, str) or not hid or hid in seen:
            r.error(w, "every [[webhooks]] needs a unique id = \"...\" (the receiver id)")
            continue
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            r.error(w, f"webhook '{hid}': url must be http:// or https://")
            continue
        states = h.get("states", [])
        if not isinstance(states, list) or any(str(s).upper() not in ("OK", "LAGGED", "UNREACHABLE", "UNKNOWN")
                                               for s in states):
            r.error(w, f"webhook '{hid}': states must be a list of OK, LAGGED, UNREACHABLE, UNKNOWN")
            continue
        if not isinstance(h.get("peers", []), list) or not isinstance(h.get("secret", ""), str):
            r.error(w, f"webhook '{hid}': peers must be a list of patterns, secret a string")
            continue
        timeout = h.get("timeout", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            r.error(w, f"webhook '{hid}': timeout must be a positive number of seconds")
            continue
        for k in h:
            if k not in WEBHOOK_KEYS:
                r.warning(w, f"unknown option '{k}' in webhook '{hid}' ignored")
        seen.add(hid)
        cfg.service.webhooks.append(h)


def load_toml(path: str) -> Config:
    """Read a sipqualify.toml. Never raises for content: see `Config.messages`."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except OSError as e:
        return Config(messages=[ConfigMessage("error", path, 0, f"cannot read: {e.strerror}")], source=path)
    except UnicodeDecodeError as e:
        return Config(messages=[ConfigMessage("error", path, 0, f"not UTF-8 (as TOML requires): {e.reason}")],
                      source=path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        return Config(messages=[ConfigMessage("error", path, _syntax_line(e), f"TOML syntax: {msg}")], source=path)

    r = TomlReader(path, text)
    for k in data:
        if k not in TOP_KEYS:
            r.warning((k,), f"unknown key '{k}' ignored")
    apply_general = r.general(r.table(data, "general"))
    defaults = PeerDefaults()
    cfg: Config | None = None
    sip_conf = data.get("sip_conf")
    if sip_conf is not None:
        s = r.want_str(("sip_conf",), sip_conf)
        if s:
            sc = r.relpath(s)
            if not os.path.isfile(sc):
                r.error(("sip_conf",), f"sip_conf {sc}: no such file")
            else:
                captured: list[PeerDefaults] = []

                def override(g: GeneralConfig, d: PeerDefaults) -> None:
                    apply_general(g, d)
                    captured.append(d)

                cfg = load_sip_conf(sc, general_override=override)
                defaults = captured[0]
    if cfg is None:
        cfg = Config()
        apply_general(cfg.general, defaults)
    cfg.source = path
    r.api(cfg, r.table(data, "api"))
    r.store(cfg, r.table(data, "store"))
    r.service(cfg, r.table(data, "service"))
    r.ami(cfg, r.table(data, "ami"))
    _webhooks(r, cfg, data.get("webhooks", []))
    r.peers(cfg, r.table(data, "peers"), defaults)
    cfg.messages.extend(r.messages)
    return cfg
